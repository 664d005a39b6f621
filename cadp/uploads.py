"""Turn uploaded bytes (images, DICOM, ZIP archives, CSV tables) into model input, safely.

Everything here works on bytes in memory: uploads are never written to disk and
never logged. Every failure raises ``cadp.errors.InputError`` with a plain
message; decoder exceptions (Pillow, pydicom, pandas) never escape.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import logging
import math
import random
import re
import struct
import threading
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from cadp.compare import counted, plural
from cadp.errors import InputError

# --------------------------------------------------------------------------- limits

MAX_IMAGE_BYTES = 64 * 2**20          # one uploaded image file
MAX_IMAGE_PIXELS = 50_000_000         # width x height of one decoded image (a 7000 x 7000 photo passes)
# decoded pixels of one upload, all its images together (~15 s of decoding on one core: 80 photos of 12 MP,
# 250 scans of 2000 x 2000); past it the remaining images are skipped
MAX_UPLOAD_PIXELS = 1_000_000_000
PREVIEW_MAX_SIDE = 1024               # previews of larger images are downscaled for display
MAX_ZIP_FILES = 2000
MAX_ZIP_TOTAL_BYTES = 1024 * 2**20    # uncompressed bytes read from one ZIP, all members together
MAX_CSV_BYTES = 256 * 2**20
MAX_CSV_ROWS = 100_000
MAX_CSV_COLUMNS = 200
MAX_CATEGORIES = 200                  # a text column with more distinct values is an identifier
CSV_SAMPLE_SEED = 0
INVERT_CHOICES = ("auto", "always", "never")
# the Pillow formats an upload may be read as (a phone's MPO comes through JPEG): only these, whatever its name. Pillow
# would read others too, some by writing the bytes to a temporary file for an outside program (EPS, Ghostscript)
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
FORMAT_NAMES = "PNG, JPEG, BMP, TIFF, GIF, WebP or DICOM"
# a border this many grey levels brighter than the centre means dark-on-light
INVERT_MARGIN = 2.0
INVERTED_BACK = "the release inverted back (written in the input's polarity)"


@dataclass
class PreparedImage:
    """One decoded upload: model input, a display preview, and what was done to it."""

    pixels: np.ndarray            # uint8 (channels, image_size, image_size)
    preview: np.ndarray           # uint8 H x W or H x W x 3, before resizing (downscaled past PREVIEW_MAX_SIDE); read-only
    inverted: bool
    steps: list[str] = field(default_factory=list)
    decoded_pixels: int = 0       # width x height as decoded (what decoding it cost)


# --------------------------------------------------------------------------- images

INVERTED_NOT_BACK = ("the release left as the model reads it (light on dark): under auto inversion each input's own "
                     "pixels decide it, and a release written back would show that decision exactly, which the "
                     "guarantee does not cover")


def written_back(inverted: bool, invert: str) -> bool:
    """Whether the release of an input inverted for the model (``inverted``) is written back in the input's
    polarity: only under ``invert`` 'always', where every input is inverted whatever its pixels (a fixed step, so
    inverting every release back is post-processing). Under 'auto' the input's own pixels decide the inversion: a
    release written back in its input's polarity would release that decision exactly, which no guarantee covers, so
    every release is written as the model reads it."""
    return inverted and invert == "always"


def in_input_polarity(pixels, back: bool):
    """A release (uint8 array or tensor, 0 to 255) as it is written: inverted back where ``back``
    (``written_back``), as it is otherwise."""
    return 255 - pixels if back else pixels


def default_invert(dataset: str) -> str:
    """The inversion to offer for a model's uploads: 'auto' for models of light-on-dark public data (MNIST,
    Fashion-MNIST); 'never' for one trained on an image folder, which ``cadp.data.load_image_folder`` reads
    without inverting (auto-inverting would show it the negatives of what it learned)."""
    from cadp.data import IMAGE_DATASETS

    return "auto" if dataset in IMAGE_DATASETS else "never"


def is_dicom(data: bytes, filename: str | None = None) -> bool:
    """DICOM Part 10 files carry 'DICM' at offset 128; bare datasets are recognised by a .dcm name, unless their
    bytes are plainly another image format (``image_format``: a PNG renamed scan.dcm is read as the PNG it is)."""
    if data[128:132] == b"DICM":
        return True
    return (filename is not None and Path(filename).suffix.lower() in (".dcm", ".dicom")
            and image_format(data) is None)


FIRST_FRAME = "first frame of"  # how a preparation step names a file of several frames, of which one is used


def several_frames_note(names: list[str], detail: str = "") -> str | None:
    """What the image page and the batch CLI say of the files (``names``, as they show them) of which only the
    first frame was privatized, or None; ``detail``: where more is said."""
    if not names:
        return None
    shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    one = len(names) == 1
    return (f"{counted(len(names), 'file')} {'holds' if one else 'hold'} several frames (a series, a stack or an "
            f"animation): only the first frame of {'it' if one else 'each'} is privatized ({shown}{detail}). Save the "
            "other frames as images of their own to privatize them.")


def _a(words: str) -> str:
    """``words`` with "a" or "an" before it, as said aloud: an animated GIF, a 3-frame TIFF, an 8- or 11-frame one."""
    digits = re.match(r"\d+", words)
    if digits:
        number = digits.group()
        vowel = number.startswith("8") or (len(number) in (2, 5) and number[:2] in ("11", "18"))
    else:
        vowel = words[:1].lower() in tuple("aeiou")
    return f"{'an' if vowel else 'a'} {words}"


# how image files begin, whatever their name (a PNG saved without a suffix, or under .dat or .dcm): format, (offset,
# bytes) of each signature; a BMP's two letters also need a known header size (BMP_HEADER_SIZES) to count
IMAGE_MAGIC = {"PNG": ((0, b"\x89PNG\r\n\x1a\n"),), "JPEG": ((0, b"\xff\xd8\xff"),),
               "GIF": ((0, b"GIF87a"), (0, b"GIF89a")), "TIFF": ((0, b"II*\x00"), (0, b"MM\x00*")),
               "WebP": ((8, b"WEBP"),), "BMP": ((0, b"BM"),)}
BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)  # BITMAPCOREHEADER .. BITMAPV5HEADER, at bytes 14..17


def image_format(head: bytes) -> str | None:
    """The image format a file's first bytes (18 at least) plainly are ('PNG', 'JPEG', 'GIF', 'TIFF', 'WebP' or
    'BMP'), whatever its name, or None (DICOM is ``is_dicom``'s)."""
    for name, signatures in IMAGE_MAGIC.items():
        if any(head[offset:offset + len(magic)] == magic for offset, magic in signatures):
            if name == "WebP" and head[:4] != b"RIFF":
                continue
            if name == "BMP" and int.from_bytes(head[14:18], "little") not in BMP_HEADER_SIZES:
                continue
            return name
    return None


def is_image_content(head: bytes) -> bool:
    """Whether a file's first 132 bytes are those of an image this app reads (PNG, JPEG, GIF, TIFF, WebP, BMP, or
    DICOM Part 10), for a file whose name has no image suffix (PACS exports name files IM0001)."""
    return is_dicom(head) or image_format(head) is not None


BLANK_IMAGE = "a blank image"


def to_model_input(data: bytes, *, image_size: int, channels: int, invert: str = "auto",
                   filename: str | None = None) -> PreparedImage:
    """Decode an uploaded image and prepare it for a model of ``image_size`` x ``image_size`` x ``channels``.

    Aspect ratio is kept and the image is padded with its own background colour.
    ``invert``: 'auto' inverts dark-on-light images (border brighter than the
    centre: MNIST-style models expect light-on-dark), 'always' or 'never'.
    """
    if invert not in INVERT_CHOICES:
        raise InputError(f"invert must be one of {', '.join(INVERT_CHOICES)}, got {invert!r}")
    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise InputError(f"image_size must be a positive integer, got {image_size!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError("an image upload must be bytes")
    data = bytes(data)
    if len(data) == 0:
        raise InputError("the file is empty (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(f"the file is {len(data) / 2**20:.0f} MB; images up to "
                         f"{MAX_IMAGE_BYTES // 2**20} MB are accepted")
    steps: list[str] = []
    if is_dicom(data, filename):
        image = _decode_dicom(data, steps)
    else:
        image = _decode_pillow(data, steps)
    decoded_pixels = image.size[0] * image.size[1]
    with _charged(decoded_pixels):  # refused once decoded (an all-NaN float TIFF): the decoding was done all the same
        image = _to_channels(image, channels, steps)
        array = np.asarray(image, dtype=np.uint8)
        preview = _preview(image, array)
        inverted = invert == "always" or (invert == "auto" and _is_dark_on_light(array))
        if inverted:
            array = 255 - array
            steps.append("inverted (dark-on-light detected)" if invert == "auto" else "inverted (as requested)")
        pixels = _fit_square(array, image_size, steps)
    if pixels.size and int(pixels.min()) == int(pixels.max()):  # a blank scan, a fully transparent PNG
        steps.append(f"{BLANK_IMAGE} (every pixel the model reads is {int(pixels.min())}): nothing of it is left to "
                     "privatize, and its release is a sample of its label; check the file")
    if pixels.ndim == 2:
        pixels = pixels[None]
    else:
        pixels = pixels.transpose(2, 0, 1)
    return PreparedImage(np.ascontiguousarray(pixels, dtype=np.uint8), preview, inverted, steps, decoded_pixels)


@contextlib.contextmanager
def _charged(pixels: int) -> Iterator[None]:
    """An InputError raised inside carries ``pixels`` (those of an image decoded, or tried) as its decoded_pixels: an
    image refused once decoded cost the upload's pixel budget its decoding, as one accepted does."""
    try:
        yield
    except InputError as error:
        error.decoded_pixels = max(error.decoded_pixels, pixels)
        raise


EXIF_TURNS = (2, 3, 4, 5, 6, 7, 8)  # the EXIF orientations that ImageOps.exif_transpose turns or mirrors


def _decode_pillow(data: bytes, steps: list[str]) -> Image.Image:
    declared = 0  # width x height from the header, once it is within the limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
            width, height = image.size
            if width < 1 or height < 1:
                raise InputError(f"the image has no pixels ({width}x{height})")
            if width * height > MAX_IMAGE_PIXELS:
                raise _bomb_error(width, height)
            declared = width * height
            if image.format == "MPO":  # a phone's JPEG with a preview, depth or gain map: its main image is the photo
                image.seek(0)
                extra = getattr(image, "n_frames", 1) - 1
                if isinstance(extra, int) and extra > 0:
                    steps.append(f"the JPEG's main image (the file also holds {extra} smaller or auxiliary "
                                 f"image{'s' * (extra > 1)}, such as a preview or a depth map, not read)")
            elif getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                image.seek(0)
                count = getattr(image, "n_frames", 1)
                kind = "animated GIF" if image.format == "GIF" else f"multi-frame {image.format}"
                kind = f"{count}-frame {kind}" if isinstance(count, int) and count > 1 else kind
                steps.append(f"{FIRST_FRAME} {_a(kind)}")
            image.load()
            orientation = image.getexif().get(0x0112, 1)
            if orientation in EXIF_TURNS:  # (1: as stored; other values are not orientations and change nothing)
                image = ImageOps.exif_transpose(image)
                steps.append("EXIF rotation applied")
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"the image is too large to decode safely (a decompression bomb?): "
                         f"at most {MAX_IMAGE_PIXELS:,} pixels are accepted") from None
    except UnidentifiedImageError:
        raise InputError(f"the file is not an image that can be read: its content is not {FORMAT_NAMES}"
                         + _looks_like(data)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError,
            struct.error):
        error = InputError("the image file is truncated or corrupt and cannot be decoded")
        error.decoded_pixels = declared  # decoding a truncated image costs as much as a whole one
        raise error from None
    return image


def _bomb_error(width: int, height: int) -> InputError:
    return InputError(f"the image is {width}x{height} = {width * height:,} pixels, more than the limit of "
                      f"{MAX_IMAGE_PIXELS:,} (refused as a possible decompression bomb)")


def _looks_like(data: bytes) -> str:
    head = data[:512]
    if head.startswith(b"%PDF"):
        return " (it is a PDF document)"
    if head.startswith(b"PK\x03\x04"):
        return " (it is a ZIP archive)"
    if b"\x00" in head:  # NUL bytes decode as UTF-8, but they mean a binary file
        return ""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return " (it looks like a text file)"


class _QuietWhileDecoding(logging.Filter):
    """Drops the records a logger makes in a thread while it decodes an upload (``quiet``): pydicom logs each
    malformed value it meets, quoting it, besides its warning. Per thread: another session's thread, or a library
    user's own pydicom calls, log as before."""

    def __init__(self):
        super().__init__()
        self.state = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.state, "quiet", False)

    @contextlib.contextmanager
    def quiet(self):
        before = getattr(self.state, "quiet", False)
        self.state.quiet = True
        try:
            yield
        finally:
            self.state.quiet = before


_DICOM_LOG = _QuietWhileDecoding()
_DICOM_LOGGERS_QUIETED = threading.Event()
PYDICOM_MODULES = r"pydicom(\.|$)"


def _quiet_pydicom() -> None:
    """pydicom warns of a malformed value quoting it (a header value may be a patient's name or ID), and logs it:
    none of it is shown, in any thread. A filter set per decode with catch_warnings changed the whole process's
    filters, and another thread leaving its own catch_warnings meanwhile put them back without it (a value reached
    the server's stderr). So pydicom does not validate values as it reads them (its process-wide setting; a value
    that is no number is refused by the decode, without quoting it), its modules' warnings are filtered out
    (again at each decode: a catch_warnings around the first one would have taken the filter away with it), and
    its log records are dropped in the thread that decodes."""
    import pydicom.config
    import pydicom.pixels  # noqa: F401  (its modules' loggers, made on import, are quieted too)

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    if not any(action == "ignore" and getattr(module, "pattern", None) == PYDICOM_MODULES
               for action, _message, _category, module, _line in warnings.filters):
        warnings.filterwarnings("ignore", module=PYDICOM_MODULES)
    if not _DICOM_LOGGERS_QUIETED.is_set():
        names = list(logging.root.manager.loggerDict)  # (a copy made at once: another thread may add loggers)
        for name in [name for name in names if name.partition(".")[0] == "pydicom"]:
            logger = logging.getLogger(name)  # (a logger's filters see its own records, not its children's)
            if _DICOM_LOG not in logger.filters:
                logger.addFilter(_DICOM_LOG)
        _DICOM_LOGGERS_QUIETED.set()


def _decode_dicom(data: bytes, steps: list[str]) -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError

    _quiet_pydicom()  # (pydicom reads an element's value when it is first used: every step below is quiet)
    with _DICOM_LOG.quiet():
        try:
            dataset = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError,
                NotImplementedError):
            raise InputError("the DICOM file is truncated or corrupt and cannot be read") from None
        if "PixelData" not in dataset and "FloatPixelData" not in dataset and "DoubleFloatPixelData" not in dataset:
            raise InputError("the DICOM file holds no image (it has no Pixel Data element)")
        try:
            rows, columns = int(dataset.Rows), int(dataset.Columns)
        except (AttributeError, TypeError, ValueError):
            raise InputError("the DICOM file does not say its image size (Rows/Columns missing)") from None
        if rows < 1 or columns < 1:
            raise InputError(f"the DICOM image has no pixels ({columns}x{rows})")
        if rows * columns > MAX_IMAGE_PIXELS:
            raise _bomb_error(columns, rows)
        with _charged(rows * columns):  # decoding its pixels costs as much whether they are then used or refused
            try:
                return _dicom_image(dataset, steps)
            except InputError:
                raise
            except Exception as error:  # a malformed element read on the way: one plain sentence, no value
                raise InputError(f"the DICOM file cannot be read ({type(error).__name__}): an element of its "
                                 "header is malformed; export the image again, or as PNG") from None


def _dicom_number(dataset, keyword: str, default: int) -> int:
    """A whole-number header element (NumberOfFrames, SamplesPerPixel), ``default`` where absent or empty; an
    InputError naming the element, never its value, where it is not a number."""
    try:
        return int(getattr(dataset, keyword, default) or default)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"the DICOM header's {keyword} is not a whole number, so the image cannot be read; fix or "
                         "remove that element (or export the image as PNG)") from None


def _dicom_image(dataset, steps: list[str]) -> Image.Image:
    """The first frame of a DICOM dataset whose size is within the limit, as an 8-bit L or RGB image."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from pydicom.pixels import pixel_array as dicom_pixel_array

    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    syntax_name = getattr(syntax, "name", None) or str(syntax or "unknown")
    frames = _dicom_number(dataset, "NumberOfFrames", 1)
    try:
        pixels = dicom_pixel_array(dataset, index=0 if frames > 1 else None)
    except Exception as error:  # pydicom raises many types; the user needs one plain sentence
        if syntax is not None and not syntax.is_private and getattr(syntax, "is_compressed", False):
            raise InputError(f"the DICOM pixel data is compressed with {syntax_name}, which cannot be "
                             "decoded here (no decoder installed for it); export it uncompressed "
                             "(Explicit VR Little Endian) or as PNG") from None
        if syntax is not None and syntax.name == str(syntax):  # pydicom does not know this UID
            raise InputError(f"the DICOM transfer syntax {syntax} is not supported") from None
        raise InputError(f"the DICOM pixel data cannot be decoded ({type(error).__name__}); "
                         "the file may be truncated or corrupt") from None
    if frames > 1:
        steps.append(f"{FIRST_FRAME} {_a(f'{frames}-frame DICOM')}")
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    samples = _dicom_number(dataset, "SamplesPerPixel", 1)
    if samples == 1:
        try:
            values = apply_modality_lut(pixels, dataset)
            if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
                values = apply_voi_lut(values, dataset)
                steps.append("DICOM window applied")
        except Exception:  # a malformed LUT: fall back to the stored values
            values = pixels
        values = _scale_to_8bit(np.asarray(values), steps, f"DICOM {dataset.get('BitsStored', '')}-bit")
        if photometric == "MONOCHROME1":  # 0 is white in MONOCHROME1
            values = 255 - values
            steps.append("MONOCHROME1 flipped so that 0 is black")
        return Image.fromarray(values, mode="L")
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise InputError(f"the DICOM image has an unsupported layout ({samples} samples per pixel)")
    if pixels.dtype != np.uint8:
        pixels = _scale_to_8bit(pixels, steps, "DICOM colour")
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


def _scale_to_8bit(values: np.ndarray, steps: list[str], what: str) -> np.ndarray:
    """Stretch the used value range to 0..255 (16-bit and float images rarely use the full range). Worked on in
    bands of rows in the values' own type: float64 copies of a whole 7000 x 7000 16-bit image took 2 GB."""
    values = np.asarray(values)
    bands = [values[start:start + _band_rows(values)] for start in range(0, len(values), _band_rows(values))]
    low, high = math.inf, -math.inf
    for band in bands:
        finite = band[np.isfinite(band)] if band.dtype.kind in "fc" else band
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if low > high:
        raise InputError("the image holds no finite pixel values")
    scaled = np.empty(values.shape, dtype=np.uint8)
    start = 0
    for band in bands:
        band = np.nan_to_num(band.astype(np.float64), nan=low, posinf=high, neginf=low)
        band = np.zeros(band.shape) if high == low else (band - low) * (255.0 / (high - low))
        scaled[start:start + len(band)] = np.clip(np.rint(band), 0, 255)
        start += len(band)
    steps.append(f"{what} scaled to 8-bit (values {low:g}..{high:g} -> 0..255)")
    return scaled


def _band_rows(values: np.ndarray) -> int:
    """Rows of ``values`` in one band of about PIXELS_AT_ONCE pixels (of every channel)."""
    return max(1, PIXELS_AT_ONCE // max(1, int(np.prod(values.shape[1:], dtype=np.int64))))


def _to_channels(image: Image.Image, channels: int, steps: list[str]) -> Image.Image:
    """Convert any Pillow mode to 8-bit L (channels=1) or RGB (channels=3)."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        bits = "16-bit" if mode.startswith("I;16") else ("32-bit" if mode == "I" else "floating-point")
        image = Image.fromarray(_scale_to_8bit(np.asarray(image), steps, bits), mode="L")
    elif mode == "1":
        image = image.convert("L")
        steps.append("1-bit image converted to 8-bit")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        steps.append("palette image expanded")
    elif mode == "CMYK":
        image = image.convert("RGB")
        steps.append("CMYK converted to RGB")
    elif mode in ("La", "RGBa"):
        image = image.convert("LA" if mode == "La" else "RGBA")
    if image.mode in ("LA", "RGBA"):
        image = _composite_alpha(image, steps)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
        steps.append(f"{mode} converted to RGB")
    if channels == 1 and image.mode == "RGB":
        image = image.convert("L")
        steps.append("converted to grayscale")
    elif channels == 3 and image.mode == "L":
        image = image.convert("RGB")
        steps.append("grayscale repeated to 3 channels")
    return image


LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's RGB -> L
PIXELS_AT_ONCE = 2**18  # a large image is worked on in bands of rows of about this many pixels (bounded memory)


def _composite_alpha(image: Image.Image, steps: list[str]) -> Image.Image:
    """Flatten transparency onto the background that contrasts with the visible content, a band of rows at a time
    (a whole large image in numbers took ~100 bytes per pixel)."""
    mode = "RGB" if image.mode == "RGBA" else "L"
    width, height = image.size
    rows = _rows_at_once(width)
    bands = [(0, top, width, min(height, top + rows)) for top in range(0, height, rows)]
    opaque, count, sums = True, 0, 0
    for box in bands:
        band = image.crop(box)
        alpha = np.asarray(band.getchannel("A"))
        visible = alpha > 127  # alpha / 255 > 0.5
        opaque = opaque and alpha.min() == 255
        count += int(visible.sum())
        sums = sums + np.asarray(band.convert(mode))[visible].sum(axis=0, dtype=np.uint64)
    if opaque:
        return image.convert(mode)
    # dark strokes on a transparent sheet read as dark-on-white; light strokes as light-on-black
    content = _luminance_of(sums / count) if count else 0.0
    background = 255 if content < 128 else 0
    flattened = Image.new(mode, image.size)
    for box in bands:
        band = image.crop(box)
        weight = np.asarray(band.getchannel("A"), dtype=np.uint32)
        values = np.asarray(band.convert(mode), dtype=np.uint32)
        if values.ndim == 3:
            weight = weight[..., None]
        # round(value * a/255 + background * (1 - a/255)) in integers: never a half, so the same as in floats
        values *= weight
        values += background * (255 - weight) + 127
        values //= 255
        flattened.paste(Image.fromarray(values.astype(np.uint8), mode=mode), box[:2])
    steps.append(f"transparency composited on {'white' if background else 'black'}")
    return flattened


def _luminance_of(means: np.ndarray) -> float:
    """The luminance of a mean grey level (one value) or of mean R, G, B (three)."""
    means = np.atleast_1d(means)
    return float(means[0] if means.size == 1 else means @ LUMINANCE_WEIGHTS)


def _mean_luminance(array: np.ndarray, where: np.ndarray | None = None) -> float:
    """The mean luminance of an 8-bit L (H, W) or RGB (H, W, 3) array, of its pixels ``where`` is True (all when
    None); from exact sums per channel (luminance is linear), so no float copy of the image is made."""
    if where is None:
        return _luminance_of(array.sum(axis=(0, 1), dtype=np.uint64) / (array.shape[0] * array.shape[1]))
    rows = _rows_at_once(array.shape[1])
    sums = sum((array[top:top + rows][where[top:top + rows]].sum(axis=0, dtype=np.uint64)
                for top in range(0, array.shape[0], rows)), np.zeros(array.shape[2:], np.uint64))
    return _luminance_of(sums / int(where.sum()))


def _rows_at_once(width: int) -> int:
    return max(1, PIXELS_AT_ONCE // width)


def _border_mask(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    band = max(1, round(0.1 * min(height, width)))
    mask = np.ones((height, width), dtype=bool)
    mask[band:height - band, band:width - band] = False
    return mask


def _is_dark_on_light(array: np.ndarray) -> bool:
    """True when the border of an 8-bit L or RGB array is brighter than its centre (a dark drawing on a light
    sheet)."""
    height, width = array.shape[:2]
    border = _mean_luminance(array, _border_mask((height, width)))
    centre = array[height // 4: height - height // 4, width // 4: width - width // 4]
    if centre.size == 0:
        centre = array
    return border > _mean_luminance(centre) + INVERT_MARGIN


def _preview(image: Image.Image, array: np.ndarray) -> np.ndarray:
    """The display preview of ``image`` (``array``: its pixels), downscaled past PREVIEW_MAX_SIDE; not a step of the
    preprocessing (the model's input does not pass through it), so not in the steps."""
    if max(image.size) <= PREVIEW_MAX_SIDE:
        array.flags.writeable = False
        return array  # shared, read-only: a copy of a large image's pixels would raise the peak memory by half
    small = image.copy()
    small.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8).copy()


def _fit_square(array: np.ndarray, size: int, steps: list[str]) -> np.ndarray:
    """Resize keeping the aspect ratio, then pad to size x size with the border's median colour."""
    height, width = array.shape[:2]
    if (height, width) == (size, size):
        return array
    scale = size / max(height, width)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    mode = "L" if array.ndim == 2 else "RGB"
    resized = np.asarray(Image.fromarray(array, mode=mode).resize(
        (new_width, new_height), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.uint8)
    if max(height, width) * 4 <= size:
        # one decimal: 5 -> 28 is 5.6x, not 6x (7 -> 28 stays 4x)
        steps.append(f"a very small source ({width}x{height}) enlarged {round(scale, 1):g}x: check that it is the "
                     "intended image")
    if (new_height, new_width) == (size, size):
        steps.append(f"resized {width}x{height} -> {size}x{size}")
        return resized
    border = array[_border_mask((height, width))]
    fill = np.median(border, axis=0).round().astype(np.uint8)
    canvas = np.empty((size, size) + array.shape[2:], dtype=np.uint8)
    canvas[...] = fill
    top, left = (size - new_height) // 2, (size - new_width) // 2
    canvas[top:top + new_height, left:left + new_width] = resized
    steps.append(f"resized {width}x{height} -> {size}x{size} (aspect kept, padded)")
    return canvas


def png_bytes(pixels: np.ndarray, description: str | None = None) -> bytes:
    """PNG file bytes of an image: (C, H, W), (H, W) or (H, W, 3); floats are rounded to 0..255.
    ``description`` (a release's terms) is stored in the file as its 'Description' text."""
    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise InputError(f"cannot write an image of shape {tuple(np.asarray(pixels).shape)} as PNG")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(np.nan_to_num(array.astype(np.float64))), 0, 255).astype(np.uint8)
    info = None
    if description:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("Description", description)  # UTF-8 text: the terms name ε and δ
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def record_key(data: bytes) -> str:
    """A hash of some bytes (the bytes themselves are not kept): ledger keys, widget keys."""
    return hashlib.sha256(data).hexdigest()[:16]


def image_record_key(pixels: np.ndarray) -> str:
    """An image's ledger key: its model-input pixels, an image and its negative alike (an upload in another file
    format, inverted or not, or in the other polarity is the same record; so is a test image uploaded as a file)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return record_key(min(pixels.tobytes(), (255 - pixels).tobytes()) + repr(pixels.shape).encode())


# --------------------------------------------------------------------------- ZIP archives

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def sanitize_member_name(name: str) -> tuple[str, bool]:
    """A ZIP member name made safe to show and to use under an output folder, and whether it was unsafe.

    Backslashes become '/', drive letters, leading '/', '.' and '..' parts and
    control characters are removed. Unsafe means absolute or climbing out ('..').
    """
    text = unicodedata.normalize("NFC", name).replace("\\", "/")
    text = _CONTROL.sub("", text)
    unsafe = text.startswith("/") or bool(re.match(r"^[A-Za-z]:", text))
    text = re.sub(r"^[A-Za-z]:", "", text)
    parts = []
    for part in text.split("/"):
        if part == "..":
            unsafe = True
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts), unsafe


def iter_zip_images(data: bytes | BinaryIO | Path | str, *, max_files: int = MAX_ZIP_FILES,
                    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES, max_file_bytes: int = MAX_IMAGE_BYTES,
                    shuffle: random.Random | None = None) -> Iterator[tuple[str, bytes | InputError]]:
    """Yield (sanitized name, file bytes or the InputError that makes it unusable) for each ZIP member.

    Members are read one at a time (``data`` may be bytes, a binary file or a
    path), so memory stays bounded. Non-images, encrypted members, unsafe
    names ('../x.png', absolute paths) and oversized members are yielded with an
    InputError and never used as paths. Folders and macOS '__MACOSX/' metadata
    are skipped silently, as are hidden files and Thumbs.db. Raises InputError for a damaged archive, more than
    ``max_files`` members, or more than ``max_total_bytes`` uncompressed (zip bomb). Members come in
    the archive's order, or in an order drawn with ``shuffle``.
    """
    source = io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if isinstance(data, (bytes, bytearray)) and len(data) == 0:
        raise InputError("the ZIP file is empty (0 bytes)")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise InputError("the file is not a ZIP archive or the archive is damaged") from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir() and not is_folder_metadata(info.filename)]
        if len(members) > max_files:
            raise InputError(f"the ZIP holds {len(members):,} files, more than the limit of {max_files:,}")
        if shuffle is not None:
            shuffle.shuffle(members)
        total = 0
        for info in members:
            name, unsafe = sanitize_member_name(info.filename)
            name = name or "(unnamed)"
            if unsafe:  # named as the ZIP has it: cleaned, it could be another member's name, or none in the ZIP
                yield _CONTROL.sub("", unicodedata.normalize("NFC", info.filename)), InputError(
                    "unsafe path in the ZIP (absolute or containing '..'); skipped")
                continue
            if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES and not _image_member(archive, info):
                nested = PurePosixPath(name).suffix.lower() == ".zip"
                yield name, InputError("a ZIP inside the ZIP: nested archives are not read (unpack it and add its "
                                       "images); skipped" if nested else
                                       f"not an image (accepted: {FORMAT_NAMES}); skipped")
                continue
            if info.flag_bits & 0x1:
                yield name, InputError("the file is encrypted (password-protected) in the ZIP; skipped")
                continue
            if info.file_size > max_file_bytes:
                yield name, InputError(f"the file expands to {info.file_size / 2**20:.0f} MB, more than the "
                                       f"limit of {max_file_bytes // 2**20} MB per image; skipped")
                continue
            if total + info.file_size > max_total_bytes:
                raise _zip_bomb(max_total_bytes)
            try:
                with archive.open(info) as handle:
                    # never trust the header's size: read at most one byte past the limit
                    content = handle.read(min(max_file_bytes, max_total_bytes - total) + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
                    RuntimeError, zlib.error):
                yield name, InputError("the file is damaged in the ZIP or uses an unsupported compression; "
                                       "skipped")
                continue
            total += len(content)
            if total > max_total_bytes:
                raise _zip_bomb(max_total_bytes)
            if len(content) > max_file_bytes:
                yield name, InputError(f"the file expands to more than {max_file_bytes // 2**20} MB; skipped")
                continue
            yield name, content


def _image_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Whether a ZIP member without an image suffix is an image by its content (``is_image_content``)."""
    if info.flag_bits & 0x1 or info.is_dir():
        return False
    try:
        with archive.open(info) as handle:
            return is_image_content(handle.read(132))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError, zlib.error):
        return False


def is_folder_metadata(name: str) -> bool:
    """macOS and Windows folder metadata (__MACOSX/, .DS_Store, ._x.png, Thumbs.db): skipped without a word."""
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or any(part.startswith(".") and part not in (".", "..") for part in parts) \
        or parts[-1].casefold() in ("thumbs.db", "desktop.ini")


def _zip_bomb(limit: int) -> InputError:
    return InputError(f"the ZIP expands to more than {limit / 2**20:.0f} MB of files (the limit; a zip bomb?); "
                      "stopped reading it")


# --------------------------------------------------------------------------- CSV tables

DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


@dataclass
class CsvUpload:
    """A parsed CSV upload and what was done to it."""

    frame: pd.DataFrame
    notes: list[str]
    encoding: str
    delimiter: str
    decimal: str = "."  # "," when numbers were written with a decimal comma
    declared_encoding: str | None = None  # the encoding the file shows outside its rows (``declared_encoding``)

    @property
    def csv_format(self) -> dict:
        """How a release of this upload is written (``release_csv``): its delimiter, the decimal mark and the
        encoding chosen without its rows (``release_decimal``, ``declared_encoding``; None: not shown), and under
        "read" the ones it was read with (for the page's sentence on a difference, never for the file)."""
        return {"delimiter": self.delimiter, "decimal": release_decimal(self.delimiter),
                "encoding": self.declared_encoding, "read": {"decimal": self.decimal, "encoding": self.encoding}}


ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8 with a BOM", "utf-16": "UTF-16", "latin-1": "Latin-1",
                  "cp1252": "Windows-1252",
                  "utf-16-le": "UTF-16 (little-endian, without a BOM)", "utf-16-be": "UTF-16 (big-endian, without a BOM)"}


def csv_format_words(delimiter: str = ",", decimal: str = ".", encoding: str = "utf-8") -> str:
    """'semicolon-separated with decimal commas, in Latin-1': how a CSV of this format is written (plain UTF-8
    goes unsaid)."""
    return (f"{DELIMITER_NAMES[delimiter]}-separated" + (" with decimal commas" if decimal == "," else "")
            + (f", in {ENCODING_NAMES[encoding]}" if encoding != "utf-8" else ""))


def release_decimal(delimiter: str) -> str:
    """The decimal mark of a released CSV: a comma where it is semicolon-separated (as spreadsheets that write
    decimal commas separate their CSVs), else a point. Chosen by the separator, never by the file's numbers: whether
    its cells have decimal commas is a fact about its records (a file whose numbers are whole has none), and a
    release written by it would tell that fact."""
    return "," if delimiter == ";" else "."


def declared_encoding(data: bytes, encoding: str) -> str | None:
    """The encoding a file shows outside its rows (``encoding``: what ``decode_text`` read it as): a byte order
    mark's or UTF-16's, else its header line's where that has bytes beyond ASCII; None where only its rows could tell
    (an ASCII header: whether a UTF-8 file is Windows-1252 shows in its rows' letters, a fact about its records)."""
    if encoding in ("utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"):
        return encoding
    lines = re.split(rb"\r\n|\r|\n", data[:65536], maxsplit=2)
    hint = len(lines) > 1 and SEPARATOR_LINE.match(lines[0].decode("latin-1")) is not None  # Excel's sep=; (quoted)
    header = lines[1] if hint else lines[0]
    if header.isascii():
        return None
    try:
        header.decode("utf-8")
    except UnicodeDecodeError:
        return single_byte_text(header)[1]
    return "utf-8"


def format_change_reason(delimiter: str, read_decimal: str, decimal: str, read_encoding: str, encoding: str,
                         source: str, declared: str | None = None) -> str | None:
    """Why a release of ``source`` is written with another decimal mark or encoding than it was read with (where no
    released value forced it; ``declared``: the encoding its header shows), or None: the release's format is chosen
    without reading the rows."""
    reasons = []
    if decimal != read_decimal:
        reasons.append(f"a release's decimal mark follows its separator (decimal {'commas' if decimal == ',' else 'points'}"
                       f" where it is {DELIMITER_NAMES[delimiter]}-separated), not the cells (their form is a fact "
                       "about their records)")
    if encoding != read_encoding and declared is not None:
        reasons.append(f"{source}'s header is written in {ENCODING_NAMES[declared]}, which a release follows (its rows "
                       f"were read as {ENCODING_NAMES[read_encoding]})")
    elif encoding != read_encoding:
        reasons.append(f"{source}'s header shows no encoding (its rows were read as {ENCODING_NAMES[read_encoding]}), "
                       "and a release's is chosen without its rows: UTF-8"
                       + (", with a BOM as a text the model can release is not ASCII" if encoding == "utf-8-sig" else ""))
    return "; ".join(reasons) or None


def release_encoding(declared: str | None, *, frame: pd.DataFrame | None = None, texts: Iterable = ()) -> str:
    """The encoding of a released CSV: ``declared`` (``declared_encoding``) where every released text can be written
    in it (``writable_encoding``); without one, UTF-8, with a BOM where a released text is not ASCII (spreadsheets
    read text without one in their own code page)."""
    if declared is not None:
        return writable_encoding(declared, frame=frame, texts=texts)
    return "utf-8" if writable_encoding("ascii", frame=frame, texts=texts) == "ascii" else "utf-8-sig"


def writable_encoding(encoding: str, *, frame: pd.DataFrame | None = None, texts: Iterable = ()) -> str:
    """``encoding`` (an input's, as ``decode_text`` names it) when ``frame``'s column names and text cells and
    ``texts`` can all be written in it, else "utf-8-sig": UTF-8 with a BOM, which spreadsheets read as UTF-8."""
    if encoding.startswith("utf-"):  # they write every text
        return encoding
    if frame is not None:
        columns = [frame.iloc[:, i] for i in range(frame.shape[1])]
        texts = [*texts, *map(str, frame.columns),
                 *(value for column in columns if not pd.api.types.is_numeric_dtype(column) for value in column)]
    try:
        for text in texts:
            if isinstance(text, str):
                text.encode(encoding)
    except UnicodeEncodeError:
        return "utf-8-sig"
    return encoding


def bomless_utf16(sample: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' for text saved in UTF-16 without a byte order mark (as some tools do), else None.

    The NUL high bytes of its ASCII characters (digits, separators and line ends: every CSV has some, Cyrillic or
    Chinese ones too) fall at odd (little-endian) or even positions; a few characters such as U+3000 or U+0100
    put a NUL at the other. ``decode_text`` then refuses what decodes to control characters (binary files)."""
    even, odd = sample[0::2], sample[1::2]
    if len(odd) < 2:
        return None
    for zeros, other, encoding in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if zeros.count(0) >= 0.1 * len(zeros) and other.count(0) <= 0.01 * len(other):
            return encoding
    return None


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 with or without BOM, UTF-16 with BOM or without (utf-16-le, utf-16-be), else
    Windows-1252 (cp1252: what spreadsheets on Windows write; its euro sign and quotes would be control
    characters in Latin-1), else Latin-1 (which decodes every byte)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise InputError("the file starts like UTF-16 text but cannot be decoded as such") from None
    utf16 = bomless_utf16(data[:65536])
    if utf16 is not None:
        try:
            text = data.decode(utf16)
        except UnicodeDecodeError:
            raise InputError("the file looks like UTF-16 text without a byte order mark but cannot be decoded as "
                             "such: save it as UTF-8") from None
        if not re.search("[\x00-\x08\x0e-\x1f]", text[:32768]):  # control characters: binary after all
            return text, utf16
    if b"\x00" in data[:65536]:
        raise InputError("the file is binary, not a CSV text file")
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            pass
    else:
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    return single_byte_text(data)


def single_byte_text(data: bytes) -> tuple[str, str]:
    """(text, "cp1252") where every byte is a Windows-1252 character, else (text, "latin-1")."""
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:  # one of the five bytes Windows-1252 leaves undefined
        return data.decode("latin-1"), "latin-1"


def line_feeds(text: str) -> str:
    """``text`` with its line ends as line feeds where it has only carriage returns (old Mac files, Excel's "CSV
    (Macintosh)"), which read as one long line; a carriage return inside a quoted cell stays as it is."""
    if "\r" not in text:
        return text
    parts = text.split('"')  # even parts are outside quotes ('""' inside a quoted cell: an empty part between)
    if any("\n" in part for part in parts[::2]):  # line feeds end its lines (a line feed in a cell: Excel's break)
        return text
    return '"'.join(part.replace("\r", "\n") if index % 2 == 0 else part for index, part in enumerate(parts))


SEPARATOR_LINE = re.compile(r'"?sep=(.)"?[ \t]*(?:\r?\n|$)', re.IGNORECASE)


def separator_line(text: str) -> tuple[str, str | None]:
    """(text without it, the separator) where the first line is Excel's separator hint ("sep=;"); else (text,
    None)."""
    hint = SEPARATOR_LINE.match(text)
    if hint is None:
        return text, None
    if hint.group(1) not in DELIMITERS:
        raise InputError(f"the file's first line asks for the separator {hint.group(1)!r}: only comma, semicolon, "
                         "tab or pipe separated files are read")
    return text[hint.end():], hint.group(1)


def sniff_delimiter(text: str) -> str:
    """The delimiter (comma, semicolon, tab or pipe) that splits the first lines into the most equal columns."""
    sample = line_feeds(text[:65536])
    best, best_score = ",", (False, False, 0, 0.0)
    for delimiter in DELIMITERS:
        try:
            rows = [row for _, row in zip(range(50), csv.reader(io.StringIO(sample), delimiter=delimiter)) if row]
        except csv.Error:
            continue
        if len(rows) > 1 and not sample.endswith(("\n", "\r")):
            rows = rows[:-1]  # the sample may cut the last row short
        if not rows:
            continue
        widths = [len(row) for row in rows]
        header = widths[0]
        consistency = sum(w == header for w in widths) / len(widths)
        # several columns beat one; then rows agreeing with the header; then more columns
        score = (header > 1, consistency >= 0.8, header, consistency)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def header_looks_like_data(header: list[str]) -> bool:
    """Whether a CSV's first row is a record rather than column names: at least one of its cells, and at least half
    of them (empty ones count), are finite numbers (``is_number``: 1.5, -3, 1,5, 1e3).

    Column names that are numbers are rare, and a header of mostly numbers rarer (a table of years, "region,2019,
    2020,2021", is refused and needs a name such as y2019); a first data row is mostly numbers in most tables."""
    numbers = sum(is_number(cell) for cell in header)
    return numbers >= 1 and numbers >= 0.5 * len(header)


def _unique_names(names: list[str], notes: list[str]) -> list[str]:
    cleaned, seen = [], set()
    for index, raw in enumerate(names):
        name = raw.strip() or f"column_{index + 1}"
        if not raw.strip():
            notes.append(f"column {index + 1} has no name; called it {name!r}")
        if name in seen:
            suffix = 2
            while f"{name}_{suffix}" in seen or f"{name}_{suffix}" in names:
                suffix += 1
            notes.append(f"duplicate column name {name!r}: the repeat is renamed {name}_{suffix!s}")
            name = f"{name}_{suffix}"
        seen.add(name)
        cleaned.append(name)
    return cleaned


# the texts pandas reads as missing by default (its STR_NA_VALUES) besides the empty cell, as R (NA), databases (NULL)
# and spreadsheets (#N/A) write a missing value
MISSING_TEXTS = frozenset({"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                           "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
# how CSVs are read: those texts are missing but for "None", a value in clinical tables (symptoms: None) that pandas
# read as missing, so that a kept condition "None" came back as an empty cell (no CSV writer writes None for a gap)
CSV_MISSING = {"keep_default_na": False, "na_values": ["", *sorted(MISSING_TEXTS - {"None"})]}


UNCLOSED_QUOTE = ("a quoted cell is never closed (a \" with no closing \" after it), so the rest of the file would "
                  "be read as that one cell; close the quote, or remove the stray \"")


def unclosed_quote(error: Exception) -> bool:
    """Whether pandas' error is a quote opened and never closed (its C parser's words)."""
    return "EOF inside string" in str(error)


def _longer_rows_error(longer: int, shifted: list, names: list, delimiter: str) -> InputError:
    rows = ", ".join(str(row) for row, _, _ in shifted) + (", …" if longer > len(shifted) else "")
    return InputError(f"{counted(longer, 'row')} of the CSV {'has' if longer == 1 else 'have'} more fields than its "
                      f"header ({len(names)} columns, {DELIMITER_NAMES[delimiter]}-separated; data "
                      f"{plural('row', longer)} {rows}, counting from 1 below the "
                      "header, blank lines not counted): a separator typed in a cell (32;1 for 32,1) shifts the "
                      "rest of its row into the wrong columns; quote cells that hold the separator, or fix or "
                      "remove these rows (a separator after a row's last cell is read as no field only where "
                      "more than half of the rows end in one: give every row one, or none)")


def read_csv_upload(data: bytes, *, max_rows: int = MAX_CSV_ROWS, max_columns: int = MAX_CSV_COLUMNS,
                    max_categories: int = MAX_CATEGORIES, seed: int = CSV_SAMPLE_SEED,
                    text_columns: Collection[str] = (), number_columns: Collection[str] = ()) -> CsvUpload:
    """Parse an uploaded CSV with stated limits, and say in ``notes`` what was changed.

    Encoding (UTF-8, BOM, Latin-1) and delimiter (comma, semicolon, tab, pipe)
    are detected. Duplicate names are renamed; all-empty columns are dropped; a
    text column with more than ``max_categories`` distinct values is treated as
    an identifier and dropped; more than ``max_rows`` rows are sampled with a
    fixed seed; more than ``max_columns`` columns are refused. Digit codes with a leading zero
    and ``text_columns`` (a model's columns of text categories) are read as text, as written;
    ``number_columns`` (a model's numbers and number categories) never are.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError("a CSV upload must be bytes")
    data = bytes(data)
    if len(data) > MAX_CSV_BYTES:
        raise InputError(f"the CSV is {len(data) / 2**20:.0f} MB; files up to {MAX_CSV_BYTES // 2**20} MB "
                         "are accepted")
    text, encoding = decode_text(data)
    notes: list[str] = []
    if encoding in ("cp1252", "latin-1"):
        notes.append(f"the file is not valid UTF-8; read as {ENCODING_NAMES[encoding]}")
    elif encoding in ("utf-16-le", "utf-16-be"):
        notes.append(f"the file is UTF-16 without a byte order mark; read as {ENCODING_NAMES[encoding]}")
    if not text.strip():
        raise InputError("the CSV file is empty")
    text = line_feeds(text)
    text, delimiter = separator_line(text)
    if not text.strip():
        raise InputError("the CSV file is empty")
    delimiter = delimiter or sniff_delimiter(text)
    try:
        header = next(csv.reader(io.StringIO(text), delimiter=delimiter))
    except (csv.Error, StopIteration):
        raise InputError("the CSV header row cannot be read") from None
    if len(header) > max_columns:
        raise InputError(f"the CSV has {len(header)} columns; at most {max_columns} are supported")
    if header_looks_like_data(header):  # read as names, a record's values would be every release's header row
        numbers = sum(is_number(cell) for cell in header)
        raise InputError(f"the first row looks like data, not column names ({numbers} of its {len(header)} cells are "
                         "numbers): add a header row (one name per column) as the first line of the file and upload "
                         "it again; if that row is the header, give its columns names that are not numbers "
                         "(y2019, not 2019)")
    names = _unique_names(header, notes)
    try:
        cells = _cells_as_written(text, delimiter, names)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, MemoryError):
        cells = None  # the typed read below says what is wrong
    missing = _missing_values(cells, text_columns, number_columns)
    try:
        with warnings.catch_warnings():
            # pandas only warns when every row has more fields than the header, and drops the extra ones
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), sep=delimiter, header=0, names=names, skipinitialspace=True,
                                **missing, index_col=False, low_memory=False)
    except pd.errors.EmptyDataError:
        raise InputError("the CSV file is empty") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        # pandas' "line N" counts records, not the file's lines (a cell with a line break, a "sep=" line before
        # the header): the rows are named as data rows, as below
        if unclosed_quote(error):
            raise InputError(f"the CSV cannot be parsed: {UNCLOSED_QUOTE}") from None
        _, _, longer, shifted = rows_against_header(io.StringIO(text, newline=""), delimiter)
        if longer:
            raise _longer_rows_error(longer, shifted, names, delimiter) from None
        line = re.search(r"line (\d+)", str(error))
        where = f" at record {line.group(1)} (counting the header as 1)" if line else ""
        raise InputError(f"the CSV cannot be parsed{where}: a row has more fields than the header "
                         f"({len(names)} columns, {DELIMITER_NAMES[delimiter]}-separated)") from None
    except (ValueError, UnicodeError, MemoryError):
        raise InputError("the CSV cannot be parsed") from None
    if len(frame) == 0:
        raise InputError("the CSV has a header but no data rows")
    count, first, longer, shifted = rows_against_header(io.StringIO(text, newline=""), delimiter)
    if longer:  # pandas says nothing of a first row whose extra field is empty: it would be read shifted
        raise _longer_rows_error(longer, shifted, names, delimiter)
    if count:
        raise InputError(f"{counted(count, 'row')} of the CSV {'has' if count == 1 else 'have'} fewer fields than its "
                         f"header ({len(names)} columns, {DELIMITER_NAMES[delimiter]}-separated; data "
                         f"{plural('row', count)} {', '.join(map(str, first))}"
                         + (", …" if count > len(first) else "") + ", counting from 1 below the header, blank lines "
                         "not counted): a row cut short (e.g. by a line break in a cell) would be released with "
                         "made-up values; give every row all its fields (an empty cell is nothing between two "
                         "separators)")
    blank = frame.isna().all(axis=1).to_numpy()
    if blank.all():
        raise InputError("every data row of the CSV is empty (only separators)")
    if blank.any():  # a spreadsheet's trailing rows of separators: no record, and as one a row of empty cells
        positions = np.flatnonzero(blank)
        shown = ", ".join(str(position + 1) for position in positions[:5]) + (", …" if len(positions) > 5 else "")
        notes.append(f"{counted(len(positions), 'row')} with every cell empty (data {plural('row', len(positions))} "
                     f"{shown}, counting from 1 below "
                     "the header): dropped")
        # the file again without them, cells as written: the columns' types come from the other rows (an empty
        # cell made a column of whole numbers decimal), and the codes below are read from the same rows
        if cells is None:
            cells = _cells_as_written(text, delimiter, names)
        text = cells[~blank].to_csv(index=False, sep=delimiter)
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, header=0, names=names, skipinitialspace=True,
                            index_col=False, low_memory=False, **missing)
    frame, codes = _codes_with_leading_zeros(frame, text, delimiter, notes, text_columns, number_columns, missing)
    if len(frame) > max_rows:
        notes.append(f"the file has {len(frame):,} rows, more than the limit of {max_rows:,}: a random sample "
                     f"of {max_rows:,} rows (seed {seed}) is used")
        frame = frame.sample(n=max_rows, random_state=seed).sort_index().reset_index(drop=True)
    decimal, comma_examples, whole = ".", {}, {}
    if delimiter != "," and decimal_comma_columns(frame, number_columns, text_columns):
        frame, decimal = _decimal_commas(frame, notes, number_columns, whole, text_columns), ","
    elif delimiter == ",":  # quoted "29,2": a decimal comma or a thousands separator? (noted with the column)
        comma_examples = {name: frame[name].dropna().astype(str).iloc[0]
                          for name in decimal_comma_columns(frame, text_columns=text_columns)}
    frame = _clean_columns(frame, notes, max_categories, codes, comma_examples, number_columns, delimiter != ",",
                           whole)
    frame = _non_finite_as_empty(frame, notes)
    return CsvUpload(frame, notes, encoding, delimiter, decimal, declared_encoding(data, encoding))


def _cells_as_written(text: str, delimiter: str, names: list[str]) -> pd.DataFrame:
    """Every cell of the CSV as the text written in it (nothing read as missing, no types)."""
    with warnings.catch_warnings():  # rows ending in a separator: read without it (``rows_against_header``)
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        return pd.read_csv(io.StringIO(text), sep=delimiter, header=0, names=names, dtype=str, na_filter=False,
                           skipinitialspace=True, index_col=False, low_memory=False)


def _missing_values(cells: pd.DataFrame | None, text_columns: Collection[str] = (),
                    number_columns: Collection[str] = ()) -> dict:
    """``read_csv``'s missing-value arguments for a file (``cells``: ``_cells_as_written``; None: not readable):
    ``CSV_MISSING``, and "None" too in a model's number column (``number_columns``), and, in a column no model names,
    where its other cells are all numbers (or missing): there it is a gap (as Python's str() writes one), not a value,
    and as a value it would make the column's numbers categories. In a model's text column it is a value."""
    if cells is None:
        return CSV_MISSING
    among_numbers = []
    for name in cells.columns:
        if name in number_columns:
            among_numbers.append(name)
            continue
        none = cells[name] == "None"  # as written: pandas matches a missing text exactly ("None " is a value)
        if name not in text_columns and none.any():
            values = cells[name].str.strip()
            rest = values[~none & (values != "") & ~values.isin(MISSING_TEXTS)]
            if len(rest) and bool(rest.map(is_number).all()):
                among_numbers.append(name)
    if not among_numbers:
        return CSV_MISSING
    listed = CSV_MISSING["na_values"]
    return {"keep_default_na": False,
            "na_values": {name: [*listed, "None"] if name in among_numbers else listed for name in cells.columns}}


def _non_finite_as_empty(frame: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Numbers that are not finite (inf, -inf, 1e400) as empty cells, said per column: no model can encode them
    (a release reads them as empty, and a fit on them fails)."""
    for name in frame.columns:
        column = frame[name]
        if not pd.api.types.is_float_dtype(column):
            continue
        infinite = np.isinf(column.to_numpy(dtype=np.float64))
        if infinite.any():
            frame[name] = column.where(~infinite)
            one = int(infinite.sum()) == 1
            notes.append(f"column {name!r} has {counted(int(infinite.sum()), 'cell')} that "
                         f"{'is not a finite number' if one else 'are not finite numbers'} (inf, -inf, or too large, "
                         f"such as 1e400): read as empty (a release fills {'it' if one else 'them'})")
    return frame


# codes written with digits, at least one with a leading zero (ZIP 02134, ICD-9 038.9, 008.45): not numbers;
# an hour 08 or a zero-padded measurement 0012.33 is no code
DIGIT_CODE = re.compile(r"\d{3,}|\d{2,3}\.\d{1,2}")
LEADING_ZERO = re.compile(r"0\d")


def _codes_with_leading_zeros(frame: pd.DataFrame, text: str, delimiter: str, notes: list[str],
                              text_columns: Collection[str] = (), number_columns: Collection[str] = (),
                              missing: dict = CSV_MISSING) -> tuple[pd.DataFrame, set[str]]:
    """Columns of digit codes (``DIGIT_CODE``, one at least with a leading zero) as text, as written, and their
    names; so are ``text_columns`` (a model's columns of text categories), never ``number_columns`` (a model's
    numbers). Read as numbers, 02134 would become 2134, 250.00 would become 250.0, and a code would be modeled
    as a measurement."""
    candidates = [name for name in frame.columns if not pd.api.types.is_bool_dtype(frame[name])
                  and name not in number_columns]
    read_as_numbers = [name for name in candidates if pd.api.types.is_numeric_dtype(frame[name])]
    codes: set[str] = set()
    # text columns hold their cells as written; number columns are read again, as text, only where one is a model's
    # text or a cell of the file starts with a zero (most files have none: they are parsed once)
    reread = bool(set(read_as_numbers) & set(text_columns)) or bool(
        read_as_numbers and re.search(rf"(?:^|{re.escape(delimiter)})[ \"]*0\d", text, re.MULTILINE))
    written = frame.assign(**pd.read_csv(io.StringIO(text), sep=delimiter, header=0, names=list(frame.columns),
                                         usecols=read_as_numbers, dtype=str, skipinitialspace=True, index_col=False,
                                         **missing,
                                         low_memory=False)) if reread else frame
    for name in candidates:
        number_typed = name in read_as_numbers
        if number_typed and not reread:
            continue  # as numbers they lost nothing: no cell starts with a zero
        cells = written[name].dropna().astype(str).str.strip()
        if name in text_columns:
            codes.add(name)
            if number_typed and len(cells):
                frame[name] = written[name].str.strip()
                notes.append(f"column {name!r} is read as text, as written: the chosen model knows it as categories "
                             "written as text")
            continue
        numbers = cells[pd.to_numeric(cells, errors="coerce").notna()]  # a text column's few other cells are words
        if len(numbers) >= max(1, NUMBER_SHARE * len(cells)) and numbers.str.match(LEADING_ZERO).any() \
                and numbers.str.fullmatch(DIGIT_CODE).all():
            codes.add(name)
            if number_typed:
                frame[name] = written[name].str.strip()
            example = numbers[numbers.str.match(LEADING_ZERO)].iloc[0]
            notes.append(f"column {name!r} holds codes written with a leading zero (e.g. {example!r}): read as text "
                         "(categories), not as numbers")
    return frame, codes


# a number as European spreadsheets write it: 1,5  -,5  1.234,5  1,5e1 (thousands dots, a decimal comma), and as
# French ones do: 341 088,0 with a no-break space (U+00A0) or a narrow one (U+202F) between groups of thousands; a
# plain space only so (groups of exactly three digits, one kind of separator in a number), never "12 5" or "1 2345"
DECIMAL_COMMA = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d{1,3}(?:\u00a0\d{3})+|\d{1,3}(?:\u202f\d{3})+"
                           r"|\d{1,3}(?: \d{3})+|\d*)(?:,\d+)?(?:[eE][+-]?\d+)?")
GROUP_SEPARATORS = str.maketrans("", "", ". \u00a0\u202f")
NUMBER_SHARE = 0.9  # a text column whose non-empty cells are at least this share numbers is read as numbers ...
MODEL_NUMBER_SHARE = 0.5  # ... or this share, in a chosen model's number columns
MODEL_EMPTY_CELL = ("a number column of the model reads an empty cell as the mean stored in the model, said before Privatize; a "
                    "column of categories cannot release one")
NOT_A_MEASUREMENT = re.compile(r"\s*[<>≤≥]=?\s*[\d.,]+\s*|[^\d]*")  # ... when the rest are words or "<0.5"


def comma_number(value):
    """A cell written with a decimal comma ('1,5', '1.234,5', '341\u00a0088,0', '-,5', '1,5e1') as a float; other
    values as they are."""
    if isinstance(value, str):
        text = value.strip()
        if any(c.isdigit() for c in text) and DECIMAL_COMMA.fullmatch(text):
            return float(text.translate(GROUP_SEPARATORS).replace(",", "."))
    return value


PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def cell_number(value):
    """A text cell as a number, read alone: written with a decimal point (25.125) as that number, else as
    ``comma_number`` reads it (1,5 and 1.234,5); other values as they are. Never by the file's other cells: read
    with the mark most of them had, 25.125 became 25125 where another row had a decimal comma, and a row's value
    changed with its batch mates'."""
    if isinstance(value, str) and PLAIN_NUMBER.fullmatch(value.strip()):
        return float(value)
    return comma_number(value)


def is_number(text: str) -> bool:
    """Whether a cell is written as a finite number, with a decimal point or a decimal comma (``cell_number``)."""
    number = cell_number(text.strip())
    return isinstance(number, float) and bool(np.isfinite(number))


def decimal_comma_columns(frame: pd.DataFrame, number_columns: Collection[str] = (),
                          text_columns: Collection[str] = ()) -> list[str]:
    """Text columns whose cells are (at least ``NUMBER_SHARE`` of them; half of them in ``number_columns``, a chosen
    model's, as ``_clean_columns`` reads those) numbers written with a decimal comma, at least one with a comma;
    never ``text_columns`` (a chosen model's categories written as text: 1,5 is the category as written).

    Only meaningful for files not separated by commas (e.g. semicolon CSVs from European
    spreadsheets), where a comma inside a value can only be a decimal mark or a thousands separator.
    """
    names = []
    for name in frame.columns:
        values = frame[name].dropna()
        if values.empty or pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) \
                or name in text_columns:
            continue
        text = values.astype(str).str.strip()
        numbers = text.map(cell_number).map(lambda v: isinstance(v, float))
        share = MODEL_NUMBER_SHARE if name in number_columns else NUMBER_SHARE
        if numbers.mean() >= share and text[numbers].str.contains(",", regex=False).any():
            names.append(name)
    return names


ONE_DOT = re.compile(r"[+-]?\d{1,3}\.\d{3}")  # 12.500: twelve and a half, or twelve thousand five hundred?
THREE_AFTER_COMMA = re.compile(r"[+-]?[1-9]\d{0,2},\d{3}")  # 1,234: a decimal comma, or a thousands separator?


def three_digit_commas_note(name, with_commas: pd.Series, where: str = "") -> str | None:
    """A note where every cell of a column that has a comma (``with_commas``, stripped text) has one comma and three
    digits after it, not after a lone 0 (1,234): read as a decimal comma (1.234), as a file not separated by commas
    is, but a thousands separator would give 1234; None where any has other digits after its comma (4,92, 0,125:
    decimal commas). ``where``: words after the column's name (' in the first 1,000 rows of x.csv')."""
    if with_commas.empty or not with_commas.str.fullmatch(THREE_AFTER_COMMA).all():
        return None
    example, count = with_commas.iloc[0], len(with_commas)
    each = f"each of its {count:,} numbers with a comma has" if count > 1 else "its one number with a comma has"
    return (f"column {name!r}{where}: {each} three digits after the comma (e.g. {example!r}), read as a decimal "
            f"comma ({cell_number(example):g}); if the commas separate thousands, save the file without thousands "
            f"separators ({example.replace(',', '')})")


def _decimal_commas(frame: pd.DataFrame, notes: list[str], number_columns: Collection[str] = (),
                    whole: dict[str, str] | None = None, text_columns: Collection[str] = ()) -> pd.DataFrame:
    """The ``decimal_comma_columns`` read as numbers (other cells: empty); the note says which reading was taken:
    one note for the columns read whole (a European file has a decimal comma in most of its columns; ``whole``
    gets them, name -> example), one per column that lost cells."""
    whole = {} if whole is None else whole
    for name in decimal_comma_columns(frame, number_columns, text_columns):
        text = frame[name].dropna().astype(str).str.strip()
        example = text[text.str.contains(",")].iloc[0]
        dotted = text[text.str.fullmatch(ONE_DOT)]
        if len(dotted):
            notes.append(f"column {name!r}: {counted(len(dotted), 'cell')} such as {dotted.iloc[0]!r}, with one dot "
                         f"and no comma, {'is' if len(dotted) == 1 else 'are'} read with a decimal point "
                         f"({float(dotted.iloc[0]):g}), each cell alone; if the "
                         f"dot separates thousands, write {dotted.iloc[0].replace('.', '')} (or "
                         f"{dotted.iloc[0]},0)")
        doubted = three_digit_commas_note(name, text[text.str.contains(",")])
        if doubted:  # it says how the column was read: not also listed below with one of these as the example
            notes.append(doubted)
        written = frame[name].map(cell_number)
        numbers = pd.to_numeric(written, errors="coerce")
        if (numbers.isna() & written.notna()).any():
            read = ("has numbers read with decimal commas, as said above" if doubted
                    else f"has numbers with a decimal comma (e.g. {example!r}): read as decimal numbers")
            frame[name] = _as_numbers(written, name, notes, read, *([MODEL_EMPTY_CELL] if name in number_columns else []))
        else:
            frame[name] = numbers.astype(np.float64)
            if not doubted:
                whole[name] = example
    if note := decimal_commas_note(whole):
        notes.append(note)
    return frame


def decimal_commas_note(whole: dict[str, str]) -> str | None:
    """The one note for the columns read whole with decimal commas (name -> a cell with a comma), or None."""
    if len(whole) == 1:
        ((name, example),) = whole.items()
        return f"column {name!r} has numbers with a decimal comma (e.g. {example!r}): read as decimal numbers"
    if whole:
        name, example = next(iter(whole.items()))
        return (f"columns {', '.join(map(repr, whole))} have numbers with a decimal comma (e.g. {example!r} in "
                f"{name!r}): read as decimal numbers")
    return None


def _as_numbers(column: pd.Series, name: str, notes: list[str], note: str,
                empty: str = "a release fills them") -> pd.Series:
    """``column`` as float64, cells that are not numbers as empty; ``note`` (and those cells, with ``empty``: what
    becomes of an empty cell) said in ``notes``."""
    numbers = pd.to_numeric(column, errors="coerce").astype(np.float64)
    lost = column[numbers.isna() & column.notna()]
    if len(lost):
        examples = ", ".join(repr(str(v)) for v in lost.unique()[:3])
        note += (f"; {counted(len(lost), 'cell')} that {'is not a number' if len(lost) == 1 else 'are not numbers'} "
                 f"({examples}) read as empty ({empty})")
    notes.append(f"column {name!r} {note}")
    return numbers


IDENTIFIER_MIN_DISTINCT = 20  # a text column with more distinct values than this ...
IDENTIFIER_DISTINCT_SHARE = 0.5  # ... that are at least this share of its rows identifies rows, not categories
# ... and so does one whose values (this share of them) have the shape of dates or record numbers, however often
# each repeats (one row per visit): as categories they would be stored in the model and could be released
IDENTIFIER_SHAPES = {
    "dates": re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:[ T].*)?|\d{1,2}[./]\d{1,2}[./]\d{2,4}(?: .*)?"),
    # 5+ digits in a row (MRN100000, 0012345678); not lab codes such as LOINC's 6690-0 or 10331-7
    "record numbers": re.compile(r"(?!\d{1,5}-\d$)\S*\d{5,}\S*"),
}
IDENTIFIER_SHAPE_SHARE = 0.9
# a column of whole numbers named with one of these words (split at non-letters and camelCase: PatientID) or a
# pair of them (record_no, CaseNumber) holds record numbers; "number" or "index" alone does not (glycemic_index)
IDENTIFIER_NAME_WORDS = frozenset({"id", "ids", "mrn", "uid", "uuid", "accession", "ssn"})
IDENTIFIER_NAME_HEADS = frozenset({"record", "patient", "case", "subject", "sample", "visit", "row", "study",
                                   "participant"})
IDENTIFIER_NAME_TAILS = frozenset({"no", "nr", "number", "num", "id", "key", "index", "idx"})
# a category with a different value in every one of at least this many rows identifies rows: an upload notes it
# (a small table's text column is kept), fit_tabular refuses it
UNIQUE_PER_ROW_MIN_ROWS = 5


# a text column named like this holds personal data however few its values: as categories a model fitted on the
# table would store each of them and a release could contain them (surnames, e-mail addresses)
PERSONAL_NAME_WORDS = frozenset({"surname", "firstname", "lastname", "forename", "givenname", "fullname",
                                 "familyname", "maidenname", "patientname", "email", "phone", "telephone", "address",
                                 "street", "ssn", "mrn"})


def _name_words(name) -> list[str]:
    """A column name's words, lower case: split at non-letters and camelCase (PatientID: patient, id)."""
    return [word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", str(name))]


def _personal_name(name, distinct: int) -> str | None:
    """The word (or two joined: first_name) that names a column as personal data, or None: the name's last word
    (home_phone, email_address; not address_type or email_opt_in), and the whole name or at least 3 distinct
    values (has_phone holding yes/no is no phone number)."""
    words = _name_words(name)
    if not words:
        return None
    found = sorted(({words[-1]} | ({words[-2] + words[-1]} if len(words) > 1 else set())) & PERSONAL_NAME_WORDS)
    if not found:
        return None
    return found[0] if "".join(words) in PERSONAL_NAME_WORDS or distinct >= 3 else None


def _identifier_name(name) -> str | None:
    """The word that names a column of whole numbers, a different one in every row, as record numbers (patient_id,
    RecordNo), or None. As numbers a fitted model would model them and release made-up IDs beside other records'
    values, which a reader takes for those patients. (Values alone do not tell: ages 20 to 59 in a small table
    run without a gap too.)"""
    words = _name_words(name)
    named = sorted(set(words) & IDENTIFIER_NAME_WORDS)
    if named:
        return named[0]
    if len(words) == 1 and words[0] in IDENTIFIER_NAME_HEADS:  # a column named "record" or "patient" alone
        return words[0]
    pairs = [f"{head} {tail}" for head, tail in zip(words, words[1:])
             if head in IDENTIFIER_NAME_HEADS and tail in IDENTIFIER_NAME_TAILS]
    return pairs[0] if pairs else None


def _identifier_shape(text: pd.Series) -> str | None:
    for shape, pattern in IDENTIFIER_SHAPES.items():
        if text.str.fullmatch(pattern).mean() >= IDENTIFIER_SHAPE_SHARE:
            return shape
    return None


FREE_TEXT_WORDS = 6  # a category of this many words or more reads as a sentence, not a label


def _free_text(values: pd.Series) -> bool:
    """Whether a text column's values include sentences (FREE_TEXT_WORDS words or more)."""
    return bool((values.astype(str).str.split().str.len() >= FREE_TEXT_WORDS).any())


def rows_against_header(lines, delimiter: str, skipped_lines: int = 0) -> tuple[int, list[int], int,
                                                                                list[tuple[int, int, int]]]:
    """(count, the first five) of the data rows with fewer fields than the header in CSV ``lines`` (opened with
    newline=""), whose first record that is not blank is the header; data rows counted from 1, blank lines not
    counted. pandas fills a row's missing fields in as empty cells, so a row cut in two by a line break in a cell
    would be read as a record with empty cells. Read as pandas reads: spaces after a separator skipped, lines that
    are empty or hold only spaces skipped, a header's trailing empty names (a separator ending the header line) no
    fields a row must have; cells of any length (the csv module's own limit lifted while reading).

    Then, in the same pass, (count, the first five as (data row, line it starts on, fields)) of the data rows with
    more fields than the header (all its fields, trailing empty names too, as pandas counts them). Rows
    whose extra fields are empty are not counted where they are more than half of the rows, all of one length (a
    separator ending every row, as some exports write; a row added by hand without it): read without them, each
    row keeps its columns. A row with an extra field, even an empty or NA one, among rows without, or longer than the others: a
    separator typed inside a cell (32;1 for 32,1) has shifted it; where more than half of the rows end in a
    separator (one length), only the odd rows are counted (the others are as the export wrote them).

    Raises InputError for a line break in an unquoted cell, and for a data row that opens a quoted cell and never
    closes it (naming the row and its line in the file, ``skipped_lines`` read before ``lines``: the rest of the
    file would be read as that cell)."""

    def blank(record: list[str]) -> bool:  # what pandas skips as a blank line
        return not record or (len(record) == 1 and not record[0].strip())

    def add(group: list, row: tuple[int, int, int]) -> None:  # [count, the first five]
        group[0] += 1
        if len(group[1]) < 5:
            group[1].append(row)

    pending: list[list[str]] = [[]]  # the lines read for the record the reader gives next (swapped, not copied)

    def tracked():
        for line in lines:
            pending[0].append(line)
            yield line

    reader = csv.reader(tracked(), delimiter=delimiter, skipinitialspace=True)
    count, first, number, ended = 0, [], 0, 0
    last: tuple[int, int, list[str]] | None = None  # the last data row: (number, line it starts on, its lines)
    by_length: dict[int, list] = {}  # longer rows with empty extra fields, per length: [count, first five]
    filled, fitting = [0, []], 0  # longer rows with text in an extra field; rows no longer than the header
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # (pandas reads any cell: only a longer limit, restored below)
    try:
        header = next((record for record in reader if not blank(record)), [])
        named = len(header)  # pandas' columns: trailing empty names are unnamed columns
        while header and not header[-1].strip():
            header = header[:-1]
        ended = reader.line_num
        pending[0] = []
        for record in reader:
            starts, ended = ended + 1, reader.line_num
            record_lines, pending[0] = pending[0], []
            if blank(record):
                continue
            number += 1
            last = (number, starts, record_lines)
            if len(record) < len(header):
                count += 1
                if len(first) < 5:
                    first.append(number)
            if len(record) > named:
                row = (number, starts, len(record))
                if any(field.strip() for field in record[named:]):
                    add(filled, row)
                else:
                    add(by_length.setdefault(len(record), [0, []]), row)
            else:
                fitting += 1
        if last is not None and _opens_a_quote_never_closed(last[2], delimiter):  # it ran to the end of the file
            raise InputError(f"data row {last[0]} (line {skipped_lines + last[1]}): {UNCLOSED_QUOTE}")
    except csv.Error as error:  # a line break in an unquoted cell
        raise InputError(f"the CSV cannot be read row by row ({error}): check that cells holding line breaks "
                         "are quoted") from None
    finally:
        csv.field_size_limit(limit)
    # the rows of one length with empty extra fields are the export's where they are more than half of the rows
    common = next((length for length, group in by_length.items() if 2 * group[0] > number), None)
    odd = [filled, *(group for length, group in by_length.items() if length != common)]
    odd_count = sum(group[0] for group in odd)
    return count, first, odd_count, sorted(row for group in odd for row in group[1])[:5]


def _opens_a_quote_never_closed(record_lines: list[str], delimiter: str) -> bool:
    """Whether one record's lines end inside a quoted cell: the csv module's reader (as pandas' parser would not)
    reads such a cell to the end of the file without a word, so that the record looks short of fields."""
    text = "".join(record_lines)
    if '"' not in text:
        return False
    try:  # strict: the end of the data inside quotes is an error
        for _ in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, skipinitialspace=True, strict=True):
            pass
    except csv.Error as error:
        return "unexpected end of data" in str(error)
    return False


def identifier_reason(name, values: pd.Series, max_categories: int = MAX_CATEGORIES, *, code: bool = False,
                      numeric_share: float | None = None) -> str | None:
    """Why the text column ``name`` (its non-empty ``values``) identifies rows rather than grouping them, as
    "column 'x' has ...: treated as an identifier"; None when it does not. As categories its values would be
    stored in a model and could be released: more than ``max_categories`` distinct values, or more than
    IDENTIFIER_MIN_DISTINCT that are mostly not numbers and either at least IDENTIFIER_DISTINCT_SHARE of the
    rows (names), or any number of them shaped like dates or record numbers (``code``: five-digit codes such as
    ZIP 02134 are not record numbers)."""
    distinct = values.nunique()
    if distinct > max_categories:
        return (f"column {name!r} has {distinct:,} distinct text values (more than {max_categories}): "
                "treated as an identifier")
    if numeric_share is None:
        numeric_share = 0.0 if code else float(pd.to_numeric(values, errors="coerce").notna().mean())
    if numeric_share >= 0.5 or values.empty:  # mostly numbers: a measurement
        return None
    text = values.astype(str).str.strip()
    shape = _identifier_shape(text)  # dates and record numbers identify however few rows the table has
    if shape == "record numbers" and code and text.str.len().max() <= 5:
        shape = None  # five-digit codes (ZIP 02134) are no record numbers; a padded 0000424938 is
    if shape == "record numbers" and distinct <= IDENTIFIER_MIN_DISTINCT \
            and text.str.contains(r"\d{6,}").mean() < IDENTIFIER_SHAPE_SHARE:
        shape = None  # a few five-digit values are codes (ZIP, lab codes) more often than record numbers
    if (distinct > IDENTIFIER_MIN_DISTINCT and distinct >= IDENTIFIER_DISTINCT_SHARE * len(values)) or shape:
        return (f"column {name!r} has {distinct:,} distinct text values in {len(values):,} rows"
                + (f" shaped like {shape} (e.g. {text.iloc[0]!r})" if shape else "")
                + ": treated as an identifier (names, record numbers, dates)")
    personal = None if code else _personal_name(name, distinct)
    if personal:  # however few its values (a table's three surnames are still three people's)
        return (f"column {name!r} is named like personal data ({personal!r}; {distinct:,} distinct values): treated "
                "as an identifier (names, record numbers, dates)")
    return None


COMMA_NUMBER_LIKE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+,\d+)")  # 1,234,567  1,234.5  25,5


def _examples(words: pd.Series, comma_cells: str) -> str:
    """'e.g. 'kg'' and ``comma_cells`` after it, or ``comma_cells`` alone where it names the same first cell."""
    first = f"{str(words.iloc[0])!r}"
    return comma_cells[2:] if comma_cells and f"such as {first}," in comma_cells else f"e.g. {first}{comma_cells}"


def _comma_cells_words(words: pd.Series) -> str:
    """'; N of them written with a comma (e.g. '1,234') ...: why': the cells of a model's number column in a
    comma-separated file that are not read as numbers because of a comma; '' where there are none."""
    text = words.astype(str).str.strip()
    with_commas = text[text.str.fullmatch(COMMA_NUMBER_LIKE)]
    if with_commas.empty:
        return ""
    return (f"; {counted(len(with_commas), 'cell')} written with a comma, such as {with_commas.iloc[0]!r}, which in a "
            "comma-separated file may be a decimal comma or a thousands separator: save the file semicolon-separated "
            "(decimal commas) or without thousands separators to read them as numbers")


def _clean_columns(frame: pd.DataFrame, notes: list[str], max_categories: int,
                   codes: set[str] = frozenset(), comma_examples: dict[str, str] | None = None,
                   number_columns: Collection[str] = (), commas_are_decimal: bool = False,
                   decimal_whole: dict[str, str] | None = None) -> pd.DataFrame:
    """Drop empty and identifier columns and read mostly-number text as numbers (not ``codes``), saying so; a
    dropped column gets one note, its drop. ``comma_examples``: a value of each column of numbers written with a
    comma in a comma-separated file (they stay text); ``number_columns`` (the chosen model's) are read as numbers
    where most of their cells are. ``commas_are_decimal``: the file is not comma-separated (a comma in a number is
    a decimal comma). ``decimal_whole``: the columns ``_decimal_commas`` read whole (their one note loses those
    dropped here)."""
    comma_examples = comma_examples or {}
    drop, earlier = [], len(notes)
    for name in frame.columns:
        series = frame[name]
        values = series.dropna()
        if values.empty:
            drop.append(name)
            notes.append(f"column {name!r} is empty in every row: dropped")
            continue
        only = values.iloc[0].item() if hasattr(values.iloc[0], "item") else values.iloc[0]  # 7, not np.int64(7)
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            personal = None if name in number_columns else _personal_name(name, values.nunique())
            if personal:  # phone numbers or SSNs written as digits
                drop.append(name)
                notes.append(f"column {name!r} is named like personal data ({personal!r}; {values.nunique():,} "
                             "distinct values): treated as an identifier (names, record numbers, dates) and dropped")
            elif values.nunique() == 1 and len(frame) > 1:  # (a one-row table: every column has one value)
                notes.append(f"column {name!r} has one value ({only!r}) in every row: kept, "
                             "but it carries no information")
            elif len(values) > IDENTIFIER_MIN_DISTINCT and values.nunique() == len(values) \
                    and pd.api.types.is_integer_dtype(series):
                word = None if name in number_columns else _identifier_name(name)
                if word:
                    drop.append(name)
                    notes.append(f"column {name!r} has a different whole number in every row and its name says "
                                 f"{word!r}: treated as an identifier (record numbers) and dropped, so no model is "
                                 "fitted on it and no release carries made-up IDs beside other records' values; if "
                                 "it is a measurement, rename it (a name without words such as id, number or "
                                 "patient)")
                else:
                    run = values.max() - values.min() + 1 == len(values)
                    notes.append(f"column {name!r} has a different whole number in every row"
                                 + (f", running from {values.min()} to {values.max()} without a gap" if run else "")
                                 + ": if it is a record number or an ID, remove it from the file (a model fitted on "
                                 "this table models it and releases it as a number; a model without this column "
                                 "leaves it out of the release)")
            continue
        # a chosen model's numbers in a file not separated by commas: each cell read alone (1 234, 1.234.567, 25,5),
        # whatever the other rows hold (a decimal comma elsewhere in the column decided it, row by row)
        cells = series.map(cell_number) if commas_are_decimal and name in number_columns else series
        numbers = pd.to_numeric(cells.dropna(), errors="coerce")
        numeric_share = 0.0 if name in codes else float(numbers.notna().mean())
        distinct = values.nunique()
        words = values[numbers.isna()]
        comma_cells = "" if commas_are_decimal or name not in number_columns else _comma_cells_words(words)
        if name in number_columns and numeric_share < MODEL_NUMBER_SHARE and len(words):  # numbers, with units?
            notes.append(f"column {name!r} is one of the chosen model's number columns, but {len(words):,} of its "
                         f"{len(values):,} cells are not numbers ({_examples(words, comma_cells)}), so the "
                         "table as it is does not fit that model: to release it with that model, write them as plain "
                         "numbers, without units or words, and upload the file again")
            continue
        if name in number_columns and numeric_share >= MODEL_NUMBER_SHARE:
            # the model's numbers, whatever their count of distinct values or a few words among them: not an
            # identifier (one '?' among 260 distinct values dropped it) and not categories
            said = "holds the chosen model's numbers" + (f" ({comma_cells[2:]})" if comma_cells else "")
            frame[name] = _as_numbers(cells, name, notes, said, MODEL_EMPTY_CELL)
            continue
        identifies = identifier_reason(name, values, max_categories, code=name in codes, numeric_share=numeric_share)
        comma = (f"numbers written with a comma (e.g. {comma_examples[name]!r}), which in a comma-separated file "
                 "may be a decimal comma or a thousands separator, so they are read as text") \
            if name in comma_examples else None
        if identifies:  # one note: "read as text (categories)" and then "dropped" contradicted each other
            drop.append(name)
            notes.append(f"{identifies} and dropped" + (f"; its values are {comma}: save the file without thousands "
                                                        "separators (decimal commas: semicolon-separated) to keep it "
                                                        "as numbers" if comma else ""))
            continue
        if comma:
            notes.append(f"column {name!r} holds {comma} (categories): save the file semicolon-separated to read "
                         "them as decimal numbers")
        if numeric_share < 0.5 and (distinct > IDENTIFIER_MIN_DISTINCT
                                    or (distinct == len(values) >= UNIQUE_PER_ROW_MIN_ROWS)):  # (numbers: a measurement)
            if distinct == len(values):  # (fit_tabular refuses such a column: each value is one row's)
                notes.append(f"column {name!r} has a different text value in every one of its {len(values):,} "
                             "rows: a model fitted on this table refuses it (it would release each row's value as "
                             "another row's), and a model without this column leaves it out of the release; if "
                             "it names people or records, remove it from the file")
            else:
                notes.append(f"column {name!r} has {distinct:,} distinct text values: kept as categories, so the "
                             "model stores each of them and a release can contain them; if they name people or "
                             "records, remove the column from the file")
        elif numeric_share < 0.5 and _free_text(values):  # few values, but sentences: an address, a history
            example = str(values[values.astype(str).str.split().str.len() >= FREE_TEXT_WORDS].iloc[0])
            notes.append(f"column {name!r} holds free text (e.g. {example[:60]!r}"
                         + ("…" if len(example) > 60 else "") + "): kept as categories, so a model fitted on this "
                         "table stores each text whole and a release can contain it, word for word, in any row; if "
                         "its texts can tell who a record is, remove the column from the file")
        if distinct == 1:
            if len(frame) > 1:
                notes.append(f"column {name!r} has one value ({only!r}) in every row: kept, "
                             "but it carries no information")
        elif numeric_share >= NUMBER_SHARE and values[numbers.isna()].astype(str).str.fullmatch(NOT_A_MEASUREMENT).all():
            # a measurement with a few words ("<0.5", "n/a"): as categories its values would be stored in the model
            # (codes with letters and digits, such as ICD's V58.67, stay categories)
            frame[name] = _as_numbers(series, name, notes, "holds numbers")
        elif numeric_share >= 0.5:
            notes.append(f"column {name!r} mixes numbers and text ({int(numbers.isna().sum())} of {len(values)} values "
                         "are not numbers): treated as categories")
    # a dropped column's earlier notes (read as text codes, decimal commas) would contradict its drop: only it stays
    dropped = tuple(f"column {name!r}{after}" for name in drop for after in (" ", ":"))
    notes[:earlier] = [note for note in notes[:earlier] if not note.startswith(dropped)]
    combined = decimal_commas_note(decimal_whole or {})
    if combined in notes[:earlier]:  # the columns read with decimal commas, less those dropped (each says its drop)
        kept = decimal_commas_note({name: example for name, example in decimal_whole.items() if name not in drop})
        place = notes.index(combined)
        notes[place:place + 1] = [kept] if kept else []
    if len(drop) == frame.shape[1]:
        raise InputError("no usable column is left: " + "; ".join(notes))
    return frame.drop(columns=drop)


# --------------------------------------------------------------------------- safe CSV export

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value):
    """A cell value safe to open in a spreadsheet: text starting like a formula gets a leading apostrophe; text that
    is a plain number (-5, +3.2, -1,5) does not (a spreadsheet reads it as that number, never as a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not is_number(value):
        return "'" + value
    return value


def escaped_cells_note(count: int) -> str | None:
    """What a release's CSV says of its ``count`` cells written with a leading apostrophe (None when there are
    none): the one change made to released values, kept conditions included."""
    if not count:
        return None
    cells = "1 cell (or column name) is" if count == 1 else f"{count:,} cells (or column names) are"
    return (f"{cells} written with a leading apostrophe (') because they start with =, +, -, @, a tab or a carriage "
            "return, so that spreadsheet programs do not run them as formulas; the value is otherwise as released "
            "(remove the apostrophe to read it exactly).")


def release_csv(frame: pd.DataFrame, csv_format: dict,
                texts: Iterable | None = None) -> tuple[bytes, str, str | None, str | None]:
    """A released table in the upload's format (``csv_format``: ``CsvUpload.csv_format``): (bytes, the format in
    words, a sentence on why the encoding differs from the one the upload shows or None, ``escaped_cells_note`` or
    None). The upload's declared encoding is kept where every released cell can be written in it, else UTF-8 with a
    BOM (``release_encoding``); ``texts``: every text a release can hold (the model's categories): decided by them and
    the column names, not by the cells this release drew (which would make a row's file change with other rows')."""
    chosen = {"delimiter": ",", "decimal": ".", "encoding": None, **csv_format}
    read = chosen.pop("read", None)
    declared = chosen["encoding"]
    chosen["encoding"] = (release_encoding(declared, frame=frame) if texts is None
                          else release_encoding(declared, texts=[*map(str, frame.columns), *texts]))
    words = csv_format_words(**chosen)
    changed = None
    if declared is not None and chosen["encoding"] != declared:
        changed = f"a released value cannot be written in {ENCODING_NAMES[declared]}, the upload's encoding"
    elif read is not None:
        changed = format_change_reason(chosen["delimiter"], read["decimal"], chosen["decimal"], read["encoding"],
                                       chosen["encoding"], "the upload", declared)
    data, escaped = escaped_csv(frame, **chosen)
    return data, words, changed, escaped_cells_note(escaped)


def safe_csv_bytes(frame: pd.DataFrame, *, header: bool = True, delimiter: str = ",", decimal: str = ".",
                   encoding: str = "utf-8") -> bytes:
    """``escaped_csv``'s bytes."""
    return escaped_csv(frame, header=header, delimiter=delimiter, decimal=decimal, encoding=encoding)[0]


def escaped_csv(frame: pd.DataFrame, *, header: bool = True, delimiter: str = ",", decimal: str = ".",
                encoding: str = "utf-8") -> tuple[bytes, int]:
    """CSV (CRLF line ends, RFC 4180) of a frame, safe against spreadsheet formula injection, and how many cells
    (column names included, where it writes the header) it wrote with a leading apostrophe (``escaped_cells_note``
    says it).

    Text cells (and column names) starting with =, +, -, @, tab or CR get a
    leading apostrophe (``escape_cell``); numbers stay numbers (-3 stays -3, in a text column too).
    ``delimiter``, ``decimal`` and ``encoding``: to write as the input was written (``CsvUpload.csv_format``;
    the encoding as ``writable_encoding`` allows it); a decimal comma only with another delimiter. A BOM
    (utf-8-sig, utf-16) is written with the header row only, so chunks written one after another make one file.
    """
    if decimal == delimiter or decimal not in ".,":
        raise InputError(f"cannot write a CSV separated by {delimiter!r} with the decimal mark {decimal!r}")
    escaped = 0

    def escape(value):
        nonlocal escaped
        written = escape_cell(value)
        escaped += written is not value  # (escape_cell gives back the very value it leaves alone)
        return written

    columns = []
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            column = column.astype(object).map(escape)
        columns.append(column.reset_index(drop=True))
    safe = pd.concat(columns, axis=1, ignore_index=True) if columns else pd.DataFrame(index=range(len(frame)))
    # (column names counted only where written: chunks written one after another count the header once)
    safe.columns = [escape(str(name)) if header else escape_cell(str(name)) for name in frame.columns]
    text = safe.to_csv(index=False, header=header, sep=delimiter, decimal=decimal, lineterminator="\r\n")
    if encoding == "utf-16":
        return (codecs.BOM_UTF16_LE if header else b"") + text.encode("utf-16-le"), escaped
    if encoding == "utf-8-sig" and not header:
        encoding = "utf-8"
    try:
        return text.encode(encoding), escaped
    except UnicodeEncodeError:
        raise InputError(f"a cell cannot be written in {ENCODING_NAMES.get(encoding, encoding)}: ask "
                         "writable_encoding for the encoding to write") from None
