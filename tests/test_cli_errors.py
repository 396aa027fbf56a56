"""Bad input: exit code 2, one message naming the problem, no traceback, and no run left marked running."""

from __future__ import annotations

import json

import pytest

from cli import call_cli, run_cli
from conftest import make_class_folders

FAST = ["--weights", "none", "--image-size", "32", "--tl-epochs", "1", "--ft-epochs", "1"]


def assert_clean_failure(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def no_run_marked_running(runs_dir) -> bool:
    runs = [p for p in runs_dir.glob("*/run.json")] if runs_dir.exists() else []
    return all(json.loads(p.read_text())["status"] != "running" for p in runs)


def test_missing_folder_is_named(tmp_path):
    result = run_cli("train", "--data", tmp_path / "nope", *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "nope")
    assert not (tmp_path / "runs").exists() or no_run_marked_running(tmp_path / "runs")


@pytest.fixture
def cli(capsys, monkeypatch):
    return lambda *args, runs_dir=None: call_cli(capsys, monkeypatch, *args, runs_dir=runs_dir)


def test_single_class_is_rejected(tmp_path, cli):
    data = make_class_folders(tmp_path / "data", {"cat": 6})
    result = cli("train", "--data", data, *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "class")
    assert no_run_marked_running(tmp_path / "runs")


def test_an_empty_class_leaving_one_usable_class_is_refused_by_name(tmp_path, cli):
    data = make_class_folders(tmp_path / "data", {"cat": 6})
    (data / "tiger").mkdir()  # skipped with a warning; one usable class is not a classification problem
    result = cli("train", "--data", data, *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "at least 2 are needed", "tiger")


def test_unknown_model_lists_the_choices(tmp_path, demo_dataset, cli):
    result = cli("train", "--data", demo_dataset, "--model", "alexnet", *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "alexnet", "mobilenet_v2", "vit_b32")


@pytest.mark.parametrize("cutoff, needle", [("9999", "out of range"), ("no_such_layer", "no_such_layer"),
                                            ("blocks:3", "encoder blocks")])
def test_bad_cutoff_is_rejected_before_any_run(tmp_path, demo_dataset, cutoff, needle, cli):
    result = cli("train", "--data", demo_dataset, "--model", "mobilenet_v2", "--fine-tune-at", cutoff,
                     *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, needle)
    assert no_run_marked_running(tmp_path / "runs")


def test_vit_block_cutoff_out_of_range(tmp_path, demo_dataset, cli):
    result = cli("train", "--data", demo_dataset, "--model", "vit_ti16", "--fine-tune-at", "blocks:13",
                     *FAST, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "blocks:0 to blocks:12")


def test_bad_recipe_values_are_rejected(tmp_path, demo_dataset, cli):
    for flags, needle in ((["--tl-epochs", "0"], "--tl-epochs"), (["--lr-ft", "5"], "--lr-ft"),
                          (["--augment", "flip,blur"], "blur"), (["--image-size", "40", "--model", "vit_ti16"],
                                                                  "patch size")):
        result = cli("train", "--data", demo_dataset, *flags, runs_dir=tmp_path / "runs")
        assert_clean_failure(result, needle)


def test_launched_run_with_bad_input_is_recorded_as_failed(tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("train", "--data", tmp_path / "nope", *FAST, "--run-id", "launched", runs_dir=runs)
    assert_clean_failure(result, "nope")
    info = json.loads((runs / "launched" / "run.json").read_text())
    assert info["status"] == "failed" and "nope" in info["error"]


def test_scan_reports_a_corrupt_file_with_its_reason(tmp_path, cli):
    data = make_class_folders(tmp_path / "data", {"cat": 4, "dog": 4})
    (data / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = cli("scan", data, "--json")
    assert result.returncode == 0, result.stderr
    rejected = json.loads(result.stdout)["rejected"]
    assert [r["path"].endswith("broken.png") for r in rejected] == [True] and rejected[0]["reason"]


def test_predict_names_an_unreadable_image(tmp_path, demo_dataset, cli):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    result = cli("predict", "no-such-run", bogus, runs_dir=tmp_path / "runs")
    assert_clean_failure(result, "no-such-run")
