"""ViTrine home: the runs leaderboard, which runs to compare, ViT-vs-CNN highlights, and the empty state."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from ui import data, state
from ui.sidebar import render_sidebar

st.set_page_config(page_title="ViTrine", layout="wide")
render_sidebar()

DEMO_JOB_KEY = "home.demo_job"
DEMO_ERROR_KEY = "home.demo_error"
COMPARE_KEY = "home.compare"
ACTIVE_JOB_STATES = ("queued", "running")  # poc.launcher.ACTIVE; every other job status is final
DEMO_RUNS = 2  # `python -m poc demo` trains one CNN and one ViT


# ---------------------------------------------------------------- formatting

def _acc_text(row: pd.Series, stage: str) -> str | None:
    acc, low, high = row.get(f"acc_{stage}"), row.get(f"acc_{stage}_low"), row.get(f"acc_{stage}_high")
    if acc is None or pd.isna(acc):
        return None
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{acc:.3f}"
    return f"{acc:.3f} [{low:.2f}, {high:.2f}]"


def _duration(seconds) -> str | None:
    if seconds is None or pd.isna(seconds):
        return None
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m {seconds:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def _best_epochs(row: pd.Series) -> str | None:
    parts = [f"{stage} {int(row[f'best_epoch_{stage}'])}" for stage in ("tl", "ft")
             if row.get(f"best_epoch_{stage}") is not None and pd.notna(row.get(f"best_epoch_{stage}"))]
    return " · ".join(parts) or None


def _display_table(board: pd.DataFrame) -> pd.DataFrame:
    labels = data.run_labels()
    return pd.DataFrame({
        "run": [labels.get(i, i) for i in board["id"]],
        "model": board["model"],
        "weights": board["weights"],
        "cutoff": board["fine_tune_at"].astype("string"),
        "trainable tl": pd.to_numeric(board["trainable_tl"], errors="coerce"),
        "trainable ft": pd.to_numeric(board["trainable_ft"], errors="coerce"),
        "weights MB": pd.to_numeric(board["weights_mb"], errors="coerce"),
        "accuracy tl [95% CI]": [_acc_text(r, "tl") for _, r in board.iterrows()],
        "accuracy ft [95% CI]": [_acc_text(r, "ft") for _, r in board.iterrows()],
        "macro-F1": pd.to_numeric(board["macro_f1"], errors="coerce"),
        "best epochs": [_best_epochs(r) for _, r in board.iterrows()],
        "training time": [_duration(s) for s in board["train_seconds"]],
        "device": board["device"],
        "status": board["status"],
        "progress": pd.to_numeric(board["progress"], errors="coerce"),
        "error": board["error"],
        "id": board["id"],
    })


COLUMN_CONFIG = {
    "run": st.column_config.TextColumn("run", width="medium"),
    "trainable tl": st.column_config.NumberColumn("trainable tl", format="compact",
                                                  help="trainable parameters in phase 1 (transfer learning)"),
    "trainable ft": st.column_config.NumberColumn("trainable ft", format="compact",
                                                  help="trainable parameters in phase 2 (fine-tuning)"),
    "weights MB": st.column_config.NumberColumn("weights MB", format="%.1f"),
    "accuracy tl [95% CI]": st.column_config.TextColumn(help="test accuracy after transfer learning, "
                                                             "bootstrap 95% interval"),
    "accuracy ft [95% CI]": st.column_config.TextColumn(help="test accuracy after fine-tuning, "
                                                             "bootstrap 95% interval"),
    "macro-F1": st.column_config.NumberColumn(format="%.3f", help="of the last evaluated stage"),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent",
                                                help="of the current phase, for running runs"),
    "error": st.column_config.TextColumn("error", width="large"),
    "id": st.column_config.TextColumn("id", width="small"),
}


# ---------------------------------------------------------------- demo launcher

def _start_demo() -> None:
    try:
        from poc.launcher import launch_demo

        job = launch_demo(runs_dir=str(data.runs_dir()))
        st.session_state[DEMO_JOB_KEY] = getattr(job, "id", None) or "demo"
    except Exception as exc:  # the launcher may be missing or refuse: say why, never a traceback
        st.error(f"Could not start the demo runs: {exc}")


def _demo_jobs() -> list:
    try:
        from poc.launcher import list_jobs

        jobs = list(list_jobs(runs_dir=str(data.runs_dir())))
    except Exception as exc:
        st.warning(f"Cannot follow the demo job: {exc}")
        return []
    wanted = st.session_state.get(DEMO_JOB_KEY)
    return [j for j in jobs if getattr(j, "id", None) == wanted]


def _demo_fraction(job, board: pd.DataFrame) -> tuple[float, str]:
    """The job's own progress when it reports one; else from the demo runs (one CNN + one ViT) on disk."""
    message = getattr(job, "message", None) or str(getattr(job, "status", ""))
    progress = getattr(job, "progress", None)
    if isinstance(progress, (int, float)) and not math.isnan(progress):
        return float(progress), message
    if board.empty:
        return 0.0, "generating the demo dataset, then training one CNN and one ViT"
    created = str(getattr(getattr(job, "job", job), "created", "") or "")
    mine = board[board["created"].fillna("").astype(str) >= created[:19]] if created else board
    done = int((mine["status"] == "completed").sum())
    running = mine[mine["status"].isin(["running", "queued"])]
    current = float(running["progress"].fillna(0).mean()) if len(running) else 0.0
    expected = max(DEMO_RUNS, len(mine))
    step = f"training run {min(done + 1, expected)} of {expected}" if len(running) else f"{done} run(s) done"
    return (done + current) / expected, step


@st.fragment(run_every=2)
def _follow_demo(had_runs: bool) -> None:
    """Progress of this session's demo job; reruns the whole page once runs appear or the job ends."""
    board = data.load_leaderboard()
    jobs = _demo_jobs()
    for job in jobs:
        if job.status in ACTIVE_JOB_STATES:
            value, text = _demo_fraction(job, board)
            st.progress(min(max(value, 0.0), 1.0), text=f"Demo runs: {text}")
        elif job.status != "completed":
            st.error(f"Demo {job.status}: {job.message or 'see the job log'}")
    if not any(job.status in ACTIVE_JOB_STATES for job in jobs):
        st.session_state.pop(DEMO_JOB_KEY, None)
        failed = [job for job in jobs if job.status != "completed"]
        if failed:  # kept for the next full run, which no longer follows the job
            st.session_state[DEMO_ERROR_KEY] = f"Demo {failed[0].status}: {failed[0].message or 'see the job log'}"
        st.rerun(scope="app")
    if not had_runs and not board.empty:  # the first demo run appeared: show the leaderboard
        st.rerun(scope="app")


def _empty_state() -> None:
    st.info(f"No runs yet in `{data.runs_dir()}`.")
    st.markdown(
        "ViTrine trains a CNN (e.g. MobileNetV2) and a Vision Transformer (e.g. ViT-Ti/16) on **your** image "
        "folder in two phases (transfer learning on a frozen backbone, then fine-tuning), evaluates both on "
        "the same held-out test images, and shows where each one fails: learning curves, confusion "
        "matrices with the misclassified images, per-class F1, Grad-CAM and attention maps.")
    st.markdown("Try it on a generated cartoon dataset (one CNN and one ViT run, a few minutes on a CPU):")
    if st.button("Generate demo runs", type="primary", key="home.demo_button"):
        st.session_state.pop(DEMO_ERROR_KEY, None)
        _start_demo()
    st.markdown("or from a terminal:")
    st.code("python -m poc demo", language="bash")
    st.caption("Or train on your own folder with the launcher in the sidebar, or "
               "`python -m poc train --data DATA --model mobilenet_v2`.")


# ---------------------------------------------------------------- highlights

def _final(row: pd.Series) -> tuple[float, float, float, str] | None:
    stage = data.final_stage(row)
    if stage is None:
        return None
    return row[f"acc_{stage}"], row[f"acc_{stage}_low"], row[f"acc_{stage}_high"], stage


def _best(board: pd.DataFrame, family: str | None = None) -> pd.Series | None:
    rows = board[board["status"] == "completed"]
    if family:
        rows = rows[rows["family"] == family]
    rows = rows.assign(_final=[(_final(r) or (float("nan"),))[0] for _, r in rows.iterrows()]).dropna(
        subset=["_final"])
    return None if rows.empty else rows.sort_values("_final", ascending=False).iloc[0]


def _ci_text(low, high) -> str:
    return "" if low is None or pd.isna(low) else f"95% CI [{low:.3f}, {high:.3f}]"


def _highlights(board: pd.DataFrame) -> None:
    best, cnn, vit = _best(board), _best(board, "cnn"), _best(board, "vit")
    if best is None:
        st.caption("Highlights appear once a run has completed.")
        return
    cols = st.columns(4)
    for col, title, row in ((cols[0], "Best run", best), (cols[1], "Best CNN", cnn), (cols[2], "Best ViT", vit)):
        with col:
            if row is None:
                st.metric(title, "—")
                st.caption("no completed run of this family")
                continue
            acc, low, high, stage = _final(row)
            st.metric(title, f"{acc:.1%}", help=f"test accuracy after {stage}")
            st.caption(f"{data.run_label(row)} · after {stage} · {_ci_text(low, high)}")
    with cols[3]:
        if cnn is None or vit is None:
            st.metric("ViT − CNN", "—")
            st.caption("needs a completed CNN and a completed ViT run")
            return
        (_, vlow, vhigh, vstage), (_, clow, chigh, cstage) = _final(vit), _final(cnn)
        gap = data.accuracy_gap(vit["id"], vstage, cnn["id"], cstage)
        if gap is None:
            st.metric("ViT − CNN", "—")
            st.caption("predictions missing for one of the two runs")
            return
        st.metric("ViT − CNN accuracy", f"{gap['gap']:+.1%}",
                  help="best ViT minus best CNN, percentile bootstrap over test images")
        kind = f"paired over the same {gap['n_a']} test images" if gap["paired"] else "unpaired (test sets differ)"
        st.caption(f"95% CI [{gap['low']:+.1%}, {gap['high']:+.1%}], bootstrap {kind}")
        overlap = not (pd.isna(vlow) or pd.isna(clow)) and vlow <= chigh and clow <= vhigh
        if gap["low"] <= 0 <= gap["high"]:
            st.caption(":orange[The interval includes 0: this test set does not establish which family is "
                       "better.]" + (" The two accuracy intervals also overlap." if overlap else ""))
        elif overlap:
            st.caption(":orange[The two accuracy intervals overlap, though the paired gap excludes 0.]")


# ---------------------------------------------------------------- leaderboard

def _filters(board: pd.DataFrame) -> pd.DataFrame:
    c1, c2, c3 = st.columns(3)
    families = sorted(f for f in board["family"].dropna().unique())
    statuses = sorted(board["status"].dropna().unique())
    datasets = sorted(d for d in board["dataset"].dropna().unique() if d)
    pick_family = c1.multiselect("Model family", families, key="home.f_family", placeholder="all")
    pick_status = c2.multiselect("Status", statuses, key="home.f_status", placeholder="all")
    pick_data = c3.selectbox("Dataset", ["all datasets"] + datasets, key="home.f_dataset")
    if pick_family:
        board = board[board["family"].isin(pick_family)]
    if pick_status:
        board = board[board["status"].isin(pick_status)]
    if pick_data != "all datasets":
        board = board[board["dataset"] == pick_data]
    return board


def _compare_picker(board: pd.DataFrame) -> None:
    options = board.loc[board["status"] != "unreadable", "id"].tolist()
    labels = data.run_labels(options)
    current = [i for i in state.selected_runs() if i in options]
    if COMPARE_KEY not in st.session_state or st.session_state[COMPARE_KEY] != current:
        st.session_state[COMPARE_KEY] = current
    st.multiselect("Runs to compare on the other pages", options, key=COMPARE_KEY,
                   format_func=lambda i: labels.get(i, i),
                   on_change=lambda: state.set_selected_runs(st.session_state[COMPARE_KEY]),
                   help="Learning curves overlay these runs; the error explorer starts with the first. "
                        "Default: the most recent completed CNN and ViT.")


def _damaged(board: pd.DataFrame) -> None:
    bad = board[board["problems"].notna() | board["status"].isin(["unreadable", "interrupted"])]
    if bad.empty:
        return
    st.warning(f"{len(bad)} run director{'y is' if len(bad) == 1 else 'ies are'} damaged or incomplete: "
               + ", ".join(f"`{i}`" for i in bad["id"]))
    with st.expander(f"Damaged or incomplete runs ({len(bad)})"):
        for _, row in bad.iterrows():
            why = row["problems"] if isinstance(row["problems"], str) else ""
            if row["status"] == "interrupted":
                why = "; ".join(filter(None, [why, "marked running but its process is gone (killed?)"]))
            st.markdown(f"- **{row['id']}** ({row['status']}): {why}")


def _failed(board: pd.DataFrame) -> None:
    failed = board[board["status"].isin(["failed", "cancelled"])]
    if failed.empty:
        return
    with st.expander(f"Failed or cancelled runs ({len(failed)})"):
        for _, row in failed.iterrows():
            st.error(f"**{data.run_label(row)}** (`{row['id']}`): {row['error'] or 'no error message recorded'}")


def _board(board: pd.DataFrame) -> None:
    _highlights(board)
    st.subheader("Leaderboard")
    shown = _filters(board[board["status"] != "unreadable"])
    if shown.empty:
        st.info("No run matches these filters.")
    else:
        st.dataframe(_display_table(shown), hide_index=True, column_config=COLUMN_CONFIG)
    _compare_picker(board)
    _failed(board)
    _damaged(board)


# ---------------------------------------------------------------- page

st.title("ViTrine")
st.markdown("Does a Vision Transformer beat a CNN on your small image dataset, after transfer learning and "
            "fine-tuning, and where does each one fail?")

if DEMO_ERROR_KEY in st.session_state:
    st.error(st.session_state[DEMO_ERROR_KEY])
board = data.load_leaderboard()
if board.empty:
    _empty_state()
    if DEMO_JOB_KEY in st.session_state:
        _follow_demo(had_runs=False)
else:
    if DEMO_JOB_KEY in st.session_state:
        _follow_demo(had_runs=True)
    active = bool(board["status"].isin(["running", "queued"]).any())
    # While something trains, the board refreshes itself (progress, new eval files) without a page rerun.
    def _live_board() -> None:
        _board(data.load_leaderboard())

    st.fragment(run_every=3 if active else None)(_live_board)()
