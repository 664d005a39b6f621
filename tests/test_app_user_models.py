"""The app with a weights folder of a user's own models (CADP_WEIGHTS_DIR): a 64x64 RGB image model of data the
app does not bundle and never evaluated. The pages must not offer what can only fail, nor quote the bundled
models' figures as this model's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cadp.hub import save_model
from cadp.models import ImageCINN, ImageModelConfig
from tests import app_helpers as helpers
from tests.conftest import weights_dir

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120
MODEL = "my-scans-cinn"


@pytest.fixture(scope="module")
def user_weights(tmp_path_factory) -> Path:
    """A weights folder holding only a user's model: 64x64 RGB, trained on "my-scans", no eval.json."""
    torch.manual_seed(0)
    config = ImageModelConfig(name=MODEL, dataset="my-scans", image_size=64, channels=3,
                              class_names=["a", "b", "c"], conv_width=4, conv_blocks=[1, 1], fc_blocks=1, fc_width=8)
    folder = tmp_path_factory.mktemp("user_weights")
    save_model(ImageCINN(config), folder / MODEL)
    with weights_dir(folder):
        yield folder


def shown(at: AppTest) -> str:
    """Every message, caption and text of the page, one string."""
    return "\n".join(str(e.value) for kind in (at.error, at.warning, at.info, at.caption, at.markdown) for e in kind)


def page(view: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / view), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_utility_page_offers_no_recompute_for_a_model_of_data_the_app_does_not_have(user_weights):
    at = page("utility.py")
    assert not [button for button in at.button if button.label == "Recompute"]
    text = shown(at)
    assert "Recompute the curves here" not in text
    assert "cannot be recomputed here" in text and "my-scans" in text
    assert f"`python -m cadp.evaluate utility --model {(user_weights / MODEL).as_posix()} --data " \
        "THE-DATA-IT-WAS-TRAINED-ON`" in text


def test_the_image_page_says_where_the_preview_would_be_that_an_unevaluated_model_was_not_evaluated(user_weights):
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value(("x.png", helpers.png(size=64), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    text = shown(at)
    assert "No evaluation of this model's releases" in text
    assert "releases were not evaluated" in text and "no downstream accuracy or re-identification rate" in text
    assert "python -m cadp.evaluate utility --model" in text and "--data THE-DATA-IT-WAS-TRAINED-ON" in text


def test_the_image_page_does_not_call_a_64x64_rgb_latent_784_dimensional(user_weights):
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value(("x.png", helpers.png(size=64), "image/png")).run()
    meaning = [c.value for c in at.caption if "What large ε means" in c.value]
    assert len(meaning) == 1, [c.value for c in at.caption]
    assert "This model's latent has 12,288 dimensions" in meaning[0]
    assert "a 28x28 image's latent has 784 dimensions" not in meaning[0]
    assert "the bundled 28x28 image models (their latents have 784 dimensions)" in meaning[0]


def test_the_home_page_speaks_of_the_models_it_lists_not_of_bundled_ones(user_weights):
    text = shown(page("home.py"))
    assert "The bundled models were trained without DP on public data" not in text
    assert f"{MODEL} was trained on data this app does not bundle" in text.replace("\\", "")
    assert "for a record of that training data it does not cover what the model learned from the record" in text
    assert "What large ε means here: a 28x28 image's latent has 784 dimensions" not in text
    assert "the bundled 28x28 image models (their latents have 784 dimensions)" in text
