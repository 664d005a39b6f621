"""The terms state every parameter as used, never less (a reviewer's findings): epsilons written to 12 digits read
less than was used (1.2345678901234567 as 1.23456789012), and the CLI's terms for paper did not give the batches its
output depends on (PRIVACY.md: record the batch size with every result)."""

from __future__ import annotations

import re

import pytest
from PIL import Image

import cadp.archive as archive
from cadp.errors import InputError
from cadp.mechanisms import ConditionHandling, make_mechanism, stated
from cadp.privatize import release_guarantee
from tests.test_archive import image_file, image_model, make_folder, table_model  # noqa: F401 - fixtures

ODD = 1.2345678901234567


def numbers_after(text: str, words: str) -> list[float]:
    return [float(found) for found in re.findall(re.escape(words) + r"\s*([0-9.e+-]+[0-9])", text)]


def test_stated_reads_back_as_the_value_and_stays_short_where_it_can():
    assert stated(2.0) == "2" and stated(0.5) == "0.5" and stated(1e-5) == "1e-05"
    for value in (ODD, 0.30000000000000004, 1 + 2**-52, 123456789.123456789):
        assert float(stated(value)) == value, value


@pytest.mark.parametrize("name", ["laplace", "gaussian", "paper"])
def test_each_mechanisms_terms_state_its_epsilon_as_used(name):
    mechanism = make_mechanism(name, ODD, delta=ODD * 1e-5 if name == "gaussian" else None)
    assert numbers_after(mechanism.guarantee(), "epsilon =")[0] == ODD
    if name == "gaussian":
        assert numbers_after(mechanism.guarantee(), "delta =")[0] == ODD * 1e-5
    assert numbers_after(make_mechanism("metric", ODD).guarantee(), "exp(")[0] == ODD


def test_a_release_states_its_condition_epsilon_and_total_delta_as_used(table_model):  # noqa: F811
    from cadp.hub import load_folder

    model = load_folder(table_model).model
    name = model.config.condition_columns[0]
    terms = release_guarantee(model, make_mechanism("gaussian", 1.0, delta=ODD * 1e-5), seed=0,
                              condition_handling={name: ConditionHandling("randomized", 0.30000000000000004)})
    assert numbers_after(terms, "randomized response with epsilon =") == [0.30000000000000004]
    assert numbers_after(terms, "with delta =")[-1] == ODD * 1e-5, terms


def test_the_cli_terms_of_paper_give_its_batches(image_model, tmp_path):  # noqa: F811
    source = make_folder(tmp_path / "in", {f"1/{i}.png": image_file(i) for i in range(3)})
    output = tmp_path / "out"
    assert archive.main(["--model", str(image_model), "--mechanism", "paper", "--epsilon", "1", "--batch-size", "2",
                         str(source), str(output)]) == 0
    terms = (output / archive.GUARANTEE_NAME).read_text(encoding="utf-8")
    assert "This run ran it on batches of at most 2 records (--batch-size)" in terms, terms
    descriptions = sorted(Image.open(path).info["Description"] for path in output.rglob("*.png"))
    assert ["one batch of 1 record" in text for text in descriptions].count(True) == 1, descriptions
    assert ["one batch of 2 records" in text for text in descriptions].count(True) == 2, descriptions
    laplace = tmp_path / "laplace"
    assert archive.main(["--model", str(image_model), "--mechanism", "laplace", "--epsilon", "1", str(source),
                         str(laplace)]) == 0
    assert "batch" not in (laplace / archive.GUARANTEE_NAME).read_text(encoding="utf-8")


def test_metric_too_small_an_epsilon_is_refused_without_advice_that_does_not_apply():
    with pytest.raises(InputError) as refused:
        make_mechanism("metric", 1e-40)
    assert "choose a larger epsilon" in str(refused.value) and "temperature" not in str(refused.value)


def test_a_total_never_reads_less_than_the_parts_the_terms_state(table_model):  # noqa: F811
    """'epsilon = 1.0000000000001 for the latent' was followed by 'Total epsilon of this release: 1' (written_up's
    float slack), and metric's conditions '+ epsilon = 2' for a condition epsilon of 2.0000000000003."""
    from cadp.hub import load_folder
    from cadp.mechanisms import stated_total

    model = load_folder(table_model).model
    name = model.config.condition_columns[0]
    terms = release_guarantee(model, make_mechanism("laplace", 1.0000000000001), seed=0,
                              condition_handling={name: ConditionHandling("randomized", 1.0)})
    assert "Total epsilon of this release (basic composition): 2.0000000000001." in terms, terms
    randomized = {name: ConditionHandling("randomized", 2.0000000000003)}
    terms = release_guarantee(model, make_mechanism("metric", 1.0), seed=0, condition_handling=randomized)
    assert "+ epsilon = 2.0000000000003 for conditions" in terms, terms
    terms = release_guarantee(model, make_mechanism("laplace", 0.1), seed=0,
                              condition_handling={name: ConditionHandling("randomized", 0.2)})
    assert "Total epsilon of this release (basic composition): 0.3." in terms, terms  # not 0.30000000000000004
    assert stated_total([1e300, 1]) == "1.0000000000000001E+300"  # rounded up where it is shortened


def test_metric_terms_round_a_distance_as_they_round_its_epsilon():
    """"(distance 413) that is epsilon = 414" at 1 per unit: the distance was rounded to nearest, its epsilon up."""
    from cadp.mechanisms import make_mechanism

    text = make_mechanism("metric", 1.0).guarantee(d_typ=413.25, d_nn=99.01)
    assert "(distance 414) that is epsilon = 414;" in text and "(distance 99.1) epsilon = 99.1." in text
