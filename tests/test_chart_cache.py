"""ui.chart_cache.chart_spec: a chart's Vega-Lite spec made once gives the page what st.altair_chart gives it, and
the second render neither builds nor validates the chart again."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
from streamlit.testing.v1 import AppTest


def _both_ways():
    """The same two charts drawn by st.altair_chart and from chart_spec, the matrix with its cell selection."""
    import numpy as np
    import pandas as pd
    import streamlit as st

    from ui import charts
    from ui.chart_cache import chart_spec

    names = ["cat", "dog", "tiger"]
    cm = pd.DataFrame(np.array([[5, 1, 0], [2, 3, 1], [0, 0, 6]]), index=names, columns=names)
    st.altair_chart(charts.confusion_heatmap(cm, True, title="t"), key="altair", on_select="rerun",
                    selection_mode="cell", width="content")
    st.vega_lite_chart(spec=chart_spec(charts.confusion_heatmap, cm, True, title="t"), key="spec",
                       on_select="rerun", selection_mode="cell", width="content")
    bars = pd.DataFrame({"class": names * 2, "metric": ["precision"] * 3 + ["recall"] * 3,
                         "value": [0.9, 0.5, 0.7, 0.8, 0.6, 1.0], "stage": ["ft"] * 6})
    st.altair_chart(charts.per_class_bars(bars), width="content")
    st.vega_lite_chart(spec=chart_spec(charts.per_class_bars, bars), width="content")


def _comparable(proto) -> tuple[str, list[pd.DataFrame], list[str]]:
    """(the spec with its dataset names numbered in order of appearance, the datasets in that order, the selection
    modes): what the browser receives, less the names, which each way takes from its own hash."""
    spec = proto.spec
    frames = []
    for i, dataset in enumerate(proto.datasets):
        spec = spec.replace(dataset.name, f"dataset_{i}")
        frames.append(pa.ipc.open_stream(dataset.data.data).read_pandas())
    return json.dumps(json.loads(spec), sort_keys=True), frames, list(proto.selection_mode)


def test_a_chart_spec_is_what_st_altair_chart_sends():
    at = AppTest.from_function(_both_ways, default_timeout=60).run()
    assert not at.exception
    altair_matrix, spec_matrix, altair_bars, spec_bars = at.get("vega_lite_chart")
    for by_altair, by_spec in ((altair_matrix, spec_matrix), (altair_bars, spec_bars)):
        spec_a, frames_a, modes_a = _comparable(by_altair.proto)
        spec_b, frames_b, modes_b = _comparable(by_spec.proto)
        assert spec_a == spec_b and modes_a == modes_b
        assert len(frames_a) == len(frames_b) >= 1
        for a, b in zip(frames_a, frames_b):
            pd.testing.assert_frame_equal(a, b)
    assert list(spec_matrix.proto.selection_mode)  # the matrix's cells stay clickable


def test_the_second_render_neither_builds_nor_validates_the_chart(monkeypatch):
    import altair as alt
    import streamlit as st

    from ui import charts
    from ui.chart_cache import chart_spec

    st.cache_resource.clear()
    built, validated = [], []
    real_builder, real_to_dict = charts.per_class_bars, alt.TopLevelMixin.to_dict

    def counting_builder(frame):
        built.append(1)
        return real_builder(frame)

    def counting_to_dict(self, *args, **kwargs):
        validated.append(kwargs.get("validate", True))
        return real_to_dict(self, *args, **kwargs)

    counting_builder.__qualname__ = "counting_builder"
    monkeypatch.setattr(alt.TopLevelMixin, "to_dict", counting_to_dict)
    bars = pd.DataFrame({"class": ["cat", "dog"], "metric": ["f1", "f1"], "value": [0.5, 0.25], "stage": ["ft", "ft"]})
    first = chart_spec(counting_builder, bars)
    assert built == [1] and validated[:1] == [True]  # built, and validated against the schema, once
    calls = len(validated)
    second = chart_spec(counting_builder, bars.copy())  # equal content: the same spec
    assert second is first and built == [1] and len(validated) == calls
    third = chart_spec(counting_builder, bars.assign(value=[0.5, 0.75]))  # other data: built again
    assert third is not first and built == [1, 1]
    assert next(iter(third["datasets"].values()))["value"].tolist() == [0.5, 0.75]
