"""A model whose class names are numbers not at their own index (class folders 1, 2, 10 give "1", "10", "2"):
integer labels are refused as ambiguous in the API, so every caller that holds indices says so (ClassIndices)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cadp import archive
from cadp.hub import save_model
from cadp.models import ImageCINN, ImageModelConfig, SmallCNN
from cadp.train import sample_recognition
from tests import app_helpers as helpers
from tests.test_archive import image_file, make_folder, read_manifest

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["1", "10", "2"]


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = ImageModelConfig(name="numbered", dataset="folder", class_names=NAMES, conv_width=4, conv_blocks=[1, 1],
                              fc_blocks=1, fc_width=8)
    folder = tmp_path_factory.mktemp("weights")
    save_model(ImageCINN(config), folder / "numbered", card="# numbered\n")
    return folder


def test_the_archive_cli_releases_each_class_folder_as_its_own_class(numbered, tmp_path):
    source = make_folder(tmp_path / "in", {f"{name}/a.png": image_file(index) for index, name in enumerate(NAMES)})
    assert archive.main(["--model", str(numbered / "numbered"), "--mechanism", "laplace", "--epsilon", "1",
                         str(source), str(tmp_path / "out")]) == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert {name: (row["status"], row["released_condition"]) for name, row in rows.items()} == \
        {f"{name}/a.png": ("privatized", name) for name in NAMES}


def test_the_image_page_releases_the_chosen_class_and_the_model_card_draws_samples(numbered, monkeypatch):
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(numbered))
    at = AppTest.from_file(str(ROOT / "views" / "image.py"), default_timeout=90).run()
    at.file_uploader(key="image_upload").set_value(("x.png", helpers.png(), "image/png")).run()
    box = next(box for box in at.selectbox if box.key and box.key.startswith("image_label_"))
    box.set_value("10").run()
    at.button(key="image_privatize").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert int(at.session_state["image_result"]["result"].released_condition["label"][0]) == NAMES.index("10")
    at = AppTest.from_file(str(ROOT / "views" / "model_card.py"), default_timeout=90).run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]


def test_training_s_sample_check_runs(numbered):
    from cadp.hub import load_folder

    model = load_folder(numbered / "numbered").model
    share = sample_recognition(model, SmallCNN(len(NAMES)), len(NAMES), per_class=2)
    assert 0.0 <= share <= 1.0


def test_a_labels_csv_number_that_names_no_class_is_refused_not_read_as_an_index(numbered, tmp_path):
    """Cells 0, 1, 2 were read as index 0 (the class "1"), the name "1" and the name "2": two cells, one class."""
    source = make_folder(tmp_path / "in", {f"img{index}.png": image_file(index) for index in range(3)})
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nimg0.png,0\nimg1.png,1\nimg2.png,2\n")
    assert archive.main(["--model", str(numbered / "numbered"), "--mechanism", "laplace", "--epsilon", "1",
                         "--labels", str(labels), str(source), str(tmp_path / "out")]) == 0
    rows = {row["file"]: row for row in read_manifest(tmp_path / "out")}
    assert rows["img0.png"]["status"] == "error" and "'0' is not a class name" in rows["img0.png"]["error"]
    assert "a number is read as a name, never as an index" in rows["img0.png"]["error"]
    assert (rows["img1.png"]["released_condition"], rows["img2.png"]["released_condition"]) == ("1", "2")


@pytest.mark.parametrize("names, cell", [
    (["1", "10", "2"], "1.0"),  # punctuation dropped made it "10"
    (["1", "10", "2"], "1_0"),
    ([f"class {n}" for n in range(1, 11)], "1"),  # read as the index of "class 2"
    (["1.0", "2.0"], "1"),
    (["+1", "-1"], "0"),  # the index of "+1"; in a 0/1 convention 0 means -1
])
def test_a_labels_cell_that_is_no_class_name_exactly_is_refused_for_models_with_numbers_in_their_names(names, cell):
    resolver = archive.LabelResolver(names)
    try:
        index = resolver.class_index(cell)
    except archive.InputError:
        return
    assert index is None, (cell, names[index])


def test_a_digit_that_is_no_decimal_number_is_no_class_rather_than_a_traceback():
    """'²'.isdigit() is true and int('²') raised: a traceback, and OUTPUT left holding an unfinished run."""
    assert archive.LabelResolver(["cat", "dog"]).class_index("²") is None


def test_mnist_style_names_still_take_numbers_and_other_names_their_indices():
    assert archive.LabelResolver([str(n) for n in range(10)]).class_index("03") == 3
    assert archive.LabelResolver(["cat", "dog"]).class_index("1") == 1
    assert archive.LabelResolver(["T-shirt/top", "Trouser"]).folder_class_index("t_shirt_top") == 0
    assert archive.LabelResolver([f"class {n}" for n in range(1, 11)]).folder_class_index("class_1") == 0


def test_only_a_number_a_class_name_holds_is_refused_and_every_script_s_letters_count():
    """'Группа 1' normalized to '1' (letters outside a-z were dropped): folder 1 and cell 1 were that class; any digit
    in a name refused every index ('covid-19': cells 0, 1, 2); a '|' in a name no longer matched its folder."""
    cyrillic = archive.LabelResolver(["Группа 1", "Группа 2", "Группа 3"])
    assert cyrillic.folder_class_index("1") is None and cyrillic.folder_class_index("группа_2") == 1
    with pytest.raises(archive.InputError, match="a class name holds that number"):
        cyrillic.class_index("1")
    assert cyrillic.class_index("0") == 0  # no name holds 0: an index
    assert [archive.LabelResolver(["covid-19", "normal", "pneumonia"]).class_index(c) for c in "012"] == [0, 1, 2]
    assert archive.LabelResolver(["cat|dog", "bird"]).folder_class_index("cat_dog") == 0


def test_numeric_categories_and_integer_columns_past_2_63_are_refused_and_infinite_cells_are_not():
    import numpy as np
    import pandas as pd

    from cadp.errors import InputError
    from cadp.train import fit_tabular

    rng = np.random.default_rng(0)
    base = {"y": rng.normal(0, 1, 60), "g": rng.choice(["a", "b"], 60)}
    with pytest.raises(InputError, match="too large to release"):  # three values: a categorical column
        fit_tabular(pd.DataFrame({"z": [1e19, 1, 2] * 20, **base}), ["g"], steps=1)
    with pytest.raises(InputError, match="too large to release"):  # abs() of int64's least overflowed
        fit_tabular(pd.DataFrame({"z": np.r_[np.array([-2**63]), rng.integers(0, 100, 59)], **base}), ["g"], steps=1)
    fitted = fit_tabular(pd.DataFrame({"z": np.r_[np.inf, rng.uniform(1.5, 88.5, 59)], **base}), ["g"], steps=1)
    assert "z" in fitted.config.data_columns  # inf is read as missing: no refusal to "divide by a power of ten"


def test_a_number_a_roman_numeral_class_name_holds_is_refused_not_read_as_an_index():
    """Classes 'Stage I', 'Stage II', 'Stage III': a labels-CSV cell "1" (stage 1, as written on the chart) was read as
    index 1, 'Stage II', and the wrong stage released as a kept label, exactly."""
    stages = archive.LabelResolver(["Stage I", "Stage II", "Stage III"])
    for cell in ("1", "2"):
        with pytest.raises(archive.InputError, match="in digits or Roman numerals"):
            stages.class_index(cell)
    assert stages.class_index("0") == 0 and stages.class_index("stage ii") == 1  # no name holds 0; names match
    assert archive.LabelResolver(["Grade Ⅰ", "Grade Ⅱ"]).numbers_in_names == {1, 2}  # the numeral signs too (NFKC)
    # a name's first word is a word: letters A-Z (EMNIST), 'V' (an ECG class), 'X-ray other', 'CD' keep indices
    letters = archive.LabelResolver([chr(code) for code in range(ord("A"), ord("Z") + 1)])
    assert [letters.class_index(cell) for cell in ("1", "5", "10")] == [1, 5, 10]
    assert archive.LabelResolver(["N", "V", "X-ray other", "CD", "a", "b", "c", "d", "e", "f", "g"]).numbers_in_names \
        == set()
    # lower-case words are words ('mild' is no numeral), and names without numerals keep their indices
    assert [archive.LabelResolver(["mild", "civil", "vivid"]).class_index(c) for c in "012"] == [0, 1, 2]
    assert [archive.roman_value(word) for word in ("IV", "XL", "IIII", "VX", "mix")] == [4, 40, None, None, None]
