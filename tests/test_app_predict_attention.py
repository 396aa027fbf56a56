"""Live-predict and Attention-maps pages under Streamlit's AppTest, on the fixture runs; upload handling unit-tested.

AppTest cannot upload files, so the upload path is the pure `ui.explain_view.read_uploads`, tested directly.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed
from conftest import settled
from ui.explain_view import read_uploads

LIVE = "../pages/3_Live_predict.py"  # relative to this file, as AppTest resolves it
ATTENTION = "../pages/4_Attention_maps.py"


def _page(path: str, runs_root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs_root))
    return AppTest.from_file(path, default_timeout=120).run()


def _texts(at: AppTest) -> list[str]:
    return [e.value for kind in ("markdown", "caption", "subheader") for e in getattr(at, kind)]


def _image_captions(at: AppTest) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def _run_subset(fixture_runs, tmp_path: Path, keys: list[str]) -> Path:
    """A runs folder holding copies of some fixture runs (so a test may damage them)."""
    root = tmp_path / "runs"
    for key in keys:
        shutil.copytree(fixture_runs[key], root / fixture_runs[key].name)
    return root


# ---------------------------------------------------------------- read_uploads (the upload path)

def _png_bytes(mode="RGB", size=(20, 16), color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_read_uploads_rejects_corrupt_and_text_files_by_name_and_keeps_the_good_ones():
    good = _png_bytes()
    files = [("first.png", good), ("broken.png", good[: len(good) // 2]), ("notes.txt", b"not an image\n"),
             ("last.png", _png_bytes(color=(200, 0, 0)))]
    images, errors = read_uploads(files)
    assert [u.name for u in images] == ["first.png", "last.png"]
    assert [name for name, _ in errors] == ["broken.png", "notes.txt"]
    assert "corrupt" in errors[0][1] or "truncated" in errors[0][1]
    assert errors[1][1] == "not an image file"
    assert images[0].image.size == (20, 16) and images[0].image.mode == "RGB"


def test_read_uploads_rejects_files_over_the_size_limit_before_decoding():
    images, errors = read_uploads([("big.png", _png_bytes())], max_bytes=10)
    assert images == []
    assert errors[0][0] == "big.png" and errors[0][1].startswith("too large")


def test_read_uploads_rejects_images_over_the_pixel_limit():
    _, errors = read_uploads([("wide.png", _png_bytes(size=(200, 100)))], max_pixels=10_000)
    assert "too large" in errors[0][1] and "20,000" in errors[0][1]


def test_read_uploads_scales_16_bit_images_instead_of_whitening_them():
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12), 32768, np.uint16)).save(buf, format="PNG")  # mid-grey, mode I;16
    images, errors = read_uploads([("deep.png", buf.getvalue())])
    assert errors == []
    assert np.asarray(images[0].image).max() == 128


def test_read_uploads_accepts_uploaded_file_objects_and_tells_identical_bytes_apart_by_digest():
    class Uploaded:  # what st.file_uploader returns: .name and .getvalue()
        def __init__(self, name, payload):
            self.name, self._payload = name, payload

        def getvalue(self):
            return self._payload

    png = _png_bytes()
    images, _ = read_uploads([Uploaded("a.png", png), Uploaded("b.png", png), Uploaded("c.png", _png_bytes(color=0))])
    assert images[0].digest == images[1].digest != images[2].digest


# ---------------------------------------------------------------- live predict page

def test_live_predict_shows_the_page_before_the_models_and_predicts_when_they_are_ready(fixture_runs, monkeypatch):
    import threading
    from concurrent.futures import Future

    import streamlit as st

    from ui.live_predict_serving import ModelServer

    st.cache_resource.clear()  # a new serving process: no model built by an earlier test
    release, build, held = threading.Event(), ModelServer.build, {}

    def held_build(server, key, warm=True):  # the serving process answers only once the test lets it
        if key not in held:
            held[key] = job = Future()

            def answer():
                release.wait(120)
                try:
                    job.set_result(build(server, key, warm).result())
                except Exception as exc:  # noqa: BLE001 - handed to the page as the build's own error
                    job.set_exception(exc)

            threading.Thread(target=answer, daemon=True).start()
        return held[key]

    monkeypatch.setattr(ModelServer, "build", held_build)
    at = _page(LIVE, fixture_runs["cnn"].parent, monkeypatch)
    assert not at.exception
    assert_no_section_failed(at)
    loading = [c.value for c in at.caption if "Loading this run's model" in c.value]
    assert len(loading) == 2 and not any(t.startswith("Top-1:") for t in _texts(at))  # both runs wait
    assert at.subheader and at.selectbox(key="live.test_row")  # the image and the controls are already there
    release.set()
    at = settled(at)
    assert not at.exception and not at.error
    assert_no_section_failed(at)
    assert sum(t.startswith("Top-1:") for t in _texts(at)) == 2
    at.run()  # every model loaded: latencies measured without a build beside them
    latency = [t for t in _texts(at) if t.startswith("Inference latency")]
    assert len(latency) == 2 and not any("Measured while another run's model was loading" in t for t in latency)


def test_rendering_live_predict_leaves_keras_clear_session_as_keras_defines_it(fixture_runs, monkeypatch):
    import keras
    from keras.src.backend.common import global_state

    at = settled(_page(LIVE, fixture_runs["cnn"].parent, monkeypatch))
    assert not at.exception and sum(t.startswith("Top-1:") for t in _texts(at)) == 2
    assert_no_section_failed(at)
    assert keras.backend.clear_session is global_state.clear_session is keras.utils.clear_session
    assert keras.backend.clear_session.__module__ == "keras.src.backend.common.global_state"


def test_live_predict_says_what_it_measured_and_whether_the_model_was_right():
    from ui.explain_view import LivePrediction
    from ui.live_predict import latency_caption, verdict_line

    result = LivePrediction([("cat", 0.91), ("dog", 0.09)], latency_ms=12.34)
    assert verdict_line(result, None) == "Top-1: **cat** (91.0%)"
    assert verdict_line(result, "cat") == "Top-1: **cat** (91.0%) ✓"
    assert verdict_line(result, "dog") == "Top-1: **cat** (91.0%) ✗ (true: dog)"
    assert latency_caption(result).startswith("Inference latency: 12.3 ms per image")
    assert "Measured while another run's model was loading" not in latency_caption(result)
    result.contended = True
    assert "Measured while another run's model was loading" in latency_caption(result)


def test_a_run_is_marked_only_against_a_class_it_was_trained_on():
    from ui.explain_view import LivePrediction
    from ui.live_predict import unknown_label_note, verdict_line

    result = LivePrediction([("cat", 0.91), ("dog", 0.09)], latency_ms=1.0, class_names=["cat", "dog"])
    assert verdict_line(result, "dog") == "Top-1: **cat** (91.0%) ✗ (true: dog)"
    assert verdict_line(result, "animal") == "Top-1: **cat** (91.0%)"  # neither ✓ nor ✗
    assert unknown_label_note(["cat", "dog"], "animal") == (
        "This run was not trained on class **animal**, so its prediction is neither right nor wrong.")
    assert unknown_label_note(["cat", "dog"], "dog") is None and unknown_label_note(["cat"], None) is None


def test_class_lists_are_shown_only_when_the_chosen_runs_differ():
    from ui.live_predict import class_list_caption, differing_class_sets

    assert not differing_class_sets({"a": ["cat", "dog"], "b": ["dog", "cat"], "c": None})
    assert differing_class_sets({"a": ["cat", "dog"], "b": ["animal", "plant"]})
    assert class_list_caption(["animal", "plant"]) == "Trained on 2 classes: animal, plant"
    assert class_list_caption([f"c{i}" for i in range(14)], limit=3) == "Trained on 14 classes: c0, c1, c2, … 11 more"


def test_the_first_selection_is_the_users_then_homes_pair_then_one_test_set():
    from ui.live_predict import default_runs

    ids = ["new-b", "vit-a", "cnn-a", "old-b"]  # newest first
    weights = {"new-b": True, "vit-a": True, "cnn-a": True, "old-b": True}
    sets = {"new-b": "B", "vit-a": "A", "cnn-a": "A", "old-b": "B"}
    assert default_runs(ids, weights, ["vit-a", "new-b"], ["cnn-a", "vit-a"], sets) == ["vit-a", "new-b"]
    assert default_runs(ids, weights, None, ["cnn-a", "vit-a"], sets) == ["cnn-a", "vit-a"]
    assert default_runs(ids, {**weights, "cnn-a": False}, None, ["cnn-a", "vit-a"], sets) == ["vit-a"]
    # No pair to compare (no validation metrics): the newest run and one more of ITS test set, never another's.
    assert default_runs(ids, weights, None, [], sets) == ["new-b", "old-b"]
    assert default_runs(ids, {**weights, "old-b": False}, None, [], sets) == ["new-b"]


OTHER_RUN = "20250101-160000-mobilenet-v2-0th3"  # newer than every fixture run


def _other_classes_run(fixture_runs, root: Path) -> list[str]:
    """A copy of the fixture CNN as a run of another dataset: the same weights, its 10 classes renamed
    ("bird" -> "x-bird"...), another test set, finished last; returns its class names."""
    rd = root / OTHER_RUN
    shutil.copytree(fixture_runs["cnn"], rd)
    info = json.loads((rd / "run.json").read_text())
    rename = {c: f"x-{c}" for c in info["class_names"]}
    info.update(id=OTHER_RUN, name="other dataset CNN", class_names=[rename[c] for c in info["class_names"]],
                created="2025-01-01T16:00:00+00:00", finished="2025-01-01T16:20:00+00:00")
    info["dataset"].update(path="/data/other", split_fingerprint="b" * 64, test_fingerprint="b" * 64)
    (rd / "run.json").write_text(json.dumps(info))
    for csv in [rd / "split.csv", *rd.glob("eval/*/predictions.csv")]:
        frame = pd.read_csv(csv)
        frame = frame.rename(columns={f"prob_{c}": f"prob_{n}" for c, n in rename.items()})
        for column in ("label", "pred"):
            if column in frame:
                frame[column] = frame[column].map(rename)
        frame.to_csv(csv, index=False)
    return info["class_names"]


def test_live_predict_defaults_to_one_test_set_and_marks_only_known_classes(fixture_runs, tmp_path, monkeypatch):
    root = _run_subset(fixture_runs, tmp_path, ["cnn", "vit"])
    other_classes = _other_classes_run(fixture_runs, root)
    at = settled(_page(LIVE, root, monkeypatch))
    assert not at.exception and not at.error
    # Home compares the test set of the most recent completed run: the other dataset's, with its CNN alone (the
    # most recent CNN and the most recent ViT would pair two datasets).
    assert at.multiselect(key="live.runs").value == [OTHER_RUN]
    assert at.selectbox(key="live.test_run").value == OTHER_RUN
    top1 = [t for t in _texts(at) if t.startswith("Top-1:")]
    assert len(top1) == 1 and top1[0].endswith(("✓", ")")) and ("✓" in top1[0] or "✗ (true: x-" in top1[0])

    vit = fixture_runs["vit"].name
    at = settled(at.multiselect(key="live.runs").set_value([OTHER_RUN, vit]).run())
    assert not at.exception and not at.error
    texts = _texts(at)
    label = at.selectbox(key="live.test_row").format_func(at.selectbox(key="live.test_row").value)
    true_label = label.rsplit("(true: ", 1)[1].rstrip(")")
    assert true_label in other_classes
    assert any("trained on different class sets" in i.value for i in at.info)
    assert f"Trained on 10 classes: {', '.join(other_classes)}" in texts
    vit_classes = json.loads((fixture_runs["vit"] / "run.json").read_text())["class_names"]
    assert f"Trained on 10 classes: {', '.join(vit_classes)}" in texts
    assert [t for t in texts if t.startswith("This run was not trained on class")] == [
        f"This run was not trained on class **{true_label}**, so its prediction is neither right nor wrong."]
    top1 = [t for t in texts if t.startswith("Top-1:")]
    assert len(top1) == 2 and not any(mark in top1[1] for mark in ("✓", "✗"))  # the ViT: never marked
    assert any(mark in top1[0] for mark in ("✓", "✗"))  # the run that knows the class is

    # A test image of the ViT's own split: now the other dataset's CNN is the one that cannot be marked.
    at = settled(at.selectbox(key="live.test_run").set_value(vit).run())
    top1 = [t for t in _texts(at) if t.startswith("Top-1:")]
    assert not any(mark in top1[0] for mark in ("✓", "✗")) and any(mark in top1[1] for mark in ("✓", "✗"))


def test_live_predict_shows_both_runs_predictions_for_a_picked_test_image(fixture_runs, monkeypatch):
    at = settled(_page(LIVE, fixture_runs["cnn"].parent, monkeypatch))
    assert not at.exception
    assert_no_section_failed(at)
    at.selectbox(key="live.test_run").set_value(fixture_runs["vit"].name)
    settled(at.selectbox(key="live.test_row").set_value(3).run())
    assert not at.exception and not at.error
    assert_no_section_failed(at)

    preds = pd.read_csv(fixture_runs["vit"] / "eval" / "ft" / "predictions.csv")
    picked = Path(preds.at[3, "path"])
    assert at.subheader[0].value == f"{picked.parent.name}/{picked.name}"
    texts = _texts(at)
    assert any("mobilenet_v2 fixture" in t for t in texts) and any("vit_ti16 fixture" in t for t in texts)
    top1 = [t for t in texts if t.startswith("Top-1:")]
    assert len(top1) == 2
    assert f"**{preds.at[3, 'pred']}**" in top1[1]  # the live ViT agrees with its own stored prediction
    latency = [t for t in texts if "Inference latency" in t]
    assert len(latency) == 2 and all("one compiled call after the model's warm-up" in t for t in latency)
    captions = _image_captions(at)
    # mobilenet_v2's last feature map is 1 x 1 at 32 px: Grad-CAM reads the last block with a 4 x 4 grid, named
    assert "Grad-CAM on block_5_add (4×4 map)" in captions
    assert "attention rollout (2×2 map)" in captions


def test_live_predict_says_when_a_run_has_no_weights(fixture_runs, monkeypatch):
    at = settled(_page(LIVE, fixture_runs["cnn"].parent, monkeypatch))
    settled(at.multiselect(key="live.runs").set_value([fixture_runs["cnn"].name,
                                                      fixture_runs["many_classes"].name]).run())
    assert not at.exception
    assert_no_section_failed(at)
    assert [e.value for e in at.error] == [
        f"Run {fixture_runs['many_classes'].name} has no saved weights (model.weights.h5 is missing), so it "
        "cannot predict. Re-run its training or pick another run."]
    assert sum(t.startswith("Top-1:") for t in _texts(at)) == 1


# ---------------------------------------------------------------- attention maps page

def test_attention_page_shows_the_grid_mean_map_and_cnn_beside_it(fixture_runs, monkeypatch):
    at = settled(_page(ATTENTION, fixture_runs["cnn"].parent, monkeypatch))  # per-layer maps once the model is built
    assert not at.exception and not at.error and not at.warning
    assert_no_section_failed(at)
    assert at.selectbox(key="attn.run").value == fixture_runs["vit"].name
    assert at.selectbox(key="attn.stage." + fixture_runs["vit"].name).value == "ft"
    subheaders = [s.value for s in at.subheader]
    assert subheaders[:2] == ["Mean map · all classes", "Test images · 12 of 20"]
    captions = _image_captions(at)
    assert "ViT mean attention rollout · all classes · 20 images" in captions
    assert "CNN mean Grad-CAM on block_5_add (4×4 map) · all classes · 20 images" in captions
    grid = [c for c in captions if " · ViT: " in c]
    assert len(grid) == 12 and all(" · CNN: " in c for c in grid)
    assert sum(c.startswith("layer 12, head") for c in captions) == 3  # vit_ti16: 12 blocks x 3 heads


def test_attention_page_filters_by_class_and_outcome(fixture_runs, monkeypatch):
    preds = pd.read_csv(fixture_runs["vit"] / "eval" / "ft" / "predictions.csv")
    wrong = preds[preds["label"] != preds["pred"]]
    assert not wrong.empty and len(wrong) < len(preds)  # the fixture has both outcomes
    label = wrong["label"].iloc[0]
    n_wrong = int((wrong["label"] == label).sum())
    all_right = sorted(set(preds["label"]) - set(wrong["label"]))

    at = _page(ATTENTION, fixture_runs["cnn"].parent, monkeypatch)
    at.selectbox(key="attn.class").set_value(label)
    at.radio(key="attn.outcome").set_value("incorrect").run()
    assert not at.exception
    assert_no_section_failed(at)
    assert at.subheader[0].value == f"Mean map · class {label}, incorrect only"
    assert f"ViT mean attention rollout · class {label}, incorrect only · {n_wrong} images" in _image_captions(at)
    if all_right:
        at.selectbox(key="attn.class").set_value(all_right[0]).run()
        assert not at.exception
        assert_no_section_failed(at)
        assert any(f"No incorrect test image of class {all_right[0]}" in i.value for i in at.info)


def test_attention_page_explains_a_run_without_stored_maps(fixture_runs, tmp_path, monkeypatch):
    root = _run_subset(fixture_runs, tmp_path, ["vit"])
    for npz in root.glob("*/eval/*/explanations.npz"):
        npz.unlink()
    at = _page(ATTENTION, root, monkeypatch)
    assert not at.exception
    assert_no_section_failed(at)
    assert any("explanations.npz is missing" in i.value and "python -m poc evaluate" in i.value for i in at.info)
    assert not any(s.value.startswith("Mean map") for s in at.subheader)


def test_attention_page_without_a_vit_run_suggests_training_one(fixture_runs, tmp_path, monkeypatch):
    root = _run_subset(fixture_runs, tmp_path, ["cnn"])
    hub = root / "20250102-000000-hub-x"  # a TF-Hub run: no attention to show, named as such
    hub.mkdir()
    (hub / "run.json").write_text(json.dumps({"id": hub.name, "status": "completed", "model": "hub:/nowhere",
                                              "family": "hub", "class_names": ["a", "b"]}))
    at = _page(ATTENTION, root, monkeypatch)
    assert not at.exception
    assert_no_section_failed(at)
    infos = [i.value for i in at.info]
    assert any("No ViT run yet" in i and "python -m poc train" in i and "vit_ti16" in i for i in infos)
    assert any("TF-Hub" in i for i in infos)


def test_pages_render_with_no_runs_at_all(tmp_path, monkeypatch):
    for page in (LIVE, ATTENTION):
        at = _page(page, tmp_path / "empty", monkeypatch)
        assert not at.exception
        assert_no_section_failed(at)
        assert at.info, page
