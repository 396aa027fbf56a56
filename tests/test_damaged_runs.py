"""Damaged run directories: truncated JSON, CSV files with the wrong columns, weights that do not fit the run's
model, a completed run without eval/. Each one is listed as damaged with what is wrong, the other runs read as
before, the CLI lists them all, and every page renders with the damaged runs chosen.

The damaged runs are copies of the shared fixture runs (tests/fixture_runs.py), each with one file spoilt.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cli import ROOT, call_cli
from conftest import settled
from poc.runs import store
from poc.errors import UserError
from poc.analysis.leaderboard import leaderboard

PAGES = sorted((ROOT / "pages").glob("*.py"))
SELECTED_KEY, FOCUS_KEY = "vitrine.selected_runs", "vitrine.focus_run"  # ui.state's session keys


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


def _run_id(name: str) -> str:
    return f"20250102-{list({**DAMAGE, **WEIGHT_DAMAGE}).index(name):06d}-damaged-{name}"


@pytest.fixture(scope="module")
def damaged(fixture_runs, tmp_path_factory) -> dict:
    """Every fixture run, plus one spoilt copy per kind of damage: {"runs": dir, "ids": {damage: run id}}."""
    runs = tmp_path_factory.mktemp("damaged") / "runs"
    for source in fixture_runs.values():
        shutil.copytree(source, runs / source.name)
    ids = {}
    for name, (key, spoil, *_) in {**DAMAGE, **WEIGHT_DAMAGE}.items():
        rd = store.run_dir(runs, _run_id(name))
        shutil.copytree(fixture_runs[key], rd.path)
        rd.update_run(id=rd.id, name=f"damaged: {name}")
        if name in DAMAGE:
            spoil(rd)
        else:
            spoil(rd, fixture_runs)
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
    for name in WEIGHT_DAMAGE:  # spoilt weights are not seen by a listing: nothing is flagged
        assert _board(damaged["runs"]).loc[damaged["ids"][name], "status"] == "completed"


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


def test_the_weights_of_a_healthy_copy_still_load(damaged, fixture_runs):
    from poc.inference import load_model

    loaded = load_model(store.run_dir(damaged["runs"], fixture_runs["cnn"].name))
    assert loaded.class_names and loaded.image_size == 32


# ---------------------------------------------------------------- pages

def _page(path: Path, damaged: dict, monkeypatch, **state) -> AppTest:
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(damaged["runs"]))
    at = AppTest.from_file(str(path), default_timeout=180)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def _texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "warning", "error", "info")
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def _no_exception(at: AppTest, where: str) -> None:
    assert not at.exception, (where, [e.value for e in at.exception])
    assert "Traceback" not in _texts(at), where


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_page_renders_with_the_damaged_runs_chosen(damaged, fixture_runs, monkeypatch, page):
    chosen = list(damaged["ids"].values()) + [fixture_runs["vit"].name]
    at = _page(page, damaged, monkeypatch, **{SELECTED_KEY: chosen})
    _no_exception(at, page.name)


def test_home_names_each_damaged_run_and_its_problem(damaged, monkeypatch):
    at = _page(ROOT / "pages" / "0_Home.py", damaged, monkeypatch)
    text = _texts(at)
    for name in DAMAGE:
        line = next((ln for ln in text.splitlines() if damaged["ids"][name] in ln and DAMAGE[name][2] in ln), None)
        assert line is not None, (name, text[-3000:])


@pytest.mark.parametrize("name", ["metrics-json", "history-columns", "predictions-columns"])
def test_the_error_explorer_shows_a_damaged_run_with_its_problem(damaged, monkeypatch, name):
    at = _page(ROOT / "pages" / "2_Error_explorer.py", damaged, monkeypatch, **{FOCUS_KEY: damaged["ids"][name]})
    _no_exception(at, name)
    assert at.selectbox(key="errors.run").value == damaged["ids"][name]
    if name == "predictions-columns":
        assert "eval/ft: predictions missing or unreadable" in [w.value for w in at.warning]


def test_live_predict_says_which_run_cannot_load_its_weights(damaged, fixture_runs, monkeypatch):
    broken = [damaged["ids"]["foreign-weights"], damaged["ids"]["truncated-weights"]]
    at = settled(_page(ROOT / "pages" / "3_Live_predict.py", damaged, monkeypatch,
                       **{"live.runs": [*broken, fixture_runs["cnn"].name]}))
    _no_exception(at, "live predict")
    errors = [e.value for e in at.error]
    for run_id in broken:
        assert any(run_id in e and "model.weights.h5" in e for e in errors), errors
    assert any(m.value.startswith("Top-1:") for m in at.markdown)  # the healthy run still predicts


def test_attention_maps_of_a_vit_with_damaged_weights_keep_the_stored_maps(damaged, monkeypatch):
    run_id = damaged["ids"]["vit-truncated-weights"]
    at = _page(ROOT / "pages" / "4_Attention_maps.py", damaged, monkeypatch, **{FOCUS_KEY: run_id})
    _no_exception(at, "attention maps")
    assert at.selectbox(key="attn.run").value == run_id
    assert any(h.value.startswith("Mean map") for h in at.subheader)  # stored maps need no weights
    assert any("Per-layer attention unavailable" in w.value and "weights" in w.value for w in at.warning)
