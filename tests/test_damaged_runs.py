"""Damaged run directories: truncated JSON, CSV files with the wrong columns, weights that do not fit the run's
model, truncated explanation maps, a completed run without eval/. Each one is listed as damaged with what is
wrong, the other runs read as before, the CLI lists them all, every page renders with the damaged runs chosen
without a section failing (ui.safe.safely tells damage, a warning, from a bug, a recorded failure), and each page
that reads a damaged file says which one.

The damaged runs are copies of the shared fixture runs (tests/fixture_runs.py), each with one file spoilt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed, section_failures
from cli import ROOT, call_cli
from conftest import settled
from poc.runs import store
from poc.errors import UserError
from poc.analysis.leaderboard import leaderboard
from ui import cost

PAGES = sorted((ROOT / "pages").glob("*.py"))
SELECTED_KEY, FOCUS_KEY = "vitrine.selected_runs", "vitrine.focus_run"  # ui.state's session keys
PICK_A, PICK_B = "compare.run_a", "compare.run_b"  # ui.compare_view's session keys


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _without_column(path: Path, column: str, rename_to: str | None = None) -> None:
    frame = pd.read_csv(path)
    frame = frame.rename(columns={column: rename_to}) if rename_to else frame.drop(columns=[column])
    frame.to_csv(path, index=False)


# name: (fixture run copied, how it is spoilt, what the listing must say about it)
DAMAGE = {
    "run-json": ("cnn", lambda rd: _truncate(rd.run_json), "run.json missing or unreadable"),
    "metrics-json": ("cnn", lambda rd: _truncate(rd.eval_file("ft", "metrics")), "eval/ft/metrics.json unreadable"),
    "history-columns": ("cnn", lambda rd: _without_column(rd.history_csv, "val_loss", "validation_loss"),
                        "history.csv lacks column(s) val_loss"),
    "predictions-columns": ("cnn", lambda rd: _without_column(rd.eval_file("ft", "predictions"), "pred"),
                            "eval/ft/predictions.csv lacks column(s) pred"),
    "no-eval": ("cnn", lambda rd: shutil.rmtree(rd.eval_dir("tl").parent), "eval/ missing"),
}
# Weights are only checked when a model is loaded (building one per run is too slow for a listing).
WEIGHT_DAMAGE = {
    "foreign-weights": ("cnn", lambda rd, runs: shutil.copyfile(runs["vit"] / store.WEIGHTS, rd.weights)),
    "truncated-weights": ("cnn", lambda rd, runs: _truncate(rd.weights)),
    "vit-truncated-weights": ("vit", lambda rd, runs: [_truncate(rd.weights)] + [
        _truncate(rd.stage_weights(s)) for s in store.STAGES]),
}
# Stored explanation maps are only read by the pages that draw them.
MAPS_DAMAGE = {
    "vit-truncated-explanations": ("vit", lambda rd: [_truncate(rd.eval_file(s, "explanations"))
                                                      for s in store.STAGES]),
}
ALL_DAMAGE = {**DAMAGE, **WEIGHT_DAMAGE, **MAPS_DAMAGE}


def _run_id(name: str) -> str:
    return f"20250102-{list(ALL_DAMAGE).index(name):06d}-damaged-{name}"


@pytest.fixture(scope="module")
def damaged(fixture_runs, tmp_path_factory) -> dict:
    """Every fixture run, plus one spoilt copy per kind of damage: {"runs": dir, "ids": {damage: run id}}."""
    runs = tmp_path_factory.mktemp("damaged") / "runs"
    for source in fixture_runs.values():
        shutil.copytree(source, runs / source.name)
    ids = {}
    for name, (key, spoil, *_) in ALL_DAMAGE.items():
        rd = store.run_dir(runs, _run_id(name))
        shutil.copytree(fixture_runs[key], rd.path)
        rd.update_run(id=rd.id, name=f"damaged: {name}")
        if name in WEIGHT_DAMAGE:
            spoil(rd, fixture_runs)
        else:
            spoil(rd)
        ids[name] = rd.id
    return {"runs": runs, "ids": ids, "clean": fixture_runs["cnn"].parent}


def _board(runs: Path) -> pd.DataFrame:
    return leaderboard(store.list_runs(runs)).set_index("id")


# ---------------------------------------------------------------- listing

@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_run_lists_what_is_wrong(damaged, name):
    record = store.load_run(damaged["runs"] / damaged["ids"][name])
    assert any(DAMAGE[name][2] in problem for problem in record.problems), record.problems


@pytest.mark.parametrize("name", list(DAMAGE))
def test_the_leaderboard_flags_a_damaged_run(damaged, name):
    row = _board(damaged["runs"]).loc[damaged["ids"][name]]
    assert DAMAGE[name][2] in row["problems"]
    assert row["status"] == ("unreadable" if name == "run-json" else "completed")


def test_a_run_without_eval_has_no_accuracy(damaged):
    row = _board(damaged["runs"]).loc[damaged["ids"]["no-eval"]]
    assert pd.isna(row["acc_tl"]) and pd.isna(row["acc_ft"])


def test_a_truncated_metrics_file_leaves_the_other_stage(damaged, fixture_runs):
    row = _board(damaged["runs"]).loc[damaged["ids"]["metrics-json"]]
    clean = _board(damaged["clean"]).loc[fixture_runs["cnn"].name]
    assert pd.isna(row["acc_ft"]) and row["acc_tl"] == clean["acc_tl"]


def test_other_runs_read_as_before(damaged, fixture_runs):
    """Every fixture run's leaderboard row is the same with the damaged runs beside it as without them."""
    ids = [p.name for p in fixture_runs.values()]
    with_damage = _board(damaged["runs"]).loc[ids]
    pd.testing.assert_frame_equal(with_damage, _board(damaged["clean"]).loc[ids])


@pytest.mark.parametrize("name", [*WEIGHT_DAMAGE, *MAPS_DAMAGE])
def test_a_listing_does_not_open_weights_or_maps_so_their_damage_is_not_flagged(damaged, name):
    record = store.load_run(damaged["runs"] / damaged["ids"][name])
    assert record.status == "completed" and record.problems == []


def test_the_runs_command_lists_every_run(damaged, capsys, monkeypatch):
    result = call_cli(capsys, monkeypatch, "runs", "--json", "--runs-dir", damaged["runs"])
    assert result.returncode == 0, result.stderr
    listed = {row["id"]: row for row in json.loads(result.stdout)}
    assert set(damaged["ids"].values()) <= set(listed)
    assert listed[damaged["ids"]["run-json"]]["status"] == "unreadable"
    assert DAMAGE["no-eval"][2] in listed[damaged["ids"]["no-eval"]]["problems"]


# ---------------------------------------------------------------- weights

@pytest.mark.parametrize("name", list(WEIGHT_DAMAGE))
def test_weights_that_do_not_fit_give_a_message_naming_the_run(damaged, name):
    from poc.inference import load_model

    run_id = damaged["ids"][name]
    with pytest.raises(UserError, match=rf"run {run_id}: model\.weights\.h5 "):
        load_model(store.run_dir(damaged["runs"], run_id))


@pytest.mark.parametrize("name", ["truncated-weights", "vit-truncated-weights"])
def test_a_truncated_weights_file_is_named_before_the_model_is_built(damaged, monkeypatch, name):
    from poc.inference import load_model
    from poc.runs import run_info

    def no_build(info):
        raise AssertionError("the model was built for a weights file that cannot be opened")

    monkeypatch.setattr(run_info, "rebuild_model", no_build)
    run_id = damaged["ids"][name]
    with pytest.raises(UserError, match=rf"run {run_id}: model\.weights\.h5 .*truncated file"):
        load_model(store.run_dir(damaged["runs"], run_id))


def test_the_weights_of_a_healthy_copy_still_load(damaged, fixture_runs):
    from poc.inference import load_model

    loaded = load_model(store.run_dir(damaged["runs"], fixture_runs["cnn"].name))
    assert loaded.class_names == store.load_run(fixture_runs["cnn"]).class_names and loaded.image_size == 32


# ---------------------------------------------------------------- pages

def _page(path: Path, damaged: dict, monkeypatch, **state) -> AppTest:
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(damaged["runs"]))
    at = AppTest.from_file(str(path), default_timeout=180)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def _rendered(at: AppTest, where: str) -> None:
    """No exception escaped the page and no section of it failed (damage is a warning, not a failure)."""
    assert not at.exception, (where, [e.value for e in at.exception])
    assert_no_section_failed(at)


def _shown(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_page_renders_with_the_damaged_runs_chosen(damaged, fixture_runs, monkeypatch, page):
    chosen = list(damaged["ids"].values()) + [fixture_runs["vit"].name]
    at = _page(page, damaged, monkeypatch, **{SELECTED_KEY: chosen})
    _rendered(at, page.name)


def test_home_names_each_damaged_run_and_its_problem(damaged, monkeypatch):
    at = _page(ROOT / "pages" / "0_Home.py", damaged, monkeypatch)
    _rendered(at, "home")
    text = "\n".join(_shown(at, "markdown") + _shown(at, "caption") + _shown(at, "warning"))
    for name in DAMAGE:
        line = next((ln for ln in text.splitlines() if damaged["ids"][name] in ln and DAMAGE[name][2] in ln), None)
        assert line is not None, (name, text[-3000:])


def test_learning_curves_name_the_run_whose_history_is_unreadable(damaged, monkeypatch):
    at = _page(ROOT / "pages" / "1_Learning_curves.py", damaged, monkeypatch,
               **{SELECTED_KEY: [damaged["ids"]["history-columns"]]})
    _rendered(at, "learning curves")
    assert any("damaged: history-columns" in w and "history.csv is unreadable" in w for w in _shown(at, "warning")), \
        _shown(at, "warning")


@pytest.mark.parametrize("name, warning", [("metrics-json", "eval/ft: metrics missing or unreadable"),
                                           ("predictions-columns", "eval/ft: predictions missing or unreadable")])
def test_the_error_explorer_shows_a_damaged_run_with_its_problem(damaged, monkeypatch, name, warning):
    at = _page(ROOT / "pages" / "2_Error_explorer.py", damaged, monkeypatch, **{FOCUS_KEY: damaged["ids"][name]})
    _rendered(at, name)
    assert at.selectbox(key="errors.run").value == damaged["ids"][name]
    assert warning in _shown(at, "warning")


def test_live_predict_says_which_run_cannot_load_its_weights(damaged, fixture_runs, monkeypatch):
    broken = [damaged["ids"]["foreign-weights"], damaged["ids"]["truncated-weights"]]
    at = settled(_page(ROOT / "pages" / "3_Live_predict.py", damaged, monkeypatch,
                       **{"live.runs": [*broken, fixture_runs["cnn"].name]}))
    _rendered(at, "live predict")
    errors = _shown(at, "error")
    for run_id in broken:
        assert any(run_id in e and "model.weights.h5" in e for e in errors), errors
    assert any(m.value.startswith("Top-1:") for m in at.markdown)  # the healthy run still predicts


def test_attention_maps_of_a_vit_with_damaged_weights_keep_the_stored_maps(damaged, monkeypatch):
    run_id = damaged["ids"]["vit-truncated-weights"]
    at = settled(_page(ROOT / "pages" / "4_Attention_maps.py", damaged, monkeypatch, **{FOCUS_KEY: run_id}))
    _rendered(at, "attention maps")
    assert at.selectbox(key="attn.run").value == run_id
    assert any(h.value.startswith("Mean map") for h in at.subheader)  # stored maps need no weights
    assert any("Per-layer attention unavailable" in w and "weights" in w for w in _shown(at, "warning"))


def test_attention_maps_of_a_vit_with_truncated_maps_name_the_unreadable_file(damaged, monkeypatch):
    run_id = damaged["ids"]["vit-truncated-explanations"]
    at = _page(ROOT / "pages" / "4_Attention_maps.py", damaged, monkeypatch, **{FOCUS_KEY: run_id})
    _rendered(at, "attention maps")
    assert at.selectbox(key="attn.run").value == run_id
    assert any("explanations.npz is missing or unreadable" in i for i in _shown(at, "info")), _shown(at, "info")


def test_compare_names_the_run_without_readable_predictions(damaged, fixture_runs, monkeypatch):
    run_id = damaged["ids"]["predictions-columns"]
    at = _page(ROOT / "pages" / "5_Compare.py", damaged, monkeypatch,
               **{PICK_A: run_id, PICK_B: fixture_runs["vit"].name})
    _rendered(at, "compare")
    assert any(f"run {run_id} has no readable eval/ft/predictions.csv" in w for w in _shown(at, "warning")), \
        _shown(at, "warning")


# ---------------------------------------------------------------- damage against failure (ui.safe.safely)

def _raises(exc: Exception):
    def render(*args):
        raise exc
    return render


def _compare_clean_runs(fixture_runs, monkeypatch) -> AppTest:
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(fixture_runs["cnn"].parent))
    return AppTest.from_file(str(ROOT / "pages" / "5_Compare.py"), default_timeout=180).run()


def test_an_unexpected_exception_in_a_section_is_recorded_as_a_failure_not_as_damage(fixture_runs, monkeypatch):
    monkeypatch.setattr(cost, "render_cost", _raises(RuntimeError("a bug in the cost table")))
    at = _compare_clean_runs(fixture_runs, monkeypatch)
    assert not at.exception  # the page goes on
    assert section_failures(at) == ["The cost table: RuntimeError: a bug in the cost table"]
    assert "The cost table: failed (RuntimeError: a bug in the cost table)" in " ".join(_shown(at, "error"))
    assert not any("The cost table" in w for w in _shown(at, "warning"))
    with pytest.raises(AssertionError, match="The cost table: RuntimeError"):
        assert_no_section_failed(at)


def test_a_file_that_vanishes_under_a_section_is_a_warning_not_a_failure(fixture_runs, monkeypatch):
    monkeypatch.setattr(cost, "render_cost", _raises(FileNotFoundError(2, "No such file", "eval/ft/metrics.json")))
    at = _compare_clean_runs(fixture_runs, monkeypatch)
    assert_no_section_failed(at)
    assert any(w.startswith("The cost table: could not be shown (FileNotFoundError") and "eval/ft/metrics.json" in w
               for w in _shown(at, "warning")), _shown(at, "warning")
