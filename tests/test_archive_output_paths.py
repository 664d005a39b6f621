"""What the batch CLI says of an OUTPUT it cannot make: the reason, not the system's bare error."""

from __future__ import annotations

from tests.test_archive import image_file, make_folder, run


def test_an_output_under_a_link_to_nothing_says_so(digit_model, tmp_path, capsys):
    """A dangling link in OUTPUT's path was reported as "File exists"."""
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for output in (tmp_path / "link" / "out", tmp_path / "link"):
        assert run(digit_model, source, output) == 2
        err = capsys.readouterr().err
        assert (f"error: cannot write the output folder {output} (a link to {tmp_path / 'nowhere'}, which does not "
                f"exist: {tmp_path / 'link'})") in err, err
        assert "File exists" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "link"]  # nothing made


def test_an_output_through_dot_dot_after_a_file_says_it_is_a_file(digit_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    (tmp_path / "notes.txt").write_text("mine")
    output = tmp_path / "notes.txt" / ".." / "out"
    assert run(digit_model, source, output) == 2
    assert (f"error: OUTPUT {output} goes through '..' after a file, not a folder: give the output folder's own "
            "path") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_through_a_loop_of_links_is_refused_in_words(digit_model, tmp_path, capsys):
    """A raw RuntimeError (symlink loop) came out of the OUTPUT-inside-INPUT check."""
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    output = tmp_path / "loop1" / "o"
    assert run(digit_model, source, output) == 2
    assert f"error: OUTPUT {output} goes through a loop of links" in capsys.readouterr().err
