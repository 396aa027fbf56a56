"""The model-serving process (ui.live_predict_serving): the dashboard's models are built and run out of reach of
the `keras.backend.clear_session()` that Streamlit calls in the dashboard's process after every script run.

The races are reproduced with events, not timing: a build is held half-way (a threading.Event in one process;
across processes, a connection the held build waits on), the session is cleared, the build is let go.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from multiprocessing.connection import Listener

import numpy as np
import pytest

from poc import inference
from poc.errors import UserError
from poc.runs.store import RunDir
from ui import data
from ui.live_predict_serving import ModelServer

# The serving process, with its builder thread held inside the `nth` layer call of a build until the test says.
HELD_SERVING_PROCESS = """
import threading
from multiprocessing.connection import Client

import keras

gate = Client({address!r}, authkey={authkey!r})
original, calls = keras.layers.Layer.__call__, []


def held(self, *args, **kwargs):
    if threading.current_thread().name.startswith("vitrine-build"):
        calls.append(self.name)
        if len(calls) == {nth}:
            gate.send(self.name)  # half-way through the build, inside this layer's call
            gate.recv()  # until the test has cleared the dashboard process's Keras session
    return original(self, *args, **kwargs)


keras.layers.Layer.__call__ = held
import ui.live_predict_serving as serving
serving.main()
"""


@pytest.fixture(scope="module")
def server():
    served = ModelServer()
    yield served
    served.close()


def _key(fixture_runs, monkeypatch, kind: str, stage=None):
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(fixture_runs[kind].parent))
    return data.model_key(fixture_runs[kind].name, stage)


def _pixels(size: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype(np.float32)  # (N, S, S, 3)


def _accepted(listener: Listener, timeout_s: float = 300):
    """listener.accept(), failing the test instead of hanging when the serving process never connects."""
    box = []
    waiter = threading.Thread(target=lambda: box.append(listener.accept()), daemon=True)
    waiter.start()
    waiter.join(timeout_s)
    assert box, "the held serving process did not connect"
    return box[0]


# ---------------------------------------------------------------- the race, and why a process

def _build_held_half_way(while_held) -> dict:
    """A functional model built in a background thread of this process, held between its two auto-named
    layers while `while_held()` runs in the main thread: {"model": ...} or {"error": message}."""
    import keras

    held, resume, outcome = threading.Event(), threading.Event(), {}

    def build():
        try:
            inputs = keras.Input((4,))
            x = keras.layers.Dense(4)(inputs)  # named "dense": the first of this thread
            held.set()
            resume.wait(60)
            x = keras.layers.Dense(4)(x)  # "dense_1", unless the name counters were reset meanwhile
            outcome["model"] = keras.Model(inputs, x)
        except ValueError as exc:
            outcome["error"] = str(exc)

    builder = threading.Thread(target=build)
    builder.start()
    assert held.wait(60)
    while_held()
    resume.set()
    builder.join(60)
    return outcome


def test_in_one_process_a_clear_session_from_another_thread_breaks_a_build_half_way():
    import keras

    assert "model" in _build_held_half_way(lambda: None)
    broken = _build_held_half_way(keras.backend.clear_session)  # what Streamlit does after any session's rerun
    assert 'The name "dense" is used 2 times in the model' in broken.get("error", "")


def test_a_clear_session_in_the_dashboard_process_cannot_reach_a_build_held_in_the_serving_process(
        fixture_runs, monkeypatch):
    import keras

    key = _key(fixture_runs, monkeypatch, "cnn")
    authkey = os.urandom(16)
    with Listener(authkey=authkey) as listener:
        script = HELD_SERVING_PROCESS.format(address=listener.address, authkey=authkey, nth=30)
        held = ModelServer([sys.executable, "-c", script])
        try:
            job = held.build(key)
            with _accepted(listener) as gate:
                assert gate.recv()  # the name of the layer the build is held in
                assert not job.done()
                clearing = threading.Thread(target=keras.backend.clear_session)  # a rerun ends, here
                clearing.start()
                clearing.join()
                gate.send("resume")
                model = job.result(timeout=300)
            pixels = _pixels(model.image_size)
            served = held.predict(model, pixels)
        finally:
            held.close()
    reference = inference.load_model(RunDir(fixture_runs["cnn"]))
    np.testing.assert_allclose(served.probs, inference.predict_arrays(reference, pixels)[0], atol=1e-5)


# ---------------------------------------------------------------- what it serves

@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_the_serving_process_predicts_and_explains_like_poc_inference(server, fixture_runs, monkeypatch, kind):
    model = server.build(_key(fixture_runs, monkeypatch, kind)).result(timeout=300)
    reference = inference.load_model(RunDir(fixture_runs[kind]))
    assert (model.class_names, model.image_size) == (reference.class_names, reference.image_size)
    pixels = _pixels(model.image_size)
    served = server.predict(model, pixels)
    np.testing.assert_allclose(served.probs, inference.predict_arrays(reference, pixels)[0], atol=1e-5)
    maps, method, _, layer = inference.explain(reference, pixels)
    assert served.method == method and served.note is None and served.layer == layer
    np.testing.assert_allclose(served.maps, maps, atol=1e-4)
    assert served.seconds > 0


def test_the_serving_process_gives_every_layer_and_head_of_a_vit_stage(server, fixture_runs, monkeypatch):
    model = server.build(_key(fixture_runs, monkeypatch, "vit", "tl"), warm=False).result(timeout=300)
    pixels = _pixels(model.image_size, n=1)
    expected = inference.layer_attention(inference.load_model(RunDir(fixture_runs["vit"]), "tl"), pixels)
    np.testing.assert_allclose(server.layer_attention(model, pixels), expected, atol=1e-5)  # (1, L, H, g, g)


def test_a_run_without_weights_fails_its_build_with_the_user_error(server, fixture_runs, monkeypatch):
    job = server.build(_key(fixture_runs, monkeypatch, "many_classes"))
    with pytest.raises(UserError, match="has no saved weights"):
        job.result(timeout=300)
    assert not server.busy()


def test_a_killed_serving_process_fails_what_was_pending_and_the_next_request_starts_another(
        fixture_runs, monkeypatch):
    served = ModelServer()
    try:
        pending = served.build(_key(fixture_runs, monkeypatch, "vit"))  # TensorFlow is still loading there
        first = served.pid
        os.kill(first, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="model-serving process stopped"):
            pending.result(timeout=60)
        model = served.build(_key(fixture_runs, monkeypatch, "vit")).result(timeout=300)
        second = served.pid
        assert second != first
        assert served.predict(model, _pixels(model.image_size)).probs.shape == (2, len(model.class_names))
    finally:
        served.close()
    assert served.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)  # closed: the process has exited and been waited for
