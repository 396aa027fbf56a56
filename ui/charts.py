"""Chart builders: pure functions from DataFrames to Altair charts (and one seaborn PNG); no Streamlit calls.

    learning_curves(long, metric, log_scale=False, boundaries=None, bests=None) -> alt.Chart
    confusion_heatmap(cm, normalise=False, title="", selectable=True) -> alt.Chart   selection param "cell"
    CELL_FIELDS = ("true_class", "pred_class")      the fields a "cell" selection carries
    per_class_bars(report_long) -> alt.Chart        grouped precision / recall / F1 per class
    confusion_png(cm, title, normalise=False) -> bytes   seaborn heatmap, for download
"""

from __future__ import annotations

import io

import altair as alt
import numpy as np
import pandas as pd

CELL_FIELDS = ("true_class", "pred_class")
TEXT_LABEL_LIMIT = 30  # above this many classes, cell counts and sparse zero cells are not drawn
SPLIT_DASH = {"train": [1, 0], "validation": [5, 3]}


def _cell_step(n: int) -> int:
    """Pixels per class on a matrix axis: roomy cells with counts up to 30 classes, 8 px beyond (960 at 120)."""
    return 36 if n <= 12 else 24 if n <= TEXT_LABEL_LIMIT else 8


# ---------------------------------------------------------------- learning curves

def learning_curves(long: pd.DataFrame, metric: str, log_scale: bool = False,
                    boundaries: pd.DataFrame | None = None, bests: pd.DataFrame | None = None) -> alt.Chart:
    """Overlaid train / validation curves of several runs.

    long: run, epoch, phase, split ("train" | "validation"), value -- one row per run, epoch and split.
    boundaries: run, epoch (x of the tl -> ft boundary, e.g. last tl epoch + 0.5).
    bests: run, phase, epoch, value -- the best epoch of each phase (on the validation curve).
    Clicking a run in the legend toggles it (the other runs fade).
    """
    pick = alt.selection_point(fields=["run"], bind="legend", name="run_pick")
    faded = alt.condition(pick, alt.value(1.0), alt.value(0.12))
    y_title = {"loss": "loss (cross-entropy)", "accuracy": "accuracy"}.get(metric, metric)
    y_scale = alt.Scale(type="log") if log_scale else alt.Scale(zero=False)
    color = alt.Color("run:N", title="run", scale=alt.Scale(scheme="tableau10"),
                      legend=alt.Legend(orient="bottom", columns=2, labelLimit=400))
    base = alt.Chart(long).encode(
        x=alt.X("epoch:Q", title="epoch (global)", axis=alt.Axis(tickMinStep=1), scale=alt.Scale(padding=12)),
        y=alt.Y("value:Q", title=y_title, scale=y_scale),
        color=color,
    )
    lines = base.mark_line(point=alt.OverlayMarkDef(size=28)).encode(
        strokeDash=alt.StrokeDash("split:N", title="split", scale=alt.Scale(
            domain=list(SPLIT_DASH), range=list(SPLIT_DASH.values()))),
        opacity=faded,
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("phase:N"), alt.Tooltip("split:N"), alt.Tooltip("epoch:Q"),
                 alt.Tooltip("value:Q", title=metric, format=".4f")],
    ).add_params(pick)
    layers = [lines]
    if boundaries is not None and not boundaries.empty:
        layers.append(alt.Chart(boundaries).mark_rule(strokeDash=[2, 4], strokeWidth=1.5).encode(
            x="epoch:Q", color=color, opacity=faded,
            tooltip=[alt.Tooltip("run:N"), alt.Tooltip("epoch:Q", title="fine-tuning starts after epoch",
                                                        format=".0f")]))
    if bests is not None and not bests.empty:
        layers.append(alt.Chart(bests).mark_point(size=160, filled=False, strokeWidth=2.5).encode(
            x="epoch:Q", y=alt.Y("value:Q", scale=y_scale), color=color, opacity=faded,
            shape=alt.Shape("phase:N", title="best epoch", scale=alt.Scale(domain=["tl", "ft"],
                                                                            range=["diamond", "square"])),
            tooltip=[alt.Tooltip("run:N"), alt.Tooltip("phase:N", title="best epoch of phase"),
                     alt.Tooltip("epoch:Q"), alt.Tooltip("value:Q", title=f"val {metric}", format=".4f")]))
    return alt.layer(*layers).properties(height=420).interactive(bind_y=False)


# ---------------------------------------------------------------- confusion matrix

def confusion_long(cm: pd.DataFrame, normalise: bool) -> pd.DataFrame:
    """One row per (true, predicted) cell: count, row share, and the value shown."""
    counts = cm.to_numpy(dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    true_idx, pred_idx = np.meshgrid(np.arange(len(cm.index)), np.arange(len(cm.columns)), indexing="ij")
    long = pd.DataFrame({
        CELL_FIELDS[0]: np.asarray(cm.index, dtype=str)[true_idx.ravel()],
        CELL_FIELDS[1]: np.asarray(cm.columns, dtype=str)[pred_idx.ravel()],
        "count": counts.ravel().astype(int),
        "row_share": share.ravel(),
    })
    long["value"] = long["row_share"] if normalise else long["count"]
    long["diagonal"] = long[CELL_FIELDS[0]] == long[CELL_FIELDS[1]]
    return long


def confusion_heatmap(cm: pd.DataFrame, normalise: bool = False, title: str = "",
                      selectable: bool = True) -> alt.Chart:
    """Rows = true class, columns = predicted class; click a cell to select it (param "cell")."""
    classes = [str(c) for c in cm.index]
    n = len(classes)
    long = confusion_long(cm, normalise)
    if n > TEXT_LABEL_LIMIT:
        long = long[long["count"] > 0]  # 14 400 cells at 120 classes: draw the non-empty ones only
    step = _cell_step(n)
    label_axis = {"labelLimit": 120, "labelFontSize": 11 if n <= TEXT_LABEL_LIMIT else 7, "labelOverlap": False}
    cell = alt.selection_point(name="cell", fields=list(CELL_FIELDS), on="click", clear="dblclick", empty=False)
    fmt = ".0%" if normalise else "d"
    base = alt.Chart(long).encode(
        x=alt.X(f"{CELL_FIELDS[1]}:N", title="predicted", sort=classes, scale=alt.Scale(domain=classes),
                axis=alt.Axis(orient="top", labelAngle=-45, **label_axis)),
        y=alt.Y(f"{CELL_FIELDS[0]}:N", title="true", sort=classes, scale=alt.Scale(domain=classes),
                axis=alt.Axis(**label_axis)),
    )
    rect = base.mark_rect(stroke="white", strokeWidth=0.5 if n > TEXT_LABEL_LIMIT else 1).encode(
        color=alt.Color("value:Q", title="share of row" if normalise else "images",
                        scale=alt.Scale(scheme="blues", domain=[0, 1] if normalise else alt.Undefined),
                        legend=alt.Legend(orient="bottom")),  # beside the chart it hides under its twin
        tooltip=[alt.Tooltip(f"{CELL_FIELDS[0]}:N", title="true"),
                 alt.Tooltip(f"{CELL_FIELDS[1]}:N", title="predicted"),
                 alt.Tooltip("count:Q", title="images"),
                 alt.Tooltip("row_share:Q", title="share of true class", format=".1%")],
    )
    if selectable:
        rect = rect.add_params(cell).encode(
            strokeWidth=alt.condition(cell, alt.value(3), alt.value(0.5)),
            stroke=alt.condition(cell, alt.value("#d62728"), alt.value("white")))
    layers = [rect]
    if n <= TEXT_LABEL_LIMIT:
        peak = float(long["value"].max() or 1)
        layers.append(base.mark_text(fontSize=11 if n <= 15 else 8).encode(
            text=alt.Text("value:Q", format=fmt),
            color=alt.condition(alt.datum.value > peak / 2, alt.value("white"), alt.value("#222")),
        ).transform_filter(alt.datum.count > 0))
    return alt.layer(*layers).properties(width=alt.Step(step), height=alt.Step(step), title=title)


# ---------------------------------------------------------------- per-class metrics

def per_class_bars(report_long: pd.DataFrame) -> alt.Chart:
    """report_long: class, stage, metric (precision | recall | f1), value. Horizontal grouped bars."""
    classes = list(dict.fromkeys(report_long["class"].astype(str)))
    many = len(classes) > TEXT_LABEL_LIMIT
    chart = alt.Chart(report_long).mark_bar().encode(
        y=alt.Y("class:N", sort=classes, title=None, axis=alt.Axis(labelFontSize=7 if many else 11,
                                                                     labelOverlap=False)),
        x=alt.X("value:Q", scale=alt.Scale(domain=[0, 1]), title=None),
        color=alt.Color("stage:N", scale=alt.Scale(domain=["tl", "ft"], range=["#9ecae1", "#3182bd"]),
                        legend=alt.Legend(orient="top")),
        yOffset="stage:N",
        tooltip=["class:N", "stage:N", "metric:N", alt.Tooltip("value:Q", format=".3f")],
    )
    step = 8 if many else 11 * report_long["stage"].nunique() + 4
    return chart.properties(width=180, height=alt.Step(step)).facet(column=alt.Column("metric:N", title=None,
                                                                               sort=["precision", "recall", "f1"]))


# ---------------------------------------------------------------- static export

def confusion_png(cm: pd.DataFrame, title: str, normalise: bool = False) -> bytes:
    """A seaborn heatmap of the matrix as PNG bytes (matplotlib Agg, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = len(cm)
    values = cm.astype(float)
    if normalise:
        values = values.div(values.sum(axis=1).replace(0, np.nan), axis=0).fillna(0.0)
    side = min(max(5.0, 0.45 * n + 2), 40.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    try:
        sns.heatmap(values, annot=n <= TEXT_LABEL_LIMIT, fmt=".2f" if normalise else ".0f", cmap="Blues",
                    square=True, cbar_kws={"shrink": 0.6}, ax=ax, xticklabels=True, yticklabels=True,
                    annot_kws={"fontsize": 8})
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        ax.tick_params(labelsize=8 if n <= TEXT_LABEL_LIMIT else 4)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)
