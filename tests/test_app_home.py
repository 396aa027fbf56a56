"""Home (dashboard.py's default page) under Streamlit's AppTest, on the shared fixture runs and on an empty runs
folder: the leaderboard, the ViT-vs-CNN verdict on one split chosen on validation, and the demo button."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed
from poc.data.split import held_out_fingerprint
from poc.runs import store
from poc.launch import launcher

HOME = "../dashboard.py"  # relative to this file, as AppTest resolves it
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def home(fixture_runs) -> AppTest:
    """One rendered Home shared by the read-only checks (tests that click use their own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITRINE_RUNS_DIR", str(fixture_runs["cnn"].parent))
        yield AppTest.from_file(HOME, default_timeout=60).run()


def _texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "warning", "error", "info", "code")
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def _compare_picker(at: AppTest):
    """Home's "Runs to compare" multiselect (its key carries the selection it was drawn from)."""
    return next(m for m in at.multiselect if m.label == "Runs to compare on the other pages")


def _board(at: AppTest) -> pd.DataFrame:
    return at.dataframe[0].value


def test_home_renders_fixture_runs_without_exception(home):
    assert not home.exception
    assert_no_section_failed(home)
    assert home.title[0].value == "ViTrine"


def test_leaderboard_lists_every_readable_run(home, fixture_runs):
    shown = set(_board(home)["id"])
    for key in ("cnn", "vit", "no_ft", "many_classes", "failed", "running"):
        assert fixture_runs[key].name in shown, key


def test_accuracy_is_shown_with_its_interval(home, fixture_runs):
    metrics = store.read_json(store.RunDir(fixture_runs["cnn"]).eval_file("ft", "metrics"))
    row = _board(home).set_index("id").loc[fixture_runs["cnn"].name]
    low, high = metrics["accuracy_ci95"]
    assert row["accuracy ft [95% CI]"] == f"{metrics['accuracy']:.3f} [{low:.2f}, {high:.2f}]"


def test_corrupt_run_is_flagged_not_crashing(home, fixture_runs):
    corrupt = fixture_runs["corrupt"].name
    assert corrupt not in set(_board(home)["id"])
    assert corrupt in _texts(home)
    assert "run.json missing or unreadable" in _texts(home)


def test_failed_run_shows_its_error(home, fixture_runs):
    error = store.read_json(store.RunDir(fixture_runs["failed"]).run_json)["error"]
    assert error in _texts(home)
    assert _board(home).set_index("id").loc[fixture_runs["failed"].name, "error"] == error


def test_running_run_shows_its_progress(home, fixture_runs):
    row = _board(home).set_index("id").loc[fixture_runs["running"].name]
    assert row["status"] == "running"
    assert row["progress"] == pytest.approx(((2 - 1) * 5 + 3) / (5 * 5))  # epoch 2 step 3 of 5 x 5 steps


def test_default_comparison_is_latest_cnn_and_latest_vit(home, fixture_runs):
    compare = _compare_picker(home)
    assert compare.value == [fixture_runs["cnn"].name, fixture_runs["vit"].name]


def test_vit_cnn_gap_is_reported_with_an_interval(home):
    gap = [m for m in home.metric if m.label.startswith("ViT − CNN")]
    assert gap and gap[0].value.endswith("%")
    assert "95% CI [" in _texts(home)


def test_family_filter_keeps_only_that_family(fixture_runs, monkeypatch):
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(fixture_runs["cnn"].parent))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.multiselect(key="home.f_family").set_value(["vit"]).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert set(_board(at)["model"]) == {"vit_ti16"}


def test_empty_runs_dir_offers_the_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "no_runs_yet"))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert [b.label for b in at.button] == ["Generate demo runs"]
    assert "python -m poc demo" in _texts(at)


def _fake_launcher(monkeypatch, launch, status=None):
    """The launcher's demo entry points replaced: no process is started."""
    monkeypatch.setattr(launcher, "launch_demo", launch)
    monkeypatch.setattr(launcher, "find_job", lambda job_id, runs_dir=None: status)


def test_demo_button_follows_the_job_with_a_progress_bar(tmp_path, monkeypatch):
    job = launcher.Job("job-1", "demo", ["python", "-m", "poc", "demo"], 424242, store.utc_now(), "job-1.log")
    status = launcher.JobStatus(job, "running", "demo", phase="run 1 of 2", progress=0.4)
    _fake_launcher(monkeypatch, lambda runs_dir=None: job, status)
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.button(key="home.demo_button").click().run()
    assert not at.exception
    assert_no_section_failed(at)
    bars = at.get("progress")
    assert len(bars) == 1 and bars[0].proto.value == 40
    assert bars[0].proto.text == "Demo runs: run 1 of 2"


def test_a_failed_demo_says_why(tmp_path, monkeypatch):
    job = launcher.Job("job-2", "demo", ["python", "-m", "poc", "demo"], 424242, store.utc_now(), "job-2.log")
    status = launcher.JobStatus(job, "failed", "demo", message="error: no space left on device")
    _fake_launcher(monkeypatch, lambda runs_dir=None: job, status)
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.button(key="home.demo_button").click().run()
    at.run()  # the fragment saw the job end and asked for a full rerun
    assert not at.exception
    assert_no_section_failed(at)
    assert [e.value for e in at.error] == ["Demo failed: error: no space left on device"]
    assert not at.get("progress")


def test_demo_launch_failure_is_an_error_message(tmp_path, monkeypatch):
    def refuse(runs_dir=None):
        raise RuntimeError("another demo is already running")

    _fake_launcher(monkeypatch, refuse)
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.button(key="home.demo_button").click().run()
    assert not at.exception
    assert_no_section_failed(at)
    assert any("another demo is already running" in e.value for e in at.error)


def test_malformed_runs_are_flagged_and_the_rest_still_shown(fixture_runs, monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    good = runs / fixture_runs["vit"].name
    shutil.copytree(fixture_runs["vit"], good, ignore=shutil.ignore_patterns("*.h5"))
    junk = runs / "20250103-000000-junk-metrics"
    shutil.copytree(fixture_runs["cnn"], junk, ignore=shutil.ignore_patterns("*.h5"))
    metrics = json.loads((junk / "eval" / "ft" / "metrics.json").read_text())
    (junk / "eval" / "ft" / "metrics.json").write_text(json.dumps({**metrics, "accuracy": "high", "macro_f1": "x"}))
    (runs / "20250103-000001-json-list").mkdir()
    (runs / "20250103-000001-json-list" / "run.json").write_text("[1, 2, 3]")
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert {good.name, junk.name} <= set(_board(at)["id"])
    assert "20250103-000001-json-list" in _texts(at)
    assert "accuracy is not a number" in _texts(at)


# ---------------------------------------------------------------- the verdict

def _copy_runs(fixture_runs, tmp_path: Path, keys: list[str]) -> Path:
    root = tmp_path / "runs"
    for key in keys:
        shutil.copytree(fixture_runs[key], root / fixture_runs[key].name, ignore=shutil.ignore_patterns("*.h5"))
    return root


def _edit_json(path: Path, **changes) -> dict:
    values = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(values))
    return values


def _metrics(run: Path, stage: str) -> dict:
    return store.read_json(store.RunDir(run).eval_file(stage, "metrics"))


def _metric(at: AppTest, label: str):
    found = [m for m in at.metric if m.label == label]
    assert len(found) == 1, [m.label for m in at.metric]
    return found[0]


def _home(runs: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs))
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert_no_section_failed(at)
    return at


def test_leaderboard_shows_final_stage_validation_size_from_parameters_and_pretraining(home, fixture_runs):
    info = store.read_json(store.RunDir(fixture_runs["cnn"]).run_json)
    row = _board(home).set_index("id").loc[fixture_runs["cnn"].name]
    assert row["final stage"] == info["final_stage"]
    assert row["val accuracy"] == pytest.approx(_metrics(fixture_runs["cnn"], info["final_stage"])["val_accuracy"])
    assert row["size MB"] == pytest.approx(info["params"]["size_mb"])  # not the weights file's size
    assert row["pretraining"] == "none"
    legacy = _board(home).set_index("id").loc[fixture_runs["many_classes"].name]
    assert legacy["pretraining"] == "none"  # older run: derived from its `weights`


def test_verdict_compares_the_split_of_the_latest_completed_run(home, fixture_runs):
    fingerprint = held_out_fingerprint(store.read_split(store.RunDir(fixture_runs["vit"])))  # its test images
    assert home.selectbox(key="home.split").value == fingerprint
    other = held_out_fingerprint(store.read_split(store.RunDir(fixture_runs["many_classes"])))
    labels = home.selectbox(key="home.split").options  # AppTest lists the shown labels
    assert len(labels) == 2 and f"test set {other[:8]} · 1 completed run" in labels[1]
    texts = _texts(home)
    assert "highest validation accuracy of each run's final stage" in texts  # the rule is stated
    assert f"dataset images, test set {fingerprint[:8]}" in texts  # the fixture's dataset folder


def test_gap_is_best_vit_minus_best_cnn_on_the_same_test_images(home, fixture_runs):
    def accuracy(key):
        pred = pd.read_csv(store.RunDir(fixture_runs[key]).eval_file("ft", "predictions"))
        return (pred["label"] == pred["pred"]).mean(), len(pred)

    (vit, n), (cnn, _) = accuracy("vit"), accuracy("cnn")
    assert _metric(home, "Best CNN").value == f"{_metrics(fixture_runs['cnn'], 'ft')['accuracy']:.1%}"
    assert _metric(home, "ViT − CNN accuracy").value == f"{vit - cnn:+.1%}"
    assert f"the same {n} test images" in _texts(home) and "(exact paired interval), McNemar p = " in _texts(home)


def test_the_best_run_is_chosen_on_validation_not_on_test(fixture_runs, monkeypatch, tmp_path):
    runs = _copy_runs(fixture_runs, tmp_path, ["cnn", "no_ft", "vit"])
    no_ft = runs / fixture_runs["no_ft"].name
    cnn_val = _metrics(fixture_runs["cnn"], "ft")["val_accuracy"]
    chosen = _edit_json(store.RunDir(no_ft).eval_file("tl", "metrics"), val_accuracy=cnn_val + 0.1)
    assert chosen["accuracy"] < _metrics(fixture_runs["cnn"], "ft")["accuracy"]  # worse on test, better on val
    at = _home(runs, monkeypatch)
    assert _metric(at, "Best CNN").value == f"{chosen['accuracy']:.1%}"
    assert "mobilenet_v2 fixture notf · final stage tl" in _texts(at)


def test_runs_without_validation_metrics_are_listed_as_not_comparable(fixture_runs, monkeypatch, tmp_path):
    runs = _copy_runs(fixture_runs, tmp_path, ["cnn", "vit"])
    metrics = store.RunDir(runs / fixture_runs["vit"].name).eval_file("ft", "metrics")
    values = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({k: v for k, v in values.items() if not k.startswith("val_")}))
    at = _home(runs, monkeypatch)
    assert _metric(at, "Best ViT").value == "—" and _metric(at, "ViT − CNN").value == "—"
    assert f"Not comparable, so not chosen (1): vit_ti16 fixture v1t0 (`{fixture_runs['vit'].name}`)" in _texts(at)


def test_a_difference_in_pretraining_is_said_beside_the_gap(fixture_runs, monkeypatch, tmp_path):
    runs = _copy_runs(fixture_runs, tmp_path, ["cnn", "vit"])
    _edit_json(store.RunDir(runs / fixture_runs["vit"].name).run_json, pretraining="demo")
    at = _home(runs, monkeypatch)
    assert "Pretraining differs: the CNN started from **none** weights, the ViT from **demo**" in _texts(at)
    same = _home(_copy_runs(fixture_runs, tmp_path / "same", ["cnn", "vit"]), monkeypatch)
    assert "Pretraining differs" not in _texts(same)


def test_the_best_baseline_of_the_same_split_is_shown(fixture_runs, monkeypatch, tmp_path):
    runs = _copy_runs(fixture_runs, tmp_path, ["cnn", "vit", "no_ft"])
    baseline = store.RunDir(runs / fixture_runs["no_ft"].name)
    _edit_json(baseline.run_json, family="baseline", model="baseline_pixels", name="pixels")
    at = _home(runs, monkeypatch)
    assert _metric(at, "Best baseline").value == f"{_metrics(baseline.path, 'tl')['accuracy']:.1%}"
    assert "pixels · final stage tl" in _texts(at)
    # the baseline competes only with baselines: the CNN card keeps the real CNN
    assert _metric(at, "Best CNN").value == f"{_metrics(fixture_runs['cnn'], 'ft')['accuracy']:.1%}"


def test_choosing_another_split_compares_only_its_runs(fixture_runs, monkeypatch):
    at = _home(fixture_runs["cnn"].parent, monkeypatch)
    other = held_out_fingerprint(store.read_split(store.RunDir(fixture_runs["many_classes"])))
    at.selectbox(key="home.split").set_value(other).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert _metric(at, "Best CNN").value == "—"  # its only CNN is an older run without validation metrics
    assert f"(`{fixture_runs['many_classes'].name}`)" in _texts(at)


def test_the_default_split_follows_the_latest_completed_run_until_one_is_chosen(fixture_runs, monkeypatch,
                                                                                tmp_path):
    runs = _copy_runs(fixture_runs, tmp_path, ["cnn", "vit"])
    at = _home(runs, monkeypatch)
    first = at.selectbox(key="home.split").value
    shutil.copytree(fixture_runs["many_classes"], runs / fixture_runs["many_classes"].name)
    newer = store.RunDir(runs / fixture_runs["many_classes"].name)
    _edit_json(newer.run_json, finished="2025-01-02T00:00:00+00:00")  # now the latest completed run
    at.run()
    assert at.selectbox(key="home.split").value == held_out_fingerprint(store.read_split(newer)) != first
    at.selectbox(key="home.split").set_value(first).run()
    at.run()
    assert at.selectbox(key="home.split").value == first  # the user's choice stays


# ---------------------------------------------------------------- the shared selection

def test_home_and_learning_curves_share_one_selection(fixture_runs, monkeypatch):
    at = _home(fixture_runs["cnn"].parent, monkeypatch)
    _compare_picker(at).set_value([fixture_runs["vit"].name]).run()
    assert _compare_picker(at).value == [fixture_runs["vit"].name]
    at.switch_page("pages/1_Learning_curves.py").run()
    runs = next(m for m in at.multiselect if m.label == "Runs")
    assert runs.value == [fixture_runs["vit"].name]
    runs.set_value([fixture_runs["cnn"].name, fixture_runs["no_ft"].name]).run()
    at.switch_page("pages/0_Home.py").run()
    assert _compare_picker(at).value == [fixture_runs["cnn"].name, fixture_runs["no_ft"].name]
    _compare_picker(at).set_value([]).run()  # a user may clear it: the other pages then ask for a choice
    at.switch_page("pages/1_Learning_curves.py").run()
    assert next(m for m in at.multiselect if m.label == "Runs").value == []
    assert "Choose one or more runs" in _texts(at)


def _two_pickers():
    """Two pickers drawn from one selection, as a browser that still sends a widget of an earlier draw."""
    from ui import data, state

    options = data.load_leaderboard()["id"].tolist()
    state.compare_picker("first", options, key="t.first")
    state.compare_picker("second", options, key="t.second")


def test_a_widget_drawn_from_an_older_choice_cannot_overwrite_the_selection(fixture_runs, monkeypatch):
    """The load test's lost selection: a browser on a busy machine sent a widget's value after the selection it
    was drawn from had changed. The first change applies; one sent in the same rerun by a widget drawn from the
    choice before it is dropped, empty or not."""
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(fixture_runs["cnn"].parent))
    at = AppTest.from_function(_two_pickers, default_timeout=60).run()
    first, second = at.multiselect
    assert first.value == second.value == [fixture_runs["cnn"].name, fixture_runs["vit"].name]
    first.set_value([fixture_runs["vit"].name])
    second.set_value([])
    at.run()
    assert not at.exception
    assert at.session_state["vitrine.selected_runs"] == [fixture_runs["vit"].name]
    assert [m.value for m in at.multiselect] == [[fixture_runs["vit"].name]] * 2


# ---------------------------------------------------------------- navigation and import direction

def test_home_is_the_default_page_and_the_others_are_registered(fixture_runs, monkeypatch):
    at = _home(fixture_runs["cnn"].parent, monkeypatch)
    assert at.title[0].value == "ViTrine"
    assert [e.label for e in at.sidebar.expander][:1] == ["Launch a training run"]  # set by dashboard.py
    for path, title in (("pages/1_Learning_curves.py", "Learning curves"),
                        ("pages/2_Error_explorer.py", "Error explorer")):
        at.switch_page(path).run()  # refused for a file st.navigation does not register
        assert not at.exception, path
        assert_no_section_failed(at)
        assert at.title[0].value == title
