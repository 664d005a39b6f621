"""The archive CLI going on from an earlier run, and after a write error: a continuation with the earlier run's
--seed drew its noise again for other records; labels.csv kept rows (released labels) of files the run removed;
a file under two hard links was released twice."""

from __future__ import annotations

import csv
import errno
import os

from cadp import archive

try:
    from test_archive import image_file, image_model, make_folder, read_manifest, run  # noqa: F401 - a fixture
except ImportError:  # tests/ imported as a package
    from tests.test_archive import image_file, image_model, make_folder, read_manifest, run  # noqa: F401


def labels_rows(output) -> list[dict[str, str]]:
    with (output / "labels.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_continuation_with_the_earlier_runs_seed_is_refused(image_model, tmp_path, capsys):
    files = {f"{label}/{i}.png": image_file(10 * label + i) for label in (0, 1) for i in range(3)}
    source = make_folder(tmp_path / "in", files)
    first = tmp_path / "first"
    assert run(image_model, source, first, "--seed", "7", "--batch-size", "2") == 0
    # as if stopped after two: the rest is a continuation
    rows = read_manifest(first)
    kept = [row for row in rows if row["status"] == "privatized"][:2]
    with (first / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, archive.MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
    for row in rows:
        if row not in kept:
            (first / row["output"]).unlink()
    capsys.readouterr()
    second = tmp_path / "second"
    assert run(image_model, source, second, "--skip-privatized", str(first), "--seed", "7") == archive.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--seed 7: the run in" in err and "same noise draws" in err and not second.exists()
    # a chain: the second run (another seed) continued the first; a third with the first's seed is refused too
    assert run(image_model, source, second, "--skip-privatized", str(first), "--seed", "8") == 0
    third = tmp_path / "third"
    assert run(image_model, source, third, "--skip-privatized", str(second), "--seed", "7") == archive.EXIT_USAGE
    assert "--seed 7" in capsys.readouterr().err
    assert run(image_model, source, third, "--skip-privatized", str(second)) == 1  # no seed: allowed (nothing left)


def test_the_stop_message_says_a_seed_must_change_to_go_on():
    assert "another seed or none" in archive._RESTART


def test_labels_csv_lists_only_the_files_kept_after_a_write_error(image_model, tmp_path, monkeypatch, capsys):
    """The manifest could not hold a batch's rows (disk full): their files were removed, their labels.csv rows
    (released labels) stayed, naming files that do not exist."""
    files = {f"{label}/{i}.png": image_file(10 * label + i) for label in (0, 1) for i in range(5)}
    source = make_folder(tmp_path / "in", files)
    flush = archive.Manifest.flush
    calls = []

    def full_disk(self):
        calls.append(1)
        if len(calls) >= 3:  # the second batch's rows cannot be written
            raise OSError(errno.ENOSPC, "No space left on device")
        return flush(self)

    monkeypatch.setattr(archive.Manifest, "flush", full_disk)
    output = tmp_path / "out"
    code = run(image_model, source, output, "--batch-size", "3", "--condition", "label=randomized:1")
    assert code == archive.EXIT_WRITE_ERROR, capsys.readouterr().err
    privatized = {row["output"] for row in read_manifest(output) if row["status"] == "privatized"}
    pngs = {path.relative_to(output).as_posix() for path in output.rglob("*.png")}
    labelled = {row["file"] for row in labels_rows(output)}
    assert privatized and privatized == pngs == labelled, (privatized, pngs, labelled)


def test_a_file_under_two_hard_links_is_released_once(image_model, tmp_path):
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1), "1/b.png": image_file(2)})
    os.link(source / "0" / "a.png", source / "1" / "hard.png")
    output = tmp_path / "out"
    assert run(image_model, source, output) == 0
    rows = {row["file"]: row for row in read_manifest(output)}
    assert rows["0/a.png"]["status"] == "privatized" and rows["1/b.png"]["status"] == "privatized"
    assert rows["1/hard.png"]["status"] != "privatized" and "the same file as 0/a.png" in rows["1/hard.png"]["error"]
    assert rows["0/a.png"]["releases_of_record"] == "1"


def test_a_csv_with_sklearns_target_column_is_told_it_may_be_the_missing_one(tmp_path, capsys):
    """sklearn's diabetes table names the outcome 'target'; the bundled model calls it 'progression'."""
    from sklearn.datasets import load_diabetes

    from cadp.hub import BUNDLED_DIR

    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    code = archive.main(["--model", str(BUNDLED_DIR / "diabetes-cinn"), "--mechanism", "laplace", "--epsilon", "1",
                         str(path), str(tmp_path / "out")])
    assert code == archive.EXIT_USAGE
    assert "the file has 'target', which the model does not: if it is 'progression', rename it" in \
        capsys.readouterr().err


def test_a_labels_row_of_a_bare_name_two_inputs_have_is_said_to_name_both(image_model, tmp_path, capsys):
    """'x.png' with inputs a/x.png and b/x.png: the note said the row named no file of the input."""
    source = make_folder(tmp_path / "in", {"a/x.png": image_file(1), "b/x.png": image_file(2), "a/y.png": image_file(3)})
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nx.png,0\nnope.png,1\n", encoding="utf-8")
    run(image_model, source, tmp_path / "out", "--labels", str(labels))
    err = " ".join(capsys.readouterr().err.split())
    assert ("1 row of the labels CSV gives a bare file name that several inputs have, e.g. x.png (a/x.png, b/x.png): "
            "such a row is used for none of them") in err, err
    assert "1 row of the labels CSV names no file of the input (nope.png)" in err


def test_a_seed_that_draws_as_the_earlier_runs_is_refused_too(image_model, tmp_path, capsys):
    """torch's generator keeps a seed's lowest 32 bits: --seed 7 + 2**32 drew seed 7's noise and was accepted."""
    files = {f"{label}/{i}.png": image_file(10 * label + i) for label in (0, 1) for i in range(2)}
    source = make_folder(tmp_path / "in", files)
    first = tmp_path / "first"
    assert run(image_model, source, first, "--seed", "7") == 0
    rows = read_manifest(first)
    with (first / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, archive.MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows[:1])
    assert run(image_model, source, tmp_path / "second", "--skip-privatized", str(first), "--seed",
               str(7 + 2**32)) == archive.EXIT_USAGE
    assert "draws alike" in capsys.readouterr().err


def test_labels_csv_is_left_whole_when_the_mark_of_a_batch_cannot_be_taken(tmp_path):
    """A full disk on the flush that starts a batch left the previous batch's mark, and the clean-up then cut the
    previous batch's rows (their files listed and kept)."""
    labels = archive.ReleasedLabels(tmp_path / "labels.csv")
    labels.start_batch()
    labels.row("a.png", "0")
    labels.start_batch()
    labels.row("b.png", "1")
    labels.flush()  # the batch ends: its files and rows are listed

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    labels.handle.flush = full
    try:
        labels.start_batch()
    except OSError:
        pass
    labels.keep_batch_rows(set())  # as the run's clean-up calls it: nothing of the (failed) new batch kept
    labels.handle = None
    assert [row["file"] for row in labels_rows(tmp_path)] == ["a.png", "b.png"]
