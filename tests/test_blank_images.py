"""A blank image (a fully transparent PNG, an empty scan) is read as one flat value: its release is only a sample
of its label, and the preprocessing notes say so (it was released as if it were a picture)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cadp.uploads import BLANK_IMAGE, to_model_input


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("image", [Image.new("RGBA", (28, 28), (0, 0, 0, 0)), Image.new("L", (40, 30), 255),
                                   Image.new("RGB", (28, 28), (10, 10, 10))])
def test_a_blank_image_is_said_to_be_blank(image):
    prepared = to_model_input(png(image), image_size=28, channels=1)
    assert any(step.startswith(BLANK_IMAGE) for step in prepared.steps), prepared.steps


def test_an_image_with_content_is_not():
    array = np.zeros((28, 28), dtype=np.uint8)
    array[10:18, 12:16] = 200
    prepared = to_model_input(png(Image.fromarray(array)), image_size=28, channels=1)
    assert not any(step.startswith(BLANK_IMAGE) for step in prepared.steps)
