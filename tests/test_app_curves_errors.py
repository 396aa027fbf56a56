"""Learning-curves and error-explorer pages under Streamlit's AppTest, on the shared fixture runs.

Expected gallery sizes are counted independently from predictions.csv with pandas.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed
from poc.runs import store

CURVES = "../pages/1_Learning_curves.py"  # relative to this file, as AppTest resolves it
ERRORS = "../pages/2_Error_explorer.py"


def _page(path: str, runs_root: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs_root))
    return AppTest.from_file(path, default_timeout=60).run()


def _texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "warning", "error", "info", "subheader", "header")
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def _predictions(run: Path, stage: str) -> pd.DataFrame:
    return pd.read_csv(store.RunDir(run).eval_file(stage, "predictions"))


def _runs_picker(at: AppTest):
    """The "Runs" multiselect (its key carries the selection it was drawn from)."""
    return next(m for m in at.multiselect if m.label == "Runs")


def _captions(at: AppTest) -> list[str]:
    return [caption for image in at.get("image") for caption in image.captions]


# ---------------------------------------------------------------- learning curves

def test_curves_overlay_the_default_selection(fixture_runs, monkeypatch):
    at = _page(CURVES, fixture_runs["cnn"].parent, monkeypatch)
    assert not at.exception
    assert_no_section_failed(at)
    assert _runs_picker(at).value == [fixture_runs["cnn"].name, fixture_runs["vit"].name]
    assert len(at.get("vega_lite_chart")) == 1
    table = at.dataframe[0].value
    assert sorted(zip(table["run"], table["phase"])) == sorted(
        (run, phase) for run in set(table["run"]) for phase in ("tl", "ft"))
    assert len(set(table["run"])) == 2


def test_curves_render_each_run(fixture_runs, monkeypatch):
    at = _page(CURVES, fixture_runs["cnn"].parent, monkeypatch)
    for key in ("cnn", "vit", "no_ft", "failed", "running", "many_classes"):
        _runs_picker(at).set_value([fixture_runs[key].name]).run()
        assert not at.exception, key
        assert_no_section_failed(at)
        history = store.read_history(store.RunDir(fixture_runs[key]))
        assert at.dataframe[0].value["epochs"].sum() == len(history), key


def test_curves_accuracy_and_log_scale(fixture_runs, monkeypatch):
    at = _page(CURVES, fixture_runs["cnn"].parent, monkeypatch)
    at.checkbox(key="curves.log").check().run()
    assert not at.exception
    assert_no_section_failed(at)
    at.radio(key="curves.metric").set_value("accuracy").run()
    assert not at.exception
    assert_no_section_failed(at)
    assert at.checkbox(key="curves.log").disabled


def test_curves_without_runs_say_so(tmp_path, monkeypatch):
    at = _page(CURVES, tmp_path / "empty", monkeypatch)
    assert not at.exception
    assert_no_section_failed(at)
    assert "No runs yet" in _texts(at)


# ---------------------------------------------------------------- error explorer

def _explorer(fixture_runs, monkeypatch, key: str | None = None, runs_root: Path | None = None) -> AppTest:
    at = _page(ERRORS, runs_root or fixture_runs["cnn"].parent, monkeypatch)
    if key is not None:
        at.selectbox(key="errors.run").set_value(fixture_runs[key].name).run()
    return at


def test_explorer_renders_each_run(fixture_runs, monkeypatch):
    at = _explorer(fixture_runs, monkeypatch)
    at.radio(key="errors.view").set_value("row-normalised").run()
    for key in ("cnn", "vit", "no_ft", "running", "many_classes"):
        at.selectbox(key="errors.run").set_value(fixture_runs[key].name).run()
        assert not at.exception, key
        assert_no_section_failed(at)
        stages = [s for s in ("tl", "ft") if store.RunDir(fixture_runs[key]).eval_file(s, "metrics").exists()]
        assert len(at.get("vega_lite_chart")) >= len(stages)  # one matrix per stage, plus per-class charts


def test_explorer_without_ft_shows_tl_only(fixture_runs, monkeypatch):
    at = _explorer(fixture_runs, monkeypatch, "no_ft")
    assert "no fine-tuning stage" in _texts(at)
    assert at.radio(key="errors.cell_stage").options == ["tl"]


def test_explorer_many_classes_hides_cell_text(fixture_runs, monkeypatch):
    at = _explorer(fixture_runs, monkeypatch, "many_classes")
    assert "120 classes" in _texts(at)


def test_explorer_never_lists_unreadable_runs(fixture_runs, monkeypatch):
    at = _explorer(fixture_runs, monkeypatch)
    options = at.selectbox(key="errors.run").options
    assert fixture_runs["corrupt"].name not in options and fixture_runs["failed"].name not in options


@pytest.mark.parametrize("stage", ["tl", "ft"])
def test_cell_gallery_has_every_image_of_the_cell(fixture_runs, monkeypatch, stage):
    pred = _predictions(fixture_runs["cnn"], stage)
    pairs = pred.groupby(["label", "pred"]).size().sort_values(ascending=False)
    at = _explorer(fixture_runs, monkeypatch, "cnn")
    for (true, predicted), expected in list(pairs.items())[:3]:
        at.radio(key="errors.cell_stage").set_value(stage)
        at.selectbox(key="errors.cell_true").set_value(true)
        at.selectbox(key="errors.cell_pred").set_value(predicted)
        at.run()
        assert not at.exception
        assert_no_section_failed(at)
        shown = [c for c in _captions(at) if c.startswith(f"true {true} → pred {predicted} ·")]
        assert len(shown) == expected == ((pred["label"] == true) & (pred["pred"] == predicted)).sum()


def test_empty_cell_says_so(fixture_runs, monkeypatch):
    pred = _predictions(fixture_runs["cnn"], "ft")
    empty = next((t, p) for t in sorted(set(pred["label"])) for p in sorted(set(pred["label"]))
                 if not ((pred["label"] == t) & (pred["pred"] == p)).any())
    at = _explorer(fixture_runs, monkeypatch, "cnn")
    at.selectbox(key="errors.cell_true").set_value(empty[0])
    at.selectbox(key="errors.cell_pred").set_value(empty[1]).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert not _captions(at)
    assert "No test image in this cell." in _texts(at)


def test_class_galleries_count_hits_misses_and_false_alarms(fixture_runs, monkeypatch):
    pred = _predictions(fixture_runs["vit"], "ft")
    chosen = pred["label"].value_counts().index[0]
    at = _explorer(fixture_runs, monkeypatch, "vit")
    at.selectbox(key="errors.class").set_value(chosen).run()
    assert not at.exception
    assert_no_section_failed(at)
    expected = {
        "True positives": ((pred["label"] == chosen) & (pred["pred"] == chosen)).sum(),
        "False negatives": ((pred["label"] == chosen) & (pred["pred"] != chosen)).sum(),
        "False positives": ((pred["label"] != chosen) & (pred["pred"] == chosen)).sum(),
    }
    labels = [tab.label for tab in at.tabs]
    for name, count in expected.items():
        assert f"{name} ({count})" in labels


def test_stage_changes_match_the_predictions(fixture_runs, monkeypatch):
    tl, ft = (_predictions(fixture_runs["cnn"], s) for s in ("tl", "ft"))
    ok_tl, ok_ft = tl["label"] == tl["pred"], ft["label"] == ft["pred"]
    at = _explorer(fixture_runs, monkeypatch, "cnn")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["newly correct"] == str((~ok_tl & ok_ft).sum())
    assert metrics["newly wrong"] == str((ok_tl & ~ok_ft).sum())
    assert metrics["diagonal gain"] == f"{ok_ft.sum() - ok_tl.sum():+d}"


def _copy_run(src: Path, runs_root: Path) -> store.RunDir:
    dst = runs_root / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.h5"))
    return store.RunDir(dst)


def test_missing_image_is_a_placeholder_not_a_crash(fixture_runs, monkeypatch, tmp_path):
    rd = _copy_run(fixture_runs["cnn"], tmp_path / "runs")
    pred = pd.read_csv(rd.eval_file("ft", "predictions"))
    pred.loc[0, "path"] = str(tmp_path / "gone" / "deleted.png")
    store.write_csv(rd.eval_file("ft", "predictions"), pred)
    at = _page(ERRORS, tmp_path / "runs", monkeypatch)
    at.selectbox(key="errors.cell_true").set_value(pred.loc[0, "label"])
    at.selectbox(key="errors.cell_pred").set_value(pred.loc[0, "pred"]).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert "image missing or unreadable: `deleted.png`" in _texts(at)


def test_damaged_eval_files_are_warnings(fixture_runs, monkeypatch, tmp_path):
    rd = _copy_run(fixture_runs["vit"], tmp_path / "runs")
    rd.eval_file("ft", "confusion_matrix").write_text("not,a\nmatrix")
    rd.eval_file("tl", "predictions").write_bytes(b"\x00\xff garbage")
    at = _page(ERRORS, tmp_path / "runs", monkeypatch)
    assert not at.exception
    assert_no_section_failed(at)
    assert "confusion_matrix.csv is malformed" in _texts(at)
    assert "eval/tl: predictions missing or unreadable" in _texts(at)
