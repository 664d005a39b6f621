"""A table cell holding a huge but finite number (Stata's missing-value code, 8.988e307): the release was made and
charged, then the page's downstream check overflowed (NaN into the classifier) and showed "Something went wrong"
on every rerun, inviting a second, charged press."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cadp import compare
from cadp.data import load_table

ROOT = Path(__file__).resolve().parent.parent


def huge_rows(rows: int = 60):
    frame = load_table("diabetes").frame.head(rows).copy()
    frame.loc[5, "bp"] = 8.988e307
    return frame


def test_the_downstream_check_takes_a_column_of_huge_numbers():
    original = huge_rows()
    released = original.copy()
    released.loc[7, "bmi"] = 1e300
    scores = compare.downstream_check(original, released, "sex")
    assert isinstance(scores, dict), scores
    assert 0 <= scores["o/o"] <= 1 and 0 <= scores["p/o"] <= 1


@pytest.mark.usefixtures("weights")
def test_the_table_page_releases_rows_with_a_huge_number_without_an_error():
    at = AppTest.from_file(str(ROOT / "views" / "tabular.py"), default_timeout=120).run()
    at.radio(key="table_source").set_value("Upload a CSV").run()
    data = huge_rows(40).to_csv(index=False).encode()
    at.file_uploader(key="table_upload").set_value(("huge.csv", data, "text/csv")).run()
    at.button(key="table_privatize").click().run()
    assert not at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    assert any(m.value == "**Guarantee of this release**" for m in at.markdown)


def test_an_unexpected_error_says_a_release_before_it_is_counted_and_a_new_press_costs_again(monkeypatch):
    """It said only "Try again": after a release had been made and charged, that invited a second charged press.
    Pages that release nothing do not speak of releases."""
    from cadp import ui
    from cadp.mechanisms import make_mechanism

    shown = []
    monkeypatch.setattr(ui.st, "error", shown.append)
    for releases in (True, False):
        with ui.page_errors(releases=releases):
            ui.charge(f"row {releases}", "table.csv", make_mechanism("laplace", 1.0, temperature=0.7))
            raise ValueError("boom")
    assert all(text.startswith("Something went wrong (ValueError). Try other inputs") for text in shown)
    assert "your session and its privacy ledger are kept" in shown[1]
    assert ("Records were released before the error, and they are counted in the ledger (see the sidebar): pressing "
            "Privatize again releases them again, at their cost again.") in shown[0]
    assert "release" not in shown[1].replace("ledger are kept", "")
