"""One damaged artifact must not take a page down: pages render their sections through `safely`."""

from __future__ import annotations

import streamlit as st


def safely(title: str, render, *args) -> None:
    """`render(*args)`; on failure, the section's title and the reason in a warning, and the page goes on."""
    try:
        render(*args)
    except Exception as exc:  # Streamlit's rerun/stop are BaseExceptions and pass through
        st.warning(f"{title}: could not be shown ({type(exc).__name__}: {exc}). The run's files may be "
                   "incomplete or damaged.")
