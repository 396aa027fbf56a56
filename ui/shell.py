"""The dashboard's frame around every page: page config, the app's navigation, and the sidebar (training
launcher, jobs list). Every page calls `frame()` first.

A page file runs in one of two ways. Normally dashboard.py's `st.navigation` picks it from the URL and runs it.
But with a `pages/` folder beside the entry script, Streamlit (1.67) serves its legacy multipage mode until some
session has run dashboard.py: a bookmark such as /Compare opened as the server's first request runs that page
file alone, and so does AppTest loading a page file. Only a call inside the page reaches both cases, so the
frame is the page's first line rather than dashboard.py's. It declares the app's navigation again: on a page
run alone that replaces the legacy listing of the folder (an extra "dashboard" entry, file-name titles) and ends
the legacy mode for the server, as dashboard.py would; under dashboard.py it repeats the same pages, which
resolves to the page already running and changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import warm
from ui.sidebar import render_sidebar

APP_DIR = Path(__file__).resolve().parents[1]  # where dashboard.py and pages/ are
PAGES = [  # (file, title, icon); the first is Home, served at /
    ("pages/0_Home.py", "Home", ":material/home:"),
    ("pages/1_Learning_curves.py", "Learning curves", ":material/show_chart:"),
    ("pages/2_Error_explorer.py", "Error explorer", ":material/grid_on:"),
    ("pages/3_Live_predict.py", "Live predict", ":material/photo_camera:"),
    ("pages/4_Attention_maps.py", "Attention maps", ":material/visibility:"),
    ("pages/5_Compare.py", "Compare", ":material/compare_arrows:"),
    ("pages/6_Cutoff_sweep.py", "Cutoff sweep", ":material/tune:"),
]


def navigation():
    """st.navigation over PAGES (absolute paths: a page run alone is its own entry script, so a relative path
    would resolve from pages/); returns the page the URL asks for."""
    return st.navigation([st.Page(APP_DIR / path, title=title, icon=icon, default=i == 0)
                          for i, (path, title, icon) in enumerate(PAGES)])


def frame() -> None:
    """Page config, navigation and sidebar: the first call of every page, however the page was reached. The first
    script run also starts warming the caches of the pages not visited yet (ui.warm)."""
    st.set_page_config(page_title="ViTrine", layout="wide")
    navigation()
    warm.start()
    render_sidebar()
