"""Learning curves: train vs validation loss or accuracy of the compared runs, on one interactive chart."""

from __future__ import annotations

import streamlit as st

from ui import data, learning_curves, shell

shell.frame()
st.title("Learning curves")
st.markdown("Train and validation loss or accuracy per epoch of the compared runs, transfer learning then "
            "fine-tuning, on one chart.")

board = data.load_leaderboard()
chosen = learning_curves.pick_runs(board)  # (runs, metric, log scale), or None after saying why
if chosen is not None:
    picked, metric, log_scale = chosen
    st.caption(learning_curves.CAPTION)
    # A run still training grows its history: redraw every few seconds without rerunning the page.
    st.fragment(run_every=5 if data.any_active(board, picked) else None)(learning_curves.render_curves)(
        picked, metric, log_scale)
