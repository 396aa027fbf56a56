"""RunConfig is the one source of the `train` flags: parsing and argv generation are derived from its fields."""

from __future__ import annotations

import dataclasses

import pytest

from poc.cli import build_parser, config_from_args
from poc.config import FLAGS, RunConfig, config_to_argv
from poc.errors import UserError

# A value different from the default for every field, so each field's round trip is really exercised.
CHANGED = {"data": "some/folder", "model": "vit_ti16", "weights": "demo", "image_size": 64, "tl_epochs": 3,
           "ft_epochs": 0, "fine_tune_at": "blocks:4", "batch_size": 8, "lr_tl": 0.002, "lr_ft": 0.0003,
           "patience": 2, "augment": ["flip", "zoom"], "dropout": 0.3, "val": 0.2, "test": 0.15, "seed": 7,
           "name": "my run", "from_run": "20260101-000000-x", "mixed_precision": "off", "jit_compile": "on",
           "feature_cache": False, "tl_views": 5, "distribute": "mirrored", "train_fraction": 0.5}


def test_every_field_has_a_flag_and_a_changed_value_in_this_test():
    names = {f.name for f in dataclasses.fields(RunConfig)}
    assert names == set(FLAGS) == set(CHANGED)


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_each_field_round_trips_through_the_command_line(field):
    config = RunConfig(data=CHANGED["data"], **({field: CHANGED[field]} if field != "data" else {}))
    parsed = config_from_args(build_parser().parse_args(["train", *config_to_argv(config)]))
    assert parsed == config
    assert getattr(parsed, field) == CHANGED[field]


def test_all_fields_changed_at_once_round_trip():
    config = RunConfig(**CHANGED)
    assert config_from_args(build_parser().parse_args(["train", *config_to_argv(config)])) == config


def test_no_augmentation_round_trips_as_none():
    config = RunConfig(data="d", augment=[])
    argv = config_to_argv(config)
    assert argv[argv.index("--augment") + 1] == "none"
    assert config_from_args(build_parser().parse_args(["train", *argv])).augment == []


def test_defaults_come_from_the_dataclass():
    parsed = config_from_args(build_parser().parse_args(["train", "--data", "d"]))
    assert parsed == RunConfig(data="d")
    assert parsed.weights == "imagenet"  # no silent frozen random backbone (issue 8.3)


def test_a_frozen_random_backbone_is_named_as_such():
    assert RunConfig(data="d", weights="none").frozen_random
    assert not RunConfig(data="d", weights="imagenet").frozen_random
    assert not RunConfig(data="d", weights="none", from_run="r").frozen_random  # phase 1 comes from the run


def test_ill_typed_values_are_refused_with_the_key():
    with pytest.raises(UserError, match="batch_size"):
        RunConfig.from_dict({"data": "d", "batch_size": "many"})


def test_the_feature_cache_is_on_unless_asked_off():
    assert config_from_args(build_parser().parse_args(["train", "--data", "d"])).feature_cache is True
    assert config_from_args(build_parser().parse_args(["train", "--data", "d", "--no-feature-cache"])) \
        .feature_cache is False


@pytest.mark.parametrize("field, value, needle", [("tl_views", -1, "--tl-views"), ("distribute", "tpu", "--distribute")])
def test_out_of_range_values_name_their_flag(field, value, needle):
    with pytest.raises(UserError, match=needle):
        RunConfig(data="d", **{field: value}).check_values()
