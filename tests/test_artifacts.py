"""The artifact module: atomic writes, and reads that report damage instead of raising."""

from __future__ import annotations

import json

import pandas as pd

from poc import artifacts
from poc.leaderboard import effective_status, leaderboard


def test_atomic_writes_leave_no_temp_files_and_replace_whole_files(tmp_path):
    target = tmp_path / "run" / "run.json"
    artifacts.write_json(target, {"status": "queued"})
    artifacts.write_json(target, {"status": "running"})
    artifacts.write_csv(tmp_path / "run" / "history.csv", pd.DataFrame({"epoch": [1]}))
    assert json.loads(target.read_text()) == {"status": "running"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["history.csv", "run.json"]


def test_damaged_runs_are_listed_with_their_problems(tmp_path):
    good = artifacts.RunDir(tmp_path / "b-good").create()
    good.write_run({"id": "b-good", "status": "completed", "params": "oops", "timing": [1, 2]})
    truncated = artifacts.RunDir(tmp_path / "c-truncated").create()
    truncated.run_json.write_text('{"status": "compl')
    not_an_object = artifacts.RunDir(tmp_path / "a-list").create()
    not_an_object.run_json.write_text("[1, 2, 3]")
    (good.eval_dir("ft")).mkdir(parents=True)
    good.eval_file("ft", "metrics").write_text('{"accuracy": "high"}')

    runs = {r.id: r for r in artifacts.list_runs(tmp_path)}
    assert set(runs) == {"a-list", "b-good", "c-truncated"}
    assert runs["c-truncated"].problems and runs["a-list"].problems and runs["b-good"].readable
    board = leaderboard(list(runs.values())).set_index("id")
    assert board.loc["b-good", "status"] == "completed"
    assert pd.isna(board.loc["b-good", "acc_ft"]) and pd.isna(board.loc["b-good", "trainable_tl"])
    assert board.loc["c-truncated", "status"] == "unreadable"


def test_a_running_run_whose_process_is_gone_reads_as_interrupted(tmp_path):
    rd = artifacts.RunDir(tmp_path / "r").create()
    rd.write_run({"id": "r", "status": "running", "pid": 2**22 + 12345})  # above Linux's default pid_max
    assert effective_status(artifacts.load_run(rd.path)) == "interrupted"


def test_find_run_accepts_a_path_an_id_or_a_unique_prefix(tmp_path):
    for run_id in ("20250101-aaa", "20250102-bbb"):
        artifacts.RunDir(tmp_path / run_id).create().write_run({"id": run_id, "status": "completed"})
    assert artifacts.find_run("20250102", tmp_path).id == "20250102-bbb"
    assert artifacts.find_run(str(tmp_path / "20250101-aaa")).id == "20250101-aaa"
    assert artifacts.find_run("2025", tmp_path) is None  # ambiguous
