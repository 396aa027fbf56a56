"""Home's demo: the empty state with its one "Generate demo runs" button, and the demo job followed to its end.

The job itself (its process, status and progress) belongs to `poc.launch.launcher`; this session only remembers
which job it started.
"""

from __future__ import annotations

import streamlit as st

from poc.launch import launcher
from ui import data

DEMO_JOB_KEY = "home.demo_job"
DEMO_ERROR_KEY = "home.demo_error"


def _start_demo() -> None:
    try:
        job = launcher.launch_demo(runs_dir=str(data.runs_dir()))
    except Exception as exc:  # noqa: BLE001 - the launcher may refuse: say why, never a traceback
        st.error(f"Could not start the demo runs: {exc}")
    else:
        st.session_state[DEMO_JOB_KEY] = job.id


def _failure(job) -> str:
    return f"Demo {job.status}: {job.message or 'see the job log'}"


@st.fragment(run_every=2)
def _follow_demo(had_runs: bool) -> None:
    """Progress of this session's demo job; reruns the whole page once runs appear or the job ends."""
    job = launcher.find_job(st.session_state[DEMO_JOB_KEY], runs_dir=str(data.runs_dir()))
    if job is not None and job.active:
        st.progress(min(max(float(job.progress or 0.0), 0.0), 1.0),
                    text=f"Demo runs: {job.phase or job.status}")
        if not had_runs and not data.load_leaderboard().empty:  # the first demo run appeared: show the board
            st.rerun(scope="app")
        return
    st.session_state.pop(DEMO_JOB_KEY, None)
    if job is None:
        st.session_state[DEMO_ERROR_KEY] = "The demo job's record is gone from the runs folder."
    elif job.status != "completed":  # kept for the next full run, which no longer follows the job
        st.session_state[DEMO_ERROR_KEY] = _failure(job)
    st.rerun(scope="app")


def demo_error() -> None:
    """Why this session's demo ended badly, until the button is pressed again."""
    if DEMO_ERROR_KEY in st.session_state:
        st.error(st.session_state[DEMO_ERROR_KEY])


def follow_demo(had_runs: bool) -> None:
    """The progress bar of the demo job this session started, if any."""
    if DEMO_JOB_KEY in st.session_state:
        _follow_demo(had_runs)


def empty_state() -> None:
    st.info(f"No runs yet in `{data.runs_dir()}`.")
    st.markdown(
        "ViTrine trains a CNN (e.g. MobileNetV2) and a Vision Transformer (e.g. ViT-Ti/16) on **your** image "
        "folder in two phases (transfer learning on a frozen backbone, then fine-tuning), evaluates both on "
        "the same held-out test images, and shows where each one fails: learning curves, confusion "
        "matrices with the misclassified images, per-class F1, Grad-CAM and attention maps.")
    st.markdown("Try it on a generated cartoon dataset (one CNN and one ViT run, two baselines and a cutoff sweep "
                "of the CNN that shares its phase 1; a few minutes on a CPU):")
    if st.button("Generate demo runs", type="primary", key="home.demo_button"):
        st.session_state.pop(DEMO_ERROR_KEY, None)
        _start_demo()
    st.markdown("or from a terminal:")
    st.code("python -m poc demo", language="bash")
    st.caption("Or train on your own folder with the launcher in the sidebar, or "
               "`python -m poc train --data DATA --model mobilenet_v2`.")
