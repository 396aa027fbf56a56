"""One pair, one answer: Home's verdict, the Compare page and the HTML report show the interval and the McNemar p
that `python -m poc compare --json` prints for the same two runs."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed
from cli import call_cli
from poc.runs import store
from ui import text


def _texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "caption", "warning", "info") for e in getattr(at, kind))


def _compare_json(capsys, monkeypatch, a, b) -> dict:
    out = call_cli(capsys, monkeypatch, "compare", a, b, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_home_compare_and_the_report_show_the_numbers_of_compare_json(fixture_runs, capsys, monkeypatch):
    from poc.analysis.report import build_report

    cnn, vit = fixture_runs["cnn"], fixture_runs["vit"]
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(cnn.parent))
    vit_minus_cnn = _compare_json(capsys, monkeypatch, vit, cnn)  # Home's gap: best ViT - best CNN
    cnn_minus_vit = _compare_json(capsys, monkeypatch, cnn, vit)  # Compare's default pair: A = CNN, B = ViT
    p = vit_minus_cnn["mcnemar"]["p_value"]
    assert p == cnn_minus_vit["mcnemar"]["p_value"]

    home = AppTest.from_file("../dashboard.py", default_timeout=60).run()
    assert not home.exception
    assert_no_section_failed(home)
    d = vit_minus_cnn["difference"]
    assert f"{text.percent_interval(d['low'], d['high'], signed=True)} (exact paired interval), McNemar p = " \
           f"{p:.3g}" in _texts(home)

    compare = AppTest.from_file("../pages/5_Compare.py", default_timeout=90).run()
    assert not compare.exception
    assert_no_section_failed(compare)
    d = cnn_minus_vit["difference"]
    assert text.percent_interval(d["low"], d["high"], signed=True) in _texts(compare)
    assert [m.value for m in compare.metric if m.label == "McNemar exact p"] == [f"{p:.3g}"]

    report = build_report([store.RunDir(cnn), store.RunDir(vit)])
    assert f"95% CI [{d['low']:+.3f}, {d['high']:+.3f}]" in report and f"McNemar exact p = {p:.4g}" in report
