"""What a training process does around `fit`: history and progress files, a stop on a non-finite loss,
weights without optimizer state, cancellation, the one-training-per-device lock, and the run's own log.

Kept apart from `poc.train.training` so the training loop reads as phases and nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import signal
import time
from pathlib import Path

import keras
import numpy as np

from poc.runs import store
from poc.runs.run_info import executor_record
from poc.runs.store import RunDir
from poc.errors import Cancelled, UserError

log = logging.getLogger("poc.train.training")


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite: the run stops as failed; the weights of earlier phases stay."""


def save_model_weights(model: keras.Model, path: Path) -> None:
    """Atomically write the model's weights only: `Model.save_weights` of a compiled model would also store
    Adam's moments, which triple a fine-tuned model's file (a resume checkpoint may keep them; a model file does
    not). A functional view of the same layers has no optimizer and writes the same layout without them."""
    tmp = store.atomic_target(path)
    keras.Model(model.inputs, model.outputs, name=model.name).save_weights(tmp)
    store.commit(tmp, path)


def parameter_megabytes(model: keras.Model) -> float:
    """The model's size from its parameters (what a weights-only file holds), in MB (1e6 bytes)."""
    return round(sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights) / 1e6, 2)


class RunWriter(keras.callbacks.Callback):
    """Appends history.csv rows per epoch, keeps progress.json fresh (throttled) with an ETA, and stops the
    run with a clear reason when the loss stops being a finite number."""

    def __init__(self, rd: RunDir, stage: str, epochs: int, history: list[dict], steps: int,
                 first_epoch: int, hint: str = "", every_s: float = 0.5):
        super().__init__()
        self.rd, self.stage, self.epochs, self.history, self.steps = rd, stage, epochs, history, steps
        self.hint, self.every_s = hint, every_s
        self._phase_first_epoch = first_epoch  # global index of the phase's first epoch (a resume starts later)
        self._last_write = 0.0

    def on_train_begin(self, logs=None):
        self._phase_start = time.monotonic()
        self._steps_done = 0
        self._resumed_epochs = len(self.history) - self._phase_first_epoch  # epochs done before a resume

    def on_epoch_begin(self, epoch, logs=None):
        raise_if_cancelled()
        self._epoch = epoch
        self._epoch_start = time.monotonic()

    def on_test_batch_end(self, batch, logs=None):  # the validation pass inside fit
        raise_if_cancelled()

    def on_train_batch_end(self, batch, logs=None):
        raise_if_cancelled()
        self._steps_done += 1
        self._check_finite(logs, f"step {batch + 1}")
        now = time.monotonic()
        if now - self._last_write >= self.every_s:
            self._write_progress(batch + 1, logs)
            self._last_write = now

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._check_finite(logs, "the end of the epoch")
        lr = self.model.optimizer.learning_rate
        self.history.append({
            "epoch": epoch + 1,
            "phase": self.stage,
            "loss": float(logs.get("loss", np.nan)),
            "accuracy": float(logs.get("accuracy", np.nan)),
            "val_loss": float(logs.get("val_loss", np.nan)),
            "val_accuracy": float(logs.get("val_accuracy", np.nan)),
            "lr": float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr)),
            "seconds": round(time.monotonic() - self._epoch_start, 3),
        })
        self.rd.write_history(self.history)
        self._write_progress(self.steps, logs)

    def _check_finite(self, logs, where: str) -> None:
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                epoch = self._epoch + 1 - self._phase_first_epoch
                raise NonFiniteLoss(f"phase {self.stage}, epoch {epoch} ({where}): {key} became {float(value)}; "
                                    f"training stopped. {self.hint}".strip())

    def _write_progress(self, step: int, logs) -> None:
        elapsed = time.monotonic() - self._phase_start
        remaining_steps = (self.epochs - self._resumed_epochs) * self.steps - self._steps_done
        eta = elapsed / self._steps_done * remaining_steps if self._steps_done else None
        self.rd.write_progress({
            "phase": self.stage,
            "epoch": self._epoch + 1 - self._phase_first_epoch,
            "epochs": self.epochs,
            "global_epoch": self._epoch + 1,
            "step": step,
            "steps": self.steps,
            "metrics": {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v)},
            "eta_seconds": round(eta, 1) if eta is not None else None,
        })


# ---------------------------------------------------------------- resume checkpoints

def checkpoint_dir(rd: RunDir) -> Path:
    return rd.path / "checkpoint"


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on val_loss restoring the best weights, whose state (best loss, wait, best epoch and best
    weights) survives a crash through the checkpoint."""

    def __init__(self, patience: int, state: dict | None = None, best_weights: list | None = None):
        super().__init__(monitor="val_loss", patience=patience, restore_best_weights=True)
        self._resume_state, self._resume_weights = state, best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume_state:
            self.best, self.wait = self._resume_state["best"], self._resume_state["wait"]
            self.best_epoch, self.best_weights = self._resume_state["best_epoch"], self._resume_weights


class Checkpoint(keras.callbacks.Callback):
    """After every epoch: the fitted model's weights with optimizer state, the best weights so far, and the
    early-stopping state, in `checkpoint/`. Files are written first and `state.json` last, each atomically, so a
    kill at any moment leaves the previous complete checkpoint in force."""

    def __init__(self, rd: RunDir, stage: str, early: ResumableEarlyStopping):
        super().__init__()
        self.rd, self.stage, self.early = rd, stage, early
        self.dir = checkpoint_dir(rd)
        state = read_checkpoint(rd)
        self._best_file = state["best_file"] if state and state["stage"] == stage else None

    def on_epoch_end(self, epoch, logs=None):
        last = self.dir / f"last-{epoch + 1}.npz"
        save_checkpoint_arrays(last, self.model.get_weights(), self.model.optimizer.variables)
        if self.early.best_epoch == epoch:  # this epoch is the best so far: early stopping has just kept it
            self._best_file = f"best-{epoch + 1}.npz"
            save_checkpoint_arrays(self.dir / self._best_file, self.early.best_weights)
        store.write_json(self.dir / "state.json", {
            "stage": self.stage, "epoch": epoch + 1, "last_file": last.name, "best_file": self._best_file,
            "early": {"best": _finite_or_none(self.early.best), "wait": int(self.early.wait),
                      "best_epoch": int(self.early.best_epoch)},
        })
        for old in self.dir.glob("*-*.*"):
            if old.name not in (last.name, self._best_file):
                old.unlink(missing_ok=True)


def save_checkpoint_arrays(path: Path, weights: list, optimizer_variables: list = ()) -> None:
    """A resume file as plain arrays (npz, read back without pickle): the model's weights in `get_weights` order,
    then its optimizer's variables. Keras's `.weights.h5` walks the model's whole object graph: about 0.85 s a
    save for a 32 px MobileNetV2 on the 2-core machine against 0.25 s here, paid after every epoch."""
    arrays = {f"weight_{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
    arrays.update({f"optimizer_{i:04d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(optimizer_variables)})
    store.write_npz(path, compress=False, **arrays)


def load_checkpoint_arrays(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(weights, optimizer variables) of a file written by save_checkpoint_arrays."""
    with np.load(path, allow_pickle=False) as npz:
        names = sorted(npz.files)
        return ([npz[n] for n in names if n.startswith("weight_")],
                [npz[n] for n in names if n.startswith("optimizer_")])


def read_checkpoint(rd: RunDir) -> dict | None:
    """The last complete checkpoint's state, or None (no checkpoint, or its files are gone)."""
    state = store.read_json(checkpoint_dir(rd) / "state.json")
    if not state or not (checkpoint_dir(rd) / str(state.get("last_file"))).exists():
        return None
    return state


def _finite_or_none(value):
    return float(value) if value is not None and math.isfinite(float(value)) else None


_CANCEL_REQUESTED: list[bool] = []  # a SIGTERM arrived (a list: set from the signal handler, read by training)


def cancel_requested() -> bool:
    """Whether Cancel's SIGTERM arrived. An exception that ends a run after it (whatever its type) cancelled
    the run, it did not fail it."""
    return bool(_CANCEL_REQUESTED)


def raise_if_cancelled() -> None:
    """A safe point: Cancelled here once SIGTERM arrived (each training and validation batch, each epoch, each
    evaluation batch, each batch of the feature pass, each phase)."""
    if _CANCEL_REQUESTED:
        raise Cancelled()


@contextlib.contextmanager
def cancel_on_sigterm():
    """The launcher's Cancel sends SIGTERM to our process group: the handler only records it, and training
    raises Cancelled at its next safe point (raise_if_cancelled), so the status is written. Raised from the
    handler itself, wherever the main thread was, it broke TensorFlow: a Cancel while tf.data's functions were
    being traced was swallowed by AutoGraph (the run trained on, then hung) or crashed the process (exit -11)."""
    def handler(signum, frame):
        _CANCEL_REQUESTED.append(True)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def device_slot(runs_dir: Path, rd: RunDir):
    """One training at a time per machine (one GPU, or 2 CPU cores): a file lock; the run waits 'queued'.
    The kernel drops a flock when its process dies, so a killed training never blocks the next one.
    Under a cluster executor (run.json's `executor`, from VITRINE_EXECUTOR) there is no lock: the lock file lives
    in the runs directory, which on shared storage would queue every node's runs one by one, and the cluster's
    resources already keep each node's jobs within its CPUs and GPUs."""
    if executor_record()["kind"] != "local":
        yield
        return
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / ".device.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another training holds the device; run %s is queued", rd.id)
            rd.write_progress({"phase": "queued", "epoch": None, "epochs": None, "step": 0, "steps": None,
                               "metrics": {}, "eta_seconds": None})
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def attach_log(rd: RunDir) -> logging.Handler:
    handler = logging.FileHandler(rd.train_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler
