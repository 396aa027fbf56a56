"""Warm caches (ui.warm): the background warming that the dashboard's first script run starts reads what each page
shows first, so that a page's first render finds it cached; it never fails a page, and it can be turned off."""

from __future__ import annotations

import threading

from streamlit.testing.v1 import AppTest

from apptest_checks import assert_no_section_failed

COMPARE = "../pages/5_Compare.py"  # relative to this file, as AppTest resolves it


def _warm_in_app(runs_root, monkeypatch) -> dict:
    """ui.warm.warm run inside a Streamlit script (the caches the pages use), without the model step."""
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(runs_root))

    def script():
        import streamlit as st

        from ui import data, warm

        st.session_state["done"] = warm.warm(str(data.runs_dir()), models=False)

    at = AppTest.from_function(script, default_timeout=300).run()
    assert not at.exception
    return at.session_state["done"]


def test_warming_takes_every_step_over_the_fixture_runs(fixture_runs, monkeypatch):
    done = _warm_in_app(fixture_runs["cnn"].parent, monkeypatch)
    assert list(done) == ["imports", "leaderboard", "studies", "runs"]
    assert all(isinstance(seconds, float) for seconds in done.values()), done  # no step failed


def test_warming_an_empty_runs_folder_is_harmless(tmp_path, monkeypatch):
    done = _warm_in_app(tmp_path / "no-runs-yet", monkeypatch)
    assert all(isinstance(seconds, float) for seconds in done.values()), done


def test_after_warming_compare_finds_its_comparison_cached(fixture_runs, monkeypatch):
    import poc.analysis.compare

    _warm_in_app(fixture_runs["cnn"].parent, monkeypatch)
    computed = []
    original = poc.analysis.compare.compare_runs
    monkeypatch.setattr("ui.compare_view.compare_runs", lambda *a, **k: computed.append(a) or original(*a, **k))
    at = AppTest.from_file(COMPARE, default_timeout=300).run()
    assert not at.exception
    assert_no_section_failed(at)
    assert any("McNemar exact p" in m.value for m in at.markdown)  # the comparison is shown...
    assert computed == []  # ...from the cache the warming filled


def test_the_thread_starts_once_per_runs_folder_and_not_when_turned_off(tmp_path, monkeypatch):
    from ui import warm

    started = []
    monkeypatch.setattr(warm, "warm", lambda runs_dir, models=True: started.append(runs_dir))
    monkeypatch.setenv("VITRINE_WARM_CACHES", "0")
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "a"))
    warm.start()
    assert started == []
    monkeypatch.setenv("VITRINE_WARM_CACHES", "1")
    for folder in ("a", "a", "b"):
        monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / folder))
        warm.start()
    for thread in threading.enumerate():
        if thread.name == "vitrine-warm-caches":
            thread.join(timeout=10)
    assert sorted(started) == [str(tmp_path / "a"), str(tmp_path / "b")]


def test_the_thread_warms_only_after_the_script_run_that_started_it_has_ended(tmp_path, monkeypatch):
    """Warming beside the first page's render slowed it: the thread waits for the run's thread to end. The
    stand-in script run below blocks until released; a warming that began meanwhile would see it alive."""
    from ui import warm

    starter_alive, called, release = [], threading.Event(), threading.Event()

    def fake_warm(runs_dir, models=True):
        starter_alive.append(starter.is_alive())
        called.set()

    monkeypatch.setattr(warm, "warm", fake_warm)
    monkeypatch.setenv("VITRINE_WARM_CACHES", "1")
    monkeypatch.setenv("VITRINE_RUNS_DIR", str(tmp_path / "runs"))
    starter = threading.Thread(target=lambda: (warm.start(), release.wait(30)), name="ScriptRunner.scriptThread")
    starter.start()
    assert not called.wait(1.0)  # the run has not ended: nothing warmed yet
    release.set()
    assert called.wait(30)
    assert starter_alive == [False]
