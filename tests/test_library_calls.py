"""The library as a notebook calls it (a review of its public functions): what it states of a release is never
less than was spent, its record of a release is the batch that ran and stays JSON, and a wrong input is an
InputError in its own words, not a silently wrong number or torch's traceback."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cadp import compare
from cadp.data import load_table
from cadp.errors import InputError
from cadp.hub import load_model
from cadp.mechanisms import exact, make_mechanism
from cadp.privatize import privatize


@pytest.fixture(scope="module")
def heart():
    return load_model("heart-cinn")


@pytest.fixture(scope="module")
def diabetes():
    return load_model("diabetes-cinn")


def test_the_gaussian_guarantee_states_the_delta_used_not_a_rounded_smaller_one():
    mechanism = make_mechanism("gaussian", 1, delta=1.0000049e-5)
    assert "delta = 1.0000049e-05 for the latent" in mechanism.guarantee()
    assert "delta = 1e-05 for the latent" in make_mechanism("gaussian", 1, delta=1e-5).guarantee()
    assert exact(1.0000049e-5) == "1.0000049e-05" and float(exact(0.1 + 0.2)) == 0.1 + 0.2


def test_a_file_tag_never_names_less_epsilon_than_its_release_spent():
    assert compare.release_tag(make_mechanism("laplace", 1.0000049)) == "laplace-eps1.00001"
    assert compare.release_tag(make_mechanism("laplace", 10)) == "laplace-eps10"
    assert compare.release_tag(make_mechanism("laplace", 0.5)) == "laplace-eps0.5"


def test_paper_records_the_batch_it_ran_on_not_the_one_asked(heart):
    rows = load_table("heart").frame.head(10)
    result = privatize(heart.model, rows, None, make_mechanism("paper", 1), batch_size=512)
    assert result.batches == [10] and result.mechanism["batch_size"] == 10
    result = privatize(heart.model, rows, None, make_mechanism("paper", 1), batch_size=np.int64(4))
    assert result.batches == [4, 4, 2] and result.mechanism["batch_size"] == 4
    json.dumps({"mechanism": result.mechanism, "batches": result.batches})  # NumPy's integers were kept


def test_the_comparisons_take_the_callers_frame_with_a_column_the_release_left_out(diabetes):
    frame = load_table("diabetes").frame.head(120).assign(patient_id=np.arange(120))
    result = privatize(diabetes.model, frame, None, make_mechanism("laplace", 5))
    assert "patient_id" not in result.privatized_frame.columns
    changed = compare.changed_cells(frame, result.privatized_frame)
    assert list(changed.columns) == list(result.privatized_frame.columns)
    assert changed.equals(compare.changed_cells(result.original_frame, result.privatized_frame))
    assert compare.downstream_accuracy(frame, result.privatized_frame, "sex") == \
        compare.downstream_accuracy(result.original_frame, result.privatized_frame, "sex")
    assert compare.downstream_check(frame, result.privatized_frame, "patient_id").startswith(
        "No downstream check for patient_id: no column named 'patient_id' in the release")
    with pytest.raises(InputError, match="the original has 119 rows and the release 120"):
        compare.changed_cells(frame.head(119), result.privatized_frame)


def test_the_label_classifier_refuses_images_scaled_to_zero_one():
    loaded = load_model("mnist-cinn")
    images = torch.rand(4, 1, 28, 28) * 255
    assert loaded.classifier.predict_proba(images).shape == (4, 10)
    with pytest.raises(InputError, match=r"scaled to \[0, 1\]"):
        loaded.classifier.predict_proba(images / 255)
    with pytest.raises(InputError, match="finite and within"):
        loaded.classifier.predict_proba(images * float("nan"))


def test_table_samples_check_their_count_and_temperature(heart):
    model = heart.model
    assert len(model.sample_frame(np.int64(3), temperature=0.5)) == 3
    for count in (-2, 0, 2.5, True):
        with pytest.raises(InputError, match="count must be a whole number >= 1"):
            model.sample_frame(count)
    for temperature in (float("nan"), -1, float("inf")):
        with pytest.raises(InputError, match="temperature must be a finite number >= 0"):
            model.sample_frame(2, temperature=temperature)


def test_a_pass_with_another_count_of_labels_than_records_says_so():
    model = load_model("mnist-cinn").model
    images, labels = torch.rand(3, 1, 28, 28) * 255, torch.tensor([1, 2, 3, 4])
    with pytest.raises(InputError, match="got 3 images but 4 labels"):
        model.encode(images, labels)
    with pytest.raises(InputError, match="got 2 latents but 4 labels"):
        model.decode(torch.zeros(2, model.latent_dim), labels)
    heart = load_model("heart-cinn").model
    with pytest.raises(InputError, match="got 2 latents but 3 condition rows"):
        heart.decode(torch.zeros(2, heart.latent_dim), torch.zeros(3, heart.config.condition_dim))


def test_pandas_reads_no_columns_from_a_frame_the_comparison_was_not_given():
    """(the shared columns keep the original's order; nothing is read from a column only one side has)"""
    original = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "c": ["x", "y"]})
    released = pd.DataFrame({"b": [3.0, 5.0], "a": [1.0, 2.0]})
    changed = compare.changed_cells(original, released)
    assert list(changed.columns) == ["a", "b"] and changed["b"].tolist() == [False, True]


def test_changes_are_highlighted_in_a_release_that_keeps_its_callers_index(heart):
    rows = load_table("heart").frame.head(8)
    rows = rows.assign(patient_id=range(8)).set_axis(range(50, 58))
    result = privatize(heart.model, rows, None, make_mechanism("laplace", 1))
    html = compare.highlighted_changes(rows, result.privatized_frame).to_html()
    highlighted = html.split("background-color: #fde68a")[0].count("_row")  # the cells the style rule names
    assert highlighted >= 8 and list(result.privatized_frame.index) == list(range(50, 58))


def test_the_packages_own_images_near_zero_and_one_are_scored_not_refused():
    """A model of 0/1 masks draws samples within [0, 1] with fractions: scoring them (training's sample recognition,
    evaluate bpd) must not be refused as a caller's images scaled to [0, 1]."""
    from cadp.train import classifier_accuracy

    classifier = load_model("mnist-cinn").classifier
    masks = (torch.randint(0, 2, (20, 1, 28, 28)).float() * 0.9 + 0.05)
    assert 0.0 <= classifier_accuracy(classifier, masks, torch.zeros(20, dtype=torch.long)) <= 1.0
    with pytest.raises(InputError, match=r"scaled to \[0, 1\]"):
        classifier.predict_proba(masks)
