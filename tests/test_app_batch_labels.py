"""A batch's labels chosen by hand stay with their images. The label editor is keyed by the pixels of every image in
the upload: adding or removing a file, or changing Inversion, gave it a new key, and every label chosen by hand was
silently replaced by the classifier's suggestion (a kept label then released the wrong class exactly)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cadp.data import MNIST_CLASSES
from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)
A, B, C = (("a.png", helpers.png(1), "image/png"), ("b.png", helpers.png(2), "image/png"),
           ("c.png", helpers.png(3), "image/png"))


@pytest.fixture
def drawn(monkeypatch) -> list[tuple[str, list[str]]]:
    """Each run's label editor: its key and the labels the page goes on with (the edited column)."""
    import streamlit

    real, tables = streamlit.data_editor, []

    def data_editor(data, **options):
        edited = real(data, **options)
        tables.append((options["key"], list(edited["label"])))
        return edited

    monkeypatch.setattr(streamlit, "data_editor", data_editor)
    return tables


def uploaded(at: AppTest, files) -> AppTest:
    at.file_uploader(key="image_upload").set_value(list(files)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def choose(at: AppTest, drawn, labels: dict[int, str]) -> AppTest:
    """What the data editor sends when the visitor sets rows' labels (row -> label) in the editor shown last."""
    at.session_state[drawn[-1][0]] = {"edited_rows": {row: {"label": label} for row, label in labels.items()},
                                      "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def unsuggested(*suggested: list[str]) -> list[str]:
    """Labels the classifier suggested for none of the images: a hand edit, never mistaken for a suggestion."""
    return [name for name in MNIST_CLASSES if not any(name in labels for labels in suggested)]


def labels(drawn) -> list[str]:
    return drawn[-1][1]


def test_a_label_chosen_by_hand_stays_with_its_image_when_files_are_added_or_removed(drawn):
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    uploaded(at, [A, B, C])
    suggested = dict(zip("abc", labels(drawn)))
    mine, other = unsuggested(labels(drawn))[:2]
    uploaded(at, [A, B])
    assert labels(drawn) == [suggested["a"], suggested["b"]]
    choose(at, drawn, {1: mine})
    assert labels(drawn) == [suggested["a"], mine]
    uploaded(at, [C, A, B])  # a file added in front: b moves to the third row, its label with it
    assert labels(drawn) == [suggested["c"], suggested["a"], mine]
    choose(at, drawn, {1: other})  # and a's label chosen in this table
    uploaded(at, [C, A])  # b removed: no other image takes its label
    assert labels(drawn) == [suggested["c"], other]
    uploaded(at, [A, B])  # a table shown before: its labels as chosen since, not as they were then
    assert labels(drawn) == [other, mine]
    at.button(key="image_privatize").click().run()
    assert not at.exception, [e.value for e in at.exception]
    released = at.session_state["image_result"]["result"].released_condition["label"]
    assert [MNIST_CLASSES[int(label)] for label in released] == [other, mine]  # kept: released exactly


def test_a_label_chosen_by_hand_outlives_a_change_of_inversion(drawn):
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    uploaded(at, [A, B])
    before, suggested = drawn[-1]
    mine = unsuggested(suggested)[0]
    choose(at, drawn, {0: mine})
    at.radio(key="image_invert").set_value("always").run()  # every image read as its negative: other pixels
    assert not at.exception, [e.value for e in at.exception]
    assert drawn[-1][0] != before and labels(drawn)[0] == mine
    at.radio(key="image_invert").set_value("auto").run()
    assert labels(drawn) == [mine, suggested[1]]


def test_copies_of_one_image_keep_their_own_labels(drawn):
    """The same image under two names: each copy's label is its own, by its place among the copies."""
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    copy = ("a-copy.png", A[1], "image/png")
    uploaded(at, [A, copy, B])
    suggested = labels(drawn)
    assert suggested[0] == suggested[1]  # one image, one suggestion
    mine = unsuggested(suggested)[0]
    choose(at, drawn, {1: mine})
    uploaded(at, [A, copy])  # b removed: the first copy does not take the second's label
    assert labels(drawn) == [suggested[0], mine]
