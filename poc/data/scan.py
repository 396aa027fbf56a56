"""Validate an image-folder dataset before any training time is spent on it.

Users bring folders with surprises: a corrupt download, a `notes.txt`, a class with two images, the same
photo saved twice (which leaks test images into training) or filed under two classes. `scan_dataset`
decodes every image once and reports what it found, every file it did not use and why, so that the CLI can
refuse with a readable list (exit 2) and the dashboard can show the same list, instead of a run failing an
hour later inside tf.data.

Layouts: `root/<class>/...` ("class_folders"), or `root/train|validation|val|test/<class>/...`
("split_folders", folder names in any case), whose existing split the split step then honours; a missing
validation/ or test/ folder is carved from train/ by the split step, and the report says so.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from poc.data.images import IMAGE_EXTENSIONS, ImageRejected, open_rgb
from poc.errors import UserError

SPLIT_FOLDERS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
SPLIT_TITLES = {"train": "train", "val": "validation", "test": "test"}
DEFAULT_FRACTIONS = {"val": 0.1, "test": 0.1}  # the split step's defaults (--val, --test)
IMBALANCE_LIMIT = 3.0  # largest / smallest class count above which a warning is given
SUMMARY_SKIPPED = 10  # skipped files shown by summary_text; to_dict lists them all
SKIP_KINDS = {"unreadable": "unreadable", "not_image": "not an image extension",
              "outside": "outside the class folders", "hidden": "hidden"}


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: str
    sha256: str
    folder_split: str | None  # "train" / "val" / "test" in the split-folder layout, else None


@dataclass(frozen=True)
class Rejected:
    """A file the scan did not use; `kind` is one of SKIP_KINDS ("unreadable": it failed to decode)."""
    path: Path
    reason: str
    kind: str = "unreadable"


@dataclass(frozen=True)
class LabelConflict:
    """Byte-identical files filed under different classes; `labels[i]` is the class of `paths[i]`."""
    sha256: str
    paths: list[Path]
    labels: list[str]


@dataclass
class ScanReport:
    """What a scan found. `problems` block training; `warnings` are worth reading but do not.

    `rejected` holds the files that failed to decode, `ignored` every other file not used (no image
    extension, hidden, outside the class folders); `skipped` is both. `split_folders` maps each split
    found to its folder's name on disk; `carved` maps a split the split step will carve from train/ to a
    sentence saying so.
    """
    root: Path
    layout: str  # "class_folders" or "split_folders"
    class_names: list[str]
    images: list[ImageRecord] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    ignored: list[Rejected] = field(default_factory=list)
    duplicates: list[list[Path]] = field(default_factory=list)
    label_conflicts: list[LabelConflict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    skipped_classes: list[str] = field(default_factory=list)
    split_folders: dict[str, str] = field(default_factory=dict)
    carved: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def skipped(self) -> list[Rejected]:
        """Every file under the root that is not used, sorted by path."""
        return sorted(self.rejected + self.ignored, key=lambda r: r.path)

    def to_dict(self) -> dict:
        """JSON form, as printed by `scan --json`; `skipped` and `label_conflicts` paths are relative to root."""
        rel = lambda p: _relative(p, self.root)  # noqa: E731
        skipped = self.skipped
        return {
            "root": str(self.root),
            "layout": self.layout,
            "usable": self.usable,
            "class_names": list(self.class_names),
            "counts": dict(self.counts),
            "images": [{"path": str(r.path), "label": r.label, "sha256": r.sha256,
                        "folder_split": r.folder_split} for r in self.images],
            "rejected": [{"path": str(r.path), "reason": r.reason} for r in self.rejected],
            "skipped": [{"path": rel(r.path), "reason": r.reason, "kind": r.kind} for r in skipped],
            "skipped_counts": dict(Counter(r.kind for r in skipped)),
            "skipped_classes": list(self.skipped_classes),
            "duplicates": [[str(p) for p in group] for group in self.duplicates],
            "label_conflicts": [{"sha256": c.sha256, "paths": [rel(p) for p in c.paths],
                                 "labels": list(c.labels)} for c in self.label_conflicts],
            "split_folders": dict(self.split_folders),
            "carved": dict(self.carved),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }

    def summary_text(self) -> str:
        """A multi-line, human-readable report for the terminal (the first skipped files; --json has all)."""
        lines = [f"Dataset {self.root} ({self.layout.replace('_', ' ')})", ""]
        lines += _class_table(self)
        lines += _skipped_lines(self)
        if self.duplicates:
            lines += ["", f"Byte-identical duplicates ({_count(len(self.duplicates), 'group')}):"]
            lines += ["  " + ", ".join(_relative(p, self.root) for p in g) for g in self.duplicates]
        if self.carved:
            lines += ["", "Missing split folders:"] + [f"  - {s}" for s in self.carved.values()]
        for title, items in (("Warnings", self.warnings), ("Problems", self.problems)):
            if items:
                lines += ["", f"{title}:"] + [f"  - {item}" for item in items]
        verdict = "usable" if self.usable else "NOT usable: fix the problems above"
        lines += ["", f"Result: {len(self.images)} images, {len(self.class_names)} classes, {verdict}"]
        return "\n".join(lines)


def check_dataset_folder(root: str | Path) -> Path:
    """The dataset folder, resolved; UserError when it is missing or not a folder. Cheap, so a command can say it
    before importing TensorFlow (seconds) for a mistyped path."""
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise UserError(f"dataset folder {root} does not exist; check the path")
    if not root.is_dir():
        raise UserError(f"dataset path {root} is not a folder; pass the folder holding one sub-folder per class")
    return root


def scan_dataset(root: str | Path, min_per_class: int = 3,
                 progress: Callable[[int, int], None] | None = None) -> ScanReport:
    """Decode every image under `root`, group it by class, and list skipped files, duplicates and problems.

    A class folder without a usable image is dropped from `class_names` with a warning. Raises UserError
    when `root` is missing, not a folder, or has no class sub-folders.
    `progress(done, total)` is called after each image file is checked.
    """
    root = check_dataset_folder(root)
    layout, class_dirs, split_folders, notes = _find_class_dirs(root)
    report = ScanReport(root=root, layout=layout, class_names=[], split_folders=split_folders)
    report.warnings += notes
    candidates, report.ignored = _list_files(root, class_dirs, split_folders)
    _check_files(report, candidates, progress)
    per_class = Counter(r.label for r in report.images)
    folder_names = sorted({label for label, _, _ in class_dirs})
    report.class_names = [name for name in folder_names if per_class[name]]
    report.skipped_classes = [name for name in folder_names if not per_class[name]]
    report.counts = {name: per_class[name] for name in report.class_names}
    report.duplicates = _duplicate_groups(report.images)
    report.label_conflicts = _label_conflicts(report.images)
    report.carved = {s: carve_sentence(s, DEFAULT_FRACTIONS[s], split_folders)
                     for s in splits_to_carve(layout, report.images)}
    report.warnings += [f"class folder '{name}' has no usable images: skipped" for name in report.skipped_classes]
    _add_problems(report, class_dirs, min_per_class)
    _add_warnings(report)
    return report


# --- carving missing split folders (shared with the split step, so both say the same) --------------


def splits_to_carve(layout: str, images: list[ImageRecord]) -> list[str]:
    """Splits ("val", "test") that a split-folder dataset lacks usable images for; none otherwise."""
    if layout != "split_folders":
        return []
    present = {r.folder_split for r in images}
    return [s for s in ("val", "test") if s not in present]


def folder_label(split: str, split_folders: dict[str, str]) -> str:
    """The folder of `split` as the user named it, e.g. "Validation/", or its usual name when missing."""
    return f"{split_folders.get(split, SPLIT_TITLES[split])}/"


def _missing_reason(split: str, split_folders: dict[str, str]) -> str:
    if split in split_folders:
        return f"{folder_label(split, split_folders)} folder has no usable images"
    return f"no {folder_label(split, split_folders)} folder"


def carve_sentence(split: str, fraction: float, split_folders: dict[str, str],
                   n: int | None = None, seed: int | None = None) -> str:
    """What the split step does about a missing split folder: future tense for the scan report (no `n`),
    past tense with the image count and seed for the manifest and run.json."""
    head = f"{_missing_reason(split, split_folders)}: {fraction * 100:g}% of {folder_label('train', split_folders)}"
    if n is None:
        return f"{head} will be carved as {SPLIT_TITLES[split]} (stratified, seeded; --{split} sets the share)"
    return f"{head} carved as {SPLIT_TITLES[split]} ({_count(n, 'image')}, stratified by class, seed {seed})"


def carve_shortfall(label: str, n: int, carved: list[str], split_folders: dict[str, str]) -> str | None:
    """The message when a class has too few distinct train images to carve `carved` from; None if enough."""
    need = 1 + len(carved)
    if n >= need:
        return None
    train = folder_label("train", split_folders)
    reasons = " and ".join(_missing_reason(s, split_folders) for s in carved)
    shares = " and ".join(SPLIT_TITLES[s] for s in carved)
    return (f"class '{label}' has {_count(n, 'distinct image')} in {train} and {reasons}: at least {need} are "
            f"needed to carve a {shares} share; add images to {train}{label}/")


# --- finding files -------------------------------------------------------------------------------


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_class_dirs(root: Path):
    """(layout, [(label, folder, folder_split)], {split: folder name}, notes) for the class folders.

    Split folders are recognised when train/ sits beside validation/, val/ or test/, or is alone.
    """
    subdirs = _visible_dirs(root)
    loose = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    notes = []
    if loose:
        notes.append(f"{_count(len(loose), 'file')} directly in {root} ignored; put images in a class folder")
    splits = {d: SPLIT_FOLDERS[d.name.lower()] for d in subdirs if d.name.lower() in SPLIT_FOLDERS}
    split_names = set(splits.values())
    if "train" in split_names and (split_names & {"val", "test"} or len(subdirs) == 1):
        class_dirs = [(c.name, c, split) for d, split in splits.items() for c in _visible_dirs(d)]
        others = [d.name for d in subdirs if d not in splits]
        if others:
            notes.append(f"folders beside the split folders are ignored: {', '.join(others)}")
        split_folders = {split: d.name for d, split in sorted(splits.items(), reverse=True)}  # first name wins
        return "split_folders", class_dirs, split_folders, notes
    if not subdirs:
        raise UserError(f"no class sub-folders in {root}; expected one folder per class, e.g. {root}/cat/*.jpg")
    return "class_folders", [(d.name, d, None) for d in subdirs], {}, notes


def _list_files(root: Path, class_dirs, split_folders: dict[str, str]):
    """(candidates as (path, label, folder_split), every other file as Rejected with its reason)."""
    candidates, ignored = [], []
    for label, folder, split in class_dirs:
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            hidden = _hidden_reason(path.relative_to(folder).parts)
            if hidden:
                ignored.append(Rejected(path, hidden, "hidden"))
            elif path.suffix.lower() not in IMAGE_EXTENSIONS:
                what = f"extension {path.suffix}" if path.suffix else "no extension"
                ignored.append(Rejected(path, f"not an image file name ({what})", "not_image"))
            else:
                candidates.append((path, label, split))
    ignored += _outside_files(root, {folder for _, folder, _ in class_dirs}, split_folders)
    return sorted(candidates), sorted(ignored, key=lambda r: r.path)


def _outside_files(root: Path, class_folders: set[Path], split_folders: dict[str, str]) -> list[Rejected]:
    """Files under `root` but in no class folder (loose, hidden, or in a folder beside the split folders)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if here / d not in class_folders)
        for name in sorted(filenames):
            path = here / name
            if not path.is_file():
                continue
            parts = path.relative_to(root).parts
            hidden = _hidden_reason(parts)
            if hidden:
                found.append(Rejected(path, hidden, "hidden"))
            elif len(parts) > 2 and split_folders and parts[0] not in split_folders.values():
                found.append(Rejected(path, f"in {parts[0]}/, beside the split folders", "outside"))
            else:
                found.append(Rejected(path, "not in a class folder", "outside"))
    return found


def _hidden_reason(parts: tuple[str, ...]) -> str | None:
    if parts[-1].startswith("."):
        return "hidden file"
    folder = next((p for p in parts[:-1] if p.startswith(".")), None)
    return f"in hidden folder {folder}/" if folder else None


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


def _by_hash(images: list[ImageRecord]) -> list[tuple[str, list[ImageRecord]]]:
    """Groups of byte-identical files (sorted by path), in sha256 order."""
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in sorted(images, key=lambda r: r.path):
        groups[record.sha256].append(record)
    return sorted(groups.items())


def _duplicate_groups(images: list[ImageRecord]) -> list[list[Path]]:
    return sorted([r.path for r in group] for _, group in _by_hash(images) if len(group) > 1)


def _label_conflicts(images: list[ImageRecord]) -> list[LabelConflict]:
    """Groups of identical files whose classes differ, each listed by path with its class."""
    return [LabelConflict(sha, [r.path for r in group], [r.label for r in group])
            for sha, group in _by_hash(images) if len({r.label for r in group}) > 1]


# --- judging -------------------------------------------------------------------------------------


def _add_problems(report: ScanReport, class_dirs, min_per_class: int) -> None:
    if len(report.class_names) < 2:
        found = ", ".join(f"'{c}'" for c in report.class_names) or "none"
        empty = f" (skipped, no usable images: {', '.join(report.skipped_classes)})" if report.skipped_classes else ""
        report.problems.append(
            f"{_count(len(report.class_names), 'class', 'classes')} with usable images found ({found}){empty}; "
            f"at least 2 are needed: add one sub-folder per class under {report.root}"
        )
    hashes: dict[str, set[str]] = defaultdict(set)
    train_hashes: dict[str, set[str]] = defaultdict(set)
    for record in report.images:
        hashes[record.label].add(record.sha256)
        if record.folder_split == "train":
            train_hashes[record.label].add(record.sha256)
    for name in report.class_names:
        count = report.counts[name]
        if count < min_per_class:
            report.problems.append(
                f"class '{name}' has {_count(count, 'image')}; "
                f"at least {min_per_class} are needed (train/val/test)"
            )
        elif len(hashes[name]) < min_per_class:
            report.problems.append(
                f"class '{name}' has {count} images but only {len(hashes[name])} distinct ones "
                f"(byte-identical copies); at least {min_per_class} distinct are needed"
            )
        elif report.carved and train_hashes[name]:  # none in train/ is the coverage problem below
            shortfall = carve_shortfall(name, len(train_hashes[name]), list(report.carved), report.split_folders)
            if shortfall:
                report.problems.append(shortfall)
    if report.layout == "split_folders":
        _check_split_coverage(report, class_dirs)


def _check_split_coverage(report: ScanReport, class_dirs) -> None:
    """A class absent from train cannot be learned (problem); absent from val/test is a warning."""
    present = {(r.label, r.folder_split) for r in report.images}
    found = {split for _, _, split in class_dirs} - set(report.carved)
    splits = sorted(found | {"train"}, key=["train", "val", "test"].index)
    for name in report.class_names:
        for split in splits:
            if (name, split) in present:
                continue
            message = f"class '{name}' has no images in the {split} split folder"
            if split == "train":
                report.problems.append(message + "; add training images for it")
            else:
                report.warnings.append(message + "; its metrics will be missing there")


def _add_warnings(report: ScanReport) -> None:
    counts = list(report.counts.values())
    if len(counts) >= 2 and max(counts) / min(counts) > IMBALANCE_LIMIT:
        big = max(report.counts, key=report.counts.get)
        small = min(report.counts, key=report.counts.get)
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
    for conflict in report.label_conflicts:
        report.warnings.append(
            f"the same image is filed under classes {', '.join(sorted(set(conflict.labels)))} "
            f"(sha256 {conflict.sha256[:12]}): {', '.join(_relative(p, report.root) for p in conflict.paths)}; "
            "keep it in one class"
        )
    if report.rejected:
        report.warnings.append(
            f"{_count(len(report.rejected), 'file')} could not be read and skipped; "
            "`scan --json` lists each with its reason"
        )
    not_image = [r.path for r in report.ignored if r.kind == "not_image"]
    if not_image:
        examples = ", ".join(_relative(p, report.root) for p in not_image[:3])
        report.warnings.append(
            f"{_count(len(not_image), 'file')} without an image extension ignored (e.g. {examples}); "
            "`scan --json` lists them all"
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


def _skipped_lines(report: ScanReport) -> list[str]:
    """Counts per kind and the first SUMMARY_SKIPPED files, unreadable ones first."""
    skipped = sorted(report.skipped, key=lambda r: (list(SKIP_KINDS).index(r.kind), r.path))
    if not skipped:
        return []
    kinds = Counter(r.kind for r in skipped)
    breakdown = ", ".join(f"{kinds[k]} {title}" for k, title in SKIP_KINDS.items() if kinds[k])
    lines = ["", f"Skipped files ({len(skipped)}: {breakdown}; `scan --json` lists every one with its reason):"]
    lines += [f"  {_relative(r.path, report.root)}: {r.reason}" for r in skipped[:SUMMARY_SKIPPED]]
    if len(skipped) > SUMMARY_SKIPPED:
        lines.append(f"  ... and {len(skipped) - SUMMARY_SKIPPED} more")
    return lines


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"
