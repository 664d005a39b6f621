"""The ledger counts a record's releases through any model (a ledger auditor's review): the same rows released from
two files through two models (other columns, other keys) were two records, each charged once; metric's per-unit
epsilon of two models' latent spaces was summed into one number; a table released again under another name lost
its first name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / name), default_timeout=120).run()


def ledger(at: AppTest) -> list[str]:
    return [m.value for m in at.sidebar.markdown if m.value.startswith("**")]


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(params=["tiny-image-c", helpers.IMAGE_MODEL])
def two_image_models(request, tiny_weights, tmp_path, monkeypatch) -> Path:
    """The tiny weights, and a copy of the image model in the folder tiny-image-c with other weights, under
    another name or the same one (two networks may share a name: a Hub repo at two commits)."""
    import torch
    from safetensors.torch import load_file, save_file

    from cadp import hub

    shutil.copytree(tiny_weights, tmp_path, dirs_exist_ok=True)
    other = tmp_path / "tiny-image-c"
    shutil.copytree(tmp_path / helpers.IMAGE_MODEL, other)
    config = (other / hub.CONFIG_NAME).read_text().replace(f'"name": "{helpers.IMAGE_MODEL}"',
                                                            f'"name": "{request.param}"')
    (other / hub.CONFIG_NAME).write_text(config)
    state = load_file(other / hub.WEIGHTS_NAME)
    name = next(key for key, tensor in state.items() if tensor.is_floating_point() and tensor.dim() > 1)
    state[name] = state[name] + 0.05 * torch.randn_like(state[name])
    (other / hub.WEIGHTS_NAME).unlink()
    save_file(state, other / hub.WEIGHTS_NAME)
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    return tmp_path


def test_rows_released_from_two_files_through_two_models_add_up(weights):
    from cadp.data import load_table
    from cadp.train import split_table

    _, held = split_table(load_table("diabetes").frame, 0)
    rows = held.head(30).copy()
    rows["site"] = ["north" if i % 2 else "south" for i in range(len(rows))]  # a column the bundled model leaves out
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("t1.csv", rows.to_csv(index=False).encode(), "text/csv")).run()
    clean(at).button(key="table_privatize").click().run()
    assert ledger(clean(at)) == ["**each row of t1.csv (30 rows)** — 1 release: ε = 2"]
    # the same rows saved with other line ends, released through a model fitted here (all columns: other keys)
    again = rows.to_csv(index=False, lineterminator="\r\n").encode()
    at.file_uploader(key="table_upload").set_value(("t2.csv", again, "text/csv")).run()
    helpers.conditions(at).set_value([]).run()
    at.slider(key="table_steps").set_value(100)
    next(b for b in at.button if b.label == "Fit a model on this table").click().run()
    assert any("30 rows here were released before" in w.value for w in clean(at).warning)
    at.button(key="table_privatize").click().run()
    assert ledger(clean(at)) == ["**each row of t1.csv (30 rows)** — 2 releases: ε = 4",
                                 "**each row of t2.csv (30 rows)** — 2 releases: ε = 4"]


def test_a_table_released_again_under_another_name_keeps_both_names(weights):
    text = helpers.small_csv()
    at = page("tabular.py")
    helpers.upload_and_fit(at, text, name="ward3_patients.csv")
    at.button(key="table_privatize").click().run()
    at.file_uploader(key="table_upload").set_value(("export.csv", text, "text/csv")).run()
    at.button(key="table_privatize").click().run()
    assert any(line.startswith("**each row of ward3\\_patients.csv (also as export.csv) (60 rows)** — 2 releases")
               for line in ledger(clean(at))), ledger(at)


def test_metric_units_of_two_models_latent_spaces_are_not_summed(two_image_models):
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([("a.png", helpers.png(1), "image/png")]).run()
    for model in (helpers.IMAGE_MODEL, "tiny-image-c"):
        at.sidebar.selectbox(key="model_choice").set_value(model).run()
        at.selectbox(key="image_mechanism").set_value("metric").run()
        at.select_slider(key="image_epsilon").set_value(1).run()
        clean(at).button(key="image_privatize").click().run()
    (line,) = ledger(clean(at))
    line = line.replace("\\", "")  # (the names are written as Markdown literals)
    assert line.startswith("**a.png** — 2 releases: 1 per unit in the latent space of tiny-image (folder "), line
    assert "/tiny-image) + 1 per unit in the latent space of " in line and "/tiny-image-c)" in line, line
    assert line.endswith("(ε·d; 2 models' latent distances differ, so these do not add into one number)"), line


def test_metric_units_of_two_fits_on_the_page_are_not_summed(weights):
    """Every model fitted on the page has the same name: two fits (two networks, the same columns, so the same row
    keys) shared one slot, and their per-unit epsilons were summed again."""
    at = page("tabular.py")
    helpers.upload_and_fit(at, steps=100)
    for steps in (100, 200):
        at.slider(key="table_steps").set_value(steps)
        next(b for b in at.button if b.label == "Fit a model on this table").click().run()
        at.selectbox(key="table_mechanism").set_value("metric").run()
        at.select_slider(key="table_epsilon").set_value(1).run()
        clean(at).button(key="table_privatize").click().run()
    (line,) = ledger(clean(at))
    assert ("1 per unit in the latent space of the model fitted here, fit 1 + 1 per unit in the latent space of the "
            "model fitted here, fit 2") in line, line


def test_a_tables_names_are_kept_as_names_whatever_they_hold(weights):
    """Names were kept in one string and split on ', ': 'ward 3, 2024.csv' counted as two and came back twice."""
    text = helpers.small_csv()
    at = page("tabular.py")
    helpers.upload_and_fit(at, text, name="a.csv")
    for name in ("a.csv", "ward 3, 2024.csv", "ward 3, 2024.csv", "b.csv"):
        at.file_uploader(key="table_upload").set_value((name, text, "text/csv")).run()
        clean(at).button(key="table_privatize").click().run()
    (line,) = ledger(clean(at))
    assert line.startswith("**each row of a.csv (also as ward 3, 2024.csv, b.csv) (60 rows)** — 4 releases"), line


def test_the_ledgers_lines_are_made_again_only_after_a_release(weights, monkeypatch):
    """Every page's rerun made them again: a session's tables of 100,000 rows took seconds each time."""
    from cadp import ui

    made = []
    real = ui._ledger_lines
    monkeypatch.setattr(ui, "_ledger_lines", lambda: made.append(1) or real())
    at = page("tabular.py")
    clean(at).button(key="table_privatize").click().run()
    before = len(made)
    at.select_slider(key="table_epsilon").set_value(5).run()  # a rerun without a release
    assert len(made) == before and ledger(clean(at))


def test_an_error_before_any_release_does_not_say_records_were_released(weights, monkeypatch):
    """The page's cost text added its sums to the session's count of charged releases on every run: an error after
    it said "Records were released before the error, and they are counted in the ledger" when none was."""
    from cadp import ui

    at = page("tabular.py")

    def broken(*args, **kwargs):
        raise RuntimeError("broken")

    monkeypatch.setattr(ui, "table_row_keys", broken)  # called after the page's cost text, before any press
    at.run()
    shown = [e.value for e in at.error]
    assert any("Something went wrong (RuntimeError)" in text for text in shown), shown
    assert not any("Records were released before the error" in text for text in shown), shown
