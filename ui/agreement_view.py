"""Explanation agreement of a CNN run and a ViT run: where Grad-CAM and attention rollout point at the same cells.

    render_agreement(run_a, run_b, stage_a=None, stage_b=None)   per-class mean IoU of the top-20% regions,
                                                                  with what the number means and does not
The computation is poc.analysis.agreement.explanation_agreement, cached on the files it reads.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from poc.runs import store
from poc.analysis.agreement import explanation_agreement
from poc.errors import UserError
from ui import data
from ui.chart_cache import chart_spec

NOTE = ("Attention rollout (arXiv 2005.00928) is **class-agnostic**: it shows where the ViT's attention flows, "
        "whatever it predicts; Grad-CAM (arXiv 1610.02391) explains the CNN's **predicted** class. A low IoU can "
        "mean the models look at different evidence, or only that the two methods answer different questions. "
        "Each map is resized to one grid and its top 20% cells kept; two random regions of 20% have an IoU of "
        "about 0.11.")


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_agreement(path_a: str, path_b: str, stage_a: str | None, stage_b: str | None,
                      signature: tuple) -> tuple[dict | None, str | None]:
    try:
        return explanation_agreement(store.RunDir(Path(path_a)), store.RunDir(Path(path_b)), stage_a, stage_b), None
    except UserError as exc:
        return None, str(exc)


def _per_class_chart(per_class: pd.DataFrame) -> alt.Chart:
    return alt.Chart(per_class.dropna(subset=["mean_iou"])).mark_bar(color="#6baed6").encode(
        y=alt.Y("class:N", sort="-x", title=None, axis=alt.Axis(labelOverlap=False)),
        x=alt.X("mean_iou:Q", title="mean IoU of the top-20% regions", scale=alt.Scale(domain=[0, 1])),
        tooltip=["class:N", alt.Tooltip("mean_iou:Q", format=".2f", title="mean IoU"),
                 alt.Tooltip("n:Q", title="images")],
    ).properties(height=alt.Step(16 if len(per_class) <= 30 else 8))


def load_agreement(run_a: str, run_b: str, stage_a: str | None = None,
                   stage_b: str | None = None) -> tuple[dict | None, str | None]:
    """(poc.analysis.agreement.explanation_agreement of the pair, None) or (None, why not), cached on its files."""
    rds = [data.run_dir(i) for i in (run_a, run_b)]
    signature = tuple(data.stamp(rd.eval_file(stage, kind)) for rd in rds for stage in store.STAGES
                      for kind in ("predictions", "explanations")) + tuple(data.stamp(rd.run_json) for rd in rds)
    return _cached_agreement(str(rds[0].path), str(rds[1].path), stage_a, stage_b, signature)


def render_agreement(run_a: str, run_b: str, stage_a: str | None = None, stage_b: str | None = None) -> None:
    """Per-class agreement of the Grad-CAM run and the rollout run among `run_a`, `run_b` (either order); each
    run at `stage` (default: its final stage). Says why when the pair cannot be compared."""
    result, error = load_agreement(run_a, run_b, stage_a, stage_b)
    if result is None:
        st.info(f"No explanation agreement for these runs: {error}")
        return
    labels = data.run_labels([run_a, run_b])
    gradcam, rollout = result["gradcam"], result["rollout"]
    st.markdown(f"Grad-CAM of **{labels.get(gradcam['id'], gradcam['id'])}** (stage {gradcam['stage']}) against "
                f"attention rollout of **{labels.get(rollout['id'], rollout['id'])}** (stage {rollout['stage']}), "
                f"on a {result['grid']}×{result['grid']} grid.")
    mean = result["mean_iou"]
    st.metric("Mean IoU", "—" if pd.isna(mean) else f"{mean:.2f}", help=f"over {result['n']} test images")
    per_class = result["per_class"]
    left, right = st.columns([3, 2])
    left.vega_lite_chart(spec=chart_spec(_per_class_chart, per_class), width="stretch")
    right.dataframe(per_class.rename(columns={"mean_iou": "mean IoU", "constant": "left out (flat map)"}),
                    hide_index=True, column_config={"mean IoU": st.column_config.NumberColumn(format="%.2f")})
    st.caption(NOTE)
