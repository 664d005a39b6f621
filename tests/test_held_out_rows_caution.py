"""Rows of a bundled public table that the model's network did not train on (its held-out rows): its encoder's
ranges and levels and its conditions' frequencies were computed from the whole table, these rows included, so the
model is not wholly independent of them. The app said so of the rows it offers; the batch CLI and an upload of the
same rows said nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import cadp.archive as archive
from cadp.data import load_table
from cadp.hub import load_model
from cadp.train import held_out_caution, rows_held_out_of_training, split_table, training_rows_caution
from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "weights" / "diabetes-cinn"


def split():
    config = load_model(BUNDLED).config
    return config, *split_table(load_table("diabetes").frame, config.permutation_seed)


def test_held_out_rows_are_counted_and_training_rows_and_other_rows_are_not():
    config, train, test = split()
    assert rows_held_out_of_training(config, test) == len(test) == 88
    assert rows_held_out_of_training(config, train) == 0
    changed = test.assign(bmi=test["bmi"] + 0.01)  # rows of no table
    assert rows_held_out_of_training(config, changed) == 0
    caution = held_out_caution(config, 88, 88)
    assert caution.startswith("88 of these 88 rows are rows of the public diabetes table that diabetes-cinn did "
                              "not train on.")
    assert "computed from all 442 rows of that table, these included" in caution
    assert caution.endswith("Rows are recognized by their exact values: a row of the table rounded or retyped is "
                            "not counted here, and for it too the model is not wholly independent of it.")
    assert held_out_caution(config, 0, 88) is None
    assert "1 of these 5 rows is a row of the public diabetes table" in held_out_caution(config, 1, 5)


def test_uncounted_input_rows_are_said_in_the_singular_and_the_plural():
    """Without a total the caution said "1 input row(s) are rows ... these included ... independent of them"."""
    config = load_model(BUNDLED).config
    one = held_out_caution(config, 1)
    assert one.startswith("1 input row is a row of the public diabetes table that diabetes-cinn did not train on.")
    assert "this one included, so the model is not wholly independent of it " in one
    two = held_out_caution(config, 2)
    assert two.startswith("2 input rows are rows of the public diabetes table that diabetes-cinn did not train on.")
    assert "these included, so the model is not wholly independent of them " in two
    assert training_rows_caution("m", 1).startswith("1 input row is a row m was trained on (without DP): for it ")
    assert training_rows_caution("m", 2).startswith("2 input rows are rows m was trained on (without DP): for them ")
    assert all("(s)" not in text for text in (one, two, training_rows_caution("m", 1)))


def test_the_batch_cli_cautions_about_held_out_rows(tmp_path, capsys):
    _, train, test = split()
    source = tmp_path / "rows.csv"
    test.head(30).to_csv(source, index=False)
    output = tmp_path / "out"
    assert archive.main(["--model", str(BUNDLED), "--mechanism", "laplace", "--epsilon", "1", str(source),
                         str(output)]) == 0
    cautions = (output / "cautions.txt").read_text(encoding="utf-8")
    assert ("Caution: 30 input rows are rows of the public diabetes table that diabetes-cinn did not train on. "
            in cautions)
    assert "30 input rows are rows of the public diabetes table" in capsys.readouterr().err
    assert "Caution" not in (output / "guarantee.txt").read_text(encoding="utf-8")  # never in the shared terms
    other = tmp_path / "other.csv"
    test.head(30).assign(bmi=test["bmi"].head(30) + 0.01).to_csv(other, index=False)
    assert archive.main(["--model", str(BUNDLED), "--mechanism", "laplace", "--epsilon", "1", str(other),
                         str(tmp_path / "out2")]) == 0
    assert not (tmp_path / "out2" / "cautions.txt").exists() or "public diabetes table" not in (
        tmp_path / "out2" / "cautions.txt").read_text(encoding="utf-8")


@pytest.mark.usefixtures("weights")
def test_an_upload_of_held_out_rows_is_cautioned_on_the_table_page_and_the_offered_rows_keep_their_caption():
    config = load_model(BUNDLED).config
    _, _, test = split()  # the tiny test model has the bundled model's split (its dataset and seed)
    at = AppTest.from_file(str(ROOT / "views" / "tabular.py"), default_timeout=120).run()
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("mine.csv", test.head(20).to_csv(index=False).encode(),
                                                    "text/csv")).run()
    assert not at.exception
    warned = " ".join(w.value for w in at.warning)
    assert (f"20 of these 20 rows are rows of the public diabetes table that {helpers.TABLE_MODEL} did not train "
            "on.") in warned, warned
    at.radio(key="table_source").set_value("Bundled table (diabetes)").run()
    assert "public diabetes table" not in " ".join(w.value for w in at.warning)  # its caption says it
    assert any("these included" in c.value for c in at.caption)
    assert config.permutation_seed == 0
