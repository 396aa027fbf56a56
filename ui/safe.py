"""One damaged artifact must not take a page down: pages render their sections through `safely`.

`safely` tells the damage a page is meant to report from a bug, by the exception's type:
- ARTIFACT_ERRORS (a file missing or unreadable, a CSV, JSON or .npz that does not parse) are damage: a warning
  names the section and the reason, and the page goes on. The run store's readers already turn damage into
  None and a listed problem; these are the errors of a file read past them (an image, a file that vanished).
- anything else is a failure of the dashboard's own code: an error names the section and the exception (the
  traceback goes to the server log, not the page), the page goes on, and the failure is recorded in
  st.session_state[FAILURES_KEY] (a list of "<section>: <exception type>: <message>"), where tests read it.
"""

from __future__ import annotations

import json
import logging
import zipfile

import pandas as pd
import streamlit as st

FAILURES_KEY = "vitrine.section_failures"
KEPT_FAILURES = 50  # the most recent ones: a section failing on every rerun must not grow the session unbounded

ARTIFACT_ERRORS = (
    OSError,  # missing, vanished or unreadable file; PIL's UnidentifiedImageError; h5py's truncated file
    pd.errors.EmptyDataError, pd.errors.ParserError,  # a CSV file empty or cut mid-row
    json.JSONDecodeError, UnicodeDecodeError,  # a JSON or text file truncated or overwritten with bytes
    zipfile.BadZipFile, EOFError,  # a truncated or empty .npz (np.load)
)

log = logging.getLogger(__name__)


def safely(title: str, render, *args) -> None:
    """`render(*args)`; damage (ARTIFACT_ERRORS) becomes a warning naming `title` and the reason, any other
    exception an error naming `title` and the exception, recorded under FAILURES_KEY. The page goes on."""
    try:
        render(*args)
    except ARTIFACT_ERRORS as exc:
        st.warning(f"{title}: could not be shown ({type(exc).__name__}: {exc}). The run's files may be "
                   "incomplete or damaged.")
    except Exception as exc:  # Streamlit's rerun/stop are BaseExceptions and pass through
        log.exception("section %r failed", title)
        failure = f"{title}: {type(exc).__name__}: {exc}"
        st.session_state[FAILURES_KEY] = [*st.session_state.get(FAILURES_KEY, []), failure][-KEPT_FAILURES:]
        st.error(f"{title}: failed ({type(exc).__name__}: {exc}). This is a fault in the dashboard, not in the "
                 "run's files; the rest of the page is unaffected.")

