"""The dashboard's model-serving process: it builds each run's model (poc.inference.load_model) and runs the
live pages' predictions, explanations and per-layer attention. The dashboard's process holds no model.

Why a process of its own: Streamlit calls `keras.backend.clear_session()` after every script run once keras is
imported (its script runner cleans "problem modules"). In Keras 3.15 that replaces the thread-local trackers of
Keras' global state for every thread at once (name scopes, auto-name counters, call contexts, stateless and
symbolic scopes), resets TensorFlow's default graph, drops its kernel cache and collects garbage (~0.25 s with
TensorFlow loaded). In the dashboard's process a model built in a background thread could have that state reset
half-way by another session's rerun, and a latency timed after a rerun would include re-created kernels. Here
nobody calls it; and the live pages no longer import TensorFlow into the dashboard's process at all.

`ModelServer` is the dashboard's side (no Streamlit, no TensorFlow): it starts the process on first use, over a
socket pair, and starts it again on the next request after it died. Requests are pickled `(id, op, args)`,
answered as `(id, ok, value)` in any order. Inside the process: one builder thread (one model at a time,
keyed by run directory, stage and the stamps of the weights file and run.json; the last MAX_MODELS kept) and one
predictor thread (one timed call at a time; a latency timed while a build ran beside it is flagged).
"""

from __future__ import annotations

import functools
import itertools
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

APP_DIR = Path(__file__).resolve().parents[1]  # on the serving process's import path
COMMAND = [sys.executable, "-c", f"import {__name__} as serving; serving.main()"]  # + the socket's fd
MAX_MODELS = 6  # models kept by the serving process (least recently used dropped)
BUILDER, PREDICTOR = "vitrine-build", "vitrine-predict"  # thread names in the serving process
Key = tuple  # (run directory, stage or None, weights stamp, run.json stamp): one version of one model


@dataclass(frozen=True)
class ServedModel:
    """A model built in the serving process: what a page needs to prepare its input and read its output."""

    key: Key
    class_names: list
    image_size: int  # px, the run's square input


@dataclass
class Prediction:
    probs: np.ndarray  # (N, C)
    seconds: float  # per image: the compiled calls alone, after the model's warm-up
    maps: np.ndarray | None = None  # (N, h, w) in [0, 1]: attention rollout or Grad-CAM
    method: str | None = None
    note: str | None = None  # why there is no map
    layer: str | None = None  # the backbone layer Grad-CAM read (None for attention rollout)
    contended: bool = False  # a build ran in the serving process while the call was timed


def _send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("!Q", len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream):
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the other side closed the connection")
    (size,) = struct.unpack("!Q", header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the connection")
    return pickle.loads(data)


# ---------------------------------------------------------------- the dashboard's side

class _Process:
    """One serving process and the requests it has not answered yet."""

    def __init__(self, command: list[str]):
        mine, theirs = socket.socketpair()
        path = os.pathsep.join(p for p in (str(APP_DIR), os.environ.get("PYTHONPATH")) if p)
        with theirs:
            self.proc = subprocess.Popen([*command, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                         env={**os.environ, "PYTHONPATH": path}, stdin=subprocess.DEVNULL)
        self.sock, self.stream = mine, mine.makefile("rwb")
        self.alive = True
        self.lock, self.send_lock = threading.Lock(), threading.Lock()  # the table; the socket's writing end
        self.pending: dict[int, Future] = {}
        self.ids = itertools.count()
        threading.Thread(target=self._read, name="vitrine-serving-reader", daemon=True).start()

    def request(self, op: str, *args) -> Future:
        job = Future()
        with self.lock:
            registered = self.alive  # else the reader has already failed what was pending
            if registered:
                rid = next(self.ids)
                self.pending[rid] = job
        if not registered:
            job.set_exception(self._stopped())
            return job
        try:
            with self.send_lock:
                _send(self.stream, (rid, op, args))
        except (OSError, ValueError):  # the process is gone: the reader fails what is pending
            self._hang_up()
        return job

    def _hang_up(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # the process reads EOF and exits; our reader too
        except OSError:
            pass

    def _read(self) -> None:
        try:
            while True:
                rid, ok, value = _receive(self.stream)
                with self.lock:
                    job = self.pending.pop(rid, None)
                if job is not None:
                    job.set_result(value) if ok else job.set_exception(value)
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):
            pass
        with self.lock:
            self.alive, pending, self.pending = False, list(self.pending.values()), {}
        for job in pending:
            job.set_exception(self._stopped())

    def _stopped(self) -> RuntimeError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"the model-serving process stopped (exit code {code}); the next request starts it "
                            "again")

    def close(self) -> None:
        self._hang_up()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ModelServer:
    """The dashboard's handle on the serving process (thread-safe; one per dashboard process)."""

    def __init__(self, command: list[str] | None = None):
        self.command = command or COMMAND
        self._lock = threading.Lock()
        self._process: _Process | None = None
        self._builds: OrderedDict[Key, Future] = OrderedDict()

    def _current(self) -> _Process:  # the caller holds self._lock
        if self._process is None or not self._process.alive:
            self._process, self._builds = _Process(self.command), OrderedDict()
        return self._process

    def build(self, key: Key, warm: bool = True) -> Future:
        """The model of `key` (built once per serving process; `warm`: its compiled predict traced too); the
        Future's result is a ServedModel, or the build's error (poc.errors.UserError: no usable weights)."""
        with self._lock:
            process = self._current()
            job = self._builds.get(key)
            if job is None:
                job = self._builds[key] = process.request("build", key, warm)
            self._builds.move_to_end(key)
            while len(self._builds) > 4 * MAX_MODELS:
                self._builds.popitem(last=False)
            return job

    @property
    def pid(self) -> int | None:
        """The serving process's id; None before the first request or after close()."""
        process = self._process
        return None if process is None else process.proc.pid

    def busy(self) -> bool:
        """Whether a build asked for by this dashboard is still running."""
        with self._lock:
            return any(not job.done() for job in self._builds.values())

    def _call(self, op: str, *args):
        with self._lock:
            process = self._current()
        return process.request(op, *args).result()

    def predict(self, model: ServedModel, pixels: np.ndarray, explain: bool = True) -> Prediction:
        """Probabilities, latency and (`explain`) the explanation maps of raw pixels (N, S, S, 3)."""
        return self._call("predict", model.key, np.asarray(pixels, np.float32), explain)

    def layer_attention(self, model: ServedModel, pixels: np.ndarray) -> np.ndarray:
        """(N, L, H, g, g) class-token attention of every block and head of a ViT (poc.inference)."""
        return self._call("layers", model.key, np.asarray(pixels, np.float32))

    def close(self) -> None:
        """Stop the serving process (a later request starts a new one)."""
        with self._lock:
            process, self._process, self._builds = self._process, None, OrderedDict()
        if process is not None:
            process.close()


# ---------------------------------------------------------------- the serving process

class _Models:
    """The serving process's models: one builder thread, the last MAX_MODELS builds kept."""

    def __init__(self):
        self.builder = ThreadPoolExecutor(1, thread_name_prefix=BUILDER)
        self.lock = threading.Lock()
        self.table: OrderedDict[Key, Future] = OrderedDict()
        self.jobs: list[Future] = []

    def _submit(self, fn, *args) -> Future:
        job = self.builder.submit(fn, *args)
        self.jobs = [j for j in self.jobs if not j.done()] + [job]
        return job

    def get(self, key: Key) -> Future:
        with self.lock:
            if key not in self.table:
                self.table[key] = self._submit(_load, key)
                while len(self.table) > MAX_MODELS:
                    self.table.popitem(last=False)
            self.table.move_to_end(key)
            return self.table[key]

    def warmed(self, key: Key) -> Future:
        build = self.get(key)
        with self.lock:  # the builder runs its tasks in order: this one after the build
            return self._submit(_warm, build)

    def busy(self) -> bool:
        with self.lock:
            return any(not job.done() for job in self.jobs)


def _load(key: Key):
    from poc import inference
    from poc.runs.store import RunDir

    path, stage = key[0], key[1]
    return inference.load_model(RunDir(Path(path)), stage)


def _warm(build: Future):
    from poc import inference

    run = build.result()
    inference.warm_up(run)
    return run


def _served(key: Key, run) -> ServedModel:
    return ServedModel(key, list(run.class_names), int(run.image_size))


def _predict(models: _Models, key: Key, pixels: np.ndarray, explain: bool) -> Prediction:
    from poc import inference

    run = models.get(key).result()
    inference.warm_up(run)  # no timed call pays for tracing
    busy = models.busy()
    probs, seconds = inference.predict_arrays(run, pixels)
    result = Prediction(probs, seconds, contended=busy or models.busy())
    if explain:
        try:
            result.maps, result.method, result.note, result.layer = inference.explain(run, pixels)
        except Exception as exc:  # noqa: BLE001 - the prediction stands even when its explanation fails
            result.note = f"explanation failed: {exc}"
    return result


def _layers(models: _Models, key: Key, pixels: np.ndarray) -> np.ndarray:
    from poc import inference

    return inference.layer_attention(models.get(key).result(), pixels)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it pickles (UserError, OSError...), else its type and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def serve(sock: socket.socket) -> None:
    """Answer the dashboard's requests until it closes the connection."""
    stream, send_lock = sock.makefile("rwb"), threading.Lock()
    models, predictor = _Models(), ThreadPoolExecutor(1, thread_name_prefix=PREDICTOR)

    def answer(rid: int, op: str, key: Key, job: Future) -> None:
        try:
            value = job.result()
            message = (rid, True, _served(key, value) if op == "build" else value)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the page that asked
            message = (rid, False, _portable(exc))
        with send_lock:
            try:
                _send(stream, message)
            except (OSError, ValueError):
                pass  # the dashboard is gone; the loop below ends too

    while True:
        try:
            rid, op, args = _receive(stream)
        except (EOFError, OSError):
            break
        if op == "build":
            key, warm = args
            job = models.warmed(key) if warm else models.get(key)
        elif op == "predict":
            job = predictor.submit(_predict, models, *args)
        elif op == "layers":
            job = predictor.submit(_layers, models, *args)
        else:
            job = Future()
            job.set_exception(ValueError(f"unknown request {op!r}"))
        job.add_done_callback(functools.partial(answer, rid, op, args[0] if args else None))
    os._exit(0)  # without waiting for a build nobody will read


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the dashboard, whose exit closes the socket
    serve(socket.socket(fileno=int(sys.argv[-1])))
