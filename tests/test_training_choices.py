"""What training decides and how it fails: the final stage by validation loss, a frozen backbone in inference
mode, train fractions, cancels, and clear failures (a diverged loss, a failing disk). What a completed run
records (seeds, validation metrics per stage, weights files) is checked on test_train_cli's run."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from poc.runs import store
from poc.config import RunConfig
from poc.errors import UserError
from poc.train.phases import choose_final_stage
from poc.train.training import train

TINY = dict(model="mobilenet_v2", weights="none", image_size=32, tl_epochs=2, ft_epochs=1, batch_size=16,
            lr_ft=1e-3, augment=["flip", "zoom"])


@pytest.mark.parametrize("losses, expected", [({"tl": 0.5, "ft": 0.7}, "tl"), ({"tl": 0.7, "ft": 0.5}, "ft"),
                                              ({"tl": 0.5, "ft": 0.5}, "ft"), ({"tl": 0.5, "ft": float("nan")}, "tl"),
                                              ({"ft": 0.9}, "ft")])
def test_choose_final_stage_by_validation_loss(losses, expected):
    assert choose_final_stage(losses) == expected


def test_a_frozen_backbone_runs_in_inference_mode_during_fit():
    """EfficientNetB0 has stochastic-depth Dropout inside the backbone: frozen, it must be off in phase 1."""
    from poc.models import build
    from poc.models.cutoffs import freeze_backbone, frozen_view

    keras.utils.set_random_seed(0)
    model = build("efficientnet_b0", 3, 32, "none")
    freeze_backbone(model)
    view = frozen_view(model)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    features = keras.Model(view.input, view.get_layer("frozen_backbone").output)
    inference = np.asarray(features(x, training=False))
    np.testing.assert_allclose(np.asarray(features(x, training=True)), inference, rtol=1e-5, atol=1e-12)
    naive = keras.Model(model.input, model.get_layer("dropout").input)  # the plain classifier graph
    assert not np.allclose(np.asarray(naive(x, training=True)), inference, rtol=1e-3, atol=1e-12)  # features ~1e-7
    assert {id(w) for w in view.weights} == {id(w) for w in model.weights}  # the same variables, not copies


def test_an_offline_imagenet_download_says_what_to_use_instead(monkeypatch):
    from poc.models import build

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -3] "
                        "Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(UserError, match="--weights demo") as caught:
        build("mobilenet_v2", 3, 32, "imagenet")
    assert "--weights none" in str(caught.value)


def test_a_non_finite_loss_stops_the_phase_with_its_epoch_and_a_hint(tmp_path):
    from poc.runs.writer import NonFiniteLoss, RunWriter

    rd = store.RunDir(tmp_path / "run").create()
    writer = RunWriter(rd, "ft", 5, [], steps=4, first_epoch=0, hint="Lower the learning rate (--lr-ft).")
    writer.on_train_begin()
    writer.on_epoch_begin(2)
    writer.on_train_batch_end(0, {"loss": 1.2})
    with pytest.raises(NonFiniteLoss, match=r"phase ft, epoch 3 .*loss became nan.*--lr-ft"):
        writer.on_train_batch_end(1, {"loss": float("nan")})


def test_a_diverged_run_is_failed_with_the_reason_and_keeps_earlier_weights(demo_dataset, tmp_path, monkeypatch):
    from poc.runs import writer as runwriter

    original = runwriter.RunWriter.on_train_batch_end

    def poisoned(self, batch, logs=None):  # phase 2 diverges at its first step
        if self.stage == "ft":
            logs = {**(logs or {}), "loss": float("inf")}
        return original(self, batch, logs)

    monkeypatch.setattr(runwriter.RunWriter, "on_train_batch_end", poisoned)
    with pytest.raises(UserError, match="phase ft, epoch 1"):
        train(RunConfig(data=str(demo_dataset), **{**TINY, "tl_epochs": 1}), tmp_path / "runs")
    rd = store.RunDir(next(p for p in (tmp_path / "runs").iterdir() if p.is_dir()))
    info = json.loads(rd.run_json.read_text())
    assert info["status"] == "failed" and "loss became inf" in info["error"] and "learning rate" in info["error"]
    assert rd.stage_weights("tl").exists() and rd.eval_file("tl", "metrics").exists()


def test_resume_refuses_a_run_whose_process_is_alive(tmp_path):
    import os

    from poc.train.training import resume

    rd = store.RunDir(tmp_path / "runs" / "live").create()
    rd.write_run({"id": "live", "status": "running", "pid": os.getpid(), "config": {"data": "d"}})
    with pytest.raises(UserError, match="still running"):
        resume("live", tmp_path / "runs")


def test_a_failing_disk_fails_the_run_with_the_reason_and_corrupts_nothing(demo_dataset, tmp_path, monkeypatch):
    import os

    code = 28  # ENOSPC end to end; the other storage errors take the same path (the test below)
    real_write_csv = store.write_csv

    def full_disk(path, df, index=False):
        if "eval" in str(path) and "/ft/" in str(path):  # phase 1 wrote everything; phase 2's eval hits the wall
            raise OSError(code, os.strerror(code), str(path))
        return real_write_csv(path, df, index=index)

    monkeypatch.setattr(store, "write_csv", full_disk)
    with pytest.raises(UserError, match=os.strerror(code)) as caught:
        train(RunConfig(data=str(demo_dataset), **{**TINY, "tl_epochs": 1}), tmp_path / "runs")
    run_id = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir()).name
    assert f"--resume {run_id}" in str(caught.value)
    rd = store.RunDir(next(p for p in (tmp_path / "runs").iterdir() if p.is_dir()))
    info = json.loads(rd.run_json.read_text())
    assert info["status"] == "failed" and os.strerror(code) in info["error"]
    assert store.read_history(rd) is not None and store.read_split(rd) is not None
    stage_tl = store.read_stage(rd, "tl")
    assert not stage_tl.problems  # the earlier stage's files still parse
    assert not list(rd.path.rglob("*.tmp"))  # no half-written temp file left behind


@pytest.mark.parametrize("code", [28, 30, 13, 1, 122])  # ENOSPC, EROFS, EACCES, EPERM, EDQUOT
def test_every_storage_error_fails_the_run_with_its_reason_and_the_resume_command(tmp_path, code):
    import os

    from poc.train.training import _fail

    rd = store.RunDir(tmp_path / "runs" / "r1").create()
    rd.write_run({"id": "r1", "status": "running", "config": {"data": "d"}})
    with pytest.raises(UserError) as caught:
        _fail(OSError(code, os.strerror(code), str(rd.path / "eval" / "ft" / "report.csv")), rd)
    assert os.strerror(code) in str(caught.value) and "--resume r1" in str(caught.value)
    info = json.loads(rd.run_json.read_text())
    assert info["status"] == "failed" and os.strerror(code) in info["error"]


def test_another_os_error_is_recorded_and_raised_as_itself(tmp_path):
    from poc.train.training import _fail

    rd = store.RunDir(tmp_path / "runs" / "r1").create()
    rd.write_run({"id": "r1", "status": "running", "config": {"data": "d"}})
    error = OSError(5, "Input/output error")  # EIO: not something the user fixes by freeing space
    with pytest.raises(OSError) as caught:
        _fail(error, rd)
    assert caught.value is error and json.loads(rd.run_json.read_text())["status"] == "failed"


def test_a_train_fraction_keeps_a_stratified_share_and_the_full_split_fingerprint():
    from poc.data.split import split_fingerprint
    from poc.train.training import subsample_train

    rows = [(f"/d/{c}/{i}.png", c, "train" if i < 20 else ("val" if i < 23 else "test"), f"{c}{i}")
            for c in ("a", "b", "c") for i in range(26)]
    split = pd.DataFrame(rows, columns=["path", "label", "split", "sha256"])
    half = subsample_train(split, 0.25, seed=3)
    assert half[half["split"] == "train"]["label"].value_counts().to_dict() == {"a": 5, "b": 5, "c": 5}
    for s in ("val", "test"):
        assert half[half["split"] == s]["path"].tolist() == split[split["split"] == s]["path"].tolist()
    assert half.attrs["split_fingerprint"] == split_fingerprint(split)
    assert subsample_train(split, 0.25, seed=3).equals(half)  # seeded
    assert not subsample_train(split, 0.25, seed=4).equals(half)
    assert subsample_train(split, 1.0, seed=3) is split


def test_sigterm_only_records_the_cancel_and_the_next_safe_point_raises_it(monkeypatch):
    """The handler must not raise wherever the main thread is (inside TensorFlow's tracing that crashed the
    process or was swallowed): it records the request, and training's next batch, epoch or evaluation step raises
    Cancelled."""
    import signal

    from poc.errors import Cancelled
    from poc.runs import writer as runwriter

    monkeypatch.setattr(runwriter, "_CANCEL_REQUESTED", [])
    callback = runwriter.RunWriter(store.RunDir.__new__(store.RunDir), "tl", 3, [], steps=2, first_epoch=0)
    with runwriter.cancel_on_sigterm():
        runwriter.raise_if_cancelled()  # nothing requested yet
        signal.raise_signal(signal.SIGTERM)  # returns: no exception from the handler
        assert runwriter.cancel_requested()
        for safe_point in (runwriter.raise_if_cancelled, lambda: callback.on_train_batch_end(0, {"loss": 1.0}),
                           lambda: callback.on_epoch_begin(1), lambda: callback.on_test_batch_end(0)):
            with pytest.raises(Cancelled):
                safe_point()


def test_a_cancel_that_surfaces_as_another_exception_still_cancels_the_run(demo_dataset, tmp_path, monkeypatch):
    """Whatever exception ends a run after Cancel's SIGTERM arrived (here a SystemError from C code), the run is
    cancelled, not failed."""
    import signal

    from poc.train import phases
    from poc.runs import writer as runwriter
    from poc.config import RunConfig
    from poc.errors import Cancelled
    from poc.train.training import train

    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)  # the handler only records the request
        raise SystemError("Objects/listobject.c:338: bad argument to internal function")

    monkeypatch.setattr(phases, "run_phases", interrupted)
    monkeypatch.setattr(runwriter, "_CANCEL_REQUESTED", [])
    config = RunConfig(data=str(demo_dataset), model="mobilenet_v2", weights="none", image_size=32, tl_epochs=1,
                       ft_epochs=0, batch_size=16)
    with pytest.raises(Cancelled):
        train(config, tmp_path)
    (rd,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    info = json.loads((rd / "run.json").read_text())
    assert info["status"] == "cancelled" and info["error"] == "cancelled by the user"
