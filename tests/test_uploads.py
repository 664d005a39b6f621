"""Uploads: every hostile file raises InputError with a useful message, or gives the documented result."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cadp.errors import InputError
from cadp.uploads import (
    PreparedImage,
    escaped_cells_note,
    escaped_csv,
    iter_zip_images,
    png_bytes,
    read_csv_upload,
    release_csv,
    safe_csv_bytes,
    sanitize_member_name,
    to_model_input,
)

try:
    from tests import corpus
except ImportError:  # tests/ itself on sys.path (pytest's default rootdir import)
    import corpus


def prepare(data: bytes, **options) -> PreparedImage:
    options.setdefault("image_size", 28)
    options.setdefault("channels", 1)
    return to_model_input(data, **options)


# --------------------------------------------------------------------------- images: good inputs

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"])
def test_every_format_decodes_to_model_shape(fmt):
    data = corpus.encode(Image.fromarray(corpus.digit(56, 56)), fmt)
    result = prepare(data)
    assert result.pixels.shape == (1, 28, 28) and result.pixels.dtype == np.uint8
    assert result.preview.shape == (56, 56)
    assert result.pixels[0, 14, 14] > 200 and result.pixels[0, 1, 1] < 40  # the bar survives, light on dark
    assert result.inverted is False


def test_dark_on_light_is_inverted_in_auto_mode_only():
    data = corpus.png(corpus.digit(28, 28, dark_on_light=True))
    auto = prepare(data)
    assert auto.inverted and "inverted (dark-on-light detected)" in auto.steps
    assert auto.pixels[0, 0, 0] == 0 and auto.pixels[0, 14, 14] == 255
    never = prepare(data, invert="never")
    assert not never.inverted and never.pixels[0, 0, 0] == 255
    light = prepare(corpus.png(corpus.digit(28, 28)), invert="always")
    assert light.inverted and light.pixels[0, 0, 0] == 255
    assert not prepare(corpus.png(corpus.digit(28, 28))).inverted


def test_resize_keeps_aspect_and_pads_with_the_background():
    data = corpus.png(corpus.digit(480, 640, dark_on_light=True))
    result = prepare(data, invert="never")
    assert "resized 640x480 -> 28x28 (aspect kept, padded)" in result.steps
    assert result.pixels.shape == (1, 28, 28)
    assert (result.pixels[0, :3] == 255).all()  # padding rows take the white sheet's colour, not black
    assert result.preview.shape == (480, 640)
    large = prepare(corpus.png(corpus.digit(1200, 1600)), invert="never")
    assert large.preview.shape == (768, 1024)  # no preview is shown with the steps: none is listed among them
    assert large.steps == ["resized 1600x1200 -> 28x28 (aspect kept, padded)"]


def test_a_very_small_source_is_flagged_when_enlarged():
    import numpy as np

    tiny = prepare(corpus.png(np.full((1, 1), 255, dtype=np.uint8)))
    assert "a very small source (1x1) enlarged 28x: check that it is the intended image" in tiny.steps
    assert not any("very small" in step for step in prepare(corpus.png(corpus.digit(480, 640))).steps)
    assert not any("very small" in step for step in prepare(corpus.png(corpus.digit(8, 8))).steps)  # 3.5x: fine


def test_the_enlargement_of_a_very_small_source_is_said_truthfully():
    """5 -> 28 pixels was said as "enlarged 6x"; it is 5.6x (whole factors stay whole: 7 -> 28 is 4x)."""
    five = prepare(corpus.png(np.full((5, 5), 255, dtype=np.uint8)))
    assert "a very small source (5x5) enlarged 5.6x: check that it is the intended image" in five.steps
    seven = prepare(corpus.png(np.full((7, 7), 255, dtype=np.uint8)))
    assert "a very small source (7x7) enlarged 4x: check that it is the intended image" in seven.steps


def test_rgb_to_grayscale_and_grayscale_to_rgb():
    colour = np.zeros((28, 28, 3), np.uint8)
    colour[..., 0] = 255
    gray = prepare(corpus.encode(Image.fromarray(colour), "PNG"))
    assert "converted to grayscale" in gray.steps
    assert int(gray.pixels[0, 5, 5]) == 76  # ITU-R 601 luma of pure red
    rgb = prepare(corpus.png(corpus.digit(28, 28)), channels=3)
    assert rgb.pixels.shape == (3, 28, 28)
    assert "grayscale repeated to 3 channels" in rgb.steps


def test_16bit_png_is_scaled_to_8bit():
    result = prepare(corpus.png_16bit(), image_size=32)
    assert any(step.startswith("16-bit scaled to 8-bit") for step in result.steps), result.steps
    assert result.pixels.max() == 255 and result.pixels.min() == 0  # 4000 of 65535 is stretched, not dimmed


def test_cmyk_jpeg():
    result = prepare(corpus.cmyk_jpeg(), invert="never")
    assert "CMYK converted to RGB" in result.steps
    assert result.pixels.shape == (1, 28, 28)


def test_palette_png_with_and_without_transparency():
    plain = prepare(corpus.palette_png())
    assert "palette image expanded" in plain.steps
    assert plain.pixels[0, 14, 14] == 255 and plain.pixels[0, 0, 0] == 0
    transparent = prepare(corpus.palette_png(transparent=True))
    assert any("transparency composited" in step for step in transparent.steps)


def test_alpha_png_is_composited_against_a_contrasting_sheet():
    dark = prepare(corpus.alpha_png(dark_strokes=True))
    # black strokes on a transparent sheet: composited on white, then auto-inverted to light-on-dark
    assert "transparency composited on white" in dark.steps and dark.inverted
    assert dark.pixels[0, 14, 14] == 255 and dark.pixels[0, 0, 0] == 0
    light = prepare(corpus.alpha_png(dark_strokes=False))
    assert "transparency composited on black" in light.steps and not light.inverted
    assert light.pixels[0, 14, 14] == 255 and light.pixels[0, 0, 0] == 0


def test_a_transparent_image_is_prepared_in_a_few_bytes_per_pixel(monkeypatch):
    """A 0.18 MB 7000 x 7000 RGBA PNG took 14 s and 5.7 GB: compositing and the inversion's luminance were float64
    copies of the whole image (~100 bytes per pixel)."""
    import tracemalloc

    from cadp import uploads

    monkeypatch.setattr(uploads, "PIXELS_AT_ONCE", 2**14)  # bands small next to this test's image
    side = 1000
    y, x = np.mgrid[0:side, 0:side]
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., 0], rgba[..., 1] = x * 255 // side, y * 255 // side
    rgba[..., 3] = np.where((x - side / 2) ** 2 + (y - side / 2) ** 2 < (side / 3) ** 2, 255, x % 256)
    data = corpus.encode(Image.fromarray(rgba, mode="RGBA"), "PNG")
    del rgba, x, y
    for channels in (1, 3):
        tracemalloc.start()
        try:
            result = prepare(data, channels=channels)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert "transparency composited on white" in result.steps and result.inverted
        assert peak < 8 * side * side, f"{peak / side / side:.1f} bytes per pixel with {channels} channel(s)"


def test_animated_gif_uses_the_first_frame_and_says_so():
    result = prepare(corpus.animated_gif())
    assert "first frame of a 2-frame animated GIF" in result.steps
    assert result.pixels[0, 14, 14] == 255 and result.pixels[0, 0, 0] == 0  # frame 2 is all white


def test_exif_rotation_is_applied():
    result = prepare(corpus.exif_rotated_jpeg(), invert="never")
    assert "EXIF rotation applied" in result.steps
    assert result.preview.shape == (40, 20)  # stored 40x20 landscape, shown 20x40 portrait


@pytest.mark.parametrize("orientation", [9, 0])
def test_an_exif_orientation_that_is_none_is_not_said_to_be_applied(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    result = prepare(corpus.encode(Image.new("L", (40, 20), 128), "JPEG", exif=exif.tobytes()), invert="never")
    assert not any("EXIF" in step for step in result.steps) and result.preview.shape == (20, 40)


def test_a_phone_jpeg_with_a_preview_or_depth_map_is_its_main_image_not_a_series():
    """Pillow opens a JPEG with an MPF second image (a gain map, depth map or preview) as a 2-frame MPO: the page
    warned that only the first frame of a series was privatized and told the user to privatize the others."""
    from cadp.uploads import FIRST_FRAME

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="MPO", save_all=True, append_images=[photo.resize((20, 15))])
    result = prepare(buffer.getvalue(), invert="never")
    assert not any(step.startswith(FIRST_FRAME) for step in result.steps)
    assert any("main image" in step and "1 smaller or auxiliary image," in step for step in result.steps)
    assert result.preview.shape == (40, 30)


def test_one_pixel_image():
    result = prepare(corpus.png(np.array([[200]], np.uint8)))
    assert result.pixels.shape == (1, 28, 28)
    assert (result.pixels == 200).all() and not result.inverted


def test_huge_but_legal_image_gives_a_small_preview():
    data = corpus.encode(Image.new("L", (5000, 3000), 30), "PNG")
    result = prepare(data)
    assert result.pixels.shape == (1, 28, 28)
    assert max(result.preview.shape) == 1024
    assert "resized 5000x3000 -> 28x28 (aspect kept, padded)" in result.steps


def test_dicom_is_decoded_by_content_and_windowed():
    data = corpus.dicom()
    assert data[128:132] == b"DICM"
    result = prepare(data, image_size=32)
    assert result.pixels.shape == (1, 32, 32)
    assert result.pixels.max() == 255 and result.pixels[0, 0, 0] == 0
    assert any("DICOM 12-bit scaled to 8-bit" in step for step in result.steps), result.steps


def test_dicom_monochrome1_and_multiframe():
    flipped = prepare(corpus.dicom(monochrome1=True), image_size=32, invert="never")
    assert "MONOCHROME1 flipped so that 0 is black" in flipped.steps
    assert flipped.pixels[0, 0, 0] == 255
    frames = prepare(corpus.dicom(frames=3), image_size=32)
    assert "first frame of a 3-frame DICOM" in frames.steps


def test_compressed_dicom_without_decoder_is_a_clear_error():
    with pytest.raises(InputError, match="compressed with JPEG 2000.*cannot be decoded here"):
        prepare(corpus.dicom(compressed=True))


def test_dicom_without_pixels():
    data = corpus.dicom()
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data))
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(InputError, match="holds no image"):
        prepare(buffer.getvalue())


# --------------------------------------------------------------------------- images: hostile inputs

@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (corpus.truncated_png(), "truncated or corrupt"),
    (corpus.truncated_jpeg(), "truncated or corrupt"),
    (b"name,age\nalice,3\n", "not an image .*looks like a text file"),
    (b"%PDF-1.7 not really", "PDF"),
    (corpus.png_bomb(), "too large to decode safely .*decompression bomb.*50,000,000 pixels"),
    (corpus.png_bomb(9000, 9000), "9000x9000 = 81,000,000 pixels, more than the limit of 50,000,000"),
    (b"DICM" * 100, "the DICOM file (is truncated or corrupt|holds no image)"),
], ids=["empty", "truncated-png", "truncated-jpeg", "text", "pdf", "bomb", "bomb-below-pillow-limit", "fake-dicom"])
def test_hostile_images_raise_input_error(data, message):
    with pytest.raises(InputError, match=message):
        prepare(data, filename="upload.dcm" if data.startswith(b"DICM") else "upload.png")


def test_a_file_of_nul_bytes_is_not_called_a_text_file():
    with pytest.raises(InputError, match="not an image") as failure:
        prepare(b"\x00" * 1000)
    assert "text" not in str(failure.value)


def test_text_named_dcm_is_refused():
    with pytest.raises(InputError, match="DICOM"):
        prepare(b"just text, not a scan", filename="scan.dcm")


def test_pillow_bomb_check_is_turned_into_input_error(monkeypatch):
    # Pillow's own limit (below ours here) raises DecompressionBombError: it must not escape raw
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InputError, match="decompression bomb"):
        prepare(corpus.png(np.zeros((20, 20), np.uint8)))


@pytest.mark.parametrize("options, message", [
    ({"invert": "sometimes"}, "invert must be one of auto, always, never"),
    ({"channels": 2}, "channels must be 1 or 3"),
])
def test_bad_options(options, message):
    with pytest.raises(InputError, match=message):
        prepare(corpus.png(corpus.digit()), **options)


def test_png_bytes_round_trip():
    pixels = np.arange(28 * 28, dtype=np.float64).reshape(1, 28, 28) % 256
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(pixels))))
    assert decoded.shape == (28, 28) and (decoded == pixels[0]).all()
    colour = np.zeros((3, 16, 16), np.uint8)
    colour[2] = 255
    assert np.asarray(Image.open(io.BytesIO(png_bytes(colour))))[0, 0].tolist() == [0, 0, 255]


# --------------------------------------------------------------------------- ZIP archives

def test_zip_nested_folders_non_images_and_unsafe_names():
    image = corpus.png(corpus.digit())
    data = corpus.zip_bytes({
        "digits/3/a.png": image,
        "digits/7/deep/b.png": image,
        "digits/notes.txt": b"hello",
        "../evil.png": image,
        "/etc/abs.png": image,
        "C:\\win\\c.png": image,
        "__MACOSX/digits/._a.png": b"junk",
        "digits/.DS_Store": b"junk",
        "digits/3/Thumbs.db": b"junk",
        "secret.png": image,
        "more/inner.zip": corpus.zip_bytes({"c.png": image}),
    }, encrypted=("secret.png",))
    results = dict(iter_zip_images(data))
    assert results["digits/3/a.png"] == image
    assert results["digits/7/deep/b.png"] == image
    assert "not an image" in str(results["digits/notes.txt"])
    # named as the ZIP names them: cleaned, '/digits/3/a.png' would read as another member's name
    assert "unsafe path" in str(results["../evil.png"])
    assert "unsafe path" in str(results["/etc/abs.png"])
    assert "unsafe path" in str(results["C:\\win\\c.png"])
    assert "encrypted" in str(results["secret.png"])
    assert "a ZIP inside the ZIP: nested archives are not read" in str(results["more/inner.zip"])
    assert not any(name.startswith("__MACOSX") for name in results)
    # a name that is not safe under an output folder comes only with its error, never with bytes to write
    assert all(isinstance(item, Exception) for name, item in results.items() if sanitize_member_name(name)[1])
    assert len(results) == 8


def test_a_zip_member_without_a_suffix_is_read_when_its_content_is_dicom():
    """PACS exports name files IM0001: in a ZIP they were "not an image", though a folder reads them."""
    dicom = corpus.dicom()
    png, jpeg = corpus.png(corpus.digit()), corpus.encode(Image.fromarray(corpus.digit()), "JPEG")
    results = dict(iter_zip_images(corpus.zip_bytes({"scans/1/IM0001": dicom, "scans/1/NOTES": b"no image" * 40,
                                                     "scans/1/scan": png, "scans/1/photo.dat": jpeg})))
    assert results["scans/1/IM0001"] == dicom
    assert "not an image" in str(results["scans/1/NOTES"])
    assert results["scans/1/scan"] == png and results["scans/1/photo.dat"] == jpeg  # were "not an image"


def test_sanitize_member_name():
    assert sanitize_member_name("a/./b/../c.png") == ("a/b/c.png", True)
    assert sanitize_member_name("ok/x.png") == ("ok/x.png", False)
    assert sanitize_member_name("bad\x00name.png") == ("badname.png", False)


def test_zip_bomb_stops_with_a_clear_error():
    zeros = b"\x00" * 2_000_000  # compresses to ~2 kB
    data = corpus.zip_bytes({"a.png": zeros, "b.png": zeros})
    assert len(data) < 20_000
    with pytest.raises(InputError, match="zip bomb"):
        list(iter_zip_images(data, max_total_bytes=3_000_000))


def test_an_upload_decodes_at_most_its_pixel_budget_in_all():
    """A ZIP of 800 solid 7000 x 7000 PNGs (64 kB each) passed every limit and took ~15 minutes of CPU to decode."""
    from cadp.ui import KeptFile, image_records_from_uploads

    solid = corpus.encode(Image.new("L", (300, 200), 20), "PNG")
    assert prepare(solid).decoded_pixels == 60_000
    archive = corpus.zip_bytes({f"{i}.png": solid for i in range(3)})
    files = [KeptFile("one.png", solid, len(solid)), KeptFile("more.zip", archive, len(archive))]
    records, problems = image_records_from_uploads(files, image_size=28, channels=1, invert="auto",
                                                   max_pixels=150_000)
    assert [r.name for r in records] == ["one.png", "more.zip/0.png", "more.zip/1.png"]  # the last one crossed it
    assert problems == [("", "This upload's images hold more than 150,000 pixels in all, the most one upload may "
                             "decode (the model reads them at 28x28: downscale them before uploading, or upload "
                             "fewer at a time); 1 image past it was skipped")]
    records, problems = image_records_from_uploads(files, image_size=28, channels=1, invert="auto",
                                                   max_pixels=240_000)
    assert len(records) == 4 and not problems


def test_a_failed_decode_costs_the_pixel_budget_its_declared_size():
    """A ZIP of 2,000 truncated 7000 x 7000 PNGs (1.4 MB) cost ~0.5 s each to fail on, and nothing of the budget."""
    from cadp.ui import KeptFile, image_records_from_uploads

    noise = np.random.default_rng(0).integers(0, 256, (200, 300), dtype=np.uint8)
    truncated = corpus.encode(Image.fromarray(noise, mode="L"), "PNG")[:-2000]
    with pytest.raises(InputError, match="truncated") as failure:
        prepare(truncated)
    assert failure.value.decoded_pixels == 60_000
    archive = corpus.zip_bytes({f"{i}.png": truncated for i in range(4)})
    records, problems = image_records_from_uploads([KeptFile("cut.zip", archive, len(archive))], image_size=28,
                                                   channels=1, invert="auto", max_pixels=150_000)
    assert not records and len(problems) == 4
    assert all("truncated" in what for _, what in problems[:3])  # the third crossed the budget
    assert problems[3][1].endswith("1 image past it was skipped")


def test_a_zip_stopped_at_its_size_limit_says_its_first_images_are_used(monkeypatch):
    """It said "Skipped mixed.zip: ... stopped reading it" although the images read before the limit were used."""
    import functools

    from cadp import uploads
    from cadp.ui import KeptFile, image_records_from_uploads, problem_text

    image = corpus.encode(Image.new("L", (30, 30), 20), "PNG")
    archive = corpus.zip_bytes({"a.png": image, "b.png": image, "c.png": b"x" * 3000})
    monkeypatch.setattr(uploads, "iter_zip_images",
                        functools.partial(uploads.iter_zip_images, max_total_bytes=2 * len(image) + 100))
    records, problems = image_records_from_uploads([KeptFile("mixed.zip", archive, len(archive))], image_size=28,
                                                   channels=1, invert="auto")
    assert [record.name for record in records] == ["mixed.zip/a.png", "mixed.zip/b.png"]
    assert [problem_text(*problem) for problem in problems] == [
        "mixed.zip: the ZIP expands to more than 0 MB of files (the limit; a zip bomb?); stopped reading it after its "
        "first 2 images, which are used; the rest skipped"]


def test_zip_member_larger_than_the_per_file_limit_is_skipped():
    data = corpus.zip_bytes({"big.png": b"\x00" * 500_000, "ok.png": b"x"})
    results = dict(iter_zip_images(data, max_file_bytes=100_000))
    assert "more than the limit" in str(results["big.png"]) and results["ok.png"] == b"x"


def test_zip_with_too_many_files_and_non_zip():
    data = corpus.zip_bytes({f"{i}.png": b"x" for i in range(5)})
    with pytest.raises(InputError, match="holds 5 files, more than the limit of 4"):
        list(iter_zip_images(data, max_files=4))
    with pytest.raises(InputError, match="not a ZIP archive"):
        list(iter_zip_images(b"not a zip"))
    with pytest.raises(InputError, match="empty"):
        list(iter_zip_images(b""))


def test_zip_is_read_from_a_file_object_member_by_member():
    buffer = io.BytesIO(corpus.zip_bytes({"a/1.png": b"one", "a/2.png": b"two"}))
    assert list(iter_zip_images(buffer)) == [("a/1.png", b"one"), ("a/2.png", b"two")]


def test_damaged_member_is_reported_not_raised():
    good = corpus.zip_bytes({"a.png": b"A" * 1000, "b.png": b"B" * 1000})
    raw = bytearray(good)
    # corrupt the deflate stream of the first member (its data starts after the 30-byte header + name)
    raw[36:46] = b"\xff" * 10
    results = dict(iter_zip_images(bytes(raw)))
    assert isinstance(results["a.png"], InputError) and "damaged" in str(results["a.png"])
    assert results["b.png"] == b"B" * 1000
    assert zipfile.is_zipfile(io.BytesIO(bytes(raw)))


# --------------------------------------------------------------------------- CSV

def test_csv_utf8_bom_semicolon_and_quoted_newlines():
    data = '\ufeffname;note;age\n"Zoë";"line one\nline two";31\n"Ana";"x";40\n'.encode()
    upload = read_csv_upload(data)
    assert upload.encoding == "utf-8-sig" and upload.delimiter == ";"
    assert list(upload.frame.columns) == ["name", "note", "age"]
    assert upload.frame.loc[0, "note"] == "line one\nline two" and upload.frame.loc[0, "name"] == "Zoë"
    assert upload.frame["age"].tolist() == [31, 40]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_sniffing(delimiter):
    data = delimiter.join(["a", "b", "c"]) + "\n" + "\n".join(
        delimiter.join([str(i), f"{i}.5", "x,y" if delimiter != "," else "xy"]) for i in range(5))
    upload = read_csv_upload(data.encode())
    assert upload.delimiter == delimiter and upload.frame.shape == (5, 3)


def test_a_csv_with_carriage_returns_only_as_line_ends_is_read():
    """Old Mac files and Excel's "CSV (Macintosh)" end lines with CR alone: "the CSV header row cannot be read"."""
    upload = read_csv_upload(b"age,sex,bmi\r50,1,22\r60,2,23\r")
    assert list(upload.frame.columns) == ["age", "sex", "bmi"] and upload.frame["bmi"].tolist() == [22, 23]
    quoted = read_csv_upload(b'name;note;n\r"Ana";"one\rtwo";1\r"Bo";"say ""hi""";2')  # CR in a quoted cell
    assert quoted.delimiter == ";" and quoted.frame["note"].tolist() == ["one\rtwo", 'say "hi"']
    assert quoted.frame["n"].tolist() == [1, 2]
    # Excel's line break inside a cell is a line feed, in a file whose lines end in carriage returns alone
    broken = read_csv_upload(b'a,b\r1,"x\ny"\r2,z\r3,w\r')
    assert broken.frame["b"].tolist() == ["x\ny", "z", "w"] and broken.frame["a"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("hint", [b"sep=;\r\n", b"SEP=;\n", b'"sep=;"\n'])
def test_an_excel_separator_line_gives_the_separator_and_is_not_the_header(hint):
    upload = read_csv_upload(hint + b"age;note\n50;a,b\n60;c,d\n")  # commas in cells: sniffing might choose them
    assert upload.delimiter == ";" and list(upload.frame.columns) == ["age", "note"]
    assert upload.frame["note"].tolist() == ["a,b", "c,d"] and not upload.notes
    assert read_csv_upload(b"sep=\t\na\tb\n1\t2\n").frame.columns.tolist() == ["a", "b"]
    with pytest.raises(InputError, match="asks for the separator ':'"):
        read_csv_upload(b"sep=:\na:b\n1:2\n")


def test_a_file_that_is_not_utf8_is_read_as_windows_1252_else_latin1_and_noted():
    """Spreadsheets on Windows write Windows-1252: read as Latin-1, its euro sign and quotes were control
    characters. Latin-1 stays for the five bytes Windows-1252 leaves undefined."""
    upload = read_csv_upload("city,price\nMünchen,1 €\n“Köln”,2 €\n".encode("cp1252"))
    assert upload.encoding == "cp1252"
    assert upload.frame["city"].tolist() == ["München", "“Köln”"] and upload.frame["price"].tolist() == ["1 €", "2 €"]
    assert "not valid UTF-8; read as Windows-1252" in upload.notes[0]
    upload = read_csv_upload("city,n\nMünchen,1\n".encode("latin-1") + b"K\x81ln,2\n")
    assert upload.encoding == "latin-1" and "not valid UTF-8; read as Latin-1" in upload.notes[0]
    assert upload.frame["city"].tolist() == ["München", "K\x81ln"]


def test_duplicate_and_blank_column_names_are_renamed_with_a_note():
    upload = read_csv_upload(b"a,a,,b\n1,2,3,4\n5,6,7,8\n")
    assert list(upload.frame.columns) == ["a", "a_2", "column_3", "b"]
    assert any("duplicate column name 'a'" in note for note in upload.notes)
    assert any("column 3 has no name" in note for note in upload.notes)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"   \n\n", "empty"),
    (b"a,b,c\n", "header but no data rows"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary, not a CSV"),
    (b"a,b\n1,2\n3,4,5,6\n", "more fields than its header .*data row 2,"),
], ids=["empty", "blank", "header-only", "binary", "ragged"])
def test_hostile_csv_raises_input_error(data, message):
    with pytest.raises(InputError, match=message):
        read_csv_upload(data)


@pytest.mark.parametrize("data", [
    b"50,1,22.5,0.9\n60,2,23.1,1.1\n",  # the first record where the names belong
    b"50;1;22,5;x\n60;2;23,1;y\n",  # decimal commas, a text cell among numbers
    b"7\n8\n",  # one column
    b"a,-3,1e3\n",
], ids=["numbers", "decimal-commas", "one-column", "two-of-three"])
def test_a_csv_whose_first_row_is_data_is_refused(data):
    """Read as column names, a headerless file's first record became the download's header row (its values
    released as they were) and was missing from the release."""
    with pytest.raises(InputError, match=r"the first row looks like data, not column names \(\d of its \d cells are "
                                         r"numbers\): add a header row"):
        read_csv_upload(data)


def test_a_header_with_a_few_number_names_is_still_a_header():
    upload = read_csv_upload(b"region,sex,2019,2020,total\nnorth,f,1,2,3\nsouth,m,4,5,9\n")
    assert list(upload.frame.columns) == ["region", "sex", "2019", "2020", "total"]
    assert len(upload.frame) == 2
    upload = read_csv_upload(b"age,inf,nan\n1,2,3\n")  # not finite numbers: names
    assert list(upload.frame.columns) == ["age", "inf", "nan"]


def test_one_column_constant_and_all_nan_columns():
    upload = read_csv_upload(b"x,empty,same,seven\n1,,k,7\n2,,k,7\n3,,k,7\n")
    assert list(upload.frame.columns) == ["x", "same", "seven"]
    assert any("'empty' is empty in every row: dropped" in note for note in upload.notes)
    assert any("'same' has one value ('k')" in note and "kept" in note for note in upload.notes)
    assert any("'seven' has one value (7) in every row" in note for note in upload.notes), upload.notes
    single = read_csv_upload(b"only\n1\n2\n")
    assert single.frame.shape == (2, 1)


def test_numbers_that_are_not_finite_are_read_as_empty_and_noted():
    """inf, -inf or 1e400 in a table fitted here broke the fit ("Something went wrong (OverflowError)")."""
    upload = read_csv_upload(b"age,bmi,crp\n50,inf,1\n60,22.5,2\n70,1e400,3\n80,-inf,4\n")
    assert upload.frame["bmi"].isna().tolist() == [True, False, True, True]
    assert upload.frame["crp"].tolist() == [1, 2, 3, 4]
    assert ("column 'bmi' has 3 cells that are not finite numbers (inf, -inf, or too large, such as 1e400): read "
            "as empty (a release fills them)") in upload.notes
    european = read_csv_upload(b"a;b\n1,5;1\n2,5;inf\n3,5;2\n")  # decimal commas and an infinite cell
    assert european.frame["b"].isna().sum() == 1 and any("'b' has 1 cell that is not a finite" in n
                                                         for n in european.notes)


def test_mixed_types_are_noted():
    upload = read_csv_upload(b"v,w\n1,a\n2,b\nthree,c\n4,d\n")
    assert any("'v' mixes numbers and text" in note for note in upload.notes)
    # a column the chosen model takes as numbers is read as numbers: "treated as categories" was not what it does
    upload = read_csv_upload(b"v,w\n1,a\n2,b\n?,c\n4,d\n", number_columns=["v"])
    assert upload.frame["v"].isna().tolist() == [False, False, True, False]
    assert upload.notes == ["column 'v' holds the chosen model's numbers; 1 cell that is not a number ('?') read "
                            "as empty (a number column of the model reads an empty cell as the mean stored in the model, said "
                            "before Privatize; a column of categories cannot release one)"]


def test_a_models_number_column_with_decimal_commas_and_a_few_words_is_read_as_numbers():
    """A semicolon file whose bmi had '?' in 2 of 10 rows kept every '25,5' as text (fewer than 90% numbers), and the
    table then did not fit the model whose number column it is; the same column with decimal points was read as
    numbers. A chosen model's number columns are read cell by cell from half of them numbers, as with points."""
    cells = ["25,5", "31,2", "?", "22,0", "27,8", "?", "24,1", "29,9", "30,3", "26,6"]
    data = ("age;bmi\n" + "".join(f"{40 + i};{cell}\n" for i, cell in enumerate(cells))).encode()
    chosen = read_csv_upload(data, number_columns={"age", "bmi"})
    assert chosen.frame["bmi"].dtype == np.float64 and chosen.decimal == ","
    assert chosen.frame["bmi"].isna().tolist() == [cell == "?" for cell in cells]
    assert chosen.frame["bmi"].dropna().tolist() == [25.5, 31.2, 22.0, 27.8, 24.1, 29.9, 30.3, 26.6]
    assert chosen.notes == ["column 'bmi' has numbers with a decimal comma (e.g. '25,5'): read as decimal numbers; 2 "
                            "cells that are not numbers ('?') read as empty (a number column of the model reads an "
                            "empty cell as the mean stored in the model, said before Privatize; a column of categories cannot "
                            "release one)"]
    pointed = read_csv_upload(data.replace(b",", b"."), number_columns={"age", "bmi"})
    assert pointed.frame["bmi"].equals(chosen.frame["bmi"])  # the same cells with points: the same numbers
    # without a model the cells decide: 80% numbers is not a column of numbers with a few words
    alone = read_csv_upload(data)
    assert not pd.api.types.is_numeric_dtype(alone.frame["bmi"]) and alone.decimal == "."
    # a model's number column of mostly words stays as written, and says why the table does not fit
    words = read_csv_upload(b"age;bmi\n40;high\n41;low\n42;25,5\n", number_columns={"age", "bmi"})
    assert words.frame["bmi"].tolist() == ["high", "low", "25,5"]
    assert any("one of the chosen model's number columns, but 2 of its 3 cells are not numbers" in note
               for note in words.notes)


def test_a_models_number_cell_reads_the_same_whatever_another_row_holds():
    """In a semicolon file, 1 234 and 1.234.567 in a model's number column were numbers only where another row had a
    decimal comma (the column then went through the cell-by-cell reader), else empty: a cell's value depended on
    another record."""
    for cell, value in (("1 234", 1234.0), ("1.234.567", 1234567.0), ("1.234,5", 1234.5), ("12.500", 12.5)):
        last = []
        for other in ("50", "50,5", "50.5"):
            rows = ["25", "30", cell, "?", "40", "?", "35", "?", "45", other]
            data = ("age;income\n" + "".join(f"{40 + i};{v}\n" for i, v in enumerate(rows))).encode()
            frame = read_csv_upload(data, number_columns={"age", "income"}).frame
            assert frame["income"][2] == value, (cell, other, frame["income"].tolist())
            last.append(frame["income"][:9].tolist())
        assert all(np.allclose(x, last[0], equal_nan=True) for x in last), (cell, last)


def test_commas_that_may_separate_thousands_are_noted():
    """A tab file of US thousands (1,234) in a model's number column is read with decimal commas (1.234), as
    documented: every comma there has three digits after it, so the page says how it was read."""
    upload = read_csv_upload(b"age\tincome\n40\t1,234\n41\t2,500\n42\t?\n43\t3,100\n44\t12\n",
                             number_columns={"age", "income"})
    assert upload.frame["income"].tolist()[:2] == [1.234, 2.5]
    assert ("column 'income': each of its 3 numbers with a comma has three digits after the comma (e.g. '1,234'), "
            "read as a decimal comma (1.234); if the commas separate thousands, save the file without thousands "
            "separators (1234)") in upload.notes
    # said once: not also listed among the columns read with decimal commas, with 1,234 as the example
    assert not any("'1,234'" in note for note in upload.notes if not note.startswith("column 'income':"))
    alone = read_csv_upload(b"age;income\n40;1,234\n41;2,500\n", number_columns={"age", "income"})  # no cell lost
    assert len(alone.notes) == 1 and alone.notes[0].startswith("column 'income': each of its 2 numbers"), alone.notes
    beside = read_csv_upload(b"age;income;bmi\n40;1,234;25,5\n41;2,500;26,5\n", number_columns={"age", "income", "bmi"})
    assert "column 'bmi' has numbers with a decimal comma (e.g. '25,5'): read as decimal numbers" in beside.notes
    assert not any("'income'" in note for note in beside.notes if "have numbers with a decimal comma" in note)
    for cells in (b"1,234\n41;0,92\n42;1,100", b"0,125\n41;0,250\n42;0,500"):  # 0,92 or 0,125: decimal commas
        european = read_csv_upload(b"age;crea\n40;" + cells + b"\n", number_columns={"age", "crea"})
        assert not any("three digits after the comma" in note for note in european.notes), european.notes
    # a dropped column is not named among the columns read with decimal commas either
    two = read_csv_upload(b"age;bmi;phone\n40;25,5;1,23\n41;26,5;2,50\n42;27,5;3,10\n43;22,5;4,25\n",
                          number_columns={"age", "bmi"})
    assert "column 'bmi' has numbers with a decimal comma (e.g. '25,5'): read as decimal numbers" in two.notes
    assert [note for note in two.notes if "'phone'" in note] == [
        next(note for note in two.notes if "named like personal data" in note)], two.notes
    # in a comma-separated file a model's number written with a comma is read as empty, and the note says why
    quoted = read_csv_upload(b'age,sex,bmi\n40,1,"25,125"\n41,2,26.5\n42,1,27.5\n43,1,"1,234"\n44,2,22.1\n',
                             number_columns={"age", "bmi"})
    assert quoted.notes[0].startswith("column 'bmi' holds the chosen model's numbers (2 cells written with a comma, "
                                      "such as '25,125', which in a comma-separated file may be a decimal comma or a "
                                      "thousands separator: save the file semicolon-separated"), quoted.notes
    # most of the column written so: the table does not fit, and the note says why; thousands too are counted
    most = read_csv_upload(b'age,sex,bmi\n40,1,"1,234,567"\n41,2,"26,5"\n42,1,"1,234.5"\n43,1,22.1\n',
                           number_columns={"age", "bmi"})
    assert "but 3 of its 4 cells are not numbers (3 cells written with a comma, such as '1,234,567', which in a " \
           "comma-separated file may be a decimal comma" in most.notes[0], most.notes
    lists = read_csv_upload(b'age,sex,bmi\n40,1,"1,2,3"\n41,2,"26,5"\n42,1,kg\n43,1,22.1\n', number_columns={"age", "bmi"})
    assert "(e.g. '1,2,3'; 1 cell written with a comma, such as '26,5'," in lists.notes[0], lists.notes
    # a model's categories written as text with a comma stay as written (1,5 is the category, not 1.5)
    grades = read_csv_upload(b"age;grade\n40;1,5\n41;2,5\n42;3,5\n", text_columns={"grade"}, number_columns={"age"})
    assert grades.frame["grade"].tolist() == ["1,5", "2,5", "3,5"] and grades.notes == []
    # every decimal-comma column dropped: the error lists the drops, not how their numbers were read
    with pytest.raises(InputError) as refused:
        read_csv_upload(b"phone;email\n1,23;4,5\n2,50;5,5\n3,10;6,5\n")
    assert "decimal comma" not in str(refused.value), refused.value
    # a column dropped as personal data keeps one note, its drop (not how its numbers were read)
    phone = read_csv_upload(b"age;phone\n40;1,234\n41;2.500\n42;3,100\n43;4,250\n", number_columns={"age"})
    assert [note for note in phone.notes if "'phone'" in note] == [
        next(note for note in phone.notes if "named like personal data" in note)], phone.notes


def test_a_first_row_shifted_by_a_typed_separator_is_refused_even_with_an_empty_last_field():
    """22,5 typed 22;5 in the first data row, its last field empty: pandas said nothing and the row was read
    shifted (bmi 22, bp 5); rows that all end in a separator are still read in their columns."""
    with pytest.raises(InputError, match=r"1 row of the CSV has more fields than its header \(4 columns, "
                                         r"semicolon-separated; data row 1, counting"):
        read_csv_upload(b"age;sex;bmi;bp\n50;1;22;5;\n60;2;23,5;80\n61;1;24,5;81\n")
    every = read_csv_upload(b"age;sex;bmi;bp\n50;1;22,5;5;\n60;2;23,5;80;\n61;1;24,5;81;\n")
    assert every.frame["bmi"].tolist() == [22.5, 23.5, 24.5] and every.frame["bp"].tolist() == [5, 80, 81]


def test_rows_ending_in_a_separator_are_the_exports_only_where_they_are_more_than_half():
    """4 rows that fit, 3 ending in ';' and 3 in ';;': no length is most rows, so all 6 longer rows are named (3 were,
    the 12-field ones taken for the export's); a tie between lengths no longer depends on which came first."""
    from cadp.uploads import rows_against_header

    def longer(text: str) -> tuple[int, list[int]]:
        _, _, count, rows = rows_against_header(io.StringIO(text, newline=""), ";")
        return count, [row for row, _, _ in rows]

    assert longer("a;b\n" + "1;2\n" * 4 + "1;2;\n" * 3 + "1;2;;\n" * 3) == (6, [5, 6, 7, 8, 9])
    assert longer("a;b\n1;2;\n3;4;;\n7;8;\n9;10;;\n") == (4, [1, 2, 3, 4])
    assert longer("a;b\n" + "1;2;\n" * 3 + "1;2\n") == (0, [])  # a row added by hand without it
    assert longer("a;b\n" + "1;2;\n" * 3 + "1;2;;\n") == (1, [4])  # one longer than the export's rows


def test_a_models_number_column_of_many_distinct_values_and_one_word_is_kept():
    """One '?' among 260 distinct bmi values made the model's number column a column of text with over 200 distinct
    values, dropped as an identifier (with decimal commas it was kept): the table then did not fit the model."""
    for mark in (".", ","):
        rows = "".join(f"{40 + i % 30};1;{(20 + i * 0.05):.2f}\n".replace(".", mark) for i in range(260))
        data = ("age;sex;bmi\n" + rows + "50;1;?\n").encode()
        upload = read_csv_upload(data, number_columns={"age", "bmi"})
        assert list(upload.frame.columns) == ["age", "sex", "bmi"], (mark, upload.notes)
        assert upload.frame["bmi"].isna().sum() == 1 and upload.frame["bmi"].dtype == np.float64


def test_a_text_column_named_like_personal_data_is_dropped_however_few_its_values():
    """A surname column of 15 values over 60 rows was kept as categories: a model fitted on the table stored the
    surnames and released them."""
    rows = "\n".join(f"{['Smith', 'Jones', 'Brown'][i % 3]},{['a@x.org', 'b@y.org', 'c@z.org'][i % 3]},"
                     f"{['A', 'B'][i % 2]},{['aspirin', 'ibuprofen'][i % 2]},{['home', 'work'][i % 2]},"
                     f"{['yes', 'no'][i % 2]},{i % 2}" for i in range(60))
    upload = read_csv_upload(("Surname,email_address,ward,drug_name,address_type,has_phone,sex\n" + rows
                              + "\n").encode())
    assert list(upload.frame.columns) == ["ward", "drug_name", "address_type", "has_phone", "sex"]
    assert any(note.startswith("column 'Surname' is named like personal data ('surname'; 3 distinct values): "
                               "treated as an identifier") and note.endswith("dropped") for note in upload.notes)
    assert any(note.startswith("column 'email_address' is named like personal data") for note in upload.notes)
    kept = read_csv_upload(("surname,sex\n" + "\n".join(f"{['Smith', 'Jones'][i % 2]},{i % 2}" for i in range(9))
                            + "\n").encode(), text_columns={"surname"})  # a chosen model's own text column
    assert "surname" in kept.frame.columns


def test_rows_of_separators_only_are_dropped_with_a_note():
    """A spreadsheet's trailing ",,,," rows were read as a record of empty cells (the table then fit no model)."""
    upload = read_csv_upload(b"a,b\n1,x\n,\n2,y\n,\n")
    assert upload.frame["a"].tolist() == [1, 2] and upload.frame.index.tolist() == [0, 1]
    assert upload.frame["a"].dtype == np.int64  # whole numbers, as the other rows wrote them (not 1.0, 2.0)
    # a blank row in the middle: codes read as written stay on their own rows
    coded = read_csv_upload(b"zip,age,sex\n02134,40,m\n,,\n02139,50,f\n02140,60,m\n").frame
    assert coded["zip"].tolist() == ["02134", "02139", "02140"] and coded["age"].tolist() == [40, 50, 60]
    assert upload.notes[0] == "2 rows with every cell empty (data rows 2, 4, counting from 1 below the header): dropped"
    with pytest.raises(InputError, match="every data row of the CSV is empty"):
        read_csv_upload(b"a,b\n,\n,\n")


def test_codes_with_leading_zeros_stay_codes():
    codes = ["038.9", "250.00", "401.9", "008.45"]
    lines = ["zip;icd;ward;dose"] + [f"{2100 + i:05d};{codes[i % 4]};{i % 3 + 1:02d};{i % 5},5" for i in range(40)]
    upload = read_csv_upload(("\n".join(lines) + "\n").encode())
    frame = upload.frame
    assert sorted(frame["icd"].unique()) == sorted(codes)  # read as numbers: 38.9, 250.0, 401.9, 8.45
    assert sorted(frame["ward"].unique()) == [1, 2, 3]  # two digits: an hour or a ward 08 is no code
    assert any("'icd' holds codes written with a leading zero (e.g. '038.9')" in note for note in upload.notes)
    # 40 distinct five-digit codes: read as text they are identifiers (ZIP codes), not a measurement 2100-2139
    assert "zip" not in frame and any("'zip' has 40 distinct text values in 40 rows: treated as an identifier"
                                      in note for note in upload.notes)  # one per row, not for their shape
    repeated = "\n".join(["zip,n"] + [f"{2100 + i % 30:05d},{i % 7}" for i in range(300)]) + "\n"
    assert read_csv_upload(repeated.encode()).frame["zip"].nunique() == 30  # 30 ZIP codes: categories, kept
    padded = "\n".join(["v,w"] + [f"{i:07.2f},{'unknown' if i == 3 else f'{2100 + i % 10:05d}'}" for i in range(40)])
    padded = read_csv_upload((padded + "\n").encode())
    assert pd.api.types.is_float_dtype(padded.frame["v"])  # 0012.33: a zero-padded measurement
    assert padded.frame["w"].iloc[0] == "02100"  # codes with a word among them stay codes
    # a model's text categories are read as written, though these codes have no leading zero; its numbers never
    other = read_csv_upload(b"icd,n,zip\n250.00,1,02134\n401.9,2,10001\n", text_columns={"icd"},
                            number_columns={"zip"})
    assert other.frame["icd"].tolist() == ["250.00", "401.9"] and other.frame["zip"].tolist() == [2134, 10001]
    # zero-padded record numbers, one row per visit, are still identifiers; and one padded cell among record
    # numbers with letters does not make them codes
    visits = ["mrn,ref,age"] + [f"{7919 * i:010d},MRN{100000 + i},{20 + i % 50}" for i in range(60) for _ in range(3)]
    visits[5] = visits[5].replace(",MRN100001,", ",0012345,")
    notes = read_csv_upload(("\n".join(visits) + "\n").encode()).notes
    assert any("'mrn' has 60 distinct text values in 180 rows shaped like record numbers" in n for n in notes), notes
    assert any("'ref' has 61 distinct text values in 180 rows shaped like record numbers" in n for n in notes), notes
    assert not any("'ref' holds codes" in n for n in notes)
    assert frame["dose"].tolist()[:3] == [0.5, 1.5, 2.5]  # numbers are still numbers
    plain = read_csv_upload(b"a,b\n0.5,10\n1.5,20\n0,30\n")  # 0.5 and a lone 0 have no leading zero
    assert pd.api.types.is_float_dtype(plain.frame["a"]) and pd.api.types.is_integer_dtype(plain.frame["b"])


def test_column_limit_is_stated():
    header = ",".join(f"c{i}" for i in range(500))
    with pytest.raises(InputError, match="500 columns; at most 200 are supported"):
        read_csv_upload((header + "\n" + ",".join("1" * 500) + "\n").encode())


def test_row_limit_samples_with_a_fixed_seed():
    data = corpus.csv_rows(200_000)
    first = read_csv_upload(data)
    assert len(first.frame) == 100_000
    assert any("200,000 rows" in note and "sample of 100,000 rows (seed 0)" in note for note in first.notes)
    again = read_csv_upload(data)
    pd.testing.assert_frame_equal(first.frame, again.frame)


def test_identifier_column_with_many_categories_is_dropped():
    lines = ["id,value"] + [f"user-{i},{i % 3}" for i in range(10_000)]
    upload = read_csv_upload(("\n".join(lines) + "\n").encode())
    assert list(upload.frame.columns) == ["value"]
    assert any("'id' has 10,000 distinct text values" in note and "identifier and dropped" in note
               for note in upload.notes)


def test_text_columns_that_identify_rows_are_dropped_in_small_tables_too():
    rows = [f"P{100 + i},MRN-{4000 + 7 * i},Patient {i} Surname,{['flu', 'cold', 'ok'][i % 3]},{30 + i % 40}"
            for i in range(60)]
    upload = read_csv_upload(("patient_id,mrn,name,diagnosis,age\n" + "\n".join(rows) + "\n").encode())
    assert list(upload.frame.columns) == ["diagnosis", "age"]
    assert sum("treated as an identifier (names, record numbers, dates) and dropped" in n for n in upload.notes) == 3
    # one row per visit: each patient three times (under half distinct), yet names, record numbers and dates
    visits = [f"Patient {i // 3} Surname,MRN{100000 + i // 3},2024-{1 + i % 12:02d}-{1 + i // 12:02d},"
              f"{['flu', 'cold', 'ok'][i % 3]},{30 + i % 40}" for i in range(120)]
    upload = read_csv_upload(("name,mrn,admission,diagnosis,age\n" + "\n".join(visits) + "\n").encode())
    assert list(upload.frame.columns) == ["name", "diagnosis", "age"]
    assert any("'mrn' has 40 distinct text values in 120 rows shaped like record numbers (e.g. 'MRN100000')" in n
               for n in upload.notes), upload.notes
    assert any("'admission' has 120 distinct" in n and "dropped" in n for n in upload.notes)
    assert any("'name' has 40 distinct text values: kept as categories" in n and "remove the column" in n
               for n in upload.notes)
    # whole numbers, a different one per row, under an ID's name are dropped (a fitted model would release made-up
    # IDs beside other records' values); others are kept with a note (ages 20-59 run without a gap too), and so is
    # a chosen model's column
    numbered = read_csv_upload(("record,x\n" + "\n".join(f"{1000 + i},{i % 3}" for i in range(30)) + "\n").encode())
    assert list(numbered.frame.columns) == ["x"]
    assert any("'record' has a different whole number in every row and its name says 'record': treated as an "
               "identifier (record numbers) and dropped" in note for note in numbered.notes)
    ages = read_csv_upload(("age,x\n" + "\n".join(f"{20 + i},{i % 3}" for i in range(30)) + "\n").encode())
    assert list(ages.frame.columns) == ["age", "x"]
    assert any(note.startswith("column 'age' has a different whole number in every row, running from 20 to 49 "
                               "without a gap: if it is a record number or an ID, remove it") for note in ages.notes)
    scattered = [7 * i * i + 3 for i in range(30)]  # distinct, with gaps
    named = read_csv_upload(("PatientID,RecordNo,chol,lipid,x\n" + "\n".join(
        f"{v},{v + 1},{v + 2},{v + 3},{i % 3}" for i, v in enumerate(scattered)) + "\n").encode())
    assert list(named.frame.columns) == ["chol", "lipid", "x"]
    assert any("'PatientID' has" in note and "its name says 'id'" in note and "rename it" in note
               for note in named.notes)
    assert any("'RecordNo' has" in note and "its name says 'record no'" in note for note in named.notes)
    # measurements that share a word with IDs are kept (and phone numbers written as digits are not)
    kept = read_csv_upload(("glycemic_index,case_count,NO2,num_steps,home_phone,x\n" + "\n".join(
        f"{v},{v + 1},{v + 2},{v + 3},{5550000 + v},{i % 3}" for i, v in enumerate(scattered)) + "\n").encode())
    assert list(kept.frame.columns) == ["glycemic_index", "case_count", "NO2", "num_steps", "x"]
    assert any(note.startswith("column 'home_phone' is named like personal data ('phone'; 30 distinct values)")
               for note in kept.notes)
    assert any(note.startswith("column 'chol' has a different whole number in every row: if it is a record")
               for note in named.notes)
    chosen = read_csv_upload(("record,x\n" + "\n".join(f"{1000 + i},{i % 3}" for i in range(30)) + "\n").encode(),
                             number_columns={"record"})
    assert list(chosen.frame.columns) == ["record", "x"]
    # few distinct values, or few rows: categories
    small = read_csv_upload(("code,x\n" + "\n".join(f"c{i},{i}" for i in range(15)) + "\n").encode())
    assert list(small.frame.columns) == ["code", "x"]


def test_load_table_reads_a_csv_as_an_upload_and_keeps_its_notes(tmp_path):
    from cadp.data import load_table

    path = tmp_path / "rows.csv"
    path.write_bytes(b"a;b;c\n1;x;\n2;y;\n")
    table = load_table(str(path))
    assert table.frame.shape == (2, 2) and table.name == "rows.csv"
    assert table.notes == ["column 'c' is empty in every row: dropped"]


# --------------------------------------------------------------------------- formula-safe export

def test_safe_csv_escapes_formulas_but_keeps_negative_numbers():
    frame = pd.DataFrame({
        "=name": ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rcr", "plain", "-"],
        "delta": [-1.5, -2, 3, 4, 5, 6, 7, 8],
        "count": [-3, 1, 2, 3, 4, 5, 6, 7],
    })
    text = safe_csv_bytes(frame).decode()
    back = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert list(back.columns) == ["'=name", "delta", "count"]
    assert back["'=name"].tolist()[:4] == ["'=HYPERLINK(\"http://x\")", "'+1+1", "'-2+3", "'@SUM(A1)"]
    assert back["'=name"].tolist()[4:] == ["'\tx", "'\rcr", "plain", "'-"]
    assert back["delta"].tolist()[0] == -1.5 and back["count"].tolist()[0] == -3
    assert text.split("\r\n")[1].endswith(",-1.5,-3")


def test_safe_csv_without_header_and_with_text_numbers():
    """A text cell that is a plain number is no formula: written as released, without an apostrophe."""
    frame = pd.DataFrame({"code": ["-5", "7", "+3.2", "-1,5", "-2+3"]})
    assert safe_csv_bytes(frame, header=False) == b"-5\r\n7\r\n+3.2\r\n\"-1,5\"\r\n'-2+3\r\n"


def test_a_release_says_how_many_cells_got_an_apostrophe_and_why():
    """A kept column of test results '+' and '-' came back as "'+" and "'-" without a word: kept conditions are
    released exactly, so the one change the CSV writer makes is said."""
    frame = pd.DataFrame({"result": ["+", "-", "+", "neg"], "delta": [-1.5, 2.0, -3.0, 4.0], "@x": ["a", "-5", "b", "c"]})
    assert escaped_csv(frame)[1] == 4  # three results and one column name; -1.5 and the text -5 are numbers
    data, _, _, note = release_csv(frame, {})
    assert data.decode().splitlines()[1] == "'+,-1.5,a"
    assert note.startswith("4 cells (or column names) are written with a leading apostrophe (')")
    assert "so that spreadsheet programs do not run them as formulas" in note
    assert "the value is otherwise as released" in note
    assert release_csv(frame[["delta"]], {})[3] is None
    assert escaped_cells_note(1).startswith("1 cell (or column name) is written")


def test_load_image_folder_decodes_through_to_model_input(tmp_path):
    from cadp.data import load_image_folder

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(3):
            (tmp_path / label / f"{index}.png").write_bytes(corpus.png(corpus.digit(40, 30, dark_on_light=True)))
    (tmp_path / "a" / "broken.png").write_bytes(b"nope")
    data = load_image_folder(tmp_path, "train", image_size=28)
    assert tuple(data.images.shape[1:]) == (1, 28, 28) and data.class_names == ["a", "b"]
    assert len(data) == 4 and data.images[0, 0, 0, 0] == 255  # (one of each class held out) invert="never": white stays


def test_an_image_folder_too_small_to_split_or_measure_is_a_plain_error_before_training(tmp_path, capsys):
    from cadp import train
    from cadp.data import load_image_folder

    (tmp_path / "one" / "a").mkdir(parents=True)
    (tmp_path / "one" / "a" / "0.png").write_bytes(corpus.png(corpus.digit(28, 28)))
    with pytest.raises(InputError, match="1 readable image"):
        load_image_folder(tmp_path / "one", "train")
    for label in ("a", "b"):  # 4 images: a held-out split of 1, no class with two held-out images
        (tmp_path / "few" / label).mkdir(parents=True)
        for index in range(2):
            (tmp_path / "few" / label / f"{index}.png").write_bytes(corpus.png(corpus.digit(28, 28)))
    code = train.main(["--dataset", str(tmp_path / "few"), "--out", str(tmp_path / "model"), "--steps", "1"])
    assert code == 2 and "held-out split" in capsys.readouterr().err
    assert not (tmp_path / "model" / "model.safetensors").exists()


def test_decimal_commas_in_semicolon_files_are_numbers():
    data = b"age;weight;code;note\n40;70,5;1,2;a,b\n51;82,25;3;c\n;68;4,0;d\n"
    upload = read_csv_upload(data)
    frame = upload.frame
    assert frame["weight"].dtype == np.float64 and frame["weight"].tolist() == [70.5, 82.25, 68.0]
    assert frame["code"].tolist() == [1.2, 3.0, 4.0]
    assert frame["note"].tolist() == ["a,b", "c", "d"]  # not numbers: left as text
    assert any("'weight'" in note and "decimal comma" in note for note in upload.notes)
    # in a comma-separated file a quoted "1,5" stays text: the comma may be a thousands separator; a note says so
    upload = read_csv_upload(b'a,b\n"1,5",1\n"2,5",2\n"3,5",3\n')
    assert not pd.api.types.is_numeric_dtype(upload.frame["a"])
    assert any("'a' holds numbers written with a comma (e.g. '1,5')" in note and "semicolon-separated" in note
               for note in upload.notes)


def test_numbers_with_spaces_between_thousands_are_numbers():
    """French spreadsheets write 341 088,0 with a no-break space (or a narrow one) between groups: read as text."""
    rows = ["ville;population;surface;code"] + [
        f"v{i};{i % 9 + 1}\u00a0{i:03d}\u00a0088,0;{i + 1}\u202f{i:03d},5;{i + 1}{' 2' if i == 3 else ''}"
        for i in range(30)]
    rows[6] = "v5;341 088,0;12,5;6"  # a plain space between groups of three digits: unambiguous
    upload = read_csv_upload(("\n".join(rows) + "\n").encode())
    frame = upload.frame
    assert frame["population"].dtype == np.float64 and frame["population"][1] == 2_001_088.0
    assert frame["population"][5] == 341_088.0 and frame["surface"][2] == 3_002.5
    # one note for the columns read whole (a European file had one per column)
    assert "columns 'population', 'surface' have numbers with a decimal comma (e.g. " in upload.notes[0]
    assert sum("decimal comma" in note for note in upload.notes) == 1
    assert frame["code"].isna().sum() == 0 and frame["code"][3] == "4 2"  # "4 2" is no number: the column is text
    assert read_csv_upload(b"a;b\n1 2345,5;x\n2,5;y\n3,5;z\n").frame["a"].tolist()[0] == "1 2345,5"


def test_a_dropped_column_of_comma_numbers_gets_one_note_that_says_it_was_dropped():
    """An income column of distinct quoted "30,840" got "read as text (categories)" and then "treated as an
    identifier and dropped": two notes that contradict each other."""
    rows = [f'{20 + i % 40},"{30 + i},{840 + i}",{["a", "b"][i % 2]}' for i in range(60)]
    upload = read_csv_upload(("age,income,group\n" + "\n".join(rows) + "\n").encode())
    assert list(upload.frame.columns) == ["age", "group"]
    income = [note for note in upload.notes if "'income'" in note]
    assert len(income) == 1, income
    assert income[0].startswith("column 'income' has 60 distinct text values in 60 rows") and "dropped" in income[0]
    assert "'30,840'" in income[0] and "thousands separator" in income[0]  # why the numbers were text
    assert "read as text (categories)" not in income[0]


def test_a_dropped_column_of_leading_zero_codes_gets_only_its_drop_note():
    """A column of distinct codes such as 01017 got "read as text (categories), not as numbers", then "dropped"."""
    rows = [f"{20 + i % 40},0{1000 + i},{'ab'[i % 2]}" for i in range(60)]
    upload = read_csv_upload(("age,zip,group\n" + "\n".join(rows) + "\n").encode())
    assert list(upload.frame.columns) == ["age", "group"]
    assert [note for note in upload.notes if "'zip'" in note] == [
        "column 'zip' has 60 distinct text values in 60 rows: treated as an identifier (names, record numbers, "
        "dates) and dropped"]
    kept = read_csv_upload(("zip,group\n" + "\n".join(f"0{1000 + i % 5},{'ab'[i % 2]}" for i in range(60))
                            + "\n").encode())  # a few codes: kept, and the note on reading them as text stays
    assert any(note.startswith("column 'zip' holds codes written with a leading zero") for note in kept.notes)


def test_numbers_with_a_few_words_are_numbers_and_european_numbers_in_every_form():
    rows = [f"{i};{i % 3};{'<0,5' if i == 7 else f'{i},5'};{'1.234,5' if i == 3 else f'{i},25e1'}" for i in range(30)]
    upload = read_csv_upload(("id;code;crp;big\n" + "\n".join(rows) + "\n").encode())
    crp, big = upload.frame["crp"], upload.frame["big"]
    assert crp.dtype == np.float64 and crp.isna().sum() == 1 and crp[8] == 8.5  # '<0,5' is not a number
    assert big[3] == 1234.5 and big[2] == 22.5  # a thousands separator; an exponent
    assert any("'crp' has numbers with a decimal comma" in n and "1 cell that is not a number ('<0,5') read as "
               "empty" in n for n in upload.notes), upload.notes
    lab = read_csv_upload(("crp,x\n" + "\n".join(f"{'<0.5' if i == 4 else i / 2},{i % 2}" for i in range(30))
                           + "\n").encode())
    assert lab.frame["crp"].dtype == np.float64 and lab.frame["crp"].isna().sum() == 1
    assert any("'crp' holds numbers; 1 cell that is not a number ('<0.5') read as empty" in n for n in lab.notes)
    codes = read_csv_upload(("icd,loinc,x\n" + "\n".join(
        f"{'V58.67' if i == 4 else f'{250 + i % 30}.{i % 10}'},{10000 + i % 25}-7,{i % 2}" for i in range(60))
        + "\n").encode())
    assert list(codes.frame.columns) == ["icd", "loinc", "x"]  # codes stay categories; lab codes are no record numbers
    assert codes.frame["icd"].tolist()[4] == "V58.67"


def test_a_download_is_written_in_the_uploads_format():
    """The decimal mark comes from the separator, never from the cells (a file of whole numbers has no decimal
    comma: a release written by its cells would tell that about its records)."""
    upload = read_csv_upload(b"age;weight;note\n40;70,5;=1+1\n51;82,25;ok\n")
    assert upload.csv_format == {"delimiter": ";", "decimal": ",", "encoding": None,
                                 "read": {"decimal": ",", "encoding": "utf-8"}}
    written, words, changed, _ = release_csv(upload.frame, upload.csv_format)
    assert written.decode() == "age;weight;note\r\n40;70,5;'=1+1\r\n51;82,25;ok\r\n"
    assert words == "semicolon-separated with decimal commas" and changed is None
    assert written_as(b"a;b\n1;2\n") == {"delimiter": ";", "decimal": ",", "encoding": None}
    assert written_as(b"a;b\n1.5;2\n") == {"delimiter": ";", "decimal": ",", "encoding": None}
    assert written_as(b"a\tb\n1,5\t2\n") == {"delimiter": "\t", "decimal": ".", "encoding": None}
    assert written_as(b"a,b\n1.5,2\n") == {"delimiter": ",", "decimal": ".", "encoding": None}
    with pytest.raises(InputError, match="decimal mark ','"):
        safe_csv_bytes(upload.frame, delimiter=",", decimal=",")
    # a file read with decimal points comes back with commas, and the page says why
    points = read_csv_upload(b"age;weight\n40;70.5\n")
    assert release_csv(points.frame, points.csv_format)[2] == (
        "a release's decimal mark follows its separator (decimal commas where it is semicolon-separated), not the "
        "cells (their form is a fact about their records)")


def written_as(data: bytes) -> dict:
    return {key: value for key, value in read_csv_upload(data).csv_format.items() if key != "read"}


def test_a_download_is_written_in_the_encoding_its_header_shows_where_every_cell_fits_it():
    """A Windows-1252/Latin-1 CSV came back as UTF-8 without a BOM: Excel showed 'MÃ¤nnlich'. The encoding is the
    one the header (or a byte order mark) shows: whether the rows are Windows-1252 is a fact about its records."""
    from cadp.uploads import csv_format_words, writable_encoding

    upload = read_csv_upload("Straße;Gewicht\r\nKöln;60,5\r\nZürich;70\r\n€-Zone;1\r\n".encode("cp1252"))
    assert written_as("Straße;Gewicht\r\nKöln;60,5\r\n".encode("cp1252")) == {"delimiter": ";", "decimal": ",",
                                                                         "encoding": "cp1252"}
    assert writable_encoding("cp1252", frame=upload.frame) == "cp1252"
    written, words, changed, _ = release_csv(upload.frame, upload.csv_format)
    assert written == "Straße;Gewicht\r\nKöln;60,5\r\nZürich;70,0\r\n€-Zone;1,0\r\n".encode("cp1252")  # as read
    assert words == "semicolon-separated with decimal commas, in Windows-1252" and changed is None
    # the same rows under an ASCII header: UTF-8, with a BOM as a released text is not ASCII
    ascii_header = read_csv_upload("Ort;Gewicht\r\nKöln;60,5\r\nZürich;70\r\n".encode("cp1252"))
    assert ascii_header.csv_format["encoding"] is None
    written, words, changed, _ = release_csv(ascii_header.frame, ascii_header.csv_format)
    assert written.startswith(b"\xef\xbb\xbfOrt;Gewicht\r\nK\xc3\xb6ln") and changed.startswith("the upload's header shows no encoding")
    assert release_csv(ascii_header.frame.assign(Ort=["a", "b"]), ascii_header.csv_format)[0].startswith(b"Ort;")
    # with the texts a release can hold (the app passes the model's categories): the same encoding whatever cells
    # this release drew (a row's file changed with another row's released Köln)
    for cells in (["a", "b"], ["Köln", "b"]):
        written = release_csv(ascii_header.frame.assign(Ort=cells), ascii_header.csv_format, ["Köln", "Zürich", "a"])[0]
        assert written.startswith(b"\xef\xbb\xbfOrt;"), cells
    for cells in (["Köln", "Köln", "Köln"], ["Łódź", "Köln", "Köln"]):
        written = release_csv(upload.frame.assign(Straße=cells), upload.csv_format, ["Köln", "Łódź"])[0]
        assert written.startswith("\ufeffStraße;".encode()), cells  # Łódź can be released: UTF-8 always
    # a released value Latin-1 cannot hold: UTF-8 with a BOM (spreadsheets read it as UTF-8), never a broken file
    other = upload.frame.assign(Straße=["Łódź", "Köln", "Köln"])
    written, words, changed, _ = release_csv(other, upload.csv_format)
    assert written.startswith("\ufeffStraße;".encode()) and changed == (
        "a released value cannot be written in Windows-1252, the upload's encoding")
    assert writable_encoding("latin-1", frame=other) == "utf-8-sig"
    assert writable_encoding("latin-1", frame=upload.frame.rename(columns={"Straße": "Miasto Łódź"})) == "utf-8-sig"
    assert safe_csv_bytes(other, encoding="utf-8-sig").startswith("\ufeffStraße,Gewicht\r\n\u0141".encode())
    with pytest.raises(InputError, match="cannot be written in Latin-1"):
        safe_csv_bytes(other, encoding="latin-1")
    # a BOM with the header only: chunks written one after another make one file
    assert not safe_csv_bytes(other, header=False, encoding="utf-8-sig").startswith(b"\xef\xbb\xbf")
    assert csv_format_words(";", ",", "cp1252") == "semicolon-separated with decimal commas, in Windows-1252"
    # the header's encoding kept while the rows were read as another: said as the header's, not as "no encoding"
    from cadp.uploads import format_change_reason

    assert format_change_reason(";", ",", ",", "latin-1", "cp1252", "rows.csv", "cp1252") == (
        "rows.csv's header is written in Windows-1252, which a release follows (its rows were read as Latin-1)")
    utf16 = read_csv_upload("a,b\nä,1\n".encode("utf-16"))
    assert utf16.csv_format["encoding"] == "utf-16"
    written = release_csv(utf16.frame, utf16.csv_format)[0]
    assert written.startswith(b"\xff\xfe") and written.decode("utf-16") == "a,b\r\nä,1\r\n"
    assert not safe_csv_bytes(utf16.frame, header=False, encoding="utf-16").startswith(b"\xff\xfe")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_read_and_written_back_so(encoding):
    """Such a file was refused as 'the file is binary'."""
    data = "Ort;Gewicht\r\nKöln;60,5\r\nZürich;70\r\n".encode(encoding)
    upload = read_csv_upload(data)
    assert upload.frame["Ort"].tolist() == ["Köln", "Zürich"] and upload.frame["Gewicht"].tolist() == [60.5, 70.0]
    endian = "little" if encoding == "utf-16-le" else "big"
    assert f"the file is UTF-16 without a byte order mark; read as UTF-16 ({endian}-endian, without a BOM)" in \
        upload.notes
    assert release_csv(upload.frame, upload.csv_format)[0] == \
        "Ort;Gewicht\r\nKöln;60,5\r\nZürich;70,0\r\n".encode(encoding)
    with pytest.raises(InputError, match="binary"):  # NUL bytes at both positions: binary, as before
        read_csv_upload(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    # mostly Cyrillic (few NUL bytes), and one U+3000 (a NUL at the other position): UTF-16 all the same
    cyrillic = "Город;Вес\r\nМосква;60\r\nКазань;70\r\nНовосибирск;80\r\n"
    assert read_csv_upload(cyrillic.encode(encoding)).frame["Город"].tolist() == ["Москва", "Казань", "Новосибирск"]
    spaced = ("name;note\r\nrow0;a\u3000b\r\n" + "".join(f"row{i};ab\r\n" for i in range(1, 30))).encode(encoding)
    assert read_csv_upload(spaced).frame["note"].iloc[0] == "a\u3000b"


def test_training_says_which_files_of_an_image_folder_it_left_out(tmp_path, capsys):
    from cadp.data import load_image_folder

    for label in ("a", "b"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for index in range(3):
            (tmp_path / "imgs" / label / f"{index}.png").write_bytes(corpus.png(corpus.digit(28, 28)))
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"not a png")
    load_image_folder(tmp_path / "imgs", "train")
    err = capsys.readouterr().err
    assert "1 file under" in err and "fewer than 10 readable images: a (3), b (3)" in err
    load_image_folder(tmp_path / "imgs", "test")
    assert capsys.readouterr().err == ""  # said once per folder


def test_an_image_folder_is_read_as_the_app_reads_images_and_its_layout_checked(tmp_path, capsys):
    """DICOM files were skipped in training though the app reads them; colour was turned grey unsaid; a folder of
    train/ and test/ trained on the classes 'test' and 'train'."""
    from cadp.data import load_image_folder

    for label in ("a", "b"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for index in range(5):
            (tmp_path / "imgs" / label / f"{index}.png").write_bytes(corpus.png(corpus.digit(28, 28)))
        (tmp_path / "imgs" / label / "scan.dcm").write_bytes(corpus.dicom())
    colour = np.stack([corpus.digit(28, 28)] * 3, axis=-1)
    colour[..., 0] = 255 - colour[..., 0]
    (tmp_path / "imgs" / "a" / "colour.png").write_bytes(corpus.png(colour))
    train, test = (load_image_folder(tmp_path / "imgs", split) for split in ("train", "test"))
    assert len(train) + len(test) == 13  # 10 PNGs, 2 DICOM files, 1 colour PNG
    err = capsys.readouterr().err
    assert "note: 1 image under" in err and "is stored in colour and was converted to greyscale" in err
    for split in ("train", "test"):
        (tmp_path / "kaggle" / split / "a").mkdir(parents=True)
        (tmp_path / "kaggle" / split / "a" / "0.png").write_bytes(corpus.png(corpus.digit(28, 28)))
    with pytest.raises(InputError, match=r"holds split folders \(test, train\) with class folders inside: give "
                                         r"the folder of the classes, e\.g\. .*kaggle/train \("):  # (not test)
        load_image_folder(tmp_path / "kaggle", "train")


def test_dates_and_record_numbers_are_dropped_however_few_and_unique_names_in_a_small_table_are_noted():
    """A 20-row table: its 20 names passed as categories without a word, and 15 visit dates or record numbers
    among 200 rows were kept (the identifier rules needed more than 20 distinct values)."""
    rows = [f"Patient {i},{30 + i},{['a', 'b'][i % 2]}" for i in range(20)]
    upload = read_csv_upload(("name,age,group\n" + "\n".join(rows) + "\n").encode())
    assert "name" in upload.frame.columns  # a small table's category with one value per row: said, not dropped
    assert any("'name' has a different text value in every one of its 20 rows: a model fitted on this table "
               "refuses it" in note for note in upload.notes)
    visits = [f"2024-01-{1 + i % 15:02d},MRN{100000 + i % 15},{30 + i % 40}" for i in range(200)]
    upload = read_csv_upload(("visit,mrn,age\n" + "\n".join(visits) + "\n").encode())
    assert list(upload.frame.columns) == ["age"]
    assert any("'visit' has 15 distinct text values in 200 rows shaped like dates" in n for n in upload.notes)
    assert any("'mrn' has 15 distinct text values in 200 rows shaped like record numbers" in n for n in upload.notes)


def test_training_says_that_deep_images_are_stretched_one_by_one_and_names_exact_copies(tmp_path, capsys):
    """16-bit scans were each stretched to 0..255 unsaid (classes told apart by intensity became one input), and
    copies of one image went unmentioned until they broke the run's end (d_typ 0)."""
    from PIL import Image

    from cadp.data import load_image_folder

    for label, level in (("low", 1200), ("high", 3800)):
        (tmp_path / "deep" / label).mkdir(parents=True)
        for index in range(4):
            pixels = np.full((28, 28), 100 + index, dtype=np.uint16)
            pixels[8:18, 8:18] = level
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")  # 16-bit grey (I;16)
            (tmp_path / "deep" / label / f"{index}.png").write_bytes(buffer.getvalue())
    data = load_image_folder(tmp_path / "deep", "train")
    err = capsys.readouterr().err
    assert "note: 8 images under" in err and "scaled to 0..255 from its own lowest to its own highest value" in err
    assert "convert the images to 8-bit with one fixed window first" in err
    assert int(data.images.max()) == 255
    (tmp_path / "copies" / "a").mkdir(parents=True)
    (tmp_path / "copies" / "b").mkdir(parents=True)
    for index in range(3):
        (tmp_path / "copies" / "a" / f"{index}.png").write_bytes(corpus.png(corpus.digit(28, 28)))
        (tmp_path / "copies" / "b" / f"{index}.png").write_bytes(corpus.png(255 - corpus.digit(28, 28)))
    load_image_folder(tmp_path / "copies", "train")
    err = capsys.readouterr().err
    assert "note: 4 images under" in err and "are exact copies (as read, after resizing) of another image: " \
        "a/1.png (= a/0.png), a/2.png (= a/0.png), b/1.png (= b/0.png) and 1 more" in err


def test_latent_distances_are_between_distinct_records():
    """Copies of one record are 0 apart: d_typ was 0 where most held-out pairs were copies, and the finished run
    could not be saved (d_typ must be > 0). Copies are told by their inputs: their latents move slightly with
    the batch (d_typ came out 1.5e-8 when equal latents were the test), and close but distinct records stay."""
    import torch

    from cadp.train import measure_latent_distances

    latents = torch.tensor([[0.0, 0.0], [0.0, 1e-6], [2e-6, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 3.001]])
    inputs = torch.tensor([[7.0], [7.0], [7.0], [8.0], [9.0], [9.5]])  # three copies of one record
    groups = torch.zeros(6, dtype=torch.int64)
    distances = measure_latent_distances(latents, groups, held_out=True, inputs=inputs)
    # among (0,0), (1,0), (0,3), (0,3.001): 0.001, 1, 3, 3.001, 4, 4.001; nearest 1, 1, 0.001, 0.001 (torch's
    # median: the lower middle); (0,3) and (0,3.001) are two records however close
    assert distances.d_typ == pytest.approx(3.0) and distances.d_nn == pytest.approx(0.001, rel=1e-3)
    with pytest.raises(InputError, match="none sharing a condition with another distinct record"):
        measure_latent_distances(latents[:3], groups[:3], held_out=True, inputs=inputs[:3])


def test_a_deep_image_is_scaled_to_8_bit_in_bands_not_in_whole_float_copies():
    """A 95 KB 7000 x 7000 16-bit PNG took 2 GB of server memory: the whole image was copied to float64 several
    times. The bands give the same pixels as the whole-image formula."""
    import tracemalloc

    from cadp.uploads import _scale_to_8bit

    values = np.zeros((4000, 4000), dtype=np.uint16)  # 32 MB; one float64 copy would be 128 MB
    values[100:200, 100:300] = 60000
    values[3000:, :5] = 1000
    tracemalloc.start()
    try:
        scaled = _scale_to_8bit(values, [], "16-bit")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20 + 16 * 2**20  # the 8-bit result (16 MB) and bands, no whole-image copies
    expected = np.clip(np.rint(values.astype(np.float64) * (255.0 / 60000)), 0, 255).astype(np.uint8)
    assert np.array_equal(scaled, expected)
    floats = np.array([[np.nan, 0.5], [np.inf, -1.0]], dtype=np.float32)
    steps: list[str] = []
    assert _scale_to_8bit(floats, steps, "floating-point").tolist() == [[0, 255], [255, 0]]  # NaN: the lowest
    assert steps == ["floating-point scaled to 8-bit (values -1..0.5 -> 0..255)"]
    with pytest.raises(InputError, match="no finite pixel values"):
        _scale_to_8bit(np.full((3, 3), np.nan), [], "floating-point")


def test_a_text_column_of_a_few_sentences_is_said_to_be_released_word_for_word():
    """Four distinct notes, one "Patient reports fatigue, lives at 12 Elm St", passed as categories without a
    word, and the sentence came back verbatim in released rows."""
    rows = [f'{40 + i},{["F", "M"][i % 2]},"{note}"' for i, note in enumerate(
        ["Patient reports fatigue, lives at 12 Elm St", "none", "smoker", "none"] * 10)]
    upload = read_csv_upload(("age,sex,notes\n" + "\n".join(rows) + "\n").encode())
    assert "notes" in upload.frame.columns  # a note, not a drop: long labels can be categories
    assert any(note.startswith("column 'notes' holds free text (e.g. 'Patient reports fatigue, lives at 12 Elm St')"
                               ": kept as categories") and "word for word" in note for note in upload.notes)
    short = read_csv_upload(("age,sex,ward\n" + "\n".join(f"{40 + i},F,north wing" for i in range(20)) + "\n").encode())
    assert not any("free text" in note for note in short.notes)


def test_an_upload_with_a_row_cut_short_is_refused():
    data = b"age,sex,bmi,bp\n50,1,30.1,90\n\n60,2\n,,,\n70,1,25,\n"
    with pytest.raises(InputError, match=r"1 row of the CSV has fewer fields than its header \(4 columns, "
                                         r"comma-separated; data row 2, counting from 1 below the header, blank "
                                         r"lines not counted\)"):
        read_csv_upload(data)
    assert len(read_csv_upload(data.replace(b"60,2\n", b"60,2,,\n")).frame) == 3  # empty cells written: fine


def test_rows_are_counted_as_pandas_reads_them():
    """The field count must agree with pandas: a quoted cell after ", " is one field (a short row passed as two),
    a quoted line break after ", " is no row break (a valid file was refused), a line of spaces is blank, a
    separator ending the header line names no column, and a line break in an unquoted cell is refused."""
    from cadp.uploads import rows_against_header

    def count(text):
        return rows_against_header(io.StringIO(text, newline=""), ",")[:2]

    assert count('sex,note,age,bmi\n1, "x,y",30\n2,ok,40,22.0\n') == (1, [1])
    assert count('age,bmi,note,sex\n30,25.1, "a\nb",1\n40,22,ok,2\n') == (0, [])
    assert count("a,b,c\n1,2,3\n   \n4,5,6\n  ") == (0, [])
    assert count("a,b,\n1,2\n3,4\n") == (0, [])
    assert count("a,b,c\n1,x\ry,3\n4,5,6\n7,8\n") == (3, [1, 2, 4])
    assert count("a,b\n" + "x" * 200_000 + ",1\n4\n") == (1, [2])  # a cell of any length, as pandas reads
    assert count("\nage,bmi,note,sex\n30,25.1,ok,1\n40,22.0\n") == (1, [2])  # a blank line before the header
    assert count("age,bmi,note,sex\n30,25.1,ok,1\n\t,\n40,22.0,x,2\n") == (1, [2])  # pandas reads "\t," as a row


def test_a_folder_of_copies_of_one_image_is_refused_before_training(tmp_path, capsys):
    """Every image a copy of one: the run trained for its whole budget, then could not measure a distance between
    two distinct records (d_typ) and saved no model."""
    from cadp import train

    for label in ("a", "b"):
        (tmp_path / "copies" / label).mkdir(parents=True)
        for index in range(10):
            (tmp_path / "copies" / label / f"{index}.png").write_bytes(corpus.png(corpus.digit(28, 28)))
    code = train.main(["--dataset", str(tmp_path / "copies"), "--out", str(tmp_path / "model"), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "needs two distinct images of one class" in err and "step/s" not in err


def test_escaped_csv_counts_column_names_only_where_it_writes_them():
    """A CSV written in blocks (the archive's released rows) counted its escaped column names once per block: a
    file of 16 blocks said 16 escaped cells where it held one."""
    frame = pd.DataFrame({"+bmi": [1.5, 2.5], "note": ["=1", "ok"]})
    assert escaped_csv(frame)[1] == 2  # the name +bmi and the cell =1
    data, count = escaped_csv(frame, header=False)
    assert count == 1 and b"bmi" not in data


def test_none_is_a_value_and_the_other_missing_texts_are_missing():
    """A symptom "None" was read as an empty cell (pandas reads None as missing): a kept condition "None" came back
    empty. NA, N/A, null and nan stay missing, as R and databases write a missing value (among numbers too)."""
    upload = read_csv_upload(b"country,symptoms,age,bmi\nNA,None,40,NA\nDE,Mild,,22.5\nN/A,null,51,nan\nFR,Severe,60,30\n")
    assert upload.frame["symptoms"].tolist()[:2] == ["None", "Mild"] and pd.isna(upload.frame["symptoms"][2])
    assert upload.frame["country"].isna().tolist() == [True, False, True, False]
    assert upload.frame["age"].isna().tolist() == [False, True, False, False]
    assert upload.frame["bmi"].dtype == np.float64 and upload.frame["bmi"].isna().tolist() == [True, False, True, False]
    codes = read_csv_upload(b"zip,n\n02134,1\nNA,2\n01002,3\n").frame  # codes keep their zeros beside NA
    assert codes["zip"].tolist()[0] == "02134" and pd.isna(codes["zip"][1])


def test_a_missing_value_written_as_text_is_the_empty_category_where_the_model_has_one():
    from cadp.data import TabularEncoder

    frame = pd.DataFrame({"smoker": ["yes", "no", None, "yes"], "country": ["NA", "DE", "FR", "DE"]})
    encoder = TabularEncoder({"smoker": "categorical", "country": "categorical"}).fit(frame)
    codes = encoder.transform(pd.DataFrame({"smoker": ["NA", "null", "no"], "country": ["NA", "DE", "FR"]}))
    assert codes[:, :3].argmax(1).tolist() == [encoder.columns[0].categories.index(None)] * 2 + [0]
    assert codes[:, 3:].argmax(1).tolist() == [encoder.columns[1].categories.index(c) for c in ("NA", "DE", "FR")]
    with pytest.raises(InputError, match="the value 'null', unseen"):  # no empty category: the text is a value
        encoder.transform(pd.DataFrame({"smoker": ["no"], "country": ["null"]}))


def test_none_among_numbers_is_a_gap_and_a_text_columns_none_a_value():
    """With None a value, a column of numbers with None cells (as Python's str() writes a gap) became categories for
    training (the app's fit and cadp.train), and a column of codes with a None lost its leading-zero reading."""
    upload = read_csv_upload(b"age,zip,symptoms\n30,02134,None\nNone,None,Mild\n41,01002,Severe\nNone,02111,Mild\n")
    assert upload.frame["age"].dtype == np.float64 and upload.frame["age"].isna().tolist() == [False, True, False, True]
    assert upload.frame["zip"].tolist()[0] == "02134" and pd.isna(upload.frame["zip"][1])
    assert any("leading zero" in note for note in upload.notes)
    assert upload.frame["symptoms"].tolist() == ["None", "Mild", "Severe", "Mild"]


def test_a_cells_number_and_none_are_read_alike_whatever_the_other_rows_hold():
    """The file's decimal mark came from its rows: with another row's 22,5, 25.125 was read as 25125; and whether None
    was a gap came from the column's other cells even where the chosen model says what the column holds."""
    for other in ("22,5", "22.5", "3", "None"):
        frame = read_csv_upload(f"age;bmi\n50;25.125\n51;{other}\n".encode()).frame
        assert frame["bmi"][0] == 25.125, other
    # a dot with three digits after it, no comma: read as a decimal point, and said where commas are the file's way
    upload = read_csv_upload(b"n;x\n1;1.234,56\n2;12.500\n3;2.300,00\n4;980,10\n")
    assert upload.frame["x"].tolist() == [1234.56, 12.5, 2300.0, 980.1]
    assert any("1 cell such as '12.500', with one dot and no comma, is read with a decimal point (12.5)" in note
               and "write 12500 (or 12.500,0)" in note for note in upload.notes), upload.notes
    # a model's text column keeps None as a value whatever its other cells; a number column reads it as a gap
    chosen = read_csv_upload(b"grade,age\nNone,None\n2,40\n", text_columns=["grade"], number_columns=["age"]).frame
    assert chosen["grade"].astype(str).tolist()[0] == "None" and chosen["age"].isna().tolist() == [True, False]
    alone = read_csv_upload(b"grade,age\nNone,None\nunknown,40\n", text_columns=["grade"], number_columns=["age"])
    assert alone.frame["grade"].tolist()[0] == "None" and alone.frame["age"].isna().tolist() == [True, False]


def test_an_excel_separator_line_quoted_or_not_is_not_the_header_whose_encoding_is_read():
    from cadp.uploads import declared_encoding

    for hint in ('"sep=;"', "sep=;", "SEP=;"):
        data = f"{hint}\r\nGröße;Ort\r\n1;Köln\r\n".encode("cp1252")
        assert declared_encoding(data, "cp1252") == "cp1252", hint
        assert read_csv_upload(data).csv_format["encoding"] == "cp1252", hint


@pytest.mark.parametrize("data", [
    b'name,age,note\nA,30,"two\nlines"\nB,40,ok\nC,50,x,extra\nD,60,y\n',  # a cell with a line break before it
    b"sep=,\nname,age,note\nA,30,ok\nB,40,ok\nC,50,x,extra\nD,60,y\n",  # Excel's separator line before the header
], ids=["line-break-in-a-cell", "sep-line"])
def test_a_row_with_more_fields_is_named_by_its_data_row_not_by_pandas_line(data):
    """pandas' 'line 4' counts records: the row is on the file's line 5 in both files."""
    with pytest.raises(InputError) as refused:
        read_csv_upload(data)
    assert "1 row of the CSV has more fields than its header" in str(refused.value)
    assert "data row 3, counting from 1 below the header" in str(refused.value)
    assert "line 4" not in str(refused.value)


@pytest.mark.parametrize("data", [b'a,b\n1,"2\n3,4\n', b'a,b\n1,2\n3,"4\n5,6\n7,8\n'], ids=["first-row", "later-row"])
def test_a_quote_never_closed_is_said_so_not_called_a_row_with_more_fields(data):
    with pytest.raises(InputError, match="a quoted cell is never closed") as refused:
        read_csv_upload(data)
    assert "more fields" not in str(refused.value)
