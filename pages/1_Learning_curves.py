"""Learning curves: train vs validation loss or accuracy of the compared runs, on one interactive chart."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import charts, data, shell, state

RUNS_KEY = "curves.runs"


def _long(history: pd.DataFrame, label: str, metric: str) -> pd.DataFrame:
    parts = []
    for split, column in (("train", metric), ("validation", f"val_{metric}")):
        parts.append(pd.DataFrame({"run": label, "epoch": history["epoch"], "phase": history["phase"],
                                   "split": split, "value": history[column]}))
    return pd.concat(parts, ignore_index=True)


def _best_epochs(history: pd.DataFrame, record) -> dict[str, int]:
    """run.json's best_epoch per phase; else the epoch with the lowest val_loss of the phase."""
    recorded = record.info.get("best_epoch") if record is not None else None
    recorded = recorded if isinstance(recorded, dict) else {}
    best = {}
    for phase, rows in history.groupby("phase", sort=False):
        epoch = recorded.get(phase)
        if not isinstance(epoch, (int, float)) or epoch not in set(rows["epoch"]):
            losses = rows["val_loss"]
            epoch = rows.loc[losses.idxmin(), "epoch"] if losses.notna().any() else None
        if epoch is not None:
            best[phase] = int(epoch)
    return best


def _summary(history: pd.DataFrame, label: str, best: dict[str, int]) -> list[dict]:
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


def _curves(run_ids: list[str], metric: str, log_scale: bool) -> None:
    labels = data.run_labels(run_ids)
    longs, boundaries, bests, summary = [], [], [], []
    for run_id in run_ids:
        label = labels.get(run_id, run_id)
        history = data.load_history(run_id)
        if history is None:
            record = data.load_run(run_id)
            damaged = record is not None and record.dir.history_csv.exists()
            (st.warning if damaged else st.info)(
                f"{label}: history.csv is unreadable." if damaged else f"{label}: no history yet (no epoch "
                                                                       "has finished).")
            continue
        dropped = history.attrs.get("dropped_rows", 0)
        if dropped:
            st.warning(f"{label}: {dropped} row(s) of history.csv are malformed and left out.")
        if history.empty:
            st.info(f"{label}: no epoch has finished yet.")
            continue
        longs.append(_long(history, label, metric))
        tl_epochs = history.loc[history["phase"] == "tl", "epoch"]
        if len(tl_epochs) and (history["phase"] == "ft").any():
            boundaries.append({"run": label, "epoch": float(tl_epochs.max()) + 0.5})
        best = _best_epochs(history, data.load_run(run_id))
        for phase, epoch in best.items():
            value = history.loc[history["epoch"] == epoch, f"val_{metric}"]
            if len(value) and pd.notna(value.iloc[0]):
                bests.append({"run": label, "phase": phase, "epoch": epoch, "value": float(value.iloc[0])})
        summary += _summary(history, label, best)
    if not longs:
        return
    long = pd.concat(longs, ignore_index=True)
    if log_scale:
        long = long[long["value"] > 0]
    chart = charts.learning_curves(long, metric, log_scale, pd.DataFrame(boundaries, columns=["run", "epoch"]),
                                   pd.DataFrame(bests, columns=["run", "phase", "epoch", "value"]))
    st.altair_chart(chart, width="stretch")
    st.subheader("Per phase")
    st.dataframe(pd.DataFrame(summary), hide_index=True, column_config={
        **{c: st.column_config.NumberColumn(format="%.4f")
           for c in ("loss", "accuracy", "val loss", "val accuracy", "val accuracy at best")},
        "learning rate": st.column_config.NumberColumn(format="%.0e"),
        "seconds": st.column_config.NumberColumn(format="%.1f")})


def main() -> None:
    board = data.load_leaderboard()
    options = board.loc[board["status"] != "unreadable", "id"].tolist()
    if not options:
        st.info("No runs yet. Generate the demo runs on the Home page, or train one from the sidebar.")
        return
    labels = data.run_labels(options)
    current = [i for i in state.selected_runs() if i in options]
    if st.session_state.get(RUNS_KEY) != current:
        st.session_state[RUNS_KEY] = current
    c1, c2, c3 = st.columns([4, 2, 1])
    picked = c1.multiselect("Runs", options, key=RUNS_KEY, format_func=lambda i: labels.get(i, i),
                            on_change=lambda: state.set_selected_runs(st.session_state[RUNS_KEY]),
                            help="The same selection as on Home.")
    metric = c2.radio("Metric", ["loss", "accuracy"], horizontal=True, key="curves.metric")
    log_scale = c3.checkbox("Log scale", key="curves.log", disabled=metric != "loss",
                            help="for the loss; useful when it spans orders of magnitude")
    if not picked:
        st.info("Choose one or more runs above (or on Home).")
        return
    st.caption("Train (solid) vs validation (dashed) per epoch. The dotted rule marks where fine-tuning starts; "
               "hollow marks show each phase's best epoch (lowest validation loss, the weights that were kept). "
               "Click a run in the legend to highlight it.")
    # A run still training grows its history: redraw every few seconds without rerunning the page.
    st.fragment(run_every=5 if data.any_active(board, picked) else None)(_curves)(
        picked, metric, log_scale and metric == "loss")


shell.ensure_frame()
st.title("Learning curves")
st.markdown("Train and validation loss or accuracy per epoch of the compared runs, transfer learning then "
            "fine-tuning, on one chart.")
main()
