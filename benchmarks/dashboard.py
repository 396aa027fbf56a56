"""Dashboard pages at scale: 200 (or 1,000) runs plus one run of 10,000 test predictions, each page rendered
server side (Streamlit AppTest) in a fresh process: the first render (cold: imports, file reads) and the
median of the next renders (warm: Streamlit's caches filled), for this checkout and, with `--baseline REF`, for
an older commit's pages on the same runs folder, side by side in one run.

    python benchmarks/dashboard.py                      # this checkout, 200 runs
    python benchmarks/dashboard.py --baseline e055b7d   # plus that commit's pages (a git worktree in /tmp)
    python benchmarks/dashboard.py --runs 1000          # cluster scale: sweeps x seeds x models
    python benchmarks/dashboard.py --runs 50 --quick    # smaller, a minute or two
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PAGES = ["0_Home.py", "1_Learning_curves.py", "2_Error_explorer.py", "3_Live_predict.py", "4_Attention_maps.py",
         "5_Compare.py", "6_Cutoff_sweep.py"]
BIG_RUN_ID = "20991231-235959-mobilenet-v2-10k0"  # newest id: the pages' default selection


def make_runs(root: Path, count: int, predictions: int) -> Path:
    """`count` completed runs (copies of the test fixtures' real CNN and ViT runs, weights hard-linked) plus one
    CNN run whose test split holds `predictions` rows, evaluated by the real evaluation code."""
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    import pandas as pd

    from fixture_runs import make_fixture_runs
    from poc.runs import store
    from poc.analysis.evaluation import evaluate_probabilities

    runs, images = root / "runs", root / "images"
    fixtures = make_fixture_runs(root / "fixtures", images)
    sources = [fixtures["cnn"], fixtures["vit"]]
    runs.mkdir()
    for i in range(count):
        source = sources[i % 2]
        target = runs / f"2026{i // 28 + 1:02d}{i % 28 + 1:02d}-120000-{source.name.split('-', 2)[2]}-{i:04d}"
        shutil.copytree(source, target, copy_function=os.link)
        info = json.loads((source / "run.json").read_text())
        store.RunDir(target).write_run({**info, "id": target.name, "name": f"{info['name']} #{i}"})
    big = store.RunDir(runs / BIG_RUN_ID)
    shutil.copytree(fixtures["cnn"], big.path, copy_function=os.link)
    info = json.loads((fixtures["cnn"] / "run.json").read_text())
    big.write_run({**info, "id": big.id, "name": f"{predictions} test predictions"})
    split = store.read_split(big)
    test = split[split["split"] == "test"]
    test = test.iloc[np.arange(predictions) % len(test)].reset_index(drop=True)
    names = info["class_names"]
    rng = np.random.default_rng(0)
    for stage in ("tl", "ft"):
        logits = rng.normal(size=(predictions, len(names)))
        logits[np.arange(predictions), [names.index(c) for c in test["label"]]] += 1.5
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        shutil.rmtree(big.eval_dir(stage), ignore_errors=True)  # hard links: write fresh files, not through them
        big.write_eval(stage, **evaluate_probabilities(test, probs, names, seed=0))
    pd.DataFrame(test).to_csv(big.path / "test_rows.csv", index=False)
    return runs


def time_page(code: Path, page: str, runs: Path, warm_repeats: int) -> dict:
    """One page in a fresh interpreter: seconds of the first render, until every prediction is shown (Live
    predict renders first and predicts once its models are built in the background; other pages: = first
    render), and the median of the warm renders."""
    script = f"""
import json, statistics, sys, time
sys.path.insert(0, {str(code)!r})
from streamlit.testing.v1 import AppTest
start = time.perf_counter()
at = AppTest.from_file({str(code / "pages" / page)!r}, default_timeout=600).run()
cold = time.perf_counter() - start
while any("Loading this run's model" in c.value for c in at.caption):  # Live predict: models build behind it
    time.sleep(1.0)  # a full rerun holds the GIL for ~0.5 s: fewer of them, as the browser's light poll
    at.run()
ready = time.perf_counter() - start
warm = []
for _ in range({warm_repeats}):
    start = time.perf_counter()
    at.run()
    warm.append(time.perf_counter() - start)
errors = [str(e.value)[:200] for e in at.exception]
print(json.dumps({{"cold": cold, "ready": ready, "warm": statistics.median(warm), "errors": errors}}))
"""
    env = {**os.environ, "VITRINE_RUNS_DIR": str(runs), "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", script], cwd=code, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"cold": None, "ready": None, "warm": None, "errors": [done.stderr.strip().splitlines()[-1:]]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_checkout(ref: str, where: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(where), ref], cwd=ROOT, check=True,
                   capture_output=True)
    return where


def old_page_name(code: Path, page: str) -> str | None:
    """Home was dashboard.py before pages/0_Home.py; other pages kept their file names."""
    if (code / "pages" / page).exists():
        return page
    return "../dashboard.py" if page == "0_Home.py" else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--predictions", type=int, default=10_000)
    p.add_argument("--warm", type=int, default=3, help="warm renders per page (the median is reported)")
    p.add_argument("--baseline", default=None, help="a git ref whose pages to time on the same runs")
    p.add_argument("--quick", action="store_true", help="50 runs, 2,000 predictions")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.predictions = 50, 2000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        runs = make_runs(tmp, args.runs, args.predictions)
        print(f"{args.runs} runs + one of {args.predictions} test predictions written in "
              f"{time.perf_counter() - start:.0f} s")
        codes = {"ours": ROOT}
        if args.baseline:
            codes[args.baseline] = baseline_checkout(args.baseline, tmp / "baseline")
        results = {}
        try:
            for label, code in codes.items():
                for page in PAGES:
                    name = old_page_name(code, page)
                    results[label, page] = time_page(code, name, runs, args.warm) if name else None
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(codes[args.baseline])], cwd=ROOT,
                               capture_output=True)
    print(f"{'page':<22}" + "".join(f"{label + ' cold':>16}{label + ' warm':>16}" for label in codes))
    for page in PAGES:
        cells = []
        for label in codes:
            r = results[label, page]
            cells += [f"{r['cold']:.2f} s" if r and r["cold"] else "-", f"{r['warm']:.2f} s" if r and r["warm"]
                      else "-"]
        print(f"{page:<22}" + "".join(f"{c:>16}" for c in cells))
        for label in codes:
            r = results[label, page]
            if r and r.get("ready") and r["cold"] and r["ready"] - r["cold"] > 0.05:
                print(f"    {label}: predictions shown after {r['ready']:.2f} s (models built in the background)")
            if r and r["errors"]:
                print(f"    {label}: page exceptions: {r['errors']}")
    if args.baseline:
        for kind in ("cold", "warm"):
            ours = [results["ours", p][kind] for p in PAGES if results["ours", p] and results["ours", p][kind]]
            base = [results[args.baseline, p][kind] for p in PAGES
                    if results[args.baseline, p] and results[args.baseline, p][kind]]
            if ours and base:
                print(f"slowest page {kind}: ours {max(ours):.2f} s, baseline {max(base):.2f} s, "
                      f"ratio {max(base) / max(ours):.1f}x")
    worst = max((r["warm"] for (label, _), r in results.items() if label == "ours" and r and r["warm"]), default=None)
    print(f"slowest page warm (ours): {worst:.2f} s" if worst is not None else "no page rendered")
    print(f"median warm (ours): {statistics.median(r['warm'] for (label, _), r in results.items() if label == 'ours' and r and r['warm']):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
