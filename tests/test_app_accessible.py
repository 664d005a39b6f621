"""What the result views show by image or colour is said in text too: each image has alternative text, each latent
difference map a caption of its numbers, and the table histograms differ by more than a shade of blue."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cadp import compare

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)


def test_every_image_of_an_image_release_has_alternative_text():
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    at.radio(key="image_source").set_value("Sample from the bundled test set").run()
    at.checkbox(key="image_strip").check().run()
    at.button(key="image_privatize").click().run()
    assert not at.exception, [e.value for e in at.exception]
    images = [image for element in at.get("image") for image in element.proto.imgs]
    assert len(images) >= 5 and all(image.alt for image in images), [(i.caption, i.alt) for i in images]
    alts = " | ".join(image.alt for image in images)
    assert "the privatized image, released with the label" in alts and "pixel difference" in alts
    maps = [c.value for c in at.caption if "mean |M(z) − z|" in c.value]
    assert len(maps) == len(at.get("plotly_chart")) - 1, maps  # one per latent map (the preview aside)


def test_the_histograms_of_original_and_privatized_differ_by_more_than_colour():
    frame = pd.DataFrame({"age": [20, 30, 40, 50, 60]})
    figure = compare.distribution_figure(frame, frame + 1, "age")
    patterns = [trace.marker.pattern.shape or "" for trace in figure.data]
    colours = [trace.marker.color for trace in figure.data]
    assert len(set(patterns)) == 2 and len(set(colours)) == 2


def test_a_latent_map_in_words():
    import numpy as np

    words = compare.latent_map_words(np.array([[1.0, 3.0], [np.nan, 2.0]]))
    assert words == "3 coordinates: mean |M(z) − z| 2.00, largest 3.00"


def test_the_model_cards_samples_have_alternative_text():
    at = AppTest.from_file(str(ROOT / "views" / "model_card.py"), default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    images = [image for element in at.get("image") for image in element.proto.imgs]
    assert images and all("samples drawn by the model" in image.alt for image in images)
