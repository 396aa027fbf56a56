"""split_dataset: stratified, duplicate-safe, seed-reproducible, honours split folders; CSV round trip."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import make_class_folders, make_image

from poc.data.scan import scan_dataset
from poc.data.split import split_dataset, split_fingerprint
from poc.runs import store
from poc.errors import UserError

COUNTS = {"a": 40, "b": 23, "c": 9}


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Three classes of 40, 23 and 9 distinct images, plus two extra copies of one image of 'a'."""
    root = make_class_folders(tmp_path_factory.mktemp("uneven"), COUNTS)
    shutil.copy(root / "a" / "000.png", root / "a" / "copy1.png")
    shutil.copy(root / "a" / "000.png", root / "a" / "copy2.png")
    return scan_dataset(root)


def test_columns_are_path_label_split_sha256(uneven):
    assert list(split_dataset(uneven).columns) == ["path", "label", "split", "sha256"]


def test_rows_are_sorted_absolute_posix_paths(uneven):
    paths = split_dataset(uneven)["path"].tolist()
    assert paths == sorted(paths)
    assert all(p.startswith("/") and "\\" not in p for p in paths)


@pytest.mark.parametrize("val, test", [(0.1, 0.1), (0.2, 0.15)])
def test_each_class_is_split_in_proportion(tmp_path, val, test):
    df = split_dataset(scan_dataset(make_class_folders(tmp_path, COUNTS)), val=val, test=test)
    for label, n in COUNTS.items():
        counts = df[df.label == label].split.value_counts()
        assert abs(counts["val"] - round(n * val)) <= 1
        assert abs(counts["test"] - round(n * test)) <= 1
        assert counts["train"] == n - counts["val"] - counts["test"]


def test_every_class_appears_in_every_split(tmp_path):
    df = split_dataset(scan_dataset(make_class_folders(tmp_path, {"a": 3, "b": 4})))
    assert df.groupby("label")["split"].nunique().to_dict() == {"a": 3, "b": 3}


def test_splits_are_disjoint_and_cover_every_image(uneven):
    df = split_dataset(uneven)
    assert df["path"].is_unique
    assert set(df["path"]) == {r.path.as_posix() for r in uneven.images}
    assert set(df["split"]) == {"train", "val", "test"}


def test_identical_files_never_straddle_splits(uneven):
    for seed in range(5):
        df = split_dataset(uneven, seed=seed)
        assert (df.groupby("sha256")["split"].nunique() == 1).all()


def test_same_seed_gives_same_fingerprint(demo_dataset):
    report = scan_dataset(demo_dataset)
    assert split_fingerprint(split_dataset(report, seed=1)) == split_fingerprint(split_dataset(report, seed=1))


def test_different_seed_gives_different_fingerprint(demo_dataset):
    report = scan_dataset(demo_dataset)
    assert split_fingerprint(split_dataset(report, seed=1)) != split_fingerprint(split_dataset(report, seed=2))


def test_fingerprint_does_not_depend_on_folder_location(tmp_path, demo_dataset):
    moved = shutil.copytree(demo_dataset, tmp_path / "elsewhere")
    here = split_dataset(scan_dataset(demo_dataset), seed=4)
    there = split_dataset(scan_dataset(moved), seed=4)
    assert split_fingerprint(here) == split_fingerprint(there)


def test_split_folders_decide_the_split(tmp_path):
    for s_index, folder in enumerate(("train", "validation", "test")):
        for label in ("a", "b"):
            for i in range(2):
                make_image(tmp_path / folder / label / f"{i}.png", color=(s_index * 60, ord(label), i))
    df = split_dataset(scan_dataset(tmp_path, min_per_class=1), val=0.3, test=0.3)
    expected = {"train": "train", "validation": "val", "test": "test"}
    assert all(row.split == expected[row.path.split("/")[-3]] for row in df.itertuples())


def test_duplicate_across_split_folders_goes_to_train_with_a_warning(tmp_path):
    for folder in ("train", "val", "test"):
        for label in ("a", "b"):
            make_image(tmp_path / folder / label / "own.png", color=(len(folder), ord(label), 0))
    make_image(tmp_path / "test" / "a" / "leak.png", color=(len("train"), ord("a"), 0))  # same bytes as train/a
    df = split_dataset(scan_dataset(tmp_path, min_per_class=1))
    assert df.loc[df.path.str.endswith("test/a/leak.png"), "split"].item() == "train"
    assert len(df.attrs["warnings"]) == 1


def test_class_with_too_few_distinct_images_raises_user_error(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "tiger": 2})
    with pytest.raises(UserError, match="class 'tiger' has 2 distinct images; at least 3"):
        split_dataset(scan_dataset(tmp_path, min_per_class=1))


def test_unusable_report_raises_user_error_with_its_problems(tmp_path):
    make_class_folders(tmp_path, {"a": 3, "tiger": 1})
    with pytest.raises(UserError, match="'tiger'"):
        split_dataset(scan_dataset(tmp_path))


@pytest.mark.parametrize("val, test", [(0.0, 0.1), (0.1, 0.0), (0.5, 0.1), (0.1, -0.1), (0.45, 0.45)])
def test_fractions_out_of_range_raise_user_error(uneven, val, test):
    with pytest.raises(UserError):
        split_dataset(uneven, val=val, test=test)


def test_csv_round_trip_keeps_rows_and_fingerprint(tmp_path, uneven):
    df = split_dataset(uneven)
    store.write_split(tmp_path / "out" / "split.csv", df)
    back = pd.read_csv(tmp_path / "out" / "split.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert split_fingerprint(back) == split_fingerprint(df)


def test_csv_write_leaves_no_temp_files(tmp_path, uneven):
    store.write_split(tmp_path / "split.csv", split_dataset(uneven))
    store.write_split(tmp_path / "split.csv", split_dataset(uneven, seed=1))
    assert [p.name for p in tmp_path.iterdir()] == ["split.csv"]


def test_csv_write_puts_manifest_columns_first_and_keeps_extras(tmp_path, uneven):
    df = split_dataset(uneven)
    df.insert(0, "note", "x")
    store.write_split(tmp_path / "split.csv", df)
    assert (tmp_path / "split.csv").read_text().splitlines()[0] == "path,label,split,sha256,note"


def test_class_folder_layout_carves_nothing(uneven):
    assert split_dataset(uneven).attrs["carved"] == {}


