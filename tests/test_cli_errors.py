"""Bad input: exit code 2, one message naming the problem, no traceback, and no run directory left behind (a
launched run, whose directory the launcher made, is marked failed with the reason)."""

from __future__ import annotations

import json

import pytest

from cli import call_cli, run_cli
from conftest import make_class_folders, make_image
from poc.runs import store

FAST = ["--weights", "none", "--image-size", "32", "--tl-epochs", "1", "--ft-epochs", "1"]


def assert_clean_failure(result, *needles: str, stream: str = "stderr") -> None:
    """Exit code 2, no traceback, and every needle in `stream` (the message a user reads)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in getattr(result, stream), (needle, getattr(result, stream))


def run_ids(runs_dir) -> list[str]:
    return [rd.id for rd in store.run_dirs(runs_dir)]


@pytest.fixture
def cli(capsys, monkeypatch):
    return lambda *args, runs_dir=None: call_cli(capsys, monkeypatch, *args, runs_dir=runs_dir)


def test_a_missing_data_folder_is_named_and_no_run_is_created(tmp_path):
    result = run_cli("train", "--data", tmp_path / "nope", *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, f"dataset folder {tmp_path / 'nope'} does not exist")
    assert run_ids(tmp_path / "runs") == []


@pytest.mark.parametrize("command", [["train"], ["sweep", "--cutoffs", "Conv_1"]], ids=["train", "sweep"])
def test_a_missing_data_folder_is_named_before_tensorflow_is_imported(tmp_path, command):
    """A mistyped --data costs no TensorFlow import (seconds on a laptop's CPU) before its message."""
    from cli import run_cli_noting_tensorflow

    result = run_cli_noting_tensorflow(*command, "--data", tmp_path / "nope", *FAST, "--runs-dir", tmp_path / "runs")
    assert_clean_failure(result, f"dataset folder {tmp_path / 'nope'} does not exist")
    assert result.stdout.strip() == "no tensorflow"
    assert run_ids(tmp_path / "runs") == []


def test_a_single_class_is_refused_naming_it_and_the_minimum(tmp_path, cli):
    data = make_class_folders(tmp_path / "data", {"cat": 6})
    result = cli("train", "--data", data, *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "1 class with usable images found ('cat'); at least 2 are needed")
    assert run_ids(tmp_path / "runs") == []


def test_an_empty_class_leaving_one_usable_class_is_refused_by_name(tmp_path, cli):
    data = make_class_folders(tmp_path / "data", {"cat": 6})
    (data / "tiger").mkdir()  # skipped with a warning; one usable class is not a classification problem
    result = cli("train", "--data", data, *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "at least 2 are needed", "tiger")


def test_an_unknown_model_is_refused_listing_the_choices(tmp_path, demo_dataset, cli):
    result = cli("train", "--data", demo_dataset, "--model", "alexnet", *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "alexnet", "mobilenet_v2", "vit_b32")


@pytest.mark.parametrize("cutoff, needle", [("9999", "out of range"), ("no_such_layer", "no_such_layer"),
                                            ("blocks:3", "encoder blocks")])
def test_a_bad_cutoff_is_refused_before_a_run_directory_exists(tmp_path, demo_dataset, cutoff, needle, cli):
    result = cli("train", "--data", demo_dataset, "--model", "mobilenet_v2", "--fine-tune-at", cutoff,
                 *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, needle)
    assert run_ids(tmp_path / "runs") == []


def test_a_vit_block_cutoff_out_of_range_names_the_valid_range(tmp_path, demo_dataset, cli):
    result = cli("train", "--data", demo_dataset, "--model", "vit_ti16", "--fine-tune-at", "blocks:13",
                 *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "blocks:13", "blocks:0 to blocks:12")


@pytest.mark.parametrize("flags, needle", [(["--tl-epochs", "0"], "--tl-epochs"), (["--lr-ft", "5"], "--lr-ft"),
                                           (["--augment", "flip,blur"], "blur"),
                                           (["--image-size", "40", "--model", "vit_ti16"], "patch size")],
                         ids=["tl-epochs", "lr-ft", "augment", "vit-image-size"])
def test_a_bad_recipe_value_is_refused_naming_it(tmp_path, demo_dataset, flags, needle, cli):
    result = cli("train", "--data", demo_dataset, *flags, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, needle)
    assert run_ids(tmp_path / "runs") == []


def test_a_launched_run_with_bad_input_is_recorded_as_failed_with_the_reason(tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("train", "--data", tmp_path / "nope", *FAST, "--run-id", "launched", runs_dir=runs)
    assert_clean_failure(result, "nope")
    info = json.loads((runs / "launched" / "run.json").read_text())
    assert info["status"] == "failed" and "nope" in info["error"]


def test_scan_lists_a_corrupt_file_as_rejected_with_its_reason(tmp_path, cli):
    data = make_class_folders(tmp_path / "data", {"cat": 4, "dog": 4})
    (data / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = cli("scan", data, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rejected"] == [{"path": str(data / "cat" / "broken.png"),
                                                      "reason": "not an image file"}]


def test_predict_names_a_run_that_does_not_exist(tmp_path, cli):
    image = make_image(tmp_path / "image.png")
    result = cli("predict", "no-such-run", image, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "no run 'no-such-run' in", "python -m poc runs")


def test_predict_names_an_unreadable_image(tmp_path, fixture_runs, cli):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    run = fixture_runs["cnn"]
    result = cli("predict", run.name, bogus, runs_dir=run.parent)
    assert_clean_failure(result, f"{bogus}: rejected (not an image file)", stream="stdout")
