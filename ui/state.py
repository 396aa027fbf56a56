"""Cross-page state: which runs are being compared, and which single run a page looks at.

Values live under plain session-state keys (not widget keys), because Streamlit drops a widget's key when
the page that renders it is left; widgets copy into these keys from their on_change callbacks.

Public API (stable; other pages import it):
    selected_runs() -> list[str]          run ids to compare (chosen on Home). Until the user chooses, the
                                          default: the most recent completed CNN + the most recent completed ViT
                                          (or the newest completed run). Ids whose directory vanished are dropped.
    chosen_runs() -> list[str] | None     the runs the user picked on Home; None until they pick
    set_selected_runs(ids) -> None        store a selection (order kept, duplicates dropped)
    compare_picker(label, options, key=..., container=st, help=None) -> list[str]
                                          a multiselect over `options` that shows and sets the selection
    default_selection(board) -> list[str] the default above, from a leaderboard frame
    compared_test_set(board) -> str|None  the test set Home's verdict compares ("Compare the runs of"): the one
                                          the user chose while it has completed runs, else the test set of the
                                          most recent completed run
    compared_pair(board) -> list[str]     the runs Home's verdict compares: the best CNN and the best ViT of
                                          compared_test_set, chosen on validation (poc.analysis.leaderboard.verdict)
    verdict_bests(board) -> dict          {test fingerprint: {family: best run id}}, cached on the board
    completed_runs() -> list[str]         ids of completed runs, newest first
    focused_run() / set_focused_run(id)   the single run last looked at on a one-run page (error explorer,
                                          live predict, attention maps), so switching pages keeps it
    choose_run(label="Run", key=..., candidates=None, container=st) -> str | None
                                          a selectbox over `candidates` (default: the selection, then the
                                          other completed runs) that starts on focused_run(); returns the id,
                                          or None after an st.info when there is no candidate
"""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from poc.analysis import leaderboard
from ui import data

SELECTED_KEY = "vitrine.selected_runs"
FOCUS_KEY = "vitrine.focus_run"
SPLIT_KEY = "home.split"  # Home's "Compare the runs of" selectbox
SPLIT_CHOSEN_KEY = "home.split_chosen"  # set once the user picks a test set; until then the default follows new runs


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


def chosen_runs() -> list[str] | None:
    """The runs the user picked on Home ("Runs to compare on the other pages"); None until they pick."""
    return list(st.session_state[SELECTED_KEY]) if SELECTED_KEY in st.session_state else None


def verdict_bests(board: pd.DataFrame) -> dict[str, dict[str, str]]:
    """{test fingerprint: {family: id of its best run}} for every test set holding a completed run, in
    poc.analysis.leaderboard.comparison_groups' order (the most recent first); each best chosen by
    leaderboard.verdict. Cached on the completed runs' rows (the only ones either reads): every page and session
    shares one computation, and a run in progress, whose row changes with each epoch, does not undo it."""
    return _verdict_bests(board[board["status"] == "completed"] if not board.empty else board)


@st.cache_data(show_spinner=False, max_entries=8)
def _verdict_bests(board: pd.DataFrame) -> dict[str, dict[str, str]]:
    groups = leaderboard.comparison_groups(board) if not board.empty else pd.DataFrame()
    out = {}
    for fingerprint in groups.get("test_fingerprint", []):
        best = leaderboard.verdict(board, fingerprint).best
        out[str(fingerprint)] = {f: str(row["id"]) for f, row in best.items() if row is not None}
    return out


def compared_test_set(board: pd.DataFrame) -> str | None:
    """The test set Home's verdict compares: the user's choice while it still has completed runs, else the test
    set of the most recent completed run (poc.analysis.leaderboard.comparison_groups' first); None without one."""
    options = list(verdict_bests(board))
    if not options:
        return None
    chosen = st.session_state.get(SPLIT_KEY)
    return chosen if chosen in options and st.session_state.get(SPLIT_CHOSEN_KEY) else options[0]


def compared_pair(board: pd.DataFrame) -> list[str]:
    """The runs Home's verdict compares: the best CNN and the best ViT of compared_test_set (chosen on validation,
    poc.analysis.leaderboard.verdict), those that exist; [] when neither does."""
    fingerprint = compared_test_set(board)
    best = verdict_bests(board).get(fingerprint, {}) if fingerprint is not None else {}
    return [best[f] for f in ("cnn", "vit") if f in best]


def set_selected_runs(ids) -> None:
    st.session_state[SELECTED_KEY] = list(dict.fromkeys(str(i) for i in ids))


def compare_picker(label: str, options: list[str], *, key: str, container=st, help: str | None = None) -> list[str]:
    """A multiselect over `options` that starts on the selection and stores the user's change as the selection.

    The script never writes the widget's value: its key carries the selection it was drawn from, so a new
    selection draws a new widget with that default. A change applies only while the stored choice is still the
    one the widget was drawn from: a browser that sends a widget's old value late (a click while the page
    switches, a fragment rerun on a busy machine) cannot overwrite the selection, or empty it."""
    labels = data.run_labels(options)
    current = [i for i in selected_runs() if i in options]
    drawn_from = chosen_runs()
    widget_key = f"{key}.{hashlib.sha1(repr((current, drawn_from)).encode()).hexdigest()[:12]}"
    return container.multiselect(label, options, default=current, key=widget_key,
                                 format_func=lambda i: labels.get(i, i), help=help,
                                 on_change=_picked, args=(widget_key, drawn_from))


def _picked(widget_key: str, drawn_from: list[str] | None) -> None:
    if chosen_runs() == drawn_from and widget_key in st.session_state:
        set_selected_runs(st.session_state[widget_key])


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
