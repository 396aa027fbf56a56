"""The artifact module: atomic writes, and reads that check what they read and report damage instead of raising."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from poc.runs import store
from poc.analysis.leaderboard import leaderboard
from poc.runs.status import effective_status


def test_atomic_writes_leave_no_temp_files_and_replace_whole_files(tmp_path):
    target = tmp_path / "run" / "run.json"
    store.write_json(target, {"status": "queued"})
    store.write_json(target, {"status": "running"})
    store.write_csv(tmp_path / "run" / "history.csv", pd.DataFrame({"epoch": [1]}))
    assert json.loads(target.read_text()) == {"status": "running"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["history.csv", "run.json"]


def test_damaged_runs_are_listed_with_their_problems(tmp_path):
    good = store.RunDir(tmp_path / "b-good").create()
    good.write_run({"id": "b-good", "status": "completed", "params": "oops", "timing": [1, 2]})
    truncated = store.RunDir(tmp_path / "c-truncated").create()
    truncated.run_json.write_text('{"status": "compl')
    not_an_object = store.RunDir(tmp_path / "a-list").create()
    not_an_object.run_json.write_text("[1, 2, 3]")
    (good.eval_dir("ft")).mkdir(parents=True)
    good.eval_file("ft", "metrics").write_text('{"accuracy": "high"}')

    runs = {r.id: r for r in store.list_runs(tmp_path)}
    assert set(runs) == {"a-list", "b-good", "c-truncated"}
    assert runs["c-truncated"].problems and runs["a-list"].problems and runs["b-good"].readable
    board = leaderboard(list(runs.values())).set_index("id")
    assert board.loc["b-good", "status"] == "completed"
    assert pd.isna(board.loc["b-good", "acc_ft"]) and pd.isna(board.loc["b-good", "trainable_tl"])
    assert board.loc["c-truncated", "status"] == "unreadable"


def test_a_running_run_whose_process_is_gone_reads_as_interrupted(tmp_path):
    rd = store.RunDir(tmp_path / "r").create()
    rd.write_run({"id": "r", "status": "running", "pid": 2**22 + 12345})  # above Linux's default pid_max
    assert effective_status(store.load_run(rd.path)) == "interrupted"


def test_find_run_accepts_a_path_an_id_or_a_unique_prefix(tmp_path):
    for run_id in ("20250101-aaa", "20250102-bbb"):
        store.RunDir(tmp_path / run_id).create().write_run({"id": run_id, "status": "completed"})
    assert store.find_run("20250102", tmp_path).id == "20250102-bbb"
    assert store.find_run(str(tmp_path / "20250101-aaa")).id == "20250101-aaa"
    assert store.find_run("2025", tmp_path) is None  # ambiguous


def test_a_missing_runs_folder_lists_no_run(tmp_path):
    assert store.list_runs(tmp_path / "not_there") == []


def _stage_files(rd: store.RunDir, stage: str = "ft") -> None:
    rd.eval_dir(stage).mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [1, 2, 2], "pred": [1, 1, 2],
                  "confidence": [0.9, "high", 0.7]}).to_csv(rd.eval_file(stage, "predictions"), index=False)
    pd.DataFrame({"class": [1, 2], "precision": [0.5, "?"], "recall": [1.0, 0.5], "f1": [0.67, 0.5],
                  "support": [1, 2]}).to_csv(rd.eval_file(stage, "classification_report"), index=False)
    pd.DataFrame([[1, 0], [1, 1]], index=[1, 2], columns=[1, 2]).to_csv(rd.eval_file(stage, "confusion_matrix"))
    rd.eval_file(stage, "metrics").write_text(json.dumps(
        {"accuracy": 2 / 3, "accuracy_ci95": [0.2, "x"], "macro_f1": "good", "val_loss": None,
         "val_accuracy": 0.5, "n": 3}))


def test_read_stage_checks_numbers_and_names_what_is_wrong(tmp_path):
    rd = store.RunDir(tmp_path / "r").create()
    _stage_files(rd)
    ev = store.read_stage(rd, "ft")
    assert ev.predictions["confidence"].tolist()[0] == 0.9 and np.isnan(ev.predictions["confidence"].iloc[1])
    assert ev.predictions["label"].tolist() == ["1", "2", "2"]  # class names stay strings
    assert np.isnan(ev.report["precision"].iloc[1]) and ev.report["class"].tolist() == ["1", "2"]
    assert ev.confusion.to_numpy().tolist() == [[1, 0], [1, 1]] and list(ev.confusion.index) == ["1", "2"]
    assert ev.metrics["accuracy"] == 2 / 3 and ev.metrics["val_accuracy"] == 0.5
    assert ev.metrics["macro_f1"] is None and ev.metrics["val_loss"] is None and ev.metrics["accuracy_ci95"] is None
    problems = "\n".join(ev.problems)
    assert "predictions column 'confidence' holds values that are not numbers" in problems
    assert "report column 'precision' holds values that are not numbers" in problems
    assert "eval/ft/metrics.json: macro_f1 is not a number" in problems
    assert "accuracy_ci95 is not a [low, high] pair of numbers" in problems
    assert "val_loss" not in problems  # null is a missing value, not a damaged one


def test_a_confusion_matrix_over_different_classes_is_set_aside(tmp_path):
    rd = store.RunDir(tmp_path / "r").create()
    _stage_files(rd)
    pd.DataFrame([[1, 0], [1, 1]], index=["cat", "dog"], columns=["cat", "cow"]).to_csv(
        rd.eval_file("ft", "confusion_matrix"))
    ev = store.read_stage(rd, "ft")
    assert ev.confusion is None
    assert any("confusion_matrix.csv is malformed" in p for p in ev.problems)


def test_read_history_types_sorts_and_counts_malformed_rows(tmp_path):
    rd = store.RunDir(tmp_path / "r").create()
    rows = [{"epoch": 2, "phase": "tl", "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4,
             "lr": 1e-3, "seconds": 2},
            {"epoch": 1, "phase": "tl", "loss": "nan?", "accuracy": 0.3, "val_loss": 1.4, "val_accuracy": 0.3,
             "lr": 1e-3, "seconds": 2},
            {"epoch": "x", "phase": "tl", "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4,
             "lr": 1e-3, "seconds": 2},
            {"epoch": 3, "phase": "warmup", "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4,
             "lr": 1e-3, "seconds": 2}]
    pd.DataFrame(rows).to_csv(rd.history_csv, index=False)
    history = store.read_history(rd)
    assert history["epoch"].tolist() == [1, 2]
    assert np.isnan(history["loss"].iloc[0]) and history["accuracy"].tolist() == [0.3, 0.5]
    assert history.attrs["dropped_rows"] == 2
