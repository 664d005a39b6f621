"""The Model card page and a large network (a Hub model of 100M parameters takes minutes of CPU for its first
samples, on a machine its visitors share): its samples are drawn when asked for, not on opening the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cadp import ui
from cadp.models import ImageCINN

try:
    from test_model_card_hostile import image_model
except ImportError:  # tests/ imported as a package
    from tests.test_model_card_hostile import image_model
from tests.conftest import weights_dir

PAGE = str(Path(__file__).resolve().parent.parent / "views" / "model_card.py")
TIMEOUT = 90


@pytest.fixture()
def counted_samples(monkeypatch):
    calls: list[int] = []
    sample = ImageCINN.sample

    def counted(self, labels, *args, **kwargs):
        calls.append(len(getattr(labels, "values", labels)))
        return sample(self, labels, *args, **kwargs)

    monkeypatch.setattr(ImageCINN, "sample", counted)
    yield calls
    ui.clear_loaded_models()


def test_a_large_networks_samples_wait_for_a_press_then_stay(tmp_path, monkeypatch, counted_samples):
    folder = image_model(tmp_path / "weights" / "big-photos-cinn", ["a", "b"])
    monkeypatch.setattr(ui, "SAMPLES_ON_REQUEST_PARAMETERS", 1_000)  # this small network counts as large
    with weights_dir(folder.parent):
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
        assert not at.exception, [e.value for e in at.exception]
        assert counted_samples == [] and not at.get("image")
        note = " ".join(info.value for info in at.info)
        assert "parameters" in note and "Draw samples" in note, note
        [button] = [button for button in at.button if button.label == "Draw samples"]
        button.click().run()
        assert counted_samples and at.get("image")
        drawn = len(counted_samples)
        at.slider(key="card_per_class").set_value(3).run()  # a later run draws without another press
        assert len(counted_samples) > drawn and at.get("image")
        assert not [button for button in at.button if button.label == "Draw samples"]


def test_a_small_networks_samples_are_drawn_on_opening_the_page(tmp_path, counted_samples):
    folder = image_model(tmp_path / "weights" / "small-photos-cinn", ["a", "b"])
    with weights_dir(folder.parent):
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error and counted_samples and at.get("image")
    assert not [button for button in at.button if button.label == "Draw samples"]
