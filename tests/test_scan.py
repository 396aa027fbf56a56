"""scan_dataset: per-class counts, rejects with reasons, duplicates, blocking problems, both layouts."""

from __future__ import annotations

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


def test_same_image_in_two_classes_is_warned(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    shutil.copy(tmp_path / "a" / "000.png", tmp_path / "b" / "copy.png")
    assert any("classes a, b" in w for w in scan_dataset(tmp_path).warnings)


def test_single_class_is_a_problem(tmp_path):
    make_class_folders(tmp_path, {"only": 5})
    report = scan_dataset(tmp_path)
    assert not report.usable
    assert any("at least 2 are needed" in p for p in report.problems)


def test_empty_class_folder_is_a_problem(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "c").mkdir()
    report = scan_dataset(tmp_path)
    assert report.counts["c"] == 0 and not report.usable
    assert any("'c'" in p for p in report.problems)


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
