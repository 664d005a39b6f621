"""An image the model reads as its negative (a dark-on-light upload) is shown, measured and downloaded as it was
uploaded: the page showed and the download held the model's light-on-dark negative (the archive CLI already wrote
releases back in their input's polarity)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cadp import compare
from cadp.uploads import INVERTED_BACK
from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)


def released_page(files) -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    at.file_uploader(key="image_upload").set_value(files).run()
    at.button(key="image_privatize").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def border_minus_centre(data: bytes) -> float:
    """How much brighter an image's border is than its centre (positive: dark on light)."""
    array = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    h, w = array.shape
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]]).mean()
    return border - array[h // 4:3 * h // 4, w // 4:3 * w // 4].mean()


def shown_pixels(data: bytes) -> np.ndarray:
    """A shown image (upscaled 4x) at the model's size, each 4 x 4 block's mean."""
    array = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    h, w = array.shape[0] // 4, array.shape[1] // 4
    return array.reshape(h, 4, w, 4).mean(axis=(1, 3))


def shown(at: AppTest, media, caption: str) -> bytes:
    image = next(i for i in at.get("image") if i.proto.imgs[0].caption.startswith(caption))
    return media[image.proto.imgs[0].url.rsplit("/", 1)[-1].split(".")[0]]


def test_a_dark_on_light_upload_is_shown_and_downloaded_dark_on_light(media):
    at = released_page(("scan.png", helpers.png(2, dark_on_light=True), "image/png"))
    state = at.session_state["image_result"]
    assert state["inverted"] == [True]
    # the model's input and release are light on dark; what the page shows and the file are dark on light
    result = state["result"]
    assert border_minus_centre(shown(at, media, "original")) > 100
    for caption, model_view in (("original", result.original[0]), ("privatized (", result.privatized[0]),
                                ("reconstruction", result.reconstruction[0])):
        image = shown_pixels(shown(at, media, caption))
        model_view = model_view.numpy()[0].astype(float)
        # (shown as a JPEG: nearer the model's view inverted than the model's view itself)
        assert np.abs(image - (255 - model_view)).mean() < 0.2 * np.abs(image - model_view).mean(), caption
    file = media[at.get("download_button")[0].proto.url.rsplit("/", 1)[-1].split(".")[0]]
    released = np.asarray(Image.open(io.BytesIO(file)).convert("L"))
    model_release = state["result"].privatized[0].numpy()[0]
    assert np.abs(released.astype(float) - (255 - model_release)).max() <= 0.5  # the release, inverted back
    assert any("shown, measured and downloaded inverted back" in c.value for c in at.caption)
    assert any("downloaded inverted back, as dark on light as you uploaded it" in c.value for c in at.caption)
    # the quality numbers are of the pair shown (SSIM is not the same for an image pair and its negatives)
    original = 255 - state["result"].original[0].numpy().astype(float)
    expected = compare.image_quality(original, 255 - state["result"].privatized[0].numpy())
    assert next(m.value for m in at.metric if m.label == "SSIM") == f"{expected['ssim']:.3f}"


def test_a_light_on_dark_upload_is_unchanged(media):
    at = released_page(("digit.png", helpers.png(2), "image/png"))
    state = at.session_state["image_result"]
    assert state["inverted"] == [False]
    file = media[at.get("download_button")[0].proto.url.rsplit("/", 1)[-1].split(".")[0]]
    released = np.asarray(Image.open(io.BytesIO(file)).convert("L"))
    assert np.abs(released.astype(float) - state["result"].privatized[0].numpy()[0]).max() <= 0.5
    assert not any("inverted back" in c.value for c in at.caption)


def test_a_batch_s_manifest_says_which_files_were_inverted_back():
    at = released_page([("light.png", helpers.png(1, dark_on_light=True), "image/png"),
                        ("dark.png", helpers.png(2), "image/png")])
    state = at.session_state["image_result"]
    assert state["inverted"] == [True, False]
    data = compare.batch_zip(state["files"], state["manifest"], state["zip_terms"])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = archive.read("manifest.csv").decode().splitlines()
        polarity = {row.split(",")[0]: row for row in rows[1:]}
        images = {name: archive.read(name) for name in polarity}
    assert rows[0].endswith(",polarity")
    for name, row in polarity.items():  # the label is kept: the names are the inputs'
        index = 0 if "light" in name else 1
        model_release = state["result"].privatized[index].numpy()[0]
        written = np.asarray(Image.open(io.BytesIO(images[name])).convert("L"), dtype=float)
        if index == 0:
            assert row.endswith(INVERTED_BACK) and np.abs(written - (255 - model_release)).max() <= 0.5
        else:
            assert row.endswith(f",{compare.POLARITY_AS_READ}") and np.abs(written - model_release).max() <= 0.5


def test_a_manifest_without_inverted_images_has_no_polarity_column():
    at = released_page([("a.png", helpers.png(1), "image/png"), ("b.png", helpers.png(2), "image/png")])
    state = at.session_state["image_result"]
    data = compare.batch_zip(state["files"], state["manifest"], state["zip_terms"])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.read("manifest.csv").decode().splitlines()[0] == "file,condition,mechanism,cost,noise"
