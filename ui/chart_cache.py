"""Charts built once and shared by every rerun and session: `shared(builder, *args, **kwargs)`.

An Altair chart costs a page more Python than the cached data it draws (building its schema objects: 0.1-0.3 s on
two busy cores for a confusion matrix or a reliability diagram, measured with py-spy under the load test). The
builders stay pure functions (ui.charts, ui.calibration_view.reliability_chart, ...); a page asks for its chart
through `shared`, which keeps the built object in st.cache_resource keyed on the builder and its arguments
(DataFrames by content). It is the same object every time, never copied: st.altair_chart only reads a chart, and
no page changes one after building it.
"""

from __future__ import annotations

import streamlit as st


def shared(builder, *args, **kwargs):
    """builder(*args, **kwargs), built once per distinct arguments (the builder is known by its qualified name)."""
    return _built(f"{builder.__module__}.{builder.__qualname__}", builder, args, kwargs)


@st.cache_resource(show_spinner=False, max_entries=256)
def _built(name: str, _builder, args: tuple, kwargs: dict):
    return _builder(*args, **kwargs)
