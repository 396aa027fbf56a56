"""Explanation agreement (poc.analysis.agreement): IoU of the top-20% Grad-CAM and rollout regions, against counts made by
hand and with numpy / scipy here, on maps and on small run directories written with poc.runs.store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from poc.runs import store
from poc.analysis.agreement import explanation_agreement, per_class, region_iou, top_region
from poc.errors import UserError
from poc.analysis.evaluation import evaluate_probabilities

CLASSES = ["cat", "dog"]


def _hot(cells: list[tuple[int, int]], shape=(5, 5)) -> np.ndarray:
    """A map with distinct high values on `cells` (in falling order) and distinct low values elsewhere."""
    heatmap = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 100.0  # low, distinct
    for rank, cell in enumerate(cells):
        heatmap[cell] = 10.0 - rank
    return heatmap


def _direct_iou(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """The k highest cells of each map by a threshold at the k-th value (no ties in these maps)."""
    region_a, region_b = a >= np.sort(a.ravel())[-k], b >= np.sort(b.ravel())[-k]
    return (region_a & region_b).sum() / (region_a | region_b).sum()


# ---------------------------------------------------------------- maps

def test_the_region_is_the_top_fifth_of_the_cells():
    heatmap = _hot([(0, 0), (4, 4), (2, 2), (1, 3), (3, 1)])
    region = top_region(heatmap)
    assert region.sum() == 5  # 20% of 25
    assert set(zip(*np.nonzero(region))) == {(0, 0), (4, 4), (2, 2), (1, 3), (3, 1)}


def test_iou_of_hand_made_maps_on_one_grid():
    a = _hot([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)])
    b = _hot([(0, 1), (0, 2), (1, 1), (4, 4), (3, 3)])
    assert region_iou(a, b) == pytest.approx(3 / 7)  # 3 shared cells, 7 in either
    assert region_iou(a, b) == pytest.approx(_direct_iou(a, b, 5))
    assert region_iou(a, a) == 1.0


def test_maps_of_different_grids_meet_on_the_finer_one_by_bilinear_resizing():
    rng = np.random.default_rng(0)
    coarse, fine = rng.random((3, 3)).astype(np.float32), rng.random((6, 6)).astype(np.float32)
    upsampled = ndimage.zoom(coarse, 2, order=1, grid_mode=True, mode="nearest")  # cell centres, as images
    assert region_iou(coarse, fine) == pytest.approx(_direct_iou(upsampled, fine, round(0.2 * 36)))


def test_a_flat_map_has_no_region_and_no_iou():
    flat = np.zeros((4, 4), np.float32)
    assert top_region(flat) is None
    assert math.isnan(region_iou(flat, _hot([(0, 0)], (4, 4))))


def test_per_class_summary_averages_the_images_with_an_iou():
    per_image = pd.DataFrame({"label": ["cat", "cat", "dog", "dog", "dog"], "iou": [0.5, 1.0, 0.2, np.nan, 0.4]})
    summary = per_class(per_image).set_index("class")
    assert summary.loc["cat", "mean_iou"] == pytest.approx(0.75) and summary.loc["cat", "n"] == 2
    assert summary.loc["dog", "mean_iou"] == pytest.approx(0.3) and summary.loc["dog", "n"] == 2
    assert summary.loc["dog", "constant"] == 1 and summary.loc["cat", "constant"] == 0


# ---------------------------------------------------------------- runs

TEST = pd.DataFrame({"path": [f"/data/{c}/{i}.png" for c in CLASSES for i in range(3)],
                     "label": [c for c in CLASSES for _ in range(3)]})
GRADCAM = np.stack([_hot([(i % 5, 0), (i % 5, 1), (i % 5, 2), (i % 5, 3), (i % 5, 4)]) for i in range(6)])  # rows
ROLLOUT = np.stack([_hot([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]) for _ in range(6)])


def _run(root, name: str, method: str, maps: np.ndarray, order: list[int], fingerprint: str = "f" * 64):
    """A completed run whose test predictions list TEST in `order`, with `maps` in that order too."""
    rd = store.RunDir(root / name).create()
    family, model = ("cnn", "mobilenet_v2") if method == "gradcam" else ("vit", "vit_ti16")
    rd.write_run({"id": name, "name": name, "model": model, "family": family, "status": "completed",
                  "class_names": CLASSES, "final_stage": "ft",
                  "dataset": {"path": "/data", "split_fingerprint": fingerprint}})
    test = TEST.iloc[order].reset_index(drop=True)
    probs = np.random.default_rng(len(name)).dirichlet(np.ones(2), size=len(test))
    rd.write_eval("ft", **evaluate_probabilities(test, probs, CLASSES))
    rd.write_explanations("ft", maps[order], method)
    return rd


@pytest.fixture
def pair(tmp_path):
    shuffled = [3, 0, 5, 1, 4, 2]  # the ViT lists the images in another order: pairing is by path
    return (_run(tmp_path, "cnn", "gradcam", GRADCAM, list(range(6))),
            _run(tmp_path, "vit", "attention_rollout", ROLLOUT, shuffled))


def test_each_test_image_gets_the_iou_of_its_own_two_maps(pair):
    result = explanation_agreement(*pair)
    per_image = result["per_image"].set_index("path")
    for i, path in enumerate(TEST["path"]):
        assert per_image.loc[path, "iou"] == pytest.approx(_direct_iou(GRADCAM[i], ROLLOUT[i], 5))
    # rows 0 and 1 of Grad-CAM share 3 and 2 cells with the rollout region: 3/7 and 2/8
    assert per_image.loc[TEST["path"][0], "iou"] == pytest.approx(3 / 7)
    assert per_image.loc[TEST["path"][1], "iou"] == pytest.approx(2 / 8)
    assert (result["gradcam"]["id"], result["rollout"]["id"], result["n"]) == ("cnn", "vit", 6)


def test_the_summary_is_per_true_class(pair):
    result = explanation_agreement(*pair)
    expected = [np.mean([_direct_iou(GRADCAM[i], ROLLOUT[i], 5) for i in range(3 * k, 3 * k + 3)]) for k in (0, 1)]
    summary = result["per_class"].set_index("class")
    assert list(summary.index) == CLASSES and list(summary["n"]) == [3, 3]
    assert list(summary["mean_iou"]) == pytest.approx(expected)


def test_either_order_of_the_runs_gives_the_same_answer(pair):
    forward, backward = explanation_agreement(*pair), explanation_agreement(*reversed(pair))
    pd.testing.assert_frame_equal(forward["per_class"], backward["per_class"])


def test_two_gradcam_runs_are_refused(tmp_path):
    a = _run(tmp_path, "a", "gradcam", GRADCAM, list(range(6)))
    b = _run(tmp_path, "b", "gradcam", GRADCAM, list(range(6)))
    with pytest.raises(UserError, match="one Grad-CAM run"):
        explanation_agreement(a, b)


def test_runs_on_different_splits_are_refused(tmp_path):
    a = _run(tmp_path, "a", "gradcam", GRADCAM, list(range(6)))
    b = _run(tmp_path, "b", "attention_rollout", ROLLOUT, list(range(6)), fingerprint="0" * 64)
    with pytest.raises(UserError, match="not tested on one split"):
        explanation_agreement(a, b)


# ---------------------------------------------------------------- the view

def _render(cnn: str, vit: str) -> None:
    from ui.agreement_view import render_agreement

    render_agreement(cnn, vit)


def test_the_view_renders_the_per_class_table_and_the_class_agnostic_note(pair, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VITRINE_RUNS_DIR", str(pair[0].path.parent))
    at = AppTest.from_function(_render, args=("cnn", "vit"), default_timeout=60).run()
    assert not at.exception
    assert "class-agnostic" in " ".join(c.value for c in at.caption)
    shown = at.dataframe[0].value.set_index("class")
    assert list(shown["n"]) == [3, 3]
