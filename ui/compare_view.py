"""The Compare page's pieces: two runs on the same test images with the statistics behind "A beats B" (paired
exact interval that agrees with the McNemar test, the 2x2 agreement table with each cell's images, per-class F1
differences), what fine-tuning changed within each run, calibration, model cost and the HTML report.

    default_pair(board) -> (id_a, id_b)        the best CNN and the best ViT of one split (chosen on validation)
    render_page()                              everything, in page order
    render_comparison(run_a, run_b, stage)     A vs B (says so clearly when the comparison is unpaired)
    stage_change(run_id) -> (dict | None, why)  poc.analysis.compare.stage_change, cached (also the Error explorer's)
    render_stage_change(run_id)                per-class F1 change tl -> ft, classes that got worse flagged
    render_report_download(run_ids, key)       "prepare" checkbox, then a download button (Home uses it too)
The numbers come from poc.analysis.compare, cached on the files they read.
"""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from poc.runs import status as runstatus
from poc.runs import store
from poc.analysis.compare import compare_runs, scope_text, stage_change as run_stage_change
from poc.analysis.report import build_report
from poc.errors import UserError
from ui import calibration_view, cost, data, state, text
from ui.chart_cache import chart_spec
from ui.safe import safely

PICK_A, PICK_B, STAGE_KEY, CELL_KEY = "compare.run_a", "compare.run_b", "compare.stage", "compare.cell"
STAGES = {"final": "each run's final stage", "tl": "after transfer learning (tl)", "ft": "after fine-tuning (ft)"}
CELLS = {"only_a": "only A right", "only_b": "only B right", "both_wrong": "both wrong", "both_right": "both right"}
THUMBS, THUMB_COLUMNS = 24, 6


def _signature(run_ids: list[str]) -> tuple:
    """What a comparison depends on: each run's run.json, split.csv and every stage's predictions."""
    rds = [data.run_dir(i) for i in run_ids]
    return tuple(data.stamp(p) for rd in rds for p in (rd.run_json, rd.split_csv, rd.eval_file("tl", "predictions"),
                                                         rd.eval_file("ft", "predictions")))


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_compare(path_a: str, path_b: str, stage: str | None, signature: tuple) -> tuple[dict | None, str | None]:
    try:
        return compare_runs(store.RunDir(Path(path_a)), store.RunDir(Path(path_b)), stage, allow_unpaired=True), None
    except UserError as exc:
        return None, str(exc)


@st.cache_data(show_spinner=False, max_entries=32)
def _cached_stage_change(path: str, signature: tuple) -> tuple[dict | None, str | None]:
    try:
        return run_stage_change(store.RunDir(Path(path))), None
    except UserError as exc:
        return None, str(exc)


# ---------------------------------------------------------------- choosing the runs

def default_pair(board: pd.DataFrame) -> tuple[str | None, str | None]:
    """The best CNN and best ViT (poc.analysis.leaderboard.SELECTION_RULE) of the most recent split holding both; else
    the most recent completed CNN and ViT (state.default_selection), topped up with the newest completed runs."""
    for best in state.verdict_bests(board).values():  # cached: every page and session shares it
        if "cnn" in best and "vit" in best:
            return best["cnn"], best["vit"]
    picks = list(dict.fromkeys(state.default_selection(board) + state.completed_runs()))
    return (picks[0] if picks else None), (picks[1] if len(picks) > 1 else None)


def pick_runs() -> tuple[str, str, str | None] | None:
    """(run A, run B, stage or None for each run's final stage); None after an st.info when < 2 runs."""
    candidates = state.completed_runs()
    if len(candidates) < 2:
        st.info("Comparing needs two completed runs. Train them from the sidebar, or run `python -m poc demo` "
                "(one CNN and one ViT on the same split).")
        return None
    first, second = default_pair(data.load_leaderboard())
    if st.session_state.get(PICK_A) not in candidates:
        st.session_state[PICK_A] = first if first in candidates else candidates[0]
    if st.session_state.get(PICK_B) not in candidates:
        st.session_state[PICK_B] = second if second in candidates and second != st.session_state[PICK_A] \
            else next(c for c in candidates if c != st.session_state[PICK_A])
    labels = data.run_labels(candidates)
    left, right, last = st.columns([2, 2, 1])
    run_a = left.selectbox("Run A", candidates, key=PICK_A, format_func=lambda i: labels.get(i, i),
                           help="Default: the best CNN of the most recent split, chosen on validation")
    run_b = right.selectbox("Run B", candidates, key=PICK_B, format_func=lambda i: labels.get(i, i),
                            help="Default: the best ViT of the same split, chosen on validation")
    stage = last.selectbox("Stage", list(STAGES), key=STAGE_KEY, format_func=STAGES.get)
    return run_a, run_b, None if stage == "final" else stage


# ---------------------------------------------------------------- A vs B

def _gallery(paths: list[str], captions: dict[str, str]) -> None:
    if not paths:
        st.caption("No image in this cell.")
        return
    if len(paths) > THUMBS:
        st.caption(f"Showing the first {THUMBS} of {len(paths)} images.")
    cols = st.columns(THUMB_COLUMNS)
    for i, path in enumerate(paths[:THUMBS]):
        with cols[i % THUMB_COLUMNS]:
            image = data.load_image(path, max_side=160)
            if image is None:
                st.caption(f"⚠ missing: `{Path(path).name}`")
            else:
                st.image(image, caption=captions.get(path, Path(path).name), width=110)


def _captions(run_a: str, stage_a: str, run_b: str, stage_b: str) -> dict[str, str]:
    """path -> "true X · A: Y · B: Z" (B's prediction looked up by path; '?' where B lists another path)."""
    a, b = data.load_stage(run_a, stage_a).predictions, data.load_stage(run_b, stage_b).predictions
    if a is None:
        return {}
    b_pred = dict(zip(b["path"], b["pred"])) if b is not None else {}
    return {p: f"true {t} · A: {pa} · B: {b_pred.get(p, '?')}" for p, t, pa in zip(a["path"], a["label"], a["pred"])}


def _agreement(result: dict, run_a: str, run_b: str) -> None:
    m = result["mcnemar"]
    st.markdown("**Agreement table** (test images)")
    st.dataframe(pd.DataFrame({"B right": [m["both_right"], m["only_b"]], "B wrong": [m["only_a"], m["both_wrong"]]},
                              index=["A right", "A wrong"]))
    cell = st.selectbox("Show the images of", list(CELLS), key=CELL_KEY,
                        format_func=lambda c: f"{CELLS[c]} ({len(result['table'][c])})",
                        help="the images behind each cell of the table, with both runs' predictions")
    _gallery(result["table"][cell], _captions(run_a, result["run_a"]["stage"], run_b, result["run_b"]["stage"]))


def f1_delta_chart(frame: pd.DataFrame, names: tuple[str, str]) -> alt.Chart:
    """Per-class F1 of run A minus run B as bars, largest first (blue: A better, red: B better)."""
    order = frame.sort_values("delta", ascending=False)["class"].astype(str).tolist()
    return alt.Chart(frame.dropna(subset=["delta"])).mark_bar().encode(
        y=alt.Y("class:N", sort=order, title=None, axis=alt.Axis(labelOverlap=False)),
        x=alt.X("delta:Q", title=f"F1 {names[0]} − F1 {names[1]}"),
        color=alt.condition(alt.datum.delta >= 0, alt.value("#3182bd"), alt.value("#d62728")),
        tooltip=["class:N", alt.Tooltip("f1_a:Q", format=".3f", title=f"F1 {names[0]}"),
                 alt.Tooltip("f1_b:Q", format=".3f", title=f"F1 {names[1]}"), alt.Tooltip("delta:Q", format="+.3f")],
    ).properties(height=alt.Step(20 if len(frame) <= 30 else 8))


def _f1_differences(rows: list[dict], names: tuple[str, str]) -> None:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return
    shown = frame.rename(columns={"f1_a": f"F1 {names[0]}", "f1_b": f"F1 {names[1]}", "delta": "difference"})
    if "worse" in shown:
        shown["worse"] = shown["worse"].map({True: "⚠ worse", False: ""})
    left, right = st.columns(2)
    left.vega_lite_chart(spec=chart_spec(f1_delta_chart, frame, tuple(names)), width="stretch")
    right.dataframe(shown, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in (f"F1 {names[0]}", f"F1 {names[1]}", "difference")})


def _headline(result: dict) -> None:
    diff, acc_a, acc_b = result["difference"], result["accuracy_a"], result["accuracy_b"]
    cols = st.columns(4)
    cols[0].metric("Accuracy A", f"{acc_a['value']:.1%}", help=f"{acc_a['k']}/{acc_a['n']} test images")
    cols[0].caption(text.percent_interval(*acc_a["ci95"]) + " (Wilson)")
    cols[1].metric("Accuracy B", f"{acc_b['value']:.1%}", help=f"{acc_b['k']}/{acc_b['n']} test images")
    cols[1].caption(text.percent_interval(*acc_b["ci95"]) + " (Wilson)")
    cols[2].metric("A − B", f"{diff['diff']:+.1%}", help=diff["method"])
    cols[2].caption(f"{text.percent_interval(diff['low'], diff['high'], signed=True)} · {scope_text(result)}")
    if result["mcnemar"] is not None:
        m = result["mcnemar"]
        cols[3].metric("McNemar exact p", f"{m['p_value']:.3g}")
        cols[3].caption(f"{m['only_a'] + m['only_b']} discordant images: {m['only_a']} only A right, "
                        f"{m['only_b']} only B right" if m["only_a"] + m["only_b"] else
                        "no image separates the two runs")
    if diff["low"] <= 0 <= diff["high"]:
        st.caption(":orange[The interval includes 0: this test set does not establish which run is better.]")


def load_comparison(run_a: str, run_b: str, stage: str | None) -> tuple[dict | None, str | None]:
    """(poc.analysis.compare.compare_runs of the two runs, None) or (None, why not), cached on their files."""
    return _cached_compare(str(data.run_dir(run_a).path), str(data.run_dir(run_b).path), stage,
                           _signature([run_a, run_b]))


def render_comparison(run_a: str, run_b: str, stage: str | None) -> None:
    result, error = load_comparison(run_a, run_b, stage)
    if result is None:
        st.warning(f"These two runs cannot be compared: {error}")
        return
    if not result["paired"]:
        st.warning(f"**Unpaired comparison.** The two runs were tested on different images (test sets "
                   f"{str(result['test_fingerprint_a'])[:8]} vs {str(result['test_fingerprint_b'])[:8]}): the "
                   "interval is Newcombe's unpaired score interval over two different test sets (wider), and there "
                   "is no McNemar test and no agreement table. For a paired comparison, train one with "
                   "`--from-run` the other (the same test images).")
    else:
        split = ("the same split" if result["same_split"] else
                 "their train/val parts differ, which does not matter for a paired test")
        st.caption(f"Paired: both runs were tested on the same {result['n']} test images (test set "
                   f"{str(result['test_fingerprint_a'])[:8]}; {split}); A at stage {result['run_a']['stage']}, "
                   f"B at stage {result['run_b']['stage']}.")
    _headline(result)
    if result["paired"]:
        _agreement(result, run_a, run_b)
    st.markdown("**Per-class F1 differences** (A − B)")
    _f1_differences(result["per_class_f1"], ("A", "B"))


# ---------------------------------------------------------------- within one run

def stage_change(run_id: str) -> tuple[dict | None, str | None]:
    """(poc.analysis.compare.stage_change of the run, None) or (None, why not); cached on the run's files."""
    return _cached_stage_change(str(data.run_dir(run_id).path), _signature([run_id]))


def render_stage_change(run_id: str) -> None:
    """Fine-tuning against transfer learning within one run, per class; the classes that got worse flagged."""
    if not {"tl", "ft"} <= set(data.run_stages(run_id)):
        st.caption("Only one stage was evaluated (no fine-tuning, or it has not finished): nothing to compare.")
        return
    result, error = stage_change(run_id)
    if result is None:
        st.warning(error)
        return
    diff, m = result["difference"], result["mcnemar"]
    st.markdown(f"Fine-tuning changed test accuracy by **{diff['diff']:+.1%}** "
                f"({text.percent_interval(diff['low'], diff['high'], signed=True)}, exact paired interval); "
                f"{m['only_a']} images newly right, {m['only_b']} newly wrong (McNemar exact p = {m['p_value']:.3g}).")
    worse = [r["class"] for r in result["per_class_f1"] if r.get("worse")]
    if worse:
        st.warning(f"F1 dropped after fine-tuning for {len(worse)} class{'es' if len(worse) != 1 else ''}: "
                   + ", ".join(worse))
    _f1_differences(result["per_class_f1"], ("ft", "tl"))


# ---------------------------------------------------------------- report

@st.cache_data(show_spinner=False, max_entries=4)
def _cached_report(paths: tuple[str, ...], signature: tuple) -> tuple[str | None, str | None]:
    try:
        return build_report([store.RunDir(Path(p)) for p in paths]), None
    except UserError as exc:
        return None, str(exc)


def render_report_download(run_ids: list[str], key: str) -> None:
    """A checkbox that builds the self-contained HTML report of `run_ids` (only then: it takes seconds), then
    its download button."""
    run_ids = list(dict.fromkeys(run_ids))
    if not run_ids:
        return
    labels = data.run_labels(run_ids)
    if not st.checkbox(f"Prepare an HTML report of {', '.join(labels[i] for i in run_ids)}", key=f"{key}.prepare",
                       help="One self-contained file (charts and images inline): configuration, learning curves, "
                            "confusion matrices, per-class metrics, calibration, comparison statistics and sample "
                            "errors. Same as `python -m poc report RUN ... --out FILE.html`."):
        return
    with st.spinner("Building the report..."):
        html, error = _cached_report(tuple(str(data.run_dir(i).path) for i in run_ids), _signature(run_ids))
    if html is None:
        st.warning(f"The report could not be built: {error}")
        return
    st.download_button("Download the report (HTML)", html, file_name="vitrine-report.html", mime="text/html",
                       key=f"{key}.download", icon=":material/download:")


# ---------------------------------------------------------------- the page

def _stage_of(run_id: str, stage: str | None) -> str | None:
    stages = data.run_stages(run_id)
    if stage in stages:
        return stage
    row = data.load_leaderboard().set_index("id")
    final = row["final_stage"].get(run_id) if run_id in row.index else None
    return runstatus.final_stage(final, stages)


def render_page() -> None:
    picked = pick_runs()
    if picked is None:
        return
    run_a, run_b, stage = picked
    labels = data.run_labels([run_a, run_b])
    if run_a == run_b:
        st.info("Pick two different runs to compare them; below, what fine-tuning changed within this run.")
    else:
        safely("The comparison", render_comparison, run_a, run_b, stage)
    st.subheader("Within each run: fine-tuning against transfer learning")
    for run_id in dict.fromkeys([run_a, run_b]):
        with st.expander(labels[run_id], expanded=True):
            safely("The per-class change", render_stage_change, run_id)
    st.subheader("Calibration")
    columns = st.columns(2)
    for column, run_id in zip(columns, dict.fromkeys([run_a, run_b])):
        with column:
            shown = _stage_of(run_id, stage)
            if shown is None:
                st.caption(f"{labels[run_id]}: not evaluated")
            else:
                safely("The reliability diagram", calibration_view.render_calibration, run_id, shown,
                        f"{labels[run_id]} · stage {shown}")
    st.subheader("Model cost")
    safely("The cost table", cost.render_cost, [run_a, run_b])
    st.subheader("Report")
    render_report_download([run_a, run_b], key="compare.report")


def render_home_summary() -> None:
    """Home's additions: the cost of the runs compared (Home's picker) and their report download."""
    compared = state.selected_runs()
    if compared:
        safely("The cost table", cost.render_cost, compared, True)
        render_report_download(compared, key="home.report")
