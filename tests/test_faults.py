"""Fault injection: a real training process SIGKILLed during phase 1, at the start of the tl evaluation (phase 1's
weights saved, phase 2 not begun), during phase 2 and during the final evaluation, resumed each time with
`train --resume`, ends `completed` with every artifact and no epoch lost or repeated; every interrupted state on
the way parses, lists and renders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from apptest_checks import assert_no_section_failed
from cli import ROOT
from conftest import make_class_folders
from poc.runs import store
from poc.analysis.leaderboard import leaderboard

# Where to kill, in the run's order (one run, resumed after each kill, cannot go back): as soon as progress.json
# names that phase at that epoch or later (0: any). ("tl", 2) and ("ft", 2): after the phase's first epoch, so the
# resume starts from that phase's checkpoint.
KILLS = [("tl", 2), ("eval_tl", 0), ("ft", 2), ("eval_ft", 0)]
ORDER = ["features_tl", "tl", "eval_tl", "ft", "eval_ft"]
# VGG16: the cheapest backbone to trace, which is most of each process's time after importing TensorFlow.
TINY = ["--model", "vgg16", "--weights", "none", "--image-size", "32", "--tl-epochs", "4", "--ft-epochs", "2",
        "--patience", "10", "--batch-size", "4", "--fine-tune-at", "block5_conv1"]


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


def _kill_at(proc: subprocess.Popen, runs: Path, target: tuple[str, int]) -> tuple[str, int] | None:
    """SIGKILL `proc` as soon as its run reaches `target` (phase, epoch) or later; returns the (phase, epoch) it
    was in, or None when the process finished first."""
    goal = (ORDER.index(target[0]), target[1])
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        phase, epoch = _phase(runs, proc.pid) if runs.is_dir() else (None, 0)
        if phase in ORDER and (ORDER.index(phase), epoch) >= goal:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return phase, epoch
        time.sleep(0.02)
    proc.wait(timeout=240)
    return None


pytestmark = pytest.mark.system  # SIGKILLs at the phase boundaries: make test-system

@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    data = make_class_folders(base / "data", {"a": 6, "b": 6}, size=(32, 32))  # split 8 / 2 / 2
    runs, snapshots = base / "runs", base / "snapshots"
    kills, proc = [], _start(["--data", str(data), *TINY], runs)
    for i, target in enumerate(KILLS):
        where = _kill_at(proc, runs, target)
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


def test_the_kills_land_in_phase_one_the_tl_evaluation_phase_two_and_the_final_evaluation(killed_and_resumed):
    kills = killed_and_resumed["kills"]
    assert [k["phase"] for k in kills] == [target for target, _ in KILLS], [(k["phase"], k["epoch"]) for k in kills]
    # Both training phases are killed after a completed epoch: each resume starts from a checkpoint.
    assert all(k["epoch"] >= 2 for k in kills if k["phase"] in ("tl", "ft")), [(k["phase"], k["epoch"]) for k in kills]


def test_every_interrupted_state_parses_and_lists_as_interrupted(killed_and_resumed):
    for kill in killed_and_resumed["kills"]:
        assert kill["record"].readable and not kill["record"].problems, kill["record"].problems
        row = kill["listing"].iloc[0]
        assert row["status"] == "interrupted", (kill["phase"], row["status"])


def test_resume_completes_the_run_with_every_artifact(killed_and_resumed):
    assert killed_and_resumed["returncode"] == 0, killed_and_resumed["output"][-3000:]
    rd = store.RunDir(next(p for p in killed_and_resumed["runs"].iterdir() if p.is_dir()))
    info = json.loads(rd.run_json.read_text())
    assert info["status"] == "completed" and info["error"] is None
    assert len(info["resumed"]) == len(killed_and_resumed["kills"]) == len(KILLS)
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
    assert list(history["phase"]) == ["tl"] * 4 + ["ft"] * 2  # patience 10: no early stop


def test_every_page_renders_with_the_interrupted_snapshots(killed_and_resumed, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VITRINE_RUNS_DIR", str(killed_and_resumed["snapshots"]))
    for page in sorted((ROOT / "pages").glob("*.py")):
        at = AppTest.from_file(str(page), default_timeout=120).run()
        assert not at.exception, (page.name, [e.value for e in at.exception])
        assert_no_section_failed(at)
