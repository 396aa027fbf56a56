"""The Learning-curves page's logic: run picker, history tables and the chart of the compared runs.

Pure (no Streamlit calls, unit-tested on their own): long_history, fine_tune_boundary, best_points, phase_summary,
curve_tables (each phase's best epoch from poc.runs.run_info.best_epochs). Rendering: pick_runs (the top row of
widgets) and render_curves (the chart and the per-phase table; the page runs it as a fragment that redraws while
a run trains).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from poc.runs.run_info import best_epochs  # the best-epoch rule: run.json's, else the lowest val_loss
from ui import charts, data, state
from ui.chart_cache import chart_spec

RUNS_KEY = "curves.runs"
CAPTION = ("Train (solid) vs validation (dashed) per epoch. The dotted rule marks where fine-tuning starts; "
           "hollow marks show each phase's best epoch (lowest validation loss, the weights that were kept). "
           "Click a run in the legend to highlight it.")


# ---------------------------------------------------------------- tables (pure)

def long_history(history: pd.DataFrame, label: str, metric: str) -> pd.DataFrame:
    """history.csv as rows run, epoch, phase, split ("train" | "validation"), value of `metric`."""
    parts = []
    for split, column in (("train", metric), ("validation", f"val_{metric}")):
        parts.append(pd.DataFrame({"run": label, "epoch": history["epoch"], "phase": history["phase"],
                                   "split": split, "value": history[column]}))
    return pd.concat(parts, ignore_index=True)


def fine_tune_boundary(history: pd.DataFrame) -> float | None:
    """Half an epoch after the last tl epoch when the run also has ft epochs; else None."""
    tl_epochs = history.loc[history["phase"] == "tl", "epoch"]
    if len(tl_epochs) and (history["phase"] == "ft").any():
        return float(tl_epochs.max()) + 0.5
    return None


def best_points(history: pd.DataFrame, label: str, metric: str, best: dict[str, int]) -> list[dict]:
    """One mark per phase: the validation `metric` at its best epoch (phases where it is missing are left out)."""
    points = []
    for phase, epoch in best.items():
        value = history.loc[history["epoch"] == epoch, f"val_{metric}"]
        if len(value) and pd.notna(value.iloc[0]):
            points.append({"run": label, "phase": phase, "epoch": epoch, "value": float(value.iloc[0])})
    return points


def phase_summary(history: pd.DataFrame, label: str, best: dict[str, int]) -> list[dict]:
    """One row per phase: epochs, the last epoch's metrics, the best epoch and its val accuracy, total seconds."""
    rows = []
    for phase, part in history.groupby("phase", sort=False):
        last = part.iloc[-1]
        at_best = part[part["epoch"] == best.get(phase)]
        at_best = at_best.iloc[0] if len(at_best) else None
        rows.append({
            "run": label, "phase": phase, "epochs": len(part), "last epoch": int(last["epoch"]),
            "loss": last["loss"], "accuracy": last["accuracy"], "val loss": last["val_loss"],
            "val accuracy": last["val_accuracy"], "best epoch": best.get(phase),
            "val accuracy at best": None if at_best is None else at_best["val_accuracy"],
            "learning rate": last["lr"], "seconds": part["seconds"].sum(),
        })
    return rows


@dataclass
class CurveTables:
    long: pd.DataFrame  # run, epoch, phase, split, value
    boundaries: pd.DataFrame  # run, epoch: where fine-tuning starts
    bests: pd.DataFrame  # run, phase, epoch, value: each phase's best epoch
    summary: pd.DataFrame  # phase_summary rows of every run


def curve_tables(runs: list[tuple[str, pd.DataFrame, object]], metric: str, log_scale: bool) -> CurveTables:
    """The chart's and the table's data from (label, non-empty history, run.json's best_epoch) per run; on a
    log scale the values <= 0 are left out of the curves."""
    longs, boundaries, bests, summary = [], [], [], []
    for label, history, recorded in runs:
        longs.append(long_history(history, label, metric))
        boundary = fine_tune_boundary(history)
        if boundary is not None:
            boundaries.append({"run": label, "epoch": boundary})
        best = best_epochs(history, recorded)
        bests += best_points(history, label, metric, best)
        summary += phase_summary(history, label, best)
    long = pd.concat(longs, ignore_index=True)
    if log_scale:
        long = long[long["value"] > 0]
    return CurveTables(long, pd.DataFrame(boundaries, columns=["run", "epoch"]),
                       pd.DataFrame(bests, columns=["run", "phase", "epoch", "value"]), pd.DataFrame(summary))


# ---------------------------------------------------------------- rendering

def pick_runs(board: pd.DataFrame) -> tuple[list[str], str, bool] | None:
    """(run ids, metric, log scale) from the top row, which shares Home's selection; None (after an st.info)
    when there is no run or none is chosen."""
    options = board.loc[board["status"] != "unreadable", "id"].tolist()
    if not options:
        st.info("No runs yet. Generate the demo runs on the Home page, or train one from the sidebar.")
        return None
    c1, c2, c3 = st.columns([4, 2, 1])
    picked = state.compare_picker("Runs", options, key=RUNS_KEY, container=c1, help="The same selection as on Home.")
    metric = c2.radio("Metric", ["loss", "accuracy"], horizontal=True, key="curves.metric")
    log_scale = c3.checkbox("Log scale", key="curves.log", disabled=metric != "loss",
                            help="for the loss; useful when it spans orders of magnitude")
    if not picked:
        st.info("Choose one or more runs above (or on Home).")
        return None
    return picked, metric, log_scale and metric == "loss"


def _usable_history(run_id: str, label: str):
    """(history, run.json's best_epoch) of a run with finished epochs; else None, with the reason on the page."""
    history = data.load_history(run_id)
    if history is None:
        record = data.load_run(run_id)
        if record is not None and record.dir.history_csv.exists():
            st.warning(f"{label}: history.csv is unreadable.")
        else:
            st.info(f"{label}: no history yet (no epoch has finished).")
        return None
    dropped = history.attrs.get("dropped_rows", 0)
    if dropped:
        st.warning(f"{label}: {dropped} row(s) of history.csv are malformed and left out.")
    if history.empty:
        st.info(f"{label}: no epoch has finished yet.")
        return None
    record = data.load_run(run_id)
    return history, record.info.get("best_epoch") if record is not None else None


def render_curves(run_ids: list[str], metric: str, log_scale: bool) -> None:
    """The runs' curves on one chart and the per-phase table; what is missing is said per run."""
    labels = data.run_labels(run_ids)
    runs = []
    for run_id in run_ids:
        label = labels.get(run_id, run_id)
        usable = _usable_history(run_id, label)
        if usable is not None:
            runs.append((label, *usable))
    if not runs:
        return
    tables = curve_tables(runs, metric, log_scale)
    st.vega_lite_chart(spec=chart_spec(charts.learning_curves, tables.long, metric, log_scale, tables.boundaries,
                                       tables.bests), width="stretch")
    st.subheader("Per phase")
    st.dataframe(tables.summary, hide_index=True, column_config={
        **{c: st.column_config.NumberColumn(format="%.4f")
           for c in ("loss", "accuracy", "val loss", "val accuracy", "val accuracy at best")},
        "learning rate": st.column_config.NumberColumn(format="%.0e"),
        "seconds": st.column_config.NumberColumn(format="%.1f")})
