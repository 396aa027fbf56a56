"""The Error-explorer page's logic: confusion matrices, the images of a cell, per-class metrics and galleries.

Pure (no Streamlit calls, unit-tested on their own): order_candidates, by_confidence, gallery_caption,
clicked_cell, default_cell, cell_rows, top_confusions, per_class_table, per_class_long, class_groups.
Rendering: choose_run, render_problems, render_matrices and the sections the page runs through ui.safe.safely
(render_cell_section, render_per_class, render_class_galleries, render_changes).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ui import charts, compare_view, data, state
from ui.chart_cache import chart_spec
from ui.safe import safely

STAGE_TITLES = {"tl": "After transfer learning (tl)", "ft": "After fine-tuning (ft)"}
GALLERY_CAP = 48
GALLERY_COLUMNS = 6
TOP_CONFUSIONS = 10
CELL_STAGE, CELL_TRUE, CELL_PRED = "errors.cell_stage", "errors.cell_true", "errors.cell_pred"


# ---------------------------------------------------------------- pure

def order_candidates(with_stages: list[str], selected: list[str], completed: list[str]) -> list[str]:
    """Runs with an evaluation: the compared (`selected`) ones first, then the completed ones, then the rest."""
    keep = set(with_stages)
    return list(dict.fromkeys([i for i in selected if i in keep] + [i for i in completed if i in keep]
                              + with_stages))


def by_confidence(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows most confident first; ties keep their predictions.csv order."""
    return rows.sort_values("confidence", ascending=False, kind="stable")


def gallery_caption(row) -> str:
    """"true <label> → pred <pred> · <confidence %>" ("?" for a missing confidence)."""
    confidence = f"{row.confidence:.0%}" if pd.notna(row.confidence) else "?"
    return f"true {row.label} → pred {row.pred} · {confidence}"


def clicked_cell(event) -> tuple[str, str] | None:
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


def default_cell(confusion: pd.DataFrame) -> tuple[str, str]:
    """The most frequent confusion (largest off-diagonal count, first in row order on a tie), else the first
    diagonal cell."""
    cm = confusion.to_numpy().copy()
    classes = [str(c) for c in confusion.index]
    for i in range(min(cm.shape)):
        cm[i, i] = -1
    t, p = divmod(int(cm.argmax()), cm.shape[1])
    return (classes[t], classes[p]) if cm[t, p] > 0 else (classes[0], classes[0])


def cell_rows(predictions: pd.DataFrame, true: str, pred: str) -> pd.DataFrame:
    """Test images of class `true` predicted as `pred`, most confident first."""
    return by_confidence(predictions[(predictions["label"] == true) & (predictions["pred"] == pred)])


def top_confusions(confusion: pd.DataFrame, n: int = TOP_CONFUSIONS) -> pd.DataFrame:
    """The `n` largest off-diagonal non-empty cells: true, predicted, images, share of true class."""
    long = charts.confusion_long(confusion, normalise=False)
    top = long[~long["diagonal"] & (long["count"] > 0)].nlargest(n, "count", keep="first")
    return top.rename(columns={charts.CELL_FIELDS[0]: "true", charts.CELL_FIELDS[1]: "predicted",
                               "count": "images", "row_share": "share of true class"}
                      )[["true", "predicted", "images", "share of true class"]]


def per_class_table(reports: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per class: support, then precision, recall and f1 of each stage (`<metric> <stage>`), joined
    on the class (outer: a class in one report only keeps empty cells for the other)."""
    table = None
    for stage, report in reports.items():
        part = report.set_index("class")[["precision", "recall", "f1", "support"]]
        part = part.rename(columns={c: f"{c} {stage}" for c in ("precision", "recall", "f1")})
        table = part if table is None else table.join(part.drop(columns="support"), how="outer")
    cols = ["support"] + [c for c in table.columns if c != "support"]
    return table[cols].reset_index()


def per_class_long(reports: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """class, metric (precision | recall | f1), value, stage: the per-class bars' rows."""
    return pd.concat([r.melt(id_vars="class", value_vars=["precision", "recall", "f1"], var_name="metric")
                      .assign(stage=s) for s, r in reports.items()], ignore_index=True)


def class_groups(predictions: pd.DataFrame, chosen: str) -> dict[str, tuple[pd.DataFrame, str]]:
    """{group: (rows most confident first, what they are)} for true positives, false negatives and false
    positives of class `chosen`."""
    label, pred = predictions["label"], predictions["pred"]
    groups = {
        "True positives": (predictions[(label == chosen) & (pred == chosen)], f"{chosen} recognised"),
        "False negatives": (predictions[(label == chosen) & (pred != chosen)],
                            f"{chosen} missed (predicted as another)"),
        "False positives": (predictions[(label != chosen) & (pred == chosen)],
                            f"other classes predicted as {chosen}"),
    }
    return {name: (by_confidence(rows), what) for name, (rows, what) in groups.items()}


# ---------------------------------------------------------------- run, problems, matrices

def choose_run() -> str | None:
    """The run to explore; None (after an st.info) when no run has a test-set evaluation."""
    board = data.load_leaderboard()
    ids = board.loc[board["status"] != "unreadable", "id"].tolist()
    candidates = order_candidates([i for i in ids if data.run_stages(i)], state.selected_runs(),
                                  state.completed_runs())
    if not candidates:
        st.info("No run has test-set evaluations yet. They appear after a run's first phase finishes.")
        return None
    return state.choose_run("Run", key="errors.run", candidates=candidates,
                            help="The runs compared on Home come first, then every run with an evaluation.")


def render_problems(stages: list[str], evals: dict) -> None:
    """Each stage's problems (checked where read, listed here, not fixed) and which stage is missing."""
    for ev in evals.values():
        for problem in ev.problems:
            st.warning(problem)
    if "ft" not in stages:
        st.info("This run has no fine-tuning stage (ft): it was not run, or has not finished. Showing tl only.")
    elif "tl" not in stages:
        st.info("This run has no tl evaluation (phase 1 may have come from another run, `--from-run`). "
                "Showing ft only.")


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
        m2.metric("test macro-F1", f"{macro_f1:.3f}", help="macro-F1 of this stage on the test split: the mean "
                                                           "per-class F1 over the classes present in the test split")
    if perfect is not None:
        m3.metric("perfect classes", f"{perfect:.0%}", help="share of classes with F1 = 1")
    cm = ev.confusion
    if cm is None:
        st.caption("No confusion matrix to show (see the warning above).")
        return
    title = f"rows: true class · columns: predicted ({stage})"
    event = st.vega_lite_chart(spec=chart_spec(charts.confusion_heatmap, cm, normalise, title=title),
                               key=f"errors.cm.{run_id}.{stage}.{normalise}", on_select="rerun",
                               selection_mode="cell", width="content")
    _apply_click(run_id, stage, clicked_cell(event))
    st.download_button(
        "Download as PNG (seaborn)", key=f"errors.png.{run_id}.{stage}",
        data=lambda cm=cm, stage=stage: charts.confusion_png(cm, f"{run_id} · {stage}", normalise),
        file_name=f"{run_id}_{stage}_confusion{'_normalised' if normalise else ''}.png", mime="image/png",
        on_click="ignore")


def render_matrices(run_id: str, stages: list[str], evals: dict) -> None:
    """The counts / row-normalised switch and one clickable confusion matrix per stage (side by side when the
    cells are small enough to carry their numbers), each through `safely`."""
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
        caption = gallery_caption(row)
        with cols[i % GALLERY_COLUMNS]:
            image = data.load_image(row.path)
            if image is None:
                st.caption(f"⚠ image missing or unreadable: `{Path(str(row.path)).name}` ({caption})")
            else:
                st.image(image, caption=caption, width=128)


def render_cell_section(stages: list[str], evals: dict) -> None:
    """Stage, true and predicted class controls (moved by a matrix click), the most frequent confusions, and
    the images of the chosen cell."""
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
    default_true, default_pred = default_cell(ev.confusion)
    if st.session_state.get(CELL_TRUE) not in classes:
        st.session_state[CELL_TRUE] = default_true
    if st.session_state.get(CELL_PRED) not in classes:
        st.session_state[CELL_PRED] = default_pred
    true = c2.selectbox("True class", classes, key=CELL_TRUE)
    pred = c3.selectbox("Predicted class", classes, key=CELL_PRED)
    with st.expander(f"Most frequent confusions after {stage}", expanded=len(classes) > charts.TEXT_LABEL_LIMIT):
        top = top_confusions(ev.confusion)
        if top.empty:
            st.caption("No confusion: every test image is on the diagonal.")
        else:
            st.dataframe(top, hide_index=True,
                         column_config={"share of true class": st.column_config.NumberColumn(format="percent")})
    rows = cell_rows(ev.predictions, true, pred)
    kind = "correct" if true == pred else "misclassified"
    st.markdown(f"**{len(rows)}** test image{'s' if len(rows) != 1 else ''} of **{true}** predicted as "
                f"**{pred}** after {stage} ({kind}), most confident first.")
    _gallery(rows, "No test image in this cell.")


def render_per_class(stages: list[str], evals: dict) -> None:
    """Precision, recall and F1 per class and stage: a table and grouped bars."""
    st.header("Per class")
    reports = {s: evals[s].report for s in stages if evals[s].report is not None}
    if not reports:
        st.warning("No classification_report.csv is readable for this run.")
        return
    table = per_class_table(reports)
    st.dataframe(table, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in table.columns if c not in ("class", "support")})
    st.vega_lite_chart(spec=chart_spec(charts.per_class_bars, per_class_long(reports)), width="content")


def render_class_galleries(stages: list[str], evals: dict) -> None:
    """One chosen class: its true positives, false negatives and false positives, one tab each."""
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
    groups = class_groups(evals[stage].predictions, chosen)
    tabs = st.tabs([f"{name} ({len(rows)})" for name, (rows, _) in groups.items()])
    for tab, (name, (rows, what)) in zip(tabs, groups.items()):
        with tab:
            st.caption(f"{what}; most confident first.")
            _gallery(rows, f"No {name.lower()}.")


# ---------------------------------------------------------------- tl -> ft

def render_changes(run_id: str, evals: dict) -> None:
    """Per image and per class as the Compare page pairs them (poc.analysis.compare.stage_change); diagonal and
    perfect classes from the two confusion matrices."""
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
