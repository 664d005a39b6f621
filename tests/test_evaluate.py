"""Audits, re-identification and the utility sweep of cadp.evaluate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import beta, binom

from cadp.data import ImageDataset, load_table
from cadp.errors import InputError
from cadp.evaluate import (
    DEFAULT_EPSILONS,
    PAPER_LABEL,
    audit_model,
    bits_per_dim_report,
    bpd_card_markdown,
    clopper_pearson,
    distinguishing_audit,
    encode_records,
    ks_statistic,
    latent_audit,
    main,
    reidentification,
    release_centers,
    utility_sweep,
    worst_case_latents,
)
from cadp.hub import load_folder, read_eval, save_model, update_eval
from cadp.mechanisms import LaplaceMechanism, make_mechanism
from cadp.models import ImageCINN, ImageModelConfig
from cadp.train import fit_tabular, split_table
from tests.conftest import bundled

DIM = 64


def worst_case_pair(dim: int = DIM) -> tuple[torch.Tensor, torch.Tensor]:
    """Two latents that both clip to opposite ends of one axis: their clipped L1 / L2 distance is exactly 2R,
    the sensitivity the laplace / gaussian calibration assumes, so the audit is as tight as it can be."""
    first, second = torch.zeros(dim), torch.zeros(dim)
    first[0], second[0] = 50.0, -50.0
    return first, second


# --------------------------------------------------------------------------- Clopper–Pearson

@pytest.mark.parametrize("successes,trials", [(0, 50), (1, 50), (17, 50), (49, 50), (50, 50), (321, 5000)])
def test_clopper_pearson_matches_beta_quantiles_and_binomial_tails(successes, trials):
    lower, upper = clopper_pearson(successes, trials, 0.95)
    expected_lower = 0.0 if successes == 0 else beta.ppf(0.025, successes, trials - successes + 1)
    expected_upper = 1.0 if successes == trials else beta.ppf(0.975, successes + 1, trials - successes)
    assert lower == pytest.approx(expected_lower, abs=1e-10)
    assert upper == pytest.approx(expected_upper, abs=1e-10)
    # the defining property: at each bound, the observed count sits exactly in a 2.5% tail
    if successes > 0:
        assert binom.sf(successes - 1, trials, lower) == pytest.approx(0.025, rel=1e-6)
    if successes < trials:
        assert binom.cdf(successes, trials, upper) == pytest.approx(0.025, rel=1e-6)


# --------------------------------------------------------------------------- distinguishing audit

@pytest.mark.parametrize("name", ["laplace", "gaussian"])
@pytest.mark.parametrize("epsilon", [1.0, 5.0])
def test_audit_lower_bound_stays_at_or_below_the_claim(name, epsilon):
    first, second = worst_case_pair()
    mechanism = make_mechanism(name, epsilon, delta=1e-5 if name == "gaussian" else None, temperature=0.7)
    result = latent_audit(first, second, mechanism, 10_000, torch.Generator().manual_seed(7))
    assert result.claimed_epsilon == epsilon
    assert result.epsilon_lower_bound <= epsilon
    assert result.releases == 10_000 and result.confidence == 0.95
    if name == "laplace":
        # the audit is not vacuous: on the worst-case pair it comes close to the claim
        assert result.epsilon_lower_bound > 0.7 * epsilon


def test_audit_detects_the_paper_mechanism_understating_its_sensitivity():
    # One coordinate, records at +10 and -10: the paper clips the (1 x 1) batch matrix to norm
    # s = min(eps/2, 4), so the two records become +s and -s, a spread of 2s, but the Laplace
    # scale is s/eps, calibrated for a spread of s. The true privacy loss is 2 * eps: the audit
    # must prove a bound above the claimed eps (at eps = 1: about 1.9 with 10,000 releases).
    mechanism = make_mechanism("paper", 1.0)
    result = latent_audit(torch.tensor([10.0]), torch.tensor([-10.0]), mechanism, 10_000,
                          torch.Generator().manual_seed(3))
    assert result.claimed_epsilon is None and result.label == PAPER_LABEL
    assert result.batch_size == 1
    assert result.epsilon_lower_bound > 1.0


def test_audit_of_paper_on_realistic_latents_far_exceeds_its_nominal_epsilon():
    # In D dimensions a single-record batch is clipped in its largest |z_j| only, so the two clipped
    # latents differ by up to 2s in every coordinate: the loss grows with D. With 4,000 releases the
    # test separates the records perfectly, and the bound saturates near log(2000 / 3.7) ~ 6.3.
    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(784, generator=generator), torch.randn(784, generator=generator)
    paper = latent_audit(first, second, make_mechanism("paper", 1.0), 4000, generator)
    laplace = latent_audit(first, second, make_mechanism("laplace", 1.0, temperature=0.7), 4000, generator)
    assert paper.epsilon_lower_bound > 5.0
    assert laplace.epsilon_lower_bound <= 1.0


def test_metric_audit_claims_epsilon_unit_times_the_latent_distance():
    first, second = torch.zeros(DIM), torch.zeros(DIM)
    second[0] = 20.0  # L1 distance 20: at eps_unit 0.1 the claim between these records is eps = 2
    result = latent_audit(first, second, make_mechanism("metric", 0.1), 10_000, torch.Generator().manual_seed(4))
    assert result.claimed_epsilon == pytest.approx(2.0)
    assert 1.4 < result.epsilon_lower_bound <= 2.0


def test_audit_of_identical_records_proves_nothing():
    latent = torch.randn(DIM, generator=torch.Generator().manual_seed(1))
    result = latent_audit(latent, latent, make_mechanism("laplace", 5.0, temperature=0.7), 2000,
                          torch.Generator().manual_seed(2))
    assert result.epsilon_lower_bound < 0.5


def test_audit_refuses_mismatched_latents():
    with pytest.raises(InputError, match="differ in size"):
        latent_audit(torch.zeros(3), torch.zeros(4), make_mechanism("metric", 1.0), 100)


@pytest.mark.parametrize("name", ["laplace", "gaussian"])
def test_the_worst_case_latents_attain_the_sensitivity(name):
    mechanism = make_mechanism(name, 3.0, delta=1e-5 if name == "gaussian" else None, temperature=0.7)
    first, second = (mechanism.center(latent) for latent in worst_case_latents(mechanism, DIM))
    assert float((first - second).abs().sum()) == pytest.approx(2 * mechanism.clip_radius)
    assert float((first - second).norm()) == pytest.approx(2 * mechanism.clip_radius)


class HalfNoiseLaplace(LaplaceMechanism):
    """A broken laplace mechanism: half the noise its epsilon needs (the paper code's 2x, in a per-sample clip)."""

    @property
    def scale(self) -> float:
        return self.clip_radius / self.epsilon


def test_the_worst_case_audit_catches_a_mechanism_with_half_the_noise():
    broken = HalfNoiseLaplace.create(1.0, None, 0.7)
    result = latent_audit(*worst_case_latents(broken, DIM), broken, 10_000, torch.Generator().manual_seed(5))
    assert result.epsilon_lower_bound > 1.0 and result.verdict.startswith("exceeds the claim: at 95% confidence the code loses more than it claims (a correct mechanism does this by chance in at most 5% of audits")
    correct = make_mechanism("laplace", 1.0, temperature=0.7)
    result = latent_audit(*worst_case_latents(correct, DIM), correct, 10_000, torch.Generator().manual_seed(5))
    assert 0.7 < result.epsilon_lower_bound <= 1.0 and result.verdict == "no violation found (the bound is at or below the claim)"


def test_a_gaussian_with_half_its_noise_passes_the_audit_as_the_audit_page_says():
    """The limit of the audit's power that the audit page states: a pass is not a proof."""
    from cadp.mechanisms import GaussianMechanism

    class HalfSigmaGaussian(GaussianMechanism):
        @property
        def sigma(self) -> float:
            return super().sigma / 2

    broken = HalfSigmaGaussian.create(1.0, 1e-5, None, 0.7)
    result = latent_audit(*worst_case_latents(broken, DIM), broken, 10_000, torch.Generator().manual_seed(5))
    assert result.verdict.startswith("no violation found")


def test_model_audit_tells_a_passed_test_from_a_claim_too_large_to_test(tmp_path):
    loaded = tiny_image_folder(tmp_path)
    audit = audit_model(loaded, epsilons=(0.5, 3, 10), releases=4000)
    ceiling = audit["provable_ceiling"]
    assert 6 < ceiling < 7  # 2,000 held-out releases per record
    rows = {(row["mechanism"], row["nominal_epsilon"]): row for row in audit["results"]}
    for name in ("laplace", "gaussian"):
        assert rows[(name, 0.5)]["verdict"] == rows[(name, 3.0)]["verdict"] == "no violation found (the bound is at or below the claim)"
        assert rows[(name, 10.0)]["verdict"].startswith("not testable: 4,000 releases can show at most epsilon")
        assert rows[(name, 10.0)]["epsilon_lower_bound"] <= ceiling
    assert rows[("laplace", 3.0)]["epsilon_lower_bound"] > 0.7 * 3  # the worst-case pair gives the test its power
    for epsilon in (0.5, 3.0):  # the paper code's batch clip bounds max |z_j| only: it loses far more than epsilon
        assert rows[("paper", epsilon)]["verdict"] is None
        assert rows[("paper", epsilon)]["epsilon_lower_bound"] > epsilon


# --------------------------------------------------------------------------- re-identification

def test_reidentification_of_exact_copies_is_certain():
    originals = torch.rand(40, 1, 8, 8) * 255
    result = reidentification(originals, originals.clone(), latents_original=originals.reshape(40, -1),
                              latents_released=originals.reshape(40, -1))
    assert result == {"pixel": 1.0, "latent": 1.0, "chance": 1 / 40, "chance_given_condition": None, "n": 40}


def test_reidentification_of_unrelated_releases_is_near_chance():
    generator = torch.Generator().manual_seed(0)
    originals = torch.rand(500, 1, 8, 8, generator=generator)
    releases = torch.rand(500, 1, 8, 8, generator=generator)
    result = reidentification(originals, releases)
    assert result["latent"] is None and result["chance"] == 1 / 500
    assert result["pixel"] < 10 / 500  # chance is 1/500; 10 hits would be a 5-sigma excess


def test_the_latent_attacker_matches_releases_to_the_originals_clipped_latents():
    """Releases are centred on the clipped latents: matched to those (in the noise's norm) the attacker finds
    its records; matched to the unclipped latents, whose directions the clip keeps but whose sizes it does not,
    it finds far fewer."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(200, 32, generator=generator) * torch.rand(200, 1, generator=generator) * 4
    mechanism = make_mechanism("laplace", 200.0, clip_radius=2.0)
    releases = mechanism(latents, generator)
    pixels = torch.zeros(200, 1)
    clipped = reidentification(pixels, pixels, latents_original=release_centers(mechanism, latents),
                               latents_released=releases, latent_norm=mechanism.likelihood_norm)["latent"]
    unclipped = reidentification(pixels, pixels, latents_original=latents, latents_released=releases)["latent"]
    assert clipped > 0.9 and unclipped < 0.5


def test_the_attackers_use_the_label_released_with_each_record():
    """The label is released exactly: an attacker matches a release only to the originals with that label. Two
    classes of four records each, releases of an original plus noise that makes it nearer to a record of the
    other class: with the label the attackers find them all, without it none."""
    originals = torch.tensor([[0.0], [10.0], [20.0], [30.0], [1.0], [11.0], [21.0], [31.0]])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    releases = originals + torch.tensor([[0.9], [0.9], [0.9], [0.9], [-0.9], [-0.9], [-0.9], [-0.9]])
    blind = reidentification(originals, releases, latents_original=originals, latents_released=releases)
    given = reidentification(originals, releases, latents_original=originals, latents_released=releases,
                             conditions=labels)
    assert blind["pixel"] == blind["latent"] == 0.0 and blind["chance_given_condition"] is None
    assert given["pixel"] == given["latent"] == 1.0
    assert given["chance"] == 1 / 8 and given["chance_given_condition"] == 1 / 4


def test_reidentification_needs_matching_counts():
    with pytest.raises(InputError, match="as many releases"):
        reidentification(torch.zeros(3, 4), torch.zeros(2, 4))


# --------------------------------------------------------------------------- model-level

def tiny_image_folder(tmp_path):
    torch.manual_seed(0)
    config = ImageModelConfig(name="t", dataset="mnist", class_names=[str(i) for i in range(10)],
                              conv_width=4, fc_width=8, conv_blocks=[1, 1], fc_blocks=1)
    save_model(ImageCINN(config), tmp_path / "t")
    return load_folder(tmp_path / "t")


def tiny_images(count: int, seed: int) -> ImageDataset:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    images = (torch.rand(count, 1, 28, 28, generator=generator) * 60).to(torch.uint8)
    for index, label in enumerate(labels.tolist()):  # a learnable class signal: a bright band per class
        images[index, 0, 2 * label + 4: 2 * label + 7, 4:24] = 230
    return ImageDataset(images, labels, [str(i) for i in range(10)], "mnist")


def test_distinguishing_audit_on_images_encodes_the_records(tmp_path):
    loaded = tiny_image_folder(tmp_path)
    data = tiny_images(2, 0)
    shares = []
    result = distinguishing_audit(loaded.model, data.images[0].float(), data.images[1].float(), 3,
                                  make_mechanism("laplace", 2.0, temperature=0.7), releases=2000,
                                  generator=torch.Generator().manual_seed(0),
                                  progress=lambda share, message: shares.append(share))
    assert result.mechanism == "laplace" and result.claimed_epsilon == 2.0
    assert 0 <= result.epsilon_lower_bound <= 2.0
    assert shares[0] == 0.0 and shares[-1] == 1.0 and shares == sorted(shares)


def test_utility_sweep_quick_writes_the_documented_layout(tmp_path):
    loaded = tiny_image_folder(tmp_path)
    data = (tiny_images(60, 1), tiny_images(30, 2))
    epsilons = [1.0, 1000.0]
    utility = utility_sweep(loaded, epsilons=epsilons, seeds=(0, 1, 2), n_train=60, n_test=30, n_reid=30,
                            cnn_epochs=1, device="cpu", data=data)
    update_eval(loaded.folder, "utility", utility)
    written = json.loads((loaded.folder / "eval.json").read_text())["utility"]
    assert written["epsilons"] == epsilons
    assert written["chance"] == pytest.approx(1 / 30)
    assert set(written["reference"]["o/o"]) == {"mean", "std"}
    assert set(written["methods"]) == {"laplace", "gaussian", "metric", "paper", "dp-pix", "blur", "mosaic"}
    settings = written["settings"]
    assert settings["n_train"] == 60 and settings["n_test"] == 30 and settings["seeds"] == [0, 1, 2]
    assert settings["paper_batch_size"] == 512
    for entry in written["methods"].values():
        length = len(entry["parameters"]) if "parameters" in entry else len(epsilons)
        assert entry["kind"] in ("cadp", "baseline", "reference-reproduction")
        assert isinstance(entry["formal"], bool) and entry["label"]
        for key in ("p/o", "p/p"):
            assert len(entry[key]["mean"]) == len(entry[key]["std"]) == length
            assert all(0 <= v <= 1 for v in entry[key]["mean"])
        for key in ("ssim", "psnr", "reid_pixel", "reid_latent"):
            assert len(entry[key]) == length
    assert written["methods"]["paper"]["kind"] == "reference-reproduction"
    assert PAPER_LABEL in written["methods"]["paper"]["label"]
    assert not written["methods"]["blur"]["formal"] and "not private" in written["methods"]["mosaic"]["label"]
    # an untrained flow is close to identity-like, so at epsilon 1000 the release keeps more of the
    # record than at epsilon 1: the latent attacker re-identifies at least as often
    laplace = written["methods"]["laplace"]
    assert laplace["reid_latent"][1] >= laplace["reid_latent"][0]
    # blur with the smallest sigma keeps the images closest to the originals
    assert written["methods"]["blur"]["ssim"][0] == max(written["methods"]["blur"]["ssim"])


def test_utility_sweep_refuses_unknown_mechanisms(tmp_path):
    with pytest.raises(InputError, match="mechanisms must be among"):
        utility_sweep(tiny_image_folder(tmp_path), mechanisms=["gauss"], data=(tiny_images(10, 0),) * 2)


def test_default_epsilons_are_the_documented_grid():
    assert list(DEFAULT_EPSILONS) == [0.5, 1, 2, 3, 6, 10, 100, 1000, 10000]


@pytest.fixture(scope="module")
def tiny_table_folder(tmp_path_factory):
    table = load_table("diabetes")
    train, test = split_table(table.frame, 0)
    model = fit_tabular(train, table.default_conditions, name="d", dataset="diabetes", steps=20)
    folder = tmp_path_factory.mktemp("table") / "d"
    save_model(model, folder)
    return load_folder(folder), (train, test)


def test_tabular_quick_sweep_and_bpd(tiny_table_folder):
    loaded, data = tiny_table_folder
    utility = utility_sweep(loaded, epsilons=[1.0, 100.0], seeds=(0, 1, 2), n_train=120, n_test=60, n_reid=60,
                            device="cpu", data=data)
    assert utility["settings"]["task"] == "predict 'sex' from the data columns"
    assert set(utility["reference"]) >= {"o/o", "o/o_gb", "dcr_holdout"}
    for entry in utility["methods"].values():
        assert len(entry["p/o"]["mean"]) == 2 and len(entry["p/o_gb"]["mean"]) == 2
        assert all(0 <= v <= 1 for v in entry["ks"])
        assert set(entry["columns"]) == set(loaded.config.data_columns)
        assert len(entry["dcr"]) == len(entry["reid_latent"]) == 2
    bpd = bits_per_dim_report(loaded, data=data, samples=200)
    assert bpd["round_trip_exact"], bpd["round_trip_mismatched_columns"]
    assert bpd["round_trip_rows"] == len(data[0])
    assert bpd["round_trip_heldout"]["rows"] == len(data[1])
    numeric = [spec.name for spec in loaded.model.data_encoder.columns if spec.kind == "numeric"]
    assert set(bpd["sample_ks"]) == set(numeric)
    assert all(0 <= v <= 1 for v in bpd["sample_ks"].values())
    assert set(bpd["sample_ks_test_rows"]) == set(bpd["ks_train_vs_test_rows"]) == set(numeric)
    assert str(len(data[0]) + len(data[1])) in bpd["sample_ks_against"]


def test_tabular_quality_with_empty_cells_is_measured_on_the_cells_that_have_values(tiny_table_folder):
    loaded, (train, test) = tiny_table_folder
    train, test = train.copy(), test.copy()
    train.loc[train.index[:10], "bmi"] = np.nan  # empty cells: a release fills them
    test.loc[test.index[:3], "bmi"] = np.nan
    bpd = bits_per_dim_report(loaded, data=(train, test), samples=200)
    assert bpd["round_trip_exact"]  # (a held-out row can lie outside the fitted range: clipped)
    assert bpd["round_trip_empty_cells_left_out"] == 10 and bpd["round_trip_heldout"]["empty_cells_left_out"] == 3
    assert 0 < bpd["sample_ks"]["bmi"] <= 1 and bpd["sample_ks_mean"] is not None
    card = bpd_card_markdown(bpd, "python -m cadp.evaluate bpd --model d")
    assert "nan" not in card and "(13 empty input cells left out: a release fills them)" in card
    utility = utility_sweep(loaded, epsilons=[1.0], seeds=(0,), n_train=60, n_test=30, n_reid=30, device="cpu",
                            data=(train, test), include_baselines=False)
    assert all(entry["ks"][0] is not None and entry["columns"]["bmi"][0] is not None
               for entry in utility["methods"].values())
    assert ks_statistic(pd.Series([np.nan, "x"]), pd.Series([1.0, 2.0])) is None


def test_tabular_audit_requires_the_same_kept_condition(tiny_table_folder):
    loaded, (train, _) = tiny_table_folder
    men, women = train[train["sex"] == 1].iloc[:2], train[train["sex"] == 2].iloc[:1]
    mechanism = make_mechanism("laplace", 1.0, temperature=0.7)
    with pytest.raises(InputError, match="share the kept condition"):
        distinguishing_audit(loaded.model, men.iloc[[0]], women, None, mechanism, releases=100)
    result = distinguishing_audit(loaded.model, men.iloc[[0]], men.iloc[[1]], None, mechanism, releases=2000,
                                  generator=torch.Generator().manual_seed(0))
    assert 0 <= result.epsilon_lower_bound <= 1.0


def test_cli_quick_audit_writes_eval_and_report(tmp_path, monkeypatch):
    loaded = tiny_image_folder(tmp_path)
    data = (tiny_images(20, 1), tiny_images(20, 2))
    monkeypatch.setattr("cadp.evaluate._load_image_data", lambda config, given: data)
    assert main(["audit", "--model", str(loaded.folder), "--quick"]) == 0
    audit = read_eval(loaded.folder)["audit"]
    assert audit["releases"] == 2000 and audit["quick"] is True
    for row in audit["results"]:
        if row["mechanism"] != "paper":
            assert row["epsilon_lower_bound"] <= row["claimed_epsilon"] and row["verdict"] == "no violation found (the bound is at or below the claim)"
        else:
            assert row["claimed_epsilon"] is None and math.isfinite(row["nominal_epsilon"])
    assert (loaded.folder / "report.html").exists()
    assert main(["audit", "--model", str(tmp_path / "missing")]) == 2


def test_frames_unchanged_by_sweep(tiny_table_folder):
    loaded, (train, test) = tiny_table_folder
    before = train.copy()
    utility_sweep(loaded, epsilons=[1.0], mechanisms=["metric"], seeds=(0,), n_train=50, n_test=20, n_reid=20,
                  device="cpu", data=(train, test))
    pd.testing.assert_frame_equal(train, before)
    assert np.isfinite(train.select_dtypes("number").to_numpy()).all()


def test_dpsgd_reference_is_central_and_spends_at_most_its_target(tiny_table_folder):
    pytest.importorskip("opacus")
    from cadp.evaluate import dpsgd_reference

    loaded, data = tiny_table_folder
    central = dpsgd_reference(loaded, epsilons=(1.0, 10.0), seeds=(0,), epochs=2, device="cpu", data=data)
    assert central["guarantee"] == "central" and "central DP" in central["label"]
    assert central["delta"] == pytest.approx(1 / len(data[0]))
    assert all(spent <= target * 1.01 for spent, target in zip(central["epsilon_spent"], central["epsilons"]))
    assert all(0 <= accuracy <= 1 for accuracy in central["accuracy"]["mean"])


def _folder_with_card(tiny_table_folder, tmp_path):
    """A copy of the tiny table model's folder with a short card of its own."""
    import shutil

    loaded, _ = tiny_table_folder
    folder = tmp_path / "d"
    shutil.copytree(loaded.folder, folder)
    (folder / "README.md").write_text("# d\n\n## Results\n- x\n\n## Privacy and limitations\n- local\n")
    return folder


def test_cli_bpd_writes_its_block_into_the_model_card(tiny_table_folder, tmp_path):
    folder = _folder_with_card(tiny_table_folder, tmp_path)
    assert main(["bpd", "--model", str(folder), "--quick"]) == 0
    first = (folder / "README.md").read_text()
    assert main(["bpd", "--model", str(folder), "--quick"]) == 0  # a second run replaces the block
    card = (folder / "README.md").read_text()
    assert "<!-- /cadp:bpd -->\n\n## Privacy" in card and card.count("\n") == first.count("\n")  # layout kept
    result = read_eval(folder)["bpd"]
    assert card.count("<!-- cadp:bpd -->") == 1 and card.index("cadp:bpd") < card.index("## Privacy")
    assert "epsilon = infinity round trip: exact" in card
    worst = max(result["sample_ks"].values())
    assert f"{worst:.3f}" in card and "against all" in card
    assert result["quick"] is True and "bpd --model" in card and "--quick" in card  # a quick run says so


def test_image_bpd_report_measures_the_round_trip_and_writes_it_to_the_card(tmp_path):
    loaded = tiny_image_folder(tmp_path)
    result = bits_per_dim_report(loaded, data=(tiny_images(20, 1), tiny_images(30, 2)))
    assert result["round_trip_records"] == 30 and result["round_trip_exact_8bit"]
    assert 0 <= result["round_trip_max_abs_error"] < 0.01
    assert result["sample_recognition_t0.7"] is None  # the folder has no classifier
    card = bpd_card_markdown(result, "python -m cadp.evaluate bpd --model t")
    assert "exact after rounding to 8-bit pixels" in card and "samples not scored" in card


def test_cli_evaluates_models_trained_on_a_csv_or_image_folder_given_their_data(tmp_path, capsys, monkeypatch):
    from cadp import evaluate, train
    from tests import corpus

    source = tmp_path / "rows.csv"
    load_table("diabetes").frame.head(150).to_csv(source, index=False)
    table = tmp_path / "table-model"
    assert train.main(["--dataset", str(source), "--out", str(table), "--conditions", "sex", "--steps", "20"]) == 0
    capsys.readouterr()
    assert evaluate.main(["bpd", "--model", str(table), "--quick"]) == 2  # config.json names only "rows"
    err = capsys.readouterr().err
    assert "give the CSV it was trained on with --data" in err
    assert "%|" not in err  # said before a progress bar starts
    monkeypatch.chdir(tmp_path)  # a rows.csv here is not necessarily the one the model was trained on
    assert evaluate.main(["bpd", "--model", str(table), "--quick"]) == 2
    assert "'rows.csv' (it is not a bundled dataset); give the CSV it was trained on with --data" in \
        capsys.readouterr().err
    assert evaluate.main(["bpd", "--model", str(table), "--quick", "--data", str(source)]) == 0
    assert read_eval(table)["bpd"]["quick"] is True
    card = (table / "README.md").read_text()  # the command that reproduces it, without the machine's folders
    assert "python -m cadp.evaluate bpd --model table-model --data rows.csv --quick" in card and str(tmp_path) not in card
    bigger = tmp_path / "all-rows.csv"  # not the table it was trained on: its "test" rows would hold training rows
    load_table("diabetes").frame.to_csv(bigger, index=False)
    assert evaluate.main(["bpd", "--model", str(table), "--quick", "--data", str(bigger)]) == 2
    assert "splits into 354 training and 88 test records; the model was trained on 120 and tested on 30" in \
        capsys.readouterr().err
    shuffled = tmp_path / "shuffled.csv"  # the same rows in another order: another split, training rows in its test
    load_table("diabetes").frame.head(150).sample(frac=1, random_state=1).to_csv(shuffled, index=False)
    assert evaluate.main(["bpd", "--model", str(table), "--quick", "--data", str(shuffled)]) == 2
    assert "splits into other test records than the model's training run held out" in capsys.readouterr().err
    source.write_text("age,bmi\n30,22\n")
    assert evaluate.main(["audit", "--model", str(table), "--quick", "--data", str(source)]) == 2
    assert "lacks the model's columns ['bp', 's1', " in capsys.readouterr().err

    folder = tmp_path / "images"
    for label in ("cats", "dogs"):
        (folder / label).mkdir(parents=True)
        for index in range(10):  # ten different images (copies count once in the latent distances)
            (folder / label / f"{index}.png").write_bytes(corpus.png(np.roll(corpus.digit(28, 28), index, axis=1)))
    images = tmp_path / "image-model"
    assert train.main(["--dataset", str(folder), "--out", str(images), "--steps", "2", "--width", "8",
                       "--conv-blocks", "1", "--conv-subnet", "3-3-3", "--fc-blocks", "1", "--fc-width", "16",
                       "--classifier-minutes", "0.01"]) == 0
    capsys.readouterr()
    assert evaluate.main(["bpd", "--model", str(images), "--quick"]) == 2
    assert "give the image folder it was trained on with --data" in capsys.readouterr().err
    assert evaluate.main(["bpd", "--model", str(images), "--quick", "--data", str(folder)]) == 0
    assert read_eval(images)["bpd"]["test_records"] == 4  # the held-out fifth of 20 images, as in training
    assert "subnets 3x3-3x3-3x3, width 8" in (images / "README.md").read_text()
    assert "1 conv GLOW coupling, downsampling" in (images / "README.md").read_text()  # one of each: singular
    assert "1 fully connected GLOW coupling (width 16)" in (images / "README.md").read_text()
    assert "2 steps (~2.0 epochs), batch 16," in (images / "README.md").read_text()  # 16 images: a batch of 16
    (folder / "birds").mkdir()
    (folder / "birds" / "0.png").write_bytes(corpus.png(corpus.digit(28, 28)))
    assert evaluate.main(["bpd", "--model", str(images), "--quick", "--data", str(folder)]) == 2
    assert "has the classes ['birds', 'cats', 'dogs']" in capsys.readouterr().err


def test_cli_device_asked_for_is_used_or_refused_up_front(tmp_path, capsys, monkeypatch):
    import shutil

    from cadp import evaluate

    folder = tmp_path / "heart"
    shutil.copytree(bundled("heart-cinn"), folder)
    (folder / "eval.json").write_text("{}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert evaluate.main(["utility", "--model", str(folder), "--quick", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is available" in err and "%|" not in err
    assert evaluate.main(["audit", "--model", str(folder), "--quick", "--device", "cuda"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err
    assert evaluate.main(["bpd", "--model", str(folder), "--quick", "--device", "tpu"]) == 2
    assert "--device 'tpu': use auto, cpu or cuda" in capsys.readouterr().err
    assert read_eval(folder) == {}  # nothing ran
    monkeypatch.setattr(evaluate, "audit_model", lambda loaded, **kw: {"results": []})
    monkeypatch.setattr(evaluate, "write_report", lambda folder, *rest: folder / "report.html")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert evaluate.main(["audit", "--model", str(folder), "--quick", "--device", "cuda"]) == 0
    assert "--device cuda is not used: audit runs on the CPU" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mnist-cinn", "diabetes-cinn"])
def test_report_labels_every_paper_trace(name, tmp_path):
    import re
    import shutil

    from cadp.evaluate import write_report

    folder = tmp_path / name
    shutil.copytree(bundled(name), folder, ignore=shutil.ignore_patterns("checkpoint"))
    html = write_report(folder).read_text(encoding="utf-8")
    names = [json.loads(f'"{raw}"') for raw in re.findall(r'"name":"((?:[^"\\]|\\.)*)"', html)]
    paper = [trace for trace in names if "paper" in trace.lower()]
    assert paper and all("reference reproduction — no formal guarantee" in trace for trace in paper), paper
    # the audit panel says how far its release count can see (paper bounds at that line are saturated)
    from cadp.evaluate import largest_provable_epsilon

    releases = read_eval(folder)["audit"]["releases"]
    assert f"the most {releases:,} releases can show ({largest_provable_epsilon(releases):.2f})" in names
    # the error bars are the spread over seeds on one fixed test set, and the report says what that leaves out
    utility = read_eval(folder)["utility"]
    n_test, reference = utility["settings"]["n_test"], utility["reference"]["o/o"]["mean"]
    standard_error = (reference * (1 - reference) / n_test) ** 0.5
    seeds = len(utility["settings"]["seeds"])  # (3 for images, 30 for tables)
    varies = ("the noise drawn differs by seed; the classifier, a logistic regression, trains the same way on the "
              "same rows" if utility["settings"].get("kind") == "tabular" else
              "the noise drawn and the classifier&#x27;s training differ by seed")  # (a table's classifier: lbfgs)
    assert (f"Error bars: the standard deviation over {seeds} seeds ({varies}); every seed tests on the same "
            f"{n_test:,} real records") in html
    assert f"a binomial standard error of about {standard_error:.3f} at the real-to-real accuracy" in html


def test_a_quick_run_never_replaces_a_full_one_unasked(tiny_table_folder, tmp_path, capsys):
    import shutil

    loaded, _ = tiny_table_folder
    folder = tmp_path / "m"
    shutil.copytree(loaded.folder, folder)
    update_eval(folder, "audit", {"quick": False, "releases": 10_000, "results": []})
    assert main(["audit", "--model", str(folder), "--quick"]) == 2
    assert "holds a full audit run; a --quick run would replace it" in capsys.readouterr().err
    assert read_eval(folder)["audit"]["releases"] == 10_000
    assert main(["audit", "--model", str(folder), "--quick", "--replace-full"]) == 0
    assert read_eval(folder)["audit"]["quick"] is True


def test_an_audit_compares_exactly_one_record_with_one_other(tmp_path, tiny_table_folder):
    """A batch would be read as one long latent: a verdict about nothing that is ever released."""
    mechanism = make_mechanism("laplace", 1.0, temperature=0.7)
    table, (train, _) = tiny_table_folder
    men = train[train["sex"] == 1]
    with pytest.raises(InputError, match="record A must be a one-row DataFrame .* got 3 rows"):
        distinguishing_audit(table.model, men.iloc[:3], men.iloc[3:6], None, mechanism, releases=100)
    with pytest.raises(InputError, match="record B must be a one-row DataFrame .* got a Series"):
        distinguishing_audit(table.model, men.iloc[[0]], men.iloc[1], None, mechanism, releases=100)
    images = tiny_image_folder(tmp_path)
    data = tiny_images(4, 0)
    with pytest.raises(InputError, match="record A must be exactly one image .* got 2 images"):
        distinguishing_audit(images.model, data.images[:2], data.images[2:4], 0, mechanism, releases=100)
    with pytest.raises(InputError, match="got 1 image but 2 labels"):
        distinguishing_audit(images.model, data.images[0], data.images[1], [0, 1], mechanism, releases=100)


def test_an_image_audit_reads_pixels_and_labels_as_privatize_does(tmp_path):
    loaded = tiny_image_folder(tmp_path)
    data = tiny_images(2, 0)
    mechanism = make_mechanism("laplace", 1.0, temperature=0.7)
    with pytest.raises(InputError, match="scaled to \\[0, 1\\]"):
        distinguishing_audit(loaded.model, data.images[0] / 255.0, data.images[1] / 255.0, 0, mechanism,
                             releases=100)
    with pytest.raises(InputError, match="label 12 is out of range: labels must be class indices 0..9"):
        distinguishing_audit(loaded.model, data.images[0], data.images[1], 12, mechanism, releases=100)
    with pytest.raises(InputError, match="label 'seven' is not one of the model's classes"):
        distinguishing_audit(loaded.model, data.images[0], data.images[1], "seven", mechanism, releases=100)
    # a class name is the class it names, as in privatize; uint8 pixels read as their float values
    assert torch.equal(encode_records(loaded.model, data.images[0], "3"),
                       encode_records(loaded.model, data.images[0].float(), 3))
    result = distinguishing_audit(loaded.model, data.images[0], data.images[1], "3", mechanism, releases=200,
                                  generator=torch.Generator().manual_seed(0))
    assert result.claimed_epsilon == 1.0


def test_cli_utility_writes_this_models_reidentification_rates_into_its_card(tiny_table_folder, tmp_path):
    """The card quotes the model's own measured rates (the training template quoted the bundled models')."""
    from cadp.curves import strongest_reidentification
    from cadp.evaluate import reid_card_markdown

    folder = _folder_with_card(tiny_table_folder, tmp_path)
    assert main(["utility", "--model", str(folder), "--quick"]) == 0
    utility = read_eval(folder)["utility"]
    card = (folder / "README.md").read_text()
    assert card.count("<!-- cadp:reid -->") == 1 and card.index("cadp:reid") < card.index("## Privacy")
    assert "utility --model" in card and "--quick" in card and "a quick run" in card
    assert f"A guess among those records finds {utility['chance_given_condition']:.1%}" in card
    assert "with the conditions released with it" in card  # a table: conditions, not a label
    epsilons = utility["epsilons"]
    for name in ("laplace", "gaussian"):
        rates = strongest_reidentification(utility["methods"][name])
        shown = [f"{rates[epsilons.index(e)]:.1%}" for e in (1.0, 10.0, 100.0, 1000.0) if e in epsilons]
        assert shown and f"| {utility['methods'][name]['label']} | " + " | ".join(shown) + " |" in card

    image = json.loads((bundled("mnist-cinn") / "eval.json").read_text())["utility"]
    text = reid_card_markdown(image, "python -m cadp.evaluate utility --model weights/mnist-cinn")
    at_100 = strongest_reidentification(image["methods"]["laplace"])[image["epsilons"].index(100.0)]
    assert f"{at_100:.1%} |" in text and "with the label released with it" in text
    assert "mean of 3 seeds of 500 records)" in text and "quick" not in text


def test_card_blocks_have_short_headings_and_name_their_command_below():
    """A card block's heading is a word or two (with the command in it, it wrapped on a phone); the command that
    measured it follows on its own line, in the generated blocks and in every bundled card."""
    from cadp.evaluate import reid_card_markdown

    image = json.loads((bundled("mnist-cinn") / "eval.json").read_text())
    reid, bpd = (f"python -m cadp.evaluate {kind} --model weights/mnist-cinn" for kind in ("utility", "bpd"))
    assert reid_card_markdown(image["utility"], reid).splitlines()[:3] == ["### Re-identification", "",
                                                                          f"Measured by `{reid}`."]
    assert bpd_card_markdown(image["bpd"], bpd).splitlines()[:3] == ["### Quality", "", f"Measured by `{bpd}`."]
    for name in ("mnist-cinn", "fashion-mnist-cinn", "diabetes-cinn", "heart-cinn"):
        card = (bundled(name) / "README.md").read_text()
        headings = [line for line in card.splitlines() if line.startswith("#")]
        assert "### Quality" in headings and "### Re-identification" in headings
        assert not any("`" in line for line in headings)
        assert f"Measured by `python -m cadp.evaluate bpd --model weights/{name}`." in card


def test_reidentification_takes_conditions_as_names_and_refuses_a_wrong_count():
    originals = torch.arange(12.0).reshape(4, 3)
    by_name = reidentification(originals, originals + 0.1, conditions=["a", "b", "a", "b"])
    by_number = reidentification(originals, originals + 0.1, conditions=[0, 1, 0, 1])
    assert by_name == by_number and by_name["chance_given_condition"] == 0.5
    with pytest.raises(InputError, match="need one condition per record, got 7 for 4"):
        reidentification(originals, originals, conditions=[0, 1, 0, 1, 1, 0, 1])  # was cut to the first four
    with pytest.raises(InputError, match="releases must be an integer >= 20, got 'many'"):
        latent_audit(torch.zeros(3), torch.ones(3), make_mechanism("metric", 1.0), "many")


def test_a_full_disk_leaves_eval_json_whole_and_the_cli_says_so(tmp_path):
    """eval.json was written in place: a write cut short (a full disk) left 40 KB of it, every earlier section
    lost, and the CLI printed a traceback."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import bundled

    folder = tmp_path / "diabetes-cinn"
    shutil.copytree(bundled("diabetes-cinn"), folder)
    before = (folder / "eval.json").read_bytes()
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
              "from cadp.hub import update_eval; update_eval(sys.argv[1], 'extra', ['x' * 100] * 1000)")
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode != 0 and "File too large" in done.stderr
    assert (folder / "eval.json").read_bytes() == before and not list(folder.glob("*.part"))
    cli = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
           "from cadp.evaluate import main; sys.exit(main(['bpd', '--model', sys.argv[1], '--quick', '--replace-full']))")
    done = subprocess.run([sys.executable, "-c", cli, str(folder)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "error: cannot read or write" in done.stderr and "eval.json is as it was" in done.stderr
    assert (folder / "eval.json").read_bytes() == before


def test_report_draws_what_it_can_of_a_malformed_eval_json_and_names_the_rest(tmp_path):
    from cadp.evaluate import write_report
    from cadp.hub import write_eval

    loaded = tiny_image_folder(tmp_path)
    write_eval(loaded.folder, {"audit": {"results": []}, "central": {"epsilons": [1]}})  # max() of nothing; no accuracy
    text = write_report(loaded.folder).read_text(encoding="utf-8")
    assert "eval.json&#x27;s sections central, audit are not as cadp.evaluate writes them" in text


def test_report_names_papers_batches_and_what_metrics_axis_means_between_records(tmp_path):
    """report.html drew paper's curves and audit points without a batch size (they ran on different ones), and
    metric on the laplace axis without eps_unit * d_typ / d_nn (PRIVACY.md: always show them)."""
    import shutil

    from cadp.evaluate import write_report
    from tests.conftest import bundled

    folder = tmp_path / "diabetes-cinn"
    shutil.copytree(bundled("diabetes-cinn"), folder)
    text = write_report(folder).read_text(encoding="utf-8")
    config = json.loads((folder / "config.json").read_text())
    d_typ, d_nn = (config["latent_distances"][key] for key in ("d_typ", "d_nn"))
    from cadp.mechanisms import readable

    typical, nearest = readable(d_typ, up=True), readable(d_nn, up=True)  # (rounded up: never less than it is)
    assert f"(d_typ = {typical}) it is {typical} x the value on the axis" in text
    assert f"(d_nn = {nearest}) {nearest} x that value" in text
    assert "these curves ran on batches of 354 training and 88 test records (batch size 512)" in text
    assert "audit: paper released one record per batch (batch size 1)." in text


def test_data_given_for_a_bundled_tables_model_may_not_test_it_on_its_training_rows(tmp_path, capsys):
    """A shuffled copy of diabetes passed --data (the bundled eval.json holds no split fingerprint): 72 of its 88
    "test" rows were rows the model was trained on."""
    import shutil

    from tests.conftest import bundled

    folder = tmp_path / "diabetes-cinn"
    shutil.copytree(bundled("diabetes-cinn"), folder)
    before = (folder / "eval.json").read_bytes()
    shuffled = tmp_path / "diabetes.csv"
    load_table("diabetes").frame.sample(frac=1.0, random_state=3).to_csv(shuffled, index=False)
    assert main(["bpd", "--model", str(folder), "--data", str(shuffled), "--quick", "--replace-full"]) == 2
    err = capsys.readouterr().err
    assert "of the 88 test rows of --data" in err and "are rows the model was trained on (diabetes's training split)" in err
    assert (folder / "eval.json").read_bytes() == before


def test_utility_sweep_refuses_sizes_it_would_read_otherwise(tiny_table_folder):
    """n_test=0 ran the default size and n_train=-5 all rows but five, each recorded as if asked."""
    loaded, data = tiny_table_folder
    for sizes in ({"n_test": 0}, {"n_train": -5}, {"n_reid": 1.5}):
        with pytest.raises(InputError, match=f"{next(iter(sizes))} must be a whole number >= 2"):
            utility_sweep(loaded, epsilons=[1.0], mechanisms=["metric"], seeds=(0,), device="cpu", data=data, **sizes)


# --------------------------------------------------------------------------- what the CLI refuses before any work

def _no_evaluation(*args, **kwargs):
    raise AssertionError("the evaluation ran")


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_hub_cache_snapshot_is_refused_before_anything_is_computed(tiny_weights, tmp_path, monkeypatch, capsys):
    """cadp.evaluate wrote into a Hub cache snapshot: eval.json's link replaced by a file, report.html added, the
    card rewritten; later loads presented these results as the Hub commit's files, and a pruned cache lost them."""
    import shutil

    from huggingface_hub import constants

    from cadp.hub import load_model
    from tests.hub_server import HubServer

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("cadp.evaluate.utility_sweep", _no_evaluation)
    with HubServer() as server:
        server.add_commit("tester/tiny-image", tiny_weights / "tiny-image")
        snapshot = load_model("tester/tiny-image", endpoint=server.url, cache_dir=tmp_path / "cache").folder
    assert (snapshot / "eval.json").is_symlink() and snapshot.parent.name == "snapshots"
    before = _files(snapshot)
    link = tmp_path / "linked-model"  # a link to the snapshot is the snapshot
    link.symlink_to(snapshot, target_is_directory=True)
    for model in (snapshot, link):
        for command in (["utility", "--quick"], ["report"]):
            assert main([*command, "--model", str(model)]) == 2
            err = capsys.readouterr().err
            assert "is a Hub model's snapshot in the Hugging Face cache" in err and "Traceback" not in err
            assert f"Copy the folder and evaluate the copy: cp -rL {model} my-model" in err
    assert _files(snapshot) == before and (snapshot / "eval.json").is_symlink()
    assert not (snapshot / "report.html").exists()
    assert main(["utility", "--model", "tester/tiny-image@v1", "--quick"]) == 2  # a folder, never a Hub id
    assert ("--model takes a model folder; to evaluate the Hub repo tester/tiny-image, download it into a folder "
            "of its own and give that: hf download tester/tiny-image --revision v1 --local-dir my-model"
            in capsys.readouterr().err)
    copy = tmp_path / "my-model"
    shutil.copytree(snapshot, copy)  # the files the links point to, as cp -rL copies them
    assert main(["report", "--model", str(copy)]) == 0 and (copy / "report.html").exists()


def test_malformed_sections_of_eval_json_are_read_as_absent_not_a_traceback(tiny_table_folder, tmp_path, capsys):
    """{"audit": {"settings": [1]}} crashed a --quick run (AttributeError), as did {"training": [1]} with --data."""
    import shutil

    from cadp.hub import write_eval

    loaded, _ = tiny_table_folder
    folder = tmp_path / "m"
    shutil.copytree(loaded.folder, folder)
    write_eval(folder, {"audit": {"settings": [1], "releases": 10_000}})
    assert main(["audit", "--model", str(folder), "--quick"]) == 0
    err = capsys.readouterr().err
    assert "eval.json's 'audit' section has settings that are not an object" in err and "Traceback" not in err
    assert read_eval(folder)["audit"]["quick"] is True

    source = tmp_path / "diabetes.csv"  # the data the model was trained on, as it was
    load_table("diabetes").frame.to_csv(source, index=False)
    write_eval(folder, {"training": [1], "bpd": "not a section"})
    assert main(["bpd", "--model", str(folder), "--quick", "--data", str(source)]) == 0
    err = capsys.readouterr().err
    assert f"eval.json's 'training' section is not an object, as cadp.train writes it: --data {source} cannot be " \
           "checked against the split the model was trained on" in err
    assert "eval.json's 'bpd' section is not an object" in err and "Traceback" not in err
    assert read_eval(folder)["bpd"]["quick"] is True and read_eval(folder)["training"] == [1]


@pytest.mark.parametrize("error,words", [(30, "is read-only (Read-only file system)"),
                                         (13, "cannot be written by this user (Permission denied)")])
def test_a_folder_that_cannot_be_written_is_refused_before_anything_is_computed(error, words, tiny_table_folder,
                                                                                 tmp_path, monkeypatch, capsys):
    """A read-only model folder ran the whole sweep (15 minutes for an image model) before its results could not
    be written. Tests run as root, whom a folder's permissions do not stop: the probe's writes fail instead."""
    import builtins
    import os
    import shutil

    loaded, _ = tiny_table_folder
    folder = tmp_path / "m"
    shutil.copytree(loaded.folder, folder)
    real_open = builtins.open

    def refused_in_folder(file, mode="r", *args, **kwargs):
        if Path(file).parent == folder and any(letter in mode for letter in "wxa+"):
            raise OSError(error, os.strerror(error), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("cadp.evaluate.open", refused_in_folder, raising=False)
    for name in ("utility_sweep", "bits_per_dim_report", "audit_model", "dpsgd_reference", "write_report"):
        monkeypatch.setattr(f"cadp.evaluate.{name}", _no_evaluation)
    before = _files(folder)
    for command in ("utility", "bpd", "audit", "dpsgd", "report"):
        assert main([command, "--model", str(folder), "--quick"]) == 2
        err = capsys.readouterr().err
        assert f"error: the model folder {folder} {words}" in err and "nothing was computed" in err
        assert f"cp -rL {folder} my-model" in err and "Traceback" not in err
    assert _files(folder) == before  # nothing written, no probe left


def test_a_folder_laid_out_like_a_hub_cache_without_its_blobs_is_not_a_snapshot(tmp_path):
    from cadp.evaluate import hub_cache_snapshot

    plain = tmp_path / "models--mine" / "snapshots" / "v1"
    plain.mkdir(parents=True)
    assert hub_cache_snapshot(plain) is None  # someone's own folders, named so
    (tmp_path / "models--mine" / "blobs").mkdir()
    assert hub_cache_snapshot(plain / "sub") == plain  # a cache's repo folder holds blobs/


def test_the_round_trip_of_a_condition_written_2_0_is_exact():
    """A condition column read as floats (sex written 2.0) comes back as the whole numbers it holds: compared as
    text, every row "differed" and the model card said the epsilon = infinity round trip was NOT exact."""
    from cadp.evaluate import _round_trip

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(0, 1, 80), "y": rng.normal(5, 2, 80),
                          "sex": rng.choice([1.0, 2.0], 80)})
    trip = _round_trip(fit_tabular(frame, ["sex"], steps=5), frame)
    assert trip["exact"] and trip["mismatched_columns"] == [], trip
    changed = frame.assign(sex=frame["sex"].map({1.0: "a", 2.0: "b"}))  # text still compared as text
    assert _round_trip(fit_tabular(changed, ["sex"], steps=5), changed)["exact"]
    # text that reads as another number is another value: '01' released as '1' is no exact round trip
    padded = frame.assign(sex=frame["sex"].map({1.0: "01", 2.0: "02"}))
    model = fit_tabular(padded, ["sex"], steps=5)
    relabelled = padded.assign(sex=padded["sex"].str.lstrip("0"))
    import cadp.privatize as privatize_module

    real = privatize_module.privatize

    def stripped(*args, **kwargs):  # a release that writes '01' as '1'
        result = real(*args, **kwargs)
        result.privatized_frame["sex"] = relabelled["sex"].to_numpy()
        return result

    privatize_module.privatize = stripped
    try:
        trip = _round_trip(model, padded)
    finally:
        privatize_module.privatize = real
    assert not trip["exact"] and trip["mismatched_columns"] == ["sex"], trip
