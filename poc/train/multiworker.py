"""Training on several machines (`--distribute multiworker`): the roles of the workers and a fit loop.

Keras 3's `Model.fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585, still open in Keras
3.15): before the first step it reduces a tuple of PerReplica batches, which the collective ops cannot
convert, and every step's logs are reduced with `axis=0` over scalars. `fit` below is the same epoch loop
on public pieces instead: `Model.train_step` / `Model.test_step` inside `strategy.run`, the metrics read in
cross-replica context (their variables sum over the replicas on read, so the figures are the global ones), and
the usual `keras.callbacks.CallbackList`, so history.csv, progress.json, early stopping and checkpoints work
unchanged. Every worker sees the same logs, so every worker takes the same early-stopping decision; a worker
deciding alone would leave the others waiting in the next collective.

Roles: the chief (task `chief`, or `worker` 0 when the cluster has no chief) writes the run directory. The
other workers train in a temporary runs directory that is removed when they finish: their copies of the
weights are identical, and two writers of one run directory on a shared file system would collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from poc.errors import UserError


def cluster_task() -> tuple[str, int, dict]:
    """(task type, task index, cluster) from $TF_CONFIG, with a message that says what is wrong."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError("--distribute multiworker needs TF_CONFIG describing the cluster on every machine, e.g. "
                        '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                        '"task": {"type": "worker", "index": 0}} (index 1 on the second machine)')
    try:
        config = json.loads(raw)
        task, cluster = config["task"], config["cluster"]
        kind, index = str(task["type"]), int(task["index"])
        hosts = cluster[kind]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"TF_CONFIG is not a cluster description ({type(exc).__name__}: {exc}); it needs "
                        '"cluster" (e.g. {"worker": ["host1:12345", "host2:12345"]}) and "task" '
                        '(e.g. {"type": "worker", "index": 0})') from None
    if not 0 <= index < len(hosts):
        raise UserError(f"TF_CONFIG: task {kind} {index} is not in the cluster ({len(hosts)} {kind} address(es))")
    return kind, index, cluster


def is_chief() -> bool:
    kind, index, cluster = cluster_task()
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


@contextlib.contextmanager
def worker_runs_dir(distribute: str, runs_dir: Path | str | None):
    """The runs directory this process writes: the given one on the chief (and without multiworker), a
    temporary one, removed afterwards, on the other workers. Yields (runs_dir, is_writer)."""
    if distribute != "multiworker" or is_chief():
        yield runs_dir, True
        return
    scratch = Path(tempfile.mkdtemp(prefix="vitrine-worker-"))
    try:
        yield scratch, False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fit(model, strategy, data, validation_data, epochs: int, initial_epoch: int, callbacks: list,
        verbose: int) -> None:
    """`model.fit(data, validation_data=..., epochs=..., initial_epoch=..., callbacks=...)` under
    `strategy`, for the strategies Keras' own fit cannot run (see the module docstring). `data` yields global
    batches; the strategy splits each across the replicas."""
    import keras
    import tensorflow as tf

    with strategy.scope():
        if not model.optimizer.built:  # its variables mirrored, created before the first replicated step
            model.optimizer.build(model.trainable_variables)
    train_batches = strategy.experimental_distribute_dataset(data)
    val_batches = strategy.experimental_distribute_dataset(validation_data)

    @tf.function
    def train_step(batch):
        logs = strategy.run(model.train_step, args=(batch,))
        # The replicas' running averages, averaged: every worker gets the same batch logs.
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in logs.items()}

    @tf.function
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    def global_metrics() -> dict[str, float]:
        with strategy.scope():  # cross-replica read: each metric's state summed over every replica
            return {k: float(v) for k, v in model.get_metrics_result().items()}

    cardinality = int(data.cardinality())
    steps = cardinality if cardinality > 0 else None  # unknown (-2) or infinite (-1): no step count
    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                                 verbose=verbose, model=model, epochs=epochs, steps=steps)
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step, batch in enumerate(train_batches):
            callback_list.on_train_batch_begin(step)
            batch_logs = {k: float(v) for k, v in train_step(batch).items()}
            callback_list.on_train_batch_end(step, batch_logs)
            if model.stop_training:
                break
        logs = global_metrics()
        model.reset_metrics()
        for batch in val_batches:
            test_step(batch)
        logs.update({f"val_{k}": v for k, v in global_metrics().items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
