"""Validate an image-folder dataset before any training time is spent on it.

Users bring folders with surprises: a corrupt download, a `notes.txt`, a class with two images, the same
photo saved twice (which leaks test images into training). `scan_dataset` decodes every image once and
reports what it found, so that the CLI can refuse with a readable list (exit 2) and the dashboard can
show the same list, instead of a run failing an hour later inside tf.data.

Layouts: `root/<class>/...` ("class_folders"), or `root/train|validation|val|test/<class>/...`
("split_folders"), whose existing split the split step then honours.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from poc.data.images import IMAGE_EXTENSIONS, ImageRejected, open_rgb
from poc.errors import UserError

SPLIT_FOLDERS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
IMBALANCE_LIMIT = 3.0  # largest / smallest class count above which a warning is given


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: str
    sha256: str
    folder_split: str | None  # "train" / "val" / "test" in the split-folder layout, else None


@dataclass(frozen=True)
class Rejected:
    path: Path
    reason: str


@dataclass
class ScanReport:
    """What a scan found. `problems` block training; `warnings` are worth reading but do not."""

    root: Path
    layout: str  # "class_folders" or "split_folders"
    class_names: list[str]
    images: list[ImageRecord] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: list[list[Path]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-serialisable form (paths as strings), as printed by `scan --json`."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "usable": self.usable,
            "class_names": list(self.class_names),
            "counts": dict(self.counts),
            "images": [
                {"path": str(r.path), "label": r.label, "sha256": r.sha256, "folder_split": r.folder_split}
                for r in self.images
            ],
            "rejected": [{"path": str(r.path), "reason": r.reason} for r in self.rejected],
            "duplicates": [[str(p) for p in group] for group in self.duplicates],
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }

    def summary_text(self) -> str:
        """A multi-line, human-readable report for the terminal."""
        lines = [f"Dataset {self.root} ({self.layout.replace('_', ' ')})", ""]
        lines += _class_table(self)
        if self.rejected:
            lines += ["", f"Rejected files ({len(self.rejected)}):"]
            lines += [f"  {_relative(r.path, self.root)}: {r.reason}" for r in self.rejected]
        if self.duplicates:
            lines += ["", f"Byte-identical duplicates ({_count(len(self.duplicates), 'group')}):"]
            lines += ["  " + ", ".join(_relative(p, self.root) for p in g) for g in self.duplicates]
        for title, items in (("Warnings", self.warnings), ("Problems", self.problems)):
            if items:
                lines += ["", f"{title}:"] + [f"  - {item}" for item in items]
        verdict = "usable" if self.usable else "NOT usable: fix the problems above"
        lines += ["", f"Result: {len(self.images)} images, {len(self.class_names)} classes, {verdict}"]
        return "\n".join(lines)


def scan_dataset(
    root: str | Path,
    min_per_class: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> ScanReport:
    """Decode every image under `root`, group it by class, and list rejects, duplicates and problems.

    Raises UserError when `root` is missing, not a folder, or has no class sub-folders.
    `progress(done, total)` is called after each image file is checked.
    """
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise UserError(f"dataset folder {root} does not exist; check the path")
    if not root.is_dir():
        raise UserError(
            f"dataset path {root} is not a folder; pass the folder holding one sub-folder per class"
        )
    layout, class_dirs, notes = _find_class_dirs(root)
    report = ScanReport(root=root, layout=layout, class_names=sorted({label for label, _, _ in class_dirs}))
    report.warnings += notes
    candidates, ignored = _list_files(class_dirs)
    _check_files(report, candidates, progress)
    per_class = Counter(r.label for r in report.images)
    report.counts = {name: per_class[name] for name in report.class_names}
    report.duplicates = _duplicate_groups(report.images)
    _add_problems(report, class_dirs, min_per_class)
    _add_warnings(report, ignored)
    return report


# --- finding files -------------------------------------------------------------------------------


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_class_dirs(root: Path) -> tuple[str, list[tuple[str, Path, str | None]], list[str]]:
    """(layout, [(label, folder, folder_split)], notes) for the folders directly holding classes."""
    subdirs = _visible_dirs(root)
    loose = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    notes = []
    if loose:
        notes.append(f"{_count(len(loose), 'file')} directly in {root} ignored; put images in a class folder")
    splits = {d: SPLIT_FOLDERS[d.name.lower()] for d in subdirs if d.name.lower() in SPLIT_FOLDERS}
    split_names = set(splits.values())
    if "train" in split_names and split_names & {"val", "test"}:
        class_dirs = [(c.name, c, split) for d, split in splits.items() for c in _visible_dirs(d)]
        others = [d.name for d in subdirs if d not in splits]
        if others:
            notes.append(f"folders beside the split folders are ignored: {', '.join(others)}")
        return "split_folders", class_dirs, notes
    if not subdirs:
        raise UserError(
            f"no class sub-folders in {root}; expected one folder per class, e.g. {root}/cat/*.jpg"
        )
    return "class_folders", [(d.name, d, None) for d in subdirs], notes


def _list_files(class_dirs) -> tuple[list[tuple[Path, str, str | None]], list[Path]]:
    """Image-extension files as (path, label, folder_split), and the other files that are ignored."""
    candidates, ignored = [], []
    for label, folder, split in class_dirs:
        for path in sorted(folder.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                candidates.append((path, label, split))
            else:
                ignored.append(path)
    return sorted(candidates), ignored


def _check_files(report: ScanReport, candidates, progress) -> None:
    """Decode each candidate once (from the same bytes that are hashed); sort into images / rejected."""
    for done, (path, label, split) in enumerate(candidates, start=1):
        data = path.read_bytes()
        try:
            open_rgb(data)
        except ImageRejected as exc:
            report.rejected.append(Rejected(path, exc.reason))
        else:
            report.images.append(ImageRecord(path, label, hashlib.sha256(data).hexdigest(), split))
        if progress is not None:
            progress(done, len(candidates))


def _duplicate_groups(images: list[ImageRecord]) -> list[list[Path]]:
    by_hash: dict[str, list[Path]] = defaultdict(list)
    for record in images:
        by_hash[record.sha256].append(record.path)
    return sorted(sorted(paths) for paths in by_hash.values() if len(paths) > 1)


# --- judging -------------------------------------------------------------------------------------


def _add_problems(report: ScanReport, class_dirs, min_per_class: int) -> None:
    if len(report.class_names) < 2:
        found = ", ".join(f"'{c}'" for c in report.class_names) or "none"
        report.problems.append(
            f"{len(report.class_names)} class found ({found}); at least 2 are needed: "
            f"add one sub-folder per class under {report.root}"
        )
    hashes: dict[str, set[str]] = defaultdict(set)
    for record in report.images:
        hashes[record.label].add(record.sha256)
    for name in report.class_names:
        count = report.counts[name]
        if count == 0:
            report.problems.append(f"class '{name}' has no usable images; add images or remove the folder")
        elif count < min_per_class:
            report.problems.append(
                f"class '{name}' has {_count(count, 'image')}; "
                f"at least {min_per_class} are needed (train/val/test)"
            )
        elif len(hashes[name]) < min_per_class:
            report.problems.append(
                f"class '{name}' has {count} images but only {len(hashes[name])} distinct ones "
                f"(byte-identical copies); at least {min_per_class} distinct are needed"
            )
    if report.layout == "split_folders":
        _check_split_coverage(report, class_dirs)


def _check_split_coverage(report: ScanReport, class_dirs) -> None:
    """A class absent from train cannot be learned (problem); absent from val/test is a warning."""
    present = {(r.label, r.folder_split) for r in report.images}
    splits = sorted({split for _, _, split in class_dirs}, key=["train", "val", "test"].index)
    for name in report.class_names:
        if report.counts[name] == 0:
            continue  # already a problem
        for split in splits:
            if (name, split) in present:
                continue
            message = f"class '{name}' has no images in the {split} split folder"
            if split == "train":
                report.problems.append(message + "; add training images for it")
            else:
                report.warnings.append(message + "; its metrics will be missing there")


def _add_warnings(report: ScanReport, ignored: list[Path]) -> None:
    counts = [c for c in report.counts.values() if c > 0]
    if len(counts) >= 2 and max(counts) / min(counts) > IMBALANCE_LIMIT:
        big = max(report.counts, key=report.counts.get)
        small = min((n for n in report.counts if report.counts[n] > 0), key=report.counts.get)
        report.warnings.append(
            f"class imbalance: '{big}' has {report.counts[big]} images, '{small}' has "
            f"{report.counts[small]} (ratio {max(counts) / min(counts):.1f} > {IMBALANCE_LIMIT:g}); "
            f"consider more images of '{small}'"
        )
    if report.duplicates:
        extra = _count(sum(len(g) - 1 for g in report.duplicates), "extra copy", "extra copies")
        report.warnings.append(
            f"{_count(len(report.duplicates), 'group')} of byte-identical files ({extra}); "
            "each group is kept in one split so test images do not leak into training"
        )
    _warn_label_conflicts(report)
    if report.rejected:
        report.warnings.append(
            f"{_count(len(report.rejected), 'file')} could not be read and skipped (listed above)"
        )
    if ignored:
        examples = ", ".join(_relative(p, report.root) for p in ignored[:3])
        report.warnings.append(
            f"{_count(len(ignored), 'file')} without an image extension ignored (e.g. {examples})"
        )


def _warn_label_conflicts(report: ScanReport) -> None:
    labels: dict[str, set[str]] = defaultdict(set)
    for record in report.images:
        labels[record.sha256].add(record.label)
    for sha, names in sorted(labels.items()):
        if len(names) > 1:
            report.warnings.append(
                f"the same image is filed under classes {', '.join(sorted(names))} (sha256 {sha[:12]}); "
                "keep it in one class"
            )


# --- rendering -----------------------------------------------------------------------------------


def _class_table(report: ScanReport) -> list[str]:
    width = max([len("class")] + [len(n) for n in report.class_names])
    if report.layout == "split_folders":
        per_split = Counter((r.label, r.folder_split) for r in report.images)
        header = f"  {'class':<{width}}  {'train':>6} {'val':>6} {'test':>6} {'total':>6}"
        rows = [
            f"  {n:<{width}}  " + " ".join(f"{per_split[(n, s)]:>6}" for s in ("train", "val", "test"))
            + f" {report.counts[n]:>6}"
            for n in report.class_names
        ]
    else:
        header = f"  {'class':<{width}}  {'images':>6}"
        rows = [f"  {n:<{width}}  {report.counts[n]:>6}" for n in report.class_names]
    return [header] + rows


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
