"""The HTML report (poc.analysis.report, `python -m poc report`) on the shared fixture runs: one self-contained file with
every section, for one run and for two, and the CLI's exit codes."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pandas as pd
import pytest

from cli import call_cli
from poc.runs import store
from poc.analysis.report import SECTIONS, build_report


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text under each <section id=...>."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.section_text: dict[str, str] = {}
        self._section = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self._section = attrs.get("id")
            self.section_text[self._section] = ""

    def handle_data(self, data):
        if self._section:
            self.section_text[self._section] += data


def _parse(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def one_run(fixture_runs) -> str:
    return build_report([store.RunDir(fixture_runs["cnn"])])


@pytest.fixture(scope="module")
def two_runs(fixture_runs) -> str:
    return build_report([store.RunDir(fixture_runs["cnn"]), store.RunDir(fixture_runs["vit"])])


@pytest.mark.parametrize("which", ["one_run", "two_runs"])
def test_report_fetches_nothing(which, request):
    tags = _parse(request.getfixturevalue(which)).tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed")]
    for _, attrs in tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value.lower().startswith(("http:", "https:", "//", "file:")), (name, value[:80])
    assert "@import" not in request.getfixturevalue(which)


@pytest.mark.parametrize("which", ["one_run", "two_runs"])
def test_every_image_is_an_inline_data_uri_that_decodes(which, request):
    images = [attrs["src"] for tag, attrs in _parse(request.getfixturevalue(which)).tags if tag == "img"]
    assert images and all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in images)
    signatures = {base64.b64decode(src.split(",", 1)[1])[:4] for src in images}
    assert signatures <= {b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"\xff\xd8\xff\xe1"}


@pytest.mark.parametrize("which", ["one_run", "two_runs"])
def test_every_section_is_present_in_order(which, request):
    parsed = _parse(request.getfixturevalue(which))
    assert list(parsed.section_text) == list(SECTIONS)
    for key, title in SECTIONS.items():
        assert parsed.section_text[key].startswith(title)


def test_sections_hold_their_content(one_run, fixture_runs):
    text = _parse(one_run).section_text
    info = store.read_json(store.RunDir(fixture_runs["cnn"]).run_json)
    assert info["dataset"]["split_fingerprint"] in text["config"] and info["model"] in text["config"]
    assert f"{info['params']['total']:,}" in text["cost"]
    assert "15 equal-width" in text["calibration"] and "ECE" in text["calibration"]
    for name in info["class_names"]:
        assert name in text["per_class"]
    assert "fine-tuning (ft) against transfer learning (tl)" in text["comparison"]


def _section_html(report: str, key: str) -> str:
    start = report.index(f'<section id="{key}">')
    return report[start:report.index("</section>", start)]


def test_sample_errors_show_the_most_confident_mistakes_with_their_images(one_run, fixture_runs):
    rd = store.RunDir(fixture_runs["cnn"])
    stage = store.read_json(rd.run_json)["final_stage"]
    predictions = pd.read_csv(rd.eval_file(stage, "predictions"))
    wrong = predictions[predictions["label"] != predictions["pred"]]
    section = _section_html(one_run, "errors")
    assert section.count("<img") == min(12, len(wrong))
    top = wrong.sort_values("confidence", ascending=False).iloc[0]
    assert f"true {top['label']} → {top['pred']}" in section


def test_explanation_maps_name_the_grad_cam_layer_and_the_rollout_grid(two_runs, fixture_runs):
    section = _section_html(two_runs, "explanations")
    cnn = store.RunDir(fixture_runs["cnn"])
    stage = store.read_json(cnn.run_json)["final_stage"]
    layer = store.read_explanation_layer(cnn, stage)
    h, w = store.read_explanations(cnn, stage)[0].shape[1:]
    assert layer == "block_5_add" and (h, w) == (4, 4)  # mobilenet_v2 at 32 px: its out_relu is 1 x 1
    assert f"mean Grad-CAM on {layer} ({h}×{w} map) over 20 test images" in section
    assert "mean attention rollout (2×2 map) over 20 test images" in section
    assert section.count("<img") == 2


def test_two_runs_get_a_paired_comparison(two_runs):
    comparison = _parse(two_runs).section_text["comparison"]
    assert "McNemar exact p" in comparison and "paired over the same 20 test images" in comparison
    assert "Unpaired" not in comparison


def test_cli_writes_the_file_and_describes_it_in_json(fixture_runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sub" / "report.html"
    result = call_cli(capsys, monkeypatch, "report", fixture_runs["cnn"].name, "--out", out, "--json",
                      runs_dir=fixture_runs["cnn"].parent)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["out"] == str(out) and summary["runs"] == [fixture_runs["cnn"].name]
    assert summary["bytes"] == len(out.read_bytes()) and summary["sections"] == list(SECTIONS.values())


def test_cli_unknown_run_exits_2_naming_it(fixture_runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "report.html"
    result = call_cli(capsys, monkeypatch, "report", fixture_runs["cnn"].name, "no-such-run", "--out", out,
                      runs_dir=fixture_runs["cnn"].parent)
    assert result.returncode == 2
    assert "no run 'no-such-run'" in result.stderr and not out.exists()


def test_cli_refuses_a_folder_as_out(fixture_runs, tmp_path, capsys, monkeypatch):
    result = call_cli(capsys, monkeypatch, "report", fixture_runs["cnn"].name, "--out", tmp_path,
                      runs_dir=fixture_runs["cnn"].parent)
    assert result.returncode == 2 and "is a folder" in result.stderr
