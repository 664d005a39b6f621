"""The latent noise mechanisms and condition handling of docs/PRIVACY.md.

Each mechanism is called on a batch of latents (B, D) with an optional
``torch.Generator`` and returns the noisy latents. Clipping is per sample, so a
record's output never depends on its batch mates, except for ``paper``, which
reproduces the original code's batch-level clip on purpose.
"""

from __future__ import annotations

import functools
import math
import os
import secrets
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from cadp.errors import InputError

MECHANISMS = ("laplace", "gaussian", "metric", "paper")
DEFAULT_TEMPERATURE = 0.7
PAPER_LABEL = "reference reproduction — no formal guarantee"
KEPT_TERMS = "Kept attributes are released exactly: they are public, and the guarantee holds given them."
NOTHING_KEPT_TERMS = "No attribute is released exactly here: each condition is randomized or resampled as stated."
NO_CONDITION_TERMS = "The model has no condition: no attribute is kept, the whole record goes through the latent."
LOCAL_SENTENCE = "The guarantee is local (per record, no trusted curator), not central DP."
LOCAL_TERMS = f"{LOCAL_SENTENCE} {KEPT_TERMS}"
PUBLIC_MODEL_TERMS = (
    "The model was trained without DP on public data; the guarantee protects the record being "
    "privatized, not the training set, and for a record of that training data it does not cover what the "
    "model learned from the record."
)


def stated_public_terms(dataset: str, by: str | None = None) -> str:
    """The training-data sentence for a model whose publisher (a Hub repo) states it was trained on a public
    dataset: the app cannot check a config's word, so the sentence says whose word it is. ``by="config"``: a model
    loaded from a local folder that is not one bundled with CADP (a copy of a Hub snapshot, a deployer's own
    weights folder), whose config.json says so."""
    said = ("The model's config.json states that it was trained without DP on public data ({}); this app checks "
            "that only for the models bundled with it." if by == "config" else
            "The model's publisher states that it was trained without DP on public data ({}); this app cannot "
            "check that.")
    return (said.format(dataset) + " The guarantee protects the record being privatized, not the training set, "
            "and for a record of the training data it does not cover what the model learned from the record.")


FITTED_ON_RECORDS_TERMS = (
    "Caution: this model was fitted, without DP, on the very rows being released, so it has seen them; "
    "the stated guarantee assumes a model trained on public data and does not cover what the model "
    "learned from these rows. Use a model trained on public data for the guarantee to hold."
)


def own_data_terms() -> str:
    """The training-data sentence for a model trained on data that is not one of the public bundled sets. It never
    names that data: these terms are shared with every release, and a folder or file name (a site, a study, a
    patient: 'Smith_J_MRI') can identify; the model's own card and config name it for its owner."""
    return ("The model was trained without DP on its owner's data, not on a public dataset: the guarantee protects "
            "the record being privatized, not the training set, and it assumes that the training data does "
            "not contain the records being privatized (for records the model was trained on, it does not "
            "cover what the model learned from them).")


def common_terms(fitted_on_records: bool = False, trained_on: str | None = None, kept: bool | None = True,
                 stated_public: str | None = None, stated_public_by: str | None = None) -> str:
    """The sentences every guarantee ends with (docs/PRIVACY.md: local DP, kept attributes, training data).

    ``trained_on``: the training data's name when it is not a public dataset (else the public-data sentence); the
    terms say only that it is not public, never the name. ``stated_public``: the public dataset a Hub model's
    publisher states it was trained on (said as the publisher's word; ``stated_public_by="config"``: as a local
    folder's config.json's, ``stated_public_terms``).
    ``kept``: False when the release keeps no attribute (its conditions are all randomized or resampled), None
    when the model has no condition at all; the kept attributes' names (a list) to name them.
    """
    if fitted_on_records:
        training = FITTED_ON_RECORDS_TERMS
    else:
        training = (stated_public_terms(stated_public, stated_public_by) if stated_public else PUBLIC_MODEL_TERMS
                    if trained_on is None
                    else own_data_terms())
    conditions = NO_CONDITION_TERMS if kept is None else kept_terms(kept) if kept else NOTHING_KEPT_TERMS
    return f"{LOCAL_SENTENCE} {conditions} {training}"


def kept_terms(kept) -> str:
    """The kept-attributes sentence, naming them when ``kept`` is a list of names."""
    if isinstance(kept, (list, tuple)):
        return (f"Kept attributes ({', '.join(str(name) for name in kept)}) are released exactly: they are public, "
                "not protected, and the guarantee holds given them.")
    return KEPT_TERMS


COMMON_TERMS = common_terms()


def written_up(value: float, digits: int = 6) -> str:
    """``value`` to ``digits`` significant digits, rounded up: a ledger or a stated total never shows less than was
    spent, except by float error: a value at most a relative 1e-12 above a step of the last digit is written as
    that step (a sum such as 0.1 + 0.2 = 0.30000000000000004 reads 0.3, not 0.300001). Terms that must state a
    parameter to the last bit use ``stated``."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return f"{math.ceil(value / step * (1 - 1e-12)) * step:.{digits}g}"


def stated(value: float) -> str:
    """A parameter as the terms state it: 12 significant digits where they read back as the same float (2, 0.5),
    else the shortest text that does (``exact``): 1.2345678901234567 written 1.23456789012 read less than was
    used."""
    short = f"{value:.12g}"
    return short if float(short) == float(value) else exact(value)


def stated_total(values) -> str:
    """A total as the terms state it: the exact sum of its parts as ``stated`` writes them, so that a total never
    reads less than the parts it adds up (``written_up``'s float slack made 1.0000000000001 + 0 read 1), and
    0.1 + 0.2 reads 0.3."""
    from decimal import ROUND_CEILING, Context, Decimal

    exactly = Context(prec=1000)  # every sum of a few floats' texts, exactly (the default 28 digits rounded it)
    total = Decimal(0)
    for value in values:
        total = exactly.add(total, Decimal(stated(float(value))))
    if not total:
        return "0"
    if -20 < total.adjusted() < 20:
        return format(exactly.normalize(total), "f")
    return str(Context(prec=17, rounding=ROUND_CEILING).plus(total).normalize())  # 1.0000000000000001E+300, up


def exact(value: float) -> str:
    """A number as written in terms and records: the shortest text that reads back as the same float (1e-05; a
    delta of 1.0000049e-05 must not be written 1e-05, less than was used)."""
    return repr(float(value))


def readable(value: float, up: bool = False) -> str:
    """A number for a sentence: 6,680 rather than 6.68e+03, three significant digits below 1,000; ``up``: rounded
    up (an epsilon, which must never read less than it is)."""
    if up and math.isfinite(value) and value > 0:
        return f"{math.ceil(value * (1 - 1e-12)):,}" if value >= 100 else written_up(value, 3)
    return f"{value:,.0f}" if abs(value) >= 999.5 else f"{value:.3g}"  # (999.7: 1,000, not 1e+03)


def _check_positive(value, parameter: str, allow_infinite: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{parameter} must be a number > 0, got {value!r}") from None
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_infinite):
        allowed = "(0, inf]" if allow_infinite else "(0, inf)"
        raise InputError(f"{parameter} must be in {allowed}, got {value}")
    return value


def _checked_number(value, parameter: str) -> float:
    """A mechanism's parameter as a float in (0, inf), or InputError: a mechanism built directly (not through
    make_mechanism) must not state a guarantee for epsilon = -2, or for infinity with no noise."""
    if isinstance(value, bool):
        raise InputError(f"{parameter} must be a number > 0, got {value!r}")
    return _check_positive(value, parameter)


SMALLEST_DELTA = 1e-300


def _check_delta(delta) -> float:
    try:
        delta = float(delta)
    except (TypeError, ValueError):
        raise InputError(f"delta must be a number in (0, 1), got {delta!r}") from None
    if not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta}")
    if delta < SMALLEST_DELTA:  # below it float64 loses digits (subnormals): the calibration would miss delta
        raise InputError(f"delta must be at least {SMALLEST_DELTA:g} (a smaller one cannot be calibrated exactly in "
                         f"float64), got {delta:g}")
    return delta


_MADE_HERE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # generator -> (its seed (None: OS
# entropy), the initial_seed it was given)
UNKNOWN_ORIGIN = object()


SEED_RANGE = "a whole number from 0 to 2**63 - 1"  # what torch.Generator takes


def seed_option(text: str) -> int:
    """argparse type of a --seed option: the range a generator takes, said as a usage error."""
    import argparse

    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be {SEED_RANGE}, got {text!r}")
    return seed


def new_generator(seed: int | None = None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one release's noise: from ``seed`` (not private: reproducible), or, without one, a
    generator whose noise comes from the operating system's cryptographic generator (``os.urandom``) itself.

    torch's CPU generator (a Mersenne Twister) keeps only the low 32 bits of its seed: noise drawn from it can
    be found by trying every seed (about 4 billion), whatever entropy seeded it. So the mechanisms draw from it
    only for a fixed seed or a caller's generator (``unpredictable``); the generator returned here without a seed
    is seeded from OS entropy too (its stream is never used for a release), and marks the release as private."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= int(seed) < 2 ** 63):  # 5.7 or "5" would be a seed nobody gave
        raise InputError(f"seed must be {SEED_RANGE}, got {seed!r}")
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else int(seed))
    _MADE_HERE[generator] = (None if seed is None else int(seed), generator.initial_seed())
    return generator


def unpredictable(generator: torch.Generator | None) -> bool:
    """Whether noise for ``generator`` comes from the OS (``new_generator()`` without a seed, or None)."""
    return generator is None or generator_seed(generator) is None


def generator_seed(generator: torch.Generator):
    """The seed ``new_generator`` gave ``generator`` (None: OS entropy), or UNKNOWN_ORIGIN for one made elsewhere
    (e.g. ``torch.Generator()``, which starts from the same fixed seed in every process) and for one seeded again
    since (``manual_seed``): its noise is then the new seed's, which no release could name."""
    seed, initial = _MADE_HERE.get(generator, (UNKNOWN_ORIGIN, None))
    return seed if initial is not None and generator.initial_seed() == initial else UNKNOWN_ORIGIN


# Noise is drawn and added in float64 and the result rounded to the latent's dtype. Exponential magnitudes are
# K ln 2 + R: K counts fair coin flips before the first head and R is an exponential cut to [0, ln 2), so the
# tails are those of the exact distributions. A magnitude from one uniform number, -ln(u) or torch.randn, stops
# where u does: float32 normal draws never exceed 5.77 sigma, float64 Laplace draws 36 b, and a cut tail breaks the
# guarantee at large epsilon (two records then have outputs only one of them can give).
WORD_BITS = 62  # random bits per word: a word of all tails (p = 2^-62) draws another
UNIT = 2.0 ** -53  # a word's top 53 bits as a uniform number on [0, 1)


def _random_words(count: int, generator: torch.Generator | None) -> np.ndarray:
    """(count, 3) random 62-bit words (int64), one row per noise value, so that a record's noise is the same
    whatever follows it in the batch: from ``os.urandom`` when ``unpredictable(generator)``, else from
    ``generator`` on its device (a seed gives the same noise on any device). The arithmetic runs in NumPy,
    several times faster than torch for a table row's or an image's few values."""
    if unpredictable(generator):
        raw = np.frombuffer(os.urandom(8 * 3 * count), dtype=np.uint64).reshape(count, 3)
        return (raw >> np.uint64(64 - WORD_BITS)).view(np.int64)  # < 2^62: the same values as int64
    return torch.randint(0, 2 ** WORD_BITS, (count, 3), generator=generator, device=generator.device).cpu().numpy()


def _uniform(words: np.ndarray) -> np.ndarray:
    return (words >> (WORD_BITS - 53)) * UNIT


def coin_flips_before_head(words: np.ndarray, generator: torch.Generator | None) -> np.ndarray:
    """K with P(K = k) = 2^-(k + 1), k = 0, 1, 2, ..., from each random word (float64; no upper limit)."""
    lowest = words & -words  # the lowest 1 bit, 2^k: k tails, then a head (0: a word of all tails)
    _, exponent = np.frexp(lowest.astype(np.float64))
    flips = exponent - 1.0
    if not lowest.all():
        all_tails = lowest == 0
        flips[all_tails] = WORD_BITS + coin_flips_before_head(_random_words(int(all_tails.sum()), generator)[:, 0],
                                                              generator)
    return flips


def exponential_noise(words: np.ndarray, generator: torch.Generator | None) -> np.ndarray:
    """Exp(1) draws with the exact tail, from two words each: K ln 2 + R, K from coin flips, R ~ Exp(1) on [0, ln 2)."""
    within = -np.log1p(-0.5 * _uniform(words[:, 1]))  # inverse CDF of Exp(1) cut to [0, ln 2): 2 (1 - e^-r) = u
    return coin_flips_before_head(words[:, 0], generator) * math.log(2) + within


def laplace_values(count: int, scale: float, generator: torch.Generator | None) -> np.ndarray:
    """``count`` Lap(0, scale) samples (float64 array): a random sign (the third word's lowest bit) times the
    exact-tail exponential K ln 2 + R (K from the first word's coin flips, R from the second word's top 53 bits)."""
    words = _random_words(count, generator)
    noise = (words[:, 1] >> (WORD_BITS - 53)) * (-0.5 * UNIT)  # -u / 2
    np.log1p(noise, out=noise)  # ln(1 - u/2) = -R, R ~ Exp(1) cut to [0, ln 2)
    magnitude = coin_flips_before_head(words[:, 0], generator)
    magnitude *= math.log(2)
    magnitude -= noise
    magnitude *= scale
    return np.where(words[:, 2] & 1, magnitude, -magnitude)


def laplace_noise(shape, scale: float, generator: torch.Generator | None, device="cpu") -> torch.Tensor:
    """Lap(0, scale) samples (float64 tensor of ``shape``): a random sign times an exact-tail exponential."""
    return torch.from_numpy(laplace_values(math.prod(shape), scale, generator).reshape(tuple(shape))).to(device)


def gaussian_noise(shape, sigma: float, generator: torch.Generator | None, device="cpu") -> torch.Tensor:
    """N(0, sigma^2) samples (float64) by Box-Muller from exact-tail exponentials: radius sqrt(2 E), uniform angle;
    values 2i and 2i + 1 are pair i."""
    count = math.prod(shape)
    words = _random_words((count + 1) // 2, generator)
    radius = sigma * np.sqrt(2 * exponential_noise(words, generator))
    angle = 2 * math.pi * _uniform(words[:, 2])
    noise = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).reshape(-1)[:count]
    return torch.from_numpy(noise.reshape(tuple(shape))).to(device)


# float64 rounding can leave a scaled norm a few ulps above R (and the sensitivity above 2R): clip a hair inside,
# by CLIP_MARGIN, and for long latents by more than the worst case of the norm's own sum in any order (D - 1
# roundings of a sum of D non-negative terms: at most (D - 1) 2^-53 relative, plus the scaling's roundings), so
# that no order of summation takes a row outside the ball. 2 D 2^-53 passes 1e-12 from D = 4,504 on: below that,
# CLIP_MARGIN covers it, and releases (and the stored audits of seeded runs) are as before
CLIP_MARGIN = 1e-12


def _clip_factor_limit(radius: float, dim: int) -> float:
    return radius * (1 - max(CLIP_MARGIN, 2 * dim * 2.0 ** -53))


def clip_per_sample(latent: torch.Tensor, radius: float, p: int) -> torch.Tensor:
    """z * min(1, R / ||z||_p), row by row, in float64, never outside the ball."""
    latent = latent.double()
    norms = latent.norm(p=p, dim=1, keepdim=True)
    limit = _clip_factor_limit(radius, latent.shape[1] if latent.dim() > 1 else 1)
    return latent * torch.clamp(limit / norms.clamp_min(1e-300), max=1.0)


def analytic_gaussian_delta(sigma: float, epsilon: float, sensitivity: float) -> float:
    """delta achieved by N(0, sigma^2) at (epsilon, sensitivity) (Balle & Wang 2018, Theorem 8).

    A difference of two terms: where they agree in more than the first three of float64's ~16 digits (a tiny
    epsilon with a tiny delta: the float64 difference is rounding noise, even negative), or where the first is
    near float64's smallest numbers, it is computed again in as many decimal digits as it needs (mpmath); else the
    float64 difference is within about 1e-10 of delta (``analytic_gaussian_sigma`` leaves 1e-9 of room) for
    epsilon up to about 1e13."""
    a = sensitivity / (2 * sigma)
    b = epsilon * sigma / sensitivity
    if a - b < -39:  # delta <= Phi(a - b) < 1e-330: 0 in float64, below any delta asked for
        return 0.0
    first = float(norm.cdf(a - b))
    # e^eps * Phi(-a - b) in log space: a huge times a tiny number, and at most 1
    second = math.exp(epsilon + norm.logcdf(-a - b))
    delta = first - second
    if first > 1e-280 and delta > 1e-3 * first:
        return delta
    return _analytic_gaussian_delta_exact(sigma, epsilon, sensitivity)


def _analytic_gaussian_delta_exact(sigma: float, epsilon: float, sensitivity: float) -> float:
    """``analytic_gaussian_delta`` in multiple precision: digits are added until the difference is resolved."""
    import mpmath  # a dependency of torch (through sympy); only extreme settings come here

    digits = 50
    while True:
        with mpmath.workdps(digits):
            sigma_, epsilon_, sensitivity_ = mpmath.mpf(sigma), mpmath.mpf(epsilon), mpmath.mpf(sensitivity)
            a = sensitivity_ / (2 * sigma_)
            b = epsilon_ * sigma_ / sensitivity_
            first = mpmath.ncdf(a - b) if a - b < 10 ** 30 else mpmath.mpf(1)  # (1 - Phi(-1e30): 1 in any digits)
            if a + b < 10 ** 30:
                second = mpmath.exp(epsilon_) * mpmath.ncdf(-a - b)
            else:  # mpmath's ncdf overflows far out: e^eps Phi(-x) with x = a + b and eps = 2ab is
                # exp(-(a - b)^2 / 2) Phi(-x) / phi(x) / sqrt(2 pi), and Phi(-x) / phi(x) >= 1/x - 1/x^3 (a lower
                # bound: delta is then overstated, by a relative 1e-60 at most)
                x = a + b
                second = mpmath.exp(-(a - b) ** 2 / 2) * (1 / x - 1 / x ** 3) / mpmath.sqrt(2 * mpmath.pi)
            delta = first - second
            # resolved: the difference is well above the last digits of the terms (or the terms are exact zeros)
            if first == 0 or abs(delta) > first * mpmath.mpf(10) ** (20 - digits) or digits >= 20_000:
                return float(delta)
        digits *= 2


# the Gaussian calibration is exact up to here (beyond about 1e13 float64 cannot place a - b finely enough for
# delta, and from about 7e18 exp overflows); such an epsilon protects nothing, and the app's slider ends at 1e4
GAUSSIAN_LARGEST_EPSILON = 1e9


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest sigma with analytic_gaussian_delta(sigma) <= delta (up to 1e-9 of delta, left as room), for epsilon
    up to GAUSSIAN_LARGEST_EPSILON (InputError above it). Sigma is proportional to the sensitivity: found for
    sensitivity 1 and scaled (a huge sensitivity made epsilon * sigma overflow)."""
    if not epsilon <= GAUSSIAN_LARGEST_EPSILON:
        raise InputError(f"the gaussian mechanism takes epsilon up to {GAUSSIAN_LARGEST_EPSILON:g}, got {epsilon:g}: its "
                         "calibration is not exact beyond it, and an epsilon this large protects nothing")
    return sensitivity * _unit_gaussian_sigma(float(epsilon), float(delta))


@functools.lru_cache(maxsize=256)  # a bisection of ~50 normal CDFs: once per setting, not once per release
def _unit_gaussian_sigma(epsilon: float, delta: float) -> float:
    """``analytic_gaussian_sigma`` for sensitivity 1, by bisection (never below 1e-12)."""
    # delta, and float64's last digits of the formula, with a hair of room: the sigma holds delta, not delta + 2e-15
    delta = delta * (1 - 1e-9)
    low, high = 1e-12, 1.0
    while analytic_gaussian_delta(high, epsilon, 1.0) > delta:
        low, high = high, high * 2
    for _ in range(200):
        middle = 0.5 * (low + high)
        if analytic_gaussian_delta(middle, epsilon, 1.0) > delta:
            low = middle
        else:
            high = middle
        if high - low <= 1e-15 * high:
            break
    return high


class Mechanism:
    """Base class: a noise mechanism on latents (B, D)."""

    name = ""
    formal = True
    # the noise's density falls with this norm of (release - center): L1 for Laplace noise, L2 for Gaussian; so
    # the most likely source of a release is the record whose center is nearest in it (the attacker of cadp.evaluate)
    likelihood_norm = 1

    def __call__(self, latent: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def center(self, latent: torch.Tensor) -> torch.Tensor:
        """What the noise is added to: M(z) = center(z) + noise (the clipped latent; for paper, the scaled batch)."""
        raise NotImplementedError

    @property
    def noise_std(self) -> float:
        """Per-coordinate standard deviation of the added noise."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"mechanism": self.name}


@dataclass
class LaplaceMechanism(Mechanism):
    """Pure eps-LDP: clip to the L1 ball of radius R, add Lap(0, b), b = 2R / eps."""

    epsilon: float
    clip_radius: float
    temperature: float | None = None
    name = "laplace"

    def __post_init__(self):
        self.epsilon = _checked_number(self.epsilon, "epsilon")
        self.clip_radius = _checked_number(self.clip_radius, "clip_radius")
        if self.temperature is not None:
            self.temperature = _checked_number(self.temperature, "temperature")
        _check_scales(self)

    @classmethod
    def create(cls, epsilon: float, clip_radius: float | None, temperature: float | None):
        if temperature is not None:
            # constant temperature: sqrt(2) * b = T with b = 2R / eps  =>  R = T * eps / (2 sqrt 2)
            clip_radius = temperature * epsilon / (2 * math.sqrt(2))
        return cls(epsilon, clip_radius, temperature)

    @property
    def scale(self) -> float:
        return 2 * self.clip_radius / self.epsilon  # L1 sensitivity 2R (diameter of the clipped ball)

    @property
    def noise_std(self) -> float:
        return math.sqrt(2) * self.scale

    def center(self, latent):
        return clip_per_sample(latent, self.clip_radius, p=1)

    def __call__(self, latent, generator=None):
        return (self.center(latent) + laplace_noise(latent.shape, self.scale, generator, latent.device)).to(latent.dtype)

    def guarantee(self, fitted_on_records: bool = False, trained_on: str | None = None, kept: bool | None = True,
                  stated_public: str | None = None,
                  stated_public_by: str | None = None, **_) -> str:
        return (f"Laplace mechanism: pure epsilon-local differential privacy with epsilon = {stated(self.epsilon)} "
                f"for the latent (L1 clip radius {self.clip_radius:.4g}, sensitivity 2R = {2 * self.clip_radius:.4g}, "
                f"Laplace scale {self.scale:.4g}). {common_terms(fitted_on_records, trained_on, kept, stated_public, stated_public_by)}")

    def describe(self) -> dict:
        return {"mechanism": self.name, "epsilon": self.epsilon, "clip_radius": self.clip_radius,
                "temperature": self.temperature, "noise_scale": self.scale}


@dataclass
class GaussianMechanism(Mechanism):
    """(eps, delta)-LDP: clip to the L2 ball of radius R, add N(0, sigma^2), analytic calibration with Delta = 2R."""

    epsilon: float
    delta: float
    clip_radius: float
    temperature: float | None = None
    name = "gaussian"

    def __post_init__(self):
        self.epsilon = _checked_number(self.epsilon, "epsilon")
        self.delta = _check_delta(self.delta)
        self.clip_radius = _checked_number(self.clip_radius, "clip_radius")
        if self.temperature is not None:
            self.temperature = _checked_number(self.temperature, "temperature")
        _check_scales(self)

    @classmethod
    def create(cls, epsilon: float, delta: float, clip_radius: float | None, temperature: float | None):
        if temperature is not None:
            # sigma is linear in R: sigma(R) = R * sigma(R=1), so R = T / sigma(R=1)
            clip_radius = temperature / analytic_gaussian_sigma(epsilon, delta, 2.0)
        return cls(epsilon, delta, clip_radius, temperature)

    @property
    def sigma(self) -> float:
        return analytic_gaussian_sigma(self.epsilon, self.delta, 2 * self.clip_radius)

    @property
    def noise_std(self) -> float:
        return self.sigma

    likelihood_norm = 2

    def center(self, latent):
        return clip_per_sample(latent, self.clip_radius, p=2)

    def __call__(self, latent, generator=None):
        return (self.center(latent) + gaussian_noise(latent.shape, self.sigma, generator, latent.device)).to(latent.dtype)

    def guarantee(self, fitted_on_records: bool = False, trained_on: str | None = None, kept: bool | None = True,
                  stated_public: str | None = None,
                  stated_public_by: str | None = None, **_) -> str:
        return (f"Gaussian mechanism: (epsilon, delta)-local differential privacy with epsilon = {stated(self.epsilon)}, "
                f"delta = {exact(self.delta)} for the latent (L2 clip radius {self.clip_radius:.4g}, sensitivity "
                f"2R = {2 * self.clip_radius:.4g}, sigma {self.sigma:.4g} from the analytic Gaussian mechanism). "
                f"{common_terms(fitted_on_records, trained_on, kept, stated_public, stated_public_by)}")

    def describe(self) -> dict:
        return {"mechanism": self.name, "epsilon": self.epsilon, "delta": self.delta,
                "clip_radius": self.clip_radius, "temperature": self.temperature, "noise_scale": self.sigma}


@dataclass
class MetricMechanism(Mechanism):
    """eps*d privacy: no clipping, z + Lap(0, 1/eps_unit) per coordinate."""

    epsilon_unit: float
    name = "metric"

    def __post_init__(self):
        self.epsilon_unit = _checked_number(self.epsilon_unit, "epsilon")
        _check_scales(self)

    @property
    def epsilon(self) -> float:
        return self.epsilon_unit

    @property
    def scale(self) -> float:
        return 1 / self.epsilon_unit

    @property
    def noise_std(self) -> float:
        return math.sqrt(2) * self.scale

    def center(self, latent):
        return latent.double()

    def __call__(self, latent, generator=None):
        return (self.center(latent) + laplace_noise(latent.shape, self.scale, generator, latent.device)).to(latent.dtype)

    def between_records(self, d_typ: float, d_nn: float) -> tuple[float, float]:
        """Privacy loss between two typical same-class records, and between nearest neighbours."""
        return self.epsilon_unit * d_typ, self.epsilon_unit * d_nn

    def guarantee(self, d_typ: float | None = None, d_nn: float | None = None,
                  fitted_on_records: bool = False, trained_on: str | None = None, kept: bool | None = True,
                  distances_measured_on: str | None = None, stated_public: str | None = None,
                  stated_public_by: str | None = None,
                  distances_missing: str | None = None, **_) -> str:
        # which two records the bound compares follows how the conditions are released (a kept one is exact)
        pair, typical_pair = (("any two records", "two typical distinct records") if kept is None else
                              ("any two records, in the latent (the conditions' release is stated apart)",
                               "two typical distinct records with the same condition values") if not kept else
                              ("two records with the same kept condition",
                               "two typical distinct records with the same kept condition"))
        text = (f"Metric privacy (eps*d): for {pair}, output probabilities "
                f"differ by at most exp({stated(self.epsilon_unit)} x their L1 latent distance). No clipping; "
                f"Laplace scale {self.scale:.4g}.")
        if d_typ is not None and d_nn is not None:
            typical, nearest = self.between_records(d_typ, d_nn)
            # the distances rounded up as the epsilons are: "(distance 413) that is epsilon = 414" at 1 per unit
            text += (f" Between {typical_pair} (distance {readable(d_typ, up=True)}) "
                     f"that is epsilon = {readable(typical, up=True)}; between a record and its nearest neighbour (distance "
                     f"{readable(d_nn, up=True)}) epsilon = {readable(nearest, up=True)}.")
            if distances_measured_on:
                text += f" Both distances are medians measured {distances_measured_on}."
            if nearest > 10:
                text += " At this setting only near-duplicates are protected."
        else:  # (PRIVACY.md: always say what it means between real records; here that cannot be said)
            text += (" This model has no measured latent distances" if not distances_missing else
                     f" This model's weights have no measured latent distances ({distances_missing})")
            text += (", so this cannot be turned into an epsilon "
                     "between real records: how far apart its records lie, and so which ones this setting "
                     "protects, is not known (for the bundled models, settings that keep a release recognizable "
                     "protect only near-duplicates).")
        return f"{text} {common_terms(fitted_on_records, trained_on, kept, stated_public, stated_public_by)}"

    def describe(self) -> dict:
        return {"mechanism": self.name, "epsilon_unit": self.epsilon_unit, "noise_scale": self.scale}


@dataclass
class PaperMechanism(Mechanism):
    """Reproduction of the original CADP code: batch-level matrix 1-norm clip, Lap(0, s/eps). No valid guarantee."""

    epsilon: float
    name = "paper"
    formal = False

    def __post_init__(self):
        self.epsilon = _checked_number(self.epsilon, "epsilon")
        _check_scales(self)

    @property
    def clip_size(self) -> float:
        return min(self.epsilon / 2, 4.0)

    @property
    def scale(self) -> float:
        return self.clip_size / self.epsilon

    @property
    def noise_std(self) -> float:
        return math.sqrt(2) * self.scale

    def center(self, latent):
        # matrix 1-norm of the whole batch: the largest column sum of |Z| (the original code's clip)
        matrix_norm = latent.abs().sum(dim=0).max()
        return latent * torch.clamp(self.clip_size / matrix_norm.clamp_min(1e-30), max=1.0)

    def __call__(self, latent, generator=None):
        return (self.center(latent) + laplace_noise(latent.shape, self.scale, generator, latent.device)).to(latent.dtype)

    def guarantee(self, **_) -> str:
        return (f"Paper mechanism ({PAPER_LABEL}): reproduces the original CADP code at epsilon = {stated(self.epsilon)}, "
                f"clipping the whole batch at once and understating the sensitivity by 2x. It gives no valid "
                f"per-record guarantee, and its output depends on the batch it is run with. {PAPER_LOSS}")

    def describe(self) -> dict:
        return {"mechanism": self.name, "epsilon": self.epsilon, "noise_scale": self.scale,
                "label": PAPER_LABEL}


# what "no valid guarantee" amounts to (PRIVACY.md: for a single image the matrix norm is its largest |z_j|): the
# noise is not calibrated even to the 2x-understated L1 sensitivity, since the clip bounds coordinates, not L1 norms
PAPER_LOSS = ("Its clip, the batch's matrix 1-norm, bounds each coordinate of a latent, not its L1 norm: two records "
              "released alone can differ by twice the clip size (from -s to +s) in every one of the latent's D "
              "coordinates, so the privacy "
              "loss between them can reach 2·D·epsilon (1,568·epsilon for a 28x28 image), not epsilon; in a batch, "
              "a record's clip also depends on the other records.")


@dataclass
class NoNoise(Mechanism):
    """epsilon = infinity: no noise at all; the release is the model's reconstruction. No privacy."""

    name = "none"
    formal = False

    @property
    def epsilon(self) -> float:
        return math.inf

    @property
    def noise_std(self) -> float:
        return 0.0

    def center(self, latent):
        return latent.clone()

    def __call__(self, latent, generator=None):
        return self.center(latent)

    def guarantee(self, **_) -> str:
        return "No noise (epsilon = infinity): the output reconstructs the record and gives no privacy."


def make_mechanism(name: str, epsilon: float, *, delta: float | None = None,
                   clip_radius: float | None = None, temperature: float | None = None) -> Mechanism:
    """Build a mechanism of docs/PRIVACY.md.

    laplace / gaussian: ``clip_radius`` (fixed radius) or ``temperature``
    (constant temperature) selects the clip-radius policy, not both; neither
    means constant temperature DEFAULT_TEMPERATURE (0.7), the contract's
    default. gaussian also needs ``delta``. metric: ``epsilon`` is per unit of latent
    L1 distance. paper: the reference reproduction.
    """
    if name not in MECHANISMS:
        raise InputError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {name!r}")
    epsilon = _checked_number(epsilon, "epsilon")
    given = {"delta": delta, "clip_radius": clip_radius, "temperature": temperature}
    applies = {"laplace": ("clip_radius", "temperature"), "gaussian": ("delta", "clip_radius", "temperature")}
    ignored = [key for key, value in given.items() if value is not None and key not in applies.get(name, ())]
    if ignored:  # a parameter that would silently do nothing
        raise InputError(f"{', '.join(ignored)} do{'es' * (len(ignored) == 1)} not apply to the {name} mechanism")
    return _make(name, epsilon, delta, clip_radius, temperature)  # (each mechanism checks its scales when built)


def _check_scales(mechanism: Mechanism) -> None:
    """Refuse a clip radius or noise scale the float arithmetic cannot honour (for make_mechanism and for a
    mechanism built directly alike)."""
    radius = getattr(mechanism, "clip_radius", None)
    if radius is not None and not radius >= SMALLEST_RADIUS:  # denormal radii defeat the clip's rounding margin
        raise InputError(f"these settings make the clip radius {radius:.3g}, below the smallest allowed "
                         f"({SMALLEST_RADIUS:g}): choose a larger clip radius, temperature or epsilon")
    noise_advice = ("a larger epsilon or a smaller clip radius or temperature" if radius is not None else
                    "a larger epsilon")  # (metric and paper have no clip radius or temperature to choose)
    for what, value, advice in (("noise scale", mechanism.noise_std, noise_advice), ("clip radius", radius or 0, "a smaller epsilon, clip radius or temperature "
                                 "(at a constant temperature the radius grows with epsilon)")):
        if not value <= LARGEST_SCALE:  # float32 latents would hold infinities, and releases NaNs
            raise InputError(f"these settings make the {what} {value:.3g}, above the largest allowed ({LARGEST_SCALE:g}; "
                             f"float32 latents overflow at 3.4e38 and releases would be NaN): choose {advice}")


LARGEST_SCALE = 1e30
SMALLEST_RADIUS = 1e-100


def _make(name, epsilon, delta, clip_radius, temperature) -> Mechanism:
    if name in ("laplace", "gaussian"):
        if clip_radius is not None and temperature is not None:
            raise InputError("give clip_radius (fixed radius) or temperature (constant temperature), not both")
        if clip_radius is None and temperature is None:
            temperature = DEFAULT_TEMPERATURE
        if clip_radius is not None:
            clip_radius = _check_positive(clip_radius, "clip_radius")
        else:
            temperature = _check_positive(temperature, "temperature")
        if name == "laplace":
            return LaplaceMechanism.create(epsilon, clip_radius, temperature)
        if delta is None:
            raise InputError("delta must be given for the gaussian mechanism, a number in (0, 1)")
        return GaussianMechanism.create(epsilon, _check_delta(delta), clip_radius, temperature)
    if name == "metric":
        return MetricMechanism(epsilon)
    return PaperMechanism(epsilon)


# --------------------------------------------------------------------------- conditions

HANDLINGS = ("kept", "randomized", "resampled")


MIN_CONDITION_EPSILON = 1e-6  # randomized response's change probability, rounded up to the float64 grid, stays
# within both sides of the e^eps ratio from here; at ~1e-12 the rounding pushed it past (k - 1) / k


@dataclass
class ConditionHandling:
    """How one conditioning attribute is released: kept, randomized (k-RR with epsilon), or resampled."""

    handling: str = "kept"
    epsilon: float | None = None

    def __post_init__(self):
        if self.handling not in HANDLINGS:
            raise InputError(f"condition handling must be one of {', '.join(HANDLINGS)}, got {self.handling!r}")
        if self.handling == "randomized":
            self.epsilon = _check_positive(self.epsilon, "condition epsilon")
            if self.epsilon < MIN_CONDITION_EPSILON:  # float64 rounding of the change probability would exceed it
                raise InputError(f"a randomized condition's epsilon must be at least {MIN_CONDITION_EPSILON:g}, got "
                                 f"{self.epsilon:g}: below it the release is as good as uniform; resample it from "
                                 "a uniform or public prior instead (costs 0)")
        elif self.epsilon is not None:
            raise InputError(f"a {self.handling} condition takes no epsilon")

    @property
    def cost(self) -> float:
        return self.epsilon if self.handling == "randomized" else 0.0


def keep_probability(epsilon: float, k: int) -> float:
    """k-ary randomized response: P(report the true value) = e^eps / (e^eps + k - 1)."""
    return 1.0 / (1.0 + (k - 1) * math.exp(-epsilon))


def randomized_response(values: torch.Tensor, k: int, epsilon: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep each value with keep_probability (at most: the change probability is rounded up to the uniform's grid),
    otherwise report one of the other k - 1 uniformly."""
    if k < 2:
        return values.clone()
    # change iff u < q', q' the change probability (k - 1) / (e^eps + k - 1) rounded up to the float64 uniform's
    # 2^-53 grid (at least one step): P(change) = q' >= q exactly, so the ratio stays <= e^eps. A keep probability
    # near 1 rounds to 1.0 itself (from eps ~ 37); float32 uniforms, 2^-24 apart, kept every value from eps ~ 17
    tail = (k - 1) * math.exp(-epsilon)
    change_below = max(math.ceil(tail / (1 + tail) * (1 + 1e-12) * 2.0 ** 53), 1) / 2.0 ** 53
    words = _random_words(values.numel(), generator)  # a row per value: its draws do not depend on the others
    keep = torch.from_numpy(_uniform(words[:, 0]) >= change_below).reshape(values.shape)
    shift = torch.from_numpy(1 + uniform_index(values.numel(), k - 1, generator, words[:, 1])).reshape(values.shape)
    other = ((values.long() + shift) % k).to(values.dtype)  # in int64: a uint8 sum would wrap at 256
    return torch.where(keep, values, other)


def uniform_index(count: int, n: int, generator: torch.Generator | None = None,
                  words: np.ndarray | None = None) -> np.ndarray:
    """``count`` draws from {0, ..., n - 1}, each exactly 1/n: 62-bit words (``words`` when given, else drawn), a
    word in the incomplete last block drawn again (torch.randint reduces 32 random bits modulo n, so some values
    came ~n 2^-32 more often)."""
    limit = (2 ** WORD_BITS // n) * n
    words = _random_words(count, generator)[:, 0] if words is None else words.copy()
    redraw = words >= limit
    while redraw.any():
        words[redraw] = _random_words(int(redraw.sum()), generator)[:, 0]
        redraw = words >= limit
    return words % n


def resample(count: int, prior: list[float] | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Values drawn from a public prior, independent of the record: class indices (int64), the i-th from the i-th
    random word (inverse CDF), so that a record's draw does not depend on how many records follow it."""
    weights = torch.as_tensor(prior, dtype=torch.float64).numpy()
    if weights.ndim != 1 or not len(weights) or not np.isfinite(weights).all() or (weights < 0).any() \
            or weights.sum() <= 0:
        raise InputError(f"a prior is one non-negative weight per value, not all zero; got {prior!r}")
    cdf = np.cumsum(weights) / weights.sum()
    index = np.searchsorted(cdf, _uniform(_random_words(count, generator)[:, 0]), side="right")
    return torch.from_numpy(np.minimum(index, np.flatnonzero(weights)[-1]))  # (a sum rounded below 1: the last)


def condition_stream(generator: torch.Generator | None) -> torch.Generator | None:
    """Where one released condition draws from: the OS for unpredictable noise; for a seed or a caller's generator
    a child generator seeded by one word of it, drawn before the latent noise (one call per released condition).
    Each record's condition values and latent noise then come from its own place in separate streams, whatever
    its batch mates (PRIVACY.md: same seed, same record, different batch mates, identical output)."""
    if unpredictable(generator):
        return generator
    return torch.Generator().manual_seed(int(_random_words(1, generator)[0, 0]))


_INDEX_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)  # (torch's min and max: not uint16+)


def release_condition(values: torch.Tensor, k: int, handling: ConditionHandling,
                      prior: list[float] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The released values (int class indices) of one attribute. A randomized or resampled one draws from its own
    ``condition_stream`` (one word of a seeded ``generator``), so that a record's value ignores its batch mates."""
    if not isinstance(values, torch.Tensor) or values.dtype not in _INDEX_DTYPES or values.dim() != 1:
        raise InputError("values must be a 1-d tensor of class indices, int64 (or int8, int16, int32, uint8; "
                         f"cadp.models.class_indices turns names or numbers into one), got {type(values).__name__}"
                         + (f" of {values.dtype}, shape {tuple(values.shape)}" if isinstance(values, torch.Tensor) else ""))
    if len(values):
        low, high = (int(bound) for bound in torch.aminmax(values))  # one reduction: it runs on every release
        if low < 0 or high >= k:
            raise InputError(f"class indices must be in 0..{k - 1} for {k} values, got {low}..{high}")
    if prior is not None and len(prior) != k:
        raise InputError(f"a prior gives one weight per value: {k} values, got {len(prior)} weights")
    if handling.handling == "kept":
        return values.clone()
    generator = condition_stream(generator)
    if handling.handling == "randomized":
        return randomized_response(values, k, handling.epsilon, generator)
    return resample(len(values), prior if prior is not None else [1.0 / k] * k, generator)


def epsilon_terms(mechanism: Mechanism, handlings: dict[str, ConditionHandling]) -> list[float]:
    """The epsilons that add up in one release (basic composition): the latent's where it is one (metric's is per
    unit of L1 distance, paper's nominal: only the conditions' count then), and each released condition's."""
    adds = mechanism.formal and not isinstance(mechanism, MetricMechanism)
    return [mechanism.epsilon] * adds + [h.cost for h in handlings.values() if h.cost]


def total_epsilon(mechanism: Mechanism, handlings: dict[str, ConditionHandling]) -> float | None:
    """eps_latent + sum(eps_c) (basic composition: ``epsilon_terms``); None for paper (no formal guarantee) and for
    metric, whose latent part is per unit of L1 distance: 'eps_unit * d + sum(eps_c)' does not add into one number.
    Raises InputError when a sum overflows to infinity: a guarantee of epsilon = inf says nothing."""
    adds = mechanism.formal and not isinstance(mechanism, MetricMechanism)
    terms = epsilon_terms(mechanism, handlings)
    if math.isinf(sum(terms)):
        raise InputError(f"the total epsilon of one release (basic composition: {' + '.join(f'{t:g}' for t in terms)}) "
                         "overflows to infinity, which is no guarantee: choose smaller epsilons")
    if not adds:
        return None
    return sum(terms)


def batch_sizes(records: int, batch_size: int) -> list[int]:
    """Sizes of the consecutive batches ``cadp.evaluate.apply_mechanism`` cuts ``records`` latents into."""
    return [min(batch_size, records - start) for start in range(0, records, batch_size)]


def paper_batches_text(settings: dict) -> str | None:
    """How a utility sweep batched the paper mechanism, from its settings: 'batches of 512 and 488
    training and 500 test records'. The requested size alone overstates it when a split is smaller."""
    size, n_train, n_test = (settings.get(key) for key in ("paper_batch_size", "n_train", "n_test"))
    if not all(isinstance(value, int) and value > 0 for value in (size, n_train, n_test)):
        return None

    def sizes(records: int) -> str:
        parts = batch_sizes(records, size)
        if len(parts) > 2:  # all full but the last
            return f"{len(parts) - 1} x {size:,} + {parts[-1]:,}" if parts[-1] != size else f"{len(parts)} x {size:,}"
        return " and ".join(f"{part:,}" for part in parts)

    return f"batches of {sizes(n_train)} training and {sizes(n_test)} test records (batch size {size:,})"
