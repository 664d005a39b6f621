"""The batch CLI (python -m cadp.privatize): folders, ZIPs and CSVs end to end with tiny models."""

from __future__ import annotations

import csv
import functools
import io
import os
import re
import shutil
import signal
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import cadp.archive as archive
import cadp.uploads as uploads
from cadp.compare import counted
from cadp.hub import load_folder, save_model
from cadp.models import ImageCINN, ImageModelConfig
from cadp.privatize import NOT_PRIVATE_SEED
from tests import corpus

CLASSES = ["0", "1", "T-shirt/top"]


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = ImageModelConfig(name="t", dataset="t", class_names=CLASSES, conv_width=4, fc_width=8,
                              conv_blocks=[1, 1], fc_blocks=1)
    return save_model(ImageCINN(config), tmp_path_factory.mktemp("models") / "image")


@pytest.fixture(scope="module")
def table_model(tmp_path_factory) -> Path:
    from cadp.train import fit_tabular

    frame = table_frame(60)
    model = fit_tabular(frame, ["sex"], steps=5)
    return save_model(model, tmp_path_factory.mktemp("models") / "table")


def interrupted_at(call: int, function):
    """``function``, but Ctrl-C on its ``call``-th call."""
    return failing_at(call, function, KeyboardInterrupt())


def table_frame(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"age": rng.integers(20, 80, rows), "bmi": rng.normal(25, 4, rows).round(2),
                         "note": np.where(np.arange(rows) % 2 == 0, "=HYPERLINK(1)", "ok"),
                         "sex": rng.integers(1, 3, rows)})


def image_file(seed: int, size: int = 30) -> bytes:
    return corpus.png(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8))


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def read_manifest(output: Path) -> list[dict[str, str]]:
    with (output / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run(model: Path, source: Path, output: Path, *extra: str) -> int:
    return archive.main(["--model", str(model), "--mechanism", "laplace", "--epsilon", "1", *extra,
                         str(source), str(output)])


# --------------------------------------------------------------------------- folders

def test_folder_streams_in_batches_and_lists_a_bad_file_without_stopping(image_model, tmp_path, monkeypatch):
    files = {f"{label}/{i}.png": image_file(10 * n + i)
             for n, label in enumerate(["0", "1", "t-shirt_top"]) for i in range(3)}
    files["1/1b.png"] = b"this is not an image"  # sorts into the middle of the run
    files["1/readme.txt"] = b"notes"
    source = make_folder(tmp_path / "in", files)
    decoded, batches = [], []
    real_decode, real_privatize = archive.to_model_input, archive.privatize

    def counting_decode(data, **options):
        decoded.append(options["filename"])
        return real_decode(data, **options)

    def recording_privatize(model, pixels, labels, *args, **options):
        batches.append((len(pixels), len(decoded)))
        return real_privatize(model, pixels, labels, *args, **options)

    monkeypatch.setattr(archive, "to_model_input", counting_decode)
    monkeypatch.setattr(archive, "privatize", recording_privatize)
    output = tmp_path / "out"
    assert run(image_model, source, output, "--batch-size", "2", "--seed", "3") == 0

    # streamed: the first batch is privatized after two files were decoded, not after all ten
    assert [size for size, _ in batches] == [2, 2, 2, 2, 1]
    assert batches[0][1] == 2
    rows = read_manifest(output)
    assert [row["file"] for row in rows] == sorted(files)
    by_file = {row["file"]: row for row in rows}
    assert by_file["1/1b.png"]["status"] == "error"
    assert "not an image that can be read" in by_file["1/1b.png"]["error"]
    assert by_file["1/readme.txt"]["status"] == "error" and "not an image" in by_file["1/readme.txt"]["error"]
    privatized = [row for row in rows if row["status"] == "privatized"]
    assert len(privatized) == 9
    assert {row["file"]: row["condition"] for row in privatized}["t-shirt_top/2.png"] == "T-shirt/top"
    for row in privatized:
        assert row["released_condition"] == row["condition"]  # the label is kept
        assert row["mechanism"] == "laplace" and row["epsilon"] == f"1 ({NOT_PRIVATE_SEED})" and row["delta"] == ""
        assert row["seed"] == f"3 ({NOT_PRIVATE_SEED})"
        image = np.asarray(Image.open(output / row["output"]))
        assert image.shape == (28, 28) and image.dtype == np.uint8
        assert "resized 30x30 -> 28x28" in row["preprocessing"]
    assert "Laplace" in (output / "guarantee.txt").read_text() or "laplace" in (output / "guarantee.txt").read_text()


def test_seeded_runs_repeat_and_unseeded_runs_use_os_entropy(image_model, tmp_path):
    source = make_folder(tmp_path / "in", {f"0/{i}.png": image_file(i) for i in range(3)})
    assert run(image_model, source, tmp_path / "a", "--seed", "7") == 0
    assert run(image_model, source, tmp_path / "b", "--seed", "7") == 0
    assert run(image_model, source, tmp_path / "c") == 0
    same = [(tmp_path / "a" / f"0/{i}.png").read_bytes() == (tmp_path / "b" / f"0/{i}.png").read_bytes()
            for i in range(3)]
    assert all(same)
    assert {row["seed"] for row in read_manifest(tmp_path / "c")} == {"OS entropy"}
    differs = [(tmp_path / "a" / f"0/{i}.png").read_bytes() != (tmp_path / "c" / f"0/{i}.png").read_bytes()
               for i in range(3)]
    assert any(differs)


def test_an_image_in_the_folder_three_times_is_three_releases_and_costs_three_epsilon(image_model, tmp_path,
                                                                                      capsys):
    """The same image three times (two files, and a copy in another class folder) was released three times with
    independent noise, and the manifest and guarantee said epsilon 1 for each, with no warning."""
    repeated = image_file(1)
    source = make_folder(tmp_path / "in", {"0/a.png": repeated, "0/a-copy.png": repeated, "1/a.png": repeated,
                                           "0/b.png": image_file(2), "1/c.png": image_file(3)})
    assert run(image_model, source, tmp_path / "out", "--batch-size", "2") == 0
    err = capsys.readouterr().err
    assert ("warning: 1 image of the input occurs more than once (1 image 3 times; the same pixels after "
            "preprocessing, or their negative): each copy was released separately, with its own noise, so a record "
            "that occurs k times costs k times the epsilon of one release (basic composition), here up to "
            "epsilon 3;") in err
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    for name in ("0/a.png", "0/a-copy.png", "1/a.png"):
        assert rows[name]["epsilon"] == "1"  # one release's cost, as before
        assert (rows[name]["releases_of_record"], rows[name]["epsilon_record_total"]) == ("3", "3")
    for name in ("0/b.png", "1/c.png"):
        assert (rows[name]["releases_of_record"], rows[name]["epsilon_record_total"]) == ("1", "1")
    assert {row["delta_record_total"] for row in rows.values()} == {""}  # laplace has no delta
    cautions = (tmp_path / "out" / "cautions.txt").read_text(encoding="utf-8")  # the operator's, not shared
    assert cautions.startswith("Caution: 1 image of the input occurs more than once (1 image 3 times;")
    assert "here up to epsilon 3;" in cautions
    terms = (tmp_path / "out" / "guarantee.txt").read_text(encoding="utf-8")
    assert ("Releasing the same record again (in another run, or as another copy in one input) costs its epsilon "
            "again (basic composition)") in terms
    # paper: no guarantee, nothing to add up (guarantee.txt said so; the caution added up a nominal epsilon)
    assert archive.main(["--model", str(image_model), "--mechanism", "paper", "--epsilon", "1", str(source),
                         str(tmp_path / "paper")]) == 0
    cautions = (tmp_path / "paper" / "cautions.txt").read_text(encoding="utf-8")
    assert "a record that occurs k times was released k times (here up to 3); this mechanism (paper (" in cautions
    assert "gives no formal guarantee, so there is no epsilon to add up for it" in cautions
    assert "basic composition" not in cautions
    capsys.readouterr()
    # without copies: no caution, and each record's total is one release's
    assert run(image_model, make_folder(tmp_path / "in2", {"0/b.png": image_file(2)}), tmp_path / "out2") == 0
    assert "more than once" not in capsys.readouterr().err
    assert not (tmp_path / "out2" / "cautions.txt").exists()
    assert read_manifest(tmp_path / "out2")[0]["epsilon_record_total"] == "1"
    # the shared terms are the same whether or not a record was repeated: they must not depend on the records
    assert (tmp_path / "out2" / "guarantee.txt").read_text(encoding="utf-8") == terms


def test_labels_csv_for_a_flat_folder_and_formula_names_in_the_manifest(image_model, tmp_path):
    source = make_folder(tmp_path / "in", {"a.png": image_file(1), "b.png": image_file(2),
                                           "=cmd.png": image_file(3), "c.png": image_file(4)})
    labels = tmp_path / "labels.csv"
    labels.write_text("file;label\na.png;1\nb.png;T-shirt top\n=cmd.png;0\nc.png;shoe\n")
    output = tmp_path / "out"
    assert run(image_model, source, output, "--labels", str(labels), "--invert", "never") == 0
    by_file = {row["file"]: row for row in read_manifest(output)}
    assert by_file["a.png"]["condition"] == "1"
    assert by_file["b.png"]["condition"] == "T-shirt/top"
    assert "'shoe' in the labels CSV is not one of the model's classes" in by_file["c.png"]["error"]
    assert "'=cmd.png" in by_file  # the manifest cell is escaped against formula injection
    assert by_file["'=cmd.png"]["preprocessing"] == "resized 30x30 -> 28x28"


def test_a_labels_csv_names_a_file_whatever_unicode_form_either_writes_it_in(image_model, tmp_path):
    """macOS writes 'café.png' decomposed ('e' + a combining accent), a spreadsheet's cell holds it composed: the
    labels CSV's row named no file, and the file was released with its folder's label instead."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "café.png")
    source = make_folder(tmp_path / "in", {f"0/{decomposed}": image_file(1), "0/plain.png": image_file(2)})
    assert (tmp_path / "in" / "0" / decomposed).exists()
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + unicodedata.normalize("NFC", "0/café.png") + ",1\n", encoding="utf-8")
    output = tmp_path / "out"
    assert run(image_model, source, output, "--labels", str(labels), "--invert", "never") == 0
    conditions = {unicodedata.normalize("NFC", row["file"]): row["condition"] for row in read_manifest(output)}
    assert conditions == {"0/café.png": "1", "0/plain.png": "0"}
    # one file named in both forms with two labels: refused, as any file given two labels is (not the last one kept)
    labels.write_text("file,label\n0/café.png,1\n" + decomposed.join(["0/", ",T-shirt/top\n"]), encoding="utf-8")
    assert run(image_model, source, tmp_path / "two", "--labels", str(labels)) == archive.EXIT_USAGE


def read_released_labels(output: Path) -> list[tuple[str, str]]:
    with (output / "labels.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", "label"]
    return [tuple(row) for row in rows[1:]]


def test_kept_labels_are_released_in_labels_csv_and_a_folder_of_another_class_is_cautioned(image_model, tmp_path,
                                                                                         capsys):
    """A label from --labels was in the manifest only (not part of the release): 0/a.png released as 1 was written
    to 0/a.png, and a flat folder's outputs carried no label at all."""
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1), "0/b.png": image_file(2),
                                           "1/c.png": image_file(3)})
    labels = tmp_path / "override.csv"
    labels.write_text("file,label\n0/a.png,1\n")
    output = tmp_path / "out"
    assert run(image_model, source, output, "--labels", str(labels)) == 0
    assert read_released_labels(output) == [("0/a.png", "1"), ("0/b.png", "0"), ("1/c.png", "1")]
    caution = ("1 privatized file keeps a folder named after another class than the label released with them, "
               "e.g. 0/a.png (folder '0', released as '1'): the names are copied from the input, and the released "
               "label is the one in labels.csv.")
    assert f"warning: {caution}" in capsys.readouterr().err
    assert (output / "cautions.txt").read_text(encoding="utf-8").startswith(f"Caution: {caution}")
    terms = (output / "guarantee.txt").read_text(encoding="utf-8")
    assert "Caution" not in terms
    assert "labels.csv is part of the release: it gives each privatized file (column file) the label released" in terms
    assert "Share the privatized files, labels.csv and this file only." in terms
    # the release reads back as an input: its labels.csv is read (and said to be), not its folders
    assert run(image_model, output, tmp_path / "again") == 0
    assert f"note: labels from {output / 'labels.csv'}" in capsys.readouterr().err
    again = {row["file"]: row["condition"] for row in read_manifest(tmp_path / "again") if row["file"].endswith("png")}
    assert again == {"0/a.png": "1", "0/b.png": "0", "1/c.png": "1"}

    # a flat folder: the labels are in labels.csv, and no folder contradicts them
    flat = make_folder(tmp_path / "flat", {"x.png": image_file(4), "y.png": image_file(5)})
    labels.write_text("file,label\nx.png,T-shirt/top\ny.png,0\n")
    assert run(image_model, flat, tmp_path / "flat-out", "--labels", str(labels)) == 0
    assert read_released_labels(tmp_path / "flat-out") == [("x.png", "T-shirt/top"), ("y.png", "0")]
    assert "warning" not in capsys.readouterr().err
    assert not (tmp_path / "flat-out" / "guarantee.txt").read_text(encoding="utf-8").startswith("Caution")
    with pytest.raises(SystemExit):  # the labels.csv read from INPUT is no longer a surprise
        archive.parse_args(["--help"])
    assert "without it, a labels.csv at the top of INPUT (or of a ZIP's single top folder) is read so" in \
        " ".join(capsys.readouterr().out.split())


def test_an_input_keeps_its_own_png_name_when_other_inputs_convert_to_it(image_model, tmp_path, capsys):
    """1/a.bmp, 1/a.gif and 1/a.png were written to 1/a.png, 1/a-2.png and 1/a-3.png: a.png's output was not a.png."""
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 30), dtype=np.uint8))
    files = {"1/a.bmp": corpus.encode(picture, "BMP"), "1/a.gif": corpus.encode(picture, "GIF"),
             "1/a.png": image_file(2), "1/A-2.png": image_file(3)}
    folder = make_folder(tmp_path / "in", files)
    zipped = tmp_path / "in.zip"
    zipped.write_bytes(corpus.zip_bytes(files))
    for source, output in ((folder, tmp_path / "out"), (zipped, tmp_path / "zip-out")):
        assert run(image_model, source, output) == 0
        outputs = {row["file"]: row["output"] for row in read_manifest(output)}
        assert outputs == {"1/a.bmp": "1/a-3.png", "1/a.gif": "1/a-4.png", "1/a.png": "1/a.png",
                           "1/A-2.png": "1/A-2.png"}
        assert ("note: 2 inputs could not keep their name as a PNG, another input has it (a.bmp, a.gif and a.png "
                "all make a.png; a.png keeps it), and they got a number, e.g. 1/a.bmp -> 1/a-3.png; the output column "
                "of manifest.csv maps each input to its file") in capsys.readouterr().err
        assert dict(read_released_labels(output)) == {name: "1" for name in outputs.values()}


def test_unlabelled_images_are_errors_and_nothing_privatized_exits_1(image_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {"cats/a.png": image_file(1), "cats/b.png": image_file(2)})
    output = tmp_path / "out"
    assert run(image_model, source, output) == 1
    rows = read_manifest(output)
    assert all(row["status"] == "error" for row in rows)
    assert rows[0]["error"].startswith("no label: the file is not in a sub-folder named")
    # the summary says why, not only how many (the reason was in the manifest alone)
    assert f"most common reason (2 of 2): {rows[0]['error']}" in capsys.readouterr().err


def test_numbered_sub_folders_are_not_class_indices_and_two_class_folders_are_refused(tmp_path):
    resolver = archive.LabelResolver(["covid", "normal", "pneumonia ü"])
    # a folder named 2 inside normal/ is a patient or a session, not the class at index 2
    assert resolver.resolve("normal/2/scan.jpg") == 1
    assert resolver.resolve("Pneumonia Ü/2024/7/scan.jpg") == 2
    with pytest.raises(archive.InputError, match="no label: the file is not in a sub-folder named like a class"):
        resolver.resolve("patients/1/x.png")
    with pytest.raises(archive.InputError, match=r"the folders 'covid' \(covid\) and 'normal' \(normal\)"):
        resolver.resolve("covid/normal/x.png")
    # in a labels CSV a number is still a class index
    assert archive.LabelResolver(["covid", "normal"], {"x.png": "1"}).resolve("x.png") == 1
    # digit class names (MNIST's 0..9) still match their folders by name, wherever they are in the path
    assert archive.LabelResolver([str(d) for d in range(10)]).resolve("digits/7/a.png") == 7


def test_a_file_in_folders_of_two_classes_is_listed_with_the_reason(image_model, tmp_path):
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1), "1/0/b.png": image_file(2)})
    assert run(image_model, source, tmp_path / "out") == 0
    by_file = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert by_file["1/a.png"]["condition"] == "1"
    assert by_file["1/0/b.png"]["status"] == "error"
    assert "two labels: the folders '1' (1) and '0' (0) in its path name different classes" in \
        by_file["1/0/b.png"]["error"]


def test_linked_folders_are_followed_once_and_unreadable_links_are_listed(image_model, tmp_path):
    """As training reads a folder: a linked class folder or sub-folder is read, a loop or a second link to a folder
    already read adds nothing, a file reached twice is released once, a broken link is an unreadable file."""
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    elsewhere = make_folder(tmp_path / "elsewhere", {"class-1/b.png": image_file(2), "scans/c.png": image_file(3)})
    (source / "1").symlink_to(elsewhere / "class-1")  # a class folder the model was trained on, as a link
    (source / "0" / "scans").symlink_to(elsewhere / "scans")
    (source / "0" / "scans-again").symlink_to(elsewhere / "scans")
    (source / "0" / "loop").symlink_to(source)
    (source / "0" / "up").symlink_to(tmp_path)  # above the input: it would read "elsewhere" and the input again
    (source / "0" / "same.png").symlink_to(source / "0" / "a.png")
    (source / "0" / "broken_link.png").symlink_to("/nonexistent")
    assert run(image_model, source, tmp_path / "out", "--batch-size", "2") == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    released = [name for name, row in rows.items() if row["status"] == "privatized"]
    assert sorted(released) == ["0/a.png", "0/scans/c.png", "1/b.png"]
    assert (rows["1/b.png"]["condition"], rows["0/scans/c.png"]["condition"]) == ("1", "0")
    assert rows["0/broken_link.png"]["error"] == "the file cannot be read (No such file or directory)"
    assert rows["0/a.png"]["releases_of_record"] == "1"
    # what is not read is said, each once, not left out silently
    assert sorted(rows) == ["0/a.png", "0/broken_link.png", "0/loop/", "0/same.png", "0/scans-again/",
                            "0/scans/c.png", "0/up/", "1/b.png"]
    assert rows["0/same.png"]["error"] == "the same file as 0/a.png (a link to it): released once, as 0/a.png; skipped"
    assert rows["0/scans-again/"]["error"] == ("the same folder as 0/scans/ (a link to it): its files are released "
                                               "once, under 0/scans/; skipped")
    for loop in ("0/loop/", "0/up/"):
        assert rows[loop]["error"] == ("a link to a folder that holds the input (a loop): its files are released "
                                       "under their own names; skipped")


def test_dicom_files_without_a_suffix_are_read_by_their_content(image_model, tmp_path):
    """PACS exports name their files IM0001: the DICM magic says they are DICOM."""
    source = make_folder(tmp_path / "in", {"1/IM0001": corpus.dicom(), "1/NOTES": b"no image, no suffix" * 20})
    assert run(image_model, source, tmp_path / "out") == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert rows["1/IM0001"]["status"] == "privatized"
    assert rows["1/NOTES"]["error"] == "not an image (accepted: PNG, JPEG, BMP, TIFF, GIF, WebP, DICOM); skipped"


def test_released_class_folders_are_one_folder_each_and_read_back_as_their_class(image_model, tmp_path):
    source = make_folder(tmp_path / "in", {f"{label}/{i}.png": image_file(10 * n + i)
                                           for n, label in enumerate(["0", "1", "t-shirt_top"]) for i in range(4)})
    assert run(image_model, source, tmp_path / "out", "--condition", "label=resampled", "--seed", "1") == 0
    rows = read_manifest(tmp_path / "out")
    assert all(row["output"].count("/") == 1 for row in rows), rows  # 'T-shirt/top' did nest T-shirt/top/
    assert {row["output"].split("/")[0] for row in rows if row["released_condition"] == "T-shirt/top"} == \
        {"T-shirt_top"}
    # the release, privatized again, finds every file's class from its folder
    assert run(image_model, tmp_path / "out", tmp_path / "again") == 0
    again = {row["file"]: row for row in read_manifest(tmp_path / "again") if row["file"].endswith(".png")}
    assert {name: row["condition"] for name, row in again.items()} == \
        {row["output"]: row["released_condition"] for row in rows}
    names = {name: archive.class_folder_name(name) for name in ('a:b?"c', "con", "Aux.x", "..", " x. ", "a\\b\tc")}
    assert names == {'a:b?"c': "a_b__c", "con": "_con", "Aux.x": "_Aux.x", "..": "_", " x. ": "x",
                     "a\\b\tc": "a_b_c"}
    resolver = archive.LabelResolver(["cat", 'a:b?"c', "con"])
    assert [resolver.resolve(f"{names[name]}/1.png") for name in ('a:b?"c', "con")] == [1, 2]


# --------------------------------------------------------------------------- ZIP

def test_zip_with_top_folder_labels_unsafe_names_and_junk(image_model, tmp_path):
    data = corpus.zip_bytes({
        "digits/0/a.png": image_file(1),
        "digits/1/deep/b.jpg": corpus.encode(Image.new("L", (40, 20), 200), "JPEG"),
        "digits/1/broken.png": corpus.truncated_png(),
        "../escape.png": image_file(2),
        "digits/notes.txt": b"hi",
        "__MACOSX/digits/._a.png": b"junk",
    })
    source = tmp_path / "upload.zip"
    source.write_bytes(data)
    output = tmp_path / "out"
    assert run(image_model, source, output, "--batch-size", "1") == 0
    by_file = {row["file"]: row for row in read_manifest(output)}
    assert set(by_file) == {"digits/0/a.png", "digits/1/deep/b.jpg", "digits/1/broken.png", "../escape.png",
                            "digits/notes.txt"}
    assert by_file["digits/0/a.png"]["status"] == "privatized" and by_file["digits/0/a.png"]["condition"] == "0"
    assert by_file["digits/1/deep/b.jpg"]["output"] == "digits/1/deep/b.png"
    assert "truncated or corrupt" in by_file["digits/1/broken.png"]["error"]
    assert "unsafe path" in by_file["../escape.png"]["error"]  # listed as the ZIP names it
    assert not (tmp_path / "escape.png").exists() and not (output / "escape.png").exists()
    assert (output / "digits/1/deep/b.png").is_file()


def test_zip_with_labels_csv_inside(image_model, tmp_path, capsys):
    data = corpus.zip_bytes({"set/labels.csv": b"file,label\nx.png,1\n", "set/x.png": image_file(1)})
    source = tmp_path / "labelled.zip"
    source.write_bytes(data)
    output = tmp_path / "out"
    assert run(image_model, source, output) == 0
    assert f"note: labels from set/labels.csv in {source} (they override class folders)" in capsys.readouterr().err
    assert read_released_labels(output) == [("set/x.png", "1")]
    (row,) = read_manifest(output)
    assert row["file"] == "set/x.png" and row["condition"] == "1"


def test_zip_bomb_stops_the_archive_and_keeps_earlier_results(image_model, tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "iter_zip_images",
                        functools.partial(uploads.iter_zip_images, max_total_bytes=50_000))
    data = corpus.zip_bytes({"0/a.png": image_file(1), "0/z.png": b"\x00" * 200_000})
    source = tmp_path / "bomb.zip"
    source.write_bytes(data)
    output = tmp_path / "out"
    assert run(image_model, source, output) == 0
    rows = read_manifest(output)
    assert [row["status"] for row in rows] == ["privatized", "error"]
    assert rows[1]["file"] == "bomb.zip" and "zip bomb" in rows[1]["error"]


# --------------------------------------------------------------------------- CSV

def test_csv_rows_stream_bad_row_is_listed_and_export_is_formula_safe(table_model, tmp_path, capsys):
    frame = table_frame(12)
    frame.loc[5, "sex"] = 3  # a value the model never saw
    source = tmp_path / "rows.csv"
    source.write_text(frame.to_csv(index=False, sep=";"))
    output = tmp_path / "out"
    assert run(table_model, source, output, "--batch-size", "4", "--seed", "1") == 0
    rows = read_manifest(output)
    assert [row["file"] for row in rows] == [f"row {i}" for i in range(1, 13)]
    bad = rows[5]
    assert bad["status"] == "error" and "unseen when the model was fitted" in bad["error"]
    assert bad["condition"] == "sex=3"
    privatized = [row for row in rows if row["status"] == "privatized"]
    assert sorted(row["output"] for row in privatized) == sorted(f"privatized.csv row {n}" for n in range(1, 12))
    assert all(row["condition"] == row["released_condition"] for row in privatized)
    text = (output / "privatized.csv").read_text()
    assert text.count("age;bmi;note;sex") == 1  # one header, though written chunk by chunk; as the input, with ;
    released = pd.read_csv(io.StringIO(text), sep=";")
    assert len(released) == 11 and list(released.columns) == ["age", "bmi", "note", "sex"]
    assert set(released["note"]) <= {"'=HYPERLINK(1)", "ok"}
    assert "\n=" not in text and ";=" not in text
    escaped = int((released["note"] == "'=HYPERLINK(1)").sum())  # seeded: the release holds some
    err = capsys.readouterr().err
    assert escaped > 0 and (f"note: in privatized.csv, {escaped} cell" in err
                            and "written with a leading apostrophe (')" in err
                            and "the value is otherwise as released" in err), err


def test_csv_is_written_in_the_encoding_its_header_shows_where_the_model_allows_it(tmp_path, capsys):
    """A Latin-1 CSV came back as UTF-8 without a BOM (spreadsheets showed 'KÃ¶ln'). The encoding is read from the
    header only: whether a file is Windows-1252 shows in its rows' letters, a fact about its records."""
    from cadp.train import fit_tabular

    frame = table_frame(60).assign(note=np.where(np.arange(60) % 2 == 0, "Köln", "Zürich")).rename(
        columns={"note": "Straße"})
    source = tmp_path / "rows.csv"
    source.write_bytes(frame.to_csv(index=False, sep=";", decimal=",").encode("latin-1"))
    model = save_model(fit_tabular(frame, ["sex"], steps=5), tmp_path / "model")
    assert run(model, source, tmp_path / "out", "--seed", "1") == 0
    assert ("privatized.csv is written semicolon-separated with decimal commas, in Windows-1252, as rows.csv is"
            in capsys.readouterr().err)
    released = (tmp_path / "out" / "privatized.csv").read_bytes()
    assert released.startswith("age;bmi;Straße;sex\r\n".encode("latin-1")) and set(pd.read_csv(
        io.BytesIO(released), sep=";", decimal=",", encoding="latin-1")["Straße"]) <= {"Köln", "Zürich"}
    # a category Latin-1 cannot hold (the model's, not the input's): UTF-8 with a BOM, and the note says why
    other = frame.assign(Straße=np.where(np.arange(60) % 2 == 0, "Köln", "Łódź"))
    model = save_model(fit_tabular(other, ["sex"], steps=5), tmp_path / "other")
    assert run(model, source, tmp_path / "out2", "--seed", "1") == 0
    assert ("privatized.csv is written semicolon-separated with decimal commas, in UTF-8 with a BOM: a released value "
            "cannot be written in Windows-1252, the encoding of rows.csv") in capsys.readouterr().err
    released = (tmp_path / "out2" / "privatized.csv").read_bytes()
    assert released.startswith(b"\xef\xbb\xbfage;bmi;Stra\xc3\x9fe;sex\r\n") and released.count(b"\xef\xbb\xbf") == 1
    # an ASCII header shows no encoding: UTF-8, with a BOM as the model's categories are not ASCII, and said
    plain = frame.rename(columns={"Straße": "note"})
    source.write_bytes(plain.to_csv(index=False, sep=";", decimal=",").encode("latin-1"))
    model = save_model(fit_tabular(plain, ["sex"], steps=5), tmp_path / "plain")
    assert run(model, source, tmp_path / "out3", "--seed", "1") == 0
    assert ("privatized.csv is written semicolon-separated with decimal commas, in UTF-8 with a BOM: rows.csv's header "
            "shows no encoding (its rows were read as Windows-1252), and a release's is chosen without its rows: UTF-8, "
            "with a BOM as a text the model can release is not ASCII") in capsys.readouterr().err
    assert set(pd.read_csv(tmp_path / "out3" / "privatized.csv", sep=";", decimal=",", encoding="utf-8-sig")["note"]) \
        <= {"Köln", "Zürich"}


def test_a_rows_release_is_written_alike_whatever_its_batch_mates_cells_hold(tmp_path, table_model):
    """The decimal mark came from the file's cells (a decimal comma anywhere in its first rows) and the encoding
    from its rows' letters: one row's released text changed with the other rows (PRIVACY.md: same seed, same
    record, different batch mates, identical output)."""
    first = []
    for index, other in enumerate(["21,6;ok", "22;ok", "22;Köln"]):
        source = tmp_path / f"rows{index}.csv"
        source.write_bytes(f"age;bmi;note;sex\n50;32;ok;1\n50;{other};1\n".encode("cp1252"))
        output = tmp_path / f"out{index}"
        assert run(table_model, source, output, "--seed", "5") == 0
        released = (output / "privatized.csv").read_bytes().splitlines()
        place = int(read_manifest(output)[0]["output"].rsplit(" ", 1)[1])
        first.append((released[0], released[place]))
    assert len(set(first)) == 1, first
    assert b"," in first[0][1].split(b";")[1]  # a semicolon file's decimal comma, from its separator


def test_csv_in_utf16_without_a_byte_order_mark_is_read_and_written_so(table_model, tmp_path, capsys):
    source = tmp_path / "rows.csv"
    source.write_bytes(table_frame(12).to_csv(index=False).encode("utf-16-le"))
    assert run(table_model, source, tmp_path / "out", "--seed", "1") == 0
    assert ("privatized.csv is written comma-separated, in UTF-16 (little-endian, without a BOM), as rows.csv is"
            in capsys.readouterr().err)
    released = pd.read_csv(tmp_path / "out" / "privatized.csv", encoding="utf-16-le")
    assert len(released) == 12 and list(released.columns) == ["age", "bmi", "note", "sex"]


def test_a_csv_whose_lines_end_in_a_carriage_return_alone_is_read(table_model, tmp_path, capsys):
    """Excel's "CSV (Macintosh)": its separator was taken for a comma, and the file lacked the model's columns."""
    source = tmp_path / "rows.csv"
    source.write_bytes(table_frame(12).to_csv(index=False, sep=";", lineterminator="\r").encode())
    assert run(table_model, source, tmp_path / "out") == 0
    assert len(pd.read_csv(tmp_path / "out" / "privatized.csv", sep=";")) == 12


def test_an_excel_separator_line_gives_a_csv_its_separator_and_is_not_its_header(table_model, tmp_path, capsys):
    """Excel's "sep=;" first line was read as the header: the file lacked the model's columns."""
    source = tmp_path / "rows.csv"
    source.write_text("sep=;\n" + table_frame(12).to_csv(index=False, sep=";", decimal=","))
    assert run(table_model, source, tmp_path / "out") == 0
    assert all(row["status"] == "privatized" for row in read_manifest(tmp_path / "out"))
    released = pd.read_csv(tmp_path / "out" / "privatized.csv", sep=";", decimal=",")
    assert len(released) == 12 and list(released.columns) == ["age", "bmi", "note", "sex"]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("sep=;\nage;bmi;note;sex\n50;22,5;ok;1\n60;23;ok;2;x\n")
    assert run(table_model, ragged, tmp_path / "ragged") == archive.EXIT_USAGE
    assert "data row 2 (line 4, 5 fields)" in capsys.readouterr().err  # the file's own line numbers


def test_csv_with_decimal_commas_is_read_and_written_so(table_model, tmp_path, capsys):
    frame = table_frame(12)
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False, sep=";", decimal=",")
    output = tmp_path / "out"
    assert run(table_model, source, output, "--batch-size", "5", "--seed", "1") == 0
    assert "privatized.csv is written semicolon-separated with decimal commas, as rows.csv is" in capsys.readouterr().err
    rows = read_manifest(output)
    assert all("is not a number" not in row["preprocessing"] for row in rows)  # 26,5 is a number, not the mean
    released = pd.read_csv(output / "privatized.csv", sep=";", decimal=",")
    assert len(released) == 12 and released["bmi"].dtype == np.float64
    assert "," in (output / "privatized.csv").read_text().splitlines()[1]


def test_decimal_commas_are_read_in_every_form_and_wherever_they_start(table_model, tmp_path, capsys):
    frame = table_frame(1100)  # decimal points in the first 1,000 rows, commas after them
    lines = frame.to_csv(index=False, sep=";").splitlines()
    lines[1001:] = [line.replace(".", ",") for line in lines[1001:]]
    lines[3] = lines[3].split(";")[0] + ";abc;" + ";".join(lines[3].split(";")[2:])  # one stray word
    source = tmp_path / "rows.csv"
    source.write_text("\n".join(lines) + "\n")
    assert run(table_model, source, tmp_path / "out") == 0
    rows = read_manifest(tmp_path / "out")
    read_as_mean = [row["preprocessing"] for row in rows if "stored mean" in row["preprocessing"]]
    assert len(read_as_mean) == 1 and "'abc' is not a number" in read_as_mean[0], read_as_mean[:3]
    noted = sum(bool(row["preprocessing"]) for row in rows)  # the others: beyond the range of the model's 60 rows
    assert f"warning: {counted(noted, 'row')} had empty cells or cells that are not numbers" in capsys.readouterr().err


def test_csv_rows_are_written_in_a_random_order_when_every_condition_is_kept(table_model, tmp_path):
    """With every condition kept the rows came out in the input's order: a file sorted by a privatized column
    (age) told each released row's rank in it."""
    frame = table_frame(40).sort_values("age", kind="stable").reset_index(drop=True)
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    output = tmp_path / "kept"
    assert run(table_model, source, output, "--batch-size", "7") == 0
    rows = read_manifest(output)
    written = [int(row["output"].rsplit(" ", 1)[1]) for row in rows]
    assert [row["file"] for row in rows] == [f"row {n}" for n in range(1, 41)]
    assert sorted(written) == list(range(1, 41)) and written != list(range(1, 41))
    released = pd.read_csv(output / "privatized.csv")
    for row, position in zip(rows, written):  # each manifest row points at its own released row (sex kept)
        assert f"sex={released['sex'][position - 1]}" == row["released_condition"] == row["condition"]
    assert "Rows are written in an order drawn at random" in (output / "guarantee.txt").read_text(encoding="utf-8")


def test_csv_rows_are_written_in_a_random_order_when_a_condition_is_not_kept(table_model, tmp_path):
    frame = table_frame(40).sort_values("sex", kind="stable").reset_index(drop=True)  # sorted by the condition
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    output = tmp_path / "resampled"
    assert run(table_model, source, output, "--batch-size", "7", "--condition", "sex=resampled") == 0
    rows = read_manifest(output)
    written = [int(row["output"].rsplit(" ", 1)[1]) for row in rows]
    assert sorted(written) == list(range(1, 41)) and written != list(range(1, 41))
    released = pd.read_csv(output / "privatized.csv")
    for row, position in zip(rows, written):  # each manifest row points at its own released row
        assert f"sex={released['sex'][position - 1]}" == row["released_condition"]
    assert "Rows are written in an order drawn at random" in (output / "guarantee.txt").read_text(encoding="utf-8")


def test_an_interrupted_shuffled_csv_run_keeps_the_rows_released_before_it(table_model, tmp_path, monkeypatch):
    source = tmp_path / "rows.csv"
    table_frame(40).to_csv(source, index=False)
    monkeypatch.setattr(archive, "privatize", interrupted_at(3, archive.privatize))  # on the third chunk
    output = tmp_path / "out"
    assert run(table_model, source, output, "--batch-size", "7", "--condition", "sex=resampled") == \
        archive.EXIT_INTERRUPTED
    rows = read_manifest(output)
    assert [row["file"] for row in rows] == [f"row {n}" for n in range(1, 15)]  # the two chunks before Ctrl-C
    released = pd.read_csv(output / "privatized.csv")
    assert len(released) == 14  # held until the end, they were lost on Ctrl-C
    written = [int(row["output"].rsplit(" ", 1)[1]) for row in rows]
    assert sorted(written) == list(range(1, 15))
    for row, position in zip(rows, written):
        assert f"sex={released['sex'][position - 1]}" == row["released_condition"]
    assert (output / "guarantee.txt").read_text(encoding="utf-8").startswith(
        "Partial run: interrupted after 14 privatized inputs")


def test_csv_codes_with_leading_zeros_are_read_as_the_models_categories(tmp_path):
    from cadp.train import fit_tabular
    from cadp.uploads import read_csv_upload

    codes = ["038.9", "250.00", "401.9", "008.45"]
    text = "icd,age,bmi\n" + "".join(f"{codes[i % 4]},{20 + i},{20 + i % 7}.5\n" for i in range(40))
    model = save_model(fit_tabular(read_csv_upload(text.encode()).frame, ["icd"], steps=5), tmp_path / "model")
    source = tmp_path / "rows.csv"
    source.write_text(text)
    assert run(model, source, tmp_path / "out") == 0  # read as numbers, 038.9 was no category the model knew
    released = pd.read_csv(tmp_path / "out" / "privatized.csv", dtype={"icd": str})
    assert sorted(released["icd"]) == sorted(codes[i % 4] for i in range(40))  # kept, as written
    # semicolons, decimal commas, a space after a code: the codes are still the model's, not numbers
    european = tmp_path / "european.csv"
    european.write_text(text.replace(",", ";").replace(".5\n", ",5\n").replace("038.9;", "038.9 ;"))
    assert run(model, european, tmp_path / "eu") == 0
    assert all(row["status"] == "privatized" for row in read_manifest(tmp_path / "eu"))
    released = pd.read_csv(tmp_path / "eu" / "privatized.csv", sep=";", decimal=",", dtype={"icd": str})
    assert sorted(released["icd"]) == sorted(codes[i % 4] for i in range(40))
    twice = tmp_path / "twice.csv"
    twice.write_text("icd,age,bmi,icd \n" + "".join(line + ",x\n" for line in text.splitlines()[1:]))
    assert run(model, twice, tmp_path / "twice") == archive.EXIT_USAGE  # was a traceback


def test_one_bad_condition_cell_costs_its_row_only_whatever_the_batch(table_model, tmp_path):
    frame = table_frame(20).astype({"sex": object})
    frame.loc[[3, 9, 15], "sex"] = [3, None, "x"]
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    for batch in ("1", "7", "1000"):
        assert run(table_model, source, tmp_path / f"out{batch}", "--batch-size", batch) == 0
        statuses = [row["status"] for row in read_manifest(tmp_path / f"out{batch}")]
        assert statuses.count("privatized") == 17, (batch, statuses)


def test_csv_keeps_the_inputs_column_order(table_model, tmp_path):
    source = tmp_path / "rows.csv"
    table_frame(5)[["sex", "note", "bmi", "age"]].to_csv(source, index=False)  # a condition column first
    assert run(table_model, source, tmp_path / "out") == 0
    released = pd.read_csv(tmp_path / "out" / "privatized.csv")
    assert list(released.columns) == ["sex", "note", "bmi", "age"]


def test_csv_cells_read_as_the_mean_are_named_in_the_manifest(table_model, tmp_path, capsys):
    frame = table_frame(7).astype({"bmi": object})
    frame.loc[1, "bmi"], frame.loc[3, "bmi"], frame.loc[4, "bmi"] = None, "abc", "inf"
    frame.loc[6, "bmi"], frame.loc[6, "sex"] = None, 9  # unusable (no such sex): not released, so not counted
    source = tmp_path / "rows.csv"
    source.write_text(frame.to_csv(index=False))
    assert run(table_model, source, tmp_path / "out") == 0
    rows = read_manifest(tmp_path / "out")
    notes = [row["preprocessing"] for row in rows]
    assert notes[1].startswith("bmi: empty, read as the model's stored mean ")
    assert notes[3].startswith("bmi: 'abc' is not a number, read as the model's stored mean ")
    assert notes[4].startswith("bmi: infinite, read as the model's stored mean ")
    assert [note for index, note in enumerate(notes) if index not in (1, 3, 4)] == [""] * 4
    assert rows[6]["status"] == "error"
    # the warning's count is the number of rows the manifest's preprocessing column names
    assert "warning: 3 rows had empty cells or cells that are not numbers" in capsys.readouterr().err


def test_csv_numbers_outside_the_fitted_range_and_booleans_are_named_in_the_manifest(table_model, tmp_path, capsys):
    """A number beyond the range the model knows is read as the range's nearer end, a column of True/False as
    cells that are not numbers: the manifest says so per row, as the release notes of the app do."""
    bmi = load_folder(table_model).model.data_encoder.spec("bmi")
    frame = table_frame(4)
    frame.loc[1, "bmi"], frame.loc[2, "bmi"] = 1e8, -5.0
    source = tmp_path / "rows.csv"
    source.write_text(frame.to_csv(index=False))
    assert run(table_model, source, tmp_path / "out") == 0
    notes = [row["preprocessing"] for row in read_manifest(tmp_path / "out")]
    span = f"({bmi.low:.4g} to {bmi.high:.4g})"
    assert notes == ["", f"bmi: 1e+08 is outside the range the model knows {span}, read as {bmi.high:.4g}",
                     f"bmi: -5 is outside the range the model knows {span}, read as {bmi.low:.4g}", ""]
    assert "warning: 2 rows had empty cells or cells that are not numbers" in capsys.readouterr().err
    source.write_text(frame.assign(bmi=[True, False, True, False]).to_csv(index=False))  # read as a bool column
    assert run(table_model, source, tmp_path / "booleans") == 0
    notes = [row["preprocessing"] for row in read_manifest(tmp_path / "booleans")]
    assert notes[:2] == [f"bmi: 'True' is not a number, read as the model's stored mean {bmi.mean:.4g}",
                         f"bmi: 'False' is not a number, read as the model's stored mean {bmi.mean:.4g}"]


def test_a_row_in_the_csv_three_times_is_three_releases_and_costs_three_epsilon(table_model, tmp_path, capsys):
    """One row three times (once with its columns in another order and its age written 1 decimal) and another
    twice were released with independent noise, and the manifest and guarantee said epsilon 1 for each."""
    frame = table_frame(6)
    source = tmp_path / "rows.csv"
    copies = pd.concat([frame, frame.iloc[[0, 1, 0]]], ignore_index=True)
    text = copies.to_csv(index=False)
    first = frame.iloc[0]
    text += f"{float(first['age'])},{first['bmi']},{first['note']},{first['sex']}\n"  # age 53.0: the same row
    source.write_text(text, encoding="utf-8")
    assert run(table_model, source, tmp_path / "out", "--batch-size", "4", "--mechanism", "gaussian",
               "--delta", "1e-5", "--condition", "sex=randomized:0.5") == 0
    err = capsys.readouterr().err
    assert ("warning: 2 rows of the input occur more than once (1 row 4 times, 1 row 2 times; the same values in "
            "the model's columns): each copy was released separately, with its own noise, so a record that occurs k "
            "times costs k times the epsilon of one release (basic composition), here up to epsilon 6 and delta "
            "4e-05;") in err
    assert "epsilon_record_total of manifest.csv give each input's total in this run (releases of the same " \
        "record in other runs add to it)" in err
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    totals = {name: (row["epsilon"], row["releases_of_record"], row["epsilon_record_total"],
                     row["delta_record_total"]) for name, row in rows.items()}
    for name in ("row 1", "row 7", "row 9", "row 10"):
        assert totals[name] == ("1.5", "4", "6", "4e-05")  # (1 + 0.5) * 4; delta 1e-5 * 4
    for name in ("row 2", "row 8"):
        assert totals[name] == ("1.5", "2", "3", "2e-05")
    for name in ("row 3", "row 4", "row 5", "row 6"):
        assert totals[name] == ("1.5", "1", "1.5", "1e-05")
    assert (tmp_path / "out" / "cautions.txt").read_text(encoding="utf-8").startswith(
        "Caution: 2 rows of the input occur more than once (1 row 4 times, 1 row 2 times;")
    terms = (tmp_path / "out" / "guarantee.txt").read_text(encoding="utf-8")
    assert "Caution" not in terms
    assert ("Releasing the same record again (in another run, or as another copy in one input) costs its epsilon "
            "and delta again (basic composition): a record released n times costs n times the epsilon and delta "
            "of one release.") in terms
    # the option says so before any run
    with pytest.raises(SystemExit):
        archive.parse_args(["--help"])
    assert "releasing the same record again (another run, another copy in INPUT) costs epsilon again" in \
        " ".join(capsys.readouterr().out.split())


def test_csv_missing_model_columns_is_a_usage_error(table_model, tmp_path, capsys):
    source = tmp_path / "rows.csv"
    source.write_text("age,bmi\n30,22\n")
    assert run(table_model, source, tmp_path / "out") == 2
    assert "lacks the model's columns ['note', 'sex']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # a refused run leaves nothing behind
    kept = tmp_path / "kept"
    kept.mkdir()
    assert run(table_model, source, kept) == 2
    assert kept.is_dir() and not any(kept.iterdir())  # the user's empty folder stays, empty
    table_frame(3).to_csv(source, index=False)  # the corrected file, into the same folder
    assert run(table_model, source, tmp_path / "out") == 0 and (tmp_path / "out" / "privatized.csv").exists()


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("extra, message", [
    (["--mechanism", "gaussian"], "delta must be given for the gaussian mechanism"),
    (["--mechanism", "metric", "--temperature", "1"], "apply to laplace and gaussian, not metric"),
    (["--delta", "1e-5"], "--delta applies to gaussian only, not laplace"),  # run() asks for laplace
    (["--epsilon", "-1"], "epsilon must be in (0, inf)"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--condition", "label=randomized:abc"], "--condition 'label=randomized:abc': the epsilon 'abc' is not a number"),
    (["--condition", "label=hidden"], "--condition 'label=hidden': condition handling must be one of"),
    (["--epsilon", "1e-40", "--clip-radius", "1"], "above the largest allowed"),
    (["--clip-radius", "0"], "--clip-radius must be a number > 0, got 0"),  # the option's name, not clip_radius
    (["--temperature", "-1"], "--temperature must be a number > 0, got -1"),
    # the total overflowed to infinity and the terms said "Total epsilon ...: inf"
    (["--epsilon", "1e308", "--clip-radius", "1", "--condition", "label=randomized:1e308"],
     "error: the total epsilon of one release (basic composition: 1e+308 + 1e+308) overflows to infinity"),
])
def test_unusable_arguments_exit_2_with_a_message(image_model, tmp_path, capsys, extra, message):
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    argv = ["--model", str(image_model), "--mechanism", "laplace", "--epsilon", "1", *extra,
            str(source), str(tmp_path / "out")]
    assert archive.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unusable_paths_exit_2(image_model, table_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    assert run(image_model, tmp_path / "missing", tmp_path / "out") == 2
    assert "does not exist" in capsys.readouterr().err
    busy = make_folder(tmp_path / "busy", {"keep.txt": b"x"})
    assert run(image_model, source, busy) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    # an earlier run's output (a partial one, say): never written over, and what running again costs is said
    assert run(image_model, source, tmp_path / "first") == 0
    capsys.readouterr()
    assert run(image_model, source, tmp_path / "first") == 2
    assert (f"error: OUTPUT {tmp_path / 'first'} holds an earlier run (manifest.csv lists what it privatized); choose a "
            "new folder. Running again releases again: each record released again costs its epsilon again") \
        in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert run(image_model, source, tmp_path / "a-file") == 2
    assert "OUTPUT " + str(tmp_path / "a-file") + " is a file, not a folder" in capsys.readouterr().err
    assert run(image_model, source, source / "out") == 2
    assert "must not be inside INPUT" in capsys.readouterr().err
    assert run(table_model, source, tmp_path / "out") == 2
    assert "tabular model: INPUT must be a .csv" in capsys.readouterr().err
    assert run(tmp_path / "no-model", source, tmp_path / "out") == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    a_file = tmp_path / "labels.txt"
    a_file.write_text("x")
    assert run(image_model, source, a_file / "out") == 2  # an OUTPUT inside a file cannot be made
    err = capsys.readouterr().err
    assert f"cannot write the output folder {a_file / 'out'}" in err and "Traceback" not in err


def test_a_tab_separated_file_named_tsv_or_txt_is_a_table(table_model, tmp_path, capsys):
    """A .tsv was refused ("INPUT must be ... a .csv") though its tabs are read like any separator."""
    for suffix in (".tsv", ".txt", ".TSV"):
        source = tmp_path / f"rows{suffix}"
        table_frame(6).to_csv(source, index=False, sep="\t")
        output = tmp_path / f"out{suffix}"
        assert run(table_model, source, output) == 0, capsys.readouterr().err
        assert [row["status"] for row in read_manifest(output)] == ["privatized"] * 6
    (tmp_path / "rows.dat").write_text("a\tb\n1\t2\n")
    assert run(table_model, tmp_path / "rows.dat", tmp_path / "out-dat") == 2
    assert "INPUT must be a folder of images, a .zip or a .csv (or .tsv, .txt) of rows" in capsys.readouterr().err


def test_an_input_with_nothing_to_privatize_writes_nothing(image_model, table_model, tmp_path, capsys):
    """A CSV with a header and no rows left an empty privatized.csv and 'privatized 0, unusable 0'."""
    source = tmp_path / "header.csv"
    table_frame(3).head(0).to_csv(source, index=False)
    assert run(table_model, source, tmp_path / "out") == 1
    assert f"error: {source} holds no rows to privatize; nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "in"
    empty.mkdir()
    assert run(image_model, empty, tmp_path / "out") == 1
    assert "holds no files to privatize" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_column_in_another_case_is_named_in_the_refusal(table_model, tmp_path, capsys):
    source = tmp_path / "rows.csv"
    frame = table_frame(3)
    frame.rename(columns={frame.columns[0]: frame.columns[0].upper()}).to_csv(source, index=False)
    assert run(table_model, source, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"(the file has {frame.columns[0].upper()!r} for {frame.columns[0]!r}: column names are case-sensitive" in err


def test_a_file_given_two_labels_is_refused(image_model, tmp_path, capsys):
    """A kept label is released exactly: a labels CSV that names one file twice with two labels is an error."""
    source = make_folder(tmp_path / "in", {"a.png": image_file(1), "b.png": image_file(2)})
    (tmp_path / "labels.csv").write_text("file,label\na.png,0\nb.png,1\na.png,1\n")
    assert run(image_model, source, tmp_path / "out", "--labels", str(tmp_path / "labels.csv")) == 2
    assert "the labels CSV gives 'a.png' two labels: '0' (line 2) and '1' (line 4)" in capsys.readouterr().err
    (tmp_path / "labels.csv").write_text("file,label\na.png,0\nb.png,1\na.png,0\n")  # the same label twice
    assert run(image_model, source, tmp_path / "out2", "--labels", str(tmp_path / "labels.csv")) == 0


def test_unknown_mechanism_is_refused_by_argparse(image_model, tmp_path):
    with pytest.raises(SystemExit) as stop:
        archive.main(["--model", str(image_model), "--mechanism", "magic", "--epsilon", "1", "a", "b"])
    assert stop.value.code == 2


def test_privatize_module_main_delegates_here(image_model, tmp_path):
    from cadp.privatize import main

    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    assert main(["--model", str(image_model), "--mechanism", "paper", "--epsilon", "2",
                 str(source), str(tmp_path / "out")]) == 0
    (row,) = read_manifest(tmp_path / "out")
    assert row["mechanism"] == "paper (reference reproduction — no formal guarantee; batch of 1)"


@pytest.mark.parametrize("batch_size", ["1", "5", "64"])
def test_a_csv_row_with_more_fields_than_the_header_refuses_the_file_naming_its_line(table_model, tmp_path, capsys,
                                                                                      batch_size):
    lines = table_frame(20).to_csv(index=False).splitlines()
    lines.insert(8, "1,2,3,4,5,6,7")  # data row 8, line 9: which of its cells is which cannot be known
    source = tmp_path / "ragged.csv"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    assert run(table_model, source, output, "--batch-size", batch_size) == archive.EXIT_USAGE
    err = capsys.readouterr().err
    assert "ragged.csv has rows with more fields than its header (4 columns, comma-separated): data row 8 (line 9, " \
           "7 fields)" in err, err
    assert "Nothing was privatized" in err
    assert not output.exists()  # nothing released, OUTPUT left as it was for the retry
    # a first row longer than the header would otherwise be read with its first cell as an index, shifted
    lines = table_frame(5).to_csv(index=False).splitlines()
    source.write_text("\n".join([lines[0], lines[1] + ",x", *lines[2:]]) + "\n")
    assert run(table_model, source, output) == archive.EXIT_USAGE
    assert "data row 1 (line 2, 5 fields)" in capsys.readouterr().err


def test_csv_rows_ending_in_the_separator_are_read_in_their_columns(table_model, tmp_path):
    frame = table_frame(6)
    lines = frame.to_csv(index=False).splitlines()
    source = tmp_path / "trailing.csv"
    source.write_text("\n".join([lines[0], *(line + "," for line in lines[1:])]) + "\n")  # as some exports write
    output = tmp_path / "out"
    assert run(table_model, source, output) == 0
    rows = read_manifest(output)
    assert [row["status"] for row in rows] == ["privatized"] * 6
    assert [row["condition"] for row in rows] == [f"sex={sex}" for sex in frame["sex"]]  # not shifted a column


def test_one_row_with_an_empty_or_na_field_beyond_the_header_is_refused(table_model, tmp_path, capsys):
    """bmi 32,1 typed as 32;1 gave a first row one field longer; its extra field empty or NA, pandas said nothing and
    the row was released shifted a column (bmi 32, the next column 1). Refused now, unless every row ends so."""
    frame = table_frame(4)
    lines = frame.to_csv(index=False, sep=";").splitlines()
    for extra in ("", "NA", "n/a"):
        for row in (1, 3):
            shifted = list(lines)
            shifted[row] = shifted[row] + ";" + extra
            source = tmp_path / f"shifted{row}{extra.replace('/', '')}.csv"
            source.write_text("\n".join(shifted) + "\n")
            assert run(table_model, source, tmp_path / f"out{row}{extra.replace('/', '')}") == archive.EXIT_USAGE
            err = capsys.readouterr().err
            assert f"has rows with more fields than its header (4 columns, semicolon-separated): data row {row} " \
                   f"(line {row + 1}, 5 fields)" in err, err
    every = tmp_path / "every.csv"  # every row ends in a separator: read in its columns
    every.write_text("\n".join([lines[0], *(line + ";" for line in lines[1:])]) + "\n")
    assert run(table_model, every, tmp_path / "every-out") == 0
    # the header ends in one too (an unnamed column), and one row has a typed separator and an empty last cell
    both = [lines[0] + ";", *(line + ";" for line in lines[1:])]
    both[1] = both[1].replace(";", ";;", 1)  # 13 fields against the others' 12
    shifted = tmp_path / "both.csv"
    shifted.write_text("\n".join(both) + "\n")
    assert run(table_model, shifted, tmp_path / "both-out") == archive.EXIT_USAGE
    assert "more fields than its header (5 columns, semicolon-separated): data row 1 (line 2, 6 fields)" in \
        capsys.readouterr().err
    # a shifted row among ten that end in a separator: named alone (not the rows as the export wrote them)
    ten = table_frame(10).to_csv(index=False, sep=";").splitlines()
    odd = [ten[0], *(line + ";" for line in ten[1:])]
    odd[7] = odd[7].replace(";", ";;", 1)
    among = tmp_path / "among.csv"
    among.write_text("\n".join(odd) + "\n")
    assert run(table_model, among, tmp_path / "among-out") == archive.EXIT_USAGE
    err = capsys.readouterr().err
    assert ": data row 7 (line 8, 6 fields) (counting data rows" in err, err
    # a row after a quoted cell of three lines is named by the line it starts on
    quoted = [ten[0], ten[1], ten[2].replace(";ok;", ';"a\nb\nc";', 1), ten[3] + ";x"]
    multi = tmp_path / "multi.csv"
    multi.write_text("\n".join(quoted) + "\n")
    assert run(table_model, multi, tmp_path / "multi-out") == archive.EXIT_USAGE
    assert "data row 3 (line 6, 5 fields)" in capsys.readouterr().err
    # an unnamed column with values in it: every row as long as the header, read as the app reads it
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("\n".join([lines[0] + ";", *(line + ";checked" for line in lines[1:])]) + "\n")
    assert run(table_model, unnamed, tmp_path / "unnamed-out") == 0
    # most rows end in a separator, one added by hand does not: each row keeps its columns
    many = table_frame(20).to_csv(index=False, sep=";").splitlines()
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("\n".join([many[0], *(line + ";" for line in many[1:-1]), many[-1]]) + "\n")
    assert run(table_model, mixed, tmp_path / "mixed-out") == 0
    assert [row["status"] for row in read_manifest(tmp_path / "mixed-out")] == ["privatized"] * 20


def signalled_run(model: Path, source: Path, output: Path, signum: int, *extra: str) -> tuple[int, str]:
    """Run the CLI in a subprocess, send it ``signum`` once its manifest lists a few inputs (a CSV's rows, held
    until the end: a second after its terms are written); (exit code, stderr)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def default_signals():  # a test runner in the background may ignore them, and a child inherits that
        for number in archive.STOP_SIGNALS:
            signal.signal(number, signal.SIG_DFL)

    process = subprocess.Popen(
        [sys.executable, "-m", "cadp.privatize", "--model", str(model), "--mechanism", "laplace", "--epsilon", "1",
         *extra, str(source), str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals,
        cwd=Path(archive.__file__).resolve().parent.parent, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 240
    manifest, terms = output / "manifest.csv", output / "guarantee.txt"
    while process.poll() is None and time.monotonic() < deadline:
        if manifest.exists() and manifest.read_text(encoding="utf-8").count("\n") > 4:
            break
        if source.suffix == ".csv" and terms.exists():
            time.sleep(1.0)
            break
        time.sleep(0.02)
    process.send_signal(signum)
    _, err = process.communicate(timeout=240)
    return process.returncode, err


@pytest.mark.parametrize("signal_name, kind", [("SIGTERM", "csv"), ("SIGHUP", "csv"), ("SIGTERM", "images")])
def test_a_run_ended_by_a_signal_stops_as_ctrl_c_does_with_files_and_manifest_in_line(image_model, table_model,
                                                                                    tmp_path, signal_name, kind):
    import signal

    signum = getattr(signal, signal_name)
    output = tmp_path / "out"
    if kind == "csv":  # each row twice: the repeated-records caution applies from the first chunk on
        frame = table_frame(1500)
        source = tmp_path / "rows.csv"
        frame.loc[frame.index.repeat(2)].to_csv(source, index=False)
        code, err = signalled_run(table_model, source, output, signum, "--batch-size", "2")
    else:
        files = {f"0/{i:04d}.png": image_file(i // 2) for i in range(1000)}  # each image twice too
        source = make_folder(tmp_path / "in", files)
        code, err = signalled_run(image_model, source, output, signum, "--batch-size", "2")
    assert code == 128 + signum, err
    assert "Traceback" not in err
    rows = read_manifest(output)
    privatized = [row for row in rows if row["status"] == "privatized"]
    assert 0 < len(privatized) < (3000 if kind == "csv" else 1000)
    if kind == "csv":
        assert len(pd.read_csv(output / "privatized.csv")) == len(privatized)
    else:
        assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*.png")) == \
            sorted(row["output"] for row in privatized)
    assert all(row["releases_of_record"] for row in privatized)  # the manifest was completed
    assert f"stopped: ended by {signal_name} after {len(privatized)} privatized" in err
    terms = (output / "guarantee.txt").read_text(encoding="utf-8")
    assert terms.startswith(f"Partial run: ended by {signal_name} after {len(privatized)} privatized inputs")
    assert "Incomplete run" not in terms
    assert "occur more than once" in (output / "cautions.txt").read_text(encoding="utf-8")  # written at the end too


def test_ctrl_c_between_writing_a_chunk_and_listing_it_keeps_privatized_csv_and_manifest_in_line(
        table_model, tmp_path, monkeypatch, capsys):
    import os
    import signal

    source = tmp_path / "rows.csv"
    table_frame(30).to_csv(source, index=False)
    keys = archive.row_record_keys
    calls = []

    def keys_then_ctrl_c(*args, **kwargs):  # called after the chunk is in privatized.csv, before the manifest rows
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return keys(*args, **kwargs)

    monkeypatch.setattr(archive, "row_record_keys", keys_then_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal's Ctrl-C is handled
    try:
        output = tmp_path / "out"
        assert run(table_model, source, output, "--batch-size", "3") == archive.EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signal.getsignal(signal.SIGINT) is previous
    rows = read_manifest(output)
    assert [row["file"] for row in rows] == [f"row {n}" for n in range(1, 10)]  # the chunk being written completes
    assert len(pd.read_csv(output / "privatized.csv")) == 9
    assert "stopped: interrupted after 9 privatized" in capsys.readouterr().err
    terms = (output / "guarantee.txt").read_text(encoding="utf-8")
    assert terms.startswith("Partial run: interrupted after 9 privatized inputs")
    assert "Incomplete run" not in terms


def test_a_finished_run_has_no_in_progress_line_and_a_killed_one_keeps_it(table_model, tmp_path):
    source = tmp_path / "rows.csv"
    table_frame(10).to_csv(source, index=False)
    assert run(table_model, source, tmp_path / "out") == 0
    terms = (tmp_path / "out" / "guarantee.txt").read_text(encoding="utf-8")
    assert "Incomplete run" not in terms and terms.startswith("Laplace mechanism")
    # while a run is going (and after SIGKILL, which nothing can catch) the terms say it has not finished
    archive.write_guarantee(tmp_path, "terms")
    assert (tmp_path / "guarantee.txt").read_text(encoding="utf-8").startswith(archive.RUN_IN_PROGRESS)


def test_command_line_entry_point_exits_2_without_traceback(image_model, tmp_path):
    import subprocess
    import sys

    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    completed = subprocess.run(
        [sys.executable, "-m", "cadp.privatize", "--model", str(image_model), "--mechanism", "gaussian",
         "--epsilon", "1", str(source), str(tmp_path / "out")],
        capture_output=True, text=True, cwd=Path(archive.__file__).resolve().parent.parent, timeout=300)
    assert completed.returncode == 2
    assert "error: delta must be given for the gaussian mechanism" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("as_zip", [False, True])
def test_numbered_outputs_do_not_follow_the_inputs_sorted_into_class_folders(image_model, tmp_path, as_zip):
    files = {f"{label}/{i:02d}.png": image_file(10 * label + i) for label in (0, 1) for i in range(15)}
    source = make_folder(tmp_path / "in", files)
    if as_zip:
        source = tmp_path / "in.zip"
        with zipfile.ZipFile(source, "w") as archive:
            for name in sorted(files):
                archive.writestr(name, files[name])
    output = tmp_path / "out"
    assert run(image_model, source, output, "--condition", "label=resampled") == 0
    rows = read_manifest(output)
    number = {row["file"]: int(row["output"].rsplit("/", 1)[1].split(".")[0]) for row in rows}
    assert sorted(number.values()) == list(range(1, 31))
    # in input order, numbers 1-15 would be the 0s: a resampled label would be given away by the number
    low_zeros = sum(1 for name, n in number.items() if name.startswith("0/") and n <= 15)
    assert low_zeros < 15, "outputs numbered in input order"
    # and the manifest's rows (files written in the same order) are not in input order either
    assert [row["file"] for row in rows] != sorted(files)


def test_an_interrupted_run_says_so_in_the_terms_that_travel_with_its_files(image_model, tmp_path, monkeypatch,
                                                                            capsys):
    source = make_folder(tmp_path / "in", {f"0/{i}.png": image_file(i) for i in range(6)})
    prepare = archive.to_model_input

    monkeypatch.setattr(archive, "to_model_input", interrupted_at(5, prepare))
    assert run(image_model, source, tmp_path / "out", "--batch-size", "2") == archive.EXIT_INTERRUPTED
    terms = (tmp_path / "out" / "guarantee.txt").read_text(encoding="utf-8")
    assert terms.startswith("Partial run: interrupted after 4 privatized inputs")
    assert "holds a partial run" in capsys.readouterr().err
    # stopped inside a batch, after some of its files were written: the files on disk are the ones listed
    monkeypatch.setattr(archive, "to_model_input", prepare)
    monkeypatch.setattr(archive, "png_bytes", interrupted_at(3, archive.png_bytes))
    output = tmp_path / "out2"
    assert run(image_model, source, output, "--batch-size", "4", "--condition", "label=resampled") == \
        archive.EXIT_INTERRUPTED
    # the first batch of 4 stopped at its third file: nothing released, its two files removed, OUTPUT as it was
    assert not output.exists()
    assert "before any privatized input was written: nothing was released" in capsys.readouterr().err

    from cadp.hub import load_folder

    with pytest.raises(archive.UsageError, match="given twice"):  # a second one was silently the one used
        archive.parse_conditions(["label=kept", "label=resampled"], load_folder(image_model).config)


def test_condition_handling_options_randomize_labels_and_add_their_epsilon(image_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {f"0/{i}.png": image_file(i) for i in range(12)})
    assert run(image_model, source, tmp_path / "out", "--seed", "3", "--condition", "label=randomized:0.01") == 0
    rows = read_manifest(tmp_path / "out")
    assert {row["epsilon"] for row in rows} == {f"1.01 ({NOT_PRIVATE_SEED})"}  # a fixed seed: said in this column too
    assert any(row["released_condition"] != row["condition"] for row in rows)  # k=10, eps 0.01: mostly changed
    # the release's folders name the released class, and its files are numbered: input names and folders often
    # carry the true label (here every true label is 0, and the input is 0/<i>.png)
    assert [row["output"] for row in rows] == [f"{archive.class_folder_name(row['released_condition'])}/{n:05d}.png"
                                               for n, row in enumerate(rows, start=1)], rows
    # the release's labels file lists the released labels only, of numbered files: no input name, no true label
    assert read_released_labels(tmp_path / "out") == [(row["output"], row["released_condition"]) for row in rows]
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == \
        sorted(row["output"] for row in rows)
    terms = (tmp_path / "out" / "guarantee.txt").read_text(encoding="utf-8")
    assert "not part of the release" in terms and "Files are numbered, in an order drawn at random," in terms
    assert "With --seed 3 the order is drawn from the seed: anyone with it can reproduce it" in terms
    kept = tmp_path / "kept"
    capsys.readouterr()
    assert run(image_model, source, kept, "--seed", "3") == 0
    # copied names are said where the run ends too, not only in guarantee.txt
    assert "note: File and folder names are copied from the input: they are not covered by the guarantee." in \
        capsys.readouterr().err
    assert {row["output"] for row in read_manifest(kept)} == {f"0/{i}.png" for i in range(12)}  # kept: mirrored
    assert "names are copied from the input" in (kept / "guarantee.txt").read_text(encoding="utf-8")
    neutral = tmp_path / "neutral"
    assert run(image_model, source, neutral, "--seed", "3", "--neutral-names") == 0
    assert "names are copied" not in capsys.readouterr().err
    assert {row["output"] for row in read_manifest(neutral)} == {f"0/{n:05d}.png" for n in range(1, 13)}
    assert read_released_labels(neutral) == [(f"0/{n:05d}.png", "0") for n in range(1, 13)]
    # numbered in the input's order, the numbers would still tell which input each output is
    assert [row["file"] for row in read_manifest(neutral)] != [f"0/{i}.png" for i in sorted(range(12), key=str)]
    # metric's epsilon is per unit of latent distance: never added into one number with a condition's
    metric = tmp_path / "metric"
    assert run(image_model, source, metric, "--mechanism", "metric", "--condition", "label=randomized:1") == 0
    assert {row["epsilon"] for row in read_manifest(metric)} == {
        "1 per unit of latent L1 distance + epsilon = 1 for conditions"}  # (not "+ 1": read as 2 per unit)


def test_condition_handling_for_tables_and_bad_options(table_model, tmp_path, capsys):
    source = tmp_path / "rows.csv"
    table_frame(40).to_csv(source, index=False)
    assert run(table_model, source, tmp_path / "out", "--condition", "sex=resampled") == 0
    assert {row["epsilon"] for row in read_manifest(tmp_path / "out")} == {"1"}
    for option, message in [("age=kept", "the model's conditions are sex"),
                            ("sex=randomized", "randomized:EPSILON"),
                            ("sex=randomized:-1", "condition epsilon"),
                            ("sex=dropped", "handling must be one of")]:
        assert run(table_model, source, tmp_path / f"bad-{len(message)}", "--condition", option) == 2
        assert message in capsys.readouterr().err


def test_inversion_defaults_to_the_models_training_data(image_model, tmp_path):
    from cadp.uploads import default_invert

    assert default_invert("mnist") == "auto" and default_invert("fashion-mnist") == "auto"
    source = make_folder(tmp_path / "in", {"0/sheet.png": corpus.png(corpus.digit(28, 28, dark_on_light=True))})
    assert run(image_model, source, tmp_path / "default") == 0  # a model trained on an image folder ("t")
    assert "inverted" not in read_manifest(tmp_path / "default")[0]["preprocessing"]
    assert run(image_model, source, tmp_path / "auto", "--invert", "auto") == 0
    assert "inverted (dark-on-light detected)" in read_manifest(tmp_path / "auto")[0]["preprocessing"]


def test_an_inverted_image_is_written_back_only_where_every_image_was_inverted(image_model, tmp_path, monkeypatch):
    """Under --invert always every input is inverted, whatever its pixels: each release is inverted back, dark on light
    as its input (a reviewer: a scan archive came back in the other polarity). Under auto the input's own pixels
    decide: a release written back showed exactly whether its input was dark on light, which the guarantee does not
    cover (a later review), so it is left as the model reads it. Here the release is the model's input itself."""
    sheet = corpus.digit(28, 28, dark_on_light=True)
    source = make_folder(tmp_path / "in", {"0/sheet.png": corpus.png(sheet), "0/digit.png": corpus.png(255 - sheet)})
    real = archive.privatize

    def releasing_the_input(model, pixels, *args, **kwargs):
        result = real(model, pixels, *args, **kwargs)
        result.privatized = pixels.float()
        return result

    monkeypatch.setattr(archive, "privatize", releasing_the_input)
    light = np.asarray(Image.fromarray(255 - sheet).convert("L"))  # light on dark, as the model reads both
    expected = {"auto": (light, light), "always": (255 - light, light), "never": (255 - light, light)}
    for invert, (sheet_out, digit_out) in expected.items():
        assert run(image_model, source, tmp_path / invert, "--invert", invert) == 0
        for name, want in (("sheet", sheet_out), ("digit", digit_out)):
            written = np.asarray(Image.open(tmp_path / invert / "0" / f"{name}.png").convert("L"))
            assert np.array_equal(written, want), (invert, name)
    rows = {row["file"]: row["preprocessing"] for row in read_manifest(tmp_path / "auto")}
    assert "inverted (dark-on-light detected)" in rows["0/sheet.png"] and archive.INVERTED_NOT_BACK in rows["0/sheet.png"]
    assert "inverted" not in rows["0/digit.png"]
    rows = {row["file"]: row["preprocessing"] for row in read_manifest(tmp_path / "always")}
    assert all("inverted (as requested)" in steps and archive.INVERTED_BACK in steps for steps in rows.values())
    assert "inverted" not in read_manifest(tmp_path / "never")[0]["preprocessing"]


def test_rows_a_bundled_model_was_trained_on_are_flagged(tmp_path, capsys):
    from cadp.data import load_table
    from cadp.hub import BUNDLED_DIR
    from cadp.train import split_table

    frame = load_table("diabetes").frame
    train, test = split_table(frame, 0)
    mixed = tmp_path / "mixed.csv"
    pd.concat([train.head(3), test.head(2)]).to_csv(mixed, index=False)
    assert run(BUNDLED_DIR / "diabetes-cinn", mixed, tmp_path / "out") == 0
    assert "warning: 3 input rows are rows diabetes-cinn was trained on" in capsys.readouterr().err
    assert (tmp_path / "out" / "cautions.txt").read_text(encoding="utf-8").startswith("Caution: 3 input rows")
    held_out = tmp_path / "held-out.csv"
    test.head(4).to_csv(held_out, index=False)
    assert run(BUNDLED_DIR / "diabetes-cinn", held_out, tmp_path / "out2") == 0
    said = capsys.readouterr().err  # no training rows; rows of the public table the encoder was fitted on
    assert "trained on (without DP)" not in said
    assert "warning: 4 input rows are rows of the public diabetes table that diabetes-cinn did not train on" in said
    # whether released rows were training rows is the operator's to know: the shared terms are the same, and
    # say the rule for any training row
    terms = (tmp_path / "out" / "guarantee.txt").read_text(encoding="utf-8")
    assert terms == (tmp_path / "out2" / "guarantee.txt").read_text(encoding="utf-8")
    assert "for a record of that training data it does not cover what the model learned from the record" in terms


def test_csv_columns_left_out_are_said_and_labels_are_for_images(table_model, tmp_path, capsys):
    frame = table_frame(4)
    frame["patient_id"] = ["a", "b", "c", "d"]
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    assert run(table_model, source, tmp_path / "out") == 0
    assert "column ['patient_id'] is not the model's and is left out" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na,0\n")
    assert run(table_model, source, tmp_path / "out2", "--labels", str(labels)) == 2
    assert "--labels applies to images" in capsys.readouterr().err


# --------------------------------------------------------------------------- round trips, write errors, order

@pytest.fixture(scope="module")
def signed_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = ImageModelConfig(name="s", dataset="s", class_names=["-1", "+1", "=2"], conv_width=4, fc_width=8,
                              conv_blocks=[1, 1], fc_blocks=1)
    return save_model(ImageCINN(config), tmp_path_factory.mktemp("models") / "signed")


def test_released_labels_csv_names_files_and_classes_exactly_and_reads_back_as_an_input(signed_model, tmp_path):
    files = {"-scan.png": "-1", "+a.png": "+1", "=b.png": "=2", "@c.png": "-1", "sub/-d.png": "+1"}
    source = make_folder(tmp_path / "in", {name: image_file(n) for n, name in enumerate(files)})
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n" + "".join(f"{name},{label}\n" for name, label in files.items()))
    output = tmp_path / "out"
    assert run(signed_model, source, output, "--labels", str(labels), "--invert", "never") == 0
    released = dict(read_released_labels(output))
    assert released == files  # not "'-scan.png" nor "'+1": the file's names are the files written
    assert all((output / name).is_file() for name in released)
    assert "not escaped against spreadsheet formulas" in (output / "guarantee.txt").read_text(encoding="utf-8")
    # read back as an input (its labels.csv at the top of INPUT): every file gets the class it was released with
    assert run(signed_model, output, tmp_path / "again", "--invert", "never") == 0
    again = [row for row in read_manifest(tmp_path / "again") if row["file"].endswith(".png")]  # not its terms
    assert {row["status"] for row in again} == {"privatized"}
    assert {row["file"].removeprefix("'"): row["condition"].removeprefix("'") for row in again} == files


def test_a_folder_or_label_that_could_name_two_classes_is_refused_and_an_exact_name_wins():
    resolver = archive.LabelResolver(["-1", "+1"])
    assert [resolver.resolve("-1/x.png"), resolver.resolve("+1/x.png")] == [0, 1]
    with pytest.raises(archive.InputError, match="'1' could be the class '-1' and '\\+1'"):
        resolver.resolve("1/x.png")  # it was class '-1' for every image, '+1' ones too
    labelled = archive.LabelResolver(["-1", "+1"], {"a.png": "+1", "b.png": "1"})
    assert labelled.resolve("a.png") == 1
    with pytest.raises(archive.InputError, match="could be the class"):
        labelled.resolve("b.png")
    assert archive.LabelResolver(CLASSES).resolve("t_shirt_top/a.png") == 2  # one class: still matched loosely


def failing_at(call: int, function, error: BaseException):
    """``function``, but raising ``error`` on its ``call``-th call."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise error
        return function(*args, **kwargs)
    return wrapped


def test_a_full_disk_stops_the_run_with_an_error_and_files_in_line_with_the_manifest(image_model, tmp_path,
                                                                                    monkeypatch, capsys):
    import errno

    source = make_folder(tmp_path / "in", {f"0/{i}.png": image_file(i) for i in range(6)})
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(archive, "png_bytes", failing_at(4, archive.png_bytes, full))
    output = tmp_path / "out"
    assert run(image_model, source, output, "--batch-size", "2") == archive.EXIT_WRITE_ERROR
    err = capsys.readouterr().err
    assert "error: the run stopped (No space left on device) after 2 privatized" in err
    assert "each record released again costs its epsilon again (basic composition)" in err
    assert "Traceback" not in err
    listed = [row["output"] for row in read_manifest(output) if row["status"] == "privatized"]
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*.png")) == sorted(listed)
    assert len(listed) == 2  # the second batch's first file, written before the failure, was removed
    assert {row["epsilon_record_total"] for row in read_manifest(output)} == {"1"}  # the totals were filled in
    terms = (output / "guarantee.txt").read_text(encoding="utf-8")
    assert terms.startswith("Partial run: stopped by an error (No space left on device) after 2 privatized")
    assert "Incomplete run" not in terms and not (output / "guarantee.txt.part").exists()
    # failing at the first file: nothing released, no terms, exit 1
    monkeypatch.setattr(archive, "png_bytes", failing_at(1, uploads.png_bytes, full))
    assert run(image_model, source, tmp_path / "out2") == archive.EXIT_NOTHING_PRIVATIZED
    # (it said "holds a partial run ... after 0 privatized" and "Running again releases again", and left a manifest
    # and an empty class folder behind)
    err = capsys.readouterr().err
    assert ("error: the run stopped (No space left on device) before any privatized input was written: nothing was released, "
            f"and {tmp_path / 'out2'} was left as it was") in err
    assert "partial run" not in err and "Running again" not in err
    assert not (tmp_path / "out2").exists()
    (tmp_path / "out3").mkdir()  # an empty OUTPUT given: kept, empty
    monkeypatch.setattr(archive, "png_bytes", failing_at(1, uploads.png_bytes, full))
    assert run(image_model, source, tmp_path / "out3") == archive.EXIT_NOTHING_PRIVATIZED
    assert list((tmp_path / "out3").iterdir()) == []
    # a CSV: the chunk being written is cut back, and a manifest that cannot be closed does not raise again
    with (tmp_path / "rows.csv").open("wb", buffering=0) as out:
        archive._append(out, b"a,b\n1,2\n")

        class HalfThenFull:
            def tell(self):
                return out.tell()

            def fileno(self):
                return out.fileno()

            def seek(self, position):
                return out.seek(position)

            def write(self, data):
                if len(data) > 2:
                    return out.write(bytes(data[:2]))
                raise full
        with pytest.raises(OSError):
            archive._append(HalfThenFull(), b"3,4\n")
    assert (tmp_path / "rows.csv").read_bytes() == b"a,b\n1,2\n"


def test_a_manifest_whose_last_write_fails_closes_without_raising(tmp_path):
    import errno

    settings = archive.RunSettings(archive.make_mechanism("laplace", 1), archive.new_generator(None), None, 1,
                                   "never")
    manifest = archive.Manifest(tmp_path / "manifest.csv", settings)
    handle = manifest.handle

    class FullOnClose:
        closed = False

        def close(self):
            handle.close()
            raise OSError(errno.ENOSPC, "No space left on device")
    manifest.handle = FullOnClose()
    manifest.close()
    assert manifest.write_error.errno == errno.ENOSPC


def test_the_terms_are_written_before_the_first_file_of_a_run(image_model, table_model, tmp_path, monkeypatch):
    """A run killed outright (SIGKILL) during its first batch left files without any terms."""
    output = tmp_path / "out"
    seen = []

    def terms_first(function):
        def wrapped(*args, **kwargs):
            terms = (output / "guarantee.txt").read_text(encoding="utf-8")
            seen.append(terms.startswith(archive.RUN_IN_PROGRESS) and "Laplace mechanism" in terms)
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(archive, "png_bytes", terms_first(archive.png_bytes))
    assert run(image_model, make_folder(tmp_path / "in", {"0/a.png": image_file(1)}), output) == 0
    source = tmp_path / "rows.csv"
    table_frame(5).to_csv(source, index=False)
    output = tmp_path / "out-rows"
    monkeypatch.setattr(archive, "escaped_csv", terms_first(archive.escaped_csv))
    assert run(table_model, source, output) == 0
    assert seen == [True, True]
    assert "Incomplete run" not in (output / "guarantee.txt").read_text(encoding="utf-8")


def test_record_totals_that_overflow_or_reach_delta_1_are_said_so():
    settings = archive.RunSettings(archive.make_mechanism("laplace", 1e308, clip_radius=1), archive.new_generator(None), None, 1,
                                   "never")
    assert settings.epsilon_of(1) == "1e+308"
    assert settings.epsilon_of(2) == "more than 1.8e+308 (too large to write)"  # was "inf"
    gaussian = archive.RunSettings(archive.make_mechanism("gaussian", 1, delta=0.6), archive.new_generator(None),
                                   None, 1, "never")
    assert gaussian.delta_of(1) == "0.6"
    assert gaussian.delta_of(2) == ">= 1: no guarantee (2 x 0.6)"  # was 1.2


def test_the_command_line_ignores_stop_signals_once_main_returns(image_model, tmp_path):
    import signal

    previous = signal.getsignal(signal.SIGINT)
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    assert run(image_model, source, tmp_path / "out") == 0
    assert signal.getsignal(signal.SIGINT) is previous  # a library caller gets its handlers back
    try:
        assert archive.main(["--model", str(image_model), "--mechanism", "laplace", "--epsilon", "1", str(source),
                             str(tmp_path / "out2")], exiting=True) == 0
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # a Ctrl-C at exit: no traceback
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_rows_record_key_does_not_depend_on_how_the_table_was_read():
    from cadp.train import row_record_keys

    read = pd.DataFrame({"age": [53, 53, 40], "bmi": [25.5, 25.5, float("nan")], "sex": ["1", "1", "2"]})
    written = pd.DataFrame({"sex": [1.0, 1.0, 2.0], "bmi": ["25.5", "25.5", ""], "age": ["53", "53.0", "40"]})
    keys = row_record_keys(read)
    assert keys == row_record_keys(written)  # 53 is 53.0, any column order, a missing number is an empty cell
    assert keys[0] == keys[1] != keys[2]
    assert row_record_keys(pd.DataFrame({"a": ["1:2", ""], "b": ["", "1:2"]}))[0] != \
        row_record_keys(pd.DataFrame({"a": ["", "1:2"], "b": ["1:2", ""]}))[0]


def test_a_run_that_releases_nothing_leaves_no_cautions(tmp_path, capsys):
    """cautions.txt was written for a run whose every row was refused, and stayed when the terms were removed."""
    from cadp.train import fit_tabular

    model = save_model(fit_tabular(table_frame(60), ["sex"], steps=2, dataset="rows.csv"), tmp_path / "model")
    source = tmp_path / "rows.csv"  # named like the model's training data: a caution, were anything released
    table_frame(3).assign(sex=[7, 8, 9]).to_csv(source, index=False)  # conditions the model does not know
    assert run(model, source, tmp_path / "out") == 1
    assert not (tmp_path / "out" / "cautions.txt").exists() and not (tmp_path / "out" / "guarantee.txt").exists()
    table_frame(3).to_csv(source, index=False)
    assert run(model, source, tmp_path / "out2") == 0
    assert "has the name of the data" in (tmp_path / "out2" / "cautions.txt").read_text(encoding="utf-8")


def test_a_class_folder_named_in_decomposed_unicode_is_the_class():
    """macOS writes folder names decomposed (NFD): 'Pneumonie ü' came back as no class at all."""
    import unicodedata

    classes = ["Normal", "Pneumonie ü (bakteriell)", "폐렴"]
    resolver = archive.LabelResolver(classes)
    for index, name in enumerate(classes):
        decomposed = unicodedata.normalize("NFD", name)
        assert decomposed != name or index == 0
        assert resolver.resolve(f"{decomposed}/scan.png") == index
        assert resolver.resolve(f"{decomposed.lower()}/scan.png") == index  # case aside, as for any name


def test_a_folder_that_cannot_be_listed_gets_a_manifest_row(image_model, tmp_path, monkeypatch):
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1), "1/locked/b.png": image_file(2)})
    corpus.deny_listing(monkeypatch, "locked")
    assert run(image_model, source, tmp_path / "out") == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert rows["1/a.png"]["status"] == "privatized"
    assert rows["1/locked/"]["error"] == "the folder cannot be listed (Permission denied); its files are left out"


def test_an_output_name_too_long_is_shortened_and_the_run_goes_on(image_model, tmp_path, capsys):
    long_name = "患" * 100  # 300 bytes in UTF-8: more than a file name can hold
    files = {"1/ok1.png": image_file(1), f"1/{long_name}.png": image_file(2), f"1/{long_name}.bmp": corpus.encode(
        Image.fromarray(np.random.default_rng(3).integers(0, 255, (30, 30), dtype=np.uint8)), "BMP"),
        "1/ok2.png": image_file(4)}
    source = tmp_path / "in.zip"
    source.write_bytes(corpus.zip_bytes(files))
    output = tmp_path / "out"
    assert run(image_model, source, output) == 0
    rows = {row["file"]: row for row in read_manifest(output)}
    assert [row["status"] for row in rows.values()] == ["privatized"] * 4
    written = [rows[f"1/{long_name}.png"]["output"], rows[f"1/{long_name}.bmp"]["output"]]
    assert len(set(written)) == 2
    for name in written:
        assert name.endswith(".png") and len(Path(name).name.encode()) <= 255 and (output / name).is_file()
    assert rows["1/ok2.png"]["output"] == "1/ok2.png"
    assert (f"note: 2 input names are longer than a file name can be (255 bytes) and were shortened, e.g. "
            f"1/{long_name}.png -> {written[0]}") in capsys.readouterr().err


@pytest.mark.parametrize("order", ["folder first", "file first"])
def test_an_output_that_clashes_with_an_output_folder_is_one_files_error(image_model, tmp_path, order):
    bitmap = corpus.encode(Image.fromarray(np.random.default_rng(3).integers(0, 255, (30, 30), dtype=np.uint8)),
                           "BMP")
    files = {"1/a.png/x.png": image_file(1), "1/a.bmp": bitmap, "1/b.png": image_file(2)}
    if order == "file first":
        files = {"1/a.bmp": bitmap, "1/a.png/x.png": image_file(1), "1/b.png": image_file(2)}
    source = tmp_path / "in.zip"
    source.write_bytes(corpus.zip_bytes(files))
    output = tmp_path / "out"
    assert run(image_model, source, output) == 0
    rows = {row["file"]: row for row in read_manifest(output)}
    assert rows["1/b.png"]["status"] == "privatized"
    if order == "folder first":  # the folder's name is taken: the file gets a number
        assert rows["1/a.bmp"]["output"] == "1/a-2.png" and rows["1/a.png/x.png"]["output"] == "1/a.png/x.png"
    else:  # a released file has the folder's name: the other input is listed with the reason, the run goes on
        assert rows["1/a.bmp"]["output"] == "1/a.png"
        assert rows["1/a.png/x.png"]["status"] == "error"
        assert rows["1/a.png/x.png"]["error"].startswith("the output file 1/a.png/x.png cannot be written (")
    assert {row["output"] for row in rows.values() if row["output"]} == {file for file, _ in
                                                                         read_released_labels(output)}


def test_a_file_name_that_is_not_utf8_is_listed_readably_and_released_under_a_utf8_name(image_model, tmp_path,
                                                                                        capsys):
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    (source / "1" / os.fsdecode(b"M\xfcller.png")).write_bytes(image_file(2))  # an old Windows share's Latin-1 name
    output = tmp_path / "out"
    assert run(image_model, source, output) == 0
    rows = {row["file"]: row for row in read_manifest(output)}
    assert set(rows) == {"1/a.png", "1/M\\xfcller.png"}
    assert rows["1/M\\xfcller.png"]["status"] == "privatized"
    assert rows["1/M\\xfcller.png"]["output"] == "1/M_ller.png" and (output / "1/M_ller.png").is_file()
    assert dict(read_released_labels(output)) == {"1/a.png": "1", "1/M_ller.png": "1"}
    assert not (output / "guarantee.txt").read_text(encoding="utf-8").startswith("Incomplete run")
    assert ("note: 1 input name holds bytes that are not UTF-8, characters Windows cannot store in a file name"
            in capsys.readouterr().err)  # the name changed, and is said to


def test_a_text_cell_in_a_column_of_number_categories_costs_its_row_only_whatever_the_batch(tmp_path):
    from cadp.data import load_table
    from cadp.hub import BUNDLED_DIR

    frame = load_table("heart").frame.head(20).astype({"ca": object})
    frame.loc[3, "ca"] = "?"  # the UCI files' missing-value mark, in heart-cinn's categories 0..3
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    for batch in ("1", "64"):
        output = tmp_path / f"out{batch}"
        assert run(BUNDLED_DIR / "heart-cinn", source, output, "--epsilon", "5", "--batch-size", batch) == 0
        rows = read_manifest(output)
        assert [row["file"] for row in rows if row["status"] == "error"] == ["row 4"], batch
        assert rows[3]["error"] == ("column 'ca' has the value '?', unseen when the model was fitted "
                                    "(it knows 0, 1, 2, 3)")


def test_a_text_cell_costs_its_row_only_where_the_number_categories_include_empty_cells(tmp_path):
    from cadp.train import fit_tabular

    frame = table_frame(60).drop(columns="note")
    frame["grp"] = pd.Series([1, 2, 3, None] * 15, dtype=object)  # empty cells: a category of their own (None)
    model = save_model(fit_tabular(frame, ["sex"], steps=5), tmp_path / "model")
    source = tmp_path / "rows.csv"
    frame.head(10).assign(grp=[1, 2, 3, "x", 1, 2, 3, 1, 2, 3]).to_csv(source, index=False)
    assert run(model, source, tmp_path / "out", "--batch-size", "64") == 0
    rows = read_manifest(tmp_path / "out")
    assert [row["file"] for row in rows if row["status"] == "error"] == ["row 4"]
    assert rows[3]["error"].startswith("column 'grp' has the value 'x', unseen when the model was fitted")


def test_a_header_ending_in_empty_cells_is_read_as_excel_writes_it(table_model, tmp_path, capsys):
    source = tmp_path / "rows.csv"
    frame = table_frame(4)
    source.write_text("age,bmi,note,sex,,\n" + "".join(f"{a},{b},ok,{s},,\n" for a, b, s in
                                                         zip(frame["age"], frame["bmi"], frame["sex"])))
    assert run(table_model, source, tmp_path / "out") == 0  # was refused: "names column(s) [''] more than once"
    assert [row["status"] for row in read_manifest(tmp_path / "out")] == ["privatized"] * 4


def test_a_condition_column_with_an_empty_cell_is_written_as_whole_numbers(table_model, tmp_path):
    frame = table_frame(6)
    source = tmp_path / "rows.csv"
    frame.assign(sex=frame["sex"].astype(object).where(frame.index != 2, None)).to_csv(source, index=False)
    assert run(table_model, source, tmp_path / "out") == 0
    rows = read_manifest(tmp_path / "out")
    assert [row["condition"] for row in rows] == [f"sex={sex}" if i != 2 else "sex=(empty)"
                                                  for i, sex in enumerate(frame["sex"])]


def test_a_csv_naming_a_column_twice_is_refused_naming_it(table_model, tmp_path, capsys):
    source = tmp_path / "rows.csv"
    frame = table_frame(4)
    source.write_text("age,bmi,note,sex,sex\n" + "".join(f"{a},{b},ok,{s},{3 - s}\n" for a, b, s in
                                                         zip(frame["age"], frame["bmi"], frame["sex"])))
    assert run(table_model, source, tmp_path / "out") == archive.EXIT_USAGE
    assert "rows.csv names column ['sex'] more than once" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # the header row as written is the one after an Excel "sep=" line, in a file of carriage returns alone
    source.write_text("sep=;\rage;bmi;note;sex;sex\r" + "".join(f"{a};{b};ok;{s};{3 - s}\r" for a, b, s in
                                                                zip(frame["age"], frame["bmi"], frame["sex"])))
    assert run(table_model, source, tmp_path / "out") == archive.EXIT_USAGE
    assert "rows.csv names column ['sex'] more than once" in capsys.readouterr().err


def test_a_file_the_labels_csv_does_not_list_never_takes_another_files_label(image_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {"a/x.png": image_file(1), "7/x.png": image_file(2),
                                           "b/y.png": image_file(3), "labels.csv": b"file,label\na/x.png,1\n"
                                           b"y.png,0\nmissing.png,1\nother/z.png,0\n"})
    output = tmp_path / "out"
    assert run(image_model, source, output) == 0
    rows = {row["file"]: row for row in read_manifest(output)}
    assert rows["a/x.png"]["condition"] == "1"
    assert rows["7/x.png"]["status"] == "error" and rows["7/x.png"]["error"].startswith("no label")  # was label 1
    assert rows["b/y.png"]["condition"] == "0"  # a bare name one input has: its label
    assert ("note: 2 rows of the labels CSV name no file of the input (missing.png, other/z.png)"
            in capsys.readouterr().err)


class BrokenStderr(io.TextIOBase):
    """A terminal's stderr whose reader is gone: every write fails (| head, a full disk behind 2>)."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("kind", ["image", "table"])
def test_a_stderr_that_cannot_be_written_stops_nothing(image_model, table_model, tmp_path, monkeypatch, kind):
    if kind == "image":
        model, source = image_model, make_folder(tmp_path / "in", {f"1/{i}.png": image_file(i) for i in range(3)})
    else:
        model, source = table_model, tmp_path / "rows.csv"
        table_frame(5).assign(extra=1).to_csv(source, index=False)  # a note on stderr before the first row
    monkeypatch.setattr(sys, "stderr", BrokenStderr())
    output = tmp_path / "out"
    assert run(model, source, output, "--batch-size", "2") == 0
    assert [row["status"] for row in read_manifest(output)] == ["privatized"] * (3 if kind == "image" else 5)
    assert not (output / "guarantee.txt").read_text(encoding="utf-8").startswith(("Partial run", "Incomplete run"))


def test_ctrl_c_while_the_model_loads_is_one_line_and_exit_130(image_model, tmp_path, monkeypatch, capsys):
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})

    def interrupted(source):
        raise KeyboardInterrupt

    monkeypatch.setattr(archive, "_load_model", interrupted)
    assert run(image_model, source, tmp_path / "out") == archive.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "stopped: interrupted while starting; nothing was written\n"
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_the_model_loads_is_never_lost(image_model, tmp_path, monkeypatch, capsys):
    """Python's KeyboardInterrupt is lost where it lands in a callback (an import's, a weakref's): a reviewer's
    Ctrl-C during start-up was printed as "Exception ignored" and the run then released every input with exit 0.
    The signal is noted from the start of the run and ends it before any release."""
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    load = archive._load_model

    def loaded_while_interrupted(model):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the signal is handled between bytecodes
                pass
        except KeyboardInterrupt:  # as a callback's caller does: printed and dropped
            pass
        return load(model)

    monkeypatch.setattr(archive, "_load_model", loaded_while_interrupted)
    assert run(image_model, source, tmp_path / "out") == archive.EXIT_INTERRUPTED
    assert capsys.readouterr().err.endswith("stopped: interrupted while starting; nothing was written\n")
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back for the caller


def test_ctrl_c_noted_before_the_run_began_stops_it_before_any_release(image_model, tmp_path, capsys):
    """A Ctrl-C while the command line's libraries load (cadp.startup's handler) counts once the run begins."""
    from cadp.startup import StartupStop

    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    noted = StartupStop()
    noted.signum = signal.SIGINT
    previous = signal.signal(signal.SIGINT, noted)
    try:
        assert run(image_model, source, tmp_path / "out") == archive.EXIT_INTERRUPTED
        assert signal.getsignal(signal.SIGINT) is noted
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err == "stopped: interrupted while starting; nothing was written\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("entry", ["cadp.privatize", "cadp.archive"])
def test_ctrl_c_while_the_command_line_starts_is_one_line_and_nothing_is_written(image_model, tmp_path, entry):
    """python -m cadp.archive printed a 20-frame KeyboardInterrupt traceback for a Ctrl-C during its imports."""
    import subprocess
    import time

    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    output = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", entry, "--model", str(image_model), "--mechanism", "laplace",
                                "--epsilon", "1", str(source), str(output)], cwd=Path(__file__).parents[1],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # python and cadp have started; torch is loading
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == archive.EXIT_INTERRUPTED, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().endswith("stopped: interrupted while starting; nothing was written"), err
    assert not output.exists()


def test_a_run_stopped_before_its_first_release_says_nothing_was_released(image_model, tmp_path, monkeypatch,
                                                                           capsys):
    """A stop between the start of the run and its first written file: no partial run to speak of."""
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1), "0/b.png": image_file(2)})

    def stopped(*args, **kwargs):
        archive._stop_requests._handle(signal.SIGTERM, None)  # as the signal's handler is called
        archive._stop_requests.check()

    monkeypatch.setattr(archive, "privatize_images", stopped)
    assert run(image_model, source, tmp_path / "out") == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.endswith("stopped: ended by SIGTERM before any privatized input was written: nothing was released, and "
                        f"{tmp_path / 'out'} was left as it was\n"), err
    assert not (tmp_path / "out").exists()


def test_a_labels_csv_with_a_cell_too_large_is_refused_with_a_message(image_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na.png,1\n\"" + "x" * 200_000 + "\",1\n")
    assert run(image_model, source, tmp_path / "out", "--labels", str(labels)) == archive.EXIT_USAGE
    assert ("error: the labels CSV cannot be read after line 2 (field larger than field limit (131072))"
            in capsys.readouterr().err)


def test_hidden_files_are_skipped_and_counted(image_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {"1/.scan.png": image_file(1), ".thumbs/a.png": image_file(2)})
    assert run(image_model, source, tmp_path / "out") == archive.EXIT_NOTHING_PRIVATIZED
    err = capsys.readouterr().err
    assert "note: 2 hidden or system files or folders were skipped, e.g. .thumbs/ (names starting with '.'" in err
    assert f"error: {source} holds no files to privatize (2 hidden or system files skipped)" in err
    zipped = tmp_path / "in.zip"
    zipped.write_bytes(corpus.zip_bytes({"1/a.png": image_file(1), "__MACOSX/1/._a.png": b"junk"}))
    assert run(image_model, zipped, tmp_path / "zip-out") == 0
    assert "note: 1 hidden or system file or folder was skipped, e.g. __MACOSX/1/._a.png" in \
        capsys.readouterr().err



def test_notes_of_a_run_count_one_file_in_the_singular_and_more_in_the_plural():
    """The notes said "1 labels CSV(s) in the input are not read": one is "1 labels CSV ... is"."""
    assert archive.hidden_files_note(["__MACOSX/a"]).startswith(
        "1 hidden or system file or folder was skipped, e.g. __MACOSX/a (names")
    assert archive.hidden_files_note([".a", ".b/"]).startswith(
        "2 hidden or system files or folders were skipped, e.g. .a (names")
    assert archive.unused_labels_note(["x.png"]).startswith(
        "1 row of the labels CSV names no file of the input (x.png): check their paths")
    assert archive.unused_labels_note(["x.png", "y.png"]).startswith(
        "2 rows of the labels CSV name no file of the input (x.png, y.png): check their paths")
    assert archive.unread_labels_note(["a.csv", "b.csv"], "a.csv", False) == (
        "1 labels CSV in the input is not read (only the first, a.csv, is read): b.csv")
    assert archive.unread_labels_note(["a.csv", "b.csv", "c.csv"], "a.csv", False) == (
        "2 labels CSVs in the input are not read (only the first, a.csv, is read): b.csv, c.csv")
    assert archive.dotted_cells_note({"bmi": [1, "12.500"]}, "rows.csv").startswith(
        "1 cell of rows.csv such as '12.500' (column 'bmi'), with one dot and no comma in a file of decimal commas, "
        "was read with a decimal point (12.5)")
    assert archive.dotted_cells_note({"bmi": [1234, "12.500"], "age": [1, "1.250"]}, "rows.csv").startswith(
        "1,235 cells of rows.csv such as '12.500' (column 'bmi' and 1 more column), with one dot and no comma in a "
        "file of decimal commas, were read with a decimal point (12.5)")

def test_a_second_link_to_one_file_is_listed_as_released_once(image_model, tmp_path):
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    elsewhere = make_folder(tmp_path / "elsewhere", {"c.png": image_file(3)})
    (source / "1" / "b.png").symlink_to(elsewhere / "c.png")
    (source / "1" / "d.png").symlink_to(elsewhere / "c.png")
    assert run(image_model, source, tmp_path / "out") == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert [rows[name]["status"] for name in ("1/a.png", "1/b.png")] == ["privatized"] * 2
    assert rows["1/d.png"]["status"] == "error"
    assert rows["1/d.png"]["error"] == "the same file as 1/b.png (a link to it): released once, as 1/b.png; skipped"


def test_links_inside_the_input_are_said_with_the_name_they_are_read_under(image_model, tmp_path, capsys):
    """A link to a file or folder inside the input: read under its real name, said under the link's; a link to a
    hidden file counts with the hidden files (the run leaves its target out)."""
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1), "0/scans/c.png": image_file(2),
                                           "1/.private.png": image_file(3)})
    (source / "1" / "z-first.png").symlink_to(source / "1" / "a.png")  # sorted after its target
    (source / "0" / "a-link.png").symlink_to(source / "1" / "a.png")  # sorted before it, in another folder
    (source / "0" / "b-scans").symlink_to(source / "0" / "scans")  # walked before the real folder
    (source / "1" / "shown.png").symlink_to(source / "1" / ".private.png")
    assert run(image_model, source, tmp_path / "out") == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert sorted(name for name, row in rows.items() if row["status"] == "privatized") == ["0/scans/c.png", "1/a.png"]
    for link in ("1/z-first.png", "0/a-link.png"):
        assert rows[link]["error"] == "the same file as 1/a.png (a link to it): released once, as 1/a.png; skipped"
    assert rows["0/b-scans/"]["error"] == ("the same folder as 0/scans/ (a link to it): its files are released "
                                           "once, under 0/scans/; skipped")
    assert "1/shown.png" not in rows
    err = capsys.readouterr().err
    assert "2 hidden or system files or folders were skipped" in err and "outside" not in err


def test_links_to_files_outside_the_input_are_said(image_model, tmp_path, capsys):
    """A link inside INPUT to a file or folder elsewhere was read and released without a word."""
    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    elsewhere = make_folder(tmp_path / "elsewhere", {"b.png": image_file(2), "more/c.png": image_file(3)})
    (source / "1" / "b.png").symlink_to(elsewhere / "b.png")
    (source / "0").symlink_to(elsewhere / "more")
    assert run(image_model, source, tmp_path / "out") == 0
    assert {row["file"]: row["status"] for row in read_manifest(tmp_path / "out")} == {
        "0/c.png": "privatized", "1/a.png": "privatized", "1/b.png": "privatized"}
    assert (f"note: 2 input files lie outside {source} and are reached through links, e.g. 0/c.png -> "
            f"{(elsewhere / 'more' / 'c.png').resolve()}: they are read and privatized as inputs") in capsys.readouterr().err


def test_labels_csvs_that_are_not_read_are_said_and_any_case_is_read(image_model, tmp_path, capsys):
    zipped = tmp_path / "in.zip"
    # (both in the ZIP's single top folder: only a labels CSV at the top of the input or of that folder is read)
    zipped.write_bytes(corpus.zip_bytes({"set/labels.csv": b"file,label\nx.png,1\n", "set/a/x.png": image_file(1),
                                         "set/LABELS.csv": b"file,label\ny.png,0\n", "set/b/y.png": image_file(2)}))
    assert run(image_model, zipped, tmp_path / "zip-out") == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "zip-out")}
    assert rows["set/a/x.png"]["condition"] == "1" and rows["set/b/y.png"]["error"].startswith("no label")
    assert ("note: 1 labels CSV in the input is not read (only the first, set/labels.csv, is read): "
            "set/LABELS.csv") in capsys.readouterr().err
    source = make_folder(tmp_path / "in", {"x.png": image_file(1), "Labels.csv": b"file,label\nx.png,1\n"})
    assert run(image_model, source, tmp_path / "out") == 0
    assert f"note: labels from {source / 'Labels.csv'}" in capsys.readouterr().err
    assert [row["file"] for row in read_manifest(tmp_path / "out")] == ["x.png"]
    # labels.csv and Labels.csv side by side in a folder (a file system that tells case apart): one is read, and
    # the other is said, as in a ZIP
    (source / "labels.csv").write_bytes(b"file,label\nx.png,0\n")
    if len({path.name for path in source.iterdir()}) == 3:
        assert run(image_model, source, tmp_path / "out2") == 0
        err = capsys.readouterr().err
        assert f"note: labels from {source / 'labels.csv'}" in err
        assert "note: 1 labels CSV in the input is not read (only the first, labels.csv, is read): Labels.csv" in err
        assert read_manifest(tmp_path / "out2")[0]["condition"] == "0"
    labels = tmp_path / "given.csv"
    labels.write_bytes(b"file,label\nx.png,1\n")
    assert run(image_model, source, tmp_path / "out3", "--labels", str(labels)) == 0
    unread = len({path.name for path in source.iterdir()}) - 1  # Labels.csv, and labels.csv where told apart
    assert (f"note: {counted(unread, 'labels CSV')} in the input {'is' if unread == 1 else 'are'} not read (--labels "
            "gives the labels): ") in capsys.readouterr().err


def test_a_full_disk_names_each_file_it_left_incomplete(image_model, tmp_path, monkeypatch, capsys):
    import errno

    class FullDiskLabels(archive.ReleasedLabels):
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive, "ReleasedLabels", FullDiskLabels)
    source = make_folder(tmp_path / "in", {f"0/{i}.png": image_file(i) for i in range(4)})
    assert run(image_model, source, tmp_path / "out", "--batch-size", "2") == archive.EXIT_WRITE_ERROR
    assert ("; labels.csv could not be completed (No space left on device): its last rows may be missing"
            in capsys.readouterr().err)


def test_output_names_are_unique_in_any_unicode_form_and_storable_on_windows(image_model, tmp_path, capsys):
    files = {"1/\u00e9.png": image_file(1), "1/e\u0301.png": image_file(2),  # 'é' composed, and decomposed (macOS)
             "1/a:b?.png": image_file(3), "1/con.png": image_file(4), "1/ok.png": image_file(5)}
    source = make_folder(tmp_path / "in", files)
    output = tmp_path / "out"
    assert run(image_model, source, output) == 0
    outputs = {row["file"]: row["output"] for row in read_manifest(output)}
    # (in sorted order the decomposed name comes first and keeps it)
    assert outputs == {"1/e\u0301.png": "1/e\u0301.png", "1/\u00e9.png": "1/\u00e9-2.png", "1/a:b?.png": "1/a_b_.png",
                       "1/con.png": "1/_con.png", "1/ok.png": "1/ok.png"}
    assert ("note: 2 input names hold bytes that are not UTF-8, characters Windows cannot store in a file name"
            in capsys.readouterr().err)


def test_a_multi_frame_input_is_said_on_stderr_and_in_cautions(image_model, tmp_path, capsys):
    """A 3-page TIFF lost pages 2 and 3 with only a note in the manifest's preprocessing column."""
    from PIL import Image

    pages = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (30, 30), dtype=np.uint8)) for i in range(3)]
    stack = io.BytesIO()
    pages[0].save(stack, format="TIFF", save_all=True, append_images=pages[1:])
    source = make_folder(tmp_path / "in", {"0/stack.tif": stack.getvalue(), "0/b.png": image_file(2)})
    assert run(image_model, source, tmp_path / "out") == 0
    expected = ("1 file holds several frames (a series, a stack or an animation): only the first frame of it is "
                "privatized (0/stack.tif; the manifest.csv column preprocessing says how many each held)")
    assert expected in capsys.readouterr().err
    assert expected in (tmp_path / "out" / "cautions.txt").read_text(encoding="utf-8")
    assert expected not in (tmp_path / "out" / "guarantee.txt").read_text(encoding="utf-8")
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert "first frame of a 3-frame multi-frame TIFF" in rows["0/stack.tif"]["preprocessing"]
    assert run(image_model, make_folder(tmp_path / "in2", {"0/b.png": image_file(2)}), tmp_path / "out2") == 0
    assert "several frames" not in capsys.readouterr().err


def test_a_run_whose_stderr_is_a_log_prints_progress_lines(image_model, table_model, tmp_path, capsys, monkeypatch):
    """With stderr not a terminal (nohup, cron, a log file) the bar was off: a 110,000-row CSV ran 45 s silently."""
    source = make_folder(tmp_path / "in", {f"0/{i}.png": image_file(i) for i in range(3)})
    assert run(image_model, source, tmp_path / "quiet") == 0
    assert "files after" not in capsys.readouterr().err  # a short run stays quiet
    monkeypatch.setattr(archive, "LOG_PROGRESS_SECONDS", 0.0)  # a line at every update
    assert run(image_model, source, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "images: 1 of 3 (33%) files after " in err and "images: 3 of 3 (100%) files after " in err
    assert "\r" not in err  # lines, not a bar's carriage returns
    rows = tmp_path / "rows.csv"
    table_frame(30).to_csv(rows, index=False)
    assert run(table_model, rows, tmp_path / "rows-out") == 0
    assert "rows: 30 rows after " in capsys.readouterr().err


def test_an_image_that_lost_its_suffix_is_read_by_its_content(image_model, tmp_path, capsys):
    """A PNG saved without a suffix was listed as "not an image"."""
    source = make_folder(tmp_path / "in", {"0/scan": image_file(1), "0/notes.dat": b"no image here" * 20})
    assert run(image_model, source, tmp_path / "out") == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert rows["0/scan"]["status"] == "privatized"
    assert rows["0/notes.dat"]["status"] != "privatized" and "not an image" in rows["0/notes.dat"]["error"]


def test_a_rows_release_does_not_depend_on_how_its_numbers_are_written_or_on_the_other_rows(table_model, tmp_path):
    """Released numbers were written as the input's column held them: pandas read a chunk of whole bmi values as
    integers and its releases were rounded. A one-row file with bmi 32 came back rounded, one with 32.1 did not (the
    release told whether the record's own value was whole), and a row's release changed with the other rows of its
    chunk. With one seed the first row's released text is now the same in each of these files."""
    first_rows = []
    for index, bmis in enumerate([("32", "21.6"), ("32.0", "21.6"), ("32", "22"), ("32", "22.0")]):
        source = tmp_path / f"rows{index}.csv"
        source.write_text("age,bmi,note,sex\n" + "".join(f"50,{bmi},ok,1\n" for bmi in bmis))
        output = tmp_path / f"out{index}"
        assert run(table_model, source, output, "--seed", "5") == 0
        released = (output / "privatized.csv").read_text().splitlines()[1:]
        place = int(read_manifest(output)[0]["output"].rsplit(" ", 1)[1])  # "privatized.csv row N"
        first_rows.append(released[place - 1])
    assert len(set(first_rows)) == 1, first_rows
    assert "." in first_rows[0].split(",")[1]  # the model's decimals (its bmi values had them)


def test_a_csv_row_with_fewer_fields_than_the_header_refuses_the_file(table_model, tmp_path, capsys):
    """A row cut in two by a line break in a cell: pandas read its first part with empty cells, released as a
    record of training means beside the real ones."""
    lines = table_frame(20).to_csv(index=False).splitlines()
    cells = lines[8].split(",")
    lines[8:9] = [",".join(cells[:2]), ",".join(cells[2:])]  # data row 8 broken in two
    lines.insert(4, "")  # a blank line: not counted
    source = tmp_path / "broken.csv"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    assert run(table_model, source, output) == archive.EXIT_USAGE
    err = capsys.readouterr().err
    assert ("broken.csv has rows with fewer fields than its header (4 columns, comma-separated): data rows 8, 9 "
            "(counting data rows from 1, blank lines not counted). Nothing was privatized") in err
    assert not output.exists()
    lines = table_frame(20).to_csv(index=False).splitlines()
    lines[3] = ",".join([""] * 4)  # a row of empty cells has all its fields: released as before
    source.write_text("\n".join(lines) + "\n")
    assert run(table_model, source, output) == 0


def test_a_csv_runs_in_passes_of_1024_rows_unless_paper_or_told(table_model, tmp_path, monkeypatch):
    """Passes of 64 rows spent most of a large CSV's run on each pass's own overhead; the batch changes the output
    of paper only, which keeps its 64."""
    passes = []
    real = archive.privatize
    monkeypatch.setattr(archive, "privatize", lambda model, rows, *a, **k: passes.append(len(rows)) or real(
        model, rows, *a, **k))
    source = tmp_path / "rows.csv"
    table_frame(1100).to_csv(source, index=False)
    for name, options, expected in (("out", [], [1024, 76]), ("told", ["--batch-size", "500"], [500, 500, 100]),
                                    ("paper", ["--mechanism", "paper"], [64] * 17 + [12])):
        passes.clear()
        arguments = ["--model", str(table_model), "--mechanism", "laplace", "--epsilon", "1", *options]
        assert archive.main([*arguments, str(source), str(tmp_path / name)]) == 0
        assert passes == expected, name


def test_csv_rows_written_in_several_blocks_keep_one_header_and_their_manifest_rows(table_model, tmp_path,
                                                                                     monkeypatch):
    """The released rows are written a block of the drawn order at a time (a whole file's CSV text is not held):
    the header comes once and each manifest row still points at its own released row."""
    monkeypatch.setattr(archive, "WRITE_BLOCK_ROWS", 6)
    frame = table_frame(40).sort_values("sex", kind="stable").reset_index(drop=True)
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    output = tmp_path / "out"
    assert run(table_model, source, output, "--batch-size", "7", "--condition", "sex=resampled") == 0
    text = (output / "privatized.csv").read_text(encoding="utf-8")
    assert text.count("age") == 1 and len(text.splitlines()) == 41
    rows = read_manifest(output)
    written = [int(row["output"].rsplit(" ", 1)[1]) for row in rows]
    assert sorted(written) == list(range(1, 41)) and written != list(range(1, 41))
    released = pd.read_csv(output / "privatized.csv")
    for row, position in zip(rows, written):
        assert f"sex={released['sex'][position - 1]}" == row["released_condition"]


def test_a_full_disk_while_writing_a_csvs_rows_says_which_rows_were_not_written(table_model, tmp_path, monkeypatch,
                                                                                capsys):
    import errno

    monkeypatch.setattr(archive, "WRITE_BLOCK_ROWS", 6)
    monkeypatch.setattr(archive, "_append", failing_at(3, archive._append,
                                                       OSError(errno.ENOSPC, "No space left on device")))
    source = tmp_path / "rows.csv"
    table_frame(40).to_csv(source, index=False)
    output = tmp_path / "out"
    assert run(table_model, source, output, "--batch-size", "7") == archive.EXIT_WRITE_ERROR
    err = capsys.readouterr().err
    assert ("the run stopped (No space left on device) after 12 privatized (and 28 not written to privatized.csv, "
            "hence not released: manifest.csv marks them 'not written')") in err
    assert "Traceback" not in err
    released = pd.read_csv(output / "privatized.csv")
    assert len(released) == 12  # two blocks of 6 were written before the disk was full
    rows = read_manifest(output)
    assert len(rows) == 40
    written = [row for row in rows if row["status"] == "privatized"]
    assert sorted(int(row["output"].rsplit(" ", 1)[1]) for row in written) == list(range(1, 13))
    for row in written:
        assert f"sex={released['sex'][int(row['output'].rsplit(' ', 1)[1]) - 1]}" == row["released_condition"]
    lost = [row for row in rows if row["status"] == archive.NOT_WRITTEN]
    assert len(lost) == 28 and {(row["output"], row["error"]) for row in lost} == {("", archive.NOT_WRITTEN_ERROR)}
    assert {row["releases_of_record"] for row in lost} == {""}  # not released: no cost
    assert {row["releases_of_record"] for row in written} == {"1"}


def _limited_run(model: Path, source: Path, output: Path, file_bytes: int, batch: str = "50"):
    """The CLI in a child process whose files may not grow beyond ``file_bytes`` (RLIMIT_FSIZE: a real 'File too
    large' from the operating system on the write that crosses it, as a full disk gives 'No space left')."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))

    return subprocess.run([sys.executable, "-m", "cadp.privatize", "--model", str(model), "--mechanism", "laplace",
                           "--epsilon", "1", "--batch-size", batch, str(source), str(output)], preexec_fn=limit,
                          capture_output=True, text=True, cwd=Path(archive.__file__).resolve().parent.parent,
                          timeout=300)


def test_a_manifest_too_large_to_finish_does_not_cost_the_released_rows(table_model, tmp_path):
    """The manifest is written as the rows come and is the larger file: when it cannot grow, the rows released so
    far are still written to privatized.csv (they were lost: its failed flush skipped writing them), and the
    message says that the manifest is incomplete."""
    source = tmp_path / "rows.csv"
    table_frame(1000).to_csv(source, index=False)
    whole = _limited_run(table_model, source, tmp_path / "measure", 10 ** 9)
    assert whole.returncode == 0, whole.stderr
    sizes = [(tmp_path / "measure" / name).stat().st_size for name in ("manifest.csv", "privatized.csv")]
    assert sizes[0] > sizes[1]
    output = tmp_path / "out"
    done = _limited_run(table_model, source, output, sizes[0] // 2)  # the manifest fails about halfway
    assert done.returncode == archive.EXIT_WRITE_ERROR, done.stderr
    assert "Traceback" not in done.stderr
    released = pd.read_csv(output / "privatized.csv")
    listed = read_manifest(output)
    # exactly the rows the manifest lists (whole rows: a cut last row is removed) were written: a released row in no
    # manifest row would be released again by a rerun of the inputs the manifest does not list
    assert 0 < len(listed) == len(released) < 1000
    assert (output / "manifest.csv").read_bytes().endswith(b"\r\n")
    assert "manifest.csv could not be completed (File too large)" in done.stderr
    assert f"after {len(listed)} privatized" in done.stderr and "not written" not in done.stderr


def test_a_full_disk_on_the_manifests_completion_says_the_rows_were_written_but_not_mapped(table_model, tmp_path):
    """Room for the rows but not for the completed manifest (written beside it, then renamed): the rows stay
    'pending' in the manifest and the message says it could not be completed."""
    source = tmp_path / "rows.csv"
    table_frame(300).to_csv(source, index=False)
    output = tmp_path / "out"
    # the manifest of 300 rows fits, its completed copy (with totals and outputs) does not
    first = _limited_run(table_model, source, tmp_path / "measure", 10 ** 9)
    assert first.returncode == 0, first.stderr
    done = _limited_run(table_model, source, output, (tmp_path / "measure" / "manifest.csv").stat().st_size - 100)
    assert "Traceback" not in done.stderr
    assert done.returncode == archive.EXIT_WRITE_ERROR  # not a finished run: the manifest says no row's place
    assert ("error: manifest.csv could not be completed (File too large): its rows still say 'pending' and lack which "
            "row of privatized.csv is whose") in done.stderr
    assert len(pd.read_csv(output / "privatized.csv")) == 300
    assert {row["status"] for row in read_manifest(output)} == {archive.PENDING}


def test_many_counts_of_repeated_rows_are_summed_up_not_listed(table_model, tmp_path, capsys):
    """A file of millions of rows can hold thousands of counts: the caution lists the largest five, then sums up."""
    frame = table_frame(8)
    copies = pd.concat([frame.iloc[[i] * (i + 2)] for i in range(8)], ignore_index=True)  # 2, 3, ..., 9 times
    source = tmp_path / "rows.csv"
    copies.to_csv(source, index=False)
    assert run(table_model, source, tmp_path / "out", "--batch-size", "16") == 0
    err = capsys.readouterr().err
    assert ("8 rows of the input occur more than once (1 row 9 times, 1 row 8 times, 1 row 7 times, 1 row 6 times, "
            "1 row 5 times and 3 more rows 2 to 4 times; the same values in the model's columns)") in err
    rows = read_manifest(tmp_path / "out")
    assert sorted(int(row["releases_of_record"]) for row in rows) == sorted(k for k in range(2, 10) for _ in range(k))


def test_a_csv_run_whose_rows_could_not_be_written_at_all_released_nothing(table_model, tmp_path, monkeypatch,
                                                                           capsys):
    import errno

    monkeypatch.setattr(archive, "_append", failing_at(1, archive._append,
                                                       OSError(errno.ENOSPC, "No space left on device")))
    source = tmp_path / "rows.csv"
    table_frame(40).to_csv(source, index=False)
    output = tmp_path / "out"
    assert run(table_model, source, output) == archive.EXIT_NOTHING_PRIVATIZED
    err = capsys.readouterr().err
    assert ("error: the run stopped (No space left on device) before any privatized input was written: nothing was released, "
            f"and {output} was left as it was") in err
    assert not output.exists()  # (its manifest listed 40 rows 'not written', with no terms: about no release)


def test_the_complete_rows_of_a_cut_csv_are_whole_rows_ended_by_their_line_break():
    data = 'a,b\r\n1,2\r\n3,"x\r\ny"\r\n5,"é"\r\n'.encode()
    ends = {10: 1, 20: 2, len(data): 3}  # byte offsets where rows are whole (csv.writer ends each with \r\n)
    for cut in range(len(data) + 1):
        size, rows = archive._complete_csv_rows(data[:cut], 2)
        expected = max([end for end in ends if end <= cut], default=None)
        assert (size, rows) == ((expected, ends[expected]) if expected else (5 if cut >= 5 else 0, 0)), cut
        assert data[:size].decode() == data[:cut].decode("utf-8", errors="ignore")[:len(data[:size].decode())]


def test_an_image_run_whose_manifest_cannot_grow_keeps_only_the_files_it_lists(image_model, tmp_path):
    """Files whose manifest rows were still in the manifest's buffer when it could not grow were kept, listed
    nowhere (100 files, 93 listed): a rerun of the inputs the manifest does not list would release them again."""
    files = {f"0/{'long-name-' * 8}{i:03d}.png": image_file(i) for i in range(120)}
    source = make_folder(tmp_path / "in", files)
    whole = _limited_run(image_model, source, tmp_path / "measure", 10 ** 9, batch="7")
    assert whole.returncode == 0, whole.stderr
    size = (tmp_path / "measure" / "manifest.csv").stat().st_size
    largest_png = max(path.stat().st_size for path in (tmp_path / "measure").rglob("*.png"))
    assert largest_png < size // 2
    output = tmp_path / "out"
    done = _limited_run(image_model, source, output, size // 2, batch="7")
    assert done.returncode == archive.EXIT_WRITE_ERROR, done.stderr
    assert "Traceback" not in done.stderr
    listed = [row["output"] for row in read_manifest(output) if row["status"] == "privatized"]
    assert 0 < len(listed) < 120
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*.png")) == sorted(listed)
    assert (output / "manifest.csv").read_bytes().endswith(b"\r\n")
    assert f"after {len(listed)} privatized" in done.stderr


def test_a_stop_asked_for_while_the_rows_are_written_says_the_run_finished(table_model, tmp_path, monkeypatch,
                                                                           capsys):
    """A SIGTERM while privatized.csv was written said "stopping (SIGTERM)" and then nothing: the run finished
    (every row written, exit 0), and now says so."""
    write = archive._write_held_rows

    def signalled(*args, **kwargs):
        archive._stop_requests._handle(signal.SIGTERM, None)  # as the signal handler does
        return write(*args, **kwargs)

    monkeypatch.setattr(archive, "_write_held_rows", signalled)
    source = tmp_path / "rows.csv"
    table_frame(20).to_csv(source, index=False)
    assert run(table_model, source, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "stopping (SIGTERM)" in err
    assert "the run had read every input when the SIGTERM came: it finished, nothing was left out" in err
    assert len(pd.read_csv(tmp_path / "out" / "privatized.csv")) == 20


def test_an_interrupted_run_says_when_its_manifest_could_not_be_completed(table_model, tmp_path, monkeypatch,
                                                                          capsys):
    """Ctrl-C, then no room to complete the manifest (its copy with totals and outputs): the stop said only that
    the manifest "lists what was done", while its rows stayed 'pending' with no output row."""
    import errno

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive, "privatize", interrupted_at(3, archive.privatize))
    monkeypatch.setattr(archive.Manifest, "_release_counts", full)  # inside the completion's write
    source = tmp_path / "rows.csv"
    table_frame(40).to_csv(source, index=False)
    output = tmp_path / "out"
    assert run(table_model, source, output, "--batch-size", "7") == archive.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert ("stopped: interrupted after 14 privatized; " in err and "(manifest.csv lists what was done; manifest.csv "
            "could not be completed (No space left on device): its rows still say 'pending' and lack which row of "
            "privatized.csv is whose and each record's releases_of_record and epsilon_record_total)") in err
    assert {row["status"] for row in read_manifest(output)} == {archive.PENDING}


def test_a_kept_condition_written_none_is_released_as_none(tmp_path):
    """A symptom "None" was read as an empty cell: the kept condition came back empty (the manifest said
    symptoms=(empty)), and training called it an empty cell to fill."""
    from cadp.data import load_table
    from cadp.train import fit_tabular

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.integers(20, 80, 60), "bmi": rng.normal(25, 4, 60).round(2),
                          "symptoms": np.array(["None", "Mild", "Severe"])[np.arange(60) % 3]})
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    model = fit_tabular(load_table(str(source)).frame, ["symptoms"], steps=5)  # as the app and the CLI read a CSV
    assert None not in model.condition_encoder.columns[0].categories
    assert run(save_model(model, tmp_path / "model"), source, tmp_path / "out") == 0
    released = pd.read_csv(tmp_path / "out" / "privatized.csv", keep_default_na=False)
    assert sorted(released["symptoms"]) == sorted(frame["symptoms"])
    assert [row["condition"] for row in read_manifest(tmp_path / "out")] == [f"symptoms={c}" for c in frame["symptoms"]]


def test_a_semicolon_csv_with_decimal_points_is_read_with_points(table_model, tmp_path):
    """The release's decimal mark (a comma for a semicolon file) was used to read the file too: 25.123 was read as
    25123 (the point taken for a thousands separator), outside the model's range, and released at its edge."""
    frame = table_frame(20).assign(bmi=lambda f: (f["bmi"].round(2) + 0.003).round(3))  # three decimals
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False, sep=";")
    assert ";25." in source.read_text() or any(";" + f"{v:.3f}" in source.read_text() for v in frame["bmi"])
    assert run(table_model, source, tmp_path / "out") == 0
    notes = [row["preprocessing"] for row in read_manifest(tmp_path / "out") if row["preprocessing"]]
    assert not [note for note in notes if re.search(r"bmi: \d{4,}", note)], notes  # 25123 for 25.123
    released = pd.read_csv(tmp_path / "out" / "privatized.csv", sep=";", decimal=",")
    assert released["bmi"].between(frame["bmi"].min() - 10, frame["bmi"].max() + 10).all()


def test_none_is_a_gap_in_a_number_category_column_as_in_the_app(tmp_path):
    """The CLI read None as a value in a model's number-category column (sex 1/2): refused as unseen, where the app
    reads a gap (and releases it as the model's empty category)."""
    from cadp.train import fit_tabular

    frame = table_frame(60).astype({"sex": "float64"})
    frame.loc[frame.index[:6], "sex"] = np.nan  # the model learns an empty category
    model = save_model(fit_tabular(frame, ["sex"], steps=5), tmp_path / "model")
    source = tmp_path / "rows.csv"
    source.write_text("age;bmi;note;sex\n50;25,5;ok;None\n50;24,5;None;1\n50;None;ok;2\n")
    assert run(model, source, tmp_path / "out") == 0
    rows = read_manifest(tmp_path / "out")
    assert [row["condition"] for row in rows] == ["sex=(empty)", "sex=1", "sex=2"], rows
    assert "column 'note' has the value 'None', unseen" in rows[1]["error"]  # a text column: None is a value there
    assert not rows[0]["error"] and rows[2]["preprocessing"].startswith("bmi: empty")  # a gap among numbers


def test_a_decimal_comma_file_with_none_gaps_is_said_to_be_written_as_it_came(table_model, tmp_path, capsys):
    """None gaps counted as words when the run judged the file's decimal mark: a decimal-comma file was said to be
    written with another mark than its own."""
    source = tmp_path / "rows.csv"
    source.write_text("age;bmi;note;sex\n" + "".join(f"50;{bmi};ok;1\n" for bmi in ("25,5", "None", "24,5", "None",
                                                                                     "22,5")))
    assert run(table_model, source, tmp_path / "out") == 0
    assert "privatized.csv is written semicolon-separated with decimal commas, as rows.csv is" in \
        capsys.readouterr().err


def test_the_cli_notes_cells_with_one_dot_in_a_file_of_decimal_commas(table_model, tmp_path, capsys, recwarn):
    """12.500 beside 25,5 is read as twelve and a half (each cell alone); the app said so and the CLI did not, so a
    file whose thousands were written 12.500 was released silently as 12.5."""
    source = tmp_path / "rows.csv"
    source.write_text("age;bmi;note;sex\n" + "".join(f"50;{bmi};ok;1\n" for bmi in ("25,5", "12.500", "24,5",
                                                                                     "22,5", "13.250")))
    assert run(table_model, source, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "note: 2 cells of rows.csv such as '12.500' (column 'bmi'), with one dot and no comma in a file of " \
           "decimal commas, were read with a decimal point (12.5), each cell alone; if the dot separates " \
           "thousands, write 12500 (or 12.500,0) and run again" in err, err
    thousands = tmp_path / "thousands.csv"  # tab-separated, every comma with three digits after it: 2,500 is 2.5
    thousands.write_text("age\tbmi\tnote\tsex\n" + "".join(f"50\t{bmi}\tok\t1\n" for bmi in ("2,500", "3,100")))
    assert run(table_model, thousands, tmp_path / "out3") == 0
    assert "note: column 'bmi' (in the first 1,000 rows of thousands.csv): each of its 2 numbers with a comma has " \
           "three digits after the comma (e.g. '2,500'), read as a decimal comma (2.5); if the commas separate " \
           "thousands, save the file without thousands separators (2500)" in capsys.readouterr().err
    # rows that end with a separator (an empty field after the last column): the note names the column the commas
    # are in (the first rows were read with the first column as an index, every name one place off)
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("age;bmi;note;sex\n" + "".join(f"50;{bmi};ok;1;\n" for bmi in ("2,500", "3,100")))
    assert run(table_model, trailing, tmp_path / "out4") == 0
    err = capsys.readouterr().err
    assert "note: column 'bmi' (in the first 1,000 rows of trailing.csv): each of its 2 numbers" in err, err
    assert "decimal commas, as trailing.csv is" in err, err  # the file's mark judged on the right columns
    # no raw pandas warning about that field (pytest records warnings instead of printing them: looked for there)
    assert not [w for w in recwarn if issubclass(w.category, pd.errors.ParserWarning)], [str(w.message) for w in recwarn]
    lab = tmp_path / "lab.csv"  # three decimals after a 0: no thousands
    lab.write_text("age;bmi;note;sex\n" + "".join(f"50;{bmi};ok;1\n" for bmi in ("0,125", "0,250", "0,500")))
    assert run(table_model, lab, tmp_path / "out5") == 0
    assert "three digits after the comma" not in capsys.readouterr().err
    pointed = tmp_path / "pointed.csv"  # a file of decimal points: 12.500 is what it says
    pointed.write_text(source.read_text().replace("25,5", "25.5").replace("24,5", "24.5").replace("22,5", "22.5"))
    assert run(table_model, pointed, tmp_path / "out2") == 0
    assert "one dot and no comma" not in capsys.readouterr().err


def test_a_rows_number_is_read_alike_whatever_text_its_batch_mates_hold(table_model, tmp_path):
    """A text cell (None, ?) beside it made pandas read a chunk's bmi as text, and 25.125 was then read as 25125 (the
    point taken for a thousands separator): the row's release changed with its batch mates' cells."""
    first = []
    for index, other in enumerate(["22.5", "None", "?", "", "22,5", "3"]):  # 22,5: a decimal comma beside it
        source = tmp_path / f"rows{index}.csv"
        source.write_text(f"age;bmi;note;sex\n50;25.125;ok;1\n50;{other};ok;1\n")
        output = tmp_path / f"out{index}"
        assert run(table_model, source, output, "--seed", "5") == 0
        rows = read_manifest(output)
        assert "25125" not in rows[0]["preprocessing"], rows[0]
        assert "None" not in rows[1]["preprocessing"]  # a gap in a number column, said as an empty cell
        released = (output / "privatized.csv").read_text().splitlines()
        first.append(released[int(rows[0]["output"].rsplit(" ", 1)[1])])
    assert len(set(first)) == 1, first


def test_a_csv_whose_first_row_opens_a_quote_it_never_closes_is_said_so(tmp_path, capsys):
    from cadp.train import fit_tabular

    frame = table_frame(60)
    model = save_model(fit_tabular(frame, ["sex"], steps=5), tmp_path / "model")
    lines = frame.to_csv(index=False).splitlines()
    lines[1] = lines[1].replace(",", ',"', 1)  # "a opened in the first row's second cell and never closed
    source = tmp_path / "rows.csv"
    source.write_text("\n".join(lines) + "\n")
    assert run(model, source, tmp_path / "out", "--seed", "1") == 2
    assert "is not a readable CSV: a quoted cell is never closed" in capsys.readouterr().err


def test_a_csv_whose_later_row_opens_a_quote_it_never_closes_is_said_so(tmp_path, capsys):
    """The header read succeeds there: the csv module then read the rest of the file as one cell and the run said
    'rows with fewer fields than its header: data row(s) 3'."""
    from cadp.train import fit_tabular

    frame = table_frame(60)
    model = save_model(fit_tabular(frame, ["sex"], steps=5), tmp_path / "model")
    lines = frame.to_csv(index=False).splitlines()
    lines[3] = lines[3].replace(",", ',"', 1)  # data row 3: a quote opened in its second cell, never closed
    source = tmp_path / "rows.csv"
    source.write_text("\n".join(lines) + "\n")
    assert run(model, source, tmp_path / "out", "--seed", "1") == 2
    error = capsys.readouterr().err
    assert "rows.csv: data row 3 (line 4): a quoted cell is never closed" in error and "fewer fields" not in error
    assert not (tmp_path / "out" / "privatized.csv").exists()
    lines[3] = lines[3].replace(',"', ',"x"y', 1)  # a closed quote followed by text: read as before, no such word
    source.write_text("\n".join(lines) + "\n")
    run(model, source, tmp_path / "out2", "--seed", "1")
    assert "never closed" not in capsys.readouterr().err


def test_an_interrupted_image_run_is_finished_without_releasing_anything_twice(image_model, tmp_path, monkeypatch,
                                                                              capsys):
    """There was no way to go on after Ctrl-C but to build the rest of the input by hand: running the same INPUT
    again released every record again. --skip-privatized leaves out what the earlier run's manifest lists."""
    files = {f"{label}/{i}.png": image_file(10 * label + i) for label in (0, 1) for i in range(4)}
    source = make_folder(tmp_path / "in", files)
    prepare = archive.to_model_input
    monkeypatch.setattr(archive, "to_model_input", interrupted_at(4, prepare))
    first = tmp_path / "first"
    assert run(image_model, source, first, "--batch-size", "3") == archive.EXIT_INTERRUPTED
    assert "--skip-privatized" in capsys.readouterr().err  # the way on is said
    monkeypatch.setattr(archive, "to_model_input", prepare)
    done = {row["file"] for row in read_manifest(first) if row["status"] == "privatized"}
    assert len(done) == 3
    second = tmp_path / "second"
    assert run(image_model, source, second, "--skip-privatized", str(first)) == 0
    rows = {row["file"]: row for row in read_manifest(second)}
    assert {name for name, row in rows.items() if row["status"] == "skipped"} == done
    assert {name for name, row in rows.items() if row["status"] == "privatized"} == set(files) - done
    assert all("privatized by the run in" in rows[name]["error"] for name in done)
    assert sorted(p.relative_to(second).as_posix() for p in second.rglob("*.png")) == sorted(set(files) - done)
    err = capsys.readouterr().err
    assert (f"privatized 5, unusable 0, skipped 3 (inputs of these names were privatized by the run in {first} or "
            "one it continued)") in err
    # skipped rows state none of this run's settings: they were released by the earlier run, with its own
    assert {(row["mechanism"], row["epsilon"], row["seed"]) for name, row in rows.items() if name in done} == \
        {("", "", "")}
    assert {row["releases_of_record"] for row in rows.values() if row["status"] == "privatized"} == {"1"}
    # a file the earlier run wrote but did not list (killed while writing), and other settings: said
    (first / "0" / "stray.png").write_bytes(image_file(99))
    third = tmp_path / "third"
    assert run(image_model, source, third, "--skip-privatized", str(first), "--epsilon", "2") == 0
    err = capsys.readouterr().err
    assert f"note: {first} holds 1 file its manifest.csv does not list (a run killed while it wrote them), e.g. " \
           "0/stray.png: their inputs are privatized again here" in err
    assert (f"note: the run in {first} released with laplace, epsilon 1 per release; this one with laplace, "
            "epsilon 2: each output folder's guarantee.txt states its own terms") in err
    # everything done already: nothing written
    (first / "0" / "stray.png").unlink()
    shutil.copytree(first, tmp_path / "both")
    with (tmp_path / "both" / "manifest.csv").open("a", newline="", encoding="utf-8") as handle:
        for row in read_manifest(second):
            if row["status"] == "privatized":
                csv.writer(handle).writerow([row[column] for column in archive.MANIFEST_COLUMNS])
    assert run(image_model, source, tmp_path / "fourth", "--skip-privatized", str(tmp_path / "both")) == 1
    assert (f"error: every input of {source} (8) has the name of one privatized by the run in {tmp_path / 'both'} or "
            "one it continued: nothing was released, and nothing was written") in capsys.readouterr().err
    assert not (tmp_path / "fourth").exists()
    # a ZIP of the same files goes on from the folder's run too (the names are the same)
    zipped = tmp_path / "in.zip"
    zipped.write_bytes(corpus.zip_bytes(files))
    assert run(image_model, zipped, tmp_path / "zip-out", "--skip-privatized", str(first)) == 0
    assert sum(row["status"] == "skipped" for row in read_manifest(tmp_path / "zip-out")) == 3
    # a continuation of a continuation: what the first run released stays left out (it was released again)
    monkeypatch.setattr(archive, "to_model_input", interrupted_at(3, prepare))
    assert run(image_model, source, tmp_path / "second-b", "--skip-privatized", str(first), "--batch-size", "2") == \
        archive.EXIT_INTERRUPTED
    monkeypatch.setattr(archive, "to_model_input", prepare)
    then = {row["file"] for row in read_manifest(tmp_path / "second-b") if row["status"] == "privatized"}
    assert len(then) == 2 and not then & done
    assert run(image_model, source, tmp_path / "third-b", "--skip-privatized", str(tmp_path / "second-b")) == 0
    last = {row["file"] for row in read_manifest(tmp_path / "third-b") if row["status"] == "privatized"}
    assert last == set(files) - done - then
    # the same folder zipped with its top folder names every file otherwise: refused, not released all again
    capsys.readouterr()
    from tests.test_archive_zip_labels import zip_folder

    assert run(image_model, zip_folder(source, tmp_path / "in-top.zip"), tmp_path / "top-out",
               "--skip-privatized", str(first)) == 2
    assert "none of the 3 inputs its manifest.csv lists as done" in capsys.readouterr().err
    assert not (tmp_path / "top-out").exists()


def test_skip_privatized_refuses_what_it_cannot_use(image_model, table_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    assert run(image_model, source, tmp_path / "out", "--skip-privatized", str(tmp_path / "nowhere")) == 2
    assert "--skip-privatized" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    assert run(image_model, source, tmp_path / "out", "--skip-privatized", str(tmp_path / "empty")) == 2
    assert "there is no manifest.csv there (give the OUTPUT folder of the earlier run)" in capsys.readouterr().err
    rows = tmp_path / "rows.csv"
    table_frame(5).to_csv(rows, index=False)
    assert run(table_model, rows, tmp_path / "table-out") == 0
    capsys.readouterr()
    assert run(table_model, rows, tmp_path / "out", "--skip-privatized", str(tmp_path / "table-out")) == 2
    assert "--skip-privatized is for image inputs" in capsys.readouterr().err
    assert run(image_model, source, tmp_path / "out", "--skip-privatized", str(tmp_path / "table-out")) == 2
    assert "that run privatized a CSV's rows" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.csv").write_text("file,status\na.png,privatized\n")
    assert run(image_model, source, tmp_path / "out", "--skip-privatized", str(tmp_path / "other")) == 2
    assert "is not one this command wrote" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unclosed_quote_after_a_sep_line_is_named_by_its_line_in_the_file(table_model, tmp_path, capsys):
    """Excel's "sep=," first line was not counted: data row 3 on line 5 of the file was said to be on line 4."""
    from cadp.train import fit_tabular

    frame = table_frame(60)
    model = save_model(fit_tabular(frame, ["sex"], steps=5), tmp_path / "model")
    lines = frame.to_csv(index=False).splitlines()
    lines[3] = lines[3].replace(",", ',"', 1)
    source = tmp_path / "rows.csv"
    source.write_text("sep=,\n" + "\n".join(lines) + "\n")
    assert run(model, source, tmp_path / "out", "--seed", "1") == 2
    assert "rows.csv: data row 3 (line 5): a quoted cell is never closed" in capsys.readouterr().err


def test_a_stop_signal_while_starting_is_named_and_exits_with_its_code(image_model, tmp_path, monkeypatch, capsys):
    """SIGTERM while the model loaded ended with "interrupted" and exit 130, as Ctrl-C does (review)."""
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    load = archive._load_model

    def loaded_while_terminated(model):
        archive._stop_requests._handle(signal.SIGTERM, None)  # as the signal's handler is called
        return load(model)

    monkeypatch.setattr(archive, "_load_model", loaded_while_terminated)
    assert run(image_model, source, tmp_path / "a" / "b" / "out") == 128 + signal.SIGTERM
    assert capsys.readouterr().err.endswith("stopped: ended by SIGTERM while starting; nothing was written\n")
    assert not (tmp_path / "a").exists()


def test_a_run_that_releases_nothing_removes_the_parent_folders_it_made(image_model, tmp_path, monkeypatch, capsys):
    """OUTPUT new1/new2/out, a stop before the first release: out was removed, new1/new2 stayed (review)."""
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})

    def stopped(*args, **kwargs):
        archive._stop_requests._handle(signal.SIGINT, None)
        archive._stop_requests.check()

    monkeypatch.setattr(archive, "privatize_images", stopped)
    (tmp_path / "kept").mkdir()
    assert run(image_model, source, tmp_path / "kept" / "new1" / "new2" / "out") == archive.EXIT_INTERRUPTED
    assert f"and {tmp_path / 'kept' / 'new1' / 'new2' / 'out'} was left as it was" in capsys.readouterr().err
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []


def test_a_second_ctrl_c_while_the_command_line_starts_ends_it_at_once(image_model, tmp_path):
    """The first Ctrl-C is noted until the libraries and the model have loaded; a second one (a load that hangs)
    ended nothing: it now ends the process, which has written nothing yet."""
    import subprocess
    import time

    source = make_folder(tmp_path / "in", {"1/a.png": image_file(1)})
    output = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "cadp.privatize", "--model", str(image_model), "--mechanism",
                                "laplace", "--epsilon", "1", str(source), str(output)], cwd=Path(__file__).parents[1],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == archive.EXIT_INTERRUPTED, err
    assert "Traceback" not in err and err.strip().endswith("stopped: interrupted while starting; nothing was written")
    assert not output.exists()


def test_names_written_alike_in_a_manifest_are_never_matched_by_guess(image_model, tmp_path, capsys):
    """'=a.png' is written "'=a.png" in manifest.csv (against spreadsheet formulas), as "'=a.png" itself is: an input
    never released was skipped as privatized (review). Outputs named so are no stray files either."""
    first = make_folder(tmp_path / "in1", {"=a.png": image_file(1), "+e.png": image_file(2)})
    labels = b"file,label\n=a.png,1\n+e.png,1\n'=a.png,1\n"
    (first / "labels.csv").write_bytes(labels)
    assert run(image_model, first, tmp_path / "out1") == 0
    second = make_folder(tmp_path / "in2", {"=a.png": image_file(1), "+e.png": image_file(2),
                                            "'=a.png": image_file(3), "b.png": image_file(4)})
    (second / "labels.csv").write_bytes(labels + b"b.png,1\n")
    capsys.readouterr()
    assert run(image_model, second, tmp_path / "out2", "--skip-privatized", str(tmp_path / "out1")) == 2
    err = capsys.readouterr().err
    assert "are written alike in manifest.csv" in err and "holds" not in err  # its outputs are listed ones
    assert not (tmp_path / "out2").exists()
    (second / "'=a.png").unlink()
    assert run(image_model, second, tmp_path / "out3", "--skip-privatized", str(tmp_path / "out1")) == 0
    rows = {row["file"]: row["status"] for row in read_manifest(tmp_path / "out3")}
    assert rows == {"'=a.png": "skipped", "'+e.png": "skipped", "b.png": "privatized"}


def test_numbered_outputs_of_a_continuation_go_on_from_the_earlier_runs(image_model, tmp_path, monkeypatch):
    """Both runs wrote 0/00001.png...: merging the two folders, the way to finish a run, overwrote releases."""
    source = make_folder(tmp_path / "in", {f"0/{i}.png": image_file(i) for i in range(6)})
    prepare = archive.to_model_input
    monkeypatch.setattr(archive, "to_model_input", interrupted_at(3, prepare))
    assert run(image_model, source, tmp_path / "one", "--neutral-names", "--batch-size", "2") == \
        archive.EXIT_INTERRUPTED
    monkeypatch.setattr(archive, "to_model_input", prepare)
    assert run(image_model, source, tmp_path / "two", "--neutral-names", "--skip-privatized",
               str(tmp_path / "one")) == 0
    outputs = [{row["output"] for row in read_manifest(tmp_path / name) if row["status"] == "privatized"}
               for name in ("one", "two")]
    assert outputs[0] == {"0/00001.png", "0/00002.png"}
    assert outputs[1] == {f"0/{n:05d}.png" for n in range(3, 7)}


def test_an_output_through_dot_dot_is_refused_and_folders_are_made_as_they_are_missing(image_model, tmp_path,
                                                                                      monkeypatch, capsys):
    """OUTPUT new/.. is the folder above: no emptiness check saw its files, and a run that released nothing removed
    the user's manifest.csv and labels.csv there (review). A system whose mkdir of an existing folder says EISDIR
    (macOS for /) or EACCES must not stop a run either; a failure to start the manifest leaves no folders."""
    import errno

    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    (tmp_path / "userdir").mkdir()
    (tmp_path / "userdir" / "manifest.csv").write_text("mine")
    monkeypatch.chdir(tmp_path / "userdir")
    for output in ("new/..", "nosuch/../userdir/out"):
        assert run(image_model, source, Path(output)) == 2
        assert (f"error: OUTPUT {output} goes through '..' after a folder that does not exist: give the output "
                "folder's own path") in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "userdir").iterdir()) == ["manifest.csv"]
    assert run(image_model, source, Path("../fresh")) == 0  # '..' of a folder that exists: the usual way to say it
    assert (tmp_path / "fresh" / "manifest.csv").is_file()
    real_mkdir = os.mkdir

    def strict_mkdir(path, *args):
        if Path(path).is_dir():
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        return real_mkdir(path, *args)

    monkeypatch.setattr(os, "mkdir", strict_mkdir)
    assert run(image_model, source, tmp_path / "a" / "out") == 0
    monkeypatch.setattr(os, "mkdir", real_mkdir)

    def no_manifest(*args, **kwargs):
        raise OSError(errno.ENAMETOOLONG, "File name too long", "manifest.csv")

    monkeypatch.setattr(archive, "Manifest", no_manifest)
    assert run(image_model, source, tmp_path / "p1" / "p2" / "out") == 2
    assert "cannot write the output folder" in capsys.readouterr().err
    assert not (tmp_path / "p1").exists()


def test_continuations_keep_numbering_and_say_when_the_naming_changes(image_model, tmp_path, monkeypatch, capsys):
    """A continuation that privatized nothing made the next one start at 00001 again; a numbered run continued with
    copied names (or the other way) said nothing of the names that may clash (review)."""
    source = make_folder(tmp_path / "in", {f"0/{i}.png": image_file(i) for i in range(4)})
    prepare = archive.to_model_input
    monkeypatch.setattr(archive, "to_model_input", interrupted_at(3, prepare))
    assert run(image_model, source, tmp_path / "one", "--neutral-names", "--batch-size", "2") == \
        archive.EXIT_INTERRUPTED
    monkeypatch.setattr(archive, "to_model_input", interrupted_at(1, prepare))  # stopped before its first release
    (source / "0" / "bad.png").write_bytes(b"not an image")
    monkeypatch.setattr(archive, "to_model_input", prepare)
    two = tmp_path / "two"
    assert run(image_model, source, two, "--neutral-names", "--skip-privatized", str(tmp_path / "one")) == 0
    rows = {row["file"]: row for row in read_manifest(two)}
    skipped = sorted(row["output"] for row in rows.values() if row["status"] == "skipped")  # where they were released
    assert skipped == [str(tmp_path / "one" / "0" / f"0000{n}.png") for n in (1, 2)]
    assert {row["output"] for row in rows.values() if row["status"] == "privatized"} == {"0/00003.png", "0/00004.png"}
    capsys.readouterr()
    three = tmp_path / "three"
    assert run(image_model, source, three, "--neutral-names", "--skip-privatized", str(two)) == 1  # all done before
    assert run(image_model, source, tmp_path / "four", "--skip-privatized", str(tmp_path / "one")) == 0
    assert (f"note: the run in {tmp_path / 'one'} numbered its outputs and this one copies input names: merging the "
            "two folders may put two releases under one name") in capsys.readouterr().err
    # copied names first, then two numbered continuations: the second goes on after the first's numbers (review)
    fresh = make_folder(tmp_path / "in2", {f"0/{name}.png": image_file(seed)
                                           for seed, name in enumerate(["a", "b", "c", "d", "e"])})
    monkeypatch.setattr(archive, "to_model_input", interrupted_at(2, prepare))
    assert run(image_model, fresh, tmp_path / "c1", "--batch-size", "1") == archive.EXIT_INTERRUPTED
    monkeypatch.setattr(archive, "to_model_input", interrupted_at(3, prepare))
    assert run(image_model, fresh, tmp_path / "c2", "--neutral-names", "--batch-size", "2", "--skip-privatized",
               str(tmp_path / "c1")) == archive.EXIT_INTERRUPTED
    monkeypatch.setattr(archive, "to_model_input", prepare)
    assert run(image_model, fresh, tmp_path / "c3", "--neutral-names", "--skip-privatized", str(tmp_path / "c2")) == 0
    names = [{row["output"] for row in read_manifest(tmp_path / run_) if row["status"] == "privatized"}
             for run_ in ("c2", "c3")]
    assert names[0].isdisjoint(names[1]) and all(len(found) > 0 for found in names), names
    assert "numbered its outputs and this one copies" not in capsys.readouterr().err


def test_a_given_labels_csv_whose_row_names_a_zip_file_either_way_is_refused(image_model, tmp_path, capsys):
    """Rows x.png and set/x.png for a ZIP holding set/x.png and set/set/x.png: the folder's x.png took label 1, the
    label of set/x.png (review)."""
    from tests.test_archive_zip_labels import zip_folder

    source = make_folder(tmp_path / "set", {"x.png": image_file(1), "set/x.png": image_file(2)})
    labels = tmp_path / "given.csv"
    labels.write_bytes(b"file,label\nx.png,0\nset/x.png,1\n")
    assert run(image_model, zip_folder(source, tmp_path / "set.zip"), tmp_path / "out", "--labels", str(labels)) == 2
    assert "--labels: the row 'set/x.png' names set/x.png from the ZIP's top and set/set/x.png from its folder" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_numbering_goes_on_through_a_continuation_that_released_nothing(image_model, tmp_path):
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1), "0/b.png": image_file(2),
                                           "0/c.png": b"not yet an image", "0/d.png": b"not yet an image"})
    assert run(image_model, source, tmp_path / "one", "--neutral-names") == 0
    assert run(image_model, source, tmp_path / "two", "--neutral-names", "--skip-privatized",
               str(tmp_path / "one")) == 1  # two skipped, two unusable: its manifest says so
    for name, seed in (("c.png", 3), ("d.png", 4)):
        (source / "0" / name).write_bytes(image_file(seed))
    assert run(image_model, source, tmp_path / "three", "--neutral-names", "--skip-privatized",
               str(tmp_path / "two")) == 0
    assert {row["output"] for row in read_manifest(tmp_path / "three") if row["status"] == "privatized"} == \
        {"0/00003.png", "0/00004.png"}


def test_numbering_goes_on_after_the_whole_chain_of_continuations(image_model, tmp_path, capsys):
    """A continuation that released nothing passed on only the skipped rows of its own inputs: the next one
    numbered g 0/00002.png, the name the first run had given e (review); and it said, falsely, that the run that
    released nothing had copied input names."""
    first = make_folder(tmp_path / "in1", {f"0/{name}.png": image_file(seed) for seed, name in enumerate("abcdef")})
    assert run(image_model, first, tmp_path / "out1", "--neutral-names", "--seed", "3") == 0  # (a: 00001)
    assert [row["output"] for row in read_manifest(tmp_path / "out1") if row["file"] == "0/a.png"] == ["0/00001.png"]
    second = make_folder(tmp_path / "in2", {"0/a.png": image_file(0), "0/zz.png": b"not an image"})
    assert run(image_model, second, tmp_path / "out2", "--neutral-names", "--skip-privatized",
               str(tmp_path / "out1")) == 1
    capsys.readouterr()
    third = make_folder(tmp_path / "in3", {"0/a.png": image_file(0), "0/g.png": image_file(6)})
    assert run(image_model, third, tmp_path / "out3", "--neutral-names", "--skip-privatized",
               str(tmp_path / "out2")) == 0
    assert [row["output"] for row in read_manifest(tmp_path / "out3") if row["status"] == "privatized"] == \
        ["0/00007.png"]
    assert "copied input names" not in capsys.readouterr().err
    # a copied name's digits are no number of the chain: a numbered continuation of a copied run starts at 1
    copied = make_folder(tmp_path / "in4", {"0/99999999999999999999.png": image_file(1), "0/b.png": image_file(2)})
    assert run(image_model, copied, tmp_path / "out4", "--batch-size", "1") == 0
    rest = make_folder(tmp_path / "in5", {"0/99999999999999999999.png": image_file(1), "0/c.png": image_file(3)})
    assert run(image_model, rest, tmp_path / "out5", "--neutral-names", "--skip-privatized",
               str(tmp_path / "out4")) == 0
    assert [row["output"] for row in read_manifest(tmp_path / "out5") if row["status"] == "privatized"] == \
        ["0/00001.png"]


def test_the_terms_say_that_inputs_the_model_cannot_read_are_not_released_whatever_the_run_holds(
        table_model, image_model, tmp_path):
    """A row whose randomized condition is outside the model's levels was listed as unusable: whether a row is
    released then shows that its value is outside them, which the terms did not say. Said in every run (a count,
    or a note only where it happened, would tell the recipients of the inputs)."""
    for rows, name in ((table_frame(6), "clean"), (table_frame(6).assign(sex=[1, 2, 3, 1, 2, 1]), "unseen")):
        source = tmp_path / f"{name}.csv"
        source.write_text(rows.to_csv(index=False))
        assert run(table_model, source, tmp_path / name, "--condition", "sex=randomized:1") == 0
        terms = (tmp_path / name / "guarantee.txt").read_text()
        assert archive.UNREAD_ROWS_NOTE in terms and archive.UNREAD_FILES_NOTE not in terms
    statuses = [row["status"] for row in read_manifest(tmp_path / "unseen")]
    assert statuses.count("error") == 1
    folder = make_folder(tmp_path / "images" / "1", {"a.png": image_file(0), "b.png": image_file(1)})
    assert run(image_model, folder.parent, tmp_path / "image-out") == 0
    terms = (tmp_path / "image-out" / "guarantee.txt").read_text()
    assert archive.UNREAD_FILES_NOTE in terms and archive.UNREAD_ROWS_NOTE not in terms


def test_a_killed_runs_folder_that_released_nothing_is_said_to_hold_no_release(table_model, tmp_path, capsys):
    """A CSV run killed before its rows were written leaves every manifest row pending; running into its folder was
    refused with "each record released again costs its epsilon again ... give only the inputs not yet released",
    which would have had the user skip rows never released."""
    source = tmp_path / "rows.csv"
    source.write_text(table_frame(6).to_csv(index=False))
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "manifest.csv").write_text("file,status\nrow 1,pending\nrow 2,pending\n")
    capsys.readouterr()
    assert run(table_model, source, killed) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "holds an earlier run that released nothing" in err and "costs its epsilon again" not in err
    # a --skip-privatized run killed before it released anything lists what its earlier run released as skipped:
    # its folder keeps the advice to continue with --skip-privatized (the inputs it lists were released)
    (killed / "manifest.csv").write_text("file,status\nrow 1,skipped\nrow 2,pending\n")
    assert run(table_model, source, killed) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "released nothing" not in err and "--skip-privatized" in err
    assert run(table_model, source, tmp_path / "done") == 0  # a run that released rows: the warning stays
    capsys.readouterr()
    assert run(table_model, source, tmp_path / "done") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "holds an earlier run (manifest.csv lists what it privatized)" in err and "costs its epsilon again" in err


def test_image_only_options_and_an_output_named_dash_are_refused(table_model, tmp_path, monkeypatch, capsys):
    source = tmp_path / "rows.csv"
    source.write_text(table_frame(6).to_csv(index=False))
    assert run(table_model, source, tmp_path / "out", "--invert", "always") == 2
    assert "--invert applies to images" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert run(table_model, source, Path("-")) == 2
    assert "OUTPUT '-' is not standard output" in capsys.readouterr().err
    assert not (tmp_path / "-").exists() and not (tmp_path / "out").exists()


def test_files_a_labels_csv_does_not_list_are_said_to_take_their_folders_class(image_model, tmp_path, capsys):
    files = {f"1/{i}.png": image_file(i) for i in range(3)}
    source = make_folder(tmp_path / "in", files)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n1/0.png,t-shirt_top\n")
    assert run(image_model, source, tmp_path / "out", "--labels", str(labels)) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "note: 2 input files are not listed in the labels CSV, e.g. 1/" in err
    assert "each takes the class of its folder" in err
