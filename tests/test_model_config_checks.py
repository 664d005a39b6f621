"""A table model's column specs are checked when config.json is read, and integer labels that are also another
class's name are refused: both would otherwise give silently wrong releases (or raw tracebacks)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cadp import hub
from cadp.errors import InputError, ModelError
from cadp.mechanisms import make_mechanism
from cadp.models import ImageCINN, ImageModelConfig, TabularCINN, class_indices
from cadp.privatize import privatize
from cadp.train import tabular_config
from tests.conftest import WEIGHTS


def small_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"age": rng.integers(20, 60, 64),  # a lattice column: point masses only (slope 0)
                         "bmi": rng.normal(25, 4, 64).round(1),
                         "smoker": rng.choice(["yes", "no"], 64),
                         "outcome": rng.choice(["ill", "healthy"], 64)})


@pytest.fixture(scope="module")
def table_folder(tmp_path_factory) -> Path:
    config = tabular_config(small_table(), ["outcome"], name="checked", dataset="test", blocks=1, width=8)
    return hub.save_model(TabularCINN(config), tmp_path_factory.mktemp("models") / "checked")


def edited_copy(folder: Path, target: Path, change) -> Path:
    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    change(config)
    (target / "config.json").write_text(json.dumps(config))
    return target


def column(config: dict, name: str) -> dict:
    specs = config["data_encoder"]["columns"] + config["condition_encoder"]["columns"]
    return next(spec for spec in specs if spec["name"] == name)


def set_field(column_name: str, **values):
    return lambda config: column(config, column_name).update(values)


def set_atom_width(width: float):
    return lambda config: column(config, "age")["atoms"][1].__setitem__(1, width)


# (what is edited, the column and field the refusal must name)
EDITS = {
    "std 0": (set_field("bmi", std=0), "'bmi'", "std"),
    "negative decimals": (set_field("bmi", decimals=-2), "'bmi'", "decimals"),
    "fractional decimals": (set_field("bmi", decimals=1.5), "'bmi'", "decimals"),
    "range upside down": (set_field("bmi", low=50, high=10), "'bmi'", "low"),
    "one end of the range": (set_field("bmi", high=None), "'bmi'", "low"),
    "a column under another's name": (set_field("bmi", name="age"), "'age'", "name"),
    "a mean of text": (set_field("bmi", mean="x"), "'bmi'", "mean"),
    "an unknown kind": (set_field("bmi", kind="foo"), "'bmi'", "kind"),
    "a scale of 0": (set_field("bmi", scale=0), "'bmi'", "scale"),
    "a slope of 2": (set_field("bmi", slope=2), "'bmi'", "slope"),
    "integer as text": (set_field("bmi", integer="yes"), "'bmi'", "integer"),
    "an unknown field": (set_field("bmi", colour="red"), "'bmi'", "colour"),
    "a negative atom width": (set_atom_width(-0.1), "'age'", "atoms[1]"),
    "a zero atom width": (set_atom_width(0), "'age'", "atoms[1]"),
    "atoms out of order": (lambda c: column(c, "age")["atoms"].reverse(), "'age'", "atoms[1]"),
    "a lattice without atoms": (set_field("age", atoms=[]), "'age'", "atoms"),
    "no categories (one-hot width 0)": (set_field("smoker", categories=[]), "'smoker'", "categories"),
    "a category twice": (set_field("smoker", categories=["no", "no"]), "'smoker'", "categories"),
    "a condition named like a data column": (set_field("outcome", name="smoker"), "'smoker'", "name"),
    # a release writes whole numbers as int64: fit_tabular refuses 2^63 or more, and so must a config.json
    "a whole-number column's mean of 2^63": (set_field("age", mean=2.0 ** 63), "'age'", "mean"),
    "a whole-number column's range to -2^70": (set_field("age", low=-(2.0 ** 70)), "'age'", "low"),
    "a whole-number column's atom at 2^64": (lambda c: column(c, "age")["atoms"].append([2 ** 64, 0.1]), "'age'",
                                             "atoms"),
    "a numeric category of 2^64": (set_field("outcome", categories=[0, 2 ** 64]), "'outcome'", "categories"),
    "a prior of the wrong width": (lambda c: c["condition_priors"].update(outcome=[1.0]), "'outcome'",
                                   "condition_priors"),
    "a prior of no condition column": (lambda c: c["condition_priors"].update(age=[0.5, 0.5]), "'age'",
                                       "condition_priors"),
}


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_a_config_json_column_spec_the_encoder_cannot_use_is_refused_at_load(table_folder, tmp_path, edit):
    change, column_name, field_name = EDITS[edit]
    folder = edited_copy(table_folder, tmp_path / "edited", change)
    with pytest.raises(ModelError) as refused:
        hub.load_model(folder)
    message = str(refused.value)
    assert message.startswith("invalid model config: in config.json, ")
    assert column_name in message and field_name in message


def test_the_refusal_says_what_the_field_must_be_in_plain_words(table_folder, tmp_path):
    folder = edited_copy(table_folder, tmp_path / "edited", set_field("bmi", std=0))
    with pytest.raises(ModelError, match=r"data_encoder column 'bmi' \(entry 2 of data_encoder.columns\): std must "
                                         r"be a finite number > 0 \(every value is divided by it\), got 0$"):
        hub.load_model(folder)


def test_a_freshly_built_model_and_every_bundled_one_pass_the_checks(table_folder):
    """Guards, not regressions: what save_model writes, and the bundled folders, load as they did."""
    assert hub.load_model(table_folder).config.data_columns == ["age", "bmi", "smoker"]
    for folder in sorted(WEIGHTS.iterdir()):
        if (folder / "config.json").exists():
            assert hub.load_model(folder).config.name == folder.name


# --------------------------------------------------------------------------- integer labels and class names

@pytest.fixture(scope="module")
def numbered_model() -> ImageCINN:
    """Class folders 1, 2 and 10 sort to the names "1", "10", "2": index 1 is the class "10"."""
    config = ImageModelConfig(name="numbered", dataset="folder", class_names=["1", "10", "2"], conv_width=8,
                              conv_blocks=[1, 1], fc_blocks=1, fc_width=16)
    return ImageCINN(config).eval()


LABELS = {"int": 1, "numpy int": np.int64(1), "list": [1], "numpy array": np.array([1]),
          "int64 tensor": torch.tensor([1]), "int32 tensor": torch.tensor([1], dtype=torch.int32),
          "uint8 tensor": torch.tensor([1], dtype=torch.uint8), "float": 1.0}


@pytest.mark.parametrize("form", LABELS, ids=list(LABELS))
def test_an_integer_label_that_is_also_another_class_name_is_refused(numbered_model, form):
    pixels = torch.full((1, 1, 28, 28), 128.0)
    with pytest.raises(InputError) as refused:
        privatize(numbered_model, pixels, LABELS[form], make_mechanism("laplace", 1), seed=0)
    assert str(refused.value) == (
        "label 1 is ambiguous: as a class index it means the class '10' (class_names[1]), but '1' is also a class "
        "name (index 0). Give the class name as text: '10' for the class at index 1, '1' for the class named '1' "
        "(or say that numbers are indices: cadp.models.ClassIndices([1]))")


def test_numbers_said_to_be_indices_and_names_as_text_release_the_class_they_name(numbered_model):
    from cadp.models import ClassIndices

    pixels = torch.full((3, 1, 28, 28), 128.0)
    laplace = make_mechanism("laplace", 1)
    by_index = privatize(numbered_model, pixels, ClassIndices(torch.tensor([1, 1, 0])), laplace, seed=0)
    by_name = privatize(numbered_model, pixels, ["10", "10", "1"], laplace, seed=0)
    assert by_index.condition["label"].tolist() == by_name.condition["label"].tolist() == [1, 1, 0]
    assert by_index.released_condition["label"].tolist() == [1, 1, 0]  # kept: released as '10', '10', '1'
    samples = numbered_model.sample(ClassIndices(torch.arange(3)), generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 28, 28)


def test_a_number_out_of_range_that_is_a_class_name_says_to_give_the_name(numbered_model):
    with pytest.raises(InputError, match=r"^label 10 is ambiguous: as a class index it is out of range \(0..2\), "
                                         r"but '10' is also a class name \(index 1\)\. Give the class name as text: "
                                         r"'10' for the class named '10'$"):
        numbered_model.sample([10], generator=torch.Generator().manual_seed(0))


def test_names_and_unambiguous_indices_still_read_as_before():
    """Guards: names as text, indices no name contradicts (0 is no class's name), and MNIST's "0".."9"."""
    names = ["1", "10", "2"]
    assert class_indices(["1", "10", "2", 0], names).tolist() == [0, 1, 2, 0]
    digits = [str(i) for i in range(10)]
    for labels in (3, [3, 9], np.array([3, 9]), torch.tensor([3, 9]), torch.tensor([3], dtype=torch.int16)):
        assert class_indices(labels, digits).tolist() == np.atleast_1d(np.asarray(labels)).tolist()


def test_a_whole_number_column_without_a_range_that_decodes_past_2_63_is_refused_not_wrapped(tmp_path):
    """A config.json within the load checks (no range, a mean of 9e18 and a spread of 1e18) released
    -9223372036854775808 in every row: int64 wrapped the decoded numbers silently."""
    from cadp.data import load_table

    def unbounded(config):
        column(config, "age").update(low=None, high=None, atoms=[], slope=1, mean=9e18, std=1e18)

    folder = edited_copy(WEIGHTS / "diabetes-cinn", tmp_path / "edited", unbounded)
    loaded = hub.load_model(folder)
    rows = load_table("diabetes").frame.head(20)
    with pytest.raises(ModelError, match=r"column .age. decoded to a number a column of whole numbers cannot hold \(2\^63 or more in size\)"):
        privatize(loaded.model, rows, None, make_mechanism("laplace", 1.0), seed=0)


def test_whole_numbers_are_rounded_a_nan_is_left_empty_and_what_int64_cannot_hold_is_refused():
    """A NaN from the network came back as -9223372036854775808 in a column of whole numbers (int64's wrap)."""
    from cadp.data import whole_numbers

    assert whole_numbers(np.array([1.4, -2.6]), "age").tolist() == [1, -3]
    mixed = whole_numbers(np.array([1.4, np.nan, -2.6]), "age")
    assert str(mixed.dtype) == "Int64" and mixed[0] == 1 and mixed[1] is pd.NA and mixed[2] == -3
    for value in (2.0 ** 63, -(2.0 ** 63), float("inf")):
        with pytest.raises(ModelError, match="column 'age' decoded to a number"):
            whole_numbers(np.array([0.0, value]), "age")
