"""Studies read back: one row per finished study run, and the summary table that answers the study's question.

    study_runs(runs)      one row per completed run with a run.json `study` block (RUN_COLUMNS)
    study_summary(runs)   one row per (study, model, cutoff or fraction) over its seeds (SUMMARY_COLUMNS)
    study_tests(runs, table)  each row of a study against its best row on the same test images, Holm-adjusted
                          over the study's tests (TEST_COLUMNS)
    summary_text / result_json   what `python -m poc sweep` (and `train --seeds / --train-fraction`) print

The test split never chooses: a study's `best` row has the highest mean VALIDATION accuracy (ties: the lower
validation loss), picked by poc.analysis.leaderboard.best_by_validation like Home's verdict; test accuracy only reports it.
Pure pandas over poc.runs.store readers: no TensorFlow (the dashboard reaches it through poc.analysis.leaderboard).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from poc.runs import store
from poc.analysis import leaderboard
from poc.analysis.compare import compare_stages
from poc.analysis.stats import holm
from poc.errors import UserError
from poc.runs import status as runstatus
from poc.runs.run_info import best_epochs
from poc.runs.store import RunDir, RunRecord
from poc.runs.study import HEAD_ONLY, KINDS, REPEATS

RUN_COLUMNS = ["study", "kind", "role", "id", "name", "model", "family", "value", "cutoff", "train_fraction",
               "seed", "split_seed", "split_fingerprint", "stage", "trainable_params", "train_images", "correct",
               "n_test", "acc", "val_acc", "val_loss", "gap", "train_seconds"]
SELECTION_RULE = ("the highest mean validation accuracy of the study's rows (ties: the lower validation loss); "
                  "the test split takes no part in the choice, its accuracy only reports it")
SUMMARY_COLUMNS = ["study", "kind", "model", "family", "value", "cutoff", "train_fraction", "stage", "runs", "seeds",
                   "trainable_params", "train_images", "n_test", "acc_mean", "acc_std", "acc_low", "acc_high",
                   "acc_min", "acc_max", "val_acc_mean", "val_loss_mean", "gap_mean", "gap_std",
                   "train_seconds_mean", "train_seconds_std", "split_fingerprint", "paired", "best", "run_ids"]
TEST_COLUMNS = ["study", "value", "vs", "seed", "run", "vs_run", "diff", "low", "high", "p_value", "p_holm",
                "discordant", "n", "reason"]


def study_runs(runs: list[RunRecord]) -> pd.DataFrame:
    """One row per completed run that belongs to a study (RUN_COLUMNS): its test result on the stage the study
    measures (a sweep's phase 2: ft; its phase 1: tl; other studies: the run's final stage), the validation
    accuracy and loss of that stage, and the train-minus-validation accuracy gap at the stage's best epoch."""
    rows = [row for row in map(_safe_study_row, runs) if row is not None]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _safe_study_row(run: RunRecord) -> dict | None:
    """A study row, or None: a run of no study, not completed, or whose files are of an unexpected shape (the
    leaderboard names what is wrong with it; a study table leaves it out rather than break a page)."""
    try:
        return _study_row(run)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def _study_row(run: RunRecord) -> dict | None:
    info, study = run.info, run.info.get("study")
    if not isinstance(study, dict) or study.get("kind") not in KINDS or run.status != "completed":
        return None
    role = study.get("role")
    stage = {"phase1": "tl", "phase2": "ft"}.get(role) or runstatus.final_stage(info.get("final_stage"),
                                                                               runstatus.stages(run.dir))
    metrics, _ = store.read_metrics(run.dir, stage) if stage else (None, [])
    correct, n = _test_counts(run.dir, stage, metrics)
    if n is None:
        return None
    fraction = store.as_number(study.get("train_fraction"))
    value = {"sweep": study.get("cutoff") or HEAD_ONLY, "data_size": f"{fraction if fraction else 1.0:g}",
             "seeds": REPEATS}[study["kind"]]
    dataset = info.get("dataset") if isinstance(info.get("dataset"), dict) else {}
    params = info.get("params") if isinstance(info.get("params"), dict) else {}
    trainable = store.as_number(study.get("trainable_params"))
    if trainable is None:
        trainable = store.as_number(params.get("trainable_tl" if stage == "tl" else "trainable_ft"))
    timing = info.get("timing") if isinstance(info.get("timing"), dict) else {}
    return {"study": str(study.get("id")), "kind": study["kind"], "role": role, "id": run.id,
            "name": info.get("name") or run.id, "model": info.get("model"), "family": info.get("family"),
            "value": value, "cutoff": study.get("cutoff") or (HEAD_ONLY if role == "phase1" else None),
            "train_fraction": fraction, "seed": study.get("seed"),
            "split_seed": study.get("split_seed"), "split_fingerprint": dataset.get("split_fingerprint"),
            "stage": stage, "trainable_params": trainable,
            "train_images": store.as_number((dataset.get("counts") or {}).get("train")),
            "correct": correct, "n_test": n, "acc": correct / n if n else np.nan,
            "val_acc": (metrics or {}).get("val_accuracy"), "val_loss": (metrics or {}).get("val_loss"),
            "gap": _gap(run, stage),
            "train_seconds": _own_seconds(timing, role)}


def _own_seconds(timing: dict, role: str | None) -> float:
    """The seconds a study row's run trained: a sweep's phase-2 row counts its fine-tuning alone (the shared
    phase 1 is its phase-1 row's, also when the run trained that phase 1 itself, as the demo's CNN does)."""
    if role == "phase2":
        timing = {k: v for k, v in timing.items() if k == "ft"}
    return sum(v for v in map(store.as_number, timing.values()) if v is not None)


def _test_counts(rd: RunDir, stage: str | None, metrics: dict | None) -> tuple[int | None, int | None]:
    """(right, total) on the test split, counted from predictions.csv (else metrics.json's accuracy x n)."""
    if stage is None:
        return None, None
    predictions = store.read_predictions(rd, stage)
    if predictions is not None and len(predictions):
        return int((predictions["label"] == predictions["pred"]).sum()), int(len(predictions))
    accuracy, n = (metrics or {}).get("accuracy"), (metrics or {}).get("n")
    if accuracy is None or not n:
        return None, None
    return int(round(accuracy * n)), int(n)


def _gap(run: RunRecord, stage: str) -> float:
    """Training accuracy minus validation accuracy at the stage's best epoch (history.csv); NaN when unknown."""
    history = store.read_history(run.dir)
    if history is None:
        return float("nan")
    rows = history[history["phase"] == stage]
    at_best = rows[rows["epoch"] == best_epochs(history, run.info.get("best_epoch")).get(stage)]
    if at_best.empty:
        return float("nan")
    return float(at_best["accuracy"].iloc[0] - at_best["val_accuracy"].iloc[0])


def study_summary(runs: list[RunRecord]) -> pd.DataFrame:
    """One row per (study, model, cutoff or fraction) over its seeds (SUMMARY_COLUMNS), newest study first, then
    fewest trainable parameters / smallest share first:
      acc_mean, acc_std (over seeds; NaN for one), acc_min / acc_max, and acc_low / acc_high: the Wilson 95%
      interval of acc_mean read as round(acc_mean x n_test) right of the n_test test images (test-set sampling
      noise only; the spread over seeds is acc_std, and the interval does not include it);
      gap_mean / gap_std: training minus validation accuracy at the best epoch; train_seconds_*: each run's own
      time (a sweep's phase-2 runs exclude the shared phase 1); paired: the study used one split;
      best: the highest mean validation accuracy in the study (ties: the lower validation loss), never test."""
    from poc.analysis.stats import accuracy_interval

    per_run = study_runs(runs)
    if per_run.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    rows = []
    for (study, value), group in per_run.groupby(["study", "value"], sort=False):
        n = int(group["n_test"].iloc[0])
        acc = group["acc"].astype(float)
        low, high = accuracy_interval(int(round(acc.mean() * n)), n)
        first = group.iloc[0]
        rows.append({
            "study": study, "kind": first["kind"], "model": first["model"], "family": first["family"],
            "value": value, "cutoff": first["cutoff"], "train_fraction": group["train_fraction"].mean(),
            "stage": first["stage"], "runs": len(group), "seeds": _seeds(group["seed"]),
            "trainable_params": group["trainable_params"].mean(), "train_images": group["train_images"].mean(),
            "n_test": n, "acc_mean": acc.mean(), "acc_std": _spread(acc), "acc_low": low, "acc_high": high,
            "acc_min": acc.min(), "acc_max": acc.max(),
            "val_acc_mean": pd.to_numeric(group["val_acc"]).mean(),
            "val_loss_mean": pd.to_numeric(group["val_loss"]).mean(),
            "gap_mean": group["gap"].mean(), "gap_std": _spread(group["gap"]),
            "train_seconds_mean": group["train_seconds"].mean(), "train_seconds_std": _spread(group["train_seconds"]),
            "split_fingerprint": first["split_fingerprint"], "paired": None, "best": False,
            "run_ids": ",".join(group["id"]),
        })
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for study, group in table.groupby("study", sort=False):
        fingerprints = per_run.loc[per_run["study"] == study, "split_fingerprint"]
        table.loc[group.index, "paired"] = fingerprints.notna().all() and fingerprints.nunique() == 1
        best, _ = leaderboard.best_by_validation(group.rename(columns={"val_acc_mean": "val_acc",
                                                                       "val_loss_mean": "val_loss"}))
        if best is not None:
            table.loc[best.name, "best"] = True
    table["paired"] = table["paired"].astype(bool)
    table = table.sort_values(["study", "trainable_params", "train_fraction"], ascending=[False, True, True],
                              kind="stable")
    return table.reset_index(drop=True)


def study_tests(runs: list[RunRecord], table: pd.DataFrame) -> pd.DataFrame:
    """Within each study of `table` (study_summary rows, any subset of studies), each row against the study's
    best row (`best`, chosen on validation) on the same test images: one row per (study, non-best row) in
    TEST_COLUMNS, in the table's order.

    Pairing rule for seeds: a row's run is compared with the best row's run OF THE SAME SEED, the lowest seed
    both rows have (`seed`; None when neither run recorded one), through poc.analysis.compare.compare_stages on
    the stages the study measures. One seed, not the per-seed 2x2 counts pooled: every seed scores the same
    test images, so pooled counts would count each image once per seed and the exact McNemar test, which
    assumes independent images, would overstate the evidence. The spread over seeds stays in the summary.

    diff, low, high: test accuracy of the row minus the best row's, with its exact per-comparison 95% interval
    (poc.analysis.stats.paired_difference); p_value: that comparison's exact McNemar p (the interval excludes 0
    exactly when p_value < 0.05); p_holm: Holm's adjustment over the study's tests, the family being the
    tested rows of that study (m = how many have a p_value), so that any claimed difference among them is
    wrong with probability under 5%. A row that cannot be paired (no seed in common, different test images,
    unreadable predictions) gets a `reason`, NaN numbers, and takes no part in the family. A study without a
    best row gives every row a reason; a study of one row has no test."""
    per_run = study_runs(runs).drop_duplicates("id").set_index("id")
    dirs = {run.id: run.dir for run in runs}
    rows = []
    for study, group in table.groupby("study", sort=False):
        best = group[group["best"].astype(bool)]
        tested = [_test_row(study, row, best.iloc[0] if len(best) else None, per_run, dirs)
                  for _, row in group.iterrows() if not row["best"]]
        p_values = [r["p_value"] for r in tested if r["reason"] is None]
        adjusted = iter(holm(p_values)) if p_values else iter(())
        for r in tested:
            if r["reason"] is None:
                r["p_holm"] = float(next(adjusted))
        rows += tested
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def _test_row(study: str, row: pd.Series, best: pd.Series | None, per_run: pd.DataFrame, dirs: dict) -> dict:
    """One row of study_tests: `row` minus `best` on the runs of their lowest common seed, or a reason."""
    out = {"study": study, "value": row["value"], "vs": None if best is None else best["value"], "seed": None,
           "run": None, "vs_run": None, "diff": np.nan, "low": np.nan, "high": np.nan, "p_value": np.nan,
           "p_holm": np.nan, "discordant": None, "n": None, "reason": None}
    if best is None:
        return {**out, "reason": "the study has no best row (no validation accuracy to choose one by)"}
    mine, theirs = _runs_by_seed(row, per_run), _runs_by_seed(best, per_run)
    common = sorted((s for s in mine if s in theirs), key=lambda s: (s is None, s))
    if not common:
        return {**out, "reason": f"no seed in common with the best row (seeds {_seed_list(mine)} vs "
                                 f"{_seed_list(theirs)}): no paired comparison"}
    seed = common[0]
    run_a, run_b = mine[seed], theirs[seed]
    out.update(seed=seed, run=run_a, vs_run=run_b)
    try:
        result = compare_stages(dirs[run_a], per_run.at[run_a, "stage"], dirs[run_b], per_run.at[run_b, "stage"])
    except (UserError, OSError, ValueError, KeyError) as exc:  # different test images, damaged predictions
        return {**out, "reason": str(exc) or type(exc).__name__}
    difference = result["difference"]
    return {**out, "diff": difference["diff"], "low": difference["low"], "high": difference["high"],
            "p_value": result["mcnemar"]["p_value"], "discordant": difference["discordant"], "n": result["n"]}


def _runs_by_seed(row: pd.Series, per_run: pd.DataFrame) -> dict:
    """{seed (int, or None when not recorded): the row's first run id of that seed} over the row's run_ids."""
    runs: dict = {}
    for run_id in str(row["run_ids"]).split(","):
        if run_id in per_run.index:
            seed = store.as_number(per_run.at[run_id, "seed"])
            runs.setdefault(None if seed is None else int(seed), run_id)
    return runs


def _seed_list(runs: dict) -> str:
    return ",".join("?" if s is None else str(s) for s in sorted(runs, key=lambda s: (s is None, s))) or "none"


def _seeds(values: pd.Series) -> str:
    """"0,1,2": the distinct seeds of a group's runs, in order."""
    return ",".join(str(int(s)) for s in sorted(set(pd.to_numeric(values, errors="coerce").dropna())))


def _spread(values: pd.Series) -> float:
    """Sample standard deviation over seeds; NaN for fewer than two runs."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.std(ddof=1)) if len(values) > 1 else float("nan")


def summary_text(table: pd.DataFrame) -> str:
    """The summary as the CLI prints it: one line per cutoff or fraction, the best (by validation) starred."""
    if table.empty:
        return "no completed run in the study"
    lines = []
    for study, group in table.groupby("study", sort=False):
        first = group.iloc[0]
        lines.append(f"study {study} ({first['kind']}, {first['model']}, {first['n_test']} test images"
                     f"{'' if first['paired'] else ', NOT one split'}); best = highest validation accuracy")
        for _, r in group.iterrows():
            spread = f" ± {r['acc_std']:.3f}" if pd.notna(r["acc_std"]) else ""
            lines.append(
                f"{'*' if r['best'] else ' '} {r['value']:<18} {_count(r['trainable_params']):>11} trainable  "
                f"{_count(r['train_images']):>5} train imgs  test {r['acc_mean']:.3f}{spread} "
                f"[{r['acc_low']:.2f}, {r['acc_high']:.2f}]  val {r['val_acc_mean']:.3f}  "
                f"gap {r['gap_mean']:+.3f}  {r['train_seconds_mean']:.0f} s  ({r['runs']} run"
                f"{'s' if r['runs'] != 1 else ''}, seeds {r['seeds']})")
    return "\n".join(lines)


def _count(value) -> str:
    return f"{int(value):,}" if pd.notna(value) else "?"


def result_json(study_id: str, kind: str, rds: list[RunDir], failed: list[str], table: pd.DataFrame) -> dict:
    """`sweep --json`: the study, its runs (id, path, role, cutoff, seed), failures and the summary rows."""
    runs = []
    for rd in rds:
        study = (store.read_json(rd.run_json) or {}).get("study") or {}
        runs.append({"id": rd.id, "path": str(rd.path), "role": study.get("role"), "cutoff": study.get("cutoff"),
                     "seed": study.get("seed"), "train_fraction": study.get("train_fraction"),
                     "trainable_params": study.get("trainable_params")})
    rows = table[table["study"] == study_id]
    return {"study": study_id, "kind": kind, "runs": runs, "failed": failed,
            "selection_rule": SELECTION_RULE,
            "summary": [{k: _plain(v) for k, v in r.items()} for r in rows.to_dict("records")]}


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
