"""The scores the pages show beside a release (a statistician's review): each measured as its caption says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cadp import compare


def test_p_o_of_a_release_with_one_class_is_scored_on_the_real_rows():
    """A released target of one class ('A' everywhere): p/o was scored against the released labels of the test rows
    (1.000), not the real ones, beating o/o and the majority class; predicting 'A' scores A's share of them."""
    rng = np.random.default_rng(0)
    original = pd.DataFrame({"x": rng.normal(size=60), "t": rng.choice(["A", "B"], 60, p=[0.6, 0.4])})
    released = original.assign(t="A")
    scores = compare.downstream_accuracy(original, released, "t")
    order = np.random.default_rng(0).permutation(60)
    test = order[:scores["n_test"]]
    assert scores["p/o"] == np.mean(original["t"].to_numpy()[test] == "A") < 1.0
    assert scores["p/o"] <= max(scores["chance"], scores["o/o"])


def test_image_quality_compares_each_colour_channel_as_itself():
    """The page averaged the channels into grey first: a release with its colour channels swapped scored SSIM 1 and
    PSNR infinity, while the evaluation (per channel) gave 0.03 and 7.8 dB."""
    rng = np.random.default_rng(0)
    image = torch.as_tensor(rng.integers(0, 256, (3, 28, 28)), dtype=torch.float32)
    swapped = image[[1, 2, 0]]
    quality = compare.image_quality(image, swapped)
    assert quality["ssim"] < 0.2 and quality["psnr"] < 20, quality
    gray = image[:1]
    assert compare.image_quality(gray, gray)["ssim"] == 1.0 and compare.image_quality(gray, gray)["psnr"] == float("inf")
    noisy = (gray + 20).clamp(0, 255)
    assert 0 < compare.image_quality(gray, noisy)["ssim"] < 1  # one channel as before


def test_the_downstream_words_say_a_model_fitted_here_learned_from_the_tested_rows():
    """The caption said 'tested on the other N real rows', held out, while a model fitted on the upload had been
    trained on (nearly) all of them."""
    accuracy = {"n_train": 62, "n_test": 26, "p/o": 0.8, "o/o": 0.85, "chance": 0.5}
    fitted = compare.downstream_words(accuracy, compare.FITTED_HERE_UNEVALUATED)
    assert "held out from the classifiers, not from the model" in fitted
    assert "not from the model" not in compare.downstream_words(accuracy)


def test_a_tables_error_bars_do_not_say_the_classifier_varies_by_seed():
    """A table's logistic regression (lbfgs) trains alike whatever its random_state: its bars are the noise's."""
    from cadp.curves import error_bars_note

    table = error_bars_note({"kind": "tabular", "seeds": [0, 1], "n_test": 100})
    assert "the noise drawn differs by seed; the classifier, a logistic regression, trains the same way" in table
    assert "classifier's training differ" in error_bars_note({"kind": "image", "seeds": [0, 1], "n_test": 100})


def test_the_previews_line_labels_do_not_print_over_each_other():
    """fashion-mnist-cinn: 'always predicting the majority class (0.124)' below its line and 'chance knowing the
    released label (2.0%)' above its own printed over each other at the chart's right edge."""
    import json

    from cadp import hub, ui

    for name in hub.model_folders():
        utility = json.loads((hub.BUNDLED_DIR / name / "eval.json").read_text())["utility"]
        labels = [(a.xanchor, a.y if a.yanchor == "bottom" else a.y - ui.LINE_LABEL_HEIGHT)
                  for a in ui.preview_figure(utility, "laplace", 10).layout.annotations]
        for index, (side, low) in enumerate(labels):
            for other_side, other_low in labels[index + 1:]:
                assert side != other_side or abs(low - other_low) >= ui.LINE_LABEL_HEIGHT, (name, labels)
