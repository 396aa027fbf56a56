"""Turn a scanned dataset into a train/val/test manifest that every run of a comparison shares.

Models are compared fairly only on the same test images, so the split is a file (`split.csv`) with a
content fingerprint recorded in each run. Two rules guard the test split: it is stratified (every class
in every split), and byte-identical copies move together, so a duplicate can never be trained on and then
"predicted" in the test set. Folders already split by the user (`train/ validation/ test/`) are honoured.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from poc.data.scan import ImageRecord, ScanReport
from poc.errors import UserError

COLUMNS = ["path", "label", "split", "sha256"]
SPLITS = ("train", "val", "test")
_log = logging.getLogger(__name__)


def split_dataset(report: ScanReport, val: float = 0.1, test: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """A manifest with columns `path` (absolute, posix), `label`, `split`, `sha256`, sorted by path.

    Class-folder layout: per class, groups of identical files are shuffled with `seed` and dealt into
    round(n * val) val and round(n * test) test groups (at least one each), the rest train.
    Split-folder layout: the folder decides and `val` / `test` are not used; a duplicate group spread
    over several split folders goes wholly to the earliest of train, val, test (listed in
    `df.attrs["warnings"]` and logged).
    Raises UserError for fractions out of range, an unusable report, or a class with fewer than 3
    distinct images.
    """
    _check_fractions(val, test)
    if report.problems:
        raise UserError("the dataset is not usable: " + "; ".join(report.problems))
    groups = _groups(report.images)
    warnings: list[str] = []
    if report.layout == "split_folders":
        assignment = _folder_assignment(groups, warnings)
    else:
        assignment = _stratified_assignment(groups, report.class_names, val, test, seed)
    df = _frame(groups, assignment)
    df.attrs["warnings"] = warnings
    for message in warnings:
        _log.warning(message)
    return df


def split_fingerprint(df: pd.DataFrame) -> str:
    """SHA-256 over the sorted (sha256, label, split) rows: same content and split, same fingerprint,
    wherever the folder lives."""
    rows = sorted(zip(df["sha256"], df["label"], df["split"]))
    digest = hashlib.sha256()
    for sha, label, split in rows:
        digest.update(f"{sha},{label},{split}\n".encode())
    return digest.hexdigest()


def write_split_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the manifest atomically (temp file in the same folder, then rename)."""
    _check_columns(df, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = [c for c in df.columns if c not in COLUMNS]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df[COLUMNS + extra].to_csv(fh, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_split_csv(path: str | Path) -> pd.DataFrame:
    """Read a manifest back; UserError naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"split manifest {path} does not exist; create it with `python -m poc split`")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"split manifest {path} is not a readable CSV ({exc}); recreate it") from None
    _check_columns(df, path)
    if df.empty:
        raise UserError(f"split manifest {path} has no rows; recreate it with `python -m poc split`")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise UserError(f"split manifest {path} has unknown split values {bad}; allowed: {list(SPLITS)}")
    return df


# --- assignment ----------------------------------------------------------------------------------


def _check_fractions(val: float, test: float) -> None:
    for name, value in (("val", val), ("test", test)):
        if not 0 < value < 0.5:
            raise UserError(f"--{name} must be a fraction above 0 and below 0.5 (got {value})")
    if val + test >= 0.9:
        raise UserError(f"--val + --test must be below 0.9 to leave training images (got {val + test:g})")


def _groups(images: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    """Byte-identical files by sha256, each group sorted by path."""
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(images, key=lambda r: r.path):
        groups[record.sha256].append(record)
    return dict(groups)


def _owner(group: list[ImageRecord]) -> str:
    """The class a group is stratified under: its most common label (ties: alphabetical first)."""
    counts = Counter(r.label for r in group)
    return min(counts, key=lambda label: (-counts[label], label))


def _stratified_assignment(groups, class_names, val: float, test: float, seed: int) -> dict[str, str]:
    """sha256 -> split. Groups are ordered by content hash, not path, so the result is location-free."""
    by_class: dict[str, list[str]] = {label: [] for label in class_names}
    for sha in sorted(groups):
        by_class.setdefault(_owner(groups[sha]), []).append(sha)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(by_class):
        shas = by_class[label]
        if len(shas) < 3:
            raise UserError(
                f"class '{label}' has {len(shas)} distinct image{'s' * (len(shas) != 1)}; "
                "at least 3 are needed (train/val/test)"
            )
        n_val, n_test = _split_sizes(len(shas), val, test)
        order = [shas[i] for i in rng.permutation(len(shas))]
        for i, sha in enumerate(order):
            assignment[sha] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return assignment


def _split_sizes(n: int, val: float, test: float) -> tuple[int, int]:
    """(n_val, n_test): rounded shares, at least 1 each, leaving at least 1 for training."""
    n_val = max(1, math.floor(n * val + 0.5))
    n_test = max(1, math.floor(n * test + 0.5))
    while n_val + n_test > n - 1:
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _folder_assignment(groups, warnings: list[str]) -> dict[str, str]:
    """sha256 -> the split folder of its files; a group across folders goes to the earliest split."""
    assignment = {}
    for sha, group in sorted(groups.items()):
        splits = {r.folder_split for r in group}
        chosen = min(splits, key=SPLITS.index)
        assignment[sha] = chosen
        if len(splits) > 1:
            names = ", ".join(r.path.name for r in group)
            warnings.append(f"identical files in several split folders ({names}) all put in {chosen}")
    return assignment


def _frame(groups, assignment: dict[str, str]) -> pd.DataFrame:
    rows = [
        (record.path.resolve().as_posix(), record.label, assignment[sha], sha)
        for sha, group in groups.items()
        for record in group
    ]
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values("path", kind="stable").reset_index(drop=True)


def _check_columns(df: pd.DataFrame, path) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"split manifest {path} lacks columns {missing}; expected {COLUMNS}")
