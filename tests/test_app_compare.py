"""The Compare page (pages/5_Compare.py) under Streamlit's AppTest on the shared fixture runs: paired (the CNN and
the ViT share a split) and unpaired (a copy of the ViT with another split fingerprint). Expected numbers are
computed here from predictions.csv with pandas, scipy and scikit-learn."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import f1_score
from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed
from poc.runs import store

COMPARE = "../pages/5_Compare.py"  # relative to this file, as AppTest resolves it
HOME = "../dashboard.py"


def _page(path: str, root, monkeypatch=None) -> AppTest:
    if monkeypatch is not None:
        monkeypatch.setenv("VITRINE_RUNS_DIR", str(root))
    return AppTest.from_file(path, default_timeout=90).run()


@pytest.fixture(scope="module")
def paired(fixture_runs) -> AppTest:
    """The page as it first opens on the fixture runs (read-only checks share it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITRINE_RUNS_DIR", str(fixture_runs["cnn"].parent))
        yield _page(COMPARE, None)


def _texts(at: AppTest) -> str:
    kinds = ("markdown", "caption", "warning", "info", "error", "subheader")
    return "\n".join(str(e.value) for kind in kinds for e in getattr(at, kind))


def _predictions(run, stage: str) -> pd.DataFrame:
    return pd.read_csv(store.RunDir(run).eval_file(stage, "predictions"))


def _final(run) -> str:
    return store.read_json(store.RunDir(run).run_json)["final_stage"]


def _outcomes(fixture_runs) -> tuple[np.ndarray, np.ndarray]:
    a = _predictions(fixture_runs["cnn"], _final(fixture_runs["cnn"]))
    b = _predictions(fixture_runs["vit"], _final(fixture_runs["vit"])).set_index("path").loc[a["path"]]
    return (a["label"] == a["pred"]).to_numpy(), (b["label"] == b["pred"]).to_numpy()


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


# ---------------------------------------------------------------- paired

def test_the_page_opens_on_the_best_cnn_and_the_best_vit_of_one_split(paired, fixture_runs):
    assert not paired.exception
    assert_no_section_failed(paired)
    assert paired.title[0].value == "Compare"
    assert paired.selectbox(key="compare.run_a").value == fixture_runs["cnn"].name
    assert paired.selectbox(key="compare.run_b").value == fixture_runs["vit"].name
    assert "Paired: both runs were tested on the same 20 test images" in _texts(paired)


def test_difference_and_mcnemar_p_equal_an_independent_computation(paired, fixture_runs):
    ok_a, ok_b = _outcomes(fixture_runs)
    only_a, only_b = int((ok_a & ~ok_b).sum()), int((~ok_a & ok_b).sum())
    assert _metric(paired, "A − B") == f"{ok_a.mean() - ok_b.mean():+.1%}"
    assert _metric(paired, "McNemar exact p") == f"{sps.binomtest(only_a, only_a + only_b, 0.5).pvalue:.3g}"
    assert "paired over the same 20 test images" in _texts(paired)
    assert [m.help for m in paired.metric if m.label == "A − B"][0].startswith("exact: Clopper-Pearson")


def test_the_agreement_table_counts_equal_a_crosstab(paired, fixture_runs):
    ok_a, ok_b = _outcomes(fixture_runs)
    table = paired.dataframe[0].value
    assert table.loc["A right", "B right"] == int((ok_a & ok_b).sum())
    assert table.loc["A right", "B wrong"] == int((ok_a & ~ok_b).sum())
    assert table.loc["A wrong", "B right"] == int((~ok_a & ok_b).sum())
    assert table.loc["A wrong", "B wrong"] == int((~ok_a & ~ok_b).sum())


def test_each_cell_opens_its_images(fixture_runs, monkeypatch):
    at = _page(COMPARE, fixture_runs["cnn"].parent, monkeypatch)
    ok_a, ok_b = _outcomes(fixture_runs)
    a = _predictions(fixture_runs["cnn"], _final(fixture_runs["cnn"]))
    for cell, mask in (("only_a", ok_a & ~ok_b), ("both_wrong", ~ok_a & ~ok_b)):
        at.selectbox(key="compare.cell").set_value(cell).run()
        captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
        expected = a[mask]
        assert len(captions) == min(24, len(expected)), cell
        assert all(c.startswith(f"true {t} · A: {p} · B:") for c, t, p in
                   zip(captions, expected["label"], expected["pred"]))


def _reliability_specs(at: AppTest) -> list[dict]:
    specs = [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]
    return [s for s in specs if "equal-width bins" in json.dumps(s)]


def _ece(run, stage: str) -> float:
    return _ece_of(_predictions(run, stage))


def _ece_of(frame: pd.DataFrame) -> float:
    """15 equal-width bins over [0, 1], the last one closed, computed here with numpy."""
    confidence, correct = frame["confidence"].to_numpy(), (frame["label"] == frame["pred"]).to_numpy()
    bins = np.minimum((confidence * 15).astype(int), 14)
    return sum(abs(correct[bins == k].mean() - confidence[bins == k].mean()) * (bins == k).mean()
               for k in range(15) if (bins == k).any())


def test_a_reliability_diagram_per_run_with_its_ece(paired, fixture_runs):
    assert len(_reliability_specs(paired)) == 2
    captions = "\n".join(c.value for c in paired.caption)
    for key in ("cnn", "vit"):
        ece = _ece(fixture_runs[key], _final(fixture_runs[key]))
        assert f"ECE (15 equal-width confidence bins, 20 test images): **{ece:.3f}**" in captions


def test_fine_tuning_flags_exactly_the_classes_that_got_worse(paired, fixture_runs):
    warnings = "\n".join(w.value for w in paired.warning)
    for key in ("cnn", "vit"):
        tl, ft = _predictions(fixture_runs[key], "tl"), _predictions(fixture_runs[key], "ft")
        classes = sorted(set(tl["label"]))
        delta = f1_score(ft["label"], ft["pred"], labels=classes, average=None, zero_division=0) \
            - f1_score(tl["label"], tl["pred"], labels=classes, average=None, zero_division=0)
        worse = [c for c, d in zip(classes, delta) if d < 0]
        if worse:
            assert f"F1 dropped after fine-tuning for {len(worse)} class" in warnings
            assert all(c in warnings for c in worse)
    assert _texts(paired).count("Fine-tuning changed test accuracy by") == 2


def test_the_cost_table_shows_both_runs(paired, fixture_runs):
    cost = next(d.value for d in paired.dataframe if "MACs / image" in d.value.columns)
    for (_, row), key in zip(cost.iterrows(), ("cnn", "vit")):
        params = store.read_json(store.RunDir(fixture_runs[key]).run_json)["params"]
        assert (row["parameters"], row["trainable tl"], row["trainable ft"]) == \
            (params["total"], params["trainable_tl"], params["trainable_ft"])
    assert list(cost["latency ms"]) == ["not measured", "not measured"]
    assert all(v.startswith("≈") for v in cost["MACs / image"])


def test_the_report_is_built_only_when_asked(fixture_runs, monkeypatch):
    at = _page(COMPARE, fixture_runs["cnn"].parent, monkeypatch)
    assert not at.get("download_button")
    at.checkbox(key="compare.report.prepare").check().run()
    assert not at.exception and len(at.get("download_button")) == 1
    assert_no_section_failed(at)


def _render_calibration(run_id: str) -> None:
    from ui.calibration_view import render_calibration

    render_calibration(run_id, "ft")


def test_the_temperature_fitted_on_stored_validation_logits_gives_the_ece_after_scaling(fixture_runs, tmp_path,
                                                                                      monkeypatch):
    """Not metrics.json's number, nor probabilities read back from predictions.csv: the page fits T on
    logits.npz's validation logits (here a grid search written out) and applies it to its test logits."""
    from scipy.special import log_softmax, softmax

    run = tmp_path / "runs" / fixture_runs["cnn"].name
    shutil.copytree(fixture_runs["cnn"], run, ignore=shutil.ignore_patterns("*.h5", "logs"))
    rd = store.RunDir(run)
    metrics = store.read_json(rd.eval_file("ft", "metrics"))
    store.write_json(rd.eval_file("ft", "metrics"), {**metrics, "temperature": 2.5})  # ignored: logits decide
    with np.load(rd.eval_file("ft", "logits")) as z:
        val, val_labels, test = z["val"].astype(float), z["val_labels"], z["test"].astype(float)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20001))
    nll = [-log_softmax(val / t, axis=1)[np.arange(len(val_labels)), val_labels].mean() for t in grid]
    temperature = grid[int(np.argmin(nll))]
    frame = _predictions(run, "ft")
    frame = frame.assign(confidence=softmax(test / temperature, axis=1).max(axis=1))  # argmax, `pred`, unchanged
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(run.parent))
    at = AppTest.from_function(_render_calibration, args=(run.name,), default_timeout=60).run()
    assert not at.exception
    assert_no_section_failed(at)
    caption = at.caption[0].value
    assert f"**{_ece(run, 'ft'):.3f}**" in caption
    assert f"after temperature scaling **{_ece_of(frame):.3f}** (T = {temperature:.2f}" in caption
    spec = json.dumps(json.loads(at.get("vega_lite_chart")[0].proto.spec))
    assert "after temperature scaling" in spec


# ---------------------------------------------------------------- unpaired

@pytest.fixture
def unpaired_root(fixture_runs, tmp_path):
    """The CNN and a copy of the ViT tested on other images: its test paths and contents changed (weights left
    behind)."""
    root = tmp_path / "runs"
    skip = shutil.ignore_patterns("*.h5", "logs")
    shutil.copytree(fixture_runs["cnn"], root / fixture_runs["cnn"].name, ignore=skip)
    other = root / "20250101-160000-vit-ti16-0thr"
    shutil.copytree(fixture_runs["vit"], other, ignore=skip)
    info = store.read_json(store.RunDir(other).run_json)
    info.update(id=other.name, name="vit_ti16 other split")
    info["dataset"].update(split_fingerprint="0" * 64, test_fingerprint="1" * 64)
    rd = store.RunDir(other)
    rd.write_run(info)
    for stage in store.STAGES:
        if rd.eval_file(stage, "predictions").exists():
            frame = pd.read_csv(rd.eval_file(stage, "predictions"))
            store.write_csv(rd.eval_file(stage, "predictions"), frame.assign(path="/elsewhere/" + frame["path"]))
    split = store.read_split(rd)
    store.write_split(rd.split_csv, split.assign(path="/elsewhere/" + split["path"], sha256="f" + split["sha256"]))
    return root


def test_different_test_images_are_compared_unpaired_and_say_so(unpaired_root, monkeypatch):
    at = _page(COMPARE, unpaired_root, monkeypatch)
    assert not at.exception
    assert_no_section_failed(at)
    assert at.selectbox(key="compare.run_b").value == "20250101-160000-vit-ti16-0thr"
    assert "Unpaired comparison" in "\n".join(w.value for w in at.warning)
    assert "McNemar exact p" not in [m.label for m in at.metric]
    assert not [s for s in at.selectbox if s.key == "compare.cell"]  # no agreement table without pairs
    assert "Newcombe's unpaired score interval" in _texts(at)
    assert len(_reliability_specs(at)) == 2


# ---------------------------------------------------------------- Home

def test_home_shows_the_cost_of_the_compared_runs_and_offers_the_report(fixture_runs, monkeypatch):
    at = _page(HOME, fixture_runs["cnn"].parent, monkeypatch)
    assert not at.exception
    assert_no_section_failed(at)
    cost = [d.value for d in at.dataframe if "MACs / image" in d.value.columns]
    assert len(cost) == 1 and len(cost[0]) >= 1
    assert [c for c in at.checkbox if c.key == "home.report.prepare"]
