"""eval.json's sections record the weights they measured: a folder whose model.safetensors was replaced (a Hub
repo's new push, a copied file) kept showing the old network's curves, bits/dim and audit as its own."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from streamlit.testing.v1 import AppTest

from cadp import compare, hub
from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def replace_weights(folder: Path) -> None:
    """Other weights of the same network (what a new training run of the same config gives)."""
    path = folder / hub.WEIGHTS_NAME
    state = load_file(path)
    name = next(key for key, tensor in state.items() if tensor.is_floating_point() and tensor.numel() > 1)
    state[name] = state[name] + 0.01
    path.unlink()
    save_file(state, path)


@pytest.fixture
def evaluated_then_replaced(tiny_weights, tmp_path) -> Path:
    """A weights folder holding the tiny table model with a utility section, then other weights."""
    shutil.copytree(tiny_weights / helpers.TABLE_MODEL, tmp_path / helpers.TABLE_MODEL)
    folder = tmp_path / helpers.TABLE_MODEL
    hub.update_eval(folder, "utility", helpers.UTILITY)
    hub.update_eval(folder, "bpd", {"test_bits_per_dim": 1.5})
    replace_weights(folder)
    return tmp_path


def test_a_section_written_records_the_sha256_of_the_weights_it_measured(tiny_weights, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_weights / helpers.TABLE_MODEL, folder)
    hub.update_eval(folder, "bpd", {"test_bits_per_dim": 1.5})
    written = json.loads((folder / "eval.json").read_text())["bpd"]
    assert written == {"test_bits_per_dim": 1.5, "weights_sha256": sha256(folder / "model.safetensors")}
    assert hub.current_eval(folder) == ({"bpd": written}, [])


def test_sections_of_replaced_weights_are_told_apart_and_left_out(evaluated_then_replaced):
    folder = evaluated_then_replaced / helpers.TABLE_MODEL
    evaluation, other = hub.current_eval(folder)
    assert other == ["bpd", "utility"] and "utility" not in evaluation and "bpd" not in evaluation
    hub.update_eval(folder, "bpd", {"test_bits_per_dim": 1.7})  # measured again: these weights' again
    evaluation, other = hub.current_eval(folder)
    assert other == ["utility"] and evaluation["bpd"]["test_bits_per_dim"] == 1.7


def test_a_section_that_records_no_weights_is_read_as_before(tiny_weights, tmp_path):
    """eval.json written before the record, or by anyone else: nothing tells which weights it measured."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_weights / helpers.TABLE_MODEL, folder)
    hub.write_eval(folder, {"bpd": {"test_bits_per_dim": 1.5}})
    replace_weights(folder)
    assert hub.current_eval(folder) == ({"bpd": {"test_bits_per_dim": 1.5}}, [])


def test_every_section_of_the_bundled_evaluations_records_the_bundled_weights():
    for name in hub.model_folders():
        folder = hub.BUNDLED_DIR / name
        evaluation = json.loads((folder / "eval.json").read_text())
        digest = sha256(folder / "model.safetensors")
        assert evaluation and {section.get("weights_sha256") for section in evaluation.values()} == {digest}, name


def page_warnings(view: str, weights: Path, monkeypatch) -> tuple[AppTest, list[str]]:
    """A page of the app over ``weights``, and its warnings."""
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(weights))
    at = AppTest.from_file(str(ROOT / "views" / view), default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    return at, [w.value for w in at.warning]


def test_the_utility_page_draws_no_curves_of_replaced_weights_and_says_why(evaluated_then_replaced, monkeypatch):
    at, warnings = page_warnings("utility.py", evaluated_then_replaced, monkeypatch)
    assert any("'utility' measured on other weights than its model.safetensors" in w for w in warnings), warnings
    assert not any("has no utility section" in w for w in warnings), warnings
    assert not at.get("plotly_chart")


def test_the_utility_page_says_once_that_both_its_sections_are_of_replaced_weights(evaluated_then_replaced,
                                                                                    monkeypatch):
    """A warning per section said the same thing twice, each naming one command."""
    folder = evaluated_then_replaced / helpers.TABLE_MODEL
    evaluation = json.loads((folder / "eval.json").read_text())
    hub.write_eval(folder, {**evaluation, "central": {**helpers.CENTRAL, "weights_sha256": "0" * 64}})
    at, warnings = page_warnings("utility.py", evaluated_then_replaced, monkeypatch)
    stale = [w for w in warnings if "measured on other weights" in w]
    assert len(stale) == 1 and "'utility', 'central'" in stale[0], warnings
    assert "cadp.evaluate utility --model" in stale[0] and "(and likewise `dpsgd`)" in stale[0], stale
    assert not any("No central DP baseline" in c.value for c in at.caption)
    assert not at.get("plotly_chart")


def test_the_table_page_does_not_point_to_an_evaluation_of_replaced_weights(evaluated_then_replaced, monkeypatch):
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(evaluated_then_replaced))
    at = AppTest.from_file(str(ROOT / "views" / "tabular.py"), default_timeout=90).run()
    at.button(key="table_privatize").click().run()
    assert not at.exception, [e.value for e in at.exception]
    said = [c.value for c in at.main.caption if c.value.startswith("Logistic regression, trained on")]
    assert len(said) == 1 and "FOLDER" not in said[0], said
    assert compare.with_command(compare.EVALUATED_OTHER_WEIGHTS, helpers.utility_command(helpers.TABLE_MODEL)) \
        in said[0], said
    assert "differs from the model's evaluation" not in said[0]
    previews = [c.value for c in at.main.caption if c.value.startswith("This model's releases were not evaluated")]
    assert previews and "measured on other weights" in previews[0], previews


def test_the_model_card_page_says_which_sections_are_of_other_weights(evaluated_then_replaced, monkeypatch):
    _, warnings = page_warnings("model_card.py", evaluated_then_replaced, monkeypatch)
    assert any("sections 'bpd', 'utility' measured on other weights" in w for w in warnings), warnings


def test_the_report_leaves_out_sections_of_replaced_weights(evaluated_then_replaced):
    folder = evaluated_then_replaced / helpers.TABLE_MODEL
    utility = json.loads((hub.BUNDLED_DIR / "heart-cinn" / "eval.json").read_text())["utility"]

    def report() -> str:
        done = subprocess.run([sys.executable, "-m", "cadp.evaluate", "report", "--model", str(folder)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        return (folder / "report.html").read_text()

    hub.update_eval(folder, "utility", utility)  # a section cadp.evaluate wrote, for these weights: drawn
    html = report()
    assert "measured on other weights" in html and '"name":"laplace' in html.replace(" ", "")
    replace_weights(folder)
    html = report()
    assert "sections &#x27;bpd&#x27;, &#x27;utility&#x27; measured on other weights" in html
    assert '"name":"laplace' not in html.replace(" ", "")


def test_only_a_well_formed_digest_is_a_record_of_other_weights(tiny_weights, tmp_path):
    """An uppercase digest (the same weights) hid every section as another network's; a prefix, a 'sha256:' form
    or an empty text did too. Only 64 hexadecimal digits are a record, compared whatever their case."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_weights / helpers.TABLE_MODEL, folder)
    digest = sha256(folder / "model.safetensors")
    for recorded, hidden in ((digest.upper(), False), (digest[:12], False), (f"sha256:{digest}", False), ("", False),
                             (123, False), ("0" * 64, True)):
        hub.write_eval(folder, {"bpd": {"test_bits_per_dim": 1.5, "weights_sha256": recorded}})
        assert hub.current_eval(folder)[1] == (["bpd"] if hidden else []), recorded


def test_the_training_section_of_other_weights_is_named_as_cadp_trains_it(tiny_weights, tmp_path):
    words = hub.other_weights_words(["bpd", "training"], "python -m cadp.evaluate bpd --model m")
    assert "section 'bpd' measured on other weights" in words
    assert "Its 'training' section" in words and "only `python -m cadp.train` writes it" in words
    assert "'training' measured" not in words


def test_the_sections_of_other_weights_are_counted_in_the_singular_and_the_plural():
    """It said "holds section(s) 'bpd' measured ... after they were measured, so they are not shown" of one."""
    one = hub.other_weights_words(["bpd"], "python -m cadp.evaluate bpd --model m")
    assert ("holds section 'bpd' measured on other weights than its model.safetensors (the weights were replaced "
            "after it was measured), so it is not shown: its numbers are another network's.") in one
    two = hub.other_weights_words(["bpd", "utility"], "python -m cadp.evaluate bpd --model m")
    assert ("holds sections 'bpd', 'utility' measured on other weights than its model.safetensors (the weights were "
            "replaced after they were measured), so they are not shown: their numbers are another network's.") in two
    assert "(s)" not in one + two


def test_the_model_card_pages_warning_closes_its_code_and_brackets(evaluated_then_replaced, monkeypatch):
    """It named `bpd` and "likewise utility, audit, dpsgd" whatever was stale, with an unclosed code span, and said
    the card "may" quote the stale results while it showed cadp.evaluate's blocks of them."""
    folder = evaluated_then_replaced / helpers.TABLE_MODEL
    hub.update_card_section(folder, "reid", "| re-identification | 98.1% (the other network's) |")
    hub.update_card_section(folder, "bpd", "round trip of the other network: 0.999")
    at, warnings = page_warnings("model_card.py", evaluated_then_replaced, monkeypatch)
    warning = next(w for w in warnings if "measured on other weights" in w)
    assert warning.count("`") % 2 == 0 and warning.count("(") == warning.count(")"), warning
    assert "`python -m cadp.evaluate bpd --model " in warning and "(and likewise `utility`)." in warning
    assert "Their results in the model card below are left out" in warning
    shown = "\n".join(m.value for m in at.markdown)
    assert "98.1%" not in shown and "0.999" not in shown
    assert "cadp.evaluate's utility results are left out here" in shown
    hub.update_eval(folder, "bpd", {"test_bits_per_dim": 1.5})  # bpd measured again: only utility is stale
    _, warnings = page_warnings("model_card.py", evaluated_then_replaced, monkeypatch)
    warning = next(w for w in warnings if "measured on other weights" in w)
    assert "`python -m cadp.evaluate utility --model " in warning and "likewise" not in warning


def test_the_report_command_says_which_sections_it_leaves_out(evaluated_then_replaced):
    folder = evaluated_then_replaced / helpers.TABLE_MODEL
    done = subprocess.run([sys.executable, "-m", "cadp.evaluate", "report", "--model", str(folder)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "note: eval.json's sections bpd, utility were measured on other weights" \
        in done.stderr, done.stderr
