"""The Cutoff sweep page: cutoff sweeps, data-size studies and seed repeats, read through poc.analysis.study_results.

    load_studies() -> (table, runs)      poc.analysis.study_results.study_summary / study_runs, cached on the runs folder
    series_labels(table) -> pd.Series     the legend label of each row: the model (+ the study when a model has
                                          several selected)
    trend_chart(table, x, y, ...)         one metric against trainable parameters (or training images), one line
                                          per study, CNN and ViT on the same axes; Wilson interval and ± spread
                                          over seeds as error bars; the study's best (by validation) ringed
    render() -> None                      the page body, with its empty state

Charts are pure functions of the study table (no Streamlit calls), so tests can build them directly.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from poc.runs import store
from poc.analysis.study_results import study_runs, study_summary
from ui import data, text

STUDIES_KEY = "sweep.studies"
SWEEP_COMMAND = ("python -m poc sweep --data data/demo --model mobilenet_v2 --weights demo --image-size 64 "
                 "--cutoffs auto --tl-epochs 5 --ft-epochs 3")
SIZE_COMMAND = ("python -m poc train --data data/demo --model vit_ti16 --weights demo --image-size 64 "
                "--train-fraction 0.1,0.25,0.5,1.0 --seeds 0,1,2")
BEST_RULE = ("the best row of each study has the highest mean validation accuracy (ties: the lower validation "
             "loss); the test split takes no part in the choice.")


# ---------------------------------------------------------------- loading

@st.cache_data(show_spinner=False, ttl=10)
def _cached_studies(root: str, signature: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = store.list_runs(root)
    return study_summary(runs), study_runs(runs)


def load_studies() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per study and cutoff / fraction, runs: one row per completed study run); keyed on every
    run's id, status and finish time, so a run that completes shows up on the next rerun."""
    board = data.load_leaderboard()
    signature = tuple(board[["id", "status", "finished"]].astype(str).itertuples(index=False, name=None))
    return _cached_studies(str(data.runs_dir()), signature)


def study_label(table: pd.DataFrame, study: str) -> str:
    rows = table[table["study"] == study]
    first = rows.iloc[0]
    stamp = str(study)[:15]  # the id starts with its UTC creation time
    when = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}" if stamp[:8].isdigit() else stamp
    return f"{first['model']} · {when} · {len(rows)} points · seeds {first['seeds']}"


def series_labels(table: pd.DataFrame) -> pd.Series:
    """The model name, plus the study's time when one model has several studies in `table`."""
    studies_per_model = table.groupby("model")["study"].nunique()
    return pd.Series([m if studies_per_model.get(m, 1) <= 1 else f"{m} · {str(s)[:15]}"
                      for m, s in zip(table["model"], table["study"])], index=table.index, dtype=str)


# ---------------------------------------------------------------- charts (pure)

def trend_chart(table: pd.DataFrame, x: str, y: str, x_title: str, y_title: str, low: str | None = None,
                high: str | None = None, spread: str | None = None, fmt: str = ".3f", x_log: bool = True,
                height: int = 300) -> alt.Chart:
    """`y` against `x`, one line per study coloured by model. Thin bars: [low, high] (the Wilson interval);
    thick translucent bars: y ± spread (over seeds, where a row has several runs); ring: the study's best row
    (highest validation accuracy)."""
    frame = table.assign(label=series_labels(table))
    color = alt.Color("label:N", title="model", scale=alt.Scale(scheme="tableau10"),
                      legend=alt.Legend(orient="bottom", labelLimit=300))
    x_enc = alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(type="log" if x_log else "linear", zero=False))
    y_enc = alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False))
    tooltip = [alt.Tooltip("label:N", title="model"), alt.Tooltip("value:N", title="cutoff / share"),
               alt.Tooltip(f"{x}:Q", title=x_title, format=",.0f"), alt.Tooltip(f"{y}:Q", title=y_title, format=fmt),
               alt.Tooltip("runs:Q", title="runs (seeds)"), alt.Tooltip("val_acc_mean:Q", title="val accuracy",
                                                                        format=".3f")]
    layers = [alt.Chart(frame).mark_line(point=alt.OverlayMarkDef(size=60)).encode(
        x=x_enc, y=y_enc, color=color, detail="study:N", tooltip=tooltip)]
    if low and high:
        layers.append(alt.Chart(frame).mark_rule(strokeWidth=1.5).encode(
            x=x_enc, y=f"{low}:Q", y2=f"{high}:Q", color=color))
    if spread:
        spread_rows = frame[frame[spread].notna()].assign(spread_low=lambda f: f[y] - f[spread],
                                                          spread_high=lambda f: f[y] + f[spread])
        if not spread_rows.empty:
            layers.append(alt.Chart(spread_rows).mark_rule(strokeWidth=6, opacity=0.35).encode(
                x=x_enc, y="spread_low:Q", y2="spread_high:Q", color=color))
    best = frame[frame["best"].astype(bool)]
    if not best.empty:
        layers.append(alt.Chart(best).mark_point(size=320, filled=False, strokeWidth=2.5).encode(
            x=x_enc, y=y_enc, color=color, tooltip=tooltip))
    return alt.layer(*layers).properties(height=height)


# ---------------------------------------------------------------- page sections

def _display(table: pd.DataFrame, what: str) -> pd.DataFrame:
    rows = [r for _, r in table.iterrows()]
    return pd.DataFrame({
        "model": table["model"],
        what: table["value"],
        "trainable params": table["trainable_params"],
        "train images": table["train_images"],
        "test accuracy [95% CI]": [text.accuracy(r["acc_mean"], r["acc_low"], r["acc_high"]) for r in rows],
        "± over seeds": [f"±{v:.3f}" if pd.notna(v) else "" for v in table["acc_std"]],
        "val accuracy": table["val_acc_mean"],
        "train − val gap": table["gap_mean"],
        "time": [text.duration(r["train_seconds_mean"]) for r in rows],
        "runs": table["runs"],
        "best (validation)": ["★" if b else "" for b in table["best"]],
    })


COLUMN_CONFIG = {
    "trainable params": st.column_config.NumberColumn(format="compact"),
    "± over seeds": st.column_config.TextColumn(help="standard deviation of test accuracy over the seeds "
                                                     "(empty for one run)"),
    "val accuracy": st.column_config.NumberColumn(format="%.3f", help="what chooses the best row"),
    "train − val gap": st.column_config.NumberColumn(format="%+.3f", help="training minus validation accuracy "
                                                                          "at the best epoch: overfitting"),
    "test accuracy [95% CI]": st.column_config.TextColumn(help="mean over seeds, Wilson 95% interval for the "
                                                               "number of test images"),
}


def _notes(table: pd.DataFrame) -> None:
    if table["split_fingerprint"].nunique() > 1 or not table["paired"].all():
        st.warning("These studies did not all run on one split: their accuracies are not paired, and a "
                   "difference between them mixes the models with the test images.")
    st.caption(f"★ / ring: {BEST_RULE} Error bars: thin, the Wilson 95% interval of the test accuracy; thick, "
               "± one standard deviation over seeds (where a study repeated seeds).")


def _sweeps(table: pd.DataFrame) -> None:
    st.subheader("Cutoff sweeps")
    studies = list(dict.fromkeys(table["study"]))  # newest first
    newest_per_model = list(dict.fromkeys(table.drop_duplicates("model")["study"]))
    if st.session_state.get(STUDIES_KEY) is None or not set(st.session_state[STUDIES_KEY]) <= set(studies):
        st.session_state[STUDIES_KEY] = newest_per_model
    picked = st.multiselect("Sweeps", studies, key=STUDIES_KEY, format_func=lambda s: study_label(table, s),
                            help="The newest sweep of each model is shown by default.")
    shown = table[table["study"].isin(picked)]
    if shown.empty:
        st.info("Choose one or more sweeps above.")
        return
    _notes(shown)
    x, x_title = "trainable_params", "trainable parameters in fine-tuning (log)"
    st.altair_chart(trend_chart(shown, x, "acc_mean", x_title, "test accuracy", low="acc_low", high="acc_high",
                                spread="acc_std"), width="stretch")
    left, right = st.columns(2)
    left.altair_chart(trend_chart(shown, x, "gap_mean", x_title, "train − val accuracy", spread="gap_std",
                                  fmt="+.3f", height=240), width="stretch")
    right.altair_chart(trend_chart(shown, x, "train_seconds_mean", x_title, "seconds (own run)",
                                   spread="train_seconds_std", fmt=".0f", height=240), width="stretch")
    st.caption("Head only: the sweep's shared phase 1 (backbone frozen). Each other point is a fine-tuning run "
               "started from that phase 1's weights; its time excludes the shared phase 1.")
    st.dataframe(_display(shown, "cutoff"), hide_index=True, column_config=COLUMN_CONFIG)


def _data_size(table: pd.DataFrame) -> None:
    st.subheader("Data size: accuracy against training images")
    _notes(table)
    st.altair_chart(trend_chart(table, "train_images", "acc_mean", "training images", "test accuracy",
                                low="acc_low", high="acc_high", spread="acc_std", x_log=False),
                    width="stretch")
    st.caption("Each point trains on a stratified share of one split's training images (smaller shares are "
               "subsets of larger ones); validation and test images are the same for every point.")
    st.dataframe(_display(table, "share"), hide_index=True, column_config=COLUMN_CONFIG)


def _seed_repeats(table: pd.DataFrame) -> None:
    st.subheader("Seed repeats")
    st.caption("One configuration trained with several seeds on one split: the spread is training noise.")
    st.dataframe(_display(table, "study").assign(study=[study_label(table, s) for s in table["study"]]),
                 hide_index=True, column_config=COLUMN_CONFIG)


def empty_state() -> None:
    st.info(f"No study yet in `{data.runs_dir()}`: a cutoff sweep trains one phase 1, then one fine-tuning run "
            "per cutoff, and plots accuracy against trainable parameters.")
    st.markdown("Run one from a terminal (or **Launch sweep** in the sidebar launcher):")
    st.code(SWEEP_COMMAND, language="bash")
    st.markdown("A data-size study (does the ViT need more data?), with seed repeats:")
    st.code(SIZE_COMMAND, language="bash")


def _body() -> None:
    table, _runs = load_studies()
    if table.empty:
        empty_state()
        return
    sweeps = table[table["kind"] == "sweep"]
    if sweeps.empty:
        st.info("No cutoff sweep yet. Run one with:")
        st.code(SWEEP_COMMAND, language="bash")
    else:
        _sweeps(sweeps)
    sizes = table[table["kind"] == "data_size"]
    if not sizes.empty:
        _data_size(sizes)
    repeats = table[table["kind"] == "seeds"]
    if not repeats.empty:
        _seed_repeats(repeats)


def render() -> None:
    """The page body; refreshes itself every 5 s while a run trains (a sweep adds runs as it goes)."""
    st.fragment(run_every=5 if data.any_active(data.load_leaderboard()) else None)(_body)()
