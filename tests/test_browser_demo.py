"""The first ten minutes, in a real browser: a tiny but real demo plus a run of a second dataset with other classes.

`poc.train.demo.run_demo` with DEMO_SETTINGS shrunk (one epoch per phase, a sweep of two more cutoffs) trains the
demo's CNN, its baselines, its ViT and the cutoff sweep that shares the CNN's phase 1; then a CNN trains on a
second dataset whose classes (animal, machine, plant) the demo runs never saw, and finishes last. The dashboard
serves both (`streamlit run`, headless Chromium through Playwright):

- the demo leaves a study of three runs sharing one phase 1, and Cutoff sweep draws its chart;
- Live predict starts on one dataset's runs (the pair Home compares) and never marks ✓/✗ against a class a run
  was not trained on, also for a test image of another run's split;
- Attention maps shows the demo CNN's Grad-CAM at a native grid of at least 4 x 4 (MobileNetV2's last feature map
  is 2 x 2 at 64 px) and names the layer it was read from.

The structure test runs without a browser; the page tests need Debian's `chromium` and the `playwright` package.
Two to three minutes on two CPU cores (training included).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from poc.runs import store
from poc.runs.run_info import run_label
from tests.dashboard_server import CHROMIUM, CHROMIUM_ARGS, browser_marks, start_dashboard, stop_group

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None



def in_browser(test):
    """Marked `browser`, skipped without Chromium or playwright (the structure test runs without them)."""
    for mark in browser_marks(sync_playwright is not None):
        test = mark(test)
    return test


TINY_DEMO = {
    "runs": [{"model": "mobilenet_v2", "weights": "demo", "image_size": 64, "tl_epochs": 1, "ft_epochs": 1,
              "lr_ft": 1e-4, "fine_tune_at": "block_10_expand", "batch_size": 16, "augment": [],
              "name": "demo MobileNetV2"},
             {"model": "vit_ti8", "weights": "demo", "image_size": 64, "tl_epochs": 1, "ft_epochs": 0,
              "batch_size": 16, "augment": [], "name": "demo ViT-Ti/8"}],
    "sweep": ["Conv_1", "block_13_expand"],
}
OTHER_CLASSES = {"animal": ["cat", "dog", "panda", "tiger"], "machine": ["car", "plane"], "plant": ["flower", "tree"]}


def _other_dataset(root: Path, cartoons: Path) -> Path:
    """A dataset of other classes, regrouped from cartoon images: animal, machine, plant (3 images per source)."""
    for target, sources in OTHER_CLASSES.items():
        (root / target).mkdir(parents=True)
        for source in sources:
            for image in sorted((cartoons / source).glob("*"))[:3]:
                shutil.copy(image, root / target / f"{source}_{image.name}")
    return root


pytestmark = pytest.mark.system  # the real demo, then a real browser: make test-system

@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """{"runs_dir", "data_root", "demo": the demo's run dirs in order, "other": the second dataset's CNN}."""
    import poc.train.demo
    from poc.config import RunConfig
    from poc.data.demo import generate_demo_dataset
    from poc.train.training import train

    base = tmp_path_factory.mktemp("first_minutes")
    data_root, runs_dir = base / "data", base / "runs"
    generate_demo_dataset(data_root / "demo", per_class=6, size=40, seed=0)
    (data_root / "demo" / ".complete").write_text("made by the test\n")
    generate_demo_dataset(base / "cartoons", per_class=3, size=40, seed=2)
    other = _other_dataset(data_root / "other", base / "cartoons")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in TINY_DEMO.items():
            mp.setitem(poc.train.demo.DEMO_SETTINGS, key, value)
        runs = list(poc.train.demo.run_demo(runs_dir, data_root / "demo"))
    other_run = train(RunConfig(data=str(other), model="mobilenet_v2", weights="demo", image_size=64, tl_epochs=1,
                                ft_epochs=0, batch_size=8, augment=[], name="other dataset CNN"), runs_dir)
    return {"runs_dir": runs_dir.resolve(), "data_root": data_root.resolve(), "demo": runs, "other": other_run}


def _info(rd: store.RunDir) -> dict:
    return store.read_json(rd.run_json)


def test_the_demo_leaves_a_sweep_of_three_runs_sharing_the_cnns_phase_1(demo):
    from poc.analysis.study_results import study_summary

    infos = [_info(rd) for rd in demo["demo"]]
    assert all(i["status"] == "completed" for i in infos), [i.get("error") for i in infos]
    cnn = infos[0]
    swept = [i for i in infos if (i.get("study") or {}).get("kind") == "sweep"]
    assert len(swept) == 3 and len({i["study"]["id"] for i in swept}) == 1
    assert swept[0]["id"] == cnn["id"] and cnn["study"]["cutoff"] == "block_10_expand"  # the CNN is a point of it
    for info in swept[1:]:  # the others fine-tune from the CNN's phase-1 weights, on its split
        assert info["from_run"] == cnn["id"] and info["weights"] == f"run:{cnn['id']}"
        assert info["dataset"]["split_fingerprint"] == cnn["dataset"]["split_fingerprint"]
        assert set(info["timing"]) == {"ft"}  # no phase 1 of its own
    table = study_summary(store.list_runs(demo["runs_dir"]))
    assert sorted(table["value"]) == sorted(["block_10_expand", *TINY_DEMO["sweep"]])
    assert table["trainable_params"].is_unique and table["paired"].all()
    assert [_info(rd)["model"] for rd in demo["demo"]] == [
        "mobilenet_v2", "baseline_pixels", "baseline_probe:mobilenet_v2", "vit_ti8", "mobilenet_v2", "mobilenet_v2"]


# ---------------------------------------------------------------- in the browser

@pytest.fixture(scope="module")
def server(demo, tmp_path_factory):
    log = tmp_path_factory.mktemp("first_minutes_server") / "streamlit.log"
    try:
        proc, url = start_dashboard(demo["runs_dir"], demo["data_root"], log)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield {**demo, "url": url}
    finally:
        stop_group(proc.pid, grace_s=10)
        proc.wait(timeout=10)


@pytest.fixture
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(60_000)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def _open(page, server, path: str, title: str) -> None:
    from tests.test_browser import assert_no_error, wait_idle

    page.goto(server["url"] + path)
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible(timeout=90_000)
    wait_idle(page, timeout_s=120)
    assert_no_error(page)


@in_browser
def test_cutoff_sweep_draws_the_demos_sweep(server, page):
    _open(page, server, "/Cutoff_sweep", "Cutoff sweep")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Cutoff sweeps")).to_be_visible()
    expect(main.get_by_test_id("stVegaLiteChart")).to_have_count(3)  # accuracy, gap and time against parameters
    table = main.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible()
    assert "python -m poc sweep" not in main.inner_text()  # not the empty state


def _top1_lines(main) -> list[str]:
    return [t.strip() for t in main.get_by_text(re.compile(r"^Top-1: ")).all_inner_texts()]


@in_browser
def test_live_predict_keeps_the_two_datasets_apart(server, page):
    from tests.test_browser import _pick_option, wait_idle

    other = _info(server["other"])
    vit = next(_info(rd) for rd in server["demo"] if _info(rd)["model"] == "vit_ti8")
    _open(page, server, "/Live_predict", "Live predict")
    main = page.get_by_test_id("stMain")
    picker = main.get_by_test_id("stMultiSelect").filter(has_text="Runs")
    # The pair Home compares: the test set of the most recent completed run (the other dataset's), whose only
    # family is its CNN. The most recent CNN and the most recent ViT would have paired two datasets.
    expect(picker.get_by_text(run_label(other, other["id"]), exact=True)).to_be_visible()
    expect(picker.get_by_text(run_label(vit, vit["id"]), exact=True)).to_have_count(0)
    expect(main.get_by_text(re.compile(r"^Top-1: "))).to_have_count(1, timeout=120_000)
    assert re.search(r"(✓|✗ \(true: (animal|machine|plant)\))$", _top1_lines(main)[0]), _top1_lines(main)

    picker.locator("input").click()  # add the demo's ViT: another dataset, other classes
    page.get_by_role("option", name=run_label(vit, vit["id"])).click()
    page.keyboard.press("Escape")
    wait_idle(page, timeout_s=120)
    expect(main.get_by_text(re.compile(r"^Top-1: "))).to_have_count(2, timeout=120_000)
    wait_idle(page, timeout_s=120)
    expect(main.get_by_text(re.compile("trained on different class sets"))).to_be_visible()
    expect(main.get_by_text(f"Trained on 3 classes: {', '.join(other['class_names'])}")).to_be_visible()
    expect(main.get_by_text(re.compile(r"^Trained on 10 classes: bird, car"))).to_be_visible()
    picked = main.get_by_role("combobox", name="Test image", exact=True).input_value()
    true_label = re.search(r"\(true: (\w+)\)$", picked)[1]
    assert true_label in OTHER_CLASSES
    expect(main.get_by_text(re.compile(rf"^This run was not trained on class {true_label}"))).to_have_count(1)
    cnn_line, vit_line = _top1_lines(main)
    assert "✓" in cnn_line or "✗" in cnn_line, cnn_line  # the run that knows the class is marked
    assert "✓" not in vit_line and "✗" not in vit_line, vit_line  # the ViT never is

    # A test image of the ViT's own split: a cartoon class, which the other dataset's CNN was not trained on.
    source = main.get_by_role("combobox", name="Test images of", exact=True)
    _pick_option(page, source, run_label(vit, vit["id"]))
    wait_idle(page, timeout_s=120)
    expect(main.get_by_text(re.compile(r"^Top-1: "))).to_have_count(2, timeout=120_000)
    wait_idle(page, timeout_s=120)
    cnn_line, vit_line = _top1_lines(main)
    assert "✓" not in cnn_line and "✗" not in cnn_line, cnn_line
    assert "✓" in vit_line or "✗" in vit_line, vit_line
    expect(main.get_by_text(re.compile(r"^This run was not trained on class (bird|car|cat|dog|flower|panda|"
                                       r"penguin|plane|tiger|tree)"))).to_have_count(1)
    from tests.test_browser import assert_no_error

    assert_no_error(page)


@in_browser
def test_attention_maps_show_the_demo_cnns_grad_cam_at_4x4_and_name_its_layer(server, page):
    import keras

    from tests.test_browser import _pick_option, wait_idle

    cnn_rd = server["demo"][0]
    cnn = _info(cnn_rd)
    stage = cnn["final_stage"]
    maps, _ = store.read_explanations(cnn_rd, stage)
    layer = store.read_explanation_layer(cnn_rd, stage)
    # Independently: the layer's native output in MobileNetV2 at 64 px, read from the model's layer shapes.
    from poc.models import build

    keras.utils.set_random_seed(0)
    backbone = build("mobilenet_v2", 3, 64, "none").get_layer("backbone")
    grid = tuple(backbone.get_layer(layer).output.shape[1:3])
    assert tuple(backbone.get_layer("out_relu").output.shape[1:3]) == (2, 2)
    assert min(grid) >= 4 and maps.shape[1:] == grid

    _open(page, server, "/Attention_maps", "Attention maps")
    main = page.get_by_test_id("stMain")
    _pick_option(page, main.get_by_label("Beside it: CNN Grad-CAM", exact=True), run_label(cnn, cnn["id"]))
    wait_idle(page, timeout_s=120)
    what = f"Grad-CAM on {layer} ({grid[0]}×{grid[1]} map)"
    expect(main.get_by_text(re.compile(rf"^CNN mean {re.escape(what)} · all classes · \d+ images$"))).to_be_visible()
    expect(main.get_by_text(f"Each tile: ViT attention rollout (left) and CNN {what} (right) on the same image.")
           ).to_be_visible()
