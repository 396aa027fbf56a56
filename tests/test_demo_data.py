"""The generated cartoon dataset: ten class folders, the real-world traps, and byte-level determinism."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from poc.data.demo import CLASS_NAMES, generate_demo_dataset
from poc.data.images import open_rgb
from poc.errors import UserError


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(root)}


@pytest.fixture(scope="module")
def twenty_per_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo20")
    generate_demo_dataset(root, per_class=20, size=32, seed=3)
    return root


def test_class_names_are_the_reference_ten():
    assert CLASS_NAMES == ("bird", "car", "cat", "dog", "flower", "panda", "penguin", "plane", "tiger", "tree")


def test_one_folder_per_class(demo_dataset):
    assert sorted(p.name for p in demo_dataset.iterdir()) == list(CLASS_NAMES)


def test_each_class_has_per_class_files_named_by_index(demo_dataset):
    for name in CLASS_NAMES:
        stems = sorted(p.stem for p in (demo_dataset / name).iterdir())
        assert stems == [f"{name}_{i:04d}" for i in range(12)]


def test_every_file_decodes_to_rgb(demo_dataset):
    for path in _files(demo_dataset):
        assert open_rgb(path).mode == "RGB"


def test_png_and_jpeg_are_mixed(demo_dataset):
    assert {p.suffix for p in _files(demo_dataset)} == {".png", ".jpg"}


def test_about_a_fifth_are_rgba_with_transparent_background(twenty_per_class):
    files = _files(twenty_per_class)
    rgba = [p for p in files if Image.open(p).mode == "RGBA"]
    assert 0.10 <= len(rgba) / len(files) <= 0.30
    alpha = np.asarray(Image.open(rgba[0]))[..., 3]
    assert (alpha == 0).any() and (alpha == 255).any()


def test_sizes_vary_within_a_quarter_of_the_requested_size(twenty_per_class):
    sizes = {Image.open(p).size for p in _files(twenty_per_class)}
    assert len(sizes) > 10
    assert any(w != h for w, h in sizes)
    assert all(24 <= side <= 40 for size in sizes for side in size)  # size 32 +- 25%


def test_tiger_figures_are_more_orange_than_panda_figures(twenty_per_class):
    # only figure pixels count: the transparent-background files have no background to average in
    def figure_red_minus_blue(name):
        values = []
        for path in (twenty_per_class / name).glob("*.png"):
            pixels = np.asarray(Image.open(path), dtype=np.float64)
            if pixels.shape[-1] == 4:
                opaque = pixels[pixels[..., 3] == 255]
                values.append((opaque[:, 0] - opaque[:, 2]).mean())
        return np.mean(values)

    assert figure_red_minus_blue("tiger") > figure_red_minus_blue("panda") + 50


def test_same_seed_gives_identical_bytes(tmp_path):
    generate_demo_dataset(tmp_path / "a", per_class=2, size=24, seed=7)
    generate_demo_dataset(tmp_path / "b", per_class=2, size=24, seed=7)
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


def test_different_seed_gives_different_images(tmp_path):
    generate_demo_dataset(tmp_path / "a", per_class=2, size=24, seed=7)
    generate_demo_dataset(tmp_path / "b", per_class=2, size=24, seed=8)
    assert set(_hashes(tmp_path / "a").values()).isdisjoint(_hashes(tmp_path / "b").values())


def test_summary_counts_images_and_rgba(tmp_path):
    summary = generate_demo_dataset(tmp_path, per_class=5, size=24)
    rgba = sum(Image.open(p).mode == "RGBA" for p in _files(tmp_path))
    assert summary == {"root": str(tmp_path), "classes": list(CLASS_NAMES), "images": 50, "rgba": rgba}


def test_progress_reports_every_image(tmp_path):
    calls = []
    generate_demo_dataset(tmp_path, per_class=2, size=24, progress=lambda *args: calls.append(args))
    assert calls == [(i, 20) for i in range(1, 21)]


def test_rerun_with_fewer_images_leaves_no_stale_files(tmp_path):
    generate_demo_dataset(tmp_path, per_class=4, size=24)
    (tmp_path / "cat" / "keep_me.txt").write_text("user file")
    generate_demo_dataset(tmp_path, per_class=2, size=24)
    names = sorted(p.name for p in (tmp_path / "cat").iterdir())
    assert [n.split(".")[0] for n in names] == ["cat_0000", "cat_0001", "keep_me"]


@pytest.mark.parametrize("kwargs", [{"per_class": 0}, {"size": 4}])
def test_bad_arguments_raise_user_error(tmp_path, kwargs):
    with pytest.raises(UserError):
        generate_demo_dataset(tmp_path, **kwargs)
