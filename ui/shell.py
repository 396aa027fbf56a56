"""The dashboard's frame (page config, navigation, sidebar) around every page, however the page was reached.

With a `pages/` folder beside the entry script, Streamlit serves its legacy multipage mode until some session
has run the entry script, whose `st.navigation` call ends that mode for the server process. A bookmark such as
/Live_predict opened first after a start would run that page file alone: no training launcher, no jobs list,
an extra "dashboard" entry in the navigation. `ensure_frame()`, called first by every page, notices a page
that the server runs without dashboard.py around it and runs dashboard.py instead, which calls st.navigation
and runs the requested page inside the frame. A page loaded on its own by AppTest (the page file is the entry
script) renders alone, as the tests expect.
"""

from __future__ import annotations

import contextlib
import runpy
import threading
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

ENTRY_SCRIPT = "dashboard.py"
_frame = threading.local()  # each session's script runs on its own thread


@contextlib.contextmanager
def framed():
    """dashboard.py runs the chosen page inside this."""
    _frame.active = True
    try:
        yield
    finally:
        _frame.active = False


def ensure_frame() -> None:
    if getattr(_frame, "active", False):
        return
    ctx = get_script_run_ctx()
    entry = Path(ctx.main_script_path) if ctx is not None else None
    if entry is None or entry.name != ENTRY_SCRIPT:
        return
    runpy.run_path(str(entry))  # st.navigation resolves the URL's page and runs it framed
    st.stop()
