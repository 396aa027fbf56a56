"""poc.runs.status: the status vocabulary, process liveness, effective status, progress fractions and stages."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from poc.runs import store
from poc.runs import status as runstatus


def test_the_vocabulary_holds_every_status_a_page_shows():
    assert set(runstatus.STATUSES) == {"queued", "running", "completed", "failed", "cancelled", "interrupted",
                                       "unreadable"}
    assert runstatus.ACTIVE == ("queued", "running")
    assert set(runstatus.FINAL) == set(runstatus.STATUSES) - set(runstatus.ACTIVE)
    assert set(runstatus.WRITTEN) | set(runstatus.DERIVED) == set(runstatus.STATUSES)


def _state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()[0]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="zombies are read from /proc")
def test_a_zombie_is_not_alive_though_it_answers_signal_zero():
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while _state(proc.pid) != "Z" and time.monotonic() < deadline:  # exited, not yet reaped
        time.sleep(0.02)
    try:
        assert _state(proc.pid) == "Z"
        os.kill(proc.pid, 0)  # the naive probe still succeeds on a zombie
        assert not runstatus.pid_alive(proc.pid)
    finally:
        proc.wait()
    assert not runstatus.pid_alive(proc.pid)


def test_live_groups_follow_a_process_group_until_it_is_gone():
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert runstatus.pid_alive(proc.pid)
        assert proc.pid in runstatus.live_groups(candidates=[proc.pid])
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in runstatus.live_groups(candidates=[proc.pid])
    assert runstatus.pid_alive(os.getpid())


def _record(tmp_path: Path, info: dict | None) -> store.RunRecord:
    rd = store.RunDir(tmp_path / "run").create()
    if info is not None:
        rd.write_run(info)
    return store.load_run(rd.path)


@pytest.mark.parametrize("info, expected", [
    ({"status": "running", "pid": 2**22 + 12345}, "interrupted"),  # above Linux's default pid_max: gone
    ({"status": "queued", "pid": 2**22 + 12345}, "interrupted"),
    ({"status": "running", "pid": os.getpid()}, "running"),
    ({"status": "running"}, "running"),  # no pid recorded: nothing to contradict it
    ({"status": "completed", "pid": 2**22 + 12345}, "completed"),  # a finished run's process is meant to be gone
    (None, "unreadable"),
])
def test_effective_status(tmp_path, info, expected):
    assert runstatus.effective_status(_record(tmp_path, info)) == expected


def test_phase_fraction_counts_steps_within_the_phase():
    progress = {"phase": "ft", "epoch": 2, "epochs": 5, "step": 3, "steps": 5}
    assert runstatus.phase_fraction(progress) == pytest.approx(((2 - 1) * 5 + 3) / (5 * 5))
    assert runstatus.phase_fraction({"phase": "queued", "epoch": None, "epochs": None, "step": 0}) is None
    assert runstatus.phase_fraction(None) is None
    assert runstatus.phase_fraction({"epoch": 9, "epochs": 5, "step": 5, "steps": 5}) == 1.0


@pytest.mark.parametrize("progress, config, expected", [
    ({"phase": "ft", "epoch": 3, "epochs": 4, "step": 0, "steps": 10}, {"tl_epochs": 4, "ft_epochs": 4}, 6 / 8),
    ({"phase": "tl", "epoch": 2, "epochs": 4, "step": 5, "steps": 10}, {"tl_epochs": 4, "ft_epochs": 4}, 1.5 / 8),
    ({"phase": "eval_tl"}, {"tl_epochs": 4, "ft_epochs": 4}, 4 / 8),
    ({"phase": "eval_ft"}, {"tl_epochs": 4, "ft_epochs": 4}, 1.0),
    ({"phase": "ft", "epoch": 2, "epochs": 4, "step": 0, "steps": 10},
     {"tl_epochs": 50, "ft_epochs": 4, "from_run": "r"}, 1 / 4),  # phase 1 came from another run
    ({"phase": "queued"}, {"tl_epochs": 4, "ft_epochs": 4}, 0.0),
])
def test_run_fraction_spans_both_phases(progress, config, expected):
    assert runstatus.run_fraction(progress, config) == pytest.approx(expected)


def test_a_plan_of_runs_moves_with_every_epoch_of_the_run_in_progress():
    config = {"tl_epochs": 8, "ft_epochs": 6}
    fractions = [runstatus.runs_fraction(
        [("completed", None, config), ("running", {"phase": "tl", "epoch": e, "epochs": 8, "step": 0,
                                                  "steps": 4}, config)], planned=2) for e in (1, 2, 3)]
    assert fractions == pytest.approx([(1 + 0 / 14) / 2, (1 + 1 / 14) / 2, (1 + 2 / 14) / 2])
    assert runstatus.runs_fraction([("failed", None, config)], planned=2) == 0.0


def test_stages_are_those_with_a_metrics_file(tmp_path):
    rd = store.RunDir(tmp_path / "r").create()
    assert runstatus.stages(rd) == []
    store.write_json(rd.eval_file("ft", "metrics"), {"accuracy": 0.5})
    assert runstatus.stages(rd) == ["ft"]
    store.write_json(rd.eval_file("tl", "metrics"), {"accuracy": 0.4})
    assert runstatus.stages(rd) == ["tl", "ft"]


# ---------------------------------------------------------------- which stage is final (one rule for every reader)

def _run_with_stages(tmp_path: Path, evaluated: tuple[str, ...], info: dict) -> store.RunDir:
    rd = store.RunDir(tmp_path / "run").create()
    rd.write_run({"id": "run", **info})
    for stage in evaluated:
        rd.eval_file(stage, "metrics").parent.mkdir(parents=True, exist_ok=True)
        rd.eval_file(stage, "metrics").write_text('{"accuracy": 0.5}')
    return rd


@pytest.mark.parametrize("case, evaluated, info, expected", [
    ("complete, fine-tuning won on validation", ("tl", "ft"), {"final_stage": "ft"}, "ft"),
    ("complete, transfer learning won on validation", ("tl", "ft"), {"final_stage": "tl"}, "tl"),
    ("old run: no final_stage recorded", ("tl", "ft"), {}, "ft"),
    ("partial: only phase 1 evaluated", ("tl",), {"final_stage": None}, "tl"),
    ("resumed run that recorded tl after both stages", ("tl", "ft"), {"final_stage": "tl", "resumed": True}, "tl"),
    ("recorded stage whose files are gone", ("tl",), {"final_stage": "ft"}, "tl"),
    ("nothing evaluated", (), {"final_stage": "ft"}, None),
])
def test_the_final_stage_is_the_recorded_one_when_evaluated_else_the_last_evaluated(tmp_path, case, evaluated, info,
                                                                                   expected):
    rd = _run_with_stages(tmp_path, evaluated, info)
    assert runstatus.final_stage(info.get("final_stage"), list(evaluated)) == expected, case
    assert runstatus.final_stage_of(rd, store.read_json(rd.run_json)) == expected, case


def test_the_leaderboard_compare_and_report_agree_on_the_final_stage_of_an_old_run(fixture_runs):
    """Every reader asks poc.runs.status.final_stage: an old run (no final_stage) reads the same everywhere."""
    from poc.analysis.leaderboard import leaderboard
    from poc.analysis.report import _load

    runs = store.list_runs(next(iter(fixture_runs.values())).parent)
    board = leaderboard(runs).set_index("id")
    for run in runs:
        expected = runstatus.final_stage_of(run.dir, run.info or {})
        if expected is None or run.status != "completed":
            continue
        assert board.loc[run.dir.id, "final_stage"] == expected
        assert _load(run.dir).final == expected
