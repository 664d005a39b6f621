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


def text_downloads(at: AppTest, media: dict[str, bytes], label: str) -> bytes:
    buttons = [b for b in at.get("download_button") if b.label.startswith(label)]
    assert len(buttons) == 1, [b.label for b in at.get("download_button")]
    return media[buttons[0].proto.url.rsplit("/", 1)[-1].split(".")[0]]


def test_the_text_files_beside_a_release_have_addresses_no_one_can_work_out(media):
    """The table page's guarantee.txt (it names the kept columns) and the image page's cautions.txt (file names and
    facts about the records) had the same bytes for the same inputs and settings, and so the same address in the
    media store, which serves them to anyone: a release id drawn at random makes each one's address unknowable."""
    terms = []
    for _ in range(2):  # two visitors release the same bundled table with the same settings
        at = AppTest.from_file(str(ROOT / "views" / "tabular.py"), default_timeout=90).run()
        helpers.conditions(at).set_value(["sex"]).run()
        at.button(key="table_privatize").click().run()
        assert not at.exception, [e.value for e in at.exception]
        terms.append(text_downloads(at, media, "Download its terms").decode())
    assert terms[0] != terms[1] and all("Release id: " in text for text in terms)
    assert terms[0].split("Release id: ")[0] == terms[1].split("Release id: ")[0]  # the terms themselves alike
    cautions = []
    for _ in range(2):  # two files of the same pixels: a caution about the repeat, in cautions.txt
        at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
        at.file_uploader(key="image_upload").set_value([("a.png", helpers.png(), "image/png"),
                                                       ("b.png", helpers.png(), "image/png")]).run()
        at.button(key="image_privatize").click().run()
        assert not at.exception, [e.value for e in at.exception]
        cautions.append(text_downloads(at, media, "Download cautions.txt").decode())
    assert cautions[0] != cautions[1] and all("Release id: " in text for text in cautions)
