"""Error explorer: where a run fails after transfer learning (tl) and after fine-tuning (ft), image by image."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ui import charts, compare_view, data, shell, state
from ui.safe import safely

STAGE_TITLES = {"tl": "After transfer learning (tl)", "ft": "After fine-tuning (ft)"}
GALLERY_CAP = 48
GALLERY_COLUMNS = 6
CELL_STAGE, CELL_TRUE, CELL_PRED = "errors.cell_stage", "errors.cell_true", "errors.cell_pred"


# ---------------------------------------------------------------- galleries

def _gallery(rows: pd.DataFrame, empty: str) -> None:
    """Test images as a grid, captioned true -> predicted and confidence; capped at GALLERY_CAP."""
    if rows.empty:
        st.caption(empty)
        return
    if len(rows) > GALLERY_CAP:
        st.caption(f"Showing the first {GALLERY_CAP} of {len(rows)} images.")
        rows = rows.head(GALLERY_CAP)
    cols = st.columns(GALLERY_COLUMNS)
    for i, row in enumerate(rows.itertuples(index=False)):
        confidence = f"{row.confidence:.0%}" if pd.notna(row.confidence) else "?"
        caption = f"true {row.label} → pred {row.pred} · {confidence}"
        with cols[i % GALLERY_COLUMNS]:
            image = data.load_image(row.path)
            if image is None:
                st.caption(f"⚠ image missing or unreadable: `{Path(str(row.path)).name}` ({caption})")
            else:
                st.image(image, caption=caption, width=128)


def _by_confidence(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values("confidence", ascending=False, kind="stable")


# ---------------------------------------------------------------- confusion matrices

def _clicked(event) -> tuple[str, str] | None:
    """(true, predicted) of a clicked cell from an st.altair_chart selection event, else None."""
    try:
        points = event.selection.get("cell") if event is not None else None
    except AttributeError:
        return None
    if isinstance(points, dict):
        points = [points]
    for point in points or []:
        true, pred = point.get(charts.CELL_FIELDS[0]), point.get(charts.CELL_FIELDS[1])
        if true is not None and pred is not None:
            return str(true), str(pred)
    return None


def _apply_click(run_id: str, stage: str, cell: tuple[str, str] | None) -> None:
    """A new click moves the cell controls; an unchanged (persisting) chart selection leaves them alone."""
    seen_key = f"errors.seen_click.{run_id}.{stage}"
    if cell is not None and cell != st.session_state.get(seen_key):
        st.session_state[CELL_STAGE], st.session_state[CELL_TRUE], st.session_state[CELL_PRED] = (stage, *cell)
    st.session_state[seen_key] = cell


def _matrix(run_id: str, stage: str, ev, normalise: bool) -> None:
    st.subheader(STAGE_TITLES[stage])
    metrics = ev.metrics or {}  # numbers or None (poc.runs.store.read_metrics)
    accuracy, macro_f1, perfect = (metrics.get(k) for k in ("accuracy", "macro_f1", "perfect_class_share"))
    low, high = metrics.get("accuracy_ci95") or (None, None)
    m1, m2, m3 = st.columns(3)
    if accuracy is not None:
        m1.metric("accuracy", f"{accuracy:.1%}",
                  help=f"95% CI [{low:.3f}, {high:.3f}]" if low is not None and high is not None else None)
    if macro_f1 is not None:
        m2.metric("macro-F1", f"{macro_f1:.3f}", help="over classes present in the test split")
    if perfect is not None:
        m3.metric("perfect classes", f"{perfect:.0%}", help="share of classes with F1 = 1")
    cm = ev.confusion
    if cm is None:
        st.caption("No confusion matrix to show (see the warning above).")
        return
    chart = charts.confusion_heatmap(cm, normalise, title=f"rows: true class · columns: predicted ({stage})")
    event = st.altair_chart(chart, key=f"errors.cm.{run_id}.{stage}.{normalise}", on_select="rerun",
                            selection_mode="cell", width="content")
    _apply_click(run_id, stage, _clicked(event))
    st.download_button(
        "Download as PNG (seaborn)", key=f"errors.png.{run_id}.{stage}",
        data=lambda cm=cm, stage=stage: charts.confusion_png(cm, f"{run_id} · {stage}", normalise),
        file_name=f"{run_id}_{stage}_confusion{'_normalised' if normalise else ''}.png", mime="image/png",
        on_click="ignore")


def _default_cell(ev) -> tuple[str, str]:
    """The most frequent confusion (largest off-diagonal count), else the first diagonal cell."""
    cm = ev.confusion.to_numpy().copy()
    classes = [str(c) for c in ev.confusion.index]
    for i in range(min(cm.shape)):
        cm[i, i] = -1
    t, p = divmod(int(cm.argmax()), cm.shape[1])
    return (classes[t], classes[p]) if cm[t, p] > 0 else (classes[0], classes[0])


def _cell_section(stages: list[str], evals: dict) -> None:
    st.header("Images in a cell")
    if st.session_state.get(CELL_STAGE) not in stages:
        st.session_state[CELL_STAGE] = stages[-1]
    c1, c2, c3 = st.columns([1, 2, 2])
    stage = c1.radio("Stage", stages, key=CELL_STAGE, horizontal=True)
    ev = evals[stage]
    if ev.predictions is None or ev.confusion is None:
        st.warning(f"Stage {stage}: predictions or confusion matrix missing; no gallery.")
        return
    classes = [str(c) for c in ev.confusion.index]
    default_true, default_pred = _default_cell(ev)
    if st.session_state.get(CELL_TRUE) not in classes:
        st.session_state[CELL_TRUE] = default_true
    if st.session_state.get(CELL_PRED) not in classes:
        st.session_state[CELL_PRED] = default_pred
    true = c2.selectbox("True class", classes, key=CELL_TRUE)
    pred = c3.selectbox("Predicted class", classes, key=CELL_PRED)
    with st.expander(f"Most frequent confusions after {stage}", expanded=len(classes) > charts.TEXT_LABEL_LIMIT):
        long = charts.confusion_long(ev.confusion, normalise=False)
        top = long[~long["diagonal"] & (long["count"] > 0)].nlargest(10, "count", keep="first")
        if top.empty:
            st.caption("No confusion: every test image is on the diagonal.")
        else:
            st.dataframe(top.rename(columns={charts.CELL_FIELDS[0]: "true", charts.CELL_FIELDS[1]: "predicted",
                                             "count": "images", "row_share": "share of true class"})
                         [["true", "predicted", "images", "share of true class"]], hide_index=True,
                         column_config={"share of true class": st.column_config.NumberColumn(format="percent")})
    preds = ev.predictions
    rows = _by_confidence(preds[(preds["label"] == true) & (preds["pred"] == pred)])
    kind = "correct" if true == pred else "misclassified"
    st.markdown(f"**{len(rows)}** test image{'s' if len(rows) != 1 else ''} of **{true}** predicted as "
                f"**{pred}** after {stage} ({kind}), most confident first.")
    _gallery(rows, "No test image in this cell.")


# ---------------------------------------------------------------- per class

def _per_class(stages: list[str], evals: dict) -> None:
    st.header("Per class")
    reports = {s: evals[s].report for s in stages if evals[s].report is not None}
    if not reports:
        st.warning("No classification_report.csv is readable for this run.")
        return
    table = None
    for stage, report in reports.items():
        part = report.set_index("class")[["precision", "recall", "f1", "support"]]
        part = part.rename(columns={c: f"{c} {stage}" for c in ("precision", "recall", "f1")})
        table = part if table is None else table.join(part.drop(columns="support"), how="outer")
    cols = ["support"] + [c for c in table.columns if c != "support"]
    st.dataframe(table[cols].reset_index(), hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in cols if c != "support"})
    long = pd.concat([r.melt(id_vars="class", value_vars=["precision", "recall", "f1"], var_name="metric")
                      .assign(stage=s) for s, r in reports.items()], ignore_index=True)
    st.altair_chart(charts.per_class_bars(long), width="content")


def _class_galleries(stages: list[str], evals: dict) -> None:
    st.header("One class: hits, misses and false alarms")
    usable = [s for s in stages if evals[s].predictions is not None and evals[s].confusion is not None]
    if not usable:
        st.warning("No predictions.csv is readable for this run.")
        return
    classes = [str(c) for c in evals[usable[-1]].confusion.index]
    c1, c2 = st.columns([3, 1])
    chosen = c1.selectbox("Class", classes, index=None, placeholder="choose a class", key="errors.class")
    stage = c2.radio("Stage", usable, index=len(usable) - 1, horizontal=True, key="errors.class_stage")
    if chosen is None:
        st.caption("Choose a class to see its true positives, false negatives and false positives.")
        return
    preds = evals[stage].predictions
    label, pred = preds["label"], preds["pred"]
    groups = {
        "True positives": (preds[(label == chosen) & (pred == chosen)], f"{chosen} recognised"),
        "False negatives": (preds[(label == chosen) & (pred != chosen)], f"{chosen} missed (predicted as another)"),
        "False positives": (preds[(label != chosen) & (pred == chosen)], f"other classes predicted as {chosen}"),
    }
    tabs = st.tabs([f"{name} ({len(rows)})" for name, (rows, _) in groups.items()])
    for tab, (name, (rows, what)) in zip(tabs, groups.items()):
        with tab:
            st.caption(f"{what}; most confident first.")
            _gallery(_by_confidence(rows), f"No {name.lower()}.")


# ---------------------------------------------------------------- tl -> ft

def _changes(run_id: str, evals: dict) -> None:
    """Per image and per class as the Compare page pairs them (poc.analysis.compare.stage_change); diagonal and perfect
    classes from the two confusion matrices."""
    st.header("What changed from tl to ft")
    tl, ft = evals["tl"], evals["ft"]
    change, problem = compare_view.stage_change(run_id)
    totals = data.stage_totals(tl, ft)
    c1, c2, c3, c4 = st.columns(4)
    if change is not None:
        c1.metric("newly correct", change["mcnemar"]["only_a"], help="test images wrong after tl, right after ft")
        c2.metric("newly wrong", change["mcnemar"]["only_b"], help="test images right after tl, wrong after ft")
    else:
        c1.caption(f"Per-image changes unavailable: {problem}")
    if totals["diagonal_gain"] is not None:
        n = max(int(ft.confusion.to_numpy().sum()), 1)
        c3.metric("diagonal gain", f"{totals['diagonal_gain']:+d}",
                  delta=f"{totals['diagonal_gain'] / n:+.1%} accuracy",
                  help=f"correct test images: {totals['diagonal_tl']} after tl, {totals['diagonal_ft']} after ft")
    if totals["perfect_tl"] is not None and totals["perfect_ft"] is not None:
        c4.metric("perfect classes", f"{totals['perfect_tl']:.0%} → {totals['perfect_ft']:.0%}",
                  help="share of classes with F1 = 1 (every test image right, no false alarm)")
    if change is not None:
        compare_view.render_stage_change(run_id)


# ---------------------------------------------------------------- page

def _candidates() -> list[str]:
    """Runs with an evaluation: the compared ones first, then the completed ones, then the rest."""
    board = data.load_leaderboard()
    ids = board.loc[board["status"] != "unreadable", "id"].tolist()
    with_stages = [i for i in ids if data.run_stages(i)]
    completed = [i for i in state.completed_runs() if i in with_stages]
    return list(dict.fromkeys([i for i in state.selected_runs() if i in with_stages] + completed + with_stages))


def main() -> None:
    candidates = _candidates()
    if not candidates:
        st.info("No run has test-set evaluations yet. They appear after a run's first phase finishes.")
        return
    run_id = state.choose_run("Run", key="errors.run", candidates=candidates,
                              help="The runs compared on Home come first, then every run with an evaluation.")
    stages = data.run_stages(run_id)
    evals = {s: data.load_stage(run_id, s) for s in stages}  # checked where read: problems listed, not fixed
    for ev in evals.values():
        for problem in ev.problems:
            st.warning(problem)
    if "ft" not in stages:
        st.info("This run has no fine-tuning stage (ft): it was not run, or has not finished. Showing tl only.")
    elif "tl" not in stages:
        st.info("This run has no tl evaluation (phase 1 may have come from another run, `--from-run`). "
                "Showing ft only.")

    normalise = st.radio("Cells show", ["counts", "row-normalised"], horizontal=True, key="errors.view",
                         help="row-normalised: each row sums to 1 (recall on the diagonal)") == "row-normalised"
    n_classes = max((len(ev.confusion) for ev in evals.values() if ev.confusion is not None), default=0)
    side_by_side = n_classes <= charts.TEXT_LABEL_LIMIT
    columns = st.columns(len(stages)) if side_by_side else [st.container() for _ in stages]
    for column, stage in zip(columns, stages):
        with column:
            safely(f"Confusion matrix {stage}", _matrix, run_id, stage, evals[stage], normalise)
    if n_classes > charts.TEXT_LABEL_LIMIT:
        st.caption(f"{n_classes} classes: counts are in the tooltips; empty cells are not drawn.")

    safely("Cell gallery", _cell_section, stages, evals)
    safely("Per-class metrics", _per_class, stages, evals)
    safely("Class galleries", _class_galleries, stages, evals)
    if "tl" in stages and "ft" in stages:
        safely("tl -> ft changes", _changes, run_id, evals)


shell.ensure_frame()
st.title("Error explorer")
st.markdown("Where a run fails on its test images after each phase: click a confusion-matrix cell to see its "
            "images, or pick a class to see what it gets right, misses and wrongly attracts.")
main()
