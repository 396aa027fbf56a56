"""Checks shared by the page tests (Streamlit AppTest).

A section rendered through ui.safe.safely never raises: damage to a run's files becomes a warning, and any other
exception is shown as an error and recorded in the session under ui.safe.FAILURES_KEY. `at.exception` alone
therefore does not see a section that crashed; these checks do.
"""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from ui.safe import FAILURES_KEY


def section_failures(at: AppTest) -> list[str]:
    """The failures ui.safe.safely recorded in this AppTest's session, oldest first ("<section>: <type>: <msg>")."""
    return list(at.session_state[FAILURES_KEY]) if FAILURES_KEY in at.session_state else []


def assert_no_section_failed(at: AppTest) -> None:
    """No section of any run of this AppTest failed with an unexpected exception (a bug, not damage)."""
    failed = section_failures(at)
    assert not failed, f"sections failed: {failed}"
