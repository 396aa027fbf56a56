"""The runs leaderboard as a DataFrame, and the ViT-vs-CNN verdict drawn from it.

One row per run, damaged runs included and flagged: a field of the wrong type reads as missing and is named in
`problems`, so no caller re-checks types. The verdict compares like with like: runs of one split (one
dataset and split fingerprint), the best of each family chosen on the validation split, never on the test
split, whose accuracy only reports the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from poc.runs import store
from poc.runs import status as runstatus
from poc.runs.store import RunDir, RunRecord, as_number

NUMERIC = ["trainable_tl", "trainable_ft", "size_mb", "acc_tl", "acc_tl_low", "acc_tl_high", "acc_ft",
           "acc_ft_low", "acc_ft_high", "val_acc", "val_loss", "macro_f1", "best_epoch_tl", "best_epoch_ft",
           "train_seconds", "progress", "num_classes", "image_size"]
COLUMNS = ["id", "name", "model", "family", "weights", "pretraining", "fine_tune_at", "trainable_tl",
           "trainable_ft", "size_mb", "acc_tl", "acc_tl_low", "acc_tl_high", "acc_ft", "acc_ft_low", "acc_ft_high",
           "final_stage", "val_acc", "val_loss", "macro_f1", "best_epoch_tl", "best_epoch_ft", "train_seconds",
           "device", "status", "progress", "error", "problems", "created", "finished", "num_classes", "image_size",
           "dataset", "split_fingerprint"]
FAMILIES = ("cnn", "vit", "baseline")  # the families the verdict compares
SELECTION_RULE = ("the highest validation accuracy of each run's final stage (ties: the lower validation loss); "
                  "the test split takes no part in the choice, its accuracy only reports it")


# ---------------------------------------------------------------- rows

def leaderboard(runs: list[RunRecord]) -> pd.DataFrame:
    """One row per run (COLUMNS); numeric columns are floats (NaN: missing), text columns str or None."""
    board = pd.DataFrame([_safe_row(r) for r in runs], columns=COLUMNS)
    for column in NUMERIC:
        board[column] = pd.to_numeric(board[column], errors="coerce").astype(float)
    return board


def _safe_row(run: RunRecord) -> dict:
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
    params, best, timing, dataset = (_mapping(info.get(k)) for k in ("params", "best_epoch", "timing", "dataset"))

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
    })
    metrics = {}
    for stage in store.STAGES:
        values, problems = store.read_metrics(run.dir, stage)
        notes += problems
        if values and values.get("accuracy") is not None:
            metrics[stage] = values
            low, high = values.get("accuracy_ci95") or (None, None)
            row.update({f"acc_{stage}": values["accuracy"], f"acc_{stage}_low": low, f"acc_{stage}_high": high})
    final = final_stage(info.get("final_stage"), list(metrics))
    if final:
        row.update(final_stage=final, val_acc=metrics[final].get("val_accuracy"),
                   val_loss=metrics[final].get("val_loss"), macro_f1=metrics[final].get("macro_f1"))
    row["problems"] = "; ".join(dict.fromkeys(notes)) or None
    if runstatus.is_active(row["status"]):
        row["progress"] = runstatus.phase_fraction(store.read_progress(run.dir))
    return row


def final_stage(recorded, evaluated: list[str]) -> str | None:
    """run.json's `final_stage` (the stage with the lower validation loss, whose weights are the model's) when
    that stage was evaluated; for older runs, the last evaluated stage."""
    if recorded in evaluated:
        return recorded
    return evaluated[-1] if evaluated else None


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
    """Splits holding a completed run: split_fingerprint, dataset, runs, latest (ISO time of its most recent
    completed run); the split with the most recent completed run first."""
    done = board[(board["status"] == "completed") & board["split_fingerprint"].notna()]
    if done.empty:
        return pd.DataFrame(columns=["split_fingerprint", "dataset", "runs", "latest"])
    done = done.assign(when=done["finished"].fillna(done["created"]).fillna(""))
    groups = done.groupby("split_fingerprint", sort=False).agg(
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
    """The best run of each family on one split, chosen on validation; test figures report the choice."""

    split_fingerprint: str
    dataset: str | None
    best: dict = field(default_factory=dict)  # family -> leaderboard row (pd.Series)
    not_comparable: pd.DataFrame | None = None  # completed runs of the split without validation metrics

    @property
    def pretraining_differs(self) -> bool:
        kinds = [self.best[f].get("pretraining") for f in ("cnn", "vit") if self.best.get(f) is not None]
        return len(kinds) == 2 and None not in kinds and kinds[0] != kinds[1]


def verdict(board: pd.DataFrame, split_fingerprint: str) -> Verdict:
    rows = board[(board["status"] == "completed") & (board["split_fingerprint"] == split_fingerprint)
                 & board["family"].isin(FAMILIES)]
    rows = rows.sort_values(["created", "id"], ascending=False, na_position="last", kind="stable")
    dataset = rows["dataset"].dropna().iloc[0] if rows["dataset"].notna().any() else None
    result = Verdict(split_fingerprint, dataset)
    left_out = []
    for family in FAMILIES:
        best, without = best_by_validation(rows[rows["family"] == family])
        result.best[family] = best
        left_out.append(without)
    result.not_comparable = pd.concat(left_out) if left_out else rows.iloc[:0]
    return result


def accuracy_gap(rd_a: RunDir, stage_a: str, rd_b: RunDir, stage_b: str, n_boot: int = 2000,
                 seed: int = 0) -> dict | None:
    """Test accuracy of a minus that of b over the same test images: {diff, low, high, n} with a paired
    bootstrap 95% interval (poc.analysis.stats.paired_bootstrap_diff). Images are paired as the Compare page pairs them
    (poc.analysis.compare.align_predictions: by path, else by content). None when a predictions file is missing or the
    two do not list the same test images (then no paired comparison exists)."""
    from poc.analysis.compare import align_predictions
    from poc.analysis.stats import paired_bootstrap_diff

    a, b = store.read_predictions(rd_a, stage_a), store.read_predictions(rd_b, stage_b)
    if a is None or b is None or a.empty or not a["path"].is_unique or not b["path"].is_unique:
        return None
    b = align_predictions(a, b, rd_a, rd_b)  # b's rows in a's order: one pair per image
    if b is None:
        return None
    correct_a = (a["label"] == a["pred"]).to_numpy(bool)
    correct_b = (b["label"] == b["pred"]).to_numpy(bool)
    result = paired_bootstrap_diff(correct_a, correct_b, n_boot=n_boot, seed=seed)
    return {"diff": float(result["diff"]), "low": float(result["low"]), "high": float(result["high"]),
            "n": int(len(a)), "acc_a": float(np.mean(correct_a)), "acc_b": float(np.mean(correct_b))}
