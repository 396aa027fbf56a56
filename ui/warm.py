"""Warm caches: the first script run starts one background thread (per runs folder) that reads, before anyone asks,
what each page shows first, so that a page's first visit finds its imports done and its artifacts cached.

    start() -> None      from ui.shell.frame(): starts the thread once per runs folder (st.cache_resource) unless
                         VITRINE_WARM_CACHES=0 (the test suite's in-process AppTests turn it off); the thread
                         waits for the script run that started it to end, so the first page renders first
    warm(runs_dir)       the work, in order: every page's modules (scipy, altair, sklearn come with them), the
                         leaderboard, the studies, then per default run of each page its stages, history,
                         explanation maps and thumbnails, the verdict's gap, the paired comparison, calibration,
                         cost and explanation agreement; last it asks the model-serving process for the models Live
                         predict and Attention maps start on (their builds run in that process, not this one)

Streamlit has no server-start hook, so the first script run starts the thread; it uses public API only (a daemon
thread calling the same st.cache_data loaders the pages call, which share one cache across sessions and threads;
Streamlit logs once that the thread has no ScriptRunContext, which its message says can be ignored). No step
takes a lock a training process holds: run directories are read, never locked. A step that fails is skipped: the
page that needs it reads (and reports) for itself.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time

import streamlit as st

from ui import data

log = logging.getLogger("ui.warm")
PAGE_MODULES = ["ui.board", "ui.verdict", "ui.compare_view", "ui.learning_curves", "ui.error_explorer",
                "ui.live_predict", "ui.attention_maps", "ui.agreement_view", "ui.calibration_view", "ui.cost",
                "ui.studies_view", "ui.overlay"]
TILES = 12  # Attention maps' default number of test images
ENV = "VITRINE_WARM_CACHES"


def start() -> None:
    """Start warming this runs folder's caches in the background, once per dashboard process."""
    if os.environ.get(ENV, "1") != "0":
        _started(str(data.runs_dir()))


@st.cache_resource(show_spinner=False)
def _started(runs_dir: str) -> threading.Thread:
    thread = threading.Thread(target=_after_run, args=(threading.current_thread(), runs_dir),
                              name="vitrine-warm-caches", daemon=True)
    thread.start()
    return thread


FIRST_RUN_WAIT_S = 30.0


def _after_run(starter: threading.Thread, runs_dir: str) -> None:
    """Warm once the script run that started the thread has ended (each Streamlit script run has its own thread),
    at most FIRST_RUN_WAIT_S later: warming beside the first page's own imports and reads slowed that page's
    first render (Home 6.0 s -> 7.3 s on two cores). Started from the main thread (a test), it does not wait."""
    if starter is not threading.main_thread():
        starter.join(timeout=FIRST_RUN_WAIT_S)
    warm(runs_dir)


def warm(runs_dir: str, models: bool = True) -> dict[str, float | str]:
    """Runs every step (`models`: the last one too); {step: seconds, or why it failed} (a failed step is logged
    and skipped). `runs_dir` names the folder the thread was started for: the loaders read ui.data.runs_dir()."""
    steps = [("imports", _imports), ("leaderboard", data.load_leaderboard), ("studies", _studies),
             ("runs", _runs), *([("models", _models)] if models else [])]
    done: dict[str, float | str] = {}
    for name, step in steps:
        start = time.monotonic()
        try:
            step()
            done[name] = time.monotonic() - start
        except Exception as exc:  # noqa: BLE001 - warming is an optimisation: the page reads for itself
            done[name] = f"{type(exc).__name__}: {exc}"
    log.info("warmed %s: %s", runs_dir, ", ".join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} skipped ({v})"
                                                 for k, v in done.items()))
    return done


def _imports() -> None:
    for module in PAGE_MODULES:
        importlib.import_module(module)


def _studies() -> None:
    from ui import studies_view

    studies_view.load_studies()


def _defaults(board):
    """(the runs the pages start on, newest first: Home's verdict pair, the newest completed CNN and ViT; the
    verdict pair (cnn, vit) or Nones; the newest completed ViT) from the leaderboard, as no session chose yet."""
    from ui import compare_view, state

    pair = compare_view.default_pair(board)
    best = next(iter(state.verdict_bests(board).values()), {})  # {family: run id} of the newest test set
    verdict_pair = [best[f] for f in ("cnn", "vit") if f in best]
    selected = state.default_selection(board)
    runs = list(dict.fromkeys([*verdict_pair, *selected, *[p for p in pair if p]]))
    vits = board[(board["status"] == "completed") & (board["family"] == "vit")]
    vits = vits.assign(when=vits["created"].fillna("").astype(str)).sort_values(["when", "id"], ascending=False)
    return runs, pair, (vits["id"].iloc[0] if not vits.empty else None), best


def _runs() -> None:
    from ui import agreement_view, calibration_view, compare_view, cost

    board = data.load_leaderboard()
    if board.empty:
        return
    runs, pair, vit, best = _defaults(board)
    data.run_labels(runs)
    for run_id in runs:
        data.load_history(run_id)
        for stage in data.run_stages(run_id):
            data.load_stage(run_id, stage)
            data.load_explanations(run_id, stage)
            data.load_explanation_layer(run_id, stage)
            calibration_view.load_calibration(run_id, stage)
        compare_view.stage_change(run_id)
    if "cnn" in best and "vit" in best:  # Home's verdict
        final = board.set_index("id")["final_stage"]
        data.accuracy_gap(best["vit"], final[best["vit"]], best["cnn"], final[best["cnn"]])
    if all(pair):
        compare_view.load_comparison(pair[0], pair[1], None)
        cost.cost_frame(list(pair))
    cnn = next((r for r in runs if r in set(board.loc[board["family"] == "cnn", "id"])), None)
    if vit and data.run_stages(vit):
        stage = data.run_stages(vit)[-1]
        if cnn:
            agreement_view.load_agreement(cnn, vit, None, stage)
        predictions = data.load_stage(vit, stage).predictions
        for path in ([] if predictions is None else predictions["path"].astype(str).head(TILES)):
            data.load_image(path, max_side=160)


def _models() -> None:
    """Ask the serving process for Live predict's models (the verdict pair) and the stage model of the ViT that
    Attention maps starts on; returns at once (the builds run there, one at a time)."""
    from ui import explain_view as ev

    board = data.load_leaderboard()
    if board.empty:
        return
    runs, _, vit, best = _defaults(board)
    for run_id in [best[f] for f in ("cnn", "vit") if f in best]:
        if ev.weights_stamp(run_id) is not None:
            data.model_job(run_id)
    if vit and data.run_stages(vit):
        ev.per_layer_model_ready(vit, data.run_stages(vit)[-1])  # asking starts the build
