"""Which model made a release: the archive CLI's terms and its note name it (a Hub id may fall back to the bundled
copy, which nothing said), and the table page names the step whose weights a fit kept."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from cadp import archive, hub, ui
from cadp.errors import ModelError
from tests.test_archive import image_file, make_folder


def test_a_runs_terms_name_the_model_and_its_weights_digest_and_its_note_the_origin(digit_model, tmp_path, capsys):
    source = make_folder(tmp_path / "in", {"0/a.png": image_file(1)})
    assert archive.main(["--model", str(digit_model), "--mechanism", "laplace", "--epsilon", "1", str(source),
                         str(tmp_path / "out")]) == 0
    digest = hashlib.sha256((digit_model / "model.safetensors").read_bytes()).hexdigest()
    terms = (tmp_path / "out" / "guarantee.txt").read_text()
    assert ("Made with a model from a local folder (not named here: its name may name a person, a place or a "
            f"private project); its weights' (model.safetensors) SHA-256 is {digest}.") in terms
    # neither the folder's path or name nor the model's (by default its folder's) leaves with the release
    assert str(digit_model) not in terms and "digits" not in terms and "model d" not in terms
    assert "note: model d, folder " in capsys.readouterr().err


def test_a_hub_id_that_fell_back_to_the_bundled_copy_says_so(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = hub.load_model("cadp/heart-cinn", cache_dir=str(tmp_path / "cache"))
    assert loaded.origin.startswith("bundled fallback")
    assert "from the copy bundled with CADP (weights/heart-cinn), the Hub not being reached" in loaded.terms_line()
    assert "from the models bundled with CADP (weights/heart-cinn)" in hub.load_model("heart-cinn").terms_line()


def test_a_bundled_folder_typed_outside_the_repository_says_how_to_load_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as refused:
        hub.load_model("weights/heart-cinn", cache_dir=str(tmp_path / "cache"))
    assert (f"there is no local folder weights/heart-cinn here ({tmp_path}): the bundled model heart-cinn "
            "loads by its name alone (heart-cinn) from any folder") in str(refused.value)


def test_the_table_page_names_the_step_whose_weights_a_fit_kept():
    config = SimpleNamespace(condition_columns=["sex"], name="fitted")
    fitted = SimpleNamespace(config=config, fit_record={"steps": 50, "steps_run": 1500})
    assert "the weights of step 50 of 1,500 training steps, conditions: sex" in ui.model_line(None, fitted)
    fitted.fit_record = {"steps": 300, "steps_run": 300}
    assert "(300 training steps, conditions: sex)" in ui.model_line(None, fitted)
