"""Studies (issue 11, points 1, 5 and 8): cutoff sweeps, seed repeats and data-size runs, their summary, the
Cutoff sweep page and the sidebar's sweep launch.

The real runs are tiny (three classes of flat 32 px images, mobilenet_v2 with random weights, one epoch per
phase): they check the plumbing (one split, one phase 1, one run per cutoff / seed / fraction), not accuracy. The
summary and page checks use study runs written by hand, whose numbers are chosen so the expectations can be
worked out independently (scipy's Wilson interval, numpy's standard deviation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed
from cli import call_cli, call_main
from conftest import make_class_folders
from poc.runs import store
from poc.launch import launcher
from poc.runs import study
from poc.train import studies
from poc.runs.store import RunDir
from poc.config import RunConfig
from poc.errors import UserError
from poc.analysis.evaluation import evaluate_probabilities
from ui.studies_view import STUDIES_KEY

PAGE = "../pages/6_Cutoff_sweep.py"  # relative to this file, as AppTest resolves it
TINY = ["--model", "mobilenet_v2", "--weights", "none", "--image-size", "32", "--tl-epochs", "1", "--ft-epochs", "1",
        "--batch-size", "16", "--tl-views", "0", "--augment", "none"]
CUTOFFS = ["Conv_1", "155"]  # mobilenet_v2's last conv block, and the whole backbone frozen (155 layers)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("studies") / "data", {"circle": 6, "square": 6, "star": 6},
                              size=(32, 32))


@pytest.fixture(scope="module")
def sweep(tiny_data, tmp_path_factory):
    """A real sweep: one phase 1, then one phase-2 run per cutoff."""
    runs = tmp_path_factory.mktemp("sweep_runs")
    result = call_main("sweep", "--data", tiny_data, *TINY, "--cutoffs", ",".join(CUTOFFS), "--json", runs_dir=runs)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    infos = {r["id"]: store.read_json(RunDir(Path(r["path"])).run_json) for r in out["runs"]}
    return {"runs_dir": runs, "out": out, "infos": infos}


@pytest.fixture(scope="module")
def repeats(tiny_data, tmp_path_factory):
    """Real seed repeats x train fractions, phase 1 only: `train --seeds 0,1 --train-fraction 0.5,1.0`."""
    runs = tmp_path_factory.mktemp("repeat_runs")
    result = call_main("train", "--data", tiny_data, *TINY, "--ft-epochs", "0", "--seed", "5", "--seeds", "0,1",
                       "--train-fraction", "0.5,1.0", runs_dir=runs)
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    return {"paths": paths, "infos": [store.read_json(RunDir(Path(p)).run_json) for p in paths],
            "splits": [store.read_split(RunDir(Path(p))) for p in paths], "stderr": result.stderr}


def _by_role(sweep, role: str) -> list[dict]:
    return [i for i in sweep["infos"].values() if i["study"]["role"] == role]


# ---------------------------------------------------------------- the sweep

def test_a_sweep_shares_one_split_and_one_phase_1(sweep):
    (phase1,), phase2 = _by_role(sweep, "phase1"), _by_role(sweep, "phase2")
    assert phase1["config"]["ft_epochs"] == 0 and set(phase1["timing"]) <= {"features_tl", "tl"}
    assert {i["from_run"] for i in phase2} == {phase1["id"]}
    assert {i["dataset"]["split_fingerprint"] for i in sweep["infos"].values()} == \
        {phase1["dataset"]["split_fingerprint"]}
    splits = [store.read_split(store.find_run(i["id"], sweep["runs_dir"])) for i in sweep["infos"].values()]
    assert all(s.equals(splits[0]) for s in splits)
    assert {i["study"]["id"] for i in sweep["infos"].values()} == {sweep["out"]["study"]}


def test_every_phase_2_run_starts_from_the_same_head_weights(sweep):
    """Each phase-2 run evaluates its starting weights as stage tl: identical probabilities to phase 1's."""
    (phase1,), phase2 = _by_role(sweep, "phase1"), _by_role(sweep, "phase2")
    base = store.read_predictions(store.find_run(phase1["id"], sweep["runs_dir"]), "tl")
    probs = [c for c in base.columns if c.startswith("prob_")]
    for info in phase2:
        start = store.read_predictions(store.find_run(info["id"], sweep["runs_dir"]), "tl")
        np.testing.assert_allclose(start[probs].to_numpy(), base[probs].to_numpy(), rtol=0, atol=1e-6)


def test_one_phase_2_run_per_cutoff_records_its_cutoff_and_trainable_count(sweep):
    phase1, phase2 = _by_role(sweep, "phase1")[0], _by_role(sweep, "phase2")
    assert [i["study"]["cutoff"] for i in phase2] == CUTOFFS
    assert [i["fine_tune_at"] for i in phase2] == CUTOFFS
    for info in phase2:
        assert info["study"]["trainable_params"] == info["params"]["trainable_ft"]
        assert info["study"]["kind"] == "sweep" and "ft" in info["timing"] and "tl" not in info["timing"]
    conv1, frozen = (i["study"]["trainable_params"] for i in phase2)
    head = phase1["params"]["trainable_tl"]
    assert phase1["study"]["trainable_params"] == head == frozen < conv1  # "155" freezes the whole backbone


def test_the_sweep_summary_has_the_head_only_point_and_one_row_per_cutoff(sweep):
    summary = pd.DataFrame(sweep["out"]["summary"])
    assert set(summary["value"]) == {study.HEAD_ONLY, *CUTOFFS}
    assert (summary["runs"] == 1).all() and summary["paired"].all()
    assert summary["best"].sum() == 1
    assert sweep["out"]["failed"] == []


def test_the_page_renders_the_real_sweep(sweep, monkeypatch):
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(sweep["runs_dir"]))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert set(at.dataframe[0].value["cutoff"]) == {study.HEAD_ONLY, *CUTOFFS}
    tests, = [d.value for d in at.dataframe if "vs best" in d.value.columns]  # phase 1 (tl) and phase 2 (ft) pair
    assert len(tests) == 2 and (tests["not tested because"] == "").all()


# ---------------------------------------------------------------- cutoffs, checked before anything trains

def test_auto_picks_about_five_cutoffs_spread_over_trainable_parameters():
    config = RunConfig(data="d", model="mobilenet_v2", image_size=32)
    _, picked = studies.validate_sweep(config, "auto")
    counts = [c.trainable_params for c in picked]
    assert len(picked) == studies.AUTO_COUNT and counts == sorted(set(counts))
    assert picked[0].value == "Conv_1" and picked[-1].value == "0"  # fewest and most trainable (head-only left out)


def test_auto_takes_the_choice_nearest_to_each_evenly_spaced_target():
    choices = [studies.Cutoff(str(k), k, k) for k in (0, 10, 20, 24, 48, 53, 75, 99, 100, 1000)]  # last: head only
    assert [c.trainable_params for c in studies.pick_auto(choices, 5)] == [0, 24, 48, 75, 100]
    assert studies.pick_auto(choices[:3], 5) == choices[:2]


@pytest.mark.parametrize("cutoffs, needle", [("Conv_1,nope", "'nope' is not a layer"),
                                             ("blocks:3", "no encoder blocks"),
                                             ("Conv_1,151", "Conv_1 and 151 are the same cutoff"),
                                             ("Conv_1,Conv_1", "more than once"), (",", "--cutoffs is empty")])
def test_a_bad_cutoff_is_refused_before_anything_trains(capsys, monkeypatch, tmp_path, tiny_data, cutoffs, needle):
    result = call_cli(capsys, monkeypatch, "sweep", "--data", tiny_data, *TINY, "--cutoffs", cutoffs,
                      "--runs-dir", tmp_path / "runs")
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_sweep_refuses_fine_tune_at_and_zero_fine_tuning_epochs(capsys, monkeypatch, tmp_path, tiny_data):
    for extra, needle in ((["--fine-tune-at", "Conv_1"], "not --fine-tune-at"), (["--ft-epochs", "0"], "at least 1")):
        result = call_cli(capsys, monkeypatch, "sweep", "--data", tiny_data, *TINY, *extra, "--cutoffs", "Conv_1",
                          "--runs-dir", tmp_path / "runs")
        assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- seeds and train fractions

def test_seed_repeats_are_paired_on_the_split_of_seed(repeats):
    infos, splits = repeats["infos"], repeats["splits"]
    assert len(infos) == 4 and [i["seed"] for i in infos] == [0, 1, 0, 1]
    assert {i["split_seed"] for i in infos} == {5} and {i["study"]["split_seed"] for i in infos} == {5}
    assert len({i["dataset"]["split_fingerprint"] for i in infos}) == 1
    for s in ("val", "test"):
        assert all(sp[sp["split"] == s]["path"].tolist() == splits[0][splits[0]["split"] == s]["path"].tolist()
                   for sp in splits)
    train = [set(sp[sp["split"] == "train"]["path"]) for sp in splits]
    assert train[0] == train[1] and train[2] == train[3]  # same images for both seeds of a fraction


def test_train_fractions_grow_the_training_images_on_one_fingerprint(repeats):
    infos, splits = repeats["infos"], repeats["splits"]
    assert [i["study"]["train_fraction"] for i in infos] == [0.5, 0.5, 1.0, 1.0]
    assert {i["study"]["kind"] for i in infos} == {"data_size"} and len({i["study"]["id"] for i in infos}) == 1
    half, full = (i["dataset"]["counts"]["train"] for i in (infos[0], infos[2]))
    assert 0 < half < full
    train = [set(sp[sp["split"] == "train"]["path"]) for sp in splits]
    assert train[0] < train[2]  # the smaller share is a subset of the larger one
    assert "data_size" in repeats["stderr"]  # the summary goes to stderr; stdout is one run directory per line


def test_one_train_fraction_and_no_seeds_parse_as_one_run():
    from poc.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--data", "d", "--train-fraction", "0.5"])
    assert args.seeds is None and config_from_args(args).train_fraction == 0.5
    with pytest.raises(UserError, match="--train-fraction lists 2 values"):
        config_from_args(build_parser().parse_args(["train", "--data", "d", "--train-fraction", "0.5,1"]))


def test_a_seed_plan_keeps_one_split_seed_and_a_sweep_plan_one_phase_1_per_seed():
    config = RunConfig(data="d", model="mobilenet_v2", seed=7)
    plan = studies.plan_sweep(config, [studies.Cutoff("Conv_1", 151, 1), studies.Cutoff("0", 0, 2)], [0, 1])
    roles = [(r.study["role"], r.config.seed, r.base) for r in plan.runs]
    assert roles == [("phase1", 0, None), ("phase2", 0, 0), ("phase2", 0, 0),
                     ("phase1", 1, None), ("phase2", 1, 3), ("phase2", 1, 3)]
    assert {r.study["split_seed"] for r in plan.runs} == {7}
    assert {r.split_seed for r in plan.runs if r.base is None} == {7}  # phase 2 reuses its phase 1's split
    with pytest.raises(UserError, match="distinct seeds"):
        studies.plan_repeats(config, [1, 1])


# ---------------------------------------------------------------- the summary (runs written by hand)

def write_study_run(root: Path, run_id: str, study: dict, *, correct: int, val_acc: float, val_loss: float = 1.0,
                    n: int = 10, model: str = "mobilenet_v2", family: str = "cnn", trainable: int = 1000,
                    train_images: int = 40, gap: float = 0.1, seconds: float = 30.0,
                    fingerprint: str = "fp-1") -> RunDir:
    """A completed study run: stage ft (tl for a phase-1 run) with `correct` of `n` test images right."""
    rd = RunDir(root / run_id)
    rd.path.mkdir(parents=True)
    stage = "tl" if study.get("role") == "phase1" else "ft"
    labels = np.array([i % 2 for i in range(n)])
    preds = np.where(np.arange(n) < correct, labels, 1 - labels)
    test = pd.DataFrame({"path": [f"/img/{i}.png" for i in range(n)], "label": np.array(["a", "b"])[labels]})
    result = evaluate_probabilities(test, np.eye(2)[preds] * 0.9 + 0.05, ["a", "b"])
    result["metrics"].update(val_accuracy=val_acc, val_loss=val_loss)
    rd.write_eval(stage, **result)
    rd.write_history([{"epoch": 1, "phase": stage, "loss": 1.0, "accuracy": val_acc + gap, "val_loss": val_loss,
                       "val_accuracy": val_acc, "lr": 1e-3, "seconds": seconds}])
    rd.write_run({"id": run_id, "name": run_id, "status": "completed", "model": model, "family": family,
                  "class_names": ["a", "b"], "created": "2025-01-01T00:00:00+00:00", "final_stage": stage,
                  "dataset": {"path": "/d", "split_fingerprint": fingerprint,
                              "counts": {"train": train_images, "val": 10, "test": n}},
                  "params": {"total": 5000, "trainable_tl": 100, "trainable_ft": trainable},
                  "timing": {stage: seconds}, "best_epoch": {stage: 1},
                  "study": {**study, "trainable_params": trainable}})
    return rd


def _sweep_study(root: Path, study_id: str, model: str, family: str, rows: list[tuple]) -> None:
    """rows: (cutoff or None for phase 1, trainable, correct, val_acc)."""
    for i, (cutoff, trainable, correct, val_acc) in enumerate(rows):
        role = "phase1" if cutoff is None else "phase2"
        write_study_run(root, f"{study_id}-r{i}", {"kind": "sweep", "id": study_id, "role": role, "cutoff": cutoff,
                                                   "seed": 0, "split_seed": 0, "train_fraction": 1.0},
                        correct=correct, val_acc=val_acc, trainable=trainable, model=model, family=family)


def _summary(root: Path) -> pd.DataFrame:
    from poc.analysis.study_results import study_summary

    return study_summary(store.list_runs(root))


def test_best_is_chosen_on_validation_and_test_predictions_never_move_it(tmp_path):
    _sweep_study(tmp_path, "20250101-000000-sweep-cnn", "mobilenet_v2", "cnn",
                 [(None, 100, 5, 0.50), ("Conv_1", 400, 4, 0.80), ("block_16_expand", 900, 9, 0.60)])
    before = _summary(tmp_path).set_index("value")
    assert before["best"].tolist().count(True) == 1 and before.loc["Conv_1", "best"]  # not the best test (9/10)
    # Perturb the test predictions: the best-on-validation row now gets every test image wrong, another all right.
    for run, flip in (("r1", True), ("r0", False)):
        path = RunDir(tmp_path / f"20250101-000000-sweep-cnn-{run}").eval_file("ft" if run != "r0" else "tl",
                                                                                "predictions")
        predictions = pd.read_csv(path)
        predictions["pred"] = np.where(predictions["label"] == "a", "b", "a") if flip else predictions["label"]
        store.write_csv(path, predictions)
    after = _summary(tmp_path).set_index("value")
    assert after.loc["Conv_1", "acc_mean"] == 0.0 and after.loc[study.HEAD_ONLY, "acc_mean"] == 1.0
    assert after["best"].equals(before["best"])


def test_the_summary_gives_mean_spread_and_wilson_interval_over_seeds(tmp_path):
    for seed, correct in enumerate((6, 7, 8)):
        write_study_run(tmp_path, f"20250101-000000-seeds-r{seed}", {"kind": "seeds", "id": "s", "role": "run",
                                                                     "seed": seed, "split_seed": 0,
                                                                     "train_fraction": 1.0},
                        correct=correct, val_acc=0.5, gap=0.1 * seed, seconds=10.0 * (seed + 1))
    row = _summary(tmp_path).iloc[0]
    wilson = scipy_stats.binomtest(7, 10).proportion_ci(method="wilson")
    assert row["runs"] == 3 and row["seeds"] == "0,1,2" and row["value"] == study.REPEATS
    assert row["acc_mean"] == pytest.approx(0.7) and row["acc_std"] == pytest.approx(np.std([.6, .7, .8], ddof=1))
    assert (row["acc_low"], row["acc_high"]) == pytest.approx((wilson.low, wilson.high))
    assert row["gap_mean"] == pytest.approx(0.1) and row["train_seconds_mean"] == pytest.approx(20.0)
    assert row["paired"] and row["best"]


def test_a_sweep_row_that_trained_its_own_phase_1_counts_its_fine_tuning_time_alone(tmp_path):
    """The demo's CNN is a point of its own sweep: its phase 1 is the shared one, so its row's time is its ft."""
    rd = write_study_run(tmp_path, "20250101-000000-sweep-cnn-own", {"kind": "sweep", "id": "s", "role": "phase2",
                                                                    "cutoff": "block_10_expand", "seed": 0,
                                                                    "split_seed": 0, "train_fraction": 1.0},
                         correct=8, val_acc=0.5, seconds=12.0)
    rd.update_run(timing={"features_tl": 3.0, "tl": 5.0, "ft": 12.0})
    assert _summary(tmp_path).iloc[0]["train_seconds_mean"] == pytest.approx(12.0)


def test_runs_on_different_splits_are_not_paired(tmp_path):
    for i, fingerprint in enumerate(("fp-1", "fp-2")):
        write_study_run(tmp_path, f"r{i}", {"kind": "seeds", "id": "s", "role": "run", "seed": i,
                                            "train_fraction": 1.0}, correct=5, val_acc=0.5, fingerprint=fingerprint)
    assert not _summary(tmp_path).iloc[0]["paired"]


# ---------------------------------------------------------------- the page

@pytest.fixture
def study_runs(tmp_path):
    """A CNN sweep and a ViT sweep on one split, and a data-size study of each model."""
    _sweep_study(tmp_path, "20250101-100000-sweep-cnn", "mobilenet_v2", "cnn",
                 [(None, 12_810, 5, 0.5), ("Conv_1", 422_410, 7, 0.7), ("0", 2_202_570, 6, 0.65)])
    _sweep_study(tmp_path, "20250101-110000-sweep-vit", "vit_ti16", "vit",
                 [(None, 1_930, 4, 0.4), ("blocks:8", 1_781_770, 8, 0.75), ("blocks:0", 5_340_682, 6, 0.6)])
    for model, family in (("mobilenet_v2", "cnn"), ("vit_ti16", "vit")):
        for fraction, images, correct in ((0.25, 10, 4), (1.0, 40, 8)):
            for seed in (0, 1):
                write_study_run(tmp_path, f"20250101-120000-size-{family}-{fraction}-{seed}",
                                {"kind": "data_size", "id": f"size-{family}", "role": "run", "seed": seed,
                                 "split_seed": 0, "train_fraction": fraction},
                                correct=correct - seed, val_acc=0.5, model=model, family=family,
                                train_images=images)
    return tmp_path


def _texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "warning", "info", "code", "subheader")
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def test_the_page_plots_both_sweeps_and_the_data_size_study(study_runs, monkeypatch):
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(study_runs))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert at.title[0].value == "Cutoff sweep"
    assert len(at.multiselect(key=STUDIES_KEY).value) == 2  # the newest sweep of each model
    charts = at.get("vega_lite_chart")
    assert len(charts) == 4  # accuracy, gap, time vs trainable parameters; accuracy vs training images
    sweep_table, size_table = _summary_table(at, "cutoff"), _summary_table(at, "share")
    assert set(sweep_table["model"]) == {"mobilenet_v2", "vit_ti16"}
    stars = sweep_table[sweep_table["best (validation)"] == "★"]
    assert sorted(stars["cutoff"]) == ["Conv_1", "blocks:8"]
    assert size_table["± over seeds"].str.startswith("±").all()  # two seeds per point: mean ± spread
    assert "validation" in _texts(at) and "Wilson" in _texts(at)


def _summary_table(at: AppTest, what: str) -> pd.DataFrame:
    """The page's summary table of one kind of study (`what`: cutoff or share), not a table of tests."""
    return next(d.value for d in at.dataframe if {"model", what} <= set(d.value.columns))


def _tests_tables(at: AppTest, what: str) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe if {"vs best", what} <= set(d.value.columns)]


def test_the_page_tests_each_row_against_the_best_with_holm_adjusted_p_values(study_runs, monkeypatch):
    from poc.analysis.study_results import study_summary, study_tests

    moved = RunDir(study_runs / "20250101-120000-size-vit-0.25-0").eval_file("ft", "predictions")
    predictions = pd.read_csv(moved)
    store.write_csv(moved, predictions.assign(path=predictions["path"].str.replace("/img/", "/moved/")))
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(study_runs))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert_no_section_failed(at)
    runs = store.list_runs(study_runs)
    expected = study_tests(runs, study_summary(runs))
    sweeps = _tests_tables(at, "cutoff")
    assert len(sweeps) == 2  # one per shown sweep: each is its own family
    for shown in sweeps:
        holm_column = "p (Holm-adjusted over the 2 tests of this study)"
        assert holm_column in shown.columns and "per-comparison 95% interval" in shown.columns
        assert set(shown["vs best"]) <= {"Conv_1", "blocks:8"} and set(shown["seed"]) == {"seed 0"}
        family = expected[expected["vs"] == shown["vs best"].iloc[0]].set_index("value").loc[shown["cutoff"]]
        assert shown[holm_column].tolist() == [f"{p:.3g}" for p in family["p_holm"]]
    sizes = _tests_tables(at, "share")
    assert len(sizes) == 2
    reasons = [t["not tested because"].iloc[0] for t in sizes]
    assert sum("different images" in r for r in reasons) == 1  # the moved ViT run: shown, not a crash
    assert "Holm" in _texts(at) and "excludes 0" in _texts(at)


def test_the_page_without_studies_shows_the_command_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert any("python -m poc sweep" in c.value for c in at.code)


def test_pages_reach_poc_only_through_ui():
    source = (Path(__file__).resolve().parents[1] / "pages" / "6_Cutoff_sweep.py").read_text()
    assert "poc" not in {line.split()[1].split(".")[0] for line in source.splitlines()
                         if line.startswith(("import ", "from "))}


# ---------------------------------------------------------------- the sidebar's sweep launch

def test_launch_sweep_resolves_auto_and_starts_one_sweep_job(tmp_path, monkeypatch, fake_spawn):
    make_class_folders(tmp_path / "data" / "shapes", {"circle": 3, "square": 3})
    monkeypatch.setenv("VITRINE_DATA_ROOT", str(tmp_path / "data"))
    config = RunConfig(data=str(tmp_path / "data" / "shapes"), model="mobilenet_v2", weights="none", image_size=32,
                       fine_tune_at="Conv_1")
    job = launcher.launch_sweep(config, "auto", tmp_path / "runs")
    (wrapper, _), = fake_spawn
    argv = wrapper[wrapper.index("--") + 1:]
    assert argv[2:4] == ["poc", "sweep"] and "--fine-tune-at" not in argv
    cutoffs = argv[argv.index("--cutoffs") + 1].split(",")
    assert len(cutoffs) == studies.AUTO_COUNT and job.config["study"]["planned"] == studies.AUTO_COUNT + 1
    status = launcher.job_status(job, tmp_path / "runs")
    assert status.active and status.name == f"sweep mobilenet_v2 ({studies.AUTO_COUNT} cutoffs)"
    with pytest.raises(UserError, match="nope"):
        launcher.launch_sweep(config, "Conv_1,nope", tmp_path / "runs")
    assert len(fake_spawn) == 1  # the refused sweep started nothing


def sidebar_app():
    from ui.sidebar import render_sidebar

    render_sidebar()


def test_the_sidebar_launches_a_sweep_and_refuses_a_bad_cutoff(tmp_path, monkeypatch, fake_spawn):
    make_class_folders(tmp_path / "data" / "shapes", {"circle": 3, "square": 3})
    monkeypatch.setenv("VITRINE_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_function(sidebar_app)
    at.session_state["launcher_open"] = True
    at.run(timeout=90)
    at.radio(key="launcher_weights").set_value("none").run(timeout=90)
    assert at.text_input(key="launcher_sweep_cutoffs").value == "auto"
    at.text_input(key="launcher_sweep_cutoffs").input("Conv_1,nope").run(timeout=90)
    at.button(key="launcher_sweep").click().run(timeout=90)
    assert not at.exception and "nope" in at.sidebar.error[0].value and not fake_spawn
    assert_no_section_failed(at)
    at.text_input(key="launcher_sweep_cutoffs").input("block_16_expand,Conv_1").run(timeout=90)
    at.button(key="launcher_sweep").click().run(timeout=90)
    assert not at.exception and any("sweep of 2 cutoffs" in s.value for s in at.sidebar.success)
    assert_no_section_failed(at)
    (wrapper, _), = fake_spawn
    assert wrapper[wrapper.index("--cutoffs") + 1] == "block_16_expand,Conv_1"
    job, = launcher.list_jobs(tmp_path / "runs")
    assert job.job.kind == "sweep" and job.active
