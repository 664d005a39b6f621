"""Words of the app a reviewer found misleading: each test fails on the wording before it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cadp import compare

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / name), default_timeout=90).run()


def test_the_latent_distance_is_said_to_hold_the_clip_not_the_noise_alone():
    """At small ε the clip moves a latent by nearly its whole norm: "how far the noise moved" it read as noise."""
    at = page("image.py")
    at.radio(key="image_source").set_value("Sample from the bundled test set").run()
    at.button(key="image_privatize").click().run()
    assert not at.exception
    metric = next(m for m in at.metric if m.label == "latent L1 distance")
    assert "the clip and the noise together" in metric.help
    assert "how far the noise moved" not in metric.help


def test_kept_names_say_a_zips_folders_are_left_out_and_the_numbers_follow_the_upload():
    note = compare.download_note("kept", "0000-scan-label-1-laplace-eps10.png", keep_names=True)
    assert "numbered in the upload's order (a ZIP's folders are left out of the names" in note
    # by default the names are not kept, with a kept label too: names often identify a patient
    note = compare.download_note("kept", "0000-label-1-laplace-eps10.png")
    assert "your file names (which can identify a patient) and the upload's order are left out" in note


def test_the_hub_box_names_the_weights_folder_by_its_role_not_the_servers_path(monkeypatch):
    """A hosted app's visitors saw the server's path to its weights."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    at = page("model_card.py")
    at.sidebar.selectbox(key="model_choice").set_value("Hub repository…").run()
    at.sidebar.text_input(key="model_hub").input("/srv/models/x").run()
    said = " ".join(e.value for e in at.sidebar.error)
    assert "Local folders are not loaded from this box" in said
    assert os.environ["CADP_WEIGHTS_DIR"] not in said and "the folder CADP_WEIGHTS_DIR names" in said, said


def test_an_upload_held_from_earlier_is_named_literally_not_as_markdown():
    """Back on the image page, the held upload's caption rendered its name as Markdown: a received file's name
    could plant a link or coloured text in the app's own voice."""
    from tests.app_helpers import png

    name = "[click me](https://evil.example) :red[ALERT] **x**.png"
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("views/image.py").run()
    at.file_uploader(key="image_upload").set_value([(name, png(1), "image/png")]).run()
    at.switch_page("views/home.py").run()
    at.switch_page("views/image.py").run()
    assert not at.exception
    caption = next(c.value for c in at.caption if "uploaded earlier in this session" in c.value)
    assert r"\[click me\](https://evil.example) :red\[ALERT\] \*\*x\*\*.png" in caption


def test_a_bundled_test_image_is_not_offered_to_keep_file_names_it_does_not_have():
    """With "Sample from the bundled test set", the page offered "Keep your file names" and its note spoke of
    "your file names (which can identify a patient)"."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    at = AppTest.from_file(str(root / "views" / "image.py"), default_timeout=90).run()
    at.radio(key="image_source").set_value("Sample from the bundled test set").run()
    assert not any(box.key == "image_keep_names" for box in at.checkbox)
    at.button(key="image_privatize").click().run()
    assert not at.exception, [e.value for e in at.exception]
    notes = " ".join(c.value for c in at.caption)
    assert "Downloaded files are numbered; each name carries the label kept with its image" in notes
    assert "your file names" not in notes
    assert compare.download_note("kept", "0000-label-1.png", uploaded=False).startswith("Downloaded files are numbered;")
