"""x -> z -> M(z) -> x' for images and rows."""

import numpy as np
import pandas as pd
import pytest
import torch

from cadp.data import load_image_dataset, load_table
from cadp.errors import InputError
from cadp.hub import load_folder
from cadp.mechanisms import PAPER_LABEL, ConditionHandling, NoNoise, make_mechanism, new_generator
from cadp.models import ClassIndices
from cadp.privatize import NOT_PRIVATE_SEED, latent_difference_maps, privatize, release_guarantee
from cadp.train import fit_tabular, split_table
from tests.conftest import bundled


@pytest.fixture(scope="module")
def digits():
    data = load_image_dataset("mnist", "test")
    return data.images[:16], data.labels[:16]




def mech(name="laplace", epsilon=2.0, **kwargs):
    return make_mechanism(name, epsilon, **kwargs)


def test_image_result_holds_every_view(tiny_image_model, digits):
    x, y = digits
    result = privatize(tiny_image_model, x, y, mech(temperature=0.7))
    assert result.privatized.shape == x.shape
    assert result.privatized.min() >= 0 and result.privatized.max() <= 255
    assert (result.reconstruction - x.float()).abs().max() <= 1e-3
    assert result.latent.shape == result.noisy_latent.shape == (16, 784)
    assert not torch.equal(result.latent, result.noisy_latent)
    assert result.epsilon_spent == 2.0 and result.private and result.noise_source == "OS entropy"
    assert "pure epsilon-local differential privacy with epsilon = 2" in result.guarantee
    assert torch.equal(result.released_condition["label"], y)


def test_read_only_pixels_are_copied_not_shared(tiny_image_model, digits):
    """An upload's pixels are read-only (shared with its preview): torch warned that writing them is undefined."""
    import warnings

    x, y = digits
    pixels = x.numpy().copy()
    pixels.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = privatize(tiny_image_model, pixels, y, mech(temperature=0.7))
    assert torch.equal(result.original, torch.as_tensor(x).float())


def test_seeded_release_is_reproducible_and_marked_not_private(tiny_image_model, digits):
    x, y = digits
    first = privatize(tiny_image_model, x, y, mech(temperature=0.7), seed=3)
    second = privatize(tiny_image_model, x, y, mech(temperature=0.7), seed=3)
    assert torch.equal(first.privatized, second.privatized)
    assert not first.private and NOT_PRIVATE_SEED in first.noise_source and NOT_PRIVATE_SEED in first.guarantee
    fresh = privatize(tiny_image_model, x, y, mech(temperature=0.7))
    assert not torch.equal(fresh.noisy_latent, first.noisy_latent)


def test_pipeline_output_of_a_record_ignores_batch_mates(tiny_image_model, digits):
    x, y = digits
    alone = privatize(tiny_image_model, x[:1], y[:1], mech(temperature=0.7), seed=11)
    together = privatize(tiny_image_model, x, y, mech(temperature=0.7), seed=11)
    assert torch.allclose(alone.noisy_latent[0], together.noisy_latent[0], atol=1e-5)
    assert torch.allclose(alone.privatized[0], together.privatized[0], atol=1e-2)


@pytest.mark.parametrize("handling", [ConditionHandling("randomized", 1.0), ConditionHandling("resampled")])
def test_a_released_condition_ignores_batch_mates_too(tiny_image_model, digits, handling):
    """PRIVACY.md's test with a randomized or resampled condition: its draws used to come from the latent noise's
    stream, before it, so the first record's noise moved with the number of records behind it."""
    x, y = digits
    rows = load_table("heart").frame
    table = load_folder(bundled("heart-cinn")).model
    for model, first, batch, labels in ((tiny_image_model, x[:1], x, y), (table, rows.head(1), rows.head(9), None)):
        name = "label" if labels is not None else "sex"
        runs = [privatize(model, part, None if labels is None else labels[:len(part)], mech(temperature=0.7), seed=5,
                          condition_handling={name: handling}) for part in (first, batch)]
        assert torch.allclose(runs[0].noisy_latent[0], runs[1].noisy_latent[0], atol=1e-4)  # (float32 batching)
        assert torch.equal(runs[0].released_condition[name][0], runs[1].released_condition[name][0])


def test_two_released_conditions_of_a_row_ignore_its_batch_mates():
    """One stream for all released columns started the second column's draws for record 0 after the first
    column's draws for the whole batch: with two columns randomized, the first row's second value moved."""
    rows = load_table("heart").frame
    table = load_folder(bundled("heart-cinn")).model
    handlings = {"target": ConditionHandling("randomized", 1.0), "sex": ConditionHandling("resampled")}
    for seed in range(12):
        alone, first = (privatize(table, part, None, mech(temperature=0.7), seed=seed, condition_handling=handlings,
                                  batch_size=size) for part, size in ((rows.head(1), None), (rows.head(200), 7)))
        for name in handlings:
            assert alone.released_condition[name][0] == first.released_condition[name][0], (seed, name)


def test_unseeded_noise_is_not_torchs_32_bit_seeded_stream(tiny_image_model, digits):
    """torch's CPU generator keeps only the low 32 bits of a seed: noise from a generator seeded with OS entropy
    could be found by trying every 32-bit seed. Unseeded noise comes from the OS itself."""
    x, y = digits
    generator = new_generator()
    release = privatize(tiny_image_model, x[:2], y[:2], mech(temperature=0.7), generator)
    assert release.private
    for seed in (generator.initial_seed(), generator.initial_seed() & 0xFFFFFFFF):
        again = privatize(tiny_image_model, x[:2], y[:2], mech(temperature=0.7), seed=seed)
        assert not torch.equal(again.noisy_latent, release.noisy_latent)


def test_condition_handling_and_total_epsilon(tiny_image_model, digits):
    x, y = digits
    randomized = privatize(tiny_image_model, x.repeat(8, 1, 1, 1), y.repeat(8), mech(temperature=0.7),
                           condition_handling={"label": ConditionHandling("randomized", 0.1)}, seed=0)
    assert randomized.epsilon_spent == pytest.approx(2.1)
    assert (randomized.released_condition["label"] != y.repeat(8)).float().mean() > 0.5
    assert "randomized" in randomized.guarantee and "2.1" in randomized.guarantee
    resampled = privatize(tiny_image_model, x, y, mech(temperature=0.7),
                          condition_handling={"label": ConditionHandling("resampled")})
    assert resampled.epsilon_spent == pytest.approx(2.0)
    # nothing kept: the guarantee does not speak of kept attributes as if there were any
    assert "No attribute is released exactly here" in resampled.guarantee
    assert "Kept attributes are released exactly" not in resampled.guarantee
    assert "Kept attributes (label) are released exactly" in privatize(tiny_image_model, x, y,
                                                                         mech(temperature=0.7)).guarantee
    with pytest.raises(InputError, match="unknown attribute"):
        privatize(tiny_image_model, x, y, mech(temperature=0.7), condition_handling={"age": ConditionHandling()})
    metric = privatize(tiny_image_model, x, y, make_mechanism("metric", 0.5),
                       condition_handling={"label": ConditionHandling("randomized", 1.0)})
    # two units that do not add into one number: both named
    assert "Total of this release (basic composition): 0.5 per unit of latent L1 distance + epsilon = 1 for " \
           "conditions." in metric.guarantee
    assert metric.epsilon_spent is None and (metric.epsilon_latent, metric.epsilon_conditions) == (0.5, 1.0)


def test_paper_releases_name_the_batches_they_ran_on(tiny_image_model, digits):
    x, y = digits
    assert privatize(tiny_image_model, x[:1], y[:1], make_mechanism("paper", 10)).batch_text == \
        "one batch of 1 record"
    chunked = privatize(tiny_image_model, x.repeat(3, 1, 1, 1)[:5], y.repeat(3)[:5], make_mechanism("paper", 10),
                        batch_size=2)
    assert chunked.batches == [2, 2, 1] and chunked.batch_text == "batches of 2 + 2 + 1 records"


def test_guarantee_changes_with_mechanism(tiny_image_model, digits):
    x, y = digits
    texts = {name: privatize(tiny_image_model, x[:2], y[:2], make_mechanism(name, 1.0, **kw)).guarantee
             for name, kw in [("laplace", {"temperature": 0.7}), ("gaussian", {"temperature": 0.7, "delta": 1e-5}),
                              ("metric", {}), ("paper", {})]}
    assert len(set(texts.values())) == 4
    assert PAPER_LABEL in texts["paper"]
    paper = privatize(tiny_image_model, x, y, make_mechanism("paper", 1.0), batch_size=4)
    assert paper.epsilon_spent is None and paper.mechanism["batch_size"] == 4


def test_guarantee_says_training_data_is_not_public_without_naming_it(tiny_image_model, digits):
    x, y = digits
    mechanism = make_mechanism("laplace", 1.0, temperature=0.7)
    public = privatize(tiny_image_model, x[:1], y[:1], mechanism).guarantee  # dataset "mnist"
    assert "trained without DP on public data" in public
    tiny_image_model.config.dataset = "clinic-scans"  # what cadp.train writes for an ImageFolder
    try:
        own = privatize(tiny_image_model, x[:1], y[:1], mechanism).guarantee
    finally:
        tiny_image_model.config.dataset = "mnist"
    assert "trained without DP on its owner's data, not on a public dataset" in own
    assert "clinic-scans" not in own  # a folder name can name a site, a study or a patient: not in shared terms
    assert "does not contain the records being privatized" in own and "on public data" not in own


def test_paper_mechanism_output_depends_on_batch_size(tiny_image_model, digits):
    x, y = digits
    small = privatize(tiny_image_model, x, y, make_mechanism("paper", 1.0), seed=1, batch_size=1)
    large = privatize(tiny_image_model, x, y, make_mechanism("paper", 1.0), seed=1, batch_size=16)
    assert not torch.allclose(small.noisy_latent, large.noisy_latent)


def test_no_noise_returns_reconstruction(tiny_image_model, digits):
    x, y = digits
    result = privatize(tiny_image_model, x, y, NoNoise())
    assert torch.allclose(result.privatized, x.float().clamp(0, 255), atol=1e-3)
    assert "no privacy" in result.guarantee
    assert not result.private and result.noise_source == "none (epsilon = infinity: no noise is added)"


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 1, 14, 14), "shape"), (torch.full((2, 1, 28, 28), 300.0), "within \\[0, 255\\]"),
    (torch.full((2, 1, 28, 28), float("nan")), "finite"),
])
def test_invalid_images_are_refused(tiny_image_model, bad, message):
    with pytest.raises(InputError, match=message):
        privatize(tiny_image_model, bad, torch.tensor([0, 1]), mech(temperature=0.7))


def test_invalid_labels_are_refused(tiny_image_model, digits):
    x, _ = digits
    with pytest.raises(InputError, match="class indices"):
        privatize(tiny_image_model, x[:2], torch.tensor([0, 12]), mech(temperature=0.7))
    with pytest.raises(InputError, match="labels"):
        privatize(tiny_image_model, x[:3], torch.tensor([0, 1]), mech(temperature=0.7))


def test_latent_difference_maps_cover_every_scale(tiny_image_model, digits):
    x, y = digits
    result = privatize(tiny_image_model, x[:1], y[:1], mech(temperature=0.7))
    maps = latent_difference_maps(tiny_image_model, result.latent[0], result.noisy_latent[0])
    assert [m.shape for _, m in maps] == [(7, 56), (20, 20)]
    total = sum(float(np.nansum(m)) for _, m in maps)
    assert int(np.isnan(maps[1][1]).sum()) == 400 - 392  # the square's cells past the last coordinate: empty
    assert total == pytest.approx(float((result.noisy_latent - result.latent).abs().sum()), rel=1e-4)


# --------------------------------------------------------------------------- tables

@pytest.mark.parametrize("name", ["diabetes-cinn", "heart-cinn"])
def test_bundled_table_at_infinite_epsilon_is_exact(name):
    loaded = load_folder(bundled(name))
    table = load_table(loaded.config.dataset)
    _, test = split_table(table.frame)
    result = privatize(loaded.model, test, None, NoNoise())
    pd.testing.assert_frame_equal(result.privatized_frame, test, check_dtype=False)
    whole = [spec.name for spec in loaded.model.data_encoder.columns if spec.kind == "numeric" and spec.integer]
    assert whole and all(result.privatized_frame[c].dtype == np.int64 for c in whole)  # the model's types


def test_rows_keep_conditions_and_change_other_cells():
    table = load_table("diabetes")
    model = fit_tabular(table.frame, ["sex"], steps=30)
    result = privatize(model, table.frame.head(50), None, mech(epsilon=1.0, temperature=0.7), seed=0)
    frame = result.privatized_frame
    assert list(frame.columns) == list(table.frame.columns)
    assert frame["sex"].tolist() == table.frame["sex"].head(50).tolist()
    assert (frame["bmi"] != table.frame["bmi"].head(50)).mean() > 0.9
    assert result.epsilon_spent == 1.0
    randomized = privatize(model, table.frame.head(50), None, mech(epsilon=1.0, temperature=0.7),
                           condition_handling={"sex": ConditionHandling("randomized", 0.5)})
    assert randomized.epsilon_spent == pytest.approx(1.5)
    fitted = privatize(model, table.frame.head(5), None, mech(epsilon=1.0, temperature=0.7))
    # fit_tabular's default names no public dataset: the guarantee names its data and what it assumes of it
    assert "trained without DP on its owner's data, not on a public dataset" in fitted.guarantee
    uploaded = fit_tabular(table.frame.head(80), ["sex"], steps=5, dataset="upload")  # as the app fits uploads
    assert "fitted, without DP, on the very rows" in privatize(uploaded, table.frame.head(5), None,
                                                               mech(epsilon=1.0, temperature=0.7)).guarantee


@pytest.mark.parametrize("name", ["mnist-cinn", "diabetes-cinn"])
def test_without_reconstruction_the_release_is_the_same(name, digits):
    loaded = load_folder(bundled(name))
    if loaded.config.kind == "image":
        inputs, condition = digits
    else:
        inputs, condition = load_table(loaded.config.dataset).frame.head(20), None
    both = privatize(loaded.model, inputs, condition, mech(epsilon=3.0, temperature=0.7), seed=5)
    release = privatize(loaded.model, inputs, condition, mech(epsilon=3.0, temperature=0.7), seed=5,
                        reconstruct=False)
    assert release.reconstruction is None and release.reconstruction_frame is None
    assert torch.equal(release.noisy_latent, both.noisy_latent)
    assert torch.allclose(release.privatized, both.privatized, atol=1e-3)
    if release.privatized_frame is not None:
        pd.testing.assert_frame_equal(release.privatized_frame, both.privatized_frame)
        assert both.reconstruction_frame is not None


def test_rows_missing_a_column_are_refused():
    table = load_table("diabetes")
    model = fit_tabular(table.frame, ["sex"], steps=5)
    with pytest.raises(InputError, match="lacks column"):
        privatize(model, table.frame.drop(columns=["bmi"]), None, mech(temperature=0.7))
    with pytest.raises(InputError, match="no rows"):
        privatize(model, table.frame.head(0), None, mech(temperature=0.7))


def test_noise_from_a_callers_generator_is_never_called_private(tiny_image_model, digits):
    from cadp.mechanisms import new_generator

    x, y = digits
    first, second = (privatize(tiny_image_model, x, y, mech(temperature=0.7), torch.Generator()) for _ in range(2))
    assert torch.equal(first.privatized, second.privatized)  # torch.Generator() starts from one fixed seed
    assert not first.private and first.noise_source.startswith("a generator given by the caller")
    assert "Noise from a generator given by the caller: not known to be private" in first.guarantee
    with pytest.raises(InputError, match="a seed or a generator, not both"):
        privatize(tiny_image_model, x, y, mech(temperature=0.7), torch.Generator().manual_seed(3), seed=5)
    with pytest.raises(InputError, match="seed 6 differs"):
        privatize(tiny_image_model, x, y, mech(temperature=0.7), new_generator(5), seed=6)
    with pytest.raises(InputError, match="seed must be an integer"):
        privatize(tiny_image_model, x, y, mech(temperature=0.7), seed=1.5)
    seeded = privatize(tiny_image_model, x, y, mech(temperature=0.7), new_generator(5))
    assert not seeded.private and seeded.seed == 5 and "not private: reproducible seed" in seeded.guarantee
    fresh = privatize(tiny_image_model, x, y, mech(temperature=0.7), new_generator())
    assert fresh.private and fresh.noise_source == "OS entropy"


def test_inputs_a_user_gets_wrong_are_plain_errors(tiny_image_model, digits):
    from PIL import Image

    x, y = digits
    laplace = mech(temperature=0.7)
    cases = [
        ((x.float() / 255, y, laplace), {}, "look scaled to \\[0, 1\\]"),
        ((x, [1.7] * len(y), laplace), {}, "class indices or class names, got 1.7"),
        ((x, None, laplace), {}, "labels are required"),
        ((x, ["no such class"] * len(y), laplace), {}, "not one of the model's classes"),
        ((x[:0], y[:0], laplace), {}, "batch >= 1"),
        ((Image.new("RGB", (28, 28)), 1, laplace), {}, r"or be one image \(28, 28\); got \(28, 28, 3\)"),
        ((x[:, :, :20], y, laplace), {}, r"got \(16, 1, 20, 28\)"),
        ((x, y, "laplace"), {}, "mechanism must be a Mechanism"),
        ((x, y, laplace), {"condition_handling": {"label": "resampled"}}, "ConditionHandling"),
        ((x, y, laplace), {"batch_size": -1}, "batch_size must be a whole number >= 1"),
    ]
    for arguments, options, message in cases:
        with pytest.raises(InputError, match=message):
            privatize(tiny_image_model, *arguments, **options)
    mask = privatize(tiny_image_model, (x > 127).float(), y, laplace, seed=0)  # 0/1: scaled or nearly black?
    assert mask.notes == ["every pixel is 0 or 1, read as values in [0, 255] (nearly black); if these images were "
                          "scaled to [0, 1], multiply them by 255"]
    assert privatize(tiny_image_model, x, y, laplace, seed=0).notes == []
    # one grayscale image as PIL or NumPy hold it (H, W), for a one-channel model
    first = privatize(tiny_image_model, x[:1], y[:1], laplace, seed=0).privatized
    as_pil = Image.fromarray(x[0, 0].numpy().astype(np.uint8))
    assert torch.equal(privatize(tiny_image_model, as_pil, y[:1], laplace, seed=0).privatized, first)
    # (3, H, W) may be a colour image: never read as three grayscale records
    with pytest.raises(InputError, match=r"got \(3, 28, 28\) \(several grayscale images \(batch, 28, 28\): add the "
                                         r"channel axis, images\[:, None\]\)"):
        privatize(tiny_image_model, x[:3, 0].numpy(), y[:1], laplace, seed=0)
    names = tiny_image_model.config.class_names
    by_name = privatize(tiny_image_model, x, [names[int(label)] for label in y], laplace, seed=0)
    assert torch.equal(by_name.condition["label"], y)


def test_parameters_that_do_not_apply_to_a_mechanism_are_refused():
    with pytest.raises(InputError, match="temperature, delta|delta, clip_radius, temperature do not apply"):
        make_mechanism("metric", 1, temperature=0.7, clip_radius=2, delta=0.3)
    with pytest.raises(InputError, match="delta does not apply to the laplace mechanism"):
        make_mechanism("laplace", 1, temperature=0.7, delta=1e-5)
    with pytest.raises(InputError, match="epsilon must be a number"):
        make_mechanism("paper", True)


def test_released_rows_keep_the_callers_index_and_name_left_out_columns():
    model = load_folder(bundled("heart-cinn")).model
    rows = load_table("heart").frame.head(3).copy()
    rows.index = ["p1", "p2", "p3"]
    rows["note"] = "x"  # a column the model does not have
    result = privatize(model, rows, None, mech(epsilon=1.0, temperature=0.7), seed=0)
    assert list(result.privatized_frame.index) == ["p1", "p2", "p3"] == list(result.reconstruction_frame.index)
    assert list(rows.index) == ["p1", "p2", "p3"] and "note" in rows  # the caller's frame is untouched
    assert result.notes == ["column the model does not have, left out of the release: 'note'"]
    conditions = rows[["target", "sex"]]
    with pytest.raises(InputError, match="in both the rows and the condition frame"):
        privatize(model, rows, conditions, mech(epsilon=1.0, temperature=0.7))
    with pytest.raises(InputError, match="one row per table row"):
        privatize(model, rows.drop(columns=["target", "sex"]), conditions.head(2), mech(epsilon=1.0, temperature=0.7))


def test_small_library_mistakes_name_themselves(tiny_image_model, digits, tmp_path):
    from cadp.data import load_table
    from cadp.errors import ModelError
    from cadp.hub import load_model
    from cadp.privatize import latent_difference_maps

    x, y = digits
    result = privatize(tiny_image_model, x, y, mech(temperature=0.7))
    assert len(latent_difference_maps(tiny_image_model, result.latent[0], result.noisy_latent[0])) == 2
    with pytest.raises(InputError, match="one record's latent"):
        latent_difference_maps(tiny_image_model, result.latent, result.noisy_latent)  # the whole batch
    with pytest.raises(ModelError, match="a revision applies only to Hub repos"):
        load_model("mnist-cinn", revision="v0.2.0")
    with pytest.raises(InputError, match="does not exist"):
        load_table(str(tmp_path / "nope.csv"))


def test_a_seed_out_of_range_or_a_repeated_column_is_a_plain_error(tiny_image_model, digits):
    import argparse

    from cadp.mechanisms import new_generator, seed_option

    x, y = digits
    with pytest.raises(InputError, match=r"seed must be a whole number from 0 to 2\*\*63 - 1, got 18446744073709551616"):
        privatize(tiny_image_model, x, y, make_mechanism("laplace", 1.0, temperature=0.7), seed=2 ** 64)
    with pytest.raises(InputError, match="seed must be"):
        new_generator(-1)
    assert seed_option("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="must be a whole number from 0 to 2\\*\\*63 - 1, got '9e99'"):
        seed_option("9e99")
    frame = load_table("diabetes").frame.head(3)
    twice = pd.concat([frame, frame[["bmi"]]], axis=1)
    with pytest.raises(InputError, match=r"column \['bmi'\] appears more than once"):
        privatize(load_folder(bundled("diabetes-cinn")).model, twice, None, make_mechanism("laplace", 1.0, temperature=0.7))


def test_a_table_read_as_text_is_told_why_its_numbers_are_unseen():
    frame = load_table("heart").frame.head(3).astype(str)  # pd.read_csv(dtype=str): 1 becomes '1'
    model = load_folder(bundled("heart-cinn")).model
    with pytest.raises(InputError, match="holds the text '.*' where the model knows the number: read numbers as "
                                         "numbers"):
        privatize(model, frame, None, make_mechanism("laplace", 1.0, temperature=0.7))


def test_a_table_model_without_conditions_says_so_in_its_guarantee():
    from cadp.mechanisms import NO_CONDITION_TERMS, NOTHING_KEPT_TERMS

    frame = pd.DataFrame({"age": np.arange(40.0) % 17 + 30, "bmi": np.arange(40.0) % 7 + 20})
    model = fit_tabular(frame, [], name="plain", dataset="test", steps=5, seed=0)
    result = privatize(model, frame, None, make_mechanism("laplace", 1.0, temperature=0.7), seed=0)
    assert NO_CONDITION_TERMS in result.guarantee and NOTHING_KEPT_TERMS not in result.guarantee


def test_cells_read_as_the_training_mean_are_named_in_the_notes():
    model = load_folder(bundled("heart-cinn")).model
    rows = load_table("heart").frame.head(3).astype({"age": object, "chol": float})
    rows.loc[0, "age"], rows.loc[1, "age"], rows.loc[2, "chol"] = "abc", np.nan, np.inf
    result = privatize(model, rows, None, mech(epsilon=1.0, temperature=0.7), seed=0)
    age, chol = (model.data_encoder.spec(name).mean for name in ("age", "chol"))
    assert result.notes == [f"age: 2 cells empty, not a number or infinite, read as the model's stored mean {age:.4g}",
                            f"chol: 1 cell empty, not a number or infinite, read as the model's stored mean {chol:.4g}"]
    assert np.isfinite(result.noisy_latent).all()  # an infinite cell never reaches the latent
    assert privatize(model, load_table("heart").frame.head(3), None, mech(epsilon=1.0, temperature=0.7)).notes == []


def test_a_seeded_release_says_first_that_it_is_not_private(tiny_image_model, digits):
    from cadp.mechanisms import make_mechanism

    pixels, labels = digits
    result = privatize(tiny_image_model, pixels[:2], labels[:2], make_mechanism("laplace", 1, temperature=0.7),
                       seed=3)
    assert result.guarantee.startswith("NOT PRIVATE: noise from a fixed seed (not private: reproducible seed)")


def test_a_latent_that_is_not_finite_is_never_released(monkeypatch):
    """NaN passes through the noise and would tell which record overflowed: nothing is released instead."""
    model = load_folder(bundled("heart-cinn")).model
    rows = load_table("heart").frame.head(3)
    encode = model.encode

    def overflowing(data, condition):
        latent = encode(data, condition)
        latent[1, 0] = float("inf")
        return latent

    monkeypatch.setattr(model, "encode", overflowing)
    with pytest.raises(InputError, match="record 1 .* has a latent that is not finite"):
        privatize(model, rows, None, mech(epsilon=1.0, temperature=0.7))


def test_pixels_and_labels_are_checked_wherever_the_bad_value_is(tiny_image_model, digits):
    """One range check per batch (pixels and integer labels): a bad value anywhere, of any dtype, is refused
    with the same words, and the labels kept in the result are the release's own copy."""
    x, y = digits
    laplace = mech(temperature=0.7)
    for bad in (float("nan"), float("inf"), -float("inf"), -0.5, 255.5, 1e30):
        for where in ((0, 0, 0, 0), (len(x) - 1, 0, 27, 27), (3, 0, 14, 5)):
            pixels = x.double().clone()
            pixels[where] = bad
            with pytest.raises(InputError, match=r"pixel values must be finite and within \[0, 255\]"):
                privatize(tiny_image_model, pixels, y, laplace, seed=0)
    fractions = x.float() / 255  # scaled to [0, 1] whatever the dtype
    for dtype in (torch.float16, torch.float32, torch.float64):
        with pytest.raises(InputError, match=r"look scaled to \[0, 1\]"):
            privatize(tiny_image_model, fractions.to(dtype), y, laplace, seed=0)
    unsigned = [getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)]
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64, *unsigned):  # (no aminmax for uint16-64)
        labels, expected = y.to(dtype, copy=True), y.long().clone()
        result = privatize(tiny_image_model, x, labels, laplace, seed=0)
        assert result.condition["label"].dtype == torch.int64 and torch.equal(result.condition["label"], expected)
        labels[0] = 9 - int(labels[0])  # the caller's tensor changes later: the result's record does not
        assert torch.equal(result.condition["label"], expected)
    for outside, shown in ((10, 10), (-1, -1), (255, 255)):
        labels = y.clone()
        labels[len(y) // 2] = outside
        with pytest.raises(InputError, match=f"label {shown} is out of range: labels must be class indices 0..9"):
            privatize(tiny_image_model, x, labels, laplace, seed=0)
    with pytest.raises(InputError, match="class indices or class names, got True"):
        privatize(tiny_image_model, x, torch.ones(len(y), dtype=torch.bool), laplace, seed=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the release of 1e308 latents: overflowing arithmetic
def test_every_kind_of_latent_that_is_not_finite_is_refused_and_large_finite_ones_are_not(monkeypatch):
    """The check sums in float64 first: NaN, inf and -inf anywhere still stop the release; a float64 latent whose
    sum overflows but whose values are finite is not taken for one that is not finite."""
    model = load_folder(bundled("heart-cinn")).model
    rows = load_table("heart").frame.head(3)
    encode = model.encode
    for bad in (float("nan"), float("inf"), -float("inf")):
        def overflowing(data, condition, bad=bad):
            latent = encode(data, condition)
            latent[2, -1] = bad
            return latent

        monkeypatch.setattr(model, "encode", overflowing)
        with pytest.raises(InputError, match="record 2 .* has a latent that is not finite"):
            privatize(model, rows, None, mech(epsilon=1.0, temperature=0.7))

    def large(data, condition):
        latent = encode(data, condition).double()
        latent[:, :2] = 1e308  # finite values, an infinite sum
        return latent

    decode = model.decode
    monkeypatch.setattr(model, "encode", large)
    monkeypatch.setattr(model, "decode", lambda latent, condition: decode(latent.float(), condition))
    result = privatize(model, rows, None, mech(epsilon=1.0, temperature=0.7))
    assert len(result.privatized_frame) == 3


def test_release_guarantee_refuses_what_privatize_refuses(tiny_image_model, digits):
    """Terms are never stated ahead of a release for arguments the release itself refuses."""
    x, y = digits
    wrong = {"sex": ConditionHandling("resampled")}
    with pytest.raises(InputError, match="unknown attribute \\['sex'\\]"):
        privatize(tiny_image_model, x[:1], y[:1], mech(temperature=0.7), condition_handling=wrong)
    with pytest.raises(InputError, match="unknown attribute \\['sex'\\]"):
        release_guarantee(tiny_image_model, mech(temperature=0.7), condition_handling=wrong)
    with pytest.raises(InputError, match="maps a condition's name to a cadp.mechanisms.ConditionHandling"):
        release_guarantee(tiny_image_model, mech(temperature=0.7), condition_handling={"label": "resampled"})
    with pytest.raises(InputError, match="mechanism must be a Mechanism"):
        release_guarantee(tiny_image_model, "laplace")
    table = load_folder(bundled("diabetes-cinn")).model
    with pytest.raises(InputError, match="unknown attribute \\['label'\\]"):
        release_guarantee(table, mech(temperature=0.7), condition_handling={"label": ConditionHandling("resampled")})
    # what it accepts, it states as privatize does
    handling = {"label": ConditionHandling("randomized", 1.0)}
    result = privatize(tiny_image_model, x[:1], y[:1], mech(temperature=0.7), condition_handling=handling)
    assert release_guarantee(tiny_image_model, mech(temperature=0.7), condition_handling=handling) == result.guarantee


def test_a_number_outside_the_fitted_range_comes_back_at_its_edge_and_the_rest_of_the_row_as_given():
    """At epsilon = infinity (no noise) a row with one impossible value keeps its other columns, and the
    release says which column was out of range: the encoder reads the value as the range's nearer end."""
    model = load_folder(bundled("diabetes-cinn")).model
    row = load_table("diabetes").frame.head(1)
    bmi = model.data_encoder.spec("bmi")
    for given, edge in [(1e8, bmi.high), (1e5, bmi.high), (-1e5, bmi.low)]:
        result = privatize(model, row.assign(bmi=[given]), None, NoNoise())
        pd.testing.assert_frame_equal(result.privatized_frame, row.assign(bmi=[edge]), check_dtype=False)
        assert result.notes == [f"bmi: 1 cell outside the range the model knows ({bmi.low:.4g} to "
                                f"{bmi.high:.4g}), read as its nearer end"]
    assert privatize(model, row.assign(bmi=[bmi.high]), None, NoNoise()).notes == []  # the edge itself is inside


def test_booleans_in_a_numeric_column_are_read_like_text():
    """True is not the number 1 in a column of BMIs: it is read as the training mean, as text there is, and noted."""
    model = load_folder(bundled("diabetes-cinn")).model
    rows = load_table("diabetes").frame.head(2)
    as_text = privatize(model, rows.assign(bmi=["abc", "abc"]), None, NoNoise())
    for booleans in ([True, False], pd.Series([True, False], dtype="boolean"),
                     pd.Series([True, np.bool_(False)], dtype=object)):
        result = privatize(model, rows.assign(bmi=booleans), None, NoNoise())
        pd.testing.assert_frame_equal(result.privatized_frame, as_text.privatized_frame)
        assert result.notes == as_text.notes == [
            f"bmi: 2 cells empty, not a number or infinite, read as the model's stored mean "
            f"{model.data_encoder.spec('bmi').mean:.4g}"]
    mixed = privatize(model, rows.assign(bmi=pd.Series([True, 30.1], dtype=object)), None, NoNoise())
    assert mixed.privatized_frame["bmi"].tolist() == [as_text.privatized_frame["bmi"][0], 30.1]
    assert len(mixed.notes) == 1 and mixed.notes[0].startswith("bmi: 1 cell empty, not a number")


def test_stated_epsilons_are_never_less_than_what_is_spent(tiny_image_model, digits):
    """epsilon 1.0000004 with a label randomized at 1.0000004 was stated as 'epsilon = 1' and 'Total ... 2'."""
    x, y = digits
    epsilon = 1.0000004
    terms = privatize(tiny_image_model, x[:1], y[:1], make_mechanism("laplace", epsilon, temperature=0.7),
                      condition_handling={"label": ConditionHandling("randomized", epsilon)}).guarantee
    assert "with epsilon = 1.0000004 " in terms and "randomized response with epsilon = 1.0000004 " in terms
    assert "Total epsilon of this release (basic composition): 2.0000008." in terms  # the parts' exact sum
    gaussian = privatize(tiny_image_model, x[:1], y[:1], make_mechanism("gaussian", 1, delta=1e-5, temperature=0.7),
                         condition_handling={"label": ConditionHandling("randomized", 1)}).guarantee
    assert "Total epsilon of this release (basic composition): 2, with delta = 1e-05." in gaussian  # (ε, δ) together
    metric = make_mechanism("metric", 1).guarantee(d_typ=3.0, d_nn=2.0)
    assert "for two records with the same kept condition" in metric and "same condition," not in metric
    # as a release states it: the condition randomized (privatize passes the kept names, here none)
    released = privatize(tiny_image_model, x[:1], y[:1], make_mechanism("metric", 1),
                         condition_handling={"label": ConditionHandling("randomized", 1)}).guarantee
    assert "kept condition" not in released and "for any two records, in the latent" in released
    nothing_kept = make_mechanism("metric", 1).guarantee(d_typ=3.0, d_nn=2.0, kept=False)
    assert "kept condition" not in nothing_kept and "for any two records, in the latent" in nothing_kept
    no_condition = make_mechanism("metric", 1).guarantee(d_typ=3.0, d_nn=2.0, kept=None)
    assert "condition" not in no_condition.split(" No clipping")[0] and "Between two typical distinct records (" \
        in no_condition


def test_released_table_numbers_follow_the_model_never_the_input():
    """Released numbers were written as the input's column held them: whole numbers rounded where the input held
    integers. A one-row file whose bmi was written 32 came back rounded, one written 32.1 did not (the release told
    whether the record's own value was whole), and a record's release changed with its batch mates' values. The
    model alone decides: integers where every value it was fitted on was whole, else its decimal places."""
    from cadp.data import load_table
    from cadp.hub import load_folder
    from cadp.train import split_table
    from tests.conftest import bundled

    _, held_out = split_table(load_table("diabetes").frame, 0)
    model = load_folder(bundled("diabetes-cinn")).model
    mechanism = make_mechanism("laplace", 2, temperature=0.7)
    one = held_out.head(1).reset_index(drop=True)
    written_whole = privatize(model, one.assign(bmi=[32]), None, mechanism, seed=5).privatized_frame
    written_decimal = privatize(model, one.assign(bmi=[32.0]), None, mechanism, seed=5).privatized_frame
    pd.testing.assert_frame_equal(written_whole, written_decimal)  # the same value, however it is written
    assert written_whole["bmi"].dtype == np.float64 and written_whole["age"].dtype == np.int64
    # batch mates: the first row's release is the same whatever the second row holds or how its column is typed
    two = held_out.head(2).reset_index(drop=True)
    firsts = [privatize(model, two.assign(bmi=[32.0, other]), None, mechanism, seed=5).privatized_frame.iloc[[0]]
              for other in (21.6, 22, 22.0)]
    for first in firsts[1:]:
        pd.testing.assert_frame_equal(first, firsts[0])
    rows = held_out.head(20).reset_index(drop=True)
    whole = ["age", "bp", "s1", "s6", "progression"]
    as_integers = rows.assign(**{c: rows[c].round().astype("int64") for c in whole}, sex=rows["sex"].astype("float64"))
    released = privatize(model, as_integers, None, mechanism, seed=3).privatized_frame
    floats = privatize(model, as_integers.astype({c: "float64" for c in whole}).astype({"sex": "Int64"}), None,
                       mechanism, seed=3).privatized_frame
    pd.testing.assert_frame_equal(released, floats)
    specs = {spec.name: spec for spec in [*model.data_encoder.columns, *model.condition_encoder.columns]}
    for name in released.columns:
        integer = specs[name].kind == "categorical" or specs[name].integer  # (diabetes' categories: sex 1, 2)
        assert released[name].dtype == (np.int64 if integer else np.float64), name


def test_a_released_column_is_typed_by_its_model_alone():
    from cadp.data import ColumnSpec
    from cadp.privatize import released_column

    whole = ColumnSpec("age", "numeric", integer=True, dtype="float64", decimals=0)
    assert released_column(np.array([-3.2, 300.7, 41.5]), whole).tolist() == [-3, 301, 42]
    assert released_column(np.array([-3.2, 300.7]), whole).dtype == np.int64
    decimals = ColumnSpec("bmi", "numeric", dtype="float64", decimals=1)
    assert released_column(np.array([26.7, 30.0]), decimals).dtype == np.float64
    gaps = ColumnSpec("sex", "categorical", categories=[1.0, 2.0, None], dtype="float64")
    released = released_column(gaps.category_values(np.array([0, 2, 1])), gaps)
    assert str(released.dtype) == "Int64" and released[0] == 1 and released[1] is pd.NA and released[2] == 2
    text = ColumnSpec("thal", "categorical", categories=["fixed", "normal"], dtype="object")
    assert list(released_column(text.category_values(np.array([1, 0])), text)) == ["normal", "fixed"]
    flags = ColumnSpec("smoker", "categorical", categories=[False, True], dtype="bool")
    assert released_column(flags.category_values(np.array([1, 0])), flags).dtype == bool


def test_privatize_reports_progress_after_each_chunk(tiny_image_model, digits):
    calls = []
    x, y = digits[0][:5], digits[1][:5]
    mechanism = make_mechanism("laplace", 10, temperature=0.7)
    chunked = privatize(tiny_image_model.eval(), x, y, mechanism, seed=4, batch_size=2,
                        progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    whole = privatize(tiny_image_model, x, y, mechanism, seed=4)
    assert chunked.privatized.shape == whole.privatized.shape and chunked.batches == [2, 2, 1]


def test_a_condition_frame_is_matched_to_the_rows_by_index_not_by_position():
    """A kept condition given apart from the rows is released exactly: paired by position, a reversed condition
    frame released each row with another person's sex."""
    loaded = load_folder(bundled("diabetes-cinn"))
    rows = load_table("diabetes").frame.head(6)
    rows.index = [100, 101, 102, 103, 104, 105]
    reversed_conditions = rows[["sex"]].iloc[::-1]
    result = privatize(loaded.model, rows.drop(columns=["sex"]), reversed_conditions, NoNoise())
    assert result.privatized_frame["sex"].tolist() == rows["sex"].tolist()
    assert result.original_frame["sex"].tolist() == rows["sex"].tolist()
    assert result.privatized_frame.index.tolist() == rows.index.tolist()
    other_labels = rows[["sex"]].reset_index(drop=True)  # 0..5 against 100..105: which row is whose?
    with pytest.raises(InputError, match="condition frame's index differs from the rows' index"):
        privatize(loaded.model, rows.drop(columns=["sex"]), other_labels, NoNoise())
    same = privatize(loaded.model, rows.drop(columns=["sex"]).reset_index(drop=True), other_labels, NoNoise())
    assert same.privatized_frame["sex"].tolist() == rows["sex"].tolist()
    rows.index = [0, "a", 2, 3, 4, 5]  # labels of mixed types: matched too (they do not sort)
    mixed = privatize(loaded.model, rows.drop(columns=["sex"]), rows[["sex"]].iloc[::-1], NoNoise())
    assert mixed.privatized_frame["sex"].tolist() == rows["sex"].tolist()


def test_a_paper_release_is_not_called_private(tiny_image_model, digits):
    """paper gives no formal guarantee (PRIVACY.md): a script gating on result.private must not pass it."""
    x, y = digits
    result = privatize(tiny_image_model, x[:2], y[:2], mech("paper", 1.0))
    assert not result.private and result.epsilon_spent is None and result.noise_source == "OS entropy"


def test_pandas_category_and_nullable_integer_inputs_are_released_as_plain_ones():
    """Released columns took the input's pandas category type (its categories, in its order) where every released
    value was among them: the type told whether the release matched the records' own values. Now the release of
    such columns is the release of the same values as plain ones."""
    loaded = load_folder(bundled("heart-cinn"))
    rows = load_table(loaded.config.dataset).frame.head(8).copy()
    typed = rows.astype({"thal": "category", "age": "Int64"})
    typed.loc[typed.index[1], "age"] = pd.NA
    plain = rows.astype({"age": "float64"})
    plain.loc[plain.index[1], "age"] = np.nan
    for mechanism in (NoNoise(), mech(temperature=0.7)):
        released = privatize(loaded.model, typed, None, mechanism, seed=2).privatized_frame
        pd.testing.assert_frame_equal(released, privatize(loaded.model, plain, None, mechanism, seed=2).privatized_frame)
        assert not isinstance(released["thal"].dtype, pd.CategoricalDtype) and released["age"].dtype == np.int64


def test_an_empty_category_released_into_an_integer_column_stays_empty():
    """A nullable integer condition with empty cells: pd.NA was "unseen when the model was fitted" (the model
    knew None), and an empty category released into an integer column came out as -9223372036854775808."""
    rows = load_table("diabetes").frame.head(120).copy()
    rows["sex"] = rows["sex"].astype("Int64")
    rows.loc[rows.index[:10], "sex"] = pd.NA
    model = fit_tabular(rows, ["sex"], steps=5, name="t", dataset="t.csv")
    result = privatize(model, rows.head(12), None, NoNoise())
    assert result.privatized_frame["sex"].dtype == "Int64"
    assert result.privatized_frame["sex"].isna().tolist() == [True] * 10 + [False] * 2
    plain = rows.head(12).astype({"sex": "float64"}).fillna({"sex": 1}).astype({"sex": "int64"})
    resampled = privatize(model, pd.concat([plain] * 20), None, NoNoise(),  # some released empty: not int64's least
                          condition_handling={"sex": ConditionHandling("resampled")}, seed=0).privatized_frame["sex"]
    assert resampled.isna().any() and (resampled.dropna() > 0).all()
    assert resampled.dtype == "Int64"  # whole numbers with gaps, not floats written "2.0"


def test_a_condition_of_whole_numbers_read_as_floats_for_its_gaps_is_released_as_whole_numbers():
    """A CSV's condition column of 1/2 with empty cells is read as floats: it was released "1.0"/"2.0", and the
    app's table showed "<NA>" for an empty cell."""
    from cadp import compare

    rows = load_table("diabetes").frame.head(120).copy()
    rows["sex"] = rows["sex"].astype("float64")
    rows.loc[rows.index[:10], "sex"] = np.nan
    model = fit_tabular(rows, ["sex"], steps=5, name="t", dataset="t.csv")
    released = privatize(model, rows.head(12), None, NoNoise()).privatized_frame[["sex"]]
    assert released["sex"].dtype == "Int64" and released["sex"].tolist()[9:] == [pd.NA, 1, 2]
    shown = compare.highlighted_changes(rows.head(12)[["sex"]], released).to_html()
    assert "&lt;NA&gt;" not in shown and "nan" not in shown


@pytest.mark.parametrize("kind", ["table", "image"])
def test_a_release_the_network_decodes_to_values_that_are_not_finite_is_refused(monkeypatch, kind):
    """A NaN from the decoder came out as made-up values (a column's range end, a first category, pixel 0), listed
    as released."""
    from cadp.errors import ModelError

    if kind == "table":
        model = load_folder(bundled("heart-cinn")).model
        data, condition = load_table("heart").frame.head(4), None
    else:
        model = load_folder(bundled("mnist-cinn")).model
        data, condition = torch.full((4, 1, 28, 28), 100.0), ClassIndices(torch.tensor([1, 2, 3, 4]))
    decode = model.decode

    def broken(latent, condition):
        out = decode(latent, condition).clone()
        out[-1] = float("nan")  # the last row of each call: the noisy release's
        return out

    monkeypatch.setattr(model, "decode", broken)
    with pytest.raises(ModelError, match=r"decoded the noisy latent of record 3 \(counting from 0\) to values that "
                                         r"are not finite .*: nothing was released"):
        privatize(model, data, condition, mech(epsilon=1.0, temperature=0.7), seed=0)


def test_a_resampled_condition_is_drawn_from_the_public_tables_frequencies_not_config_json(tmp_path):
    """A copied folder whose config.json gave sex the prior [0.99, 0.01] released every row as sex=1 while its
    terms said "resampled from its frequencies in the public diabetes data" (0.53 / 0.47)."""
    import json
    import shutil

    from cadp.data import load_table
    from cadp.hub import BUNDLED_DIR, load_folder
    from cadp.mechanisms import ConditionHandling, make_mechanism, stated_public_terms
    from cadp.privatize import privatize

    copy = tmp_path / "copied"
    shutil.copytree(BUNDLED_DIR / "diabetes-cinn", copy)
    config = json.loads((copy / "config.json").read_text())
    config["condition_priors"] = {"sex": [0.99, 0.01]}
    (copy / "config.json").write_text(json.dumps(config))
    model = load_folder(copy).model
    rows = load_table("diabetes").frame
    rows = pd.concat([rows] * 5, ignore_index=True)  # 2,210 rows
    result = privatize(model, rows, None, make_mechanism("laplace", 1.0),
                       condition_handling={"sex": ConditionHandling("resampled")})
    share = float((result.privatized_frame["sex"] == 1).mean())
    assert abs(share - 0.5317) < 0.05, share  # the public table's frequency of sex=1
    assert "sex resampled from its frequencies in the public diabetes data (costs 0)" in result.guarantee
    # the same weights as the bundled model, byte for byte: its training data is known (other weights: config.json's
    # word, tests/test_hub.py)
    assert stated_public_terms("diabetes", "config") not in result.guarantee
    assert "The model was trained without DP on public data" in result.guarantee
