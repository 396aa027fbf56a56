"""scan_dataset: per-class counts, rejects with reasons, duplicates, blocking problems, both layouts."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from conftest import make_class_folders, make_image

from poc.data.demo import CLASS_NAMES
from poc.data.scan import scan_dataset
from poc.errors import UserError


def test_demo_dataset_counts_every_class(demo_dataset):
    report = scan_dataset(demo_dataset)
    assert report.layout == "class_folders"
    assert report.class_names == list(CLASS_NAMES)
    assert report.counts == {name: 12 for name in CLASS_NAMES}
    assert report.usable and not report.rejected


def test_records_carry_label_hash_and_no_folder_split(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    record = scan_dataset(tmp_path).images[0]
    assert record.label == "a" and len(record.sha256) == 64 and record.folder_split is None


def test_images_are_listed_in_sorted_path_order(tmp_path):
    make_class_folders(tmp_path, {"b": 3, "a": 4})
    paths = [r.path for r in scan_dataset(tmp_path).images]
    assert paths == sorted(paths)


def test_unreadable_files_are_rejected_with_reasons(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "b" / "fake.jpg").write_text("hello")
    report = scan_dataset(tmp_path)
    reasons = {r.path.name: r.reason for r in report.rejected}
    assert reasons == {"empty.png": "empty file", "fake.jpg": "not an image file"}
    assert report.counts == {"a": 3, "b": 3}
    assert report.usable
    assert any("could not be read" in w for w in report.warnings)


def test_byte_identical_files_are_grouped_as_duplicates(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    shutil.copy(tmp_path / "a" / "000.png", tmp_path / "a" / "copy.png")
    report = scan_dataset(tmp_path)
    assert report.duplicates == [[tmp_path.resolve() / "a" / "000.png", tmp_path.resolve() / "a" / "copy.png"]]
    assert any("byte-identical" in w for w in report.warnings)


def test_same_image_in_two_classes_is_a_label_conflict_listing_both_paths(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    shutil.copy(tmp_path / "a" / "000.png", tmp_path / "b" / "copy.png")
    report = scan_dataset(tmp_path)
    sha = hashlib.sha256((tmp_path / "a" / "000.png").read_bytes()).hexdigest()
    assert report.to_dict()["label_conflicts"] == [
        {"sha256": sha, "paths": ["a/000.png", "b/copy.png"], "labels": ["a", "b"]}
    ]
    [warning] = [w for w in report.warnings if "classes a, b" in w]
    assert "a/000.png" in warning and "b/copy.png" in warning


def test_copies_within_one_class_are_not_a_label_conflict(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    shutil.copy(tmp_path / "a" / "000.png", tmp_path / "a" / "copy.png")
    assert scan_dataset(tmp_path).to_dict()["label_conflicts"] == []


def test_single_class_is_a_problem(tmp_path):
    make_class_folders(tmp_path, {"only": 5})
    report = scan_dataset(tmp_path)
    assert not report.usable
    assert any("at least 2 are needed" in p for p in report.problems)


def test_empty_class_folder_is_skipped_with_a_warning(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    report = scan_dataset(tmp_path)
    assert report.usable and report.class_names == ["a", "b"] and "c" not in report.counts
    assert report.skipped_classes == ["c"]
    assert "class folder 'c' has no usable images: skipped" in report.warnings


def test_class_folder_of_unreadable_files_only_is_skipped(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report = scan_dataset(tmp_path)
    assert report.usable and report.class_names == ["a", "b"]
    assert [(r.path.name, r.reason) for r in report.rejected] == [("broken.png", "not an image file")]


def test_one_usable_class_beside_an_empty_one_is_refused(tmp_path):
    make_class_folders(tmp_path, {"a": 5})
    (tmp_path / "b").mkdir()
    report = scan_dataset(tmp_path)
    assert not report.usable
    assert report.problems == [
        f"1 class with usable images found ('a') (skipped, no usable images: b); at least 2 are needed: "
        f"add one sub-folder per class under {tmp_path.resolve()}"
    ]


def test_class_with_too_few_images_is_a_problem_naming_it(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "tiger": 1})
    report = scan_dataset(tmp_path)
    assert report.problems == ["class 'tiger' has 1 image; at least 3 are needed (train/val/test)"]


def test_min_per_class_is_configurable(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    assert not scan_dataset(tmp_path, min_per_class=4).usable


def test_class_made_of_copies_of_too_few_images_is_a_problem(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 2})
    shutil.copy(tmp_path / "b" / "000.png", tmp_path / "b" / "copy.png")
    report = scan_dataset(tmp_path)
    assert report.counts["b"] == 3
    assert any("only 2 distinct" in p for p in report.problems)


def test_missing_folder_raises_user_error_with_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError, match="nowhere"):
        scan_dataset(missing)


def test_file_instead_of_folder_raises_user_error(tmp_path):
    path = make_image(tmp_path / "a.png")
    with pytest.raises(UserError, match="not a folder"):
        scan_dataset(path)


def test_folder_without_class_folders_raises_user_error(tmp_path):
    make_image(tmp_path / "a.png")
    with pytest.raises(UserError, match="no class sub-folders"):
        scan_dataset(tmp_path)


def test_hidden_files_and_folders_are_ignored(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    make_image(tmp_path / "a" / ".hidden.png")
    make_image(tmp_path / "a" / ".thumbs" / "x.png")
    make_image(tmp_path / ".cache" / "x.png")
    report = scan_dataset(tmp_path)
    assert report.class_names == ["a", "b"] and report.counts == {"a": 3, "b": 3}


def test_non_image_files_are_ignored_with_a_warning(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "notes.txt").write_text("x")
    report = scan_dataset(tmp_path)
    assert report.counts == {"a": 3, "b": 3} and not report.rejected
    assert any("notes.txt" in w for w in report.warnings)


def test_images_in_nested_folders_count_for_their_class(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    make_image(tmp_path / "a" / "more" / "x.png", color=(9, 9, 9))
    assert scan_dataset(tmp_path).counts["a"] == 4


def test_imbalance_above_three_is_warned(tmp_path):
    make_class_folders(tmp_path, {"big": 13, "small": 4})
    report = scan_dataset(tmp_path)
    assert report.usable
    assert any("imbalance" in w and "'small'" in w for w in report.warnings)


def test_balanced_dataset_has_no_warnings(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 4})
    assert scan_dataset(tmp_path).warnings == []


def _split_layout(root, split_folder_names=("train", "validation", "test"), classes=("a", "b")):
    for s_index, split in enumerate(split_folder_names):
        for c_index, label in enumerate(classes):
            for i in range(3):
                make_image(root / split / label / f"{i}.png", color=(s_index * 50, c_index * 50, i))
    return root


def test_split_folder_layout_is_detected(tmp_path):
    report = scan_dataset(_split_layout(tmp_path))
    assert report.layout == "split_folders"
    assert report.class_names == ["a", "b"]
    assert report.counts == {"a": 9, "b": 9}
    assert {r.folder_split for r in report.images} == {"train", "val", "test"}


def test_split_folder_names_are_case_insensitive_and_val_is_accepted(tmp_path):
    report = scan_dataset(_split_layout(tmp_path, ("Train", "VAL")))
    assert report.layout == "split_folders"
    assert {r.folder_split for r in report.images} == {"train", "val"}


def test_class_missing_from_test_split_is_a_warning(tmp_path):
    _split_layout(tmp_path)
    make_image(tmp_path / "train" / "c" / "x.png", color=(1, 1, 1))
    make_image(tmp_path / "train" / "c" / "y.png", color=(2, 2, 2))
    make_image(tmp_path / "validation" / "c" / "z.png", color=(3, 3, 3))
    report = scan_dataset(tmp_path)
    assert report.usable
    assert any("'c'" in w and "test" in w for w in report.warnings)


def test_class_missing_from_train_split_is_a_problem(tmp_path):
    _split_layout(tmp_path)
    for i in range(3):
        make_image(tmp_path / "test" / "c" / f"{i}.png", color=(i, 1, 1))
    report = scan_dataset(tmp_path)
    assert not report.usable
    assert any("'c'" in p and "train" in p for p in report.problems)


def test_progress_is_reported_per_file(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    calls = []
    scan_dataset(tmp_path, progress=lambda *args: calls.append(args))
    assert calls[-1] == (6, 6) and len(calls) == 6


def test_report_to_dict_is_json_serialisable(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "bad.png").write_text("x")
    data = json.loads(json.dumps(scan_dataset(tmp_path).to_dict()))
    assert data["usable"] is True and data["counts"] == {"a": 3, "b": 3}
    assert data["rejected"][0]["reason"] == "not an image file"


def test_summary_text_lists_classes_rejects_and_problems(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "tiger": 1})
    (tmp_path / "a" / "bad.png").write_text("x")
    text = scan_dataset(tmp_path).summary_text()
    for expected in ("tiger", "a/bad.png: not an image file", "class 'tiger' has 1 image", "NOT usable"):
        assert expected in text


# --- every file not used is listed with its reason ---------------------------------------------------


def _truncated_jpeg(path):
    make_image(path, size=(32, 32), color=(200, 10, 10), quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def messy(tmp_path):
    """Two good classes plus one file of each kind that the scan must skip."""
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "a" / "LICENSE").write_text("x")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _truncated_jpeg(tmp_path / "b" / "cut.jpg")
    make_image(tmp_path / "a" / ".hidden.png")
    make_image(tmp_path / "a" / ".thumbs" / "x.png")
    make_image(tmp_path / ".cache" / "y.png")
    (tmp_path / "readme.md").write_text("x")
    return tmp_path


def test_json_lists_every_skipped_file_with_its_reason(messy, capsys, monkeypatch):
    from cli import call_cli

    result = call_cli(capsys, monkeypatch, "scan", messy, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    skipped = {s["path"]: s["reason"] for s in data["skipped"]}
    assert skipped == {
        ".cache/y.png": "in hidden folder .cache/",
        "a/.hidden.png": "hidden file",
        "a/.thumbs/x.png": "in hidden folder .thumbs/",
        "a/LICENSE": "not an image file name (no extension)",
        "a/notes.txt": "not an image file name (extension .txt)",
        "b/broken.png": "not an image file",
        "b/cut.jpg": skipped.get("b/cut.jpg"),
        "readme.md": "not in a class folder",
    }
    assert skipped["b/cut.jpg"].startswith("truncated or corrupt image")
    assert [s["path"] for s in data["skipped"]] == sorted(skipped)
    assert data["skipped_counts"] == {"hidden": 3, "not_image": 2, "unreadable": 2, "outside": 1}
    assert data["counts"] == {"a": 3, "b": 3} and data["usable"] is True
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in data["rejected"]) == ["broken.png", "cut.jpg"]


def test_summary_text_counts_skipped_files_and_points_to_json(messy):
    text = scan_dataset(messy).summary_text()
    assert "Skipped files (8: 2 unreadable, 2 not an image extension, 1 outside the class folders, 3 hidden;" in text
    assert "`scan --json` lists every one with its reason" in text
    assert "b/broken.png: not an image file" in text


def test_summary_text_shows_the_first_ten_skipped_files_only(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    for i in range(13):
        (tmp_path / "a" / f"note{i:02d}.txt").write_text("x")
    text = scan_dataset(tmp_path).summary_text()
    assert "a/note09.txt" in text and "a/note10.txt" not in text
    assert "... and 3 more" in text
    assert len(scan_dataset(tmp_path).to_dict()["skipped"]) == 13


def test_files_beside_split_folders_are_listed_as_outside(tmp_path):
    _split_layout(tmp_path)
    make_image(tmp_path / "extras" / "a" / "x.png")
    (tmp_path / "train" / "index.csv").write_text("x")
    skipped = {s["path"]: s["reason"] for s in scan_dataset(tmp_path).to_dict()["skipped"]}
    assert skipped == {"extras/a/x.png": "in extras/, beside the split folders",
                       "train/index.csv": "not in a class folder"}


# --- split folders: what the split step will carve ---------------------------------------------------


def test_train_and_test_folders_announce_a_carved_validation_share(tmp_path):
    report = scan_dataset(_split_layout(tmp_path, ("train", "test")))
    expected = ("no validation/ folder: 10% of train/ will be carved as validation "
                "(stratified, seeded; --val sets the share)")
    assert report.usable and report.carved == {"val": expected}
    assert report.to_dict()["carved"] == {"val": expected}
    assert expected in report.summary_text()


def test_train_and_validation_folders_announce_a_carved_test_share(tmp_path):
    report = scan_dataset(_split_layout(tmp_path, ("Train", "Validation")))
    assert list(report.carved) == ["test"]
    assert report.carved["test"].startswith("no test/ folder: 10% of Train/ will be carved as test")


def test_all_three_split_folders_announce_nothing_carved(tmp_path):
    report = scan_dataset(_split_layout(tmp_path))
    assert report.carved == {} and "carved" not in report.summary_text()


def test_train_folder_alone_is_a_split_layout_with_both_shares_carved(tmp_path):
    report = scan_dataset(_split_layout(tmp_path, ("train",)))
    assert report.layout == "split_folders" and report.class_names == ["a", "b"]
    assert list(report.carved) == ["val", "test"]


def test_too_few_train_images_to_carve_is_a_problem(tmp_path):
    _split_layout(tmp_path, ("train", "test"))
    make_image(tmp_path / "train" / "cat" / "0.png", color=(7, 7, 7))
    for i in range(2):
        make_image(tmp_path / "test" / "cat" / f"{i}.png", color=(8, 8, i))
    report = scan_dataset(tmp_path)
    assert report.problems == ["class 'cat' has 1 distinct image in train/ and no validation/ folder: at least 2 "
                               "are needed to carve a validation share; add images to train/cat/"]
