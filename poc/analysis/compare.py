"""Compare two runs (or one run's two stages) on the same test images: the evidence behind "A beats B".

Two models scored on the same test images are paired (whatever their train/val parts): each image is a
matched pair of outcomes, so the accuracy difference gets an exact interval that agrees with the exact McNemar
test (poc.analysis.stats.paired_difference), and the 2x2 agreement table names the images each model alone
gets right. Runs tested on different images cannot be paired; that is refused unless the caller asks for the
unpaired (Newcombe) interval. Pure: RunDirs in, dicts and text out; the CLI, pages and report show them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from poc.runs import store
from poc.analysis import stats
from poc.runs.status import final_stage_of
from poc.data.split import split_fingerprint, held_out_fingerprint
from poc.runs.store import RunDir
from poc.errors import UserError

CELLS = ("both_right", "only_a", "only_b", "both_wrong")


# ---------------------------------------------------------------- reading a run

def _info(rd: RunDir) -> dict:
    info = store.read_json(rd.run_json)
    if info is None:
        raise UserError(f"run {rd.id}: run.json missing or unreadable in {rd.path}; pick a finished run "
                        "(python -m poc runs lists them)")
    return info


def _final(rd: RunDir, info: dict) -> str:
    stage = final_stage_of(rd, info, needs="predictions")
    if stage is None:
        raise UserError(f"run {rd.id} has no evaluated stage (no eval/<stage>/predictions.csv); recompute it: "
                        f"python -m poc evaluate {rd.id}")
    return stage


def _predictions(rd: RunDir, stage: str) -> pd.DataFrame:
    if stage not in store.STAGES:
        raise UserError(f"unknown stage {stage!r}; use one of {', '.join(store.STAGES)}")
    frame = store.read_predictions(rd, stage)
    if frame is None or frame.empty:
        raise UserError(f"run {rd.id} has no readable eval/{stage}/predictions.csv; pick the other stage or "
                        f"recompute it: python -m poc evaluate {rd.id}")
    if not frame["path"].is_unique:
        raise UserError(f"run {rd.id}: eval/{stage}/predictions.csv lists an image twice; recompute it: "
                        f"python -m poc evaluate {rd.id}")
    return frame


def _recorded_or_computed(rd: RunDir, info: dict | None, key: str, compute) -> str | None:
    info = info if info is not None else (store.read_json(rd.run_json) or {})
    dataset = info.get("dataset")
    recorded = dataset.get(key) if isinstance(dataset, dict) else None
    if isinstance(recorded, str) and recorded:
        return recorded
    split = store.read_split(rd)
    return None if split is None else compute(split)


def run_fingerprint(rd: RunDir, info: dict | None = None) -> str | None:
    """run.json's split fingerprint (`info`: run.json already read), else the one of its split.csv (older or
    hand-made runs); None without either. The whole split: train, val and test."""
    return _recorded_or_computed(rd, info, "split_fingerprint", split_fingerprint)


def test_identity(rd: RunDir, info: dict | None = None) -> str | None:
    """The identity of the run's test images (run.json's `test_fingerprint`, else from its split.csv); None
    without either. Two runs with the same test identity are compared paired."""
    return _recorded_or_computed(rd, info, "test_fingerprint", held_out_fingerprint)


def _describe(rd: RunDir, info: dict, stage: str) -> dict:
    return {"id": rd.id, "name": info.get("name"), "model": info.get("model"), "stage": stage}


def _short(fingerprint: str | None) -> str:
    return f"{fingerprint[:8]}..." if fingerprint else "unknown"


# ---------------------------------------------------------------- pairing

def _content_keys(rd: RunDir, paths: pd.Series) -> pd.Series | None:
    """Per image a key that survives a moved dataset folder: (sha256, label, rank among byte-identical
    copies), through the run's split.csv. None when split.csv cannot say."""
    split = store.read_split(rd)
    if split is None or not split["path"].astype(str).is_unique:
        return None
    split = split.assign(path=split["path"].astype(str)).set_index("path")
    if not set(paths) <= set(split.index):
        return None
    rows = split.loc[paths, ["sha256", "label"]].astype(str).reset_index().sort_values("path")
    rows["rank"] = rows.groupby(["sha256", "label"]).cumcount()
    keys = rows["sha256"] + "|" + rows["label"] + "|" + rows["rank"].astype(str)
    return pd.Series(keys.to_numpy(), index=rows["path"].to_numpy()).loc[paths.to_numpy()]


def align_predictions(a: pd.DataFrame, b: pd.DataFrame, rd_a: RunDir, rd_b: RunDir) -> pd.DataFrame | None:
    """b's rows in a's order, one pair per test image: by path, else by image content (a dataset folder that
    moved between the runs). None when the two do not list the same images."""
    if set(a["path"]) == set(b["path"]):
        return b.set_index("path", drop=False).loc[a["path"]].reset_index(drop=True)
    keys_a, keys_b = _content_keys(rd_a, a["path"]), _content_keys(rd_b, b["path"])
    if keys_a is None or keys_b is None or len(a) != len(b) or not (keys_a.is_unique and keys_b.is_unique) \
            or set(keys_a) != set(keys_b):
        return None
    return b.set_axis(keys_b.to_numpy()).loc[keys_a.to_numpy()].reset_index(drop=True)


def _correct(frame: pd.DataFrame) -> np.ndarray:
    return (frame["label"] == frame["pred"]).to_numpy(bool)


def _accuracy(correct: np.ndarray) -> dict:
    k, n = int(correct.sum()), int(len(correct))
    return {"value": k / n if n else float("nan"), "k": k, "n": n,
            "ci95": list(stats.accuracy_interval(k, n, method="wilson"))}


def _per_class_f1(frames: tuple[pd.DataFrame, pd.DataFrame], classes: list[str]) -> list[dict]:
    """class, f1_a, f1_b, delta = f1_a - f1_b (the sign of the accuracy difference A - B); an F1 is None for
    a class with no test image in that set (undefined, not 0)."""
    from sklearn.metrics import f1_score  # here: the verdict's accuracy_gap pairs through this module

    f1s = []
    for frame in frames:
        scores = f1_score(frame["label"], frame["pred"], labels=classes, average=None, zero_division=0)
        support = frame["label"].value_counts()
        f1s.append([float(s) if support.get(c, 0) > 0 else None for c, s in zip(classes, scores)])
    return [{"class": c, "f1_a": fa, "f1_b": fb, "delta": None if fa is None or fb is None else fa - fb}
            for c, fa, fb in zip(classes, *f1s)]


def _classes(*sources) -> list[str]:
    """Ordered union of class names: run.json lists first, then any label seen only in predictions."""
    seen: dict[str, None] = {}
    for source in sources:
        for name in source:
            seen.setdefault(str(name), None)
    return list(seen)


def _paired(a: pd.DataFrame, b: pd.DataFrame, classes: list[str]) -> dict:
    ok_a, ok_b = _correct(a), _correct(b)
    cells = {"both_right": ok_a & ok_b, "only_a": ok_a & ~ok_b, "only_b": ~ok_a & ok_b,
             "both_wrong": ~ok_a & ~ok_b}
    counts = {cell: int(mask.sum()) for cell, mask in cells.items()}
    d = stats.paired_difference(counts["only_a"], counts["only_b"], len(a))
    return {
        "paired": True, "n": int(len(a)),
        "accuracy_a": _accuracy(ok_a), "accuracy_b": _accuracy(ok_b),
        "difference": {"diff": d.diff, "low": d.low, "high": d.high, "method": d.method,
                       "discordant": d.discordant},
        "mcnemar": {**counts, "p_value": d.p_value},
        "table": {cell: a["path"][mask].tolist() for cell, mask in cells.items()},
        "per_class_f1": _per_class_f1((a, b), classes),
    }


def _unpaired(a: pd.DataFrame, b: pd.DataFrame, classes: list[str]) -> dict:
    ok_a, ok_b = _correct(a), _correct(b)
    d = stats.unpaired_difference(int(ok_a.sum()), len(ok_a), int(ok_b.sum()), len(ok_b))
    return {"paired": False, "n": None, "n_a": int(len(a)), "n_b": int(len(b)),
            "accuracy_a": _accuracy(ok_a), "accuracy_b": _accuracy(ok_b),
            "difference": {"diff": d.diff, "low": d.low, "high": d.high, "method": d.method, "discordant": None},
            "mcnemar": None, "table": None, "per_class_f1": _per_class_f1((a, b), classes)}


# ---------------------------------------------------------------- the public comparisons

def compare_stages(rd_a: RunDir, stage_a: str, rd_b: RunDir, stage_b: str, allow_unpaired: bool = False) -> dict:
    """A's `stage_a` versus B's `stage_b` on their test predictions: the one answer to "is A better than B on
    these test images" that the CLI, the pages and the report show. Paired when both list the same test images
    (by path, else by content): accuracies with Wilson intervals, the exact interval of A - B, exact McNemar p,
    the 2x2 table with each cell's images, per-class F1 differences; `same_split` says whether the train/val
    parts are the same too. Different test images raise UserError naming what differs, unless
    `allow_unpaired` (then Newcombe's unpaired interval, no McNemar and no table; refused when the two runs
    know different classes)."""
    info_a, info_b = _info(rd_a), _info(rd_b)
    a, b = _predictions(rd_a, stage_a), _predictions(rd_b, stage_b)
    classes_a, classes_b = info_a.get("class_names") or [], info_b.get("class_names") or []
    classes = _classes(classes_a, classes_b, sorted(set(a["label"]) | set(b["label"])))
    fp_a, fp_b = run_fingerprint(rd_a, info_a), run_fingerprint(rd_b, info_b)
    test_a, test_b = test_identity(rd_a, info_a), test_identity(rd_b, info_b)
    head = {"run_a": _describe(rd_a, info_a, stage_a), "run_b": _describe(rd_b, info_b, stage_b),
            "fingerprint_a": fp_a, "fingerprint_b": fp_b, "test_fingerprint_a": test_a,
            "test_fingerprint_b": test_b, "same_split": fp_a is not None and fp_a == fp_b}
    aligned = align_predictions(a, b, rd_a, rd_b)
    if aligned is not None:
        return {**head, **_paired(a, aligned, classes)}
    if test_a is not None and test_a == test_b:
        raise UserError(f"runs {rd_a.id} and {rd_b.id} share their test images (test set {_short(test_a)}) but "
                        f"their eval/{stage_a} and eval/{stage_b} predictions list different images; recompute "
                        f"them: python -m poc evaluate RUN")
    if not allow_unpaired:
        raise UserError(f"runs {rd_a.id} and {rd_b.id} were tested on different images (test sets "
                        f"{_short(test_a)} vs {_short(test_b)}, {len(a)} vs {len(b)} images): a paired "
                        f"comparison needs the same test images: train {rd_b.id} with --from-run {rd_a.id} or "
                        f"the same --data/--seed/--val/--test, or compare them --unpaired")
    if classes_a and classes_b and set(classes_a) != set(classes_b):
        only = sorted(set(classes_a) ^ set(classes_b))
        raise UserError(f"runs {rd_a.id} and {rd_b.id} were trained on different classes (only one of them knows "
                        f"{', '.join(only)}): their accuracies answer different questions, so they are not "
                        "compared, even unpaired")
    return {**head, **_unpaired(a, b, classes)}


def compare_runs(rd_a: RunDir, rd_b: RunDir, stage: str | None = None, allow_unpaired: bool = False) -> dict:
    """compare_stages at `stage` for both runs, or (None) at each run's final stage."""
    if stage:
        return compare_stages(rd_a, stage, rd_b, stage, allow_unpaired)
    return compare_stages(rd_a, _final(rd_a, _info(rd_a)), rd_b, _final(rd_b, _info(rd_b)), allow_unpaired)


def stage_change(rd: RunDir) -> dict:
    """What fine-tuning did within one run: the same result as compare_runs with A = after fine-tuning ("ft")
    and B = after transfer learning ("tl"), so the difference and each F1 `delta` are gains of fine-tuning,
    `only_a` counts the images it newly got right and `only_b` those it newly got wrong; each per-class row
    adds `worse` (its F1 dropped from tl to ft)."""
    info = _info(rd)
    tl, ft = _predictions(rd, "tl"), _predictions(rd, "ft")
    aligned = align_predictions(ft, tl, rd, rd)
    if aligned is None:
        raise UserError(f"run {rd.id}: eval/tl and eval/ft predictions list different test images; recompute "
                        f"them: python -m poc evaluate {rd.id}")
    classes = _classes(info.get("class_names") or [], sorted(set(ft["label"])))
    fp = run_fingerprint(rd, info)
    result = {"run_a": _describe(rd, info, "ft"), "run_b": _describe(rd, info, "tl"), "fingerprint_a": fp,
              "fingerprint_b": fp, "same_split": True, **_paired(ft, aligned, classes)}
    for row in result["per_class_f1"]:
        row["worse"] = row["delta"] is not None and row["delta"] < 0
    return result


# ---------------------------------------------------------------- output

def _num(value, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_comparison(result: dict) -> str:
    """The plain text the CLI prints: both accuracies, the difference, McNemar, the 2x2 counts, per-class F1."""
    ra, rb = result["run_a"], result["run_b"]
    same_run = ra["id"] == rb["id"]
    labels = ("A", "B") if not same_run else (ra["stage"], rb["stage"])
    width = max(len(ra["id"]), len(rb["id"]))
    model_width = max(len(str(ra.get("model"))), len(str(rb.get("model"))))
    lines = []
    for label, run, acc in ((labels[0], ra, result["accuracy_a"]), (labels[1], rb, result["accuracy_b"])):
        lo, hi = acc["ci95"]
        lines.append(f"{label:<3} {run['id']:<{width}}  {str(run.get('model')):<{model_width}}  {run['stage']:<3} "
                     f"accuracy {_num(acc['value'])}  95% CI [{_num(lo)}, {_num(hi)}]  ({acc['k']}/{acc['n']})")
    diff = result["difference"]
    lines.append(f"{labels[0]} - {labels[1]}  {_num(diff['diff'], '+.3f')}  95% CI [{_num(diff['low'], '+.3f')}, "
                 f"{_num(diff['high'], '+.3f')}]  ({scope_text(result)})")
    lines.append(f"interval: {diff['method']}")
    if result["mcnemar"] is not None:
        m = result["mcnemar"]
        lines += [f"McNemar exact p = {m['p_value']:.4g}  (discordant images: {m['only_a']} only {labels[0]} "
                  f"right, {m['only_b']} only {labels[1]} right)", "",
                  f"{'':<12}{labels[1] + ' right':>10}{labels[1] + ' wrong':>10}",
                  f"{labels[0] + ' right':<12}{m['both_right']:>10}{m['only_a']:>10}",
                  f"{labels[0] + ' wrong':<12}{m['only_b']:>10}{m['both_wrong']:>10}"]
    else:
        lines.append("different test sets: no McNemar test and no agreement table (unpaired)")
    rows = result["per_class_f1"]
    if rows:
        name_width = max(5, *(len(r["class"]) for r in rows))
        lines += ["", f"{'class':<{name_width}}  {'F1 ' + labels[0]:>7}  {'F1 ' + labels[1]:>7}  {'delta':>7}"]
        for r in rows:
            flag = "  worse" if r.get("worse") else ""
            lines.append(f"{r['class']:<{name_width}}  {_num(r['f1_a']):>7}  {_num(r['f1_b']):>7}  "
                         f"{_num(r['delta'], '+.3f'):>7}{flag}")
    return "\n".join(lines)


def scope_text(result: dict) -> str:
    """What the comparison rests on, in one phrase: how many test images, how many of them decided it."""
    if not result["paired"]:
        return f"unpaired: {result['n_a']} vs {result['n_b']} different test images, no McNemar test"
    discordant = result["difference"]["discordant"]
    decided = ("no image separates the two runs" if not discordant else
               f"{discordant} discordant image{'s' if discordant != 1 else ''} decide it")
    split = "" if result.get("same_split", True) else "; their train/val parts differ"
    return f"paired over the same {result['n']} test images; {decided}{split}"


def comparison_json(result: dict) -> dict:
    """The result as plain JSON types (paths included); NaN becomes null."""
    def plain(value):
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, np.ndarray)):
            return [plain(v) for v in value]
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        return value if value is None or isinstance(value, str) else str(value)

    return plain(result)
