"""poc.inference: one image through a run. The compiled call agrees with the eager model, files come back in
input order with refused ones in place, and the upload rules are the same for the page and the CLI."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from cli import call_cli
from PIL import Image

from poc import inference
from poc.runs.store import RunDir
from poc.inference import ImageRejected, open_image

SIZE = 32
CLASSES = ["ant", "bee", "cat"]


def _write_run(root: Path, model_name: str) -> RunDir:
    """A completed run directory with real (random-init) weights: run.json as training writes its core."""
    from poc.models import build

    rd = RunDir(root / f"run-{model_name}")
    rd.path.mkdir(parents=True)
    model = build(model_name, len(CLASSES), SIZE, "none")
    model.save_weights(rd.weights)
    rd.write_run({"id": rd.id, "status": "completed", "model": model_name, "class_names": CLASSES,
                  "image_size": SIZE, "config": {"dropout": 0.2}})
    return rd


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> inference.LoadedRun:
    return inference.load_model(_write_run(tmp_path_factory.mktemp("runs"), "mobilenet_v2"))


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> inference.LoadedRun:
    return inference.load_model(_write_run(tmp_path_factory.mktemp("runs"), "vit_ti16"))


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _noisy(path: Path, size=(40, 30), seed=0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)).save(path)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels with no image data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- the compiled predict function

def test_compiled_predictions_equal_the_eager_models(cnn, vit):
    pixels = _pixels(5)
    for run in (cnn, vit):
        eager = np.asarray(run.model(pixels, training=False))
        probs, seconds = inference.predict_arrays(run, pixels, batch_size=2)  # 3 bounded calls: 2 + 2 + 1
        assert probs.shape == (5, len(CLASSES)) and seconds > 0
        np.testing.assert_allclose(probs, eager, rtol=1e-4, atol=1e-5)


def test_the_compiled_call_is_traced_once_for_every_batch_size(cnn):
    inference.warm_up(cnn)
    for n in (1, 3, 7):
        inference.predict_arrays(cnn, _pixels(n))
    assert cnn.predict.experimental_get_tracing_count() == 1


def test_predict_arrays_of_no_image_is_empty(cnn):
    probs, seconds = inference.predict_arrays(cnn, np.zeros((0, SIZE, SIZE, 3), np.float32))
    assert probs.shape == (0, len(CLASSES)) and seconds == 0.0


# ---------------------------------------------------------------- files through a run

def test_predict_files_keeps_input_order_with_rejected_files_in_place(cnn, tmp_path):
    good = [_noisy(tmp_path / f"good{i}.png", seed=i) for i in range(5)]
    (tmp_path / "notes.png").write_text("not a picture")
    paths = [good[0], tmp_path / "notes.png", good[1], good[2], tmp_path / "missing.jpg", good[3], good[4]]
    results = inference.predict_files(cnn, paths, batch_size=2, k=2)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    assert [("error" in r) for r in results] == [False, True, False, False, True, False, False]
    assert results[1]["error"] == "not an image file" and "no such file" in results[4]["error"]
    expected, _ = inference.predict_arrays(cnn, np.stack([np.asarray(Image.open(p).resize((SIZE, SIZE),
                                                          Image.Resampling.BILINEAR)) for p in good]))
    ranked = [r["top_k"] for r in results if "top_k" in r]
    for row, probs in zip(ranked, expected):
        assert len(row) == 2 and row[0]["class"] == CLASSES[int(np.argmax(probs))]
        assert row[0]["probability"] == pytest.approx(float(probs.max()), rel=1e-4)


def test_predict_command_answers_in_input_order_and_exits_2_on_a_refused_file(cnn, tmp_path, capsys, monkeypatch):
    good = _noisy(tmp_path / "good.png")
    bomb = _png_header_only(tmp_path / "bomb.png", 30_000, 30_000)
    (tmp_path / "notes.png").write_text("not a picture")
    result = call_cli(capsys, monkeypatch, "predict", cnn.rd.path, bomb, good, tmp_path / "notes.png", "--json",
                      "--top-k", "2")
    assert result.returncode == 2, result.stderr
    answers = json.loads(result.stdout)
    assert [a["image"] for a in answers] == [str(bomb), str(good), str(tmp_path / "notes.png")]
    assert answers[0]["error"].startswith("too large") and answers[2]["error"] == "not an image file"
    assert answers[1]["top_k"] == inference.predict_files(cnn, [good], k=2)[0]["top_k"]


def test_predict_command_with_explain_records_the_grad_cam_layer_and_its_map(cnn, tmp_path, capsys, monkeypatch):
    good = _noisy(tmp_path / "good.png")
    result = call_cli(capsys, monkeypatch, "predict", cnn.rd.path, good, "--json", "--explain")
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    explanation = answer["explanation"]
    maps, method, _, layer = inference.explain(cnn, inference.resize_pixels(open_image(good), SIZE)[None])
    assert (explanation["method"], explanation["layer"]) == ("gradcam", layer)
    assert explanation["grid"] == list(maps.shape[1:]) == list(
        cnn.model.get_layer("backbone").get_layer(layer).output.shape[1:3])  # the layer's native grid
    np.testing.assert_allclose(explanation["map"], maps[0], atol=1e-4)
    text = call_cli(capsys, monkeypatch, "predict", cnn.rd.path, good, "--explain")
    assert f"  explanation: gradcam on {layer} ({maps.shape[1]}x{maps.shape[2]} map)" in text.stdout.splitlines()


def test_predict_command_refuses_files_over_the_upload_limit(cnn, tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(_noisy(tmp_path / "small.png").read_bytes() + b"\0" * (inference.MAX_UPLOAD_BYTES + 1))
    result = call_cli(capsys, monkeypatch, "predict", cnn.rd.path, big)
    assert result.returncode == 2
    assert result.stdout.startswith(f"{big}: rejected (too large (20.0 MB; limit 20 MB))")


# ---------------------------------------------------------------- the upload rules

def test_an_upload_gets_exactly_the_pixels_training_gives_the_same_file(tmp_path):
    from poc.data.images import load_array

    path = _noisy(tmp_path / "photo.png", (50, 37))
    uploaded = inference.resize_pixels(open_image(path.read_bytes()), SIZE)
    np.testing.assert_array_equal(uploaded, load_array(path, SIZE))


def _sixteen_bit_png(path: Path) -> None:
    Image.fromarray(np.full((12, 12), 32768, np.uint16)).save(path)  # mid-grey, mode I;16


def _cmyk_jpeg(path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # magenta + yellow ink = red


def _animated_gif(path: Path) -> None:
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)


@pytest.mark.parametrize("name, write, expected", [
    ("deep.png", _sixteen_bit_png, (128, 128, 128)),  # scaled to 8 bits, not clipped to white
    ("print.jpg", _cmyk_jpeg, (255, 0, 0)),
    ("anim.gif", _animated_gif, (255, 0, 0)),  # the first frame
], ids=["16-bit", "cmyk", "animated-gif"])
def test_16_bit_cmyk_and_animated_uploads_become_8_bit_rgb(tmp_path, name, write, expected):
    write(tmp_path / name)
    for source in (tmp_path / name, (tmp_path / name).read_bytes()):  # a CLI path and a page upload
        image = open_image(source)
        assert image.mode == "RGB"
        assert np.abs(np.asarray(image, int)[4, 4] - expected).max() <= 20


@pytest.mark.parametrize("kind, reason", [
    ("text", "not an image file"),
    ("truncated", "truncated or corrupt image"),
    ("bomb", "too large"),
    ("oversize", "too large"),
    ("empty", "empty file"),
])
def test_unusable_files_are_refused_with_their_reason(tmp_path, kind, reason):
    path = tmp_path / f"{kind}.png"
    if kind == "text":
        path.write_text("not really a picture")
    elif kind == "truncated":
        data = _noisy(tmp_path / "full.png", (64, 64)).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bomb":
        _png_header_only(path, 20_000, 20_000)  # 400 megapixels claimed in a few bytes
    elif kind == "oversize":
        _noisy(path)
    else:
        path.write_bytes(b"")
    limit = 100 if kind == "oversize" else inference.MAX_UPLOAD_BYTES
    with pytest.raises(ImageRejected) as info:
        open_image(path, max_bytes=limit)
    assert info.value.reason.startswith(reason)
    with pytest.raises(ImageRejected):  # bytes, as an upload arrives, get the same verdict
        open_image(path.read_bytes(), max_bytes=limit)


def test_a_bomb_is_refused_from_its_header_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    bomb = _png_header_only(tmp_path / "bomb.png", 9_000, 9_000)  # 81 megapixels: over the 80 MP limit

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(ImageRejected) as info:
        open_image(bomb)
    assert info.value.reason.startswith("too large") and "80,000,000" in info.value.reason


def test_an_oversize_stream_is_read_no_further_than_the_limit():
    class Stream:
        read_sizes: list = []

        def read(self, n=-1):
            self.read_sizes.append(n)
            return b"\0" * (n if n >= 0 else 10_000)
    with pytest.raises(ImageRejected, match="over the 1000 bytes limit"):
        open_image(Stream(), max_bytes=1000)
    assert Stream.read_sizes == [1001]


# ---------------------------------------------------------------- explanations through inference

def test_explain_gives_rollout_for_a_vit_equal_to_all_layers_at_once(vit):
    from poc.explain.rollout import attention_rollout
    from poc.models.vit import attention_model

    pixels = _pixels(3, seed=1)
    maps, method, note, layer = inference.explain(vit, pixels)
    assert method == "attention_rollout" and note is None and layer is None
    assert maps.shape == (3, 2, 2)  # 32 px / patch 16
    outputs = attention_model(vit.model.get_layer("backbone"))(vit.model.get_layer("preprocess")(pixels))
    attentions = [np.asarray(a, np.float64) for a in outputs[1:]]  # every layer at once, float64
    np.testing.assert_allclose(maps, attention_rollout(attentions), rtol=1e-4, atol=1e-5)
    layers = inference.layer_attention(vit, pixels)
    class_rows = np.stack([a[:, :, 0, 1:].reshape(*a.shape[:2], 2, 2) for a in attentions], axis=1)  # (B, L, H, g, g)
    np.testing.assert_allclose(layers, class_rows, rtol=1e-4, atol=1e-6)


def test_explain_gives_gradcam_for_a_cnn(cnn):
    maps, method, note, layer = inference.explain(cnn, _pixels(2))
    assert method == "gradcam" and note is None and maps.shape[0] == 2
    assert maps.shape[1:] == tuple(cnn.model.get_layer("backbone").get_layer(layer).output.shape[1:3])
    assert maps.min() >= 0 and maps.max() <= 1
