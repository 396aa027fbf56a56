"""A cutoff sweep on a local 2-slot Ray cluster vs the local queue, side by side in one run: the wall-clock ratio.

Both run the same `python -m poc sweep` (tiny images, 4 cutoffs, one split, one phase 1): the local queue trains
the five runs one after another with every core; `--executor ray` submits phase 1, then the four phase-2 runs at
once to a local head started here (`ray start --head`, 2 CPUs, its own process group, stopped at the end), each
job pinned to one core (VITRINE_RAY_CPUS=1: TensorFlow's thread pools sized to its share). Phase 1 stays one run
in both; only the phase-2 part can divide by the number of slots. With `--pinned`, a third sweep runs on the local
queue pinned to one core (what one slot gives a run). Each Ray job pays a fixed start (a fresh interpreter,
TensorFlow's import, the model's build: about 7 s here) that the local queue, training in one process, does not:
the ratio grows with the work per run. Measure on a quiet machine (`uptime` load < 2): the script prints the load
before and after.

    .venv/bin/python benchmarks/sweep_ray.py              # 4 cutoffs, 32 px, 3 epochs: 3 minutes on 2 cores
    .venv/bin/python benchmarks/sweep_ray.py --per-class 30 --ft-epochs 12   # more work per run: 9 minutes
    .venv/bin/python benchmarks/sweep_ray.py --per-class 30 --ft-epochs 50 --patience 50   # the reference
        # study's phase 2 (50 epochs), every epoch trained: about 12 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CUTOFFS = "block_12_expand,block_14_expand,block_15_expand,Conv_1"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cutoffs", default=CUTOFFS, help="4 mobilenet_v2 cutoffs")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--per-class", type=int, default=12, help="generated images per class (10 classes)")
    p.add_argument("--ft-epochs", type=int, default=3)
    p.add_argument("--patience", type=int, default=None,
                   help="early-stopping patience (default: the tool's); = --ft-epochs trains every epoch")
    p.add_argument("--slots", type=int, default=2, help="CPU slots of the local cluster (one core per job)")
    p.add_argument("--pinned", action="store_true", help="also time the local queue pinned to one core")
    return p.parse_args(argv)


def sweep(args, data: Path, runs: Path, *extra: str, env: dict | None = None) -> tuple[float, list[dict]]:
    argv = [sys.executable, "-m", "poc", "sweep", "--data", str(data), "--model", "mobilenet_v2", "--weights", "none",
            "--image-size", str(args.image_size), "--tl-epochs", "1", "--ft-epochs", str(args.ft_epochs),
            "--batch-size", "16", "--cutoffs", args.cutoffs, "--runs-dir", str(runs),
            *(["--patience", str(args.patience)] if args.patience else []), *extra]
    start = time.perf_counter()
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(extra) or 'local'}):\n{out.stderr[-3000:]}")
    infos = [json.loads(p.read_text()) for p in runs.glob("*/run.json")]
    return seconds, infos


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None) -> int:
    from poc.data.demo import generate_demo_dataset
    from poc.launch.ray_executor import local_head

    args = parse_args(argv)
    print(f"load average before: {load()} (measure when the 1-minute load is < 2)")
    with tempfile.TemporaryDirectory(prefix="sweep_ray") as tmp:
        base = Path(tmp)
        generate_demo_dataset(base / "data", per_class=args.per_class, size=40, seed=0)
        local_s, local_infos = sweep(args, base / "data", base / "runs_local")
        pinned_s = None
        if args.pinned:
            one_core = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
            pinned_s, _ = sweep(args, base / "data", base / "runs_pinned", env=one_core)
        with local_head(num_cpus=args.slots, cwd=base) as address:
            ray_s, infos = sweep(args, base / "data", base / "runs_ray", "--executor", "ray", "--cluster", address,
                                 env={"VITRINE_RAY_CPUS": "1"})
    print(f"local queue   {local_s:7.1f} s  (5 runs one after another, every core)")
    print(f"ray, {args.slots} slots {ray_s:7.1f} s  (phase 1, then 4 phase-2 jobs, 1 core each)")
    print(f"ratio (local / ray): {local_s / ray_s:.2f}x   target >= 1.5x")
    if pinned_s is not None:
        print(f"local, 1 core {pinned_s:7.1f} s  (the local queue pinned to one core: what one slot gives a run)")
        print(f"ratio (local on 1 core / ray): {pinned_s / ray_s:.2f}x   (the concurrency alone, same cores per run)")
    for label, runs in (("local", local_infos), ("ray", infos)):
        spans = sorted((i["started"], i["finished"], (i.get("study") or {}).get("role")) for i in runs)
        print(f"{label} runs (started-finished, role): "
              + "; ".join(f"{a[11:19]}-{b[11:19]} {role}" for a, b, role in spans))
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
