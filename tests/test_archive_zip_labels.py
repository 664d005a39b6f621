"""A ZIP's labels.csv in the batch CLI: read where a folder's would be, and matched to files as a folder's is."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests import corpus
from tests.test_archive import image_file, make_folder, read_manifest, run


def zip_folder(folder: Path, zipped: Path) -> Path:
    """``folder`` zipped as a file manager does: its own name as the ZIP's single top folder."""
    with zipfile.ZipFile(zipped, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return zipped


def conditions(output: Path, top: str = "") -> dict[str, str]:
    """{file: its label, or 'error: ...'} from the manifest, the files named without ``top``."""
    return {row["file"].removeprefix(top): row["condition"] if row["status"] == "privatized" else
            "error: " + row["error"] for row in read_manifest(output)}


def test_a_zips_labels_csv_names_a_file_in_a_sub_folder_by_its_bare_name_as_the_folder_does(digit_model, tmp_path,
                                                                                            capsys):
    files = {f"p00{index}.png": image_file(index) for index in (0, 1, 2, 4, 5, 6)}
    source = make_folder(tmp_path / "lab", {**files, "sub/p003.png": image_file(3),
                                            "labels.csv": b"file,label\np003.png,7\n"})
    assert run(digit_model, source, tmp_path / "folder-out") == 0
    assert conditions(tmp_path / "folder-out")["sub/p003.png"] == "7"
    capsys.readouterr()
    zipped = zip_folder(source, tmp_path / "lab.zip")
    assert run(digit_model, zipped, tmp_path / "zip-out") == 0
    err = capsys.readouterr().err
    assert f"note: labels from lab/labels.csv in {zipped}" in err
    assert "name no file of the input" not in err
    assert conditions(tmp_path / "zip-out", "lab/") == conditions(tmp_path / "folder-out")


LABELS = (b"file,label\n"
          b"x.png,1\n"  # an exact path (the top's x.png), though sub/x.png has that bare name too
          b"sub/y.png,2\n"  # an exact path in a sub-folder
          b"deep/z.png,3\n"  # a shorter path with the same end as a/deep/z.png
          b"other/a/w.png,4\n"  # a longer path with the same end as a/w.png
          b"b/v.png,5\n"  # not b's v.png: c/v.png is another file, and takes no label
          b"missing.png,6\nelsewhere/u.png,6\n")  # no file of the input


def test_a_zips_labels_csv_rows_match_files_by_the_rules_of_a_folders(digit_model, tmp_path, capsys):
    source = make_folder(tmp_path / "lab", {"x.png": image_file(1), "sub/x.png": image_file(2),
                                            "sub/y.png": image_file(3), "a/deep/z.png": image_file(4),
                                            "a/w.png": image_file(5), "c/v.png": image_file(6),
                                            "labels.csv": LABELS})
    expected = {"x.png": "1", "sub/x.png": "error: no label", "sub/y.png": "2", "a/deep/z.png": "3",
                "a/w.png": "4", "c/v.png": "error: no label"}
    unused = "note: 3 rows of the labels CSV name no file of the input (b/v.png, missing.png, elsewhere/u.png)"
    assert run(digit_model, source, tmp_path / "folder-out") == 0
    assert {name: label[:15] for name, label in conditions(tmp_path / "folder-out").items()} == expected
    assert unused in capsys.readouterr().err
    zipped = zip_folder(source, tmp_path / "lab.zip")
    assert run(digit_model, zipped, tmp_path / "zip-out") == 0
    assert {name: label[:15] for name, label in conditions(tmp_path / "zip-out", "lab/").items()} == expected
    assert unused in capsys.readouterr().err
    # at the ZIP's root (no top folder), its rows are read alike
    at_root = tmp_path / "root.zip"
    at_root.write_bytes(corpus.zip_bytes({path.relative_to(source).as_posix(): path.read_bytes()
                                          for path in source.rglob("*") if path.is_file()}))
    assert run(digit_model, at_root, tmp_path / "root-out") == 0
    assert {name: label[:15] for name, label in conditions(tmp_path / "root-out").items()} == expected
    assert unused in capsys.readouterr().err


@pytest.mark.parametrize("beside, why", [
    ({"other/b.png": image_file(2)}, "its files lie in 2 folders at its top"),
    ({"notes.txt": b"scanned in May"}, "it holds files at its top too"),
])
def test_a_labels_csv_in_a_zip_without_a_single_top_folder_is_not_read_and_said_so(digit_model, tmp_path, capsys,
                                                                                  beside, why):
    zipped = tmp_path / "in.zip"
    zipped.write_bytes(corpus.zip_bytes({"set/1/a.png": image_file(1), "set/labels.csv": b"file,label\n1/a.png,7\n",
                                         **beside}))
    assert run(digit_model, zipped, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "note: labels from" not in err
    assert (f"note: 1 labels CSV in the input is not read (the ZIP has no single top folder: {why}; only a "
            "labels.csv at its top is read): set/labels.csv") in err
    assert conditions(tmp_path / "out")["set/1/a.png"] == "1"  # its class folder's label, not the CSV's 7
    assert "set/labels.csv" not in conditions(tmp_path / "out")


def test_hidden_files_and_empty_folders_leave_a_zip_its_single_top_folder(digit_model, tmp_path, capsys):
    zipped = tmp_path / "in.zip"
    zipped.write_bytes(corpus.zip_bytes({"set/1/a.png": image_file(1), "set/labels.csv": b"file,label\n1/a.png,7\n",
                                         "__MACOSX/set/._a.png": b"junk", ".DS_Store": b"junk", "empty/": b"",
                                         "__MACOSX/labels.csv": b"file,label\n1/a.png,3\n"}))
    assert run(digit_model, zipped, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert f"note: labels from set/labels.csv in {zipped}" in err
    assert "are not read" not in err
    assert conditions(tmp_path / "out") == {"set/1/a.png": "7"}


def test_a_labels_csv_at_a_zips_top_is_read_beside_several_folders_and_theirs_are_not(digit_model, tmp_path, capsys):
    zipped = tmp_path / "in.zip"
    zipped.write_bytes(corpus.zip_bytes({"a/x.png": image_file(1), "b/y.png": image_file(2),
                                         "a/labels.csv": b"file,label\nx.png,5\n",
                                         "labels.csv": b"file,label\na/x.png,7\nb/y.png,8\n"}))
    assert run(digit_model, zipped, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert f"note: labels from labels.csv in {zipped}" in err
    assert ("note: 1 labels CSV in the input is not read (the ZIP has no single top folder: it holds files at "
            "its top too; only a labels.csv at its top is read): a/labels.csv") in err
    assert conditions(tmp_path / "out") == {"a/x.png": "7", "b/y.png": "8"}


def test_of_two_labels_csvs_in_a_zips_single_top_folder_the_first_is_read(digit_model, tmp_path, capsys):
    zipped = tmp_path / "in.zip"
    zipped.write_bytes(corpus.zip_bytes({"set/labels.csv": b"file,label\nx.png,1\n", "set/a/x.png": image_file(1),
                                         "set/LABELS.csv": b"file,label\ny.png,0\n", "set/b/y.png": image_file(2)}))
    assert run(digit_model, zipped, tmp_path / "out") == 0
    assert ("note: 1 labels CSV in the input is not read (only the first, set/labels.csv, is read): "
            "set/LABELS.csv") in capsys.readouterr().err
    assert conditions(tmp_path / "out") == {"set/a/x.png": "1", "set/b/y.png": "error: no label: the file is not in "
                                            "a sub-folder named like a class (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) and not "
                                            "listed in a labels CSV"}


def test_a_zips_labels_csv_named_exactly_is_read_before_another_case(digit_model, tmp_path, capsys):
    """A ZIP with Labels.csv before labels.csv read Labels.csv, where the same folder reads labels.csv (review)."""
    zipped = tmp_path / "in.zip"
    zipped.write_bytes(corpus.zip_bytes({"set/Labels.csv": b"file,label\nc.png,2\n", "set/c.png": image_file(1),
                                         "set/labels.csv": b"file,label\nc.png,9\n"}))
    assert run(digit_model, zipped, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert f"note: labels from set/labels.csv in {zipped}" in err
    assert "(only the first, set/labels.csv, is read): set/Labels.csv" in err
    assert conditions(tmp_path / "out") == {"set/c.png": "9"}


def test_a_labels_csv_given_for_a_zipped_folder_names_files_as_for_the_folder(digit_model, tmp_path, capsys):
    """--labels with rows 3/x.png for set.zip (set/3/x.png) matched nothing and the class folders were used (review);
    rows with the top folder still match."""
    files = {"3/x.png": image_file(1), "4/x.png": image_file(2)}
    source = make_folder(tmp_path / "set", files)
    zipped = zip_folder(source, tmp_path / "set.zip")
    for rows in (b"file,label\n3/x.png,8\n4/x.png,1\n", b"file,label\nset/3/x.png,8\nset/4/x.png,1\n"):
        labels = tmp_path / "given.csv"
        labels.write_bytes(rows)
        output = tmp_path / f"out-{len(rows)}"
        assert run(digit_model, zipped, output, "--labels", str(labels)) == 0
        assert conditions(output) == {"set/3/x.png": "8", "set/4/x.png": "1"}, rows
        assert "name no file of the input" not in capsys.readouterr().err
    assert run(digit_model, source, tmp_path / "folder-out", "--labels", str(tmp_path / "given.csv")) == 0


def test_a_zips_own_labels_csv_reads_its_rows_from_its_folder_only(digit_model, tmp_path, capsys):
    """Rows x.png -> 0 and data/x.png -> 1 in data/labels.csv, files data/x.png and data/data/x.png: both files took
    the row data/x.png when full paths were tried first; the folder unzipped gives x.png 0 (review)."""
    files = {"x.png": image_file(1), "data/x.png": image_file(2), "labels.csv": b"file,label\nx.png,0\ndata/x.png,1\n"}
    source = make_folder(tmp_path / "data", files)
    assert run(digit_model, source, tmp_path / "folder-out") == 0
    assert conditions(tmp_path / "folder-out") == {"x.png": "0", "data/x.png": "1"}
    assert run(digit_model, zip_folder(source, tmp_path / "data.zip"), tmp_path / "zip-out") == 0
    assert conditions(tmp_path / "zip-out", "data/") == {"x.png": "0", "data/x.png": "1"}


def test_a_labels_csv_in_a_subfolder_is_said_to_be_one_not_an_unreadable_image(digit_model, tmp_path):
    """A labels CSV one level down in a folder (or below a ZIP's top folder) was listed as "not an image"."""
    source = make_folder(tmp_path / "lab", {"3/a.png": image_file(3), "4/b.png": image_file(4),
                                            "3/labels.csv": b"file,label\na.png,5\n",
                                            "4/deeper/Labels.CSV": b"file,label\nb.png,6\n"})
    assert run(digit_model, source, tmp_path / "folder-out") == 0
    rows = conditions(tmp_path / "folder-out")
    assert rows["3/a.png"] == "3" and rows["4/b.png"] == "4"  # the class folders give the labels
    for name in ("3/labels.csv", "4/deeper/Labels.CSV"):
        assert rows[name].startswith("error: a labels CSV in a subfolder, not read: the labels of a run come from "
                                     "--labels or from the folder's own labels.csv"), rows[name]
    zipped = zip_folder(source, tmp_path / "lab.zip")
    assert run(digit_model, zipped, tmp_path / "zip-out") == 0
    rows = conditions(tmp_path / "zip-out", "lab/")
    assert rows["3/a.png"] == "3" and rows["4/b.png"] == "4"
    for name in ("3/labels.csv", "4/deeper/Labels.CSV"):
        assert rows[name].startswith("error: a labels CSV in a subfolder, not read: the labels of a run come from "
                                     "--labels or from the labels.csv at the ZIP's top or in its single top folder")


def test_the_labels_csv_given_with_labels_is_no_input_where_it_lies_in_the_folder(digit_model, tmp_path):
    """--labels pointing at a labels.csv in a subfolder of INPUT applied its labels and listed it as one not read."""
    source = make_folder(tmp_path / "lab", {"a.png": image_file(3), "sub/labels.csv": b"file,label\na.png,5\n"})
    assert run(digit_model, source, tmp_path / "out", "--labels", str(source / "sub" / "labels.csv")) == 0
    assert conditions(tmp_path / "out") == {"a.png": "5"}


def test_a_csv_under_another_name_says_how_labels_are_given(digit_model, tmp_path):
    """mylabels.csv at INPUT's top was "not an image" only: nothing said how to give labels."""
    source = make_folder(tmp_path / "lab", {"3/a.png": image_file(3), "mylabels.csv": b"file,label\na.png,5\n"})
    assert run(digit_model, source, tmp_path / "out") == 0
    assert conditions(tmp_path / "out")["mylabels.csv"] == ("error: a CSV file, not an image: labels are read from "
                                                            "--labels or from the folder's own labels.csv; skipped")


def test_the_labels_file_given_inside_input_is_not_counted_as_an_input(tmp_path):
    """It was left out of the run but counted (the progress bar's total, the bare names labels rows match)."""
    from cadp import archive

    source = make_folder(tmp_path / "lab", {"a.png": image_file(3), "sub/mine.csv": b"file,label\na.png,5\n"})
    assert archive._input_names(source, "folder") == ["a.png", "sub/mine.csv"]
    assert archive._input_names(source, "folder", labels_file=source / "sub" / "mine.csv") == ["a.png"]


def test_a_csv_in_a_zip_says_how_labels_are_given_too(digit_model, tmp_path):
    source = make_folder(tmp_path / "lab", {"3/a.png": image_file(3), "mylabels.csv": b"file,label\na.png,5\n"})
    zipped = zip_folder(source, tmp_path / "lab.zip")
    assert run(digit_model, zipped, tmp_path / "out") == 0
    assert conditions(tmp_path / "out", "lab/")["mylabels.csv"] == (
        "error: a CSV file, not an image: labels are read from --labels or from the labels.csv at the ZIP's top or in "
        "its single top folder; skipped")


def test_unsafe_zip_members_are_listed_as_the_zip_names_them_and_take_no_part_in_labels(digit_model, tmp_path):
    """'/set/3/a.png' was listed as 'set/3/a.png' (the real file's name) and 'set/3/../../x/y.png' as 'set/3/x/y.png'
    (no member's name); the skipped one still counted as an input, so the labels CSV's 'a.png' named two inputs and
    was used for none: the real file was released with its folder's label, 3, not the CSV's 5."""
    zipped = tmp_path / "set.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        for name in ("set/3/a.png", "/set/3/a.png", "set/3/../../x/y.png"):
            archive.writestr(name, image_file(1))
        archive.writestr("set/labels.csv", "file,label\na.png,5\n")
    assert run(digit_model, zipped, tmp_path / "out") == 0
    assert conditions(tmp_path / "out") == {
        "set/3/a.png": "5", "/set/3/a.png": "error: unsafe path in the ZIP (absolute or containing '..'); skipped",
        "set/3/../../x/y.png": "error: unsafe path in the ZIP (absolute or containing '..'); skipped"}


def test_a_copied_name_stays_with_the_input_written_exactly_so(digit_model, tmp_path):
    """7/b.PNG's release was written as 7/b.png and the input named 7/b.png got 7/b-2.png: matched by name, each
    output passed for the other input's release."""
    source = make_folder(tmp_path / "in", {"7/b.PNG": image_file(1), "7/b.png": image_file(2)})
    assert run(digit_model, source, tmp_path / "out") == 0  # a kept label: names are copied
    outputs = {row["file"]: row["output"] for row in read_manifest(tmp_path / "out")}
    assert outputs == {"7/b.png": "7/b.png", "7/b.PNG": "7/b-2.png"}, outputs
