"""Where the sidebar's launches run: the local queue, or a Ray cluster when VITRINE_RAY_ADDRESS names one.

Shows which executor launches runs and the cluster's free CPUs and GPUs, with a switch when both are available.
The choice lives in the session (`launcher_executor`); `chosen()` is what the launch buttons pass on. An
unreachable cluster is a warning sentence, never an exception. No Ray, no TensorFlow at import.
"""

from __future__ import annotations

import streamlit as st

from poc.launch import launcher
from poc.launch.executors import cluster_address

KEY = "launcher_executor"
LABELS = {"ray": "Ray cluster", "local": "this machine (local queue)"}


@st.cache_data(ttl=5, show_spinner=False)
def _summary(kind: str, address: str | None) -> dict:
    return launcher.executor_summary(kind)  # `address` keys the cache: VITRINE_RAY_ADDRESS may change


def chosen() -> str:
    """"ray" or "local": the switch's value, "local" when no cluster is configured."""
    return st.session_state.get(KEY, "ray") if cluster_address() else "local"


def executor_panel() -> None:
    address = cluster_address()
    if not address:
        st.caption("Runs launch on this machine's queue. Set VITRINE_RAY_ADDRESS to launch them on a Ray cluster.")
        return
    kind = st.radio("Launch runs on", ["ray", "local"], format_func=LABELS.get, key=KEY, horizontal=True)
    if kind == "local":
        return
    summary = _summary(kind, address)
    if summary.get("error"):
        st.warning(summary["error"])
        return
    gpus = f", {summary['gpus_free']:g} of {summary['gpus']:g} GPUs free" if summary.get("gpus") else ", no GPUs"
    st.caption(f"Ray cluster {summary['address']}: {summary['cpus_free']:g} of {summary['cpus']:g} CPUs free{gpus}. "
               "One job per run; the runs directory must be on storage every node mounts.")
