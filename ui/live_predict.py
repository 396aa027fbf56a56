"""The Live-predict page: one image (a test image, an upload or a photo) through each chosen run, side by side:
top-k, explanation overlay and latency. `render()` draws the page below its title.

The models build in the model-serving process (ui.data.model_job): the page shows at once, and each run's
column fills in when its model is ready (`predictions_while_loading`, a fragment that waits for the next model
and redraws). Pure, for tests: `verdict_line`, `knows`, `unknown_label_note`, `class_list_caption`,
`differing_class_sets`, `default_runs` (the first selection: the pair Home compares, one test set) and
`latency_caption`. Runs trained on different class sets are each shown with their class list, and a run is marked
✓/✗ only against a class it was trained on.
"""

from __future__ import annotations

import time

import altair as alt
import pandas as pd
import streamlit as st

from poc.runs.store import STAGES
from ui import data, state
from ui import explain_view as ev
from ui.chart_cache import chart_spec
from ui.overlay import overlay, thumbnail

MAX_IMAGES = 6  # per rerun: each image costs one forward + one explanation per run
DISPLAY_SIDE = 256  # px, longer side of the image the overlay is drawn on
OVERLAY_WIDTH = 320  # px on screen (narrower columns shrink it)
LOADING = ("⏳ Loading this run's model: the first use since the dashboard started loads TensorFlow and builds it "
           "(seconds); its prediction appears here when it is ready.")


# ---------------------------------------------------------------- what is said about a prediction (pure)

def verdict_line(result: ev.LivePrediction, true_label: str | None) -> str:
    """"Top-1: **cat** (91.0%)", with ✓ or ✗ (true: ...) when the true class is known and is one of the run's
    classes: a run is never marked against a label it was not trained on (see unknown_label_note)."""
    name, prob = result.top[0]
    judged = true_label is not None and knows(result.class_names, true_label)
    verdict = "" if not judged else (" ✓" if name == true_label else f" ✗ (true: {true_label})")
    return f"Top-1: **{name}** ({prob:.1%}){verdict}"


def knows(class_names: list[str] | None, label: str) -> bool:
    """Whether a run trained on `class_names` can be judged against `label` (unknown class list: assume so)."""
    return not class_names or label in class_names


def unknown_label_note(class_names: list[str] | None, true_label: str | None) -> str | None:
    """The one line shown instead of ✓/✗ when the image's true class is not one of the run's classes."""
    if true_label is None or knows(class_names, true_label):
        return None
    return f"This run was not trained on class **{true_label}**, so its prediction is neither right nor wrong."


def class_list_caption(class_names: list[str], limit: int = 12) -> str:
    """"Trained on 3 classes: animal, machine, plant" (the first `limit` named, then how many more)."""
    shown = ", ".join(class_names[:limit]) + (f", … {len(class_names) - limit} more" if len(class_names) > limit
                                              else "")
    return f"Trained on {len(class_names)} class{'es' if len(class_names) != 1 else ''}: {shown}"


def differing_class_sets(classes: dict[str, list[str] | None]) -> bool:
    """Whether the chosen runs (run id -> class names, None when unknown) were trained on different class sets."""
    return len({tuple(sorted(c)) for c in classes.values() if c}) > 1


def default_runs(ids: list[str], has_weights: dict[str, bool], chosen: list[str] | None,
                 compared: list[str], test_sets: dict[str, str | None]) -> list[str]:
    """Live predict's first selection, among the completed runs `ids` (newest first) that have weights: the
    runs picked on Home when the user picked some (`chosen`); else the runs Home's verdict compares (`compared`:
    the best CNN and ViT of one test set); else the newest run with weights and at most one more run of its test
    set (`test_sets`: id -> test fingerprint). Never two datasets unless the user picked them."""
    usable = [i for i in ids if has_weights.get(i)]
    for preferred in (chosen, compared):
        picks = [i for i in preferred or [] if i in usable]
        if picks:
            return picks
    if not usable:
        return []
    first = usable[0]
    return [first, *[i for i in usable[1:] if test_sets.get(i) is not None
                     and test_sets.get(i) == test_sets.get(first)][:1]]


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
    """Multiselect over completed runs; runs without weights are offered but flagged. The default: default_runs."""
    ids = board["id"].tolist()
    has_weights = data.have_weights(ids)
    labels = data.run_labels(ids)
    if "live.runs" not in st.session_state or not set(st.session_state["live.runs"]) <= set(ids):
        everything = data.load_leaderboard()
        st.session_state["live.runs"] = default_runs(
            ids, has_weights, state.chosen_runs(), state.compared_pair(everything),
            dict(zip(board["id"], board["test_fingerprint"])))
    return st.multiselect(
        "Runs", ids, key="live.runs",
        format_func=lambda i: labels.get(i, i) + ("" if has_weights[i] else " (no weights)"),
        help="Completed runs; the default is the pair Home compares (the best CNN and ViT of the test set chosen "
             "in its \"Compare the runs of\"), or the runs picked on Home.")


def run_classes(run_ids: list[str]) -> dict[str, list[str] | None]:
    """run id -> the class names its run.json lists (None when unreadable)."""
    out = {}
    for run_id in run_ids:
        record = data.load_run(run_id)
        names = (record.info or {}).get("class_names") if record is not None else None
        out[run_id] = [str(c) for c in names] if isinstance(names, list) else None
    return out


def picked_test_image(run_ids: list[str], board: pd.DataFrame) -> tuple[list, dict]:
    """[(name, bytes)] of one test image picked from a run's predictions.csv, and {name: true label}."""
    evaluated = board.loc[board[[f"acc_{s}" for s in STAGES]].notna().any(axis=1), "id"].tolist()  # the index
    sources = list(dict.fromkeys([i for i in run_ids if i in evaluated] + evaluated))
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
    classes = run_classes(run_ids)
    if differing_class_sets(classes):
        st.info("These runs were trained on different class sets: each is shown with its own class list, and "
                "marked ✓/✗ only against a class it knows.")
    else:
        classes = {}  # one class set: no list under each run
    # Models build in the serving process: the page shows now, each run's column fills in when its model is ready.
    if images and ev.loading_models(run_ids):
        st.session_state["live.drawn_by_page"] = True
        predictions_while_loading(images, run_ids, labels, true_labels, opacity, classes)
    else:
        predictions(images, run_ids, labels, true_labels, opacity, classes)


def run_header(label: str, class_names: list[str] | None, true_label: str | None) -> None:
    """The run's label; its class list when the chosen runs differ (`class_names` given); the note when the
    image's true class is not one of the run's."""
    st.markdown(f"**{label}**")
    if class_names:
        st.caption(class_list_caption(class_names))
    note = unknown_label_note(class_names, true_label)
    if note:
        st.caption(note)


def show_prediction(run_id: str, upload: ev.Upload, true_label: str | None, opacity: float,
                    class_names: list[str] | None = None) -> None:
    """One run's prediction of one image (its header is run_header's): top-1 with ✓/✗ when the run knows the true
    class, top-k, latency and the explanation overlay named by its method, layer and grid."""
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
    if not class_names:  # one class set: the header said nothing about the true class
        note = unknown_label_note(result.class_names, true_label)
        if note:
            st.caption(note)
    st.markdown(verdict_line(result, true_label))
    known_label = true_label if knows(result.class_names, true_label or "") else None
    st.vega_lite_chart(spec=chart_spec(topk_chart, result.top, known_label), width="stretch")
    st.caption(latency_caption(result))
    shown = thumbnail(upload.image, DISPLAY_SIDE)
    if result.heatmap is None:
        st.image(shown, width=OVERLAY_WIDTH)
        st.info(f"No explanation: {result.note}.")
    else:
        h, w = result.heatmap.shape
        st.image(overlay(shown, result.heatmap, opacity), width=OVERLAY_WIDTH,
                 caption=ev.method_caption(result.method, result.layer, (h, w)))
        if h * w == 1:
            st.caption(f"A 1×1 map carries no location: at {result.input_size} px input the feature map is a "
                       "single cell. Train with a larger `--image-size` to see where the CNN looks.")


def predictions(images: list, run_ids: list[str], labels: dict, true_labels: dict, opacity: float,
                classes: dict | None = None) -> int:
    """Each image beside each run's prediction, or a note for a run whose model is still loading; returns how
    many runs are still loading. `classes`: run id -> class names, given when the runs' class sets differ."""
    loading = ev.loading_models(run_ids)
    classes = classes or {}
    for upload in images:
        st.subheader(upload.name)
        cols = st.columns([1] + [2] * len(run_ids))
        cols[0].image(thumbnail(upload.image, DISPLAY_SIDE), width="stretch",
                      caption=f"{upload.image.width}×{upload.image.height} px")
        for col, run_id in zip(cols[1:], run_ids):
            with col:
                true_label = true_labels.get(upload.name)
                run_header(labels.get(run_id, run_id), classes.get(run_id), true_label)
                if run_id in loading:
                    st.caption(LOADING)
                else:
                    show_prediction(run_id, upload, true_label, opacity, classes.get(run_id))
    return len(loading)


@st.fragment(run_every=0.5)
def predictions_while_loading(images: list, run_ids: list[str], labels: dict, true_labels: dict,
                              opacity: float, classes: dict | None = None) -> None:
    """`predictions` while models load. Drawn by the page at once; then, in this fragment's own reruns, it
    waits (interruptibly: a click reruns the page at once) until one more model is ready and redraws, so each
    column fills in as soon as its model is ready without redrawing the page meanwhile. Once none is loading,
    one full rerun draws the page without this fragment."""
    if not st.session_state.pop("live.drawn_by_page", False):
        wait_for_one_more_model(run_ids)
    if predictions(images, run_ids, labels, true_labels, opacity, classes) == 0:
        st.rerun()


def wait_for_one_more_model(run_ids: list[str], limit_s: float = 60) -> None:
    jobs = list(ev.loading_models(run_ids).values())
    box, deadline = st.empty(), time.monotonic() + limit_s
    while jobs and not any(job.done() for job in jobs) and time.monotonic() < deadline:
        box.caption("⏳")  # sending an element is where Streamlit stops this run when the user clicks
        time.sleep(0.2)
    box.empty()
