"""Labels chosen by hand stay with their images. The label editor is keyed by the pixels of every image in the
upload: adding or removing a file, or changing Inversion, gave it a new key, and every label chosen by hand was
silently replaced by the classifier's suggestion (a kept label then released the wrong class exactly); one image's
box kept its labels apart from the batch's, and a refused upload forgot them."""

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
    """The same image under two names: each copy's label is its own, by its file name (it was by its place among
    the copies: with the first one removed, the second took the first's label)."""
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    copy = ("a-copy.png", A[1], "image/png")
    uploaded(at, [A, copy, B])
    suggested = labels(drawn)
    assert suggested[0] == suggested[1]  # one image, one suggestion
    mine = unsuggested(suggested)[0]
    choose(at, drawn, {1: mine})
    uploaded(at, [A, copy])  # b removed: the first copy does not take the second's label
    assert labels(drawn) == [suggested[0], mine]
    uploaded(at, [copy, A])  # another order: each copy's label goes with its file
    assert labels(drawn) == [mine, suggested[0]]
    uploaded(at, [copy])  # a removed: the copy left keeps its own label, not the first copy's
    assert label_box(at).value == mine


def label_box(at: AppTest):
    """The single image's label box (keyed by its input)."""
    boxes = [box for box in at.selectbox if box.key and box.key.startswith("image_label_")]
    assert len(boxes) == 1, [box.key for box in at.selectbox]
    return boxes[0]


def released(at: AppTest) -> list[str]:
    at.button(key="image_privatize").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    result = at.session_state["image_result"]["result"]
    return [MNIST_CLASSES[int(label)] for label in result.released_condition["label"]]


def test_a_label_chosen_by_hand_in_a_batch_stays_when_its_image_is_left_alone(drawn):
    """The single image's box kept labels apart from the batch's: with the other files removed, the image's
    suggestion stood in the box and was released in place of the label chosen for it."""
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    uploaded(at, [A, B])
    suggested = labels(drawn)
    mine = unsuggested(suggested)[0]
    choose(at, drawn, {0: mine})
    uploaded(at, [A])  # b removed: a alone
    assert label_box(at).value == mine
    uploaded(at, [A, B])
    assert labels(drawn) == [mine, suggested[1]]
    uploaded(at, [A])
    assert released(at) == [mine]


def test_a_label_chosen_by_hand_for_one_image_stays_when_files_are_added(drawn):
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    uploaded(at, [A, B])
    suggested = labels(drawn)
    mine = unsuggested(suggested)[0]
    uploaded(at, [A])
    label_box(at).set_value(mine).run()
    uploaded(at, [A, B])  # b added: a's label in a's row
    assert labels(drawn) == [mine, suggested[1]]
    assert released(at) == [mine, suggested[1]]


def test_a_label_chosen_by_hand_for_one_image_outlives_a_change_of_inversion():
    """The box was keyed by the input's pixels: with Inversion 'always' (the image's negative, the same record in
    the ledger) the suggestion replaced the label chosen, and was released."""
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    uploaded(at, [A])
    suggested = label_box(at).value
    at.radio(key="image_invert").set_value("always").run()
    negative = label_box(at).value  # its negative's suggestion: a label the old box fell back to
    at.radio(key="image_invert").set_value("auto").run()
    mine = unsuggested([suggested, negative])[0]
    label_box(at).set_value(mine).run()
    at.radio(key="image_invert").set_value("always").run()
    assert label_box(at).value == mine
    assert released(at) == [mine]


def test_labels_chosen_by_hand_outlive_an_upload_refused_as_too_large(drawn, monkeypatch):
    """A refused upload forgot what was made of the one before: once the visitor removed the extra file, as the
    error asked, every label chosen by hand was the classifier's suggestion again, unsaid. Clearing the upload
    still forgets them."""
    import cadp.ui as ui

    monkeypatch.setattr(ui, "MAX_UPLOAD_FILES", 2)  # stands for the files' and bytes' caps alike
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    uploaded(at, [A, B])
    suggested = labels(drawn)
    mine = unsuggested(suggested)[0]
    choose(at, drawn, {0: mine})
    at.file_uploader(key="image_upload").set_value([A, B, C]).run()
    assert any("at most 2 files" in e.value for e in at.error), [e.value for e in at.error]
    uploaded(at, [A, B])  # c removed, as the error asked
    assert labels(drawn) == [mine, suggested[1]]
    uploaded(at, [])  # cleared: forgotten
    uploaded(at, [A, B])
    assert labels(drawn) == suggested


def test_forget_forgets_the_labels_chosen_by_hand(drawn):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("views/image.py").run()
    uploaded(at, [A, B])
    suggested = labels(drawn)
    choose(at, drawn, {0: unsuggested(suggested)[0]})
    at.switch_page("views/tabular.py").run()
    at.switch_page("views/image.py").run()  # the upload is now the one kept from before
    at.button(key="image_upload_forget").click().run()
    uploaded(at, [A, B])
    assert labels(drawn) == suggested
