"""The mechanisms of docs/PRIVACY.md: noise scales, calibration, clipping, batch independence, validation."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import kstest, laplace, norm

from cadp import mechanisms
from cadp.errors import InputError
from cadp.mechanisms import (
    PAPER_LABEL,
    ConditionHandling,
    analytic_gaussian_delta,
    analytic_gaussian_sigma,
    keep_probability,
    make_mechanism,
    new_generator,
    randomized_response,
    release_condition,
    resample,
    total_epsilon,
)

D = 784


def latents(batch=64, dim=D, seed=0, scale=1.0):
    return scale * torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- laplace

@pytest.mark.parametrize("epsilon, radius", [(0.5, 3.0), (1.0, 10.0), (10.0, 0.1)])
def test_laplace_scale_is_twice_the_radius_over_epsilon(epsilon, radius):
    mechanism = make_mechanism("laplace", epsilon, clip_radius=radius)
    assert mechanism.scale == pytest.approx(2 * radius / epsilon, rel=1e-12)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 100.0, 10_000.0])
def test_laplace_constant_temperature_keeps_noise_std_at_temperature(epsilon):
    mechanism = make_mechanism("laplace", epsilon, temperature=0.7)
    assert mechanism.clip_radius == pytest.approx(0.7 * epsilon / (2 * math.sqrt(2)))
    assert mechanism.noise_std == pytest.approx(0.7)


def test_laplace_noise_is_laplace_distributed():
    mechanism = make_mechanism("laplace", 2.0, clip_radius=1.0)
    zero = torch.zeros(200, 100)
    noise = (mechanism(zero, new_generator(1)) - 0).flatten().double().numpy()
    # clipped zero stays zero, so the output is pure Lap(0, b) noise
    assert kstest(noise, laplace(scale=mechanism.scale).cdf).pvalue > 1e-3
    assert noise.std() == pytest.approx(math.sqrt(2) * mechanism.scale, rel=0.02)


@pytest.mark.parametrize("seed", [None, 11])
def test_laplace_signs_are_fair_and_independent_of_the_magnitudes(seed):
    """A sign that shared bits with the exponential's words would make the positive draws' magnitudes differ from
    the negative ones' (each side must be Exp(scale) on its own)."""
    noise = mechanisms.laplace_values(200_000, 0.5, new_generator(seed))
    positive, negative = noise[noise > 0], -noise[noise < 0]
    assert abs(len(positive) / len(noise) - 0.5) < 0.005
    for side in (positive, negative):
        assert kstest(side / 0.5, "expon").pvalue > 1e-3
    assert kstest(noise, laplace(scale=0.5).cdf).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_laplace_release_is_its_center_plus_the_noise_drawn(dtype):
    """The clipped latent plus Lap(0, b) noise, in float64, rounded to the latent's dtype."""
    mechanism = make_mechanism("laplace", 3.0, clip_radius=2.0)
    z = latents(batch=5, scale=0.5).to(dtype)
    released = mechanism(z, new_generator(21))
    expected = (mechanism.center(z) + mechanisms.laplace_noise(z.shape, mechanism.scale, new_generator(21))).to(dtype)
    assert released.dtype == dtype and torch.equal(released, expected)
    assert mechanism.center(z).dtype == torch.float64


def test_seeded_laplace_noise_is_the_noise_earlier_versions_drew():
    """Stored results of seeded runs (the audit's bounds in the README, eval.json) are reproduced by the same
    command: the noise of a seed keeps its words' layout, three per value (coin flips, uniform, sign)."""
    words = torch.randint(0, 2 ** 62, (500, 3), generator=new_generator(7)).numpy()
    flips = np.frexp((words[:, 0] & -words[:, 0]).astype(np.float64))[1] - 1.0
    magnitude = 0.3 * (flips * math.log(2) - np.log1p(-0.5 * ((words[:, 1] >> 9) * 2.0 ** -53)))
    assert np.array_equal(mechanisms.laplace_values(500, 0.3, new_generator(7)),
                          np.where(words[:, 2] & 1, magnitude, -magnitude))


def test_a_mechanism_releases_around_its_own_center():
    """The release is center(z) + noise: a subclass's center is what it releases around (the audit's attacker
    reads center too), and a latent with gradients keeps them."""
    class AroundZero(mechanisms.LaplaceMechanism):
        def center(self, latent):
            return torch.zeros(latent.shape, dtype=torch.float64)

    mechanism = AroundZero(2.0, 1.0)
    z = latents(batch=3, scale=100.0)
    assert torch.equal(mechanism(z, new_generator(4)),
                       mechanisms.laplace_noise(z.shape, mechanism.scale, new_generator(4)).float())
    assert make_mechanism("laplace", 2.0, clip_radius=1.0)(z.requires_grad_(), new_generator(4)).requires_grad


def test_an_infinite_latent_is_clipped_without_a_warning(recwarn):
    """NaN out, without a warning (a NumPy clip, tried in the twenty-first round, warned 'invalid value')."""
    from cadp.mechanisms import clip_per_sample

    z = latents(batch=2)
    z[0, 3] = math.inf
    for p in (1, 2):
        clipped = clip_per_sample(z, 1.0, p=p)
        assert clipped[0].isnan().any() and clipped[1].isfinite().all()
    assert not [warning for warning in recwarn if issubclass(warning.category, RuntimeWarning)]


def test_a_column_major_batch_is_clipped_inside_the_ball():
    """A batch stored transposed is summed in plain order, whose rounding (up to D 2^-53 relative) exceeded the clip's
    margin of 1e-12 for D = 12,288: the clipped row's exact L1 norm came out R + 3.5e-13."""
    from cadp.mechanisms import clip_per_sample

    dim = 12_288
    rows = np.full((dim, 2), 0.99 * 2.0 ** -53)
    rows[0] = 1.0
    z = torch.from_numpy(rows).T  # (2, D), column-major
    for radius in (1.0, 1.0 - 1e-13, 0.5):
        for row in clip_per_sample(z, radius, p=1).numpy():
            assert math.fsum(np.abs(row)) <= radius


def test_laplace_clips_each_record_to_the_l1_ball():
    z = latents(scale=3.0).double()
    z[0] = z[0] / z[0].abs().sum()  # a record already inside the ball (norm 1)
    clipped = z * torch.clamp(5.0 / z.abs().sum(1, keepdim=True), max=1.0)
    from cadp.mechanisms import clip_per_sample

    ours = clip_per_sample(z.float(), 5.0, p=1)
    assert torch.allclose(ours, clipped, rtol=1e-6)
    assert ours[1:].abs().sum(1).sub(5.0).abs().max() < 1e-9
    assert torch.equal(ours[0], z[0].float().double())


@pytest.mark.parametrize("p", [1, 2])
def test_clipped_latents_never_leave_the_ball(p):
    """A norm an ulp above R would make the sensitivity more than 2R (float32 clipping gave 1.0000001 for R = 1)."""
    from cadp.mechanisms import clip_per_sample

    for seed in range(20):
        z = latents(batch=256, seed=seed, scale=1 + seed)
        for radius in (1.0, 0.7, 123.4):
            assert clip_per_sample(z, radius, p=p).norm(p=p, dim=1).max().item() <= radius


@pytest.mark.parametrize("name, epsilon, kwargs", [
    ("metric", 1e-40, {}), ("laplace", 1e-38, {"clip_radius": 1.0}), ("laplace", 1.0, {"temperature": 1e35}),
    ("laplace", 1.0, {"clip_radius": 1e31}),
])
def test_settings_whose_noise_overflows_float32_are_refused(name, epsilon, kwargs):
    """A noise scale of 1e40 made the released table cells NaN and the images black, reported as privatized."""
    with pytest.raises(InputError, match="above the largest allowed"):
        make_mechanism(name, epsilon, **kwargs)
    make_mechanism(name, max(epsilon, 1e-20), **{k: min(v, 1.0) for k, v in kwargs.items()})  # in range: fine


def test_a_denormal_clip_radius_is_refused():
    """A radius of 1.5e-323 swallowed the clip's rounding margin: the clipped L1 norm came out 4/3 R."""
    with pytest.raises(InputError, match="below the smallest allowed"):
        make_mechanism("laplace", 1.0, clip_radius=1.5e-323)
    with pytest.raises(InputError, match="below the smallest allowed"):
        make_mechanism("gaussian", 1.0, delta=1e-5, temperature=1e-200)


def test_noise_tails_are_not_cut(monkeypatch):
    """A magnitude from one uniform number stops where the uniform does (float32 normals at 5.77 sigma, float64
    Laplace at 36 b): the coin flips of an exponential go on past a word of all tails, however rare (p = 2^-62)."""
    from cadp import mechanisms

    def words_with_all_tails_first(count, generator):  # then words with 5 tails before the first head
        words_with_all_tails_first.calls += 1
        return np.full((count, 3), 0 if words_with_all_tails_first.calls == 1 else 2 ** 5, dtype=np.int64)

    monkeypatch.setattr(mechanisms, "_random_words", words_with_all_tails_first)
    for draw, bound in ((mechanisms.laplace_noise, 67 * math.log(2)),  # > 36.04, the float64 inverse-CDF limit
                        (mechanisms.gaussian_noise, math.sqrt(2 * 67 * math.log(2)))):  # > 5.77, float32 randn's
        words_with_all_tails_first.calls = 0
        assert draw((2,), 1.0, None).norm().item() >= bound


def test_noise_of_a_value_depends_only_on_its_position():
    """Each value's randomness is one row of words: the first record's noise is the same in a longer batch."""
    from cadp.mechanisms import gaussian_noise, laplace_noise

    for draw in (laplace_noise, gaussian_noise):
        assert torch.equal(draw((1, 5), 1.0, new_generator(7))[0], draw((9, 5), 1.0, new_generator(7))[0])


@pytest.mark.parametrize("name", ["laplace", "gaussian", "metric", "paper"])
def test_mechanisms_return_the_latent_dtype(name):
    mechanism = make_mechanism(name, 2.0, delta=1e-5 if name == "gaussian" else None,
                               temperature=0.7 if name in ("laplace", "gaussian") else None)
    assert mechanism(latents(batch=3), new_generator(0)).dtype == torch.float32


# --------------------------------------------------------------------------- gaussian

@pytest.mark.parametrize("epsilon, delta", [(0.5, 1e-5), (1.0, 1e-5), (3.0, 1e-6), (10.0, 1e-5), (1000.0, 1e-5)])
def test_analytic_gaussian_sigma_meets_the_inequality_with_equality(epsilon, delta):
    sensitivity = 2.0
    sigma = analytic_gaussian_sigma(epsilon, delta, sensitivity)
    achieved = analytic_gaussian_delta(sigma, epsilon, sensitivity)
    assert achieved <= delta
    assert abs(achieved - delta) <= 1e-6 * delta + 1e-12
    # 1% less noise violates the guarantee
    assert analytic_gaussian_delta(0.99 * sigma, epsilon, sensitivity) > delta


def _delta_in_400_digits(sigma: float, epsilon: float, sensitivity: float):
    import mpmath

    with mpmath.workdps(400):
        sigma_, epsilon_, sensitivity_ = mpmath.mpf(sigma), mpmath.mpf(epsilon), mpmath.mpf(sensitivity)
        a, b = sensitivity_ / (2 * sigma_), epsilon_ * sigma_ / sensitivity_
        return mpmath.ncdf(a - b) - mpmath.exp(epsilon_) * mpmath.ncdf(-a - b)


@pytest.mark.parametrize("epsilon, delta", [(1e-12, 1e-100), (1e-16, 1e-300), (1e-12, 1e-20), (1e-8, 1e-100),
                                            (1e-10, 1e-300), (1e3, 1e-300), (1.0, 1e-5), (1e-3, 0.5),
                                            (1e-4, 1e-20), (1e-2, 1e-100), (5.0, 1e-5), (1e6, 1e-5)])
def test_analytic_gaussian_sigma_holds_its_delta_at_extreme_settings(epsilon, delta):
    """With a tiny epsilon and a tiny delta the formula's two terms agree in all of float64's digits: the float64
    difference was rounding noise (even negative), and epsilon 1e-12 with delta 1e-100 got a sigma whose true
    delta was 2.7e-66. Checked in 400 decimal digits: the sigma holds delta, and a hair less noise would not."""
    mechanisms._unit_gaussian_sigma.cache_clear()
    sigma = analytic_gaussian_sigma(epsilon, delta, 2.0)
    assert _delta_in_400_digits(sigma, epsilon, 2.0) <= delta
    assert _delta_in_400_digits(sigma * (1 - 1e-6), epsilon, 2.0) > delta


def test_the_gaussian_calibration_refuses_an_epsilon_beyond_its_exact_range():
    """Beyond about 1e13 float64 cannot place the formula's a - b finely enough (epsilon 1e17 held delta + 1e-4 of
    it), and from about 7e18 exp overflowed: a traceback from the command line."""
    mechanisms._unit_gaussian_sigma.cache_clear()
    assert analytic_gaussian_sigma(mechanisms.GAUSSIAN_LARGEST_EPSILON, 1e-5, 2.0) > 0
    for epsilon in (1e10, 1e17, 1e19, 1e300):
        with pytest.raises(InputError, match="the gaussian mechanism takes epsilon up to 1e\\+09"):
            make_mechanism("gaussian", epsilon, delta=1e-5, temperature=0.7)
        with pytest.raises(InputError):
            analytic_gaussian_sigma(epsilon, 1e-5, 2.0)


def test_gaussian_sigma_is_proportional_to_the_sensitivity_at_any_scale():
    """Sigma is found for sensitivity 1 and scaled, so it is the same at any scale (at epsilon 1e17, now refused, a
    huge sensitivity made epsilon * sigma overflow inside the formula: sigma 1.8e291 with a true delta of 1)."""
    unit = analytic_gaussian_sigma(1e6, 1e-5, 1.0)
    for sensitivity in (2e300, 1e-300, 0.37):
        assert analytic_gaussian_sigma(1e6, 1e-5, sensitivity) == pytest.approx(sensitivity * unit, rel=1e-15)
    assert make_mechanism("gaussian", 1.0, delta=1e-5, clip_radius=1e-90).sigma == pytest.approx(
        2e-90 * analytic_gaussian_sigma(1.0, 1e-5, 1.0), rel=1e-15)


def test_analytic_gaussian_formula_matches_the_specification():
    sigma, epsilon, sensitivity = 1.3, 0.8, 2.0
    expected = (norm.cdf(sensitivity / (2 * sigma) - epsilon * sigma / sensitivity)
                - math.exp(epsilon) * norm.cdf(-sensitivity / (2 * sigma) - epsilon * sigma / sensitivity))
    assert analytic_gaussian_delta(sigma, epsilon, sensitivity) == pytest.approx(expected, rel=1e-9)


def test_analytic_sigma_is_smaller_than_classical_formula_where_that_is_valid():
    epsilon, delta, sensitivity = 0.5, 1e-5, 2.0
    classical = sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    assert analytic_gaussian_sigma(epsilon, delta, sensitivity) < classical


def test_gaussian_sigma_is_linear_in_radius_and_constant_temperature_holds():
    fixed = make_mechanism("gaussian", 2.0, delta=1e-5, clip_radius=3.0)
    assert fixed.sigma == pytest.approx(3.0 * analytic_gaussian_sigma(2.0, 1e-5, 2.0), rel=1e-9)
    for epsilon in (0.5, 10.0, 10_000.0):
        mechanism = make_mechanism("gaussian", epsilon, delta=1e-5, temperature=0.7)
        assert mechanism.sigma == pytest.approx(0.7, rel=1e-6)


def test_gaussian_clips_to_l2_ball_and_adds_normal_noise():
    mechanism = make_mechanism("gaussian", 1.0, delta=1e-5, clip_radius=2.0)
    z = latents(scale=2.0)
    from cadp.mechanisms import clip_per_sample

    clipped = clip_per_sample(z, 2.0, p=2)
    assert clipped.norm(dim=1).max() <= 2.0 + 1e-4
    noise = (mechanism(z, new_generator(3)) - clipped).flatten().double().numpy()
    assert kstest(noise, norm(scale=mechanism.sigma).cdf).pvalue > 1e-3


# --------------------------------------------------------------------------- metric and paper

def test_metric_adds_laplace_without_clipping():
    mechanism = make_mechanism("metric", 4.0)
    assert mechanism.scale == pytest.approx(0.25)
    z = latents(scale=50.0)
    noise = (mechanism(z, new_generator(4)) - z).flatten().double().numpy()
    assert kstest(noise, laplace(scale=0.25).cdf).pvalue > 1e-3


def test_metric_guarantee_states_loss_between_real_records():
    text = make_mechanism("metric", 1.0).guarantee(d_typ=750.0, d_nn=630.0)
    assert "epsilon = 750" in text and "epsilon = 630" in text
    assert "near-duplicates" in text


def test_paper_reproduces_batch_level_matrix_norm_clip():
    epsilon = 3.0
    mechanism = make_mechanism("paper", epsilon)
    s = min(epsilon / 2, 4)
    assert mechanism.scale == pytest.approx(s / epsilon)
    z = latents(batch=8, dim=16, scale=2.0)
    matrix_norm = z.abs().sum(0).max()  # largest column sum
    expected_clipped = z * min(1.0, float(s / matrix_norm))
    generator = new_generator(5)
    out = mechanism(z, generator)
    noise = out - expected_clipped
    # the noise is Lap(0, s/eps): the clip is exactly the batch-level one
    assert kstest(noise.flatten().double().numpy(), laplace(scale=s / epsilon).cdf).pvalue > 1e-3
    assert PAPER_LABEL in mechanism.guarantee()
    assert not mechanism.formal


def test_paper_single_record_norm_is_largest_coordinate():
    mechanism = make_mechanism("paper", 20.0)  # s = 4
    z = torch.tensor([[1.0, -9.0, 3.0]])
    g1, g2 = new_generator(6), new_generator(6)
    out = mechanism(z, g1)
    noise = mechanism(torch.zeros_like(z), g2)
    assert torch.allclose(out - noise, z * 4 / 9, atol=1e-6)


# --------------------------------------------------------------------------- batch independence

@pytest.mark.parametrize("name, kwargs", [
    ("laplace", {"temperature": 0.7}), ("laplace", {"clip_radius": 2.0}),
    ("gaussian", {"temperature": 0.7, "delta": 1e-5}), ("metric", {}),
])
def test_output_of_a_record_does_not_depend_on_batch_mates(name, kwargs):
    mechanism = make_mechanism(name, 5.0, **kwargs)
    record = latents(batch=1, seed=10, scale=3.0)
    mates_a = latents(batch=15, seed=11, scale=0.1)
    mates_b = latents(batch=40, seed=12, scale=30.0)
    out_a = mechanism(torch.cat([record, mates_a]), new_generator(99))[0]
    out_b = mechanism(torch.cat([record, mates_b]), new_generator(99))[0]
    assert torch.equal(out_a, out_b)


def test_paper_output_depends_on_batch_mates():
    mechanism = make_mechanism("paper", 5.0)
    record = latents(batch=1, seed=10)
    out_a = mechanism(torch.cat([record, latents(batch=15, seed=11, scale=0.1)]), new_generator(99))[0]
    out_b = mechanism(torch.cat([record, latents(batch=15, seed=12, scale=30.0)]), new_generator(99))[0]
    assert not torch.equal(out_a, out_b)


def test_os_entropy_generators_differ_and_seeded_ones_repeat():
    z = torch.zeros(1, 10)
    mechanism = make_mechanism("metric", 1.0)
    assert not torch.equal(mechanism(z, new_generator()), mechanism(z, new_generator()))
    assert torch.equal(mechanism(z, new_generator(7)), mechanism(z, new_generator(7)))


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("epsilon", [0, -1, float("nan"), float("inf"), "abc", None])
def test_invalid_epsilon_names_parameter_and_range(epsilon):
    with pytest.raises(InputError, match=r"epsilon must be"):
        make_mechanism("laplace", epsilon, temperature=0.7)


@pytest.mark.parametrize("delta", [0, 1, -0.1, 1.5, float("nan")])
def test_invalid_delta(delta):
    with pytest.raises(InputError, match=r"delta must be in \(0, 1\)"):
        make_mechanism("gaussian", 1.0, delta=delta, temperature=0.7)


def test_gaussian_needs_delta():
    with pytest.raises(InputError, match="delta"):
        make_mechanism("gaussian", 1.0, temperature=0.7)


def test_one_clip_policy_and_constant_temperature_by_default():
    with pytest.raises(InputError, match="not both"):
        make_mechanism("laplace", 1.0, clip_radius=1.0, temperature=0.7)
    for name, kwargs in (("laplace", {}), ("gaussian", {"delta": 1e-5})):  # PRIVACY.md: constant temperature 0.7
        assert make_mechanism(name, 3.0, **kwargs) == make_mechanism(name, 3.0, temperature=0.7, **kwargs)


@pytest.mark.parametrize("radius", [0, -2, float("nan")])
def test_invalid_clip_radius(radius):
    with pytest.raises(InputError, match="clip_radius must be"):
        make_mechanism("laplace", 1.0, clip_radius=radius)


def test_unknown_mechanism():
    with pytest.raises(InputError, match="mechanism must be one of laplace, gaussian, metric, paper"):
        make_mechanism("exponential", 1.0)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        make_mechanism("laplace", -1, temperature=1)


# --------------------------------------------------------------------------- conditions

def test_randomized_response_keep_probability_matches_formula():
    epsilon, k = 1.0, 4
    assert keep_probability(epsilon, k) == pytest.approx(math.e / (math.e + 3))
    values = torch.zeros(200_000, dtype=torch.int64)
    released = randomized_response(values, k, epsilon, new_generator(0))
    kept = (released == 0).double().mean().item()
    assert kept == pytest.approx(keep_probability(epsilon, k), abs=0.005)
    # the other values are uniform
    others = torch.bincount(released[released != 0], minlength=k)[1:].double()
    assert (others / others.sum() - 1 / 3).abs().max() < 0.01


@pytest.mark.parametrize("epsilon, k", [(1.0, 4), (20.0, 2), (30.0, 2), (36.0, 3), (40.0, 2), (800.0, 2)])
def test_randomized_response_changes_at_least_as_often_as_stated(monkeypatch, epsilon, k):
    """The chance of a change is (k - 1) / (e^eps + k - 1): ~2e-9 at epsilon 20 (the app's largest for a
    condition). Every uniform below it, the smallest (0) included, changes the value, so P(change) >= the stated
    one and the ratio stays <= e^eps. A float32 uniform never fell below it, rounding the keep probability down
    did not hold, and a keep probability computed as a float64 rounds to 1.0 from epsilon ~ 37: each kept values
    it had to change, an unbounded ratio instead of e^eps."""
    from cadp import mechanisms

    change = (k - 1) * math.exp(-epsilon) / (1 + (k - 1) * math.exp(-epsilon))  # (no overflow at epsilon 800)
    below = math.floor(change * 2.0 ** 53) / 2.0 ** 53  # the largest float64 uniform <= the stated probability
    for uniform in (0.0, below):
        monkeypatch.setattr(mechanisms, "_uniform", lambda words, u=uniform: np.full(words.shape, u))
        assert randomized_response(torch.zeros(1, dtype=torch.int64), k, epsilon, new_generator(0)).item() != 0


def test_the_other_value_is_drawn_exactly_uniformly(monkeypatch):
    """A word in the incomplete last block of 2^62 is drawn again (modulo reduction alone favours small values)."""
    from cadp import mechanisms

    limit = (2 ** mechanisms.WORD_BITS // 3) * 3
    queue = [np.array([[limit, 0, 0], [limit - 1, 0, 0]]), np.array([[7, 0, 0]])]  # limit - 1 = 2 (mod 3)
    monkeypatch.setattr(mechanisms, "_random_words", lambda count, generator: queue.pop(0)[:count])
    assert mechanisms.uniform_index(2, 3).tolist() == [7 % 3, 2]
    assert queue == []
    monkeypatch.undo()
    drawn = np.bincount(mechanisms.uniform_index(60_000, 3, new_generator(0)), minlength=3) / 60_000
    assert np.abs(drawn - 1 / 3).max() < 0.01
    small = randomized_response(torch.full((20_000,), 199, dtype=torch.uint8), 200, 0.1, new_generator(1))
    assert small.dtype == torch.uint8 and len(small.unique()) == 200  # no wrap at 256: every other value occurs


def test_resampled_condition_ignores_the_record():
    prior = [0.2, 0.8]
    drawn_a = release_condition(torch.zeros(50_000, dtype=torch.int64), 2, ConditionHandling("resampled"), prior,
                                new_generator(1))
    drawn_b = release_condition(torch.ones(50_000, dtype=torch.int64), 2, ConditionHandling("resampled"), prior,
                                new_generator(1))
    assert torch.equal(drawn_a, drawn_b)
    assert drawn_a.double().mean().item() == pytest.approx(0.8, abs=0.01)
    assert len(resample(10, prior, new_generator(2))) == 10


def test_resampling_follows_the_prior_and_never_draws_a_value_it_gives_no_weight():
    drawn = resample(60_000, [0.0, 1.0, 0.0, 3.0, 0.0], new_generator())
    counts = torch.bincount(drawn, minlength=5)
    assert counts[[0, 2, 4]].sum() == 0
    assert counts[3].item() / len(drawn) == pytest.approx(0.75, abs=0.01)
    for bad in ([0.0, 0.0], [-1.0, 2.0], [float("nan"), 1.0], []):
        with pytest.raises(InputError, match="prior"):
            resample(3, bad, new_generator())


def test_unseeded_draws_come_from_the_operating_system(monkeypatch):
    """Not from torch's generator, which keeps 32 bits of a seed (every stream can be tried): os.urandom."""
    from cadp import mechanisms

    calls = []
    real = mechanisms.os.urandom
    monkeypatch.setattr(mechanisms.os, "urandom", lambda n: calls.append(n) or real(n))
    make_mechanism("laplace", 1.0, temperature=0.7)(torch.zeros(2, 5), new_generator())
    release_condition(torch.zeros(4, dtype=torch.int64), 3, ConditionHandling("randomized", 1.0), None, new_generator())
    assert calls and sum(calls) >= 8 * 3 * (10 + 4)
    calls.clear()
    make_mechanism("laplace", 1.0, temperature=0.7)(torch.zeros(2, 5), new_generator(3))
    assert not calls  # a seed: torch's stream, reproducible (and not private)


def test_total_epsilon_composes_conditions():
    mechanism = make_mechanism("laplace", 2.0, temperature=0.7)
    handlings = {"label": ConditionHandling("randomized", 1.5), "sex": ConditionHandling("kept"),
                 "age": ConditionHandling("resampled")}
    assert total_epsilon(mechanism, handlings) == pytest.approx(3.5)
    assert total_epsilon(make_mechanism("paper", 2.0), handlings) is None
    # metric's latent epsilon is per unit of L1 latent distance: it does not add to the conditions' into one number
    assert total_epsilon(make_mechanism("metric", 2.0), handlings) is None


def test_a_total_epsilon_that_overflows_to_infinity_is_refused():
    """1e308 + 1e308 was stated as 'Total epsilon ...: inf': a guarantee that says nothing."""
    huge = {"label": ConditionHandling("randomized", 1e308)}
    with pytest.raises(InputError, match=r"basic composition: 1e\+308 \+ 1e\+308\) overflows to infinity"):
        total_epsilon(make_mechanism("laplace", 1e308, clip_radius=1.0), huge)
    # metric and paper do not add the latent's epsilon, but the conditions' still add up
    two = {"a": ConditionHandling("randomized", 1e308), "b": ConditionHandling("randomized", 1e308)}
    for name in ("metric", "paper"):
        with pytest.raises(InputError, match="overflows to infinity"):
            total_epsilon(make_mechanism(name, 1.0), two)
        assert total_epsilon(make_mechanism(name, 1e308), huge) is None
    assert total_epsilon(make_mechanism("laplace", 1e307, clip_radius=1.0), huge) == pytest.approx(1.1e308)


def test_condition_handling_validation():
    with pytest.raises(InputError, match="condition epsilon"):
        ConditionHandling("randomized")
    with pytest.raises(InputError, match="handling must be one of"):
        ConditionHandling("dropped")
    with pytest.raises(InputError, match="takes no epsilon"):
        ConditionHandling("kept", 1.0)


def test_guarantee_texts_state_the_contract():
    for name, kwargs in [("laplace", {"temperature": 0.7}), ("gaussian", {"temperature": 0.7, "delta": 1e-5}),
                         ("metric", {})]:
        text = make_mechanism(name, 1.0, **kwargs).guarantee()
        assert "local" in text and "not central DP" in text
        assert "Kept attributes" in text and "public" in text
        assert "trained without DP" in text
    assert "pure epsilon-local" in make_mechanism("laplace", 1.0, temperature=0.7).guarantee()
    assert "delta = 1e-05" in make_mechanism("gaussian", 1.0, delta=1e-5, temperature=0.7).guarantee()
    fitted = make_mechanism("laplace", 1.0, temperature=0.7).guarantee(fitted_on_records=True)
    assert "fitted, without DP, on the very rows" in fitted and "trained without DP on public data" not in fitted


def test_paper_batches_are_described_as_they_ran():
    from cadp.evaluate import apply_mechanism
    from cadp.mechanisms import batch_sizes, paper_batches_text

    calls = []
    apply_mechanism(lambda latents, generator: calls.append(len(latents)) or latents, torch.zeros(1000, 3), None, 512)
    assert calls == batch_sizes(1000, 512) == [512, 488]
    assert batch_sizes(88, 512) == [88] and batch_sizes(128, 64) == [64, 64]
    text = paper_batches_text({"paper_batch_size": 64, "n_train": 1000, "n_test": 128})
    assert text == "batches of 15 x 64 + 40 training and 64 and 64 test records (batch size 64)"
    assert paper_batches_text({"paper_batch_size": 512}) is None  # sizes not recorded: no guess


@pytest.mark.parametrize("k", [2, 10, 200])
def test_the_smallest_condition_epsilon_keeps_both_sides_of_the_ratio(k):
    """The change probability is rounded up (with a 1e-12 margin) to the float64 uniform's grid: at epsilon ~1e-12
    that passed (k - 1) / k and a false value became likelier than the true one. Such epsilons are refused."""
    from fractions import Fraction

    from cadp.mechanisms import MIN_CONDITION_EPSILON

    with pytest.raises(InputError, match="at least 1e-06"):
        ConditionHandling("randomized", MIN_CONDITION_EPSILON / 10)
    for epsilon in (MIN_CONDITION_EPSILON, 1e-3, 1.0):
        tail = (k - 1) * math.exp(-epsilon)  # as randomized_response rounds it
        change = Fraction(max(math.ceil(tail / (1 + tail) * (1 + 1e-12) * 2.0 ** 53), 1), 2 ** 53)
        keep, other = 1 - change, change / (k - 1)
        bound = math.exp(epsilon)
        assert float(keep / other) <= bound and float(other / keep) <= bound, epsilon


def test_release_condition_refuses_values_it_would_release_wrongly():
    """Out-of-range indices were released as given (never randomized to them), a short prior never drew the
    last value, and a NumPy array raised AttributeError."""
    generator = new_generator(1)
    randomized = ConditionHandling("randomized", 50.0)
    with pytest.raises(InputError, match=r"class indices must be in 0..2 for 3 values, got 0..7"):
        release_condition(torch.tensor([0, 7]), 3, randomized, generator=generator)
    with pytest.raises(InputError, match="a prior gives one weight per value: 3 values, got 2 weights"):
        release_condition(torch.tensor([0, 1]), 3, ConditionHandling("resampled"), [0.5, 0.5], generator)
    # (uint16 and wider unsigned tensors: torch has no minimum and maximum of them, which raised NotImplementedError)
    for values in (np.array([0, 1]), ["a", "b"], torch.tensor([0.0, 1.0]), torch.tensor([0, 1], dtype=torch.uint16),
                   torch.tensor([True, False])):
        with pytest.raises(InputError, match="values must be a 1-d tensor of class indices, int64"):
            release_condition(values, 3, randomized, generator=generator)
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        assert release_condition(torch.tensor([0, 2], dtype=dtype), 3, randomized, generator=generator).dtype == dtype


def test_a_generator_seeded_again_is_no_longer_called_by_its_first_seed():
    from cadp.mechanisms import UNKNOWN_ORIGIN, generator_seed

    generator = new_generator(5)
    assert generator_seed(generator) == 5
    generator.manual_seed(7)  # its noise is now seed 7's: a release naming seed 5 could not be reproduced
    assert generator_seed(generator) is UNKNOWN_ORIGIN
    private = new_generator()
    assert generator_seed(private) is None
    private.manual_seed(7)
    assert generator_seed(private) is UNKNOWN_ORIGIN  # its noise then comes from its own stream: not private
    for seed in (5.7, "5", True):
        with pytest.raises(InputError, match="seed must be a whole number"):
            new_generator(seed)


@pytest.mark.parametrize("epsilon", [0.5, 3.0])
def test_the_paper_terms_state_the_loss_its_clip_allows_between_two_records(epsilon):
    """'Sensitivity understated by 2x' alone read as roughly 2 epsilon; the clip bounds coordinates, not L1 norms."""
    from cadp.evaluate import worst_case_latents

    paper = mechanisms.make_mechanism("paper", epsilon)
    a, b = worst_case_latents(paper, 784)
    loss = float((paper.center(a) - paper.center(b)).abs().sum()) / paper.scale  # Laplace: L1 distance / scale
    assert loss == pytest.approx(2 * 784 * epsilon)
    terms = paper.guarantee()
    assert "2·D·epsilon" in terms and "1,568·epsilon for a 28x28 image" in terms
