"""The app with a user's own network trained on public data (MNIST), next to a copy of a bundled model: the
bundled models' measured figures are quoted for the bundled networks only, whatever dataset a config names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cadp import hub, ui
from cadp.hub import save_model
from cadp.models import ImageCINN, ImageModelConfig
from tests import app_helpers as helpers
from tests.conftest import weights_dir

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120
MINE = "my-mnist-cinn"


@pytest.fixture(scope="module")
def mixed_weights(tmp_path_factory) -> Path:
    """A weights folder with a user's small MNIST network (28x28 grayscale, public data) and a copy of the bundled
    mnist-cinn under another name."""
    torch.manual_seed(0)
    config = ImageModelConfig(name=MINE, dataset="mnist", image_size=28, channels=1,
                              class_names=[str(digit) for digit in range(10)], conv_width=4, conv_blocks=[1, 1],
                              fc_blocks=1, fc_width=8)
    folder = tmp_path_factory.mktemp("mixed_weights")
    save_model(ImageCINN(config), folder / MINE)
    shutil.copytree(hub.BUNDLED_DIR / "mnist-cinn", folder / "copied-mnist")
    with weights_dir(folder):
        yield folder


def shown(at: AppTest) -> str:
    return "\n".join(str(e.value) for kind in (at.error, at.warning, at.info, at.caption, at.markdown) for e in kind)


def test_a_bundled_model_is_known_by_its_weights_not_its_dataset(mixed_weights):
    assert hub.bundled_twin(hub.BUNDLED_DIR / "mnist-cinn") == "mnist-cinn"
    assert hub.bundled_twin(mixed_weights / "copied-mnist") == "mnist-cinn"
    assert hub.bundled_twin(mixed_weights / MINE) is None
    mine = hub.load_folder(mixed_weights / MINE)
    copied = hub.load_folder(mixed_weights / "copied-mnist")
    assert not ui.measured_like_bundled(mine.config, mine.folder)
    assert ui.measured_like_bundled(copied.config, copied.folder)


def test_the_home_page_does_not_call_a_users_mnist_network_bundled(mixed_weights):
    at = AppTest.from_file(str(ROOT / "views" / "home.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    text = shown(at).replace("\\", "")
    assert (f"{MINE} says in its config.json that it was trained without DP on public data too, which this app "
            "checks only for the bundled models") in text, text
    assert "The bundled models were trained without DP on public data" in text  # the copy is a bundled model
    assert "the bundled 28x28 image models (their latents have 784 dimensions)" in text
    assert f"{MINE}, of another size or data, may differ" in text
    assert "copied-mnist, of another" not in text


def test_the_image_page_quotes_the_bundled_figures_as_the_bundled_models_for_a_users_mnist_network(mixed_weights):
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=TIMEOUT)
    at.session_state["chosen_models"] = {"image": MINE, None: MINE}
    at.run()
    at.file_uploader(key="image_upload").set_value(("x.png", helpers.png(), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    meaning = [c.value for c in at.caption if "What large ε means" in c.value]
    assert len(meaning) == 1, [c.value for c in at.caption]
    assert meaning[0].startswith("This model's latent has 784 dimensions; the figures that follow were measured with "
                                 "the bundled 28x28 models and may differ for it"), meaning[0]
