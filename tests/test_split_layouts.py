"""Split-folder layouts without a validation/ or test/ folder: the missing split is carved from train/,
stratified and seeded, and said so; layouts that cannot give three non-empty splits are refused by name."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from cli import call_cli
from conftest import make_class_folders

from poc.data.scan import scan_dataset
from poc.data.split import split_dataset, split_fingerprint
from poc.errors import UserError

TRAIN = {"a": 20, "b": 10}


def make_split_folders(root, folders: dict[str, dict[str, int]]):
    """`root/<folder>/<class>/*.png`; each folder's images get their own size, so no bytes repeat across them."""
    for k, (folder, counts) in enumerate(folders.items()):
        make_class_folders(root / folder, counts, size=(12 + k, 12))
    return root


def folder_of(path: str) -> str:
    return path.split("/")[-3]


@pytest.fixture
def train_test(tmp_path):
    return scan_dataset(make_split_folders(tmp_path, {"train": TRAIN, "test": {"a": 3, "b": 3}}))


@pytest.fixture
def train_validation(tmp_path):
    return scan_dataset(make_split_folders(tmp_path, {"train": TRAIN, "validation": {"a": 3, "b": 3}}))


# --- train/ + test/: validation carved ---------------------------------------------------------------


def test_missing_validation_is_carved_from_train_only(train_test):
    df = split_dataset(train_test)
    assert set(df.loc[df.split == "val", "path"].map(folder_of)) == {"train"}
    assert set(df.loc[df.split == "test", "path"].map(folder_of)) == {"test"}
    assert (df.loc[df.path.map(folder_of) == "test", "split"] == "test").all()


@pytest.mark.parametrize("val, expected", [(0.1, {"a": 2, "b": 1}), (0.25, {"a": 5, "b": 3})])
def test_carved_validation_is_stratified_in_proportion(train_test, val, expected):
    # hand-worked: round-half-up of 20 * val and 10 * val, at least one each
    df = split_dataset(train_test, val=val)
    assert df[df.split == "val"].label.value_counts().to_dict() == expected
    assert df[df.split == "train"].label.value_counts().to_dict() == {k: TRAIN[k] - v for k, v in expected.items()}


def test_carving_is_seeded(train_test):
    first, again, other = (split_dataset(train_test, seed=s) for s in (3, 3, 4))
    pd.testing.assert_frame_equal(first, again)
    assert set(first.loc[first.split == "val", "path"]) != set(other.loc[other.split == "val", "path"])
    assert split_fingerprint(first) != split_fingerprint(other)


def test_carved_validation_is_named_in_the_manifest(train_test):
    df = split_dataset(train_test, seed=7)
    assert df.attrs["carved"] == {
        "val": "no validation/ folder: 10% of train/ carved as validation (3 images, stratified by class, seed 7)"
    }


def test_identical_train_files_move_together_when_carving(tmp_path):
    root = make_split_folders(tmp_path, {"train": TRAIN, "test": {"a": 3, "b": 3}})
    for i in range(5):
        shutil.copy(root / "train" / "a" / f"{i:03d}.png", root / "train" / "a" / f"copy{i}.png")
    report = scan_dataset(root)
    for seed in range(6):
        df = split_dataset(report, val=0.3, seed=seed)
        assert (df.groupby("sha256")["split"].nunique() == 1).all()


def test_a_test_image_copied_from_train_is_trained_on_not_tested(tmp_path):
    root = make_split_folders(tmp_path, {"train": TRAIN, "test": {"a": 3, "b": 3}})
    shutil.copy(root / "train" / "a" / "000.png", root / "test" / "a" / "leak.png")
    df = split_dataset(scan_dataset(root))
    leak = df.path.str.endswith("test/a/leak.png")
    original = df.path.str.endswith("train/a/000.png")
    assert df.loc[leak, "split"].item() == df.loc[original, "split"].item() != "test"


# --- train/ + validation/: test carved ---------------------------------------------------------------


def test_missing_test_is_carved_from_train(train_validation):
    df = split_dataset(train_validation, test=0.2)
    assert df[df.split == "test"].label.value_counts().to_dict() == {"a": 4, "b": 2}
    assert set(df.loc[df.split == "test", "path"].map(folder_of)) == {"train"}
    assert set(df.loc[df.split == "val", "path"].map(folder_of)) == {"validation"}
    assert list(df.attrs["carved"]) == ["test"]
    assert df.attrs["carved"]["test"].startswith("no test/ folder: 20% of train/ carved as test (6 images")


def test_train_folder_alone_gets_both_shares_carved(tmp_path):
    df = split_dataset(scan_dataset(make_split_folders(tmp_path, {"Train": TRAIN})), val=0.2, test=0.1)
    assert df.groupby(["split", "label"]).size().to_dict() == {
        ("test", "a"): 2, ("test", "b"): 1, ("train", "a"): 14, ("train", "b"): 7, ("val", "a"): 4, ("val", "b"): 2,
    }
    assert list(df.attrs["carved"]) == ["val", "test"]
    assert df.attrs["carved"]["val"].startswith("no validation/ folder: 20% of Train/ carved as validation")


def test_empty_validation_folder_is_carved_and_said_so(tmp_path):
    root = make_split_folders(tmp_path, {"train": TRAIN, "test": {"a": 3, "b": 3}})
    (root / "Validation" / "a").mkdir(parents=True)
    df = split_dataset(scan_dataset(root))
    assert df.attrs["carved"]["val"].startswith("Validation/ folder has no usable images: 10% of train/ carved")


# --- all three folders: nothing carved ---------------------------------------------------------------


def test_all_three_folders_decide_and_nothing_is_carved(tmp_path):
    root = make_split_folders(tmp_path, {"train": TRAIN, "val": {"a": 2, "b": 2}, "test": {"a": 3, "b": 3}})
    df = split_dataset(scan_dataset(root), val=0.3, test=0.3)
    assert df.attrs["carved"] == {}
    assert (df.path.map(folder_of).map({"train": "train", "val": "val", "test": "test"}) == df.split).all()


def test_fractions_of_splits_that_have_folders_are_not_used(tmp_path):
    root = make_split_folders(tmp_path, {"train": TRAIN, "validation": {"a": 2, "b": 2}})
    report = scan_dataset(root)
    assert split_fingerprint(split_dataset(report, val=0.0)) == split_fingerprint(split_dataset(report, val=0.4))


# --- refusals ----------------------------------------------------------------------------------------


def test_class_with_one_train_image_and_no_validation_folder_is_refused(tmp_path):
    root = make_split_folders(tmp_path, {"train": {"a": 5, "cat": 1}, "test": {"a": 3, "cat": 2}})
    with pytest.raises(UserError, match=r"class 'cat' has 1 distinct image in train/ and no validation/ folder: "
                                        r"at least 2 are needed to carve a validation share"):
        split_dataset(scan_dataset(root))


def test_train_folder_alone_needs_three_distinct_train_images_per_class(tmp_path):
    root = make_split_folders(tmp_path, {"train": {"a": 5, "cat": 2}})
    with pytest.raises(UserError, match=r"class 'cat' has 2 distinct images in train/ and no validation/ folder and "
                                        r"no test/ folder: at least 3 are needed"):
        split_dataset(scan_dataset(root, min_per_class=1))


@pytest.mark.parametrize("flag, folders", [("val", ("train", "test")), ("test", ("train", "validation"))])
def test_zero_fraction_for_a_missing_folder_is_refused(tmp_path, flag, folders):
    root = make_split_folders(tmp_path, {folders[0]: TRAIN, folders[1]: {"a": 3, "b": 3}})
    with pytest.raises(UserError, match=f"--{flag} 0 would carve no .* images, and the dataset has no"):
        split_dataset(scan_dataset(root), **{flag: 0.0})


def test_validation_folder_emptied_by_copies_of_train_images_is_refused(tmp_path):
    root = make_split_folders(tmp_path, {"train": TRAIN, "test": {"a": 3, "b": 3}})
    (root / "validation" / "a").mkdir(parents=True)
    shutil.copy(root / "train" / "a" / "000.png", root / "validation" / "a" / "same.png")
    with pytest.raises(UserError, match=r"the validation split is empty: every image in validation/ is a "
                                        r"byte-identical copy"):
        split_dataset(scan_dataset(root))


# --- end to end --------------------------------------------------------------------------------------


def test_split_command_writes_the_carved_validation(tmp_path, capsys, monkeypatch):
    root = make_split_folders(tmp_path / "data", {"train": TRAIN, "test": {"a": 3, "b": 3}})
    result = call_cli(capsys, monkeypatch, "split", root, "--val", "0.2", "--out", tmp_path / "split.csv")
    assert result.returncode == 0, result.stderr
    manifest = pd.read_csv(tmp_path / "split.csv", dtype=str, keep_default_na=False)
    assert manifest.split.value_counts().to_dict() == {"train": 24, "test": 6, "val": 6}


def test_training_on_train_and_validation_folders_evaluates_on_a_carved_test(tmp_path, capsys, monkeypatch):
    root = make_split_folders(tmp_path / "data", {"train": {"a": 8, "b": 8}, "validation": {"a": 2, "b": 2}})
    result = call_cli(capsys, monkeypatch, "train", "--data", root, "--model", "mobilenet_v2", "--weights", "none",
                      "--image-size", "32", "--tl-epochs", "1", "--ft-epochs", "0", "--batch-size", "8",
                      runs_dir=tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    info = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    assert info["status"] == "completed"
    assert info["dataset"]["counts"] == {"train": 14, "val": 4, "test": 2}
    assert list(info["dataset"]["carved"]) == ["test"]
