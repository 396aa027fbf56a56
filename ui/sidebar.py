"""Sidebar launcher shown on every page (placeholder until the launcher lands)."""

import streamlit as st


def render_sidebar() -> None:
    st.sidebar.caption("Launcher coming soon")
