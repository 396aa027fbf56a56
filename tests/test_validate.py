"""poc.train.plan.validate: the one check of a run's settings that `train`, `sweep` and the sidebar launcher call."""

from __future__ import annotations

import pytest

from poc.config import RunConfig
from poc.errors import UserError
from poc.runs import store
from poc.train.plan import validate

TINY = dict(data="d", model="mobilenet_v2", weights="none", image_size=32)


def _source(runs, run_id="20260101-000000-vit-ti16-abcd", model="vit_ti16", image_size=32) -> store.RunDir:
    """A run directory as --from-run sees one: run.json and a phase-1 weights file (never loaded here)."""
    rd = store.run_dir(runs, run_id).create()
    rd.write_run({"id": run_id, "model": model, "image_size": image_size, "status": "completed",
                  "config": {"image_size": image_size}})
    rd.stage_weights("tl").write_bytes(b"")
    return rd


def test_a_value_out_of_range_names_its_flag():
    with pytest.raises(UserError, match="--batch-size 0 is out of range"):
        validate(RunConfig(**{**TINY, "batch_size": 0}), probe=False)


def test_an_unknown_model_is_refused():
    with pytest.raises(UserError, match="unknown model 'resnet5'"):
        validate(RunConfig(**{**TINY, "model": "resnet5"}), probe=False)


def test_an_image_size_off_the_patch_grid_is_refused():
    with pytest.raises(UserError, match="not a multiple of vit_ti16's patch size 16"):
        validate(RunConfig(**{**TINY, "model": "vit_ti16", "image_size": 33}), probe=False)


def test_missing_starting_weights_are_refused():
    with pytest.raises(UserError, match="no such file"):
        validate(RunConfig(**{**TINY, "weights": "/nowhere/ckpt.npz"}), probe=False)


def test_the_cutoff_is_resolved_on_the_models_probe():
    from poc.models import build

    names = [layer.name for layer in build("mobilenet_v2", 3, 32).get_layer("backbone").layers]
    checked = validate(RunConfig(**{**TINY, "fine_tune_at": "Conv_1"}))
    assert checked.cutoff_index == names.index("Conv_1")


def test_a_cutoff_outside_the_backbone_is_refused():
    with pytest.raises(UserError, match="--fine-tune-at 999 is out of range"):
        validate(RunConfig(**{**TINY, "fine_tune_at": "999"}))


def test_without_the_probe_the_cutoff_is_left_to_the_caller():
    checked = validate(RunConfig(**{**TINY, "fine_tune_at": "999"}), probe=False)
    assert checked.probe is None and checked.cutoff_index is None


def test_a_hub_model_is_not_built_to_check_its_cutoff():
    checked = validate(RunConfig(data="d", model="hub:/nowhere/model", weights="none"))
    assert checked.probe is None and checked.image_size == 224


def test_the_callers_config_is_left_as_it_was(tmp_path):
    config = RunConfig(**{**TINY, "model": "vit_ti16", "image_size": None, "tl_epochs": 0, "from_run": "2026"})
    _source(tmp_path)
    validate(config, tmp_path, probe=False)
    assert config.from_run == "2026" and config.image_size is None


def test_from_run_takes_the_source_runs_id_and_image_size(tmp_path):
    source = _source(tmp_path)
    config = RunConfig(**{**TINY, "model": "vit_ti16", "image_size": None, "tl_epochs": 0, "from_run": "2026"})
    checked = validate(config, tmp_path, probe=False)
    assert (checked.config.from_run, checked.config.image_size, checked.source.id) == (source.id, 32, source.id)


def test_from_run_refuses_another_image_size(tmp_path):
    source = _source(tmp_path)
    config = RunConfig(**{**TINY, "model": "vit_ti16", "image_size": 64, "tl_epochs": 0, "from_run": source.id})
    with pytest.raises(UserError, match=f"--image-size 64 differs from run {source.id}'s 32 px"):
        validate(config, tmp_path, probe=False)


def test_from_run_refuses_a_run_of_another_model(tmp_path):
    source = _source(tmp_path)
    with pytest.raises(UserError, match="trained 'vit_ti16', not 'mobilenet_v2'"):
        validate(RunConfig(**{**TINY, "tl_epochs": 0, "from_run": source.id}), tmp_path, probe=False)


def test_a_sweeps_cutoffs_are_checked_on_the_probe_validate_resolved():
    from poc.models import probe
    from poc.train.studies import validate_sweep

    checked, cutoffs = validate_sweep(RunConfig(**TINY), "Conv_1")
    assert checked.probe is probe("mobilenet_v2", 32)
    assert [c.index for c in cutoffs] == [[layer.name for layer in checked.probe.get_layer("backbone").layers]
                                          .index("Conv_1")]
