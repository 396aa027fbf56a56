"""Home: the ViT-vs-CNN verdict on one split, the runs leaderboard, and the demo when there is no run yet."""

from __future__ import annotations

import streamlit as st

from ui import board, compare_view, data, home, shell, verdict


def _live_board() -> None:
    current = data.load_leaderboard()
    verdict.render_verdict(current)
    board.render_leaderboard(current)
    compare_view.render_home_summary()


def main() -> None:
    home.demo_error()
    runs = data.load_leaderboard()
    if runs.empty:
        home.empty_state()
        home.follow_demo(had_runs=False)
        return
    home.follow_demo(had_runs=True)
    # While something trains, the board refreshes itself (progress, new eval files) without a page rerun.
    st.fragment(run_every=5 if data.any_active(runs) else None)(_live_board)()


shell.frame()
st.title("ViTrine")
st.markdown("Does a Vision Transformer beat a CNN on your small image dataset, after transfer learning and "
            "fine-tuning, and where does each one fail?")
main()
