"""tf.distribute: the mirrored path completes on a CPU split into two logical devices and writes the same
artifacts as a plain run; batch size is per replica; multi-worker refuses with the reason."""

from __future__ import annotations

import json

import pytest

from cli import run_cli
from conftest import make_class_folders
from poc import artifacts

TINY = ["--model", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--tl-epochs", "1",
        "--ft-epochs", "1", "--batch-size", "4", "--fine-tune-at", "block_16_expand"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """2 classes x 10: splits of 16 / 2 / 2 images, whose last batches split evenly over 2 replicas."""
    return make_class_folders(tmp_path_factory.mktemp("dist") / "data", {"a": 10, "b": 10}, size=(32, 32))


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory):
    """3 classes x 8: a validation split of 3 images, which no even global batch splits evenly."""
    return make_class_folders(tmp_path_factory.mktemp("odd") / "data", {"a": 8, "b": 8, "c": 8}, size=(32, 32))


def _files(rd: artifacts.RunDir) -> set[str]:
    return {str(p.relative_to(rd.path)) for p in rd.path.rglob("*") if p.is_file() and "logs" not in p.parts}


def test_mirrored_on_two_cpu_devices_completes_with_the_same_artifacts(small_data, tmp_path):
    plain = run_cli("train", "--data", small_data, *TINY, runs_dir=tmp_path / "plain")
    mirrored = run_cli("train", "--data", small_data, *TINY, "--distribute", "mirrored",
                       runs_dir=tmp_path / "mirrored", VITRINE_CPU_DEVICES="2")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert mirrored.returncode == 0, mirrored.stderr[-2000:]
    rd_plain = artifacts.RunDir(artifacts.Path(plain.stdout.strip().splitlines()[-1]))
    rd_mirrored = artifacts.RunDir(artifacts.Path(mirrored.stdout.strip().splitlines()[-1]))
    info = json.loads(rd_mirrored.run_json.read_text())
    assert info["status"] == "completed"
    assert info["distribute"] == {"strategy": "MirroredStrategy", "replicas": 2}
    assert json.loads(rd_plain.run_json.read_text())["distribute"] == {"strategy": "none", "replicas": 1}
    assert _files(rd_mirrored) == _files(rd_plain)
    history = artifacts.read_history(rd_mirrored)
    assert list(history["phase"]) == ["tl", "ft"]


def test_multiworker_refuses_with_the_upstream_reason(small_data, tmp_path):
    result = run_cli("train", "--data", small_data, *TINY, "--distribute", "multiworker",
                     runs_dir=tmp_path / "mw", TF_CONFIG='{"cluster": {"worker": ["localhost:1"]}, '
                                                        '"task": {"type": "worker", "index": 0}}')
    assert result.returncode == 2
    assert "keras-team/keras#20585" in result.stderr and "--distribute mirrored" in result.stderr
    assert "Traceback" not in result.stderr


def test_uneven_last_batches_are_refused_before_training(odd_data, tmp_path):
    result = run_cli("train", "--data", odd_data, *TINY, "--distribute", "mirrored",
                     runs_dir=tmp_path / "uneven", VITRINE_CPU_DEVICES="2")
    assert result.returncode == 2 and "split evenly" in result.stderr and "val 3 images" in result.stderr
    assert not (tmp_path / "uneven").exists() or not any((tmp_path / "uneven").iterdir())
