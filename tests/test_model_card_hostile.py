"""The Model card page against hostile model folders (a Hub repo is anyone's): bounded sampling work, no remote
image from a card, a config or an eval.json, and eval.json values of any type shown without a crash."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cadp import ui
from cadp.hub import save_model
from cadp.models import ImageCINN, ImageModelConfig
from tests import app_helpers as helpers
from tests.conftest import weights_dir

PAGE = str(Path(__file__).resolve().parent.parent / "views" / "model_card.py")
TIMEOUT = 90
EVIL = "![m](https://evil.example/pixel.png)"


@pytest.fixture(autouse=True)
def fresh_models():
    yield
    ui.clear_loaded_models()  # the tmp folders' models: not kept for the tests that follow


def card_page(folder: Path) -> AppTest:
    """The Model card page with ``folder``'s parent as the weights folder (``folder`` its only model)."""
    with weights_dir(folder.parent):
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def image_model(folder: Path, class_names: list[str], channels: int = 1, card: str = "# card\n") -> Path:
    config = ImageModelConfig(name=folder.name, dataset="my-photos", class_names=class_names, conv_width=4,
                              conv_blocks=[1, 1], fc_blocks=1, fc_width=16, image_size=16, channels=channels)
    return save_model(ImageCINN(config), folder, card=card)


def image_openers(markdown: str) -> list[str]:
    """Where ``markdown`` can start an image: a ``![`` whose ``!`` is not escaped by a backslash."""
    return re.findall(r"(?<!\\)(?:\\\\)*!\[[^\n]{0,40}", markdown)


def test_a_model_of_a_thousand_classes_draws_ten_classes_a_few_images_a_call(tmp_path, monkeypatch):
    """Every class times "Samples per class" was drawn in one call: 6,000 images for a config of 1,000 classes
    (hours and tens of GiB for a large network, from one visit)."""
    calls: list[list[int]] = []
    sample = ImageCINN.sample

    def counted(self, labels, *args, **kwargs):
        indices = [int(label) for label in getattr(labels, "values", labels)]
        calls.append(indices)
        if len(indices) > 10:
            raise RuntimeError(f"one call drew {len(indices)} images")
        return sample(self, labels, *args, **kwargs)

    monkeypatch.setattr(ImageCINN, "sample", counted)
    image_model(tmp_path / "thousand", [f"class {i}" for i in range(1000)])
    with weights_dir(tmp_path):
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        picker = at.multiselect[0]
        assert "1,000" in picker.label and picker.value == list(range(10))
        assert sorted({index for call in calls for index in call}) == list(range(10))
        assert sum(map(len, calls)) == 10 * 6 and max(map(len, calls)) <= 4
        calls.clear()
        picker.set_value([*range(9), 999]).run()  # another class: only its row is drawn
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert [index for call in calls for index in call] == [999] * 6 and max(map(len, calls)) <= 4
    caption = at.get("image")[0].proto.imgs[0].caption
    assert "class 8, class 999" in caption and "class 9," not in caption


def test_a_colour_model_s_samples_are_shown_in_colour(tmp_path, media):
    """Only the first channel of each sample was shown, as a grey image."""
    card_page(image_model(tmp_path / "colour", ["cat", "dog"], channels=3))
    [picture] = [Image.open(io.BytesIO(data)) for data in media.values()]
    pixels = np.asarray(picture)
    assert picture.mode == "RGB" and pixels.shape == (2 * 16 * 2, 6 * 16 * 2, 3)
    assert np.abs(pixels[..., 0].astype(int) - pixels[..., 1]).mean() > 5  # not one grey channel three times


def test_no_text_of_a_model_folder_can_put_an_image_on_the_card_page(tmp_path):
    """The card's image filter missed reference-style images and alt text with brackets, and the samples' caption
    (Markdown) listed the config's class names as written: every visitor's browser fetched a third party's image."""
    card = ("# Totally safe\n\nSee ![x][r] and ![a [b] c](https://evil.example/nested.png), "
            "and the [docs](https://example.org/docs).\n\n[r]: https://evil.example/ref.png\n\n"
            "![tracker](https://evil.example/pixel.png)\n")
    at = card_page(image_model(tmp_path / "boastful", ["zero", EVIL], card=card))
    shown = "\n".join(m.value for m in at.markdown)
    assert "Totally safe" in shown and "[docs](https://example.org/docs)" in shown  # text and links stay
    assert "a [b] c" in shown and "[image not shown: tracker]" in shown
    caption = at.get("image")[0].proto.imgs[0].caption
    assert "zero" in caption and "evil.example/pixel.png" in caption
    for text in [shown, caption, *(metric.label for metric in at.metric)]:
        assert not image_openers(text), image_openers(text)


def table_model(tiny_weights: Path, folder: Path, evaluation: dict) -> Path:
    """A copy of the tiny table model with ``evaluation`` as its eval.json."""
    shutil.copytree(tiny_weights / helpers.TABLE_MODEL, folder)
    (folder / "eval.json").write_text(json.dumps(evaluation))
    return folder


def test_a_table_models_metric_name_from_eval_json_is_shown_as_written(tmp_path, tiny_weights):
    """test_metric_name was an st.metric label as written: labels render Markdown, images included."""
    at = card_page(table_model(tiny_weights, tmp_path / "named", {"training": {"test_metric_name": EVIL + " certified",
                                                                 "test_metric": 0.5}}))
    [metric] = [metric for metric in at.metric if "certified" in metric.label]
    assert not image_openers(metric.label) and metric.value == "0.500"


@pytest.mark.parametrize("kind, evaluation", [
    ("table", {"training": {"test_metric_name": "test NLL", "test_metric": "1.0"}}),
    ("table", {"training": {"test_metric": None}}),
    ("table", {"training": {"test_metric": {"mean": 1.0}}}),
    ("table", {"training": ["not", "a", "section"]}),
    ("image", {"training": ["not", "a", "section"]}),
    ("image", {"bpd": {"test": "1.0"}, "training": ["x"]}),
])
def test_eval_json_values_of_the_wrong_type_are_not_available_not_a_crash(tmp_path, tiny_weights, kind, evaluation):
    """A string, null or list where eval.json holds a number or a section: "Something went wrong (ValueError)"."""
    if kind == "table":
        folder = table_model(tiny_weights, tmp_path / "odd", evaluation)
    else:
        folder = image_model(tmp_path / "odd", ["zero", "one"])
        (folder / "eval.json").write_text(json.dumps(evaluation))
    at = card_page(folder)  # no error on the page
    assert at.metric[2].value in ("not available", "not measured")
    assert at.get("json")  # the rest of the page is drawn


@pytest.mark.parametrize("text", ['{"bpd": {"test_bits_per_dim": NaN}}', '{"bpd": ' + "9" * 5000 + "}"])
def test_an_eval_json_that_cannot_be_read_leaves_the_rest_of_the_card_page(tmp_path, text):
    """A NaN (Python's json.dumps writes one) or a 5,000-digit number replaced the whole page with one error."""
    folder = image_model(tmp_path / "odd", ["zero", "one"], card="# odd\n\nThe publisher's text.\n")
    (folder / "eval.json").write_text(text)
    at = card_page(folder)  # no error, no exception
    warned = [w.value for w in at.warning if "eval.json cannot be read, so none of it is shown" in w.value]
    assert warned and "sys.set_int_max_str_digits" not in warned[0]
    assert any("The publisher's text." in m.value for m in at.markdown)
    assert at.metric[2].value == "not measured"


def test_the_classes_chosen_for_samples_outlive_a_page_change(weights):
    """The picker had no kept key: a page change reset a 1,000-class model's chosen classes to the first 10."""
    at = AppTest.from_file(str(Path(PAGE).parent.parent / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/model_card.py").run()
    picker = next(box for box in at.multiselect if box.label.startswith("Classes shown"))
    picker.set_value([3, 7]).run()
    at.switch_page("views/home.py").run()
    at.switch_page("views/model_card.py").run()
    assert not at.exception
    assert next(box for box in at.multiselect if box.label.startswith("Classes shown")).value == [3, 7]
