"""The hostile corpus through the app (AppTest, tiny models): a plain error or a stated note, never an exception.

Every case is followed by a valid action in the same session, which must still succeed.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

try:
    from tests import app_helpers as helpers
    from tests import corpus
except ImportError:  # pytest run without the repository root on sys.path
    import app_helpers as helpers
    import corpus

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90


pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)



def download_bytes(button, media: dict[str, bytes]) -> bytes:
    return media[button.proto.url.rsplit("/", 1)[-1].split(".")[0]]


def page(name: str) -> AppTest:
    return clean(AppTest.from_file(str(ROOT / "views" / name), default_timeout=TIMEOUT).run())


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def guarantee(at: AppTest) -> str:
    found = [i.value for i in at.info if "guarantee" in i.value]
    assert found, [i.value for i in at.info]
    return found[0]


def downloads(at: AppTest) -> list:
    return at.get("download_button")


# --------------------------------------------------------------------------- images

def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def zip_with_junk() -> bytes:
    image, other = corpus.png(corpus.digit()), corpus.png(corpus.digit(30, 40))
    return corpus.zip_bytes({"top.png": image, "deep/er/nested.png": other, "notes.txt": b"hello",
                             "../x.png": image, "__MACOSX/._top.png": b"junk", "folder/": b""})


# (file name, bytes, "error" | "note", text the user must see)
IMAGE_CASES = {
    "zero-bytes": ("empty.png", lambda: b"", "error", "the file is empty (0 bytes)"),
    "truncated-png": ("cut.png", corpus.truncated_png, "error", "truncated or corrupt"),
    "truncated-jpeg": ("cut.jpg", corpus.truncated_jpeg, "error", "truncated or corrupt"),
    "text-as-png": ("letter.png", lambda: b"Dear reader,\nthis is text.\n" * 20, "error",
                    "not an image that can be read"),
    "pdf-as-jpeg": ("paper.jpg", lambda: b"%PDF-1.7\n" + b"\x00" * 600, "error", "it is a PDF document"),
    "decompression-bomb": ("bomb.png", corpus.png_bomb, "error", "decompression bomb"),
    "16-bit": ("deep.png", corpus.png_16bit, "note", "16-bit scaled to 8-bit"),
    "cmyk": ("print.jpg", corpus.cmyk_jpeg, "note", "CMYK converted to RGB"),
    "palette": ("palette.png", corpus.palette_png, "note", "palette image expanded"),
    "palette-transparent": ("palette-t.png", lambda: corpus.palette_png(transparent=True), "note",
                            "transparency composited"),
    "alpha-dark-strokes": ("drawn.png", corpus.alpha_png, "note", "transparency composited on white"),
    "alpha-light-strokes": ("drawn-light.png", lambda: corpus.alpha_png(dark_strokes=False), "note",
                            "transparency composited on black"),
    "animated-gif": ("moving.gif", corpus.animated_gif, "note", "first frame of a 2-frame animated GIF"),
    "exif-rotated": ("phone.jpg", corpus.exif_rotated_jpeg, "note", "EXIF rotation applied"),
    "one-pixel": ("dot.png", lambda: corpus.png(np.array([[200]], np.uint8)), "note", "resized 1x1 ->"),
    "huge-legal": ("poster.png", lambda: encode(Image.new("L", (5000, 3000), 30), "PNG"), "note",
                   "resized 5000x3000 ->"),
    "dicom": ("scan.dcm", corpus.dicom, "note", "scaled to 8-bit"),
    "dicom-unsupported-syntax": ("scan-j2k.dcm", lambda: corpus.dicom(compressed=True), "error",
                                 "cannot be decoded here"),
}


def valid_release(at: AppTest) -> None:
    """The follow-up valid action: a plain PNG uploaded and privatized, with a download."""
    at.file_uploader(key="image_upload").set_value(("digit.png", helpers.png(7), "image/png")).run()
    clean(at)
    assert not errors(at)
    at.button(key="image_privatize").click().run()
    clean(at)
    assert len(downloads(at)) == 1 and "Laplace" in guarantee(at)


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_hostile_image_upload_is_an_error_or_a_note_and_the_session_goes_on(case):
    name, make, outcome, text = IMAGE_CASES[case]
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value((name, make(), "application/octet-stream")).run()
    clean(at)
    if outcome == "error":
        assert len(errors(at)) == 1 and errors(at)[0].startswith(f"Skipped {name}: "), errors(at)
        assert text in errors(at)[0]
        assert not [button for button in at.button if button.key == "image_privatize"]
        assert not downloads(at)
    else:
        assert not errors(at), errors(at)
        assert text in texts(at), texts(at)
        at.button(key="image_privatize").click().run()
        clean(at)
        assert len(downloads(at)) == 1
    valid_release(at)


def test_zip_with_nested_folders_non_images_and_a_climbing_name():
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value(("batch.zip", zip_with_junk(), "application/zip")).run()
    clean(at)
    shown = errors(at)
    assert len(shown) == 2, shown
    assert any("batch.zip/notes.txt: not an image" in e for e in shown)
    assert any("unsafe path in the ZIP" in e and "x.png" in e for e in shown)
    assert not any("__MACOSX" in e for e in shown)
    at.button(key="image_privatize").click().run()
    clean(at)
    ledger = [m.value for m in at.sidebar.markdown]
    assert sorted(line.split("**")[1] for line in ledger) == ["batch.zip/deep/er/nested.png", "batch.zip/top.png"]
    assert "ZIP" in downloads(at)[0].proto.label
    valid_release(at)


# --------------------------------------------------------------------------- CSV tables

def table(delimiter: str = ",", rows: int = 30, extra: dict[str, list] | None = None) -> bytes:
    """group (a/b), value (floats), and any extra columns, as CSV text with ``delimiter``."""
    columns = {"group": ["ab"[i % 2] for i in range(rows)], "value": [f"{1.5 + i * 0.37:.2f}" for i in range(rows)]}
    columns.update(extra or {})
    lines = [delimiter.join(columns)] + [delimiter.join(str(columns[c][i]) for c in columns) for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def quoted_newlines() -> bytes:
    rows = ['group,comment,value'] + [f'{"ab"[i % 2]},"line one\nline {i % 3}",{i * 1.1:.1f}' for i in range(30)]
    return ("\n".join(rows) + "\n").encode()


# (bytes, "error" | "note" | "ok", text the user must see; for "ok" a column offered as a condition)
CSV_CASES = {
    "empty": (lambda: b"", "error", "the CSV file is empty"),
    "blank-lines": (lambda: b"\n\n  \n", "error", "the CSV file is empty"),
    "header-only": (lambda: b"group,value\n", "error", "a header but no data rows"),
    # no model can be fitted on one number column: said on upload, not after a press of "Fit"
    "one-column": (lambda: ("value\n" + "\n".join(f"{i * 0.7:.1f}" for i in range(40)) + "\n").encode(),
                   "error", "no model can be fitted on it here as it is: the table needs at least two encoded"),
    "latin-1": (lambda: b"group,city,value\n" + "\n".join(
        f"{'ab'[i % 2]},{'Zürich' if i % 3 else 'Málaga'},{i * 1.3:.1f}" for i in range(30)).encode("latin-1"),
                "note", "read as Windows-1252"),
    "utf8-bom": (lambda: b"\xef\xbb\xbf" + table(), "ok", "group"),
    "semicolon": (lambda: table(";"), "ok", "group"),
    "tab": (lambda: table("\t"), "ok", "group"),
    "quoted-newlines": (quoted_newlines, "ok", "comment"),
    "duplicate-columns": (lambda: table().replace(b"group,value", b"group,group", 1), "note",
                          "duplicate column name 'group'"),
    "all-nan-column": (lambda: table(extra={"empty": [""] * 30}), "note", "'empty' is empty in every row: dropped"),
    "constant-column": (lambda: table(extra={"constant": ["7"] * 30}), "note", "'constant' has one value"),
    "mixed-types": (lambda: table(extra={"mixed": [str(i) if i % 4 else "unknown" for i in range(30)]}), "note",
                    "'mixed' mixes numbers and text"),
    "500-columns": (lambda: (",".join(f"c{i}" for i in range(500)) + "\n" + ",".join("1" * 500) + "\n").encode(),
                    "error", "the CSV has 500 columns; at most 200 are supported"),
    "200000-rows": (lambda: corpus.csv_rows(200_000), "note", "a random sample of 100,000 rows (seed 0) is used"),
    "10000-categories": (lambda: table(rows=10_000, extra={"id": [f"patient-{i:05d}" for i in range(10_000)]}),
                         "note", "'id' has 10,000 distinct text values (more than 200): treated as an identifier"),
    "binary": (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "error", "the file is binary"),
}


def upload_page() -> AppTest:
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    return clean(at)


def bundled_release(at: AppTest) -> None:
    """The follow-up valid action: privatize the bundled table, with a download."""
    at.radio(key="table_source").set_value(at.radio(key="table_source").options[0]).run()
    helpers.conditions(at).set_value(["sex"]).run()
    clean(at)
    assert any("fits the model" in s.value for s in at.success)
    at.button(key="table_privatize").click().run()
    clean(at)
    assert not errors(at) and downloads(at)[0].label == "Download privatized CSV"
    assert "epsilon = 2" in guarantee(at)


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_hostile_csv_upload_is_an_error_or_a_note_and_the_session_goes_on(case):
    make, outcome, text = CSV_CASES[case]
    at = upload_page()
    at.file_uploader(key="table_upload").set_value((f"{case}.csv", make(), "text/csv")).run()
    clean(at)
    if outcome == "error":
        assert len(errors(at)) == 1 and text in errors(at)[0], errors(at)
        assert not downloads(at)
    else:
        assert not errors(at), errors(at)
        notes = [c.value for c in at.caption if c.value.startswith("Note: ")]
        if outcome == "note":
            assert any(text in note for note in notes), notes
        else:
            assert not notes, notes
            if text is not None:
                assert text in helpers.conditions(at).options
        assert any("does not match" in w.value for w in at.warning)  # on to fitting a model on it
    bundled_release(at)


def test_formula_cells_are_escaped_in_the_downloaded_csv(media):
    formulas = ["=HYPERLINK(\"http://x\")", "+1+2", "@SUM(A1)", "-2+3"]
    data = table(extra={"note": [formulas[i % 4] for i in range(30)]})
    at = upload_page()
    at.file_uploader(key="table_upload").set_value(("formulas.csv", data, "text/csv")).run()
    helpers.conditions(at).set_value(["note"]).run()  # kept: released exactly
    at.slider(key="table_steps").set_value(100)
    at.button[0].click().run()  # the form's "Fit a model on this table"
    clean(at)
    at.button(key="table_privatize").click().run()
    clean(at)
    exported = download_bytes(downloads(at)[0], media).decode("utf-8")
    header, *rows = list(csv.reader(io.StringIO(exported)))
    assert rows and {row[header.index("note")] for row in rows} <= {"'" + f for f in formulas}
    assert all(not cell.startswith(("=", "+", "@", "-")) or _is_number(cell) for row in rows for cell in row)


def _is_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


# --------------------------------------------------------------------------- parameters

def image_ready() -> AppTest:
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value(("digit.png", helpers.png(3), "image/png")).run()
    return clean(at)


def release(at: AppTest) -> str:
    at.button(key="image_privatize").click().run()
    clean(at)
    assert not errors(at) and len(downloads(at)) == 1
    return guarantee(at)


BAD_NUMBERS = [0.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e300]


def test_epsilon_and_delta_offer_only_valid_values():
    at = image_ready()
    epsilons = [float(v) for v in at.select_slider(key="image_epsilon").options]
    assert all(math.isfinite(v) and v > 0 for v in epsilons) and len(epsilons) > 5
    at.selectbox(key="image_mechanism").set_value("gaussian").run()
    deltas = [float(v) for v in at.select_slider(key="image_delta").options]
    assert all(0 < v < 1 for v in deltas)


@pytest.mark.parametrize("widget, value", [("image_epsilon", v) for v in BAD_NUMBERS[:4]]
                         + [("image_delta", v) for v in (0.0, 1.0, 1.5, -1e-5, float("nan"))])
def test_forced_epsilon_or_delta_outside_the_options_never_reaches_the_mechanism(widget, value):
    at = image_ready()
    at.selectbox(key="image_mechanism").set_value("gaussian").run()
    try:
        at.select_slider(key=widget).set_value(value).run()
    except (ValueError, IndexError):
        pass  # the widget cannot even carry the value
    clean(at)
    text = release(at)
    assert "(epsilon, delta)-local differential privacy with epsilon = 10" in text
    assert "delta = 1e-05" in text, text


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("widget, policy, shown", [("image_temperature", "constant temperature", "L1 clip radius 2.47"),
                                                   ("image_radius", "fixed radius", "L1 clip radius 10")])
def test_typed_temperature_or_radius_out_of_range_keeps_a_valid_setting(widget, policy, shown, value):
    at = image_ready()
    at.radio(key="image_policy").set_value(policy).run()
    at.number_input(key=widget).set_value(value).run()
    clean(at)
    number = at.number_input(key=widget).value
    assert math.isfinite(number) and number > 0
    assert shown in release(at)


@pytest.mark.parametrize("repo", ["owner name/model", "owner/../model", "..", "https://huggingface.co/owner/model",
                                  "hf.co/owner/model", "/etc", "../../weights"])
def test_bad_hub_id_in_the_sidebar_is_a_plain_error_and_reads_no_server_path(repo, weights):
    at = page("model_card.py")
    at.sidebar.selectbox(key="model_choice").set_value("Hub repository…").run()
    at.sidebar.text_input(key="model_hub").input(repo).run()
    clean(at)
    shown = [e.value for e in at.sidebar.error]
    assert len(shown) == 1 and "is not a valid Hub repo id" in shown[0], shown
    at.sidebar.selectbox(key="model_choice").set_value(helpers.IMAGE_MODEL).run()
    clean(at)
    assert not errors(at) and any("A test model card." in m.value for m in at.markdown)


def test_local_folder_typed_as_hub_id_is_not_loaded(weights):
    at = page("image.py")
    at.sidebar.selectbox(key="model_choice").set_value("Hub repository…").run()
    at.sidebar.text_input(key="model_hub").input(str(weights / helpers.IMAGE_MODEL)).run()
    clean(at)
    assert [e.value for e in at.sidebar.error] and not any("From:" in c.value for c in at.sidebar.caption)
