"""The per-epoch resume files (poc.runs.writer.Checkpoint): what a resumed phase loads is exactly what the fitted
model and its optimizer held after the epoch, and the best epoch's weights are early stopping's."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from poc.errors import UserError
from poc.runs import store
from poc.runs.writer import Checkpoint, ResumableEarlyStopping, checkpoint_dir, load_checkpoint_arrays


def _model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.BatchNormalization()(keras.layers.Dense(5, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    return model


@pytest.fixture
def fitted(tmp_path):
    """A model fitted 3 epochs with the real callbacks, validation losses chosen so that epoch 2 is the best."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)), np.eye(3)[rng.integers(0, 3, 32)]
    rd = store.run_dir(tmp_path, "r1").create()
    early = ResumableEarlyStopping(patience=5)
    val_losses = iter([1.0, 0.5, 0.7])
    snapshots = []

    class Fake(keras.callbacks.Callback):  # runs before early stopping, as RunWriter does
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(val_losses)
            snapshots.append(self.model.get_weights())

    model = _model(0)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[Fake(), early, Checkpoint(rd, "ft", early)])
    return rd, model, snapshots


def test_the_last_file_holds_the_models_weights_and_its_optimizers_variables(fitted):
    rd, model, snapshots = fitted
    state = json.loads((checkpoint_dir(rd) / "state.json").read_text())
    weights, optimizer = load_checkpoint_arrays(checkpoint_dir(rd) / state["last_file"])
    for saved, held in zip(weights, snapshots[-1], strict=True):
        np.testing.assert_array_equal(saved, held)
    held = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    assert len(optimizer) == len(held) and int(optimizer[0]) == 12  # iterations: 3 epochs of 4 batches
    for saved, value in zip(optimizer, held):
        np.testing.assert_array_equal(saved, value)


def test_the_best_file_holds_the_best_epochs_weights_and_older_files_are_removed(fitted):
    rd, _, snapshots = fitted
    state = json.loads((checkpoint_dir(rd) / "state.json").read_text())
    assert (state["epoch"], state["best_file"], state["early"]["best_epoch"]) == (3, "best-2.npz", 1)
    weights, optimizer = load_checkpoint_arrays(checkpoint_dir(rd) / "best-2.npz")
    assert optimizer == []
    for saved, held in zip(weights, snapshots[1], strict=True):
        np.testing.assert_array_equal(saved, held)
    assert sorted(p.name for p in checkpoint_dir(rd).iterdir()) == ["best-2.npz", "last-3.npz", "state.json"]


def test_a_resumed_model_continues_exactly_as_the_uninterrupted_one(fitted):
    from poc.train.phases import _restore_checkpoint

    rd, model, snapshots = fitted
    model.set_weights(snapshots[-1])  # the end of epoch 3, before early stopping restored the best epoch
    state = json.loads((checkpoint_dir(rd) / "state.json").read_text())
    resumed = _model(1)  # other initial weights
    resumed.optimizer.build(resumed.trainable_variables)
    _restore_checkpoint(resumed, checkpoint_dir(rd) / state["last_file"])
    x, y = np.random.default_rng(1).normal(size=(8, 6)), np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]]
    model.train_on_batch(x, y)
    resumed.train_on_batch(x, y)  # Adam's step uses the restored moments and iteration count
    for a, b in zip(model.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_checkpoint_of_another_model_is_refused_by_name(fitted):
    from poc.train.phases import _restore_checkpoint

    rd, _, _ = fitted
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    other.compile(keras.optimizers.Adam(), "mse")
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(UserError, match="does not match this run's model"):
        _restore_checkpoint(other, checkpoint_dir(rd) / "last-3.npz")


def test_a_checkpoint_written_by_an_older_version_still_resumes(fitted, tmp_path):
    """Before 2026-12-07 the resume files were Keras `.weights.h5` with the optimizer inside."""
    from poc.train.phases import _checkpoint_weights, _restore_checkpoint

    _, model, snapshots = fitted
    model.set_weights(snapshots[-1])
    old = tmp_path / "last-3.weights.h5"
    model.save_weights(old)
    resumed = _model(1)
    resumed.optimizer.build(resumed.trainable_variables)
    _restore_checkpoint(resumed, old)
    for a, b in zip(model.get_weights() + [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables],
                    resumed.get_weights() + [keras.ops.convert_to_numpy(v) for v in resumed.optimizer.variables],
                    strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_checkpoint_weights(_model(2), old), snapshots[-1], strict=True):
        np.testing.assert_array_equal(a, b)
