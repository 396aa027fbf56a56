"""ViTrine's entry point (`streamlit run dashboard.py`): page config, navigation and the sidebar, set once.

Each file in pages/ is one page with the same shape (a title, a one-line intro, `main()`), and renders on
its own too, which is how the AppTest tests load them.
"""

from __future__ import annotations

import streamlit as st

from ui.shell import framed
from ui.sidebar import render_sidebar

PAGES = [  # (file, title, icon); the first is Home, served at /
    ("pages/0_Home.py", "Home", ":material/home:"),
    ("pages/1_Learning_curves.py", "Learning curves", ":material/show_chart:"),
    ("pages/2_Error_explorer.py", "Error explorer", ":material/grid_on:"),
    ("pages/3_Live_predict.py", "Live predict", ":material/photo_camera:"),
    ("pages/4_Attention_maps.py", "Attention maps", ":material/visibility:"),
    ("pages/5_Compare.py", "Compare", ":material/compare_arrows:"),
    ("pages/6_Cutoff_sweep.py", "Cutoff sweep", ":material/tune:"),
]

st.set_page_config(page_title="ViTrine", layout="wide")
page = st.navigation([st.Page(path, title=title, icon=icon, default=i == 0)
                      for i, (path, title, icon) in enumerate(PAGES)])
render_sidebar()
with framed():
    page.run()
