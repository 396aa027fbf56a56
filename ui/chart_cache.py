"""Charts and images built once and shared by every rerun and session.

`shared(builder, *args, **kwargs)` keeps what the builder returns (an overlay, a grid of maps) in
st.cache_resource, keyed on the builder and its arguments (DataFrames by content): the same object every time,
never copied, so no page changes one after building it.

`chart_spec(builder, *args, **kwargs)` does the same for an Altair chart and keeps its finished Vega-Lite spec,
drawn with `st.vega_lite_chart(spec=...)`. A chart costs a page more Python than the cached data it draws:
building its schema objects (0.1-0.3 s on two busy cores for a confusion matrix or a reliability diagram, py-spy
under the load test), then, on every st.altair_chart call, `chart.to_dict()`, which validates the whole spec
against Vega-Lite's JSON schema (35 of 54 ms for a 10-class confusion matrix on a quiet core; 22% of the page
scripts' time in the AppTests, py-spy). The spec is what st.altair_chart would send: Altair's "none" theme while
the default one is active, each dataset under a name taken from its content (Streamlit turns it into Arrow on the
way out). The builders stay pure functions returning Altair charts (ui.charts, ...).
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import nullcontext

import altair as alt
import pandas as pd
import streamlit as st

_TRANSFORMER = "vitrine_named_datasets"
_ALTAIR_SETTINGS = threading.Lock()  # Altair's theme and data transformer are settings of the whole process


def shared(builder, *args, **kwargs):
    """builder(*args, **kwargs), built once per distinct arguments (the builder is known by its qualified name)."""
    return _built(f"{builder.__module__}.{builder.__qualname__}", builder, args, kwargs)


def chart_spec(builder, *args, **kwargs) -> dict:
    """The Vega-Lite spec of the Altair chart builder(*args, **kwargs), built and validated once per distinct
    arguments."""
    return _built(f"{builder.__module__}.{builder.__qualname__}:spec", _spec_of(builder), args, kwargs)


@st.cache_resource(show_spinner=False, max_entries=256)
def _built(name: str, _builder, args: tuple, kwargs: dict):
    return _builder(*args, **kwargs)


def _spec_of(builder):
    return lambda *args, **kwargs: vega_lite_spec(builder(*args, **kwargs))


def vega_lite_spec(chart: alt.TopLevelMixin) -> dict:
    """`chart` as a validated Vega-Lite spec whose datasets sit in spec["datasets"] under content names."""
    datasets: dict[str, pd.DataFrame] = {}
    with _ALTAIR_SETTINGS:
        theme = alt.theme.enable("none") if alt.theme.active == "default" else nullcontext()
        with theme, alt.data_transformers.enable(_TRANSFORMER, datasets=datasets):
            spec = chart.to_dict()
    spec["datasets"] = {**spec.get("datasets", {}), **datasets}
    return spec


def _named_dataset(data, datasets: dict) -> dict:
    """An Altair data transformer: the frame itself, kept in `datasets` under a name from its content."""
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    digest.update(repr((list(frame.columns), [str(t) for t in frame.dtypes])).encode())
    name = f"data_{digest.hexdigest()[:20]}"
    datasets[name] = frame
    return {"name": name}


alt.data_transformers.register(_TRANSFORMER, _named_dataset)
