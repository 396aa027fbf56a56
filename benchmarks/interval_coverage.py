"""Coverage of `paired_difference`'s 95% interval, by exact enumeration (no simulation).

Two models on the same n images: each image is right only for A (probability p_a), only for B (p_b) or
neither/both (1 - p_a - p_b), so the counts (only_a, only_b, rest) are trinomial. The coverage at (p_a, p_b) is
the total probability of the splits whose interval contains the true difference p_a - p_b. The grid is the
discordant rate delta = p_a + p_b by the share theta = p_a / delta that A wins. Prints one markdown table per
n (rows delta, columns theta) and the minimum; docs/statistics.md quotes it. About 15 s.

    python benchmarks/interval_coverage.py
    python benchmarks/interval_coverage.py --n 40 100 --deltas 0.01 0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy import special  # noqa: E402

from poc.analysis.stats import paired_difference  # noqa: E402

DELTAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
THETAS = (0.5, 0.6, 0.75, 0.9, 1.0)


def splits(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (only_a, only_b) with only_a + only_b <= n and the interval paired_difference gives it."""
    only_a, only_b = [v.ravel() for v in np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")]
    keep = only_a + only_b <= n
    only_a, only_b = only_a[keep], only_b[keep]
    found = [paired_difference(int(a), int(b), n) for a, b in zip(only_a, only_b)]
    return only_a, only_b, np.array([r.low for r in found]), np.array([r.high for r in found])


def coverage(n: int, deltas, thetas) -> np.ndarray:
    """Exact coverage, shape (len(deltas), len(thetas))."""
    only_a, only_b, low, high = splits(n)
    rest = n - only_a - only_b
    log_multinomial = special.gammaln(n + 1) - special.gammaln(only_a + 1) - special.gammaln(only_b + 1) \
        - special.gammaln(rest + 1)  # (splits,)
    delta, theta = np.meshgrid(np.asarray(deltas, float), np.asarray(thetas, float), indexing="ij")
    p_a, p_b = (delta * theta).reshape(-1, 1), (delta * (1 - theta)).reshape(-1, 1)  # (grid, 1)
    # xlogy: 0 * log 0 = 0, so theta = 1 (p_b = 0) needs no special case
    log_p = log_multinomial + special.xlogy(only_a, p_a) + special.xlogy(only_b, p_b) \
        + special.xlogy(rest, 1 - p_a - p_b)  # (grid, splits)
    true = p_a - p_b
    slack = 1e-12  # the true difference on a bound (d = 0 at theta = 1/2) counts as covered
    covered = (low - slack <= true) & (true <= high + slack)
    return (np.exp(log_p) * covered).sum(axis=1).reshape(delta.shape)


def markdown(table: np.ndarray, deltas, thetas) -> str:
    head = "| discordant rate \\ share A wins | " + " | ".join(f"{t:g}" for t in thetas) + " |"
    rule = "| --- |" + " --- |" * len(thetas)
    rows = [f"| {d:g} | " + " | ".join(f"{100 * c:.2f}%" for c in row) + " |" for d, row in zip(deltas, table)]
    return "\n".join([head, rule, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[40, 200], help="test-set sizes (default 40 200)")
    parser.add_argument("--deltas", type=float, nargs="+", default=list(DELTAS), help="discordant rates")
    parser.add_argument("--thetas", type=float, nargs="+", default=list(THETAS), help="shares A wins")
    args = parser.parse_args()
    for n in args.n:
        start = time.perf_counter()
        table = coverage(n, args.deltas, args.thetas)
        print(f"\nn = {n}: coverage of the 95% interval for accuracy(A) - accuracy(B), exact enumeration\n")
        print(markdown(table, args.deltas, args.thetas))
        where = np.unravel_index(table.argmin(), table.shape)
        print(f"\nminimum {100 * table.min():.2f}% at discordant rate {args.deltas[where[0]]:g}, share "
              f"{args.thetas[where[1]]:g} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
