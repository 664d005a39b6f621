"""Which polarity an image release is shown and downloaded in. Under Inversion 'always' every upload is inverted for
the model, whatever its pixels, and each release is inverted back, as uploaded (the page showed and the download
held the model's negative). Under 'auto' each image's own pixels decide: a release written back would show exactly
whether its input was dark on light, which the guarantee does not cover, so releases stay as the model reads them."""

from __future__ import annotations

import base64
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
from views import image as image_page

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)


def released_page(files, invert: str = "auto") -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    at.file_uploader(key="image_upload").set_value(files).run()
    at.radio(key="image_invert").set_value(invert).run()
    at.checkbox(key="image_keep_names").check().run()  # the files named after their inputs: each is told apart
    at.button(key="image_privatize").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_pixels(data: bytes) -> np.ndarray:
    """A shown image (upscaled 4x) at the model's size, each 4 x 4 block's mean."""
    array = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
    h, w = array.shape[0] // 4, array.shape[1] // 4
    return array.reshape(h, 4, w, 4).mean(axis=(1, 3))


def shown(at: AppTest, media, caption: str) -> bytes:
    image = next(i for i in at.get("image") if i.proto.imgs[0].caption.startswith(caption))
    url = image.proto.imgs[0].url
    if url.startswith("data:image/png;base64,"):  # a record's views go inline (ui.inline_image)
        return base64.b64decode(url.split(",", 1)[1])
    return media[url.rsplit("/", 1)[-1].split(".")[0]]


def downloaded(at: AppTest, media) -> np.ndarray:
    file = media[at.get("download_button")[0].proto.url.rsplit("/", 1)[-1].split(".")[0]]
    return np.asarray(Image.open(io.BytesIO(file)).convert("L"), dtype=float)


def assert_shown_and_downloaded(at: AppTest, media, back: bool) -> None:
    """What the page shows and the PNG holds: the model's views, inverted back where ``back``."""
    result = at.session_state["image_result"]["result"]
    for caption, model_view in (("original", result.original[0]), ("privatized (", result.privatized[0]),
                                ("reconstruction", result.reconstruction[0])):
        image = shown_pixels(shown(at, media, caption))
        model_view = model_view.numpy()[0].astype(float)
        wanted, other = (255 - model_view, model_view) if back else (model_view, 255 - model_view)
        # (shown as a JPEG: nearer the one wanted than the other)
        assert np.abs(image - wanted).mean() < 0.2 * np.abs(image - other).mean(), caption
    release = result.privatized[0].numpy()[0]
    assert np.abs(downloaded(at, media) - (255 - release if back else release)).max() <= 0.5


def test_a_dark_on_light_upload_under_auto_is_released_as_the_model_reads_it(media):
    at = released_page(("scan.png", helpers.png(2, dark_on_light=True), "image/png"), "auto")
    state = at.session_state["image_result"]
    assert state["inverted"] == [True] and state["written_back"] == [False]
    assert_shown_and_downloaded(at, media, back=False)
    notes = [c.value for c in at.caption]
    assert image_page.NOT_WRITTEN_BACK_NOTE in notes and image_page.WRITTEN_BACK_NOTE not in notes
    assert not any("inverted back, as you uploaded it" in note for note in notes)


def test_under_always_every_release_is_inverted_back_and_measured_so(media):
    at = released_page(("scan.png", helpers.png(2, dark_on_light=True), "image/png"), "always")
    state = at.session_state["image_result"]
    assert state["written_back"] == [True]
    assert_shown_and_downloaded(at, media, back=True)
    notes = [c.value for c in at.caption]
    assert image_page.WRITTEN_BACK_NOTE in notes
    assert any("each is shown and downloaded inverted back, as you uploaded it" in note for note in notes)
    # the quality numbers are of the pair shown (SSIM is not the same for an image pair and its negatives)
    original = 255 - state["result"].original[0].numpy().astype(float)
    expected = compare.image_quality(original, 255 - state["result"].privatized[0].numpy())
    assert next(m.value for m in at.metric if m.label == "SSIM") == f"{expected['ssim']:.3f}"


def test_a_light_on_dark_upload_is_unchanged(media):
    at = released_page(("digit.png", helpers.png(2), "image/png"), "auto")
    assert at.session_state["image_result"]["inverted"] == [False]
    assert_shown_and_downloaded(at, media, back=False)
    notes = [c.value for c in at.caption]
    assert not any("inverted back" in note or "read this image as its negative" in note for note in notes), notes


def manifest(at: AppTest) -> tuple[list[str], dict[str, bytes]]:
    state = at.session_state["image_result"]
    data = compare.batch_zip(state["files"], state["manifest"], state["zip_terms"])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        rows = archive.read("manifest.csv").decode().splitlines()
        return rows, {row.split(",")[0]: archive.read(row.split(",")[0]) for row in rows[1:]}


def test_a_batch_under_auto_says_nothing_of_each_inputs_polarity():
    """Neither the files nor the manifest may tell which inputs were dark on light."""
    at = released_page([("light.png", helpers.png(1, dark_on_light=True), "image/png"),
                        ("dark.png", helpers.png(2), "image/png")], "auto")
    state = at.session_state["image_result"]
    assert state["inverted"] == [True, False] and state["written_back"] == [False, False]
    rows, images = manifest(at)
    assert rows[0] == "file,condition,mechanism,cost,noise" and "inverted" not in "".join(rows)
    for name, data in images.items():  # the label is kept: the names are the inputs'
        model_release = state["result"].privatized[0 if "light" in name else 1].numpy()[0]
        written = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
        assert np.abs(written - model_release).max() <= 0.5, name


def test_a_batch_under_always_is_inverted_back_file_by_file():
    at = released_page([("light.png", helpers.png(1, dark_on_light=True), "image/png"),
                        ("dark.png", helpers.png(2), "image/png")], "always")
    state = at.session_state["image_result"]
    assert state["written_back"] == [True, True]
    rows, images = manifest(at)
    assert rows[0].endswith(",polarity") and all(row.endswith(INVERTED_BACK) for row in rows[1:])
    for name, data in images.items():
        model_release = state["result"].privatized[0 if "light" in name else 1].numpy()[0]
        written = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=float)
        assert np.abs(written - (255 - model_release)).max() <= 0.5, name
