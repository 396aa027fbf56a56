"""Model cost, as Home and Compare show it: parameters, trainable parameters per phase, weights on disk, measured
latency per image and estimated multiply-adds (poc.analysis.cost.cost_table).

    cost_frame(run_ids) -> pd.DataFrame      the table as shown, one row per run
    render_cost(run_ids, compact=False)      the table and what its columns mean
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from poc.runs import store
from poc.analysis.cost import cost_table
from ui import data

COLUMN_CONFIG = {
    "parameters": st.column_config.NumberColumn(format="compact", help="all parameters of the classifier"),
    "trainable tl": st.column_config.NumberColumn(format="compact", help="trainable in phase 1 (transfer "
                                                                          "learning: the new head)"),
    "trainable ft": st.column_config.NumberColumn(format="compact", help="trainable in phase 2 (fine-tuning, "
                                                                          "above the cutoff)"),
    "weights MB": st.column_config.NumberColumn(format="%.1f", help="weights on disk: size of model.weights.h5"),
    "latency ms": st.column_config.TextColumn(help="inference latency per image, measured when the run was "
                                                   "evaluated on its device; the Live predict page measures it live"),
    "MACs / image": st.column_config.TextColumn(help="multiply-adds per image, an estimate: ViTs in closed form "
                                                     "over their layers, CNNs from their published count scaled by "
                                                     "input area"),
}


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_cost(paths: tuple[str, ...], signature: tuple) -> pd.DataFrame:
    return cost_table([store.RunDir(Path(p)) for p in paths])


def _macs(value) -> str:
    if pd.isna(value):
        return "not computed"
    return f"≈ {value / 1e9:.2f} G" if value >= 1e9 else f"≈ {value / 1e6:.1f} M"


def cost_frame(run_ids: list[str]) -> pd.DataFrame:
    """run, input px, parameters, trainable tl / ft, weights MB (on disk), latency ms per image ("not measured"
    when evaluation recorded none), MACs / image ("not computed" for an architecture without an estimate)."""
    rds = [data.run_dir(i) for i in run_ids]
    signature = tuple(data.stamp(p) for rd in rds for p in (rd.run_json, rd.weights, rd.path / "eval"))
    table = _cached_cost(tuple(str(rd.path) for rd in rds), signature)
    labels = data.run_labels(list(run_ids))
    return pd.DataFrame({
        "run": [labels.get(i, i) for i in table["id"]],
        "input px": table["image_size"],
        "parameters": table["total"],
        "trainable tl": table["trainable_tl"],
        "trainable ft": table["trainable_ft"],
        "weights MB": table["weights_mb"],
        "latency ms": [f"{v:.1f}" if pd.notna(v) else "not measured" for v in table["latency_ms"]],
        "MACs / image": [_macs(v) for v in table["macs"]],
    })


def render_cost(run_ids: list[str], compact: bool = False) -> None:
    """The cost table of `run_ids`; `compact` (Home): a one-line heading instead of the explanations."""
    run_ids = list(dict.fromkeys(run_ids))
    if not run_ids:
        return
    frame = cost_frame(run_ids)
    if compact:
        st.markdown("**Model cost** of the compared runs")
    st.dataframe(frame, hide_index=True, column_config=COLUMN_CONFIG)
    if not compact:
        st.caption("Parameters as training counted them; weights MB is the saved model.weights.h5 on disk. "
                   "Latency per image is shown when the run's evaluation measured it (else \"not measured\"; the "
                   "Live predict page times one image live). MACs: multiply-adds per image at the run's input "
                   "size, estimated.")
