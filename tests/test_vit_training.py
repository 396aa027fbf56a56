"""A tiny ViT-Ti/16 two-phase run through the CLI (in this process): contract files, attention maps, blocks:K
counts, reload."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli import call_main
from poc.runs import store
from poc.inference import load_model
from fixture_runs import raw_pixels

SIZE, PATCH, WIDTH, MLP, DEPTH = 32, 16, 192, 768, 12  # ViT-Ti/16 (arXiv 2010.11929 / AugReg): 2 x 2 patches
CUTOFF_BLOCKS = 10


@pytest.fixture(scope="module")
def vit_run(demo_dataset, tmp_path_factory) -> store.RunDir:
    runs = tmp_path_factory.mktemp("runs")
    result = call_main("train", "--model", "vit_ti16", "--weights", "none", "--data", demo_dataset,
                       "--image-size", SIZE, "--tl-epochs", 1, "--ft-epochs", 1, "--batch-size", 16,
                       "--fine-tune-at", f"blocks:{CUTOFF_BLOCKS}", runs_dir=runs)
    assert result.returncode == 0, result.stderr
    return store.RunDir(store.Path(result.stdout.strip().splitlines()[-1]))


def encoder_block_params(d: int = WIDTH, mlp: int = MLP) -> int:
    return (2 * d  # LayerNorm_0
            + 4 * (d * d + d)  # query, key, value, out with biases
            + 2 * d  # LayerNorm_2
            + d * mlp + mlp + mlp * d + d)  # MlpBlock_3 Dense_0, Dense_1


def test_run_completes_with_every_contract_file(vit_run):
    info = json.loads(vit_run.run_json.read_text())
    assert info["status"] == "completed" and info["error"] is None
    assert info["model"] == "vit_ti16" and info["fine_tune_at"] == f"blocks:{CUTOFF_BLOCKS}"
    for path in (vit_run.split_csv, vit_run.history_csv, vit_run.progress_json, vit_run.weights,
                 vit_run.train_log):
        assert path.exists(), path
    assert set(pd.read_csv(vit_run.history_csv)["phase"]) == {"tl", "ft"}
    for stage in ("tl", "ft"):
        for kind in store.EVAL_FILES:
            assert vit_run.eval_file(stage, kind).exists(), (stage, kind)


@pytest.mark.parametrize("stage", ["tl", "ft"])
def test_explanations_are_attention_rollout_on_the_patch_grid(vit_run, stage):
    n_test = len(pd.read_csv(vit_run.eval_file(stage, "predictions")))
    maps, method = store.read_explanations(vit_run, stage)
    grid = SIZE // PATCH
    assert method == "attention_rollout"
    assert maps.shape == (n_test, grid, grid)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-3  # stored as float16


def test_trainable_counts_follow_the_blocks_cutoff(vit_run):
    info = json.loads(vit_run.run_json.read_text())
    classes = len(info["class_names"])
    head = WIDTH * classes + classes
    trained_blocks = DEPTH - CUTOFF_BLOCKS  # encoderblock_10, encoderblock_11
    assert info["params"]["trainable_tl"] == head
    assert info["params"]["trainable_ft"] == head + trained_blocks * encoder_block_params() + 2 * WIDTH
    embedding = PATCH * PATCH * 3 * WIDTH + WIDTH
    tokens = (SIZE // PATCH) ** 2 + 1
    backbone = embedding + WIDTH + tokens * WIDTH + DEPTH * encoder_block_params() + 2 * WIDTH
    assert info["params"]["total"] == backbone + head


def test_saved_weights_reload_to_the_same_predictions(vit_run):
    run = load_model(vit_run)
    predictions = pd.read_csv(vit_run.eval_file("ft", "predictions"))
    probs = np.asarray(run.model(raw_pixels(predictions["path"].tolist(), run.image_size), training=False))
    expected = predictions[[f"prob_{name}" for name in run.class_names]].to_numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert [run.class_names[i] for i in probs.argmax(axis=1)] == predictions["pred"].tolist()
