"""The dashboard's run index (ui.data.load_leaderboard): each run is read once per change of its files, so a page
with a thousand runs costs one stat pass per rerun; what it shows equals a full read of every run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

from poc.analysis import leaderboard
from poc.runs import store
from ui import data


@pytest.fixture
def runs_root(fixture_runs, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(fixture_runs["cnn"].parent, root)
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(root))
    return root


@pytest.fixture
def reads(monkeypatch):
    """The run directories store.load_run read, in order."""
    seen = []
    original = store.load_run
    monkeypatch.setattr(store, "load_run", lambda path: seen.append(os.path.basename(path)) or original(path))
    return seen


def _full_read(root) -> pd.DataFrame:
    return leaderboard.leaderboard(store.list_runs(root))


def test_the_index_shows_what_a_full_read_of_every_run_shows(runs_root):
    pd.testing.assert_frame_equal(data.load_leaderboard(), _full_read(runs_root))


def test_a_second_load_reads_no_run_and_a_changed_run_is_read_again(runs_root, reads):
    first = data.load_leaderboard()
    assert sorted(reads) == sorted(first["id"])
    reads.clear()
    data.load_leaderboard()
    assert reads == []

    changed = store.RunDir(runs_root / first["id"].iloc[0])
    changed.update_run(name="renamed by a resume")  # an atomic write: the folder's stamp moves
    board = data.load_leaderboard()
    assert reads == [changed.id]
    assert board.set_index("id").at[changed.id, "name"] == "renamed by a resume"


def test_a_hand_edit_in_place_is_noticed(runs_root, reads):
    board = data.load_leaderboard()
    completed = board.loc[board["acc_ft"].notna(), "id"].iloc[0]
    reads.clear()
    metrics = store.RunDir(runs_root / completed).eval_file("ft", "metrics")
    with open(metrics, "r+") as fh:  # the same inode: only the file's own stamp changes
        fh.seek(0)
        fh.write("{ not json")
    board = data.load_leaderboard()
    assert reads == [completed]
    assert "eval/ft/metrics.json unreadable" in board.set_index("id").at[completed, "problems"]
    pd.testing.assert_frame_equal(board, _full_read(runs_root))


def test_new_and_removed_runs_show_up_on_the_next_load(runs_root, fixture_runs, reads):
    before = data.load_leaderboard()
    gone = before["id"].iloc[-1]
    shutil.rmtree(runs_root / gone)
    shutil.copytree(fixture_runs["cnn"], runs_root / "20991231-000000-mobilenet-v2-copy")
    reads.clear()
    after = data.load_leaderboard()
    assert reads == ["20991231-000000-mobilenet-v2-copy"]
    assert gone not in set(after["id"]) and "20991231-000000-mobilenet-v2-copy" in set(after["id"])
    pd.testing.assert_frame_equal(after, _full_read(runs_root))


def test_a_run_whose_process_dies_reads_interrupted_without_any_file_change(runs_root):
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rd = store.RunDir(runs_root / "20991231-235900-mobilenet-v2-live")
        shutil.copytree(runs_root / sorted(os.listdir(runs_root))[0], rd.path)
        info = json.loads(rd.run_json.read_text())
        rd.write_run({**info, "id": rd.id, "status": "running", "pid": trainer.pid, "finished": None})
        assert data.load_leaderboard().set_index("id").at[rd.id, "status"] == "running"
        stamps = store.run_stamps(runs_root)
    finally:
        trainer.kill()
        trainer.wait()
    time.sleep(0.05)
    assert store.run_stamps(runs_root) == stamps  # nothing on disk moved
    assert data.load_leaderboard().set_index("id").at[rd.id, "status"] == "interrupted"


def test_labels_follow_the_index(runs_root):
    board = data.load_leaderboard()
    run_id = board["id"].iloc[0]
    store.RunDir(runs_root / run_id).update_run(name="a fresh name")
    data.load_leaderboard()
    assert data.run_labels([run_id])[run_id].endswith("a fresh name")
