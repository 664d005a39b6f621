"""Streamlit serves each image at /media/<hash of its bytes>, to anyone who asks: an image made only of a record's
pixels (an upload as the model reads it, its original and reconstruction views) let anyone holding a candidate
image test whether some visitor's page shows it now. The image page's images go inline (data URLs) in the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)


def released_urls(at: AppTest) -> dict[str, str]:
    return {image.caption: image.url for element in at.get("image") for image in element.proto.imgs}


def session() -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    at.file_uploader(key="image_upload").set_value(("x.png", helpers.png(), "image/png")).run()
    at.button(key="image_privatize").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_no_image_of_an_image_release_has_an_address_another_session_could_ask_for(media):
    urls = released_urls(session())
    assert {"original", "reconstruction (no noise)", "model input: x.png"} <= set(urls)
    assert all(url.startswith("data:image/png;base64,") for url in urls.values()), urls
    assert len(media) == 1  # in Streamlit's media store only the download: the release, with fresh noise
