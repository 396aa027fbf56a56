"""The runs leaderboard as a DataFrame, and the ViT-vs-CNN verdict drawn from it.

One row per run, damaged runs included and flagged: a field of the wrong type reads as missing and is named in
`problems`, so no caller re-checks types. The verdict compares like with like: runs of one split (one
dataset and split fingerprint), the best of each family chosen on the validation split, never on the test
split, whose accuracy only reports the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from poc.runs import store
from poc.runs import status as runstatus
from poc.analysis.compare import test_identity
from poc.runs.store import RunDir, RunRecord, as_number

NUMERIC = ["trainable_tl", "trainable_ft", "size_mb", "acc_tl", "acc_tl_low", "acc_tl_high", "acc_ft",
           "acc_ft_low", "acc_ft_high", "val_acc", "val_loss", "macro_f1", "best_epoch_tl", "best_epoch_ft",
           "train_seconds", "progress", "num_classes", "image_size"]
COLUMNS = ["id", "name", "model", "family", "weights", "pretraining", "fine_tune_at", "trainable_tl",
           "trainable_ft", "size_mb", "acc_tl", "acc_tl_low", "acc_tl_high", "acc_ft", "acc_ft_low", "acc_ft_high",
           "final_stage", "val_acc", "val_loss", "macro_f1", "best_epoch_tl", "best_epoch_ft", "train_seconds",
           "device", "status", "progress", "error", "problems", "created", "finished", "num_classes", "image_size",
           "dataset", "split_fingerprint", "test_fingerprint", "study_id", "study_kind"]
FAMILIES = ("cnn", "vit", "baseline")  # the families the verdict compares
SELECTION_RULE = ("the highest validation accuracy of each run's final stage (ties: the lower validation loss); "
                  "the test split takes no part in the choice, its accuracy only reports it")


# ---------------------------------------------------------------- rows

def leaderboard(runs: list[RunRecord]) -> pd.DataFrame:
    """One row per run (COLUMNS); numeric columns are floats (NaN: missing), text columns str or None."""
    return frame([row(r) for r in runs])


def frame(rows: list[dict]) -> pd.DataFrame:
    """The leaderboard of rows that `row` built (a reader that keeps rows between calls rebuilds only some)."""
    board = pd.DataFrame(rows, columns=COLUMNS)
    for column in NUMERIC:
        board[column] = pd.to_numeric(board[column], errors="coerce").astype(float)
    return board


def row(run: RunRecord) -> dict:
    """One leaderboard row; never raises: a run.json of an unexpected shape gives an "unreadable" row."""
    try:
        return _row(run)
    except Exception as exc:  # noqa: BLE001 - wrong types deep inside run.json: flagged, not fatal
        row = dict.fromkeys(COLUMNS)
        row.update(id=run.id, name=run.id, status="unreadable",
                   problems="; ".join(run.problems + [f"run.json malformed ({type(exc).__name__}: {exc})"]))
        return row


def _row(run: RunRecord) -> dict:
    info = run.info
    notes = list(run.problems)
    params, best, timing, dataset, study = (_mapping(info.get(k))
                                            for k in ("params", "best_epoch", "timing", "dataset", "study"))

    def number(column: str, value):
        result = as_number(value)
        if result is None and value is not None and not isinstance(value, float):
            notes.append(f"{column} is not a number")
        return result

    row = dict.fromkeys(COLUMNS)
    row.update({
        "id": run.id, "name": _text(info.get("name")) or run.id, "model": _text(info.get("model")),
        "family": _text(info.get("family")), "weights": _text(info.get("weights")),
        "pretraining": pretraining(info), "fine_tune_at": _text(info.get("fine_tune_at")),
        "trainable_tl": number("trainable_tl", params.get("trainable_tl")),
        "trainable_ft": number("trainable_ft", params.get("trainable_ft")),
        "size_mb": number("size_mb", params.get("size_mb")),
        "best_epoch_tl": number("best_epoch_tl", best.get("tl")),
        "best_epoch_ft": number("best_epoch_ft", best.get("ft")),
        "train_seconds": sum(v for v in map(as_number, timing.values()) if v is not None) or None,
        "device": _text(info.get("device")), "status": runstatus.effective_status(run),
        "error": _text(info.get("error")), "created": _text(info.get("created")),
        "finished": _text(info.get("finished")), "num_classes": len(run.class_names) or None,
        "image_size": number("image_size", info.get("image_size")),
        "dataset": _text(dataset.get("path")), "split_fingerprint": _text(dataset.get("split_fingerprint")),
        "test_fingerprint": test_identity(run.dir, info),
        "study_id": _text(study.get("id")), "study_kind": _text(study.get("kind")),
    })
    metrics = {}
    for stage in store.STAGES:
        values, problems = store.read_metrics(run.dir, stage)
        notes += problems
        if values and values.get("accuracy") is not None:
            metrics[stage] = values
            low, high = values.get("accuracy_ci95") or (None, None)
            row.update({f"acc_{stage}": values["accuracy"], f"acc_{stage}_low": low, f"acc_{stage}_high": high})
    final = runstatus.final_stage(info.get("final_stage"), [s for s in store.STAGES if s in metrics])
    if final:
        row.update(final_stage=final, val_acc=metrics[final].get("val_accuracy"),
                   val_loss=metrics[final].get("val_loss"), macro_f1=metrics[final].get("macro_f1"))
    row["problems"] = "; ".join(dict.fromkeys(notes)) or None
    if runstatus.is_active(row["status"]):
        row["progress"] = runstatus.phase_fraction(store.read_progress(run.dir))
    return row


def pretraining(info: dict) -> str | None:
    """What the backbone started from: run.json's `pretraining`, or for older runs derived from `weights`."""
    kind = info.get("pretraining")
    if isinstance(kind, str) and kind:
        return kind
    weights = info.get("weights")
    if not isinstance(weights, str) or not weights:
        return None
    if weights.startswith("run:"):
        return "run"
    from poc.models import pretraining_kind  # TensorFlow-free

    return pretraining_kind(weights)


def _mapping(value) -> dict:
    return value if isinstance(value, dict) else {}


def _text(value) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


# ---------------------------------------------------------------- the verdict

def comparison_groups(board: pd.DataFrame) -> pd.DataFrame:
    """Test sets holding a completed run (runs tested on the same images are comparable, whatever their train/val
    parts): test_fingerprint, dataset, runs, latest (ISO time of its most recent completed run); the test set
    with the most recent completed run first."""
    done = board[(board["status"] == "completed") & board["test_fingerprint"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["test_fingerprint", "dataset", "runs", "latest"])
    done = done.assign(when=done["finished"].fillna(done["created"]).fillna(""))
    groups = done.groupby("test_fingerprint", sort=False).agg(
        dataset=("dataset", "first"), runs=("id", "size"), latest=("when", "max")).reset_index()
    return groups.sort_values(["latest", "runs"], ascending=False, kind="stable").reset_index(drop=True)


def best_by_validation(rows: pd.DataFrame) -> tuple[pd.Series | None, pd.DataFrame]:
    """(the best row by SELECTION_RULE or None, the rows that cannot take part: no validation metrics)."""
    comparable = rows[rows["val_acc"].notna()]
    if comparable.empty:
        return None, rows
    ranked = comparable.sort_values(["val_acc", "val_loss"], ascending=[False, True], na_position="last",
                                    kind="stable")
    return ranked.iloc[0], rows[rows["val_acc"].isna()]


@dataclass
class Verdict:
    """The best run of each family on one test set, chosen on validation; test figures report the choice."""

    test_fingerprint: str
    dataset: str | None
    best: dict = field(default_factory=dict)  # family -> leaderboard row (pd.Series)
    not_comparable: pd.DataFrame | None = None  # completed runs of the split without validation metrics
    candidates: dict = field(default_factory=dict)  # family -> how many runs its best was chosen from
    repeats: dict = field(default_factory=dict)  # family -> test accuracies of the best's seed repeats (or [])

    @property
    def baseline_leads(self) -> bool:
        """The best baseline's validation accuracy beats both families' best: say so beside the gap."""
        base = self.best.get("baseline")
        families = [self.best[f]["val_acc"] for f in ("cnn", "vit") if self.best.get(f) is not None]
        return base is not None and bool(families) and all(base["val_acc"] > v for v in families)

    @property
    def pretraining_differs(self) -> bool:
        kinds = [self.best[f].get("pretraining") for f in ("cnn", "vit") if self.best.get(f) is not None]
        return len(kinds) == 2 and None not in kinds and kinds[0] != kinds[1]


def verdict(board: pd.DataFrame, test_fingerprint: str) -> Verdict:
    rows = board[(board["status"] == "completed") & (board["test_fingerprint"] == test_fingerprint)
                 & board["family"].isin(FAMILIES)]
    rows = rows.sort_values(["created", "id"], ascending=False, na_position="last", kind="stable")
    dataset = rows["dataset"].dropna().iloc[0] if rows["dataset"].notna().any() else None
    result = Verdict(test_fingerprint, dataset)
    left_out = []
    for family in FAMILIES:
        best, without = best_by_validation(rows[rows["family"] == family])
        result.best[family] = best
        result.candidates[family] = int(rows[rows["family"] == family]["val_acc"].notna().sum())
        result.repeats[family] = _seed_repeats(rows, best)
        left_out.append(without)
    result.not_comparable = pd.concat(left_out) if left_out else rows.iloc[:0]
    return result


def _seed_repeats(rows: pd.DataFrame, best: pd.Series | None) -> list[float]:
    """Test accuracies (final stage) of the runs of the best run's seed study, the best included; [] when the
    best is a single training run."""
    if best is None or best.get("study_kind") != "seeds" or not best.get("study_id"):
        return []
    study = rows[(rows["study_id"] == best["study_id"]) & (rows["model"].fillna("") == (best["model"] or ""))]
    accuracies = [r[f"acc_{r['final_stage']}"] for _, r in study.iterrows() if isinstance(r["final_stage"], str)]
    return [float(a) for a in accuracies if pd.notna(a)]


def accuracy_gap(rd_a: RunDir, stage_a: str, rd_b: RunDir, stage_b: str) -> dict | None:
    """The verdict's gap: poc.analysis.compare.compare_stages of a's stage against b's, summarised as
    {diff, low, high, method, p_value, discordant, n, acc_a, acc_b}: the same numbers Compare, `compare` and the
    report show. None when the two cannot be paired (a predictions file missing, different test images)."""
    from poc.analysis.compare import compare_stages
    from poc.errors import UserError

    try:
        result = compare_stages(rd_a, stage_a, rd_b, stage_b)
    except UserError:
        return None
    diff = result["difference"]
    return {"diff": diff["diff"], "low": diff["low"], "high": diff["high"], "method": diff["method"],
            "p_value": result["mcnemar"]["p_value"], "discordant": diff["discordant"], "n": result["n"],
            "acc_a": result["accuracy_a"]["value"], "acc_b": result["accuracy_b"]["value"],
            "same_split": result["same_split"]}
