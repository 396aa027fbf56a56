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
    assert any(c.startswith("Grad-CAM") for c in captions)
    assert any(c.startswith("attention rollout (2×2 map)") for c in captions)


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
    at = _page(ATTENTION, fixture_runs["cnn"].parent, monkeypatch)
    assert not at.exception and not at.error and not at.warning
    assert_no_section_failed(at)
    assert at.selectbox(key="attn.run").value == fixture_runs["vit"].name
    assert at.selectbox(key="attn.stage." + fixture_runs["vit"].name).value == "ft"
    subheaders = [s.value for s in at.subheader]
    assert subheaders[:2] == ["Mean map · all classes", "Test images · 12 of 20"]
    captions = _image_captions(at)
    assert "ViT mean attention rollout · all classes · 20 images" in captions
    assert "CNN mean Grad-CAM · all classes · 20 images" in captions
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
