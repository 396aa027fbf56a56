"""Text for numbers the pages show: one duration format and one accuracy-with-interval format everywhere."""

from __future__ import annotations

import math


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def duration(seconds) -> str | None:
    """'45 s', '1 min 05 s', '2 h 03 min'; None for a missing value."""
    if _missing(seconds):
        return None
    seconds = int(round(float(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def accuracy(acc, low=None, high=None) -> str | None:
    """'0.512 [0.41, 0.62]' (the interval only when both bounds are known); None for a missing accuracy."""
    if _missing(acc):
        return None
    if _missing(low) or _missing(high):
        return f"{acc:.3f}"
    return f"{acc:.3f} [{low:.2f}, {high:.2f}]"


def percent_interval(low, high, signed: bool = False) -> str:
    """'95% CI [41.0%, 62.0%]' ('[-3.0%, +12.5%]' when signed); '' when a bound is missing."""
    if _missing(low) or _missing(high):
        return ""
    fmt = "{:+.1%}" if signed else "{:.1%}"
    return f"95% CI [{fmt.format(low)}, {fmt.format(high)}]"
