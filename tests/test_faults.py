"""Fault injection: a real training process SIGKILLed at randomised moments of phase 1, phase 2 and the
evaluations, resumed each time with `train --resume`, ends `completed` with every artifact and no epoch lost
or repeated; every interrupted state on the way parses, lists and renders."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cli import ROOT
from poc.runs import store
from poc.analysis.leaderboard import leaderboard

# Where to kill, in the run's order (one run, resumed after each kill, cannot go back): each waits until
# progress.json names that phase at that epoch or later (0: any), plus a random delay.
TARGETS = [("features_tl", 0), ("tl", 1), ("tl", 2), ("tl", 4), ("eval_tl", 0), ("ft", 1), ("ft", 2), ("ft", 3),
           ("ft", 4), ("eval_ft", 0)]
TINY = ["--model", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--tl-epochs", "4",
        "--ft-epochs", "4", "--patience", "10", "--batch-size", "16", "--fine-tune-at", "block_15_expand"]


def _start(args: list[str], runs: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VITRINE_RUNS_DIR": str(runs)}
    return subprocess.Popen([sys.executable, "-m", "poc", "train", *args, "--runs-dir", str(runs)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _phase(runs: Path, pid: int) -> tuple[str | None, int]:
    """(phase, epoch) that the run's progress.json names, once process `pid` owns the run (not its killed
    predecessor); (None, 0) before."""
    for rd in runs.iterdir():
        info = store.read_json(rd / "run.json") if rd.is_dir() else None
        if info and info.get("pid") == pid and info.get("status") == "running":
            progress = store.read_json(rd / "progress.json") or {}
            return progress.get("phase"), progress.get("epoch") or 0
    return None, 0


def _kill_at(proc: subprocess.Popen, runs: Path, target: tuple[str, int], rng: random.Random,
             order: list[str]) -> tuple[str, int] | None:
    """SIGKILL `proc` once its run reaches `target` (phase, epoch) or later, after a random delay; returns the
    (phase, epoch) it was in, or None when the process finished first."""
    goal = (order.index(target[0]), target[1])
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        phase, epoch = _phase(runs, proc.pid) if runs.is_dir() else (None, 0)
        if phase in order and (order.index(phase), epoch) >= goal:
            time.sleep(rng.uniform(0.0, 0.6))
            where = _phase(runs, proc.pid)
            if proc.poll() is not None:
                return None
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return where
        time.sleep(0.05)
    proc.wait(timeout=240)
    return None


@pytest.fixture(scope="module")
def killed_and_resumed(demo_dataset, tmp_path_factory):
    runs = tmp_path_factory.mktemp("fault_runs")
    snapshots = tmp_path_factory.mktemp("fault_snapshots")
    rng = random.Random(20261124)
    order = ["features_tl", "tl", "eval_tl", "ft", "eval_ft"]
    kills, proc = [], _start(["--data", str(demo_dataset), *TINY], runs)
    for i, target in enumerate(TARGETS):
        where = _kill_at(proc, runs, target, rng, order)
        if where is None:
            break
        phase, epoch = where
        rd = next(p for p in runs.iterdir() if p.is_dir())
        kills.append({"target": target, "phase": phase, "epoch": epoch, "listing": leaderboard(store.list_runs(runs)),
                      "record": store.load_run(rd)})
        shutil.copytree(rd, snapshots / f"{rd.name}-kill{i:02d}")
        proc = _start(["--resume", rd.name], runs)
    out, _ = proc.communicate(timeout=600)
    return {"runs": runs, "snapshots": snapshots, "kills": kills, "returncode": proc.returncode, "output": out}


def test_ten_kills_span_phase_one_phase_two_and_evaluation(killed_and_resumed):
    phases = [k["phase"] for k in killed_and_resumed["kills"]]
    assert len(phases) >= 10, phases
    assert {"tl", "ft"} <= set(phases) and {"eval_tl", "eval_ft"} & set(phases), phases
    # Phase 2 is killed at more than one epoch: a resume from a checkpoint taken after a completed ft epoch.
    assert len({k["epoch"] for k in killed_and_resumed["kills"] if k["phase"] == "ft"}) >= 2, phases


def test_every_interrupted_state_parses_and_lists_as_interrupted(killed_and_resumed):
    for kill in killed_and_resumed["kills"]:
        assert kill["record"].readable and not kill["record"].problems, kill["record"].problems
        row = kill["listing"].iloc[0]
        assert row["status"] == "interrupted", (kill["phase"], row["status"])


def test_resume_completes_the_run_with_every_artifact(killed_and_resumed):
    assert killed_and_resumed["returncode"] == 0, killed_and_resumed["output"][-3000:]
    rd = store.RunDir(next(p for p in killed_and_resumed["runs"].iterdir() if p.is_dir()))
    info = json.loads(rd.run_json.read_text())
    assert info["status"] == "completed" and info["error"] is None and len(info["resumed"]) >= 10
    assert info["final_stage"] in ("tl", "ft")
    for stage in ("tl", "ft"):
        for kind in ("predictions", "confusion_matrix", "classification_report", "metrics", "explanations"):
            assert rd.eval_file(stage, kind).exists(), (stage, kind)
        assert rd.stage_weights(stage).exists()
    assert rd.weights.exists()
    assert not (rd.path / "checkpoint").exists()  # removed once the run completed


def test_no_epoch_is_repeated_or_lost(killed_and_resumed):
    rd = store.RunDir(next(p for p in killed_and_resumed["runs"].iterdir() if p.is_dir()))
    history = pd.read_csv(rd.history_csv)
    assert list(history["epoch"]) == list(range(1, len(history) + 1))
    assert list(history["phase"]) == ["tl"] * 4 + ["ft"] * 4  # patience 10: no early stop in 4 epochs


def test_every_page_renders_with_the_interrupted_snapshots(killed_and_resumed, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VITRINE_RUNS_DIR", str(killed_and_resumed["snapshots"]))
    for page in sorted((ROOT / "pages").glob("*.py")):
        at = AppTest.from_file(str(page), default_timeout=120).run()
        assert not at.exception, (page.name, [e.value for e in at.exception])
