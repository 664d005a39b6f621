"""Uploads are read only as the formats the app accepts, whatever their name: Pillow would open an EPS file named
scan.png by writing its bytes to a temporary file and running Ghostscript on it (an upload on disk, and untrusted
PostScript before an outside program), and let Ghostscript's errors escape the upload's own messages."""

from __future__ import annotations

import io
import tempfile

import numpy as np
import pytest
from PIL import Image

from cadp.errors import InputError
from cadp.uploads import to_model_input

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n%%EndComments\n"
       b"0 0 moveto 28 28 lineto stroke\nshowpage\n%%EOF\n")


def test_an_eps_file_named_png_is_refused_without_touching_disk(monkeypatch):
    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(tempfile, "mkstemp", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    with pytest.raises(InputError, match="not an image that can be read"):
        to_model_input(EPS, image_size=28, channels=1)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"])
def test_the_accepted_formats_are_still_read(fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 30), dtype=np.uint8)).save(buffer, format=fmt)
    prepared = to_model_input(buffer.getvalue(), image_size=28, channels=1)
    assert prepared.pixels.shape == (1, 28, 28)


def test_a_format_pillow_reads_but_the_app_does_not_accept_is_refused():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((30, 30), dtype=np.uint8)).save(buffer, format="PCX")
    with pytest.raises(InputError, match="not an image that can be read"):
        to_model_input(buffer.getvalue(), image_size=28, channels=1)
