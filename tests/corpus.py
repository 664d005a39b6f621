"""A corpus of ordinary and hostile uploads, generated in memory at test time (no binaries committed)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def digit(height: int = 40, width: int = 40, *, dark_on_light: bool = False) -> np.ndarray:
    """A bar in the middle of a plain sheet: light-on-dark (MNIST style) unless asked otherwise."""
    array = np.zeros((height, width), dtype=np.uint8)
    array[height // 4: height - height // 4, width // 2 - max(1, width // 10): width // 2 + max(1, width // 10)] = 255
    return 255 - array if dark_on_light else array


def png(array: np.ndarray) -> bytes:
    return encode(Image.fromarray(array), "PNG")


def truncated_png() -> bytes:
    data = png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    return data[: len(data) // 2]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG that declares a gigantic image (10^10 pixels)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * width
    body = zlib.compress(row * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def png_16bit() -> bytes:
    array = np.zeros((32, 32), dtype=np.uint16)
    array[8:24, 14:18] = 4000  # a 12-bit style range, nowhere near 65535
    return encode(Image.fromarray(array), "PNG")


def cmyk_jpeg() -> bytes:
    image = Image.new("CMYK", (30, 20), (0, 0, 0, 255))  # black ink everywhere
    return encode(image, "JPEG")


def palette_png(transparent: bool = False) -> bytes:
    image = Image.fromarray(digit(28, 28)).convert("P")
    options = {"transparency": 0} if transparent else {}
    return encode(image, "PNG", **options)


def alpha_png(*, dark_strokes: bool = True) -> bytes:
    """Strokes opaque, the sheet fully transparent (as drawing apps export)."""
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 0 if dark_strokes else 255
    rgba[..., 3] = digit(28, 28)
    return encode(Image.fromarray(rgba, mode="RGBA"), "PNG")


def animated_gif() -> bytes:
    frames = [Image.fromarray(digit(28, 28)), Image.fromarray(np.full((28, 28), 255, np.uint8))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg() -> bytes:
    """Stored 40 wide x 20 high with orientation 6: shown 20 wide x 40 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.new("L", (40, 20), 128), "JPEG", exif=exif.tobytes())


def dicom(*, compressed: bool = False, monochrome1: bool = False, frames: int = 1) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000 if compressed else ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = 32, 24
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    pixels = np.zeros((frames, 32, 24), dtype=np.uint16)
    pixels[:, 8:24, 10:14] = 4095
    if frames > 1:
        dataset.NumberOfFrames = frames
    if compressed:
        dataset.PixelData = encapsulate([b"\x00\x01not a real codestream" * 4])
        dataset["PixelData"].VR = "OB"
    else:
        dataset.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], *, encrypted: tuple[str, ...] = ()) -> bytes:
    """A ZIP with the given member names kept verbatim (including '../' and absolute names)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
        offsets = {info.filename: info.header_offset for info in archive.infolist() if info.filename in encrypted}
    data = bytearray(buffer.getvalue())
    # zipfile cannot encrypt: set the 'encrypted' flag bit in the local and central headers instead
    for name, offset in offsets.items():
        data[offset + 6] |= 0x1
        central = data.index(b"PK\x01\x02")
        while data[central + 46: central + 46 + len(name.encode())] != name.encode():
            central = data.index(b"PK\x01\x02", central + 1)
        data[central + 8] |= 0x1
    return bytes(data)


def csv_rows(rows: int, *, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    lines = ["age,bmi,sex"] + [f"{a},{b:.2f},{s}" for a, b, s in zip(
        rng.integers(20, 80, rows), rng.normal(25, 4, rows), rng.integers(1, 3, rows))]
    return ("\n".join(lines) + "\n").encode()


def deny_listing(monkeypatch, folder_name: str) -> None:
    """Make every folder named ``folder_name`` unlistable (PermissionError), as for a user without permission:
    the tests run as root, who may list anything."""
    import os
    from pathlib import Path

    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == folder_name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

