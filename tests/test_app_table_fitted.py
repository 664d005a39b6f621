"""The table page with a model fitted on the upload: what it says before a press, and which model it names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)


def table_page() -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / "tabular.py"), default_timeout=90).run()


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def ledger(at: AppTest) -> list[str]:
    return [m.value for m in at.sidebar.markdown]


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.main.caption]


def test_rows_released_under_another_models_columns_are_warned_about_before_the_press(weights, tmp_path,
                                                                                        monkeypatch):
    """Released with a heart model (its columns), then with a model fitted on the upload (every column, the extra
    one too): the warning came only after the second press, which the ledger counted as the rows' second release."""
    from cadp.data import load_table
    from cadp.hub import save_model
    from cadp.models import TabularCINN
    from cadp.train import tabular_config

    shutil.copytree(weights / helpers.TABLE_MODEL, tmp_path / helpers.TABLE_MODEL)
    heart = load_table("heart").frame
    save_model(TabularCINN(tabular_config(heart, ["target", "sex"], name="tiny-heart", dataset="heart", blocks=1,
                                          width=8)), tmp_path / "tiny-heart", card="# tiny-heart\n")
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    rows = heart.head(60).copy()
    rows["site"] = ["ABC"[i % 3] for i in range(len(rows))]  # a column the heart model does not have
    at = table_page()
    at.sidebar.selectbox(key="model_choice").set_value("tiny-heart").run()
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("heart.csv", rows.to_csv(index=False).encode(), "text/csv")).run()
    assert any("fits the model tiny-heart" in s.value for s in clean(at).success)
    at.button(key="table_privatize").click().run()
    assert "**each row of heart.csv (60 rows)** — 1 release: ε = 2" in ledger(clean(at)), ledger(at)
    at.sidebar.selectbox(key="model_choice").set_value(helpers.TABLE_MODEL).run()  # a model the table does not fit
    helpers.conditions(clean(at)).set_value(["sex"]).run()
    at.slider(key="table_steps").set_value(100)
    at.button[0].click().run()  # the form's "Fit a model on this table"
    warned = [w.value for w in clean(at).warning if "here were released before in this session" in w.value]
    assert warned and warned[0].startswith("60 rows here were released before"), [w.value for w in at.warning]
    at.button(key="table_privatize").click().run()
    assert "**each row of heart.csv (60 rows)** — 2 releases: ε = 4" in ledger(clean(at)), ledger(at)


def test_a_model_fitted_here_is_not_said_to_have_an_evaluation():
    """The downstream check's captions spoke of "the model's evaluation" for a model fitted on the upload."""
    from cadp.compare import kept_target_words

    at = table_page()
    helpers.upload_and_fit(at)  # "group" kept
    at.button(key="table_privatize").click().run()
    assert at.selectbox(key="table_target").value == "group"
    shown = captions(clean(at))
    assert not [c for c in shown if "the model's evaluation" in c], shown
    assert kept_target_words("group") not in shown
    assert any(c.startswith("group is a kept condition") and "not measured for this model (the caption above says "
               "why)" in c for c in shown), shown
    assert any(c.startswith("Logistic regression, trained on") and "no evaluation was run for it" in c
               for c in shown), shown
    # said once, by the caption the kept condition's words point to, not again below it
    assert sum("no evaluation was run for it" in c for c in shown) == 1, shown


def test_the_page_names_the_model_fitted_on_the_upload_once_it_is_in_use():
    """After "Fit a model on this table" the page still said "Model: **tiny-table** (data: diabetes); choose another
    in the sidebar." while its releases were made with the model fitted on the upload."""
    at = table_page()
    assert f"Model: **{helpers.TABLE_MODEL}** (data: diabetes); choose another in the sidebar." in captions(clean(at))
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("people.csv", helpers.small_csv(), "text/csv")).run()
    # not fitted yet: no release can be made, and the sidebar's model is the one chosen
    assert f"Model: **{helpers.TABLE_MODEL}** (data: diabetes); choose another in the sidebar." in captions(clean(at))
    helpers.upload_and_fit(at)
    shown = captions(clean(at))
    assert not [c for c in shown if c.startswith(f"Model: **{helpers.TABLE_MODEL}**")], shown
    named = [c for c in shown if c.startswith("Model: fitted on this table")]
    assert len(named) == 1 and f"not **{helpers.TABLE_MODEL}**" in named[0], shown
    at.button(key="table_privatize").click().run()
    assert [c for c in captions(clean(at)) if c.startswith("Model: ")] == named


def test_a_table_model_is_said_to_have_an_evaluation_only_where_its_folder_holds_one(weights, tmp_path,
                                                                                      monkeypatch):
    """A model folder without a utility section in eval.json (a Hub model, one trained and not evaluated) was
    said to have "the model's evaluation" too."""
    from cadp import compare
    from cadp.hub import update_eval

    shutil.copytree(weights / helpers.TABLE_MODEL, tmp_path / helpers.TABLE_MODEL)
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    for evaluated in (False, True):
        if evaluated:
            update_eval(tmp_path / helpers.TABLE_MODEL, "utility", helpers.UTILITY)
        at = table_page()
        at.button(key="table_privatize").click().run()
        shown = captions(clean(at))
        said = [c for c in shown if c.startswith("Logistic regression, trained on")]
        assert len(said) == 1
        assert ("differs from the model's evaluation" in said[0]) == evaluated, said
        not_evaluated = compare.with_command(compare.NOT_EVALUATED, helpers.utility_command(helpers.TABLE_MODEL))
        assert (not_evaluated in said[0]) != evaluated and "FOLDER" not in said[0], said
        assert compare.kept_target_words("sex", None if evaluated else not_evaluated) in shown


def test_a_table_without_a_categorical_column_says_how_to_make_one_a_condition():
    """sklearn's diabetes table (scaled, as load_diabetes gives it by default) writes sex as -0.0446 and 0.0507:
    read as numbers, the condition list was empty and nothing said why (the Schema expander, folded, holds the
    fix)."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame.head(80).rename(columns={"sex": "gender"})
    at = table_page()  # (gender: a column no model here knows the kind of)
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("d.csv", frame.to_csv(index=False).encode(), "text/csv")).run()
    text = " ".join(info.value for info in clean(at).info)
    assert "No column of this table is categorical" in text and "gender has 10 or fewer distinct values" in text, text


def test_a_table_no_model_can_be_fitted_on_offers_no_fit_and_says_what_to_change():
    """chol written '1,640' (thousands separators): the model's schema keeps it numeric, so a fit here could only
    fail, yet the page offered one, and its error after the press said only "mark it categorical"."""
    from cadp.data import load_table

    frame = load_table("diabetes").frame.head(60).copy()
    frame["bmi"] = [f"{value * 1000:,.0f}" for value in frame["bmi"]]  # '1,640'-style text in every cell
    at = table_page()
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("thousands.csv", frame.to_csv(index=False).encode(),
                                                    "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("no model can be fitted on it here as it is" in e and "write its numbers plainly (no thousands "
               "separators" in e and "'bmi'" in e for e in errors), errors
    assert not any(b.label == "Fit a model on this table" for b in at.button)


def test_a_table_whose_rows_share_no_conditions_offers_no_fit():
    """Six rows, no two of one ward and shift: the page offered "Fit", every step ran, and only then the fit was refused (no two
    different rows share conditions, so the metric mechanism's distances cannot be measured)."""
    import pandas as pd

    frame = pd.DataFrame({"ward": list("ppqqrr"), "shift": ["day", "night"] * 3, "age": [31, 45, 52, 60, 38, 71],
                          "weight": [70.5, 82.0, 64.2, 90.1, 58.3, 77.7]})  # each (ward, shift) pair in one row
    at = table_page()
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("wards.csv", frame.to_csv(index=False).encode(),
                                                    "text/csv")).run()
    helpers.conditions(at).set_value(["ward", "shift"]).run()
    errors = [e.value for e in clean(at).error]
    assert any("no model can be fitted on it here as it is: no two of the 6 rows share condition values" in e
               for e in errors), errors
    assert not any(b.label == "Fit a model on this table" for b in at.button)
    helpers.conditions(at).set_value(["ward"]).run()  # two rows of each ward: fittable
    assert not clean(at).error and any(b.label == "Fit a model on this table" for b in at.button)
