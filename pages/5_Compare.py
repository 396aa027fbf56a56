"""Compare: two runs on the same test images, with the statistics behind "A beats B", calibration and cost."""

from __future__ import annotations

import streamlit as st

from ui import compare_view, shell


def main() -> None:
    compare_view.render_page()


shell.frame()
st.title("Compare")
st.markdown("Is run A really better than run B, or is the gap noise? A paired test on the same test images, the "
            "images each run alone gets right, per-class F1, calibration and what each model costs.")
main()
