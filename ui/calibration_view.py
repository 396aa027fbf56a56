"""Calibration of one run's stage: a reliability diagram and its ECE, before and after temperature scaling.

    reliability_chart(result) -> alt.Chart     pure: poc.analysis.calibration.calibration's dict -> Altair layers
    render_calibration(run_id, stage)          the chart and the numbers under it (any page may call it)
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from poc.runs import store
from poc.analysis.calibration import calibration
from ui import data
from ui.chart_cache import chart_spec

BEFORE, AFTER = "test predictions", "after temperature scaling"


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_calibration(path: str, stage: str, signature: tuple) -> dict | None:
    return calibration(store.RunDir(Path(path)), stage)


def load_calibration(run_id: str, stage: str) -> dict | None:
    """poc.analysis.calibration.calibration of a run's stage, cached on its predictions, metrics and run.json."""
    rd = data.run_dir(run_id)
    signature = tuple(data.stamp(p) for p in (rd.eval_file(stage, "predictions"), rd.eval_file(stage, "metrics"),
                                          rd.run_json))
    return _cached_calibration(str(rd.path), stage, signature)


def _long(result: dict) -> pd.DataFrame:
    frames = [result["table"].assign(curve=BEFORE)]
    if result.get("calibrated") is not None:
        frames.append(result["calibrated"].assign(curve=AFTER))
    long = pd.concat(frames, ignore_index=True)
    return long[long["count"] > 0].assign(bin_mid=lambda f: (f["bin_low"] + f["bin_high"]) / 2)


def reliability_chart(result: dict) -> alt.Chart:
    """Bars: accuracy of each non-empty confidence bin (equal-width bins, as wide as drawn); points: the mean
    confidence against accuracy, for the test predictions and, when a temperature was fitted, after scaling;
    the dashed diagonal is perfect calibration."""
    long = _long(result)
    domain = [BEFORE, AFTER] if result.get("calibrated") is not None else [BEFORE]
    color = alt.Color("curve:N", title=None, scale=alt.Scale(domain=domain, range=["#3182bd", "#e6550d"][:len(domain)]),
                      legend=alt.Legend(orient="bottom"))
    tooltip = [alt.Tooltip("curve:N"), alt.Tooltip("bin_low:Q", title="bin from", format=".3f"),
               alt.Tooltip("bin_high:Q", title="bin to", format=".3f"), alt.Tooltip("count:Q", title="images"),
               alt.Tooltip("confidence:Q", title="mean confidence", format=".3f"),
               alt.Tooltip("accuracy:Q", format=".3f")]
    axis_x = alt.X("bin_low:Q", title=f"confidence ({result['bins']} equal-width bins)",
                   scale=alt.Scale(domain=[0, 1]))
    bars = alt.Chart(long[long["curve"] == BEFORE]).mark_bar(opacity=0.35, color="#3182bd").encode(
        x=axis_x, x2="bin_high:Q", y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        y2=alt.datum(0), tooltip=tooltip)
    points = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1])), y="accuracy:Q", color=color, tooltip=tooltip)
    diagonal = alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]})).mark_line(
        strokeDash=[4, 4], color="#777").encode(x="x:Q", y="y:Q")
    return alt.layer(bars, diagonal, points).properties(height=300)


def render_calibration(run_id: str, stage: str, title: str | None = None) -> None:
    """The reliability diagram of `run_id` at `stage`, ECE before and after temperature scaling."""
    result = load_calibration(run_id, stage)
    if title:
        st.markdown(f"**{title}**")
    if result is None or not result["n"]:
        st.info(f"No test probabilities to calibrate at stage {stage} (eval/{stage}/predictions.csv missing or "
                "without prob_<class> columns).")
        return
    st.vega_lite_chart(spec=chart_spec(reliability_chart, result), width="stretch")
    if result["temperature"]:
        after = (f"after temperature scaling **{result['ece_calibrated']:.3f}** (T = {result['temperature']:.2f}, "
                 "fitted on the validation split only, applied to the test predictions)")
    else:
        after = result.get("missing") or "no temperature (no validation or test image)"
    st.caption(f"ECE ({result['bins']} equal-width confidence bins, {result['n']} test images): "
               f"**{result['ece']:.3f}**; {after}.")
