"""Uploads: an image refused once decoded spends the upload's pixel budget; a file's content, not its name, says
whether it is DICOM."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cadp.errors import InputError
from cadp.uploads import iter_zip_images

try:
    from tests import corpus
    from tests.test_uploads import prepare
except ImportError:  # tests/ itself on sys.path (pytest's default rootdir import)
    import corpus
    from test_uploads import prepare


def nan_tiff(width: int = 300, height: int = 200) -> bytes:
    """A float TIFF whose every pixel is NaN: decoded whole, then refused (deflate makes 7000 x 7000 of it 311 kB)."""
    return corpus.encode(Image.fromarray(np.full((height, width), np.nan, np.float32), mode="F"), "TIFF",
                         compression="tiff_adobe_deflate")


def nan_dicom() -> bytes:
    """A 24 x 32 DICOM of float pixels (Float Pixel Data), every one NaN."""
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(corpus.dicom()))
    del dataset.PixelData, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation
    dataset.BitsAllocated = 32
    dataset.FloatPixelData = np.full((32, 24), np.nan, np.float32).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the pixel budget

@pytest.mark.parametrize("data, pixels", [(nan_tiff(), 60_000), (nan_dicom(), 768)], ids=["tiff", "dicom"])
def test_an_image_refused_once_decoded_says_what_decoding_it_cost(data, pixels):
    """It said decoded_pixels = 0, so the budget never counted an image refused after its pixels were decoded."""
    with pytest.raises(InputError, match="holds no finite pixel values") as failure:
        prepare(data)
    assert failure.value.decoded_pixels == pixels


def test_images_refused_once_decoded_spend_the_upload_budget_and_the_rest_are_skipped():
    """Six all-NaN 7000 x 7000 TIFFs were all decoded (3.8 s) under a budget of one: a 50 MB ZIP held 168."""
    from cadp.ui import KeptFile, image_records_from_uploads

    refused = nan_tiff()
    archive = corpus.zip_bytes({f"{i}.tif": refused for i in range(4)})
    records, problems = image_records_from_uploads([KeptFile("nan.zip", archive, len(archive))], image_size=28,
                                                   channels=1, invert="auto", max_pixels=150_000)
    assert not records
    assert problems[:3] == [(f"nan.zip/{i}.tif", "the image holds no finite pixel values") for i in range(3)]
    assert problems[3] == ("", "This upload's images hold more than 150,000 pixels in all, the most one upload may "
                               "decode (the model reads them at 28x28: downscale them before uploading, or upload "
                               "fewer at a time); 1 image past it was skipped")
    assert len(problems) == 4


def test_a_refused_image_and_an_accepted_one_share_the_budget():
    """The budget is one for the upload: a refused image's pixels leave less for the images after it."""
    from cadp.ui import KeptFile, image_records_from_uploads

    solid = corpus.encode(Image.new("L", (300, 200), 20), "PNG")
    refused = nan_tiff()
    files = [KeptFile("nan.tif", refused, len(refused)), KeptFile("a.png", solid, len(solid)),
             KeptFile("b.png", solid, len(solid))]
    records, problems = image_records_from_uploads(files, image_size=28, channels=1, invert="auto",
                                                   max_pixels=100_000)
    assert [record.name for record in records] == ["a.png"]  # it crossed the budget: b.png is skipped
    assert problems[0] == ("nan.tif", "the image holds no finite pixel values")
    assert problems[-1][1].endswith("1 image past it was skipped")


# --------------------------------------------------------------------------- a file named .dcm

def _formats() -> dict[str, bytes]:
    picture = Image.fromarray(corpus.digit())
    return {fmt: corpus.encode(picture, fmt) for fmt in ("PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP")}


@pytest.mark.parametrize("fmt", list(_formats()))
@pytest.mark.parametrize("suffix", [".dcm", ".dicom"])
def test_an_image_named_as_dicom_is_read_as_the_format_its_bytes_are(fmt, suffix):
    """A PNG renamed scan.dcm got "the DICOM file holds no image (it has no Pixel Data element)"."""
    data = _formats()[fmt]
    named = prepare(data, filename=f"scan{suffix}")
    assert np.array_equal(named.pixels, prepare(data, filename=f"scan.{fmt.lower()}").pixels)
    assert not any("DICOM" in step for step in named.steps)


def test_a_real_dicom_named_dcm_is_still_read_as_dicom():
    data = corpus.dicom()
    assert data[128:132] == b"DICM"
    prepared = prepare(data, filename="scan.dcm")
    assert any(step.startswith("DICOM 12-bit scaled to 8-bit") for step in prepared.steps)
    assert prepared.pixels.max() == 255


def test_text_named_dcm_still_says_dicom():
    with pytest.raises(InputError, match="DICOM"):
        prepare(b"just text, not a scan", filename="scan.dcm")


def test_a_zip_member_without_a_suffix_is_read_when_its_content_is_a_bmp():
    """Its two letters 'BM' with a known header size: PNG, JPEG, GIF, TIFF and WebP were read, a BMP was not."""
    bitmap = _formats()["BMP"]
    results = dict(iter_zip_images(corpus.zip_bytes({"scans/IM0002": bitmap, "scans/NOTES": b"BM, the notes" * 20})))
    assert results["scans/IM0002"] == bitmap
    assert "not an image" in str(results["scans/NOTES"])
