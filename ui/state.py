"""Cross-page state: which runs are being compared, and which single run a page looks at.

Values live under plain session-state keys (not widget keys), because Streamlit drops a widget's key when
the page that renders it is left; widgets copy into these keys from their on_change callbacks.

Public API (stable; other pages import it):
    selected_runs() -> list[str]          run ids to compare (chosen on Home). Until the user chooses, the
                                          default: the most recent completed CNN + the most recent completed ViT
                                          (or the newest completed run). Ids whose directory vanished are dropped.
    set_selected_runs(ids) -> None        store a selection (order kept, duplicates dropped)
    default_selection(board) -> list[str] the default above, from a leaderboard frame
    completed_runs() -> list[str]         ids of completed runs, newest first
    focused_run() / set_focused_run(id)   the single run last looked at on a one-run page (error explorer,
                                          live predict, attention maps), so switching pages keeps it
    choose_run(label="Run", key=..., candidates=None, container=st) -> str | None
                                          a selectbox over `candidates` (default: the selection, then the
                                          other completed runs) that starts on focused_run(); returns the id,
                                          or None after an st.info when there is no candidate
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ui import data

SELECTED_KEY = "vitrine.selected_runs"
FOCUS_KEY = "vitrine.focus_run"


def _created_order(board: pd.DataFrame) -> pd.DataFrame:
    """Newest first by `created` (ISO strings sort chronologically), then by id (ids start with a stamp)."""
    return board.assign(_created=board["created"].fillna("").astype(str)).sort_values(
        ["_created", "id"], ascending=False)


def default_selection(board: pd.DataFrame) -> list[str]:
    """The most recent completed CNN and the most recent completed ViT; else the newest completed run."""
    if board.empty:
        return []
    done = _created_order(board[board["status"] == "completed"])
    picks = []
    for family in ("cnn", "vit"):
        rows = done[done["family"] == family]
        if not rows.empty:
            picks.append(rows["id"].iloc[0])
    if not picks and not done.empty:
        picks.append(done["id"].iloc[0])
    return picks


def completed_runs() -> list[str]:
    board = data.load_leaderboard()
    if board.empty:
        return []
    return _created_order(board[board["status"] == "completed"])["id"].tolist()


def selected_runs() -> list[str]:
    board = data.load_leaderboard()
    known = set(board["id"]) if not board.empty else set()
    if SELECTED_KEY not in st.session_state:
        return default_selection(board)
    return [i for i in st.session_state[SELECTED_KEY] if i in known]


def set_selected_runs(ids) -> None:
    st.session_state[SELECTED_KEY] = list(dict.fromkeys(str(i) for i in ids))


def focused_run() -> str | None:
    return st.session_state.get(FOCUS_KEY)


def set_focused_run(run_id: str | None) -> None:
    st.session_state[FOCUS_KEY] = run_id


def choose_run(label: str = "Run", *, key: str = "vitrine.choose_run", candidates: list[str] | None = None,
               container=st, help: str | None = None) -> str | None:
    """One run out of `candidates` (default: the compared runs, then the other completed runs)."""
    if candidates is None:
        candidates = list(dict.fromkeys(selected_runs() + completed_runs()))
    if not candidates:
        container.info("No completed run yet. Train one from the sidebar, or run `python -m poc demo`.")
        return None
    labels = data.run_labels(candidates)
    if st.session_state.get(key) not in candidates:  # first render on this page, or the run vanished
        focus = focused_run()
        st.session_state[key] = focus if focus in candidates else candidates[0]
    choice = container.selectbox(label, candidates, key=key, format_func=lambda i: labels.get(i, i),
                                 help=help, on_change=lambda: set_focused_run(st.session_state[key]))
    set_focused_run(choice)
    return choice
