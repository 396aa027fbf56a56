"""tf.distribute: the mirrored path completes on a CPU split into two logical devices and the multi-worker path
on two worker processes on localhost ports; both write the same artifacts as a plain run, batch size is per
replica, and two workers of batch B train as one process of batch 2B does, in both phases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from cli import ROOT, call_cli, run_cli, run_cli_noting_tensorflow
from conftest import make_class_folders
from poc.runs import store

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


def _files(rd: store.RunDir) -> set[str]:
    return {str(p.relative_to(rd.path)) for p in rd.path.rglob("*") if p.is_file() and "logs" not in p.parts}


@pytest.mark.system
def test_mirrored_on_two_cpu_devices_completes_with_the_same_artifacts(small_data, tmp_path):
    plain = run_cli("train", "--data", small_data, *TINY, runs_dir=tmp_path / "plain")
    mirrored = run_cli("train", "--data", small_data, *TINY, "--distribute", "mirrored",
                       runs_dir=tmp_path / "mirrored", VITRINE_CPU_DEVICES="2")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert mirrored.returncode == 0, mirrored.stderr[-2000:]
    rd_plain = store.RunDir(store.Path(plain.stdout.strip().splitlines()[-1]))
    rd_mirrored = store.RunDir(store.Path(mirrored.stdout.strip().splitlines()[-1]))
    info = json.loads(rd_mirrored.run_json.read_text())
    assert info["status"] == "completed"
    assert info["distribute"] == {"strategy": "MirroredStrategy", "replicas": 2}
    assert json.loads(rd_plain.run_json.read_text())["distribute"] == {"strategy": "none", "replicas": 1}
    assert _files(rd_mirrored) == _files(rd_plain)
    history = store.read_history(rd_mirrored)
    assert list(history["phase"]) == ["tl", "ft"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _train(args: list[str], runs_dir, **env: str) -> subprocess.Popen:
    """`python -m poc train ARGS` started (not awaited), writing into `runs_dir`."""
    return subprocess.Popen([sys.executable, "-m", "poc", "train", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "VITRINE_RUNS_DIR": str(runs_dir), "PYTHONUNBUFFERED": "1", **env})


def _workers(args: list[str], runs_dir, count: int = 2) -> list[subprocess.Popen]:
    """`python -m poc train ARGS` as each worker of a localhost cluster, all started together."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(count)]}
    return [_train(args, runs_dir, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
            for i in range(count)]


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# VGG16: no batch norm (whose statistics would depend on the per-replica batch) and no dropout in its backbone;
# with no augmentation and no head dropout the initial weights are the only randomness left, and they are the
# same on both sides. It is also the cheapest backbone to trace, which is most of a run's time here.
EXACT = ["--model", "vgg16", "--weights", "none", "--image-size", "32", "--tl-epochs", "2", "--ft-epochs", "1",
         "--fine-tune-at", "block5_conv1", "--augment", "none", "--dropout", "0"]


@pytest.mark.system
def test_two_workers_train_as_one_process_with_the_global_batch(small_data, tmp_path):
    # One step per epoch (16 training images): the gradient does not depend on the order of the images, which
    # tf.data's sharding for the workers changes. The one-process reference trains while the workers do.
    plain = _train(["--data", str(small_data), *EXACT, "--batch-size", "16"], tmp_path / "plain")
    workers = _workers(["--data", str(small_data), *EXACT, "--batch-size", "8", "--distribute", "multiworker"],
                       tmp_path / "mw")
    plain, chief, worker = (_finish(proc) for proc in [plain, *workers])
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert chief.returncode == 0, chief.stderr[-3000:]
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "chief worker writes the run directory" in worker.stderr and str(tmp_path / "mw") not in worker.stdout
    runs = store.run_dirs(tmp_path / "mw")
    assert len(runs) == 1  # the second worker wrote nothing beside the chief's run
    rd = runs[0]
    assert str(rd.path) == chief.stdout.strip().splitlines()[-1]
    info = json.loads(rd.run_json.read_text())
    assert info["status"] == "completed"
    assert info["distribute"] == {"strategy": "MultiWorkerMirroredStrategy", "replicas": 2, "task": "worker:0"}
    rd_plain = store.RunDir(store.Path(plain.stdout.strip().splitlines()[-1]))
    assert _files(rd) == _files(rd_plain)
    ours, theirs = store.read_history(rd), store.read_history(rd_plain)
    assert list(ours["phase"]) == list(theirs["phase"]) == ["tl", "tl", "ft"]
    assert ours["loss"].nunique() == 3  # training moves the loss: the comparison below is not of constants
    # 2 workers x 8 images compute the gradient of one step of 16: the same curves, both phases.
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert ours[column].tolist() == pytest.approx(theirs[column].tolist(), abs=1e-4), column


def test_multiworker_without_a_cluster_description_says_how_to_give_one(small_data, tmp_path):
    """Refused before TensorFlow's import: a worker started with a broken TF_CONFIG answers in a moment."""
    missing = run_cli_noting_tensorflow("train", "--data", small_data, *TINY, "--distribute", "multiworker",
                                        runs_dir=tmp_path)
    broken = run_cli_noting_tensorflow("train", "--data", small_data, *TINY, "--distribute", "multiworker",
                                       runs_dir=tmp_path, TF_CONFIG='{"cluster": {"worker": ["localhost:1"]}, '
                                                                    '"task": {"type": "worker", "index": 3}}')
    assert missing.returncode == broken.returncode == 2
    assert "needs TF_CONFIG" in missing.stderr and "task worker 3 is not in the cluster" in broken.stderr
    assert "Traceback" not in missing.stderr + broken.stderr
    assert missing.stdout.strip() == broken.stdout.strip() == "no tensorflow"


def test_studies_refuse_multiworker_before_training(small_data, tmp_path, capsys, monkeypatch):
    """A sweep or a seed list would run several trainings whose workers must meet in the same order."""
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    seeds = call_cli(capsys, monkeypatch, "train", "--data", small_data, *TINY, "--seeds", "2",
                     "--distribute", "multiworker", runs_dir=tmp_path)
    assert seeds.returncode == 2 and "trains one run at a time" in seeds.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_uneven_last_batches_are_refused_before_training(odd_data, tmp_path):
    result = run_cli("train", "--data", odd_data, *TINY, "--distribute", "mirrored",
                     runs_dir=tmp_path / "uneven", VITRINE_CPU_DEVICES="2")
    assert result.returncode == 2 and "split evenly" in result.stderr and "val 3 images" in result.stderr
    assert not (tmp_path / "uneven").exists() or not any((tmp_path / "uneven").iterdir())
