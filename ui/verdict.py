"""Home's verdict: the best CNN and the best ViT of one split, chosen on validation, and their test gap.

Comparing like with like: only runs of one dataset and split fingerprint are compared; each family's best is
chosen by poc.analysis.leaderboard.SELECTION_RULE (validation), and the test split only reports that choice, with a
paired bootstrap interval over the same test images.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from poc.analysis import leaderboard
from ui import data, text

SPLIT_KEY = "home.split"
CHOSEN_KEY = "home.split_chosen"  # set once the user picks a split; until then the default follows new runs


def _short(fingerprint: str) -> str:
    return str(fingerprint)[:8]


def _dataset_name(path) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if isinstance(path, str) and path else "unknown dataset"


def _pick_split(groups: pd.DataFrame) -> str:
    options = groups["split_fingerprint"].tolist()
    labels = {g.split_fingerprint: f"{_dataset_name(g.dataset)} · split {_short(g.split_fingerprint)} · "
                                   f"{g.runs} completed run{'s' if g.runs != 1 else ''}"
              for g in groups.itertuples()}
    if st.session_state.get(SPLIT_KEY) not in options or not st.session_state.get(CHOSEN_KEY):
        st.session_state[SPLIT_KEY] = options[0]  # the default, or the chosen split's runs are gone
    return st.selectbox("Compare the runs of", options, key=SPLIT_KEY, format_func=labels.get,
                        on_change=lambda: st.session_state.update({CHOSEN_KEY: True}),
                        help="Only runs trained and tested on the same split (dataset and split fingerprint) are "
                             "compared. Default: the split of the most recent completed run.")


def _best_card(title: str, row, missing: str) -> None:
    if row is None:
        st.metric(title, "—")
        st.caption(missing)
        return
    stage = row["final_stage"]
    acc, low, high = row[f"acc_{stage}"], row[f"acc_{stage}_low"], row[f"acc_{stage}_high"]
    st.metric(title, f"{acc:.1%}", help=f"test accuracy of the chosen run's final stage ({stage}); it reports "
                                        "the choice, which the validation split made")
    interval = text.percent_interval(low, high)
    st.caption(" · ".join([data.run_label(row), f"final stage {stage}", f"validation accuracy {row['val_acc']:.1%}",
                           *([f"test {interval}"] if interval else []),
                           f"pretraining: {row['pretraining'] or 'unknown'}"]))


def _gap_card(v: leaderboard.Verdict) -> None:
    cnn, vit = v.best.get("cnn"), v.best.get("vit")
    if cnn is None or vit is None:
        st.metric("ViT − CNN", "—")
        st.caption("needs a completed CNN and a completed ViT with validation metrics on this split")
        return
    gap = data.accuracy_gap(vit["id"], vit["final_stage"], cnn["id"], cnn["final_stage"])
    if gap is None:
        st.metric("ViT − CNN", "—")
        st.caption("the two runs' test predictions are missing or do not list the same test images")
        return
    st.metric("ViT − CNN accuracy", f"{gap['diff']:+.1%}",
              help="best ViT minus best CNN, on the same test images (paired percentile bootstrap)")
    st.caption(f"{text.percent_interval(gap['low'], gap['high'], signed=True)}, paired bootstrap over the same "
               f"{gap['n']} test images · dataset {_dataset_name(v.dataset)}, split {_short(v.split_fingerprint)}")
    if gap["low"] <= 0 <= gap["high"]:
        st.caption(":orange[The interval includes 0: this test set does not establish which family is better.]")
    if v.pretraining_differs:
        st.caption(f":orange[Pretraining differs: the CNN started from **{cnn['pretraining']}** weights, the ViT "
                   f"from **{vit['pretraining']}**, so the gap mixes the architecture with its pretraining.]")


def _not_comparable(rows: pd.DataFrame) -> None:
    if rows is None or rows.empty:
        return
    names = ", ".join(f"{data.run_label(r)} (`{r['id']}`)" for _, r in rows.iterrows())
    st.caption(f"Not comparable, so not chosen ({len(rows)}): {names}. Their final stage has no validation "
               "metrics (trained before ViTrine recorded them); `python -m poc evaluate RUN` adds them.")


def render_verdict(board: pd.DataFrame) -> None:
    groups = leaderboard.comparison_groups(board)
    if groups.empty:
        st.caption("The ViT-vs-CNN verdict appears once a run has completed.")
        return
    fingerprint = _pick_split(groups)
    v = leaderboard.verdict(board, fingerprint)
    st.caption(f"Each family's best is {leaderboard.SELECTION_RULE}.")
    cols = st.columns(4)
    with cols[0]:
        _best_card("Best CNN", v.best.get("cnn"), "no completed CNN with validation metrics on this split")
    with cols[1]:
        _best_card("Best ViT", v.best.get("vit"), "no completed ViT with validation metrics on this split")
    with cols[2]:
        _gap_card(v)
    with cols[3]:
        _best_card("Best baseline", v.best.get("baseline"), "no completed baseline on this split "
                                                            "(`python -m poc baseline`)")
    _not_comparable(v.not_comparable)
