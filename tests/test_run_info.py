"""run.json's one builder and the rules that read it back (poc.runs.run_info): label, best epochs, the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poc.runs import store
from poc.runs.run_info import best_epochs, new_run_info, rebuild_model, recorded_image_size, run_label


def _split() -> pd.DataFrame:
    rows = [("/d/a/0.png", "a", "train", "h0"), ("/d/a/1.png", "a", "train", "h1"), ("/d/a/2.png", "a", "val", "h2"),
            ("/d/b/0.png", "b", "train", "h3"), ("/d/b/1.png", "b", "test", "h4")]
    return pd.DataFrame(rows, columns=["path", "label", "split", "sha256"])


def _info(tmp_path, split=None, **changes) -> dict:
    values = dict(model="mobilenet_v2", family="cnn", config={"seed": 0}, split=_split() if split is None else split,
                  class_names=["a", "b"], data_path="/d", image_size=32, weights="none", pretraining="none",
                  params={"total": 10}, seed=0, device="CPU", versions={})
    return new_run_info(store.RunDir(tmp_path / "run-1"), **{**values, **changes})


# ---------------------------------------------------------------- new_run_info

def test_the_dataset_block_counts_each_split(tmp_path):
    assert _info(tmp_path)["dataset"]["counts"] == {"train": 3, "val": 1, "test": 1}


def test_the_fingerprint_is_that_of_the_split(tmp_path):
    from poc.data.split import split_fingerprint

    assert _info(tmp_path)["dataset"]["split_fingerprint"] == split_fingerprint(_split())


def test_a_subsampled_split_keeps_its_full_splits_fingerprint(tmp_path):
    split = _split()
    split.attrs["split_fingerprint"] = "full"
    assert _info(tmp_path, split=split)["dataset"]["split_fingerprint"] == "full"


def test_carved_splits_come_from_the_split_unless_given(tmp_path):
    split = _split()
    split.attrs["carved"] = {"val": "carved from train/"}
    assert _info(tmp_path, split=split)["dataset"]["carved"] == {"val": "carved from train/"}
    assert _info(tmp_path, split=split, carved={})["dataset"]["carved"] == {}


def test_the_name_defaults_to_the_run_id(tmp_path):
    assert _info(tmp_path)["name"] == "run-1" and _info(tmp_path, name="mine")["name"] == "mine"


def test_a_run_starts_queued_with_nothing_recorded_yet(tmp_path):
    info = _info(tmp_path)
    assert (info["status"], info["started"], info["finished"], info["error"]) == ("queued", None, None, None)
    assert info["best_epoch"] == {} and info["timing"] == {} and info["final_stage"] is None


def test_a_run_started_at_once_is_started_when_created(tmp_path):
    info = _info(tmp_path, status="running", started=True)
    assert info["status"] == "running" and info["started"] == info["created"]


def test_extra_keys_are_added_as_given(tmp_path):
    assert _info(tmp_path, baseline={"C": 1.0})["baseline"] == {"C": 1.0}


# ---------------------------------------------------------------- run_label

def test_the_label_is_model_and_name():
    assert run_label({"model": "vit_ti16", "name": "first try"}, "r1") == "vit_ti16 · first try"


def test_a_name_that_names_the_model_is_the_label():
    assert run_label({"model": "vit_ti16", "name": "demo vit_ti16"}, "r1") == "demo vit_ti16"


def test_a_run_without_a_name_is_labelled_with_its_id():
    assert run_label({"model": "mobilenet_v2", "name": None}, "r1") == "mobilenet_v2 · r1"


def test_a_run_without_a_model_is_labelled_with_its_name():
    assert run_label({"name": "x", "model": float("nan")}, "r1") == "x"


# ---------------------------------------------------------------- best_epochs

def _history() -> pd.DataFrame:
    return pd.DataFrame({"epoch": [1, 2, 3, 4, 5], "phase": ["tl", "tl", "tl", "ft", "ft"],
                         "val_loss": [0.9, 0.5, 0.7, 0.4, 0.6]})


def test_the_recorded_best_epoch_wins():
    assert best_epochs(_history(), {"tl": 3, "ft": 5}) == {"tl": 3, "ft": 5}


def test_without_a_record_the_lowest_validation_loss_is_best():
    assert best_epochs(_history(), None) == {"tl": 2, "ft": 4}


def test_a_recorded_epoch_outside_its_phase_falls_back_to_the_lowest_loss():
    assert best_epochs(_history(), {"tl": 4}) == {"tl": 2, "ft": 4}


def test_a_phase_without_validation_loss_has_no_best_epoch():
    history = _history().assign(val_loss=[np.nan, np.nan, np.nan, 0.4, 0.6])
    assert best_epochs(history, None) == {"ft": 4}


# ---------------------------------------------------------------- the model run.json describes

def test_the_image_size_is_run_jsons_else_its_configs():
    assert recorded_image_size({"image_size": 64, "config": {"image_size": 32}}) == 64
    assert recorded_image_size({"config": {"image_size": 32}}) == 32


def test_no_recorded_image_size_is_none():
    assert recorded_image_size({"config": {"image_size": "big"}}) is None


def test_the_rebuilt_model_has_the_recorded_classes_size_and_dropout():
    model = rebuild_model({"model": "mobilenet_v2", "class_names": ["a", "b", "c"], "image_size": 32,
                           "config": {"dropout": 0.35}})
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    assert model.get_layer("dropout").rate == pytest.approx(0.35)


def test_a_run_json_without_dropout_rebuilds_with_the_configs_default():
    from poc.config import RunConfig

    model = rebuild_model({"model": "mobilenet_v2", "class_names": ["a", "b"], "image_size": 32, "config": {}})
    assert model.get_layer("dropout").rate == pytest.approx(RunConfig(data="d").dropout)
