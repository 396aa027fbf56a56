"""Home's verdict: the best CNN and the best ViT of one test set, chosen on validation, and their test gap.

Comparing like with like: only runs tested on the same images are compared (whatever their train/val parts); each
family's best is chosen by poc.analysis.leaderboard.SELECTION_RULE (validation), and the test split only reports
that choice, with the exact paired interval and McNemar test of poc.analysis.compare (the Compare page's numbers).
The verdict states its scope: test images, discordant images, how many runs each best was chosen from, seed repeats.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from poc.analysis import leaderboard
from ui import data, state, text

SPLIT_KEY, CHOSEN_KEY = state.SPLIT_KEY, state.SPLIT_CHOSEN_KEY  # the test set chosen here: state.compared_test_set


def _short(fingerprint: str) -> str:
    return str(fingerprint)[:8]


def _dataset_name(path) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if isinstance(path, str) and path else "unknown dataset"


def _pick_split(board: pd.DataFrame, groups: pd.DataFrame) -> str:
    options = groups["test_fingerprint"].tolist()
    labels = {g.test_fingerprint: f"{_dataset_name(g.dataset)} · test set {_short(g.test_fingerprint)} · "
                                  f"{g.runs} completed run{'s' if g.runs != 1 else ''}"
              for g in groups.itertuples()}
    st.session_state[SPLIT_KEY] = state.compared_test_set(board)  # the choice, else the default (or its runs are gone)
    return st.selectbox("Compare the runs of", options, key=SPLIT_KEY, format_func=labels.get,
                        on_change=lambda: st.session_state.update({CHOSEN_KEY: True}),
                        help="Only runs tested on the same test images are compared (their train/val parts may "
                             "differ). Default: the test set of the most recent completed run.")


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
              help=f"best ViT minus best CNN, on the same test images; interval: {gap['method']}")
    st.caption(gap_scope(gap) + f" · dataset {_dataset_name(v.dataset)}, test set {_short(v.test_fingerprint)}")
    if gap["low"] <= 0 <= gap["high"]:
        st.caption(":orange[The interval includes 0: this test set does not establish which family is better.]")
    if v.pretraining_differs:
        st.caption(f":orange[Pretraining differs: the CNN started from **{cnn['pretraining']}** weights, the ViT "
                   f"from **{vit['pretraining']}**, so the gap mixes the architecture with its pretraining.]")


def gap_scope(gap: dict) -> str:
    """The gap's interval, test and what decided it, as Compare and `python -m poc compare` state them."""
    discordant = gap["discordant"]
    decided = (f"{discordant} discordant image{'s' if discordant != 1 else ''} decide it" if discordant else
               "no image separates the two runs")
    return (f"{text.percent_interval(gap['low'], gap['high'], signed=True)} (exact paired interval), McNemar p = "
            f"{gap['p_value']:.3g} · the same {gap['n']} test images; {decided}")


def selection_scope(v: leaderboard.Verdict) -> list[str]:
    """What the verdict rests on beyond the test set: how many runs each best was chosen from, seed repeats,
    and a baseline that beats both families on validation."""
    lines = []
    counts = {f: v.candidates.get(f, 0) for f in ("cnn", "vit")}
    if all(counts.values()):
        line = f"Each family's best was chosen from {counts['cnn']} CNN run{'s' if counts['cnn'] != 1 else ''} " \
               f"and {counts['vit']} ViT run{'s' if counts['vit'] != 1 else ''}"
        if counts["cnn"] != counts["vit"]:
            more = "CNN" if counts["cnn"] > counts["vit"] else "ViT"
            line += f": the {more} had more tries, a selection advantage"
        lines.append(line + ".")
    spreads = {f: v.repeats.get(f) or [] for f in ("cnn", "vit") if v.best.get(f) is not None}
    single = [f.upper() if f == "cnn" else "ViT" for f, accs in spreads.items() if len(accs) < 2]
    if single:
        lines.append(f"{' and '.join(single)}: one training run compared; another seed can move its accuracy "
                     "(`--seeds 0,1,2` measures that spread).")
    for family, accs in spreads.items():
        if len(accs) >= 2:
            lines.append(f"{'CNN' if family == 'cnn' else 'ViT'}: {len(accs)} seed repeats of the chosen setup, test "
                         f"accuracy {pd.Series(accs).mean():.1%} ± {pd.Series(accs).std():.1%} (sd).")
    if v.baseline_leads:
        base = v.best["baseline"]
        lines.append(f":orange[The best baseline ({data.run_label(base)}) has a higher validation accuracy "
                     f"({base['val_acc']:.1%}) than both families' best.]")
    return lines


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
    fingerprint = _pick_split(board, groups)
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
    for line in selection_scope(v):
        st.caption(line)
    _not_comparable(v.not_comparable)
