"""config.json's latent distances record the weights they were measured with: a folder whose model.safetensors was
replaced kept quoting the old network's d_typ, d_nn and median latent norm (the metric mechanism's ε between
records, in the app and in every release's terms; where laplace leaves a typical latent whole) as its own."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cadp import hub, ui
from cadp.errors import ModelError
from cadp.evaluate import report_notes
from cadp.mechanisms import make_mechanism
from cadp.models import DISTANCES_OF_OTHER_WEIGHTS
from cadp.privatize import release_guarantee
from tests import app_helpers as helpers
from tests.test_eval_weights import replace_weights

ROOT = Path(__file__).resolve().parent.parent


def recorded(folder: Path) -> str | None:
    return json.loads((folder / hub.CONFIG_NAME).read_text())["latent_distances"].get(hub.WEIGHTS_KEY)


@pytest.fixture
def table_folder(tiny_weights, tmp_path) -> Path:
    folder = tmp_path / helpers.TABLE_MODEL
    shutil.copytree(tiny_weights / helpers.TABLE_MODEL, folder)
    return folder


def test_a_saved_config_records_the_weights_its_distances_were_measured_with(table_folder):
    assert recorded(table_folder) == hashlib.sha256((table_folder / hub.WEIGHTS_NAME).read_bytes()).hexdigest()
    loaded = hub.load_folder(table_folder)
    assert loaded.config.latent_distances.d_typ == 8.0
    assert not getattr(loaded.config, "distances_of_other_weights", False)


def test_distances_of_replaced_weights_are_not_used_and_the_reason_is_said(table_folder):
    replace_weights(table_folder)
    loaded = hub.load_folder(table_folder)
    assert loaded.config.latent_distances is None and loaded.config.distances_of_other_weights
    words = ui.metric_meaning(loaded.config, 1.0)
    assert "measured with other weights than its model.safetensors" in words and "d_typ" not in words, words
    assert ui.whole_latent_epsilon(loaded.config, 0.7) is None  # the old median norm is not quoted either
    terms = release_guarantee(loaded.model, make_mechanism("metric", 1.0), seed=0)
    assert "distance 8" not in terms and "Between" not in terms, terms
    # the terms say why, as the pages do (they said "This model has no measured latent distances")
    assert "This model's weights have no measured latent distances (its config.json's latent distances were " \
           "measured with other weights" in terms, terms
    # the same folder with its own weights again states them
    fresh = hub.load_folder(hub.save_model(loaded.model, table_folder.parent / "again"))
    assert fresh.config.latent_distances is None  # nothing measured for the new weights: none are claimed


def test_distances_that_record_no_weights_are_read_as_before(table_folder):
    """A config written before the record, or by anyone else: nothing tells which weights they describe."""
    config = json.loads((table_folder / hub.CONFIG_NAME).read_text())
    del config["latent_distances"][hub.WEIGHTS_KEY]
    (table_folder / hub.CONFIG_NAME).write_text(json.dumps(config))
    replace_weights(table_folder)
    assert hub.load_folder(table_folder).config.latent_distances.d_typ == 8.0


def test_a_recorded_digest_must_be_a_sha256(table_folder):
    config = json.loads((table_folder / hub.CONFIG_NAME).read_text())
    config["latent_distances"][hub.WEIGHTS_KEY] = "not a digest"
    (table_folder / hub.CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ModelError, match="weights_sha256"):
        hub.load_folder(table_folder)


def test_the_report_does_not_quote_distances_of_replaced_weights(table_folder):
    results = {"utility": {**helpers.UTILITY, "methods": {**helpers.UTILITY["methods"],
                                                          "metric": helpers.UTILITY["methods"]["laplace"]}}}
    assert any("d_typ = 8" in note for note in report_notes(table_folder, results, []))
    replace_weights(table_folder)
    assert not any("d_typ" in note for note in report_notes(table_folder, results, []))


def test_the_model_card_page_says_the_distances_are_left_out(table_folder, monkeypatch):
    replace_weights(table_folder)
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(table_folder.parent))
    at = AppTest.from_file(str(ROOT / "views" / "model_card.py"), default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(DISTANCES_OF_OTHER_WEIGHTS in w.value for w in at.warning), [w.value for w in at.warning]


def test_every_bundled_config_records_the_bundled_weights():
    for name in hub.model_folders():
        folder = hub.BUNDLED_DIR / name
        assert recorded(folder) == hashlib.sha256((folder / hub.WEIGHTS_NAME).read_bytes()).hexdigest(), name
        assert hub.load_folder(folder).config.latent_distances is not None, name


def test_a_changed_model_saved_again_does_not_stamp_the_distances_of_its_old_weights(table_folder, tmp_path):
    """save_model stamped whatever distances the config held with the new file's digest: a loaded model changed in
    memory (fine-tuned) and saved kept its old network's d_typ, d_nn and norm as its own."""
    import torch

    loaded = hub.load_folder(table_folder)
    unchanged = hub.load_folder(hub.save_model(loaded.model, tmp_path / "same"))
    assert unchanged.config.latent_distances is not None and recorded(tmp_path / "same") == recorded(table_folder)
    with torch.no_grad():
        next(loaded.model.parameters()).add_(0.01)
    changed = hub.save_model(loaded.model, tmp_path / "changed")
    assert json.loads((changed / hub.CONFIG_NAME).read_text())["latent_distances"] is None
    assert hub.load_folder(changed).config.latent_distances is None
