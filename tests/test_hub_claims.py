"""A Hub repo's own numbers (its eval.json, its config's latent distances) are its publisher's word, and its names
are anyone's text: the app quoted the numbers in its own voice ("From the model's eval.json ... Measured") and
rendered a hostile model name as Markdown (a live link, a third party's image)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
from streamlit.testing.v1 import AppTest

from cadp import ui
from cadp.hub import load_folder
from tests import app_helpers as helpers
from tests.hub_server import HubServer

ROOT = Path(__file__).resolve().parent.parent
PUBLISHER = "the publisher of the Hub repo evil/claims"
HOSTILE = "x [Certified central DP](https://evil.example/ok) ![t](https://evil.example/pixel.png)"


@pytest.fixture()
def hub_app(weights, tmp_path, monkeypatch):
    """A Hub serving evil/claims (the tiny image model, with its eval.json) and evil/name (the tiny image model
    under a hostile name); the app's Hub box reads it."""
    named = shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / "named")
    config = json.loads((named / "config.json").read_text())
    config["name"] = HOSTILE
    (named / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv(ui.APP_HUB_CACHE_ENV, str(tmp_path / "app-hub"))
    with HubServer() as server:
        server.add_commit("evil/claims", weights / helpers.IMAGE_MODEL)
        server.add_commit("evil/name", named)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        ui.clear_loaded_models()
        try:
            yield server
        finally:
            ui.clear_loaded_models()


def from_hub(page: str, repo: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / page), default_timeout=120).run()
    at.sidebar.selectbox(key="model_choice").set_value("Hub repository…").run()
    at.sidebar.text_input(key="model_hub").input(repo).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_notes_say_whose_numbers_they_are(weights):
    loaded = load_folder(weights / helpers.IMAGE_MODEL)
    meaning = ui.metric_meaning(loaded.config, 1.0, publisher=PUBLISHER)
    assert (f"(according to {PUBLISHER}'s config.json, which this app did not measure and cannot check)."
            in meaning)
    assert "according to" not in ui.metric_meaning(loaded.config, 1.0)
    settings = ui.PrivacySettings(None, "laplace", 10.0, None, None, None, 0.7)
    notes = ui.preview_notes(loaded.evaluation["utility"], settings, True, PUBLISHER)
    assert notes[0].startswith(f"From the model's eval.json, as {PUBLISHER} publishes it with the model: this app "
                               "did not measure these numbers and cannot check them; its stated command (`")
    assert ui.preview_notes(loaded.evaluation["utility"], settings, True)[0].startswith(
        "From the model's eval.json (`")


def test_the_utility_page_says_a_hub_repos_curves_are_its_publishers(hub_app):
    at = from_hub("utility.py", "evil/claims")
    said = [i.value for i in at.info]
    assert any(f"These curves are drawn from the eval.json that {PUBLISHER} publishes with the model: this app "
               "did not measure them and cannot check them." in text for text in said), said


def test_the_image_page_says_whose_latent_distances_metric_uses(hub_app):
    at = from_hub("image.py", "evil/claims")
    at.radio(key="image_source").set_value("Sample from the bundled test set").run()
    at.selectbox(key="image_mechanism").set_value("metric").run()
    captions = " ".join(c.value for c in at.caption)
    assert f"(according to {PUBLISHER}'s config.json, which this app did not measure and cannot check)" in captions


def test_a_hostile_model_name_is_shown_as_text_not_markdown(hub_app):
    at = from_hub("tabular.py", "evil/name")  # an image model on the table page: refused, by name
    errors = [e.value for e in at.error] + [e.value for e in at.sidebar.error]
    assert errors and all("](https://evil.example" not in text for text in errors), errors
    assert any(r"x \[Certified central DP\]\(https://evil.example/ok\)" in text for text in errors), errors
