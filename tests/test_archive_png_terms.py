"""Each PNG the archive CLI writes carries its release's terms and its released label as its Description text,
as the app's downloads do: a file shared alone still says what it is and how its label was released."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cadp.archive as archive
from cadp.hub import save_model
from cadp.models import ImageCINN, ImageModelConfig
from tests import corpus


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = ImageModelConfig(name="t", dataset="t", class_names=["cat", "dog"], conv_width=4, fc_width=8,
                              conv_blocks=[1, 1], fc_blocks=1)
    return save_model(ImageCINN(config), tmp_path_factory.mktemp("models") / "image")


@pytest.mark.parametrize(("extra", "how"), [([], "kept: released as given"),
                                           (["--condition", "label=randomized:1"],
                                            "randomized: not necessarily the true label")])
def test_written_pngs_carry_the_terms_and_the_released_label(model, tmp_path, extra, how):
    source = tmp_path / "in"
    for index in range(3):
        (source / "dog").mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(index).integers(0, 255, (28, 28), dtype=np.uint8)
        (source / "dog" / f"{index}.png").write_bytes(corpus.png(pixels))
    output = tmp_path / "out"
    assert archive.main(["--model", str(model), "--mechanism", "laplace", "--epsilon", "2", *extra,
                         str(source), str(output)]) == 0
    written = sorted(output.rglob("*.png"))
    assert len(written) == 3
    terms = (output / "guarantee.txt").read_text(encoding="utf-8").split("\n\n", 1)[0]  # its first paragraph
    assert "epsilon = 2" in terms
    for path in written:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            description = image.info.get("Description", "")
        label = path.parent.name  # kept: the input's folder; randomized: numbered files in the released label's
        assert description == f"{terms} Released label: {label} ({how})."
    assert {path.parent.name for path in written} <= ({"dog"} if not extra else {"cat", "dog"})
