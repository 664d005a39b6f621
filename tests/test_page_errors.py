"""An unexpected error on a page: the visitor gets a plain message that says a release was counted only when one
was made in that run, and whoever runs the app gets where it failed in the server's log, without the error's
words (they may quote an upload's values)."""

from __future__ import annotations

import logging

import pytest
import streamlit as st

from cadp import ui
from cadp.mechanisms import make_mechanism


@pytest.fixture()
def shown(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(ui.st, "error", messages.append)
    st.session_state.pop("privacy_ledger", None)
    yield messages
    st.session_state.pop("privacy_ledger", None)


def test_no_release_no_word_of_one(shown):
    with ui.page_errors(releases=True):
        raise TypeError("boom")
    assert len(shown) == 1 and "Something went wrong (TypeError)" in shown[0]
    assert "counted in the ledger" not in shown[0] and "released" not in shown[0]


def test_a_release_made_before_the_error_is_said(shown):
    ui.charge("earlier", "a.png", make_mechanism("laplace", 1.0, temperature=0.7))  # an earlier run's: not this one's
    with ui.page_errors(releases=True):
        ui.charge("k", "b.png", make_mechanism("laplace", 1.0, temperature=0.7))
        raise TypeError("boom")
    assert "counted in the ledger" in shown[0] and "again, at their cost again" in shown[0]


def test_the_server_log_says_where_it_failed_without_the_errors_words(shown, caplog):
    def deep(cell: str):
        raise ValueError(f"cell value {cell} could not be read")  # (an upload's value in the words)

    with caplog.at_level(logging.ERROR, logger="cadp.app"):
        with ui.page_errors():
            deep("123-45-" + "6789")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "ValueError" in logged and "in deep" in logged and "test_page_errors.py" in logged
    assert "123-45-6789" not in logged and not any(record.exc_info for record in caplog.records)
