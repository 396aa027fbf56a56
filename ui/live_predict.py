"""The Live-predict page: one image (a test image, an upload or a photo) through each chosen run, side by side:
top-k, explanation overlay and latency. `render()` draws the page below its title.

The models build in the model-serving process (ui.data.model_job): the page shows at once, and each run's
column fills in when its model is ready (`predictions_while_loading`, a fragment that waits for the next model
and redraws). `verdict_line` and `latency_caption` are pure, for tests.
"""

from __future__ import annotations

import time

import altair as alt
import pandas as pd
import streamlit as st

from ui import data, state
from ui import explain_view as ev
from ui.overlay import overlay, thumbnail

MAX_IMAGES = 6  # per rerun: each image costs one forward + one explanation per run
DISPLAY_SIDE = 256  # px, longer side of the image the overlay is drawn on
OVERLAY_WIDTH = 320  # px on screen (narrower columns shrink it)
LOADING = ("⏳ Loading this run's model: the first use since the dashboard started loads TensorFlow and builds it "
           "(seconds); its prediction appears here when it is ready.")


# ---------------------------------------------------------------- what is said about a prediction (pure)

def verdict_line(result: ev.LivePrediction, true_label: str | None) -> str:
    """"Top-1: **cat** (91.0%)", with ✓ or ✗ (true: ...) when the true class is known."""
    name, prob = result.top[0]
    verdict = "" if true_label is None else (" ✓" if name == true_label else f" ✗ (true: {true_label})")
    return f"Top-1: **{name}** ({prob:.1%}){verdict}"


def latency_caption(result: ev.LivePrediction) -> str:
    busy = (" Measured while another run's model was loading, so it shares the CPU; measured again once "
            "every model is loaded." if result.contended else "")
    return (f"Inference latency: {result.latency_ms:.1f} ms per image (one compiled call after the model's "
            f"warm-up, batch of 1, on the machine serving this page).{busy}")


def topk_chart(top: list[tuple[str, float]], true_label: str | None) -> alt.Chart:
    frame = pd.DataFrame(top, columns=["class", "probability"])
    frame["kind"] = ["true class" if c == true_label else "other" for c in frame["class"]]
    base = alt.Chart(frame).encode(
        y=alt.Y("class:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False, labelLimit=140)),
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%", title=None)))
    bars = base.mark_bar().encode(
        color=alt.Color("kind:N", scale=alt.Scale(domain=["true class", "other"], range=["#2e9d5b", "#4b6cb7"]),
                        legend=None),
        tooltip=["class", alt.Tooltip("probability:Q", format=".1%")])
    text = base.mark_text(align="left", dx=3).encode(text=alt.Text("probability:Q", format=".1%"))
    return (bars + text).properties(height=30 * len(frame))


# ---------------------------------------------------------------- controls

def choose_runs(board: pd.DataFrame) -> list[str]:
    """Multiselect over completed runs; runs without weights are offered but flagged."""
    ids = board["id"].tolist()
    has_weights = {i: ev.weights_stamp(i) is not None for i in ids}
    labels = data.run_labels(ids)
    if "live.runs" not in st.session_state or not set(st.session_state["live.runs"]) <= set(ids):
        preferred = [i for i in state.selected_runs() if i in ids and has_weights[i]]
        st.session_state["live.runs"] = preferred or [i for i in ids if has_weights[i]][:2]
    return st.multiselect(
        "Runs", ids, key="live.runs",
        format_func=lambda i: labels.get(i, i) + ("" if has_weights[i] else " (no weights)"),
        help="Completed runs; the default is the comparison chosen on the Home page.")


def picked_test_image(run_ids: list[str], board: pd.DataFrame) -> tuple[list, dict]:
    """[(name, bytes)] of one test image picked from a run's predictions.csv, and {name: true label}."""
    sources = [i for i in run_ids + board["id"].tolist() if data.run_stages(i)]
    sources = list(dict.fromkeys(sources))
    if not sources:
        st.info("No run has evaluated test images yet; upload an image instead.")
        return [], {}
    labels = data.run_labels(sources)
    left, right = st.columns([1, 2])
    source = left.selectbox("Test images of", sources, key="live.test_run", format_func=lambda i: labels.get(i, i))
    stage = data.run_stages(source)[-1]
    preds = data.load_stage(source, stage).predictions
    if preds is None or preds.empty:
        st.warning(f"eval/{stage}/predictions.csv of run {source} is missing or empty; no test image to pick.")
        return [], {}
    rows = preds.reset_index(drop=True)
    if st.session_state.get("live.test_row") not in rows.index:  # another run's test split may be shorter
        st.session_state["live.test_row"] = 0
    row = right.selectbox("Test image", rows.index.tolist(), key="live.test_row",
                          format_func=lambda r: f"{ev.short_name(rows.at[r, 'path'])}  (true: {rows.at[r, 'label']})")
    path, label = str(rows.at[row, "path"]), str(rows.at[row, "label"])
    try:
        with open(path, "rb") as fh:
            payload = fh.read()
    except OSError as exc:
        st.error(f"Test image {path} cannot be read ({exc.strerror or exc}); was the dataset moved?")
        return [], {}
    name = ev.short_name(path)
    return [(name, payload)], {name: label}


def image_files(run_ids: list[str], board: pd.DataFrame) -> tuple[list, dict]:
    """The files of the chosen image source, and {name: true label} for a picked test image."""
    source = st.radio("Image source", ["Test image", "Upload", "Camera"], horizontal=True, key="live.source",
                      help="The camera is only asked for when you pick it.")
    if source == "Upload":
        limits = f"up to {ev.MAX_UPLOAD_BYTES // 2**20} MB and {ev.MAX_UPLOAD_PIXELS // 10**6} megapixels each"
        return st.file_uploader(f"Images (JPEG, PNG, WebP, BMP, GIF, TIFF; {limits})",
                                accept_multiple_files=True, key="live.uploads") or [], {}
    if source == "Camera":
        shot = st.camera_input("Take a photo", key="live.camera")
        return ([shot] if shot is not None else []), {}
    return picked_test_image(run_ids, board)


# ---------------------------------------------------------------- the page

def render() -> None:
    board = ev.completed_board()
    if board.empty:
        st.info("No completed run yet. Train one from the sidebar, or run `python -m poc demo` for a CNN and a ViT.")
        return
    run_ids = choose_runs(board)
    files, true_labels = image_files(run_ids, board)
    opacity = st.slider("Explanation opacity", 0.0, 1.0, 0.5, 0.05, key="live.opacity")
    images, errors = ev.read_uploads(files)
    for name, reason in errors:
        st.error(f"{name}: {reason}. This file was skipped.")
    if len(images) > MAX_IMAGES:
        st.warning(f"{len(images)} images uploaded; showing the first {MAX_IMAGES} to keep the page responsive.")
        images = images[:MAX_IMAGES]
    if not run_ids:
        st.info("Pick at least one run above.")
        return
    if not images and not errors:
        st.info("Upload an image, take a photo or pick a test image to see the predictions.")
    labels = data.run_labels(run_ids)
    # Models build in the serving process: the page shows now, each run's column fills in when its model is ready.
    if images and ev.loading_models(run_ids):
        st.session_state["live.drawn_by_page"] = True
        predictions_while_loading(images, run_ids, labels, true_labels, opacity)
    else:
        predictions(images, run_ids, labels, true_labels, opacity)


def show_prediction(run_id: str, label: str, upload: ev.Upload, true_label: str | None, opacity: float) -> None:
    st.markdown(f"**{label}**")
    if ev.weights_stamp(run_id) is None:
        st.error(f"Run {run_id} has no saved weights (model.weights.h5 is missing), so it cannot predict. "
                 "Re-run its training or pick another run.")
        return
    try:
        with st.spinner("Predicting..."):
            result = ev.predict_live(run_id, upload.image, upload.digest)
    except Exception as exc:  # noqa: BLE001 - UserError, a damaged weights file, an unknown model: all shown
        st.error(f"Run {run_id} could not predict: {exc}")
        return
    st.markdown(verdict_line(result, true_label))
    st.altair_chart(topk_chart(result.top, true_label), width="stretch")
    st.caption(latency_caption(result))
    shown = thumbnail(upload.image, DISPLAY_SIDE)
    if result.heatmap is None:
        st.image(shown, width=OVERLAY_WIDTH)
        st.info(f"No explanation: {result.note}.")
    else:
        h, w = result.heatmap.shape
        st.image(overlay(shown, result.heatmap, opacity), width=OVERLAY_WIDTH,
                 caption=f"{ev.METHOD_LABELS.get(result.method, result.method)} ({h}×{w} map)")
        if h * w == 1:
            st.caption(f"A 1×1 map carries no location: at {result.input_size} px input the last feature map "
                       "is a single cell. Train with a larger `--image-size` to see where the CNN looks.")


def predictions(images: list, run_ids: list[str], labels: dict, true_labels: dict, opacity: float) -> int:
    """Each image beside each run's prediction, or a note for a run whose model is still loading; returns how
    many runs are still loading."""
    loading = ev.loading_models(run_ids)
    for upload in images:
        st.subheader(upload.name)
        cols = st.columns([1] + [2] * len(run_ids))
        cols[0].image(thumbnail(upload.image, DISPLAY_SIDE), width="stretch",
                      caption=f"{upload.image.width}×{upload.image.height} px")
        for col, run_id in zip(cols[1:], run_ids):
            with col:
                if run_id in loading:
                    st.markdown(f"**{labels.get(run_id, run_id)}**")
                    st.caption(LOADING)
                else:
                    show_prediction(run_id, labels.get(run_id, run_id), upload, true_labels.get(upload.name),
                                    opacity)
    return len(loading)


@st.fragment(run_every=0.5)
def predictions_while_loading(images: list, run_ids: list[str], labels: dict, true_labels: dict,
                              opacity: float) -> None:
    """`predictions` while models load. Drawn by the page at once; then, in this fragment's own reruns, it
    waits (interruptibly: a click reruns the page at once) until one more model is ready and redraws, so each
    column fills in as soon as its model is ready without redrawing the page meanwhile. Once none is loading,
    one full rerun draws the page without this fragment."""
    if not st.session_state.pop("live.drawn_by_page", False):
        wait_for_one_more_model(run_ids)
    if predictions(images, run_ids, labels, true_labels, opacity) == 0:
        st.rerun()


def wait_for_one_more_model(run_ids: list[str], limit_s: float = 60) -> None:
    jobs = list(ev.loading_models(run_ids).values())
    box, deadline = st.empty(), time.monotonic() + limit_s
    while jobs and not any(job.done() for job in jobs) and time.monotonic() < deadline:
        box.caption("⏳")  # sending an element is where Streamlit stops this run when the user clicks
        time.sleep(0.2)
    box.empty()
