"""scan_and_split: the one refusal of an unusable dataset, and the split `train`, `baseline` and `split` share."""

from __future__ import annotations

import pytest
from conftest import make_class_folders

from poc.data.scan import scan_dataset
from poc.data.split import scan_and_split, split_dataset
from poc.errors import UserError


def test_the_split_is_that_of_the_scanned_dataset(tmp_path):
    root = make_class_folders(tmp_path / "data", {"a": 10, "b": 12})
    expected = split_dataset(scan_dataset(root), val=0.2, test=0.2, seed=3)
    assert scan_and_split(root, val=0.2, test=0.2, seed=3).equals(expected)


def test_the_class_names_ride_along_in_the_frame(tmp_path):
    root = make_class_folders(tmp_path / "data", {"b": 5, "a": 5})
    assert scan_and_split(root).attrs["class_names"] == ["a", "b"]


def test_an_unusable_dataset_is_refused_with_the_scans_problems(tmp_path):
    root = make_class_folders(tmp_path / "data", {"only": 5})
    problems = scan_dataset(root).problems
    with pytest.raises(UserError) as refused:
        scan_and_split(root)
    assert str(refused.value) == f"dataset {root} is not usable:\n  " + "\n  ".join(problems)
