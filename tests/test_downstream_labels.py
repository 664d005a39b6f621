"""The table page's downstream check compares classes by value: a CSV read as floats (sex 1.0, 2.0) and a release
written as whole numbers (1, 2) are the same classes (p/o read 0.000 for every realistic upload)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from cadp.compare import downstream_accuracy


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    frame = load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": "progression"})
    return frame.astype({"sex": float})


@pytest.mark.parametrize("written", [int, str, lambda value: f"{value:.1f}"])
def test_a_class_written_otherwise_in_the_release_is_the_same_class(diabetes, written):
    released = diabetes.copy()
    released["sex"] = [written(int(value)) for value in diabetes["sex"]]
    scores = downstream_accuracy(diabetes, released, "sex")
    assert scores["p/o"] == pytest.approx(scores["o/o"]) and scores["p/o"] > scores["chance"] - 0.1


def test_classes_that_differ_stay_apart_and_an_empty_cell_is_a_class(diabetes):
    original = diabetes.copy()
    original["sex"] = np.where(diabetes["sex"] == 1.0, "1", "01")  # two texts of one number: written as given
    original.loc[:9, "sex"] = None
    scores = downstream_accuracy(original, original, "sex")
    assert scores["o/o"] == scores["p/o"]
    flipped = original.copy()
    flipped["sex"] = original["sex"].map({"1": "x", "01": "y"})
    assert downstream_accuracy(original, flipped, "sex")["p/o"] < 0.2  # other labels: nothing right


def test_a_kept_class_written_otherwise_is_not_marked_changed_and_the_changes_are_counted_in_words(diabetes):
    from cadp.compare import changed_cells, changed_counts_words

    released = diabetes.head(6).copy()
    released["sex"] = [str(int(value)) for value in released["sex"]]  # 2 for 2.0: the same class
    released.loc[0, "age"] += 1
    changed = changed_cells(diabetes.head(6), released)
    assert not changed["sex"].any() and changed["age"].tolist() == [True] + [False] * 5
    assert changed_counts_words(changed).startswith("age: 1 of 6; sex: 0 of 6")
