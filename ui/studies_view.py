"""The Cutoff sweep page: cutoff sweeps, data-size studies and seed repeats, read through poc.analysis.study_results.

    load_studies() -> (table, tests)     poc.analysis.study_results.study_summary / study_tests, cached on the runs
                                          folder
    series_labels(table) -> pd.Series     the legend label of each row: the model (+ the study when a model has
                                          several selected)
    trend_chart(table, x, y, ...)         one metric against trainable parameters (or training images), one line
                                          per study, CNN and ViT on the same axes; Wilson interval and ± spread
                                          over seeds as error bars; the study's best (by validation) ringed
    tests_table(tests, what) -> DataFrame one study's rows against its best row as shown: per-comparison interval
                                          beside the p-value Holm-adjusted over that study's tests
    render() -> None                      the page body, with its empty state

Charts are pure functions of the study table (no Streamlit calls), so tests can build them directly.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from poc.analysis.study_results import study_summary, study_tests
from ui import data, text
from ui.chart_cache import chart_spec
from ui.safe import safely

STUDIES_KEY = "sweep.studies"
SWEEP_COMMAND = ("python -m poc sweep --data data/demo --model mobilenet_v2 --weights demo --image-size 64 "
                 "--cutoffs auto --tl-epochs 5 --ft-epochs 3")
SIZE_COMMAND = ("python -m poc train --data data/demo --model vit_ti16 --weights demo --image-size 64 "
                "--train-fraction 0.1,0.25,0.5,1.0 --seeds 0,1,2")
BEST_RULE = ("the best row of each study has the highest mean validation accuracy (ties: the lower validation "
             "loss); the test split takes no part in the choice.")
PAIRING_RULE = ("Each row is compared with its study's best row on the same test images: the run of one seed "
                "against the best row's run of the same seed (the lowest seed both have; the seed column says "
                "which), exact McNemar test.")
HOLM_NOTE = ("The interval is per comparison: it excludes 0 exactly when that comparison's own p is below 0.05. "
             "The adjusted p accounts for all the tests of the study (Holm), so a row whose interval excludes 0 "
             "can still be not significant once adjusted; only an adjusted p below 0.05 supports a difference.")


# ---------------------------------------------------------------- loading

@st.cache_data(show_spinner=False, max_entries=8)
def _cached_studies(root: str, signature: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = data.indexed_runs([run_id for run_id, *_ in signature])
    summary = study_summary(runs)
    return summary, study_tests(runs, summary)


def load_studies() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per study and cutoff / fraction, tests: each row against its study's best row, every
    study's family adjusted on its own); keyed on each study run's id, status and finish time, so a run that
    completes shows up on the next rerun. Only the runs of a study are read."""
    board = data.load_leaderboard()
    board = board[board["study_id"].notna()]
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
               alt.Tooltip("runs:Q", title="runs (seeds)"),
               alt.Tooltip("val_acc_mean:Q", title="val accuracy (mean over seeds)", format=".3f")]
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

ACCURACY_COLUMN = "mean test accuracy [Wilson 95%, test images only]"


def _display(table: pd.DataFrame, what: str) -> pd.DataFrame:
    rows = [r for _, r in table.iterrows()]
    return pd.DataFrame({
        "model": table["model"],
        what: table["value"],
        "trainable params": table["trainable_params"],
        "train images": table["train_images"],
        ACCURACY_COLUMN: [text.accuracy(r["acc_mean"], r["acc_low"], r["acc_high"]) for r in rows],
        "± over seeds": [f"±{v:.3f}" if pd.notna(v) else "" for v in table["acc_std"]],
        "val accuracy (mean)": table["val_acc_mean"],
        "train − val gap (mean)": table["gap_mean"],
        "time per run (mean)": [text.duration(r["train_seconds_mean"]) for r in rows],
        "runs": table["runs"],
        "best (validation)": ["★" if b else "" for b in table["best"]],
    })


COLUMN_CONFIG = {
    "trainable params": st.column_config.NumberColumn(format="compact"),
    ACCURACY_COLUMN: st.column_config.TextColumn(
        help="Test accuracy, mean over the row's seeds. The bracket is the Wilson 95% interval of that mean read "
             "as a share of the n test images: it measures test-set sampling noise only, not the spread over "
             "seeds (that is ± over seeds), and no interval for a retrained model."),
    "± over seeds": st.column_config.TextColumn(help="sample standard deviation of the test accuracy over the "
                                                     "row's seeds (empty for one run)"),
    "val accuracy (mean)": st.column_config.NumberColumn(format="%.3f", help="validation accuracy of the "
                                                                              "measured stage, mean over seeds: "
                                                                              "what chooses the best row"),
    "train − val gap (mean)": st.column_config.NumberColumn(format="%+.3f", help="training minus validation "
                                                                                 "accuracy at the best epoch, "
                                                                                 "mean over seeds: overfitting"),
    "time per run (mean)": st.column_config.TextColumn(help="each run's own training time, mean over seeds; a "
                                                            "sweep's fine-tuning runs exclude the shared phase 1"),
    "runs": st.column_config.NumberColumn(help="completed runs in the row: one per seed"),
}


def tests_table(tests: pd.DataFrame, what: str) -> pd.DataFrame:
    """One study's rows of study_tests as shown: the row (`what`: cutoff or share), the best row it is compared
    with, the seed whose runs are paired, row minus best with its per-comparison 95% interval, the raw and the
    Holm-adjusted p (the header names how many tests the adjustment covers), and why a row was not tested."""
    tested = int(tests["p_value"].notna().sum())
    holm_header = f"p (Holm-adjusted over the {tested} test{'s' if tested != 1 else ''} of this study)"
    rows = [r for _, r in tests.iterrows()]
    return pd.DataFrame({
        what: tests["value"].to_numpy(),
        "vs best": tests["vs"].to_numpy(),
        "seed": [_seed(r) for r in rows],
        "test accuracy − best's": [f"{r['diff']:+.1%}" if pd.notna(r["diff"]) else "" for r in rows],
        "per-comparison 95% interval": [f"[{r['low']:+.1%}, {r['high']:+.1%}]" if pd.notna(r["low"]) else ""
                                        for r in rows],
        "p (this comparison)": [_p(r["p_value"]) for r in rows],
        holm_header: [_p(r["p_holm"]) for r in rows],
        "discordant / test images": [f"{int(r['discordant'])} / {int(r['n'])}" if pd.notna(r["n"]) else ""
                                     for r in rows],
        "not tested because": [r["reason"] if isinstance(r["reason"], str) else "" for r in rows],
    })


def _seed(row: pd.Series) -> str:
    """'seed 0': whose runs were paired; '' when no seed was paired, 'seed not recorded' for runs without one."""
    if pd.notna(row["seed"]):
        return f"seed {int(row['seed'])}"
    return "seed not recorded" if isinstance(row["run"], str) else ""


def _p(value) -> str:
    return f"{value:.3g}" if pd.notna(value) else ""


TESTS_CONFIG = {
    "per-comparison 95% interval": st.column_config.TextColumn(
        help="exact 95% interval of this one difference (poc.analysis.stats.paired_difference); not adjusted "
             "for the other tests of the study"),
    "p (this comparison)": st.column_config.TextColumn(help="exact McNemar p of this comparison alone"),
    "discordant / test images": st.column_config.TextColumn(help="test images exactly one of the two runs gets "
                                                                 "right: they alone decide the test"),
}


def _notes(table: pd.DataFrame) -> None:
    if table["split_fingerprint"].nunique() > 1 or not table["paired"].all():
        st.warning("These studies did not all run on one split: their accuracies are not paired, and a "
                   "difference between them mixes the models with the test images.")
    st.caption(f"★ / ring: {BEST_RULE} Error bars: thin, the Wilson 95% interval of the mean test accuracy over "
               "the test images (test-set noise only); thick, ± one standard deviation over seeds (where a study "
               "repeated seeds).")


def _study_tests(tests: pd.DataFrame, table: pd.DataFrame, what: str) -> None:
    """Each shown study's rows against its best row; nothing for studies of one row."""
    shown = [s for s in dict.fromkeys(table["study"]) if (tests["study"] == s).any()]
    if not shown:
        return
    st.markdown(f"**Is the best {what} better than the others?** {PAIRING_RULE}")
    st.caption(HOLM_NOTE)
    for study in shown:
        rows = tests[tests["study"] == study]
        best = table.loc[(table["study"] == study) & table["best"].astype(bool), "value"]
        st.markdown(f"{study_label(table, study)} · best {what}: **{best.iloc[0] if len(best) else 'none'}**")
        st.dataframe(tests_table(rows, what), hide_index=True, column_config=TESTS_CONFIG)


def _sweeps(table: pd.DataFrame, tests: pd.DataFrame) -> None:
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
    st.vega_lite_chart(spec=chart_spec(trend_chart, shown, x, "acc_mean", x_title, "test accuracy", low="acc_low",
                                       high="acc_high", spread="acc_std"), width="stretch")
    left, right = st.columns(2)
    left.vega_lite_chart(spec=chart_spec(trend_chart, shown, x, "gap_mean", x_title, "train − val accuracy",
                                         spread="gap_std", fmt="+.3f", height=240), width="stretch")
    right.vega_lite_chart(spec=chart_spec(trend_chart, shown, x, "train_seconds_mean", x_title, "seconds (own run)",
                                          spread="train_seconds_std", fmt=".0f", height=240), width="stretch")
    st.caption("Head only: the sweep's shared phase 1 (backbone frozen). Each other point is a fine-tuning run "
               "started from that phase 1's weights; its time excludes the shared phase 1.")
    st.dataframe(_display(shown, "cutoff"), hide_index=True, column_config=COLUMN_CONFIG)
    safely("The tests against the best cutoff", _study_tests, tests, shown, "cutoff")


def _data_size(table: pd.DataFrame, tests: pd.DataFrame) -> None:
    st.subheader("Data size: accuracy against training images")
    _notes(table)
    st.vega_lite_chart(spec=chart_spec(trend_chart, table, "train_images", "acc_mean", "training images",
                                       "test accuracy", low="acc_low", high="acc_high", spread="acc_std", x_log=False),
                       width="stretch")
    st.caption("Each point trains on a stratified share of one split's training images (smaller shares are "
               "subsets of larger ones); validation and test images are the same for every point.")
    st.dataframe(_display(table, "share"), hide_index=True, column_config=COLUMN_CONFIG)
    safely("The tests against the best share", _study_tests, tests, table, "share")


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
    table, tests = load_studies()
    if table.empty:
        empty_state()
        return
    sweeps = table[table["kind"] == "sweep"]
    if sweeps.empty:
        st.info("No cutoff sweep yet. Run one with:")
        st.code(SWEEP_COMMAND, language="bash")
    else:
        _sweeps(sweeps, tests)
    sizes = table[table["kind"] == "data_size"]
    if not sizes.empty:
        _data_size(sizes, tests)
    repeats = table[table["kind"] == "seeds"]
    if not repeats.empty:
        _seed_repeats(repeats)


def render() -> None:
    """The page body; refreshes itself every 5 s while a run trains (a sweep adds runs as it goes)."""
    st.fragment(run_every=5 if data.any_active(data.load_leaderboard()) else None)(_body)()
