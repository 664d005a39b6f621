"""Audits, re-identification and utility curves of CADP models (docs/PRIVACY.md, "Audits").

    python -m cadp.evaluate bpd     --model weights/mnist-cinn
    python -m cadp.evaluate utility --model weights/mnist-cinn [--quick] [--device auto]
    python -m cadp.evaluate audit   --model weights/mnist-cinn [--quick]
    python -m cadp.evaluate dpsgd   --model weights/mnist-cinn [--quick]
    python -m cadp.evaluate report  --model weights/mnist-cinn

Each command writes its section of the folder's eval.json (layout in
docs/DEVELOPING.md) and redraws report.html, the plotly curves of that file.
A folder in the Hugging Face cache (a Hub model's snapshot) or one that cannot
be written is refused before any work: evaluate a copy (cp -rL FOLDER my-model).
Every CADP guarantee here is local; the DP-SGD reference ("central") is central
DP and is drawn on its own panel, never on the local axes.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import errno
import math
import os
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import betaincinv
from torch import nn

from cadp import baselines
from cadp.compare import plural
from cadp.errors import CadpError, InputError, ModelError
from cadp.hub import REPORT_NAME, write_text_whole
from cadp.mechanisms import (
    PAPER_LABEL,
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    MetricMechanism,
    NoNoise,
    PaperMechanism,
    make_mechanism,
    new_generator,
    paper_batches_text,
    readable,
)
from cadp.models import ImageCINN, TabularCINN
from cadp.privatize import _image_labels, _image_pixels
from cadp.train import (
    condition_groups,
    evaluate_bits_per_dim,
    recorded_command,
    resolve_device,
    sample_recognition,
    split_table,
)

DEFAULT_EPSILONS = (0.5, 1, 2, 3, 6, 10, 100, 1000, 10000)
DEFAULT_MECHANISMS = ("laplace", "gaussian", "metric", "paper")
DEFAULT_DELTA = 1e-5
AUDIT_TEMPERATURE = 0.7
CONFIDENCE = 0.95
PAPER_BATCH_SIZE = {"mnist": 512, "fashion-mnist": 512}  # the paper's batch sizes (X-ray / OCT: 64)
PAPER_DEFAULT_BATCH = 64

Progress = "callable(share: float, message: str) or None"


def _report(progress, share: float, message: str) -> None:
    if progress is not None:
        progress(float(min(max(share, 0.0), 1.0)), message)


# --------------------------------------------------------------------------- Clopper–Pearson

def clopper_pearson(successes, trials, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval (lower, upper) at ``confidence`` (each tail (1 - confidence) / 2)."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    tail = (1 - confidence) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(successes > 0,
                         betaincinv(np.maximum(successes, 1e-300), trials - successes + 1, tail), 0.0)
        upper = np.where(successes < trials,
                         betaincinv(successes + 1, np.maximum(trials - successes, 1e-300), 1 - tail), 1.0)
    return lower, upper


def epsilon_from_rates(tpr_lower, fpr_upper, delta: float) -> np.ndarray:
    """log((TPR - delta) / FPR), -inf where TPR <= delta: the epsilon a test with these rates proves."""
    tpr_lower = np.asarray(tpr_lower, dtype=np.float64)
    fpr_upper = np.asarray(fpr_upper, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log(np.maximum(tpr_lower - delta, 0.0)) - np.log(fpr_upper)
    return np.where(tpr_lower > delta, value, -np.inf)


def largest_provable_epsilon(releases: int, delta: float = 0.0, confidence: float = CONFIDENCE) -> float:
    """The largest lower bound an audit of ``releases`` releases per record can give (a perfect test: every
    held-out release told apart; the audit measures on the second half): bounds near it mean "at least this
    much", not that a claim holds."""
    measured = releases - releases // 2
    tpr_lower, _ = clopper_pearson(measured, measured, confidence)
    _, fpr_upper = clopper_pearson(0, measured, confidence)
    return float(epsilon_from_rates(tpr_lower, fpr_upper, delta))


# --------------------------------------------------------------------------- distinguishing audit

@dataclass
class AuditResult:
    """Outcome of a distinguishing audit of one mechanism on two records.

    epsilon_lower_bound holds with probability >= ``confidence`` (Clopper–Pearson on
    held-out releases); epsilon_estimate is the same quantity from the point rates (no confidence margin;
    with no false positive, FPR is taken as half a count, so it is ln(2n TPR), n held-out releases: a cap).
    tpr / fpr are the held-out rates of the test in the direction that gave the bound.
    """

    mechanism: str
    claimed_epsilon: float | None
    delta: float
    epsilon_estimate: float
    epsilon_lower_bound: float
    tpr: float
    fpr: float
    releases: int
    confidence: float = CONFIDENCE
    label: str = ""
    batch_size: int | None = None
    statistic: str = ""
    pair: str = ""  # which of the pairs tried gave the measured test (worst_case_pairs' names)

    @property
    def exceeds_claim(self) -> bool:
        return self.claimed_epsilon is not None and self.epsilon_lower_bound > self.claimed_epsilon

    @property
    def provable_ceiling(self) -> float:
        """The largest bound this many releases can give (``largest_provable_epsilon``)."""
        return largest_provable_epsilon(self.releases, self.delta, self.confidence)

    @property
    def verdict(self) -> str | None:
        """Whether the audit could disprove the claim, and did: a claim at or above the ceiling passes whatever the
        code does, so it is "not testable" rather than a pass. A pass is no proof: a gaussian with half its noise
        passes at 10,000 releases (the test's power is limited). None for paper (no claim)."""
        if self.claimed_epsilon is None:
            return None
        if self.exceeds_claim:  # a 95% bound: a correct mechanism gets here by chance, rarely
            return (f"exceeds the claim: at {self.confidence:.0%} confidence the code loses more than it claims "
                    f"(a correct mechanism does this by chance in at most {1 - self.confidence:.0%} of audits; a "
                    "second, independent audit, with other noise, that finds a violation too makes chance "
                    "unlikely, while one that passes does not clear this one: the test's power is limited)")
        if self.claimed_epsilon >= self.provable_ceiling:
            return (f"not testable: {self.releases:,} releases can show at most epsilon "
                    f"{self.provable_ceiling:.2f}, below the claim")
        return "no violation found (the bound is at or below the claim)"

    def to_dict(self) -> dict:
        values = {**asdict(self), "provable_ceiling": self.provable_ceiling, "verdict": self.verdict}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def _statistic(mechanism: Mechanism, releases: torch.Tensor, mean_a: torch.Tensor,
               mean_b: torch.Tensor) -> tuple[torch.Tensor, str]:
    """A 1-D statistic, large for releases of record a: the log-likelihood ratio up to a monotone map."""
    releases, mean_a, mean_b = releases.double(), mean_a.double(), mean_b.double()
    if isinstance(mechanism, GaussianMechanism):
        return releases @ (mean_a - mean_b).reshape(-1), "projection on E[M(z_a)] - E[M(z_b)]"
    # Laplace noise (laplace, metric, paper): the LLR is sum_j |y_j - b_j| - |y_j - a_j| (times 1/scale)
    return ((releases - mean_b).abs() - (releases - mean_a).abs()).sum(1), "Laplace log-likelihood ratio"


def _best_threshold(positive: np.ndarray, negative: np.ndarray, delta: float, confidence: float) -> float:
    """Threshold t of the test 'statistic > t' with the largest Clopper–Pearson epsilon bound on this data."""
    positive, negative = np.sort(positive), np.sort(negative)
    candidates = np.unique(np.concatenate([positive, negative, [-np.inf]]))
    true_positives = len(positive) - np.searchsorted(positive, candidates, side="right")
    false_positives = len(negative) - np.searchsorted(negative, candidates, side="right")
    tpr_lower, _ = clopper_pearson(true_positives, len(positive), confidence)
    _, fpr_upper = clopper_pearson(false_positives, len(negative), confidence)
    best = int(np.argmax(epsilon_from_rates(tpr_lower, fpr_upper, delta)))
    if best + 1 == len(candidates) or not np.isfinite(candidates[best]):
        return float(candidates[best])
    # halfway to the next value: the same counts on this data, and no held-out release right at its edge
    return float((candidates[best] + candidates[best + 1]) / 2)


def _evaluate_threshold(positive: np.ndarray, negative: np.ndarray, threshold: float, delta: float,
                        confidence: float) -> tuple[float, float, float, float]:
    """(bound, estimate, tpr, fpr) of 'statistic > threshold' on held-out data."""
    true_positives, false_positives = int((positive > threshold).sum()), int((negative > threshold).sum())
    tpr_lower, _ = clopper_pearson(true_positives, len(positive), confidence)
    _, fpr_upper = clopper_pearson(false_positives, len(negative), confidence)
    bound = float(epsilon_from_rates(tpr_lower, fpr_upper, delta))
    tpr, fpr = true_positives / len(positive), false_positives / len(negative)
    # the point estimate floors FPR at half a count so that it stays finite
    estimate = float(epsilon_from_rates(tpr, max(fpr, 0.5 / len(negative)), delta))
    return bound, estimate, tpr, fpr


def _release(mechanism: Mechanism, latent: torch.Tensor, releases: int, generator, batch_size: int | None):
    """``releases`` independent releases of one latent (1, D).

    Per-sample mechanisms take one (releases, D) call. ``paper`` depends on its batch:
    it is applied with ``batch_size`` copies of the record per call (1 by default:
    the app audits single records, as if each were privatized alone).
    """
    if batch_size is None:
        return mechanism(latent.expand(releases, -1).contiguous(), generator)
    parts = [mechanism(latent.expand(min(batch_size, releases - start), -1).contiguous(), generator)
             for start in range(0, releases, batch_size)]
    return torch.cat(parts)


AUDIT_LABELS = {
    "laplace": "pure epsilon-LDP (claim: epsilon)",
    "gaussian": "(epsilon, delta)-LDP (claim: epsilon at this delta)",
    "metric": "epsilon*d privacy (claim: epsilon_unit x L1 latent distance of the two records)",
    "paper": PAPER_LABEL,
}


def _claimed_epsilon(mechanism: Mechanism, latent_a: torch.Tensor, latent_b: torch.Tensor) -> float | None:
    if not mechanism.formal:
        return None
    if isinstance(mechanism, MetricMechanism):  # eps * d: the claim between these two records
        return float(mechanism.epsilon_unit * (latent_a - latent_b).abs().sum())
    return float(mechanism.epsilon)


@torch.inference_mode()
def latent_audit(latent_a, latent_b, mechanism: Mechanism, releases: int = 10_000,
                 generator: torch.Generator | None = None, *, batch_size: int | None = None,
                 confidence: float = CONFIDENCE, progress=None) -> AuditResult:
    """Distinguishing audit of ``mechanism`` on two latent vectors (D,) or (1, D).

    Each latent is released ``releases`` times; the first half of each set fits the
    threshold of a test on a 1-D statistic (the log-likelihood ratio of the
    mechanism's noise), the second half measures its TPR / FPR, and Clopper–Pearson
    bounds turn them into eps_lb = log((TPR_lower - delta) / FPR_upper) (or of (1 - FPR) against (1 - TPR):
    the direction that the first half favours).
    ``paper`` runs in batches of ``batch_size`` (default 1); the others in one batch.
    """
    return pairs_audit([("", latent_a, latent_b)], mechanism, releases, generator, batch_size=batch_size,
                       confidence=confidence, progress=progress)


@torch.inference_mode()
def pairs_audit(pairs, mechanism: Mechanism, releases: int = 10_000, generator: torch.Generator | None = None, *,
                batch_size: int | None = None, confidence: float = CONFIDENCE, progress=None) -> AuditResult:
    """``latent_audit`` over several pairs ``[(name, latent_a, latent_b), ...]``, released in turn: the first
    half of every pair's releases picks the pair, the direction and the threshold of the one test that the second
    half measures, so the bound keeps its confidence (the largest of several held-out bounds would not). A pair
    tried besides the one that attains the sensitivity catches code whose clip is not the one it claims."""
    if isinstance(mechanism, NoNoise):
        raise InputError("the audit needs a noise mechanism; epsilon = infinity has nothing to audit")
    if isinstance(releases, bool) or not isinstance(releases, (int, np.integer)) or releases < 20:
        raise InputError(f"releases must be an integer >= 20, got {releases!r}")
    releases = int(releases)
    if generator is None:
        generator = new_generator()
    if batch_size is None and isinstance(mechanism, PaperMechanism):
        batch_size = 1
    delta = float(getattr(mechanism, "delta", 0.0))
    half, fitted = releases // 2, []
    for index, (pair, latent_a, latent_b) in enumerate(pairs):
        latent_a = torch.as_tensor(latent_a, dtype=torch.float32).reshape(1, -1).cpu()
        latent_b = torch.as_tensor(latent_b, dtype=torch.float32).reshape(1, -1).cpu()
        if latent_a.shape != latent_b.shape:
            raise InputError(f"the two latents differ in size: {latent_a.shape[1]} and {latent_b.shape[1]}")
        share, of = index / len(pairs), (f" ({pair})" if pair else "")
        _report(progress, share + 0.05 / len(pairs), f"releasing record A {releases} times{of}")
        out_a = _release(mechanism, latent_a, releases, generator, batch_size)
        _report(progress, share + 0.45 / len(pairs), f"releasing record B {releases} times{of}")
        out_b = _release(mechanism, latent_b, releases, generator, batch_size)
        _report(progress, share + 0.85 / len(pairs), f"fitting the threshold test{of}")
        mean_a, mean_b = mechanism.center(latent_a), mechanism.center(latent_b)  # every noise here has mean 0
        stat_a, name = _statistic(mechanism, out_a, mean_a, mean_b)
        stat_b, _ = _statistic(mechanism, out_b, mean_a, mean_b)
        stat_a, stat_b = stat_a.numpy(), stat_b.numpy()
        # direction 1: 'stat > t' from A vs from B; direction 2: 'stat <= t' from B vs from A. The first half picks
        # the pair, direction and threshold, the second half is measured once: the larger of several held-out
        # bounds would hold with less than the stated confidence
        for positive, negative in ((stat_a, stat_b), (-stat_b, -stat_a)):
            threshold = _best_threshold(positive[:half], negative[:half], delta, confidence)
            fit = _evaluate_threshold(positive[:half], negative[:half], threshold, delta, confidence)[0]
            fitted.append((fit, -len(fitted), threshold, positive, negative, pair, name,
                           _claimed_epsilon(mechanism, latent_a, latent_b)))
    _, _, threshold, positive, negative, pair, name, claimed = max(fitted, key=lambda candidate: candidate[:2])
    bound, estimate, tpr, fpr = _evaluate_threshold(positive[half:], negative[half:], threshold, delta, confidence)
    _report(progress, 1.0, "audit done")
    return AuditResult(mechanism=mechanism.name, claimed_epsilon=claimed,
                       delta=delta, epsilon_estimate=max(estimate, 0.0), epsilon_lower_bound=max(bound, 0.0),
                       tpr=tpr, fpr=fpr, releases=releases, confidence=confidence,
                       label=AUDIT_LABELS.get(mechanism.name, ""), batch_size=batch_size,
                       statistic=name, pair=pair)


def _one_record(model, record, which: str = "the record"):
    """One image (1, C, H, W) as float pixels, or one row as a one-row DataFrame, read as privatize reads it.

    An audit compares exactly two records: a batch would be read as one long latent and give a verdict about
    nothing that is ever released.
    """
    if isinstance(model, ImageCINN):
        pixels, _ = _image_pixels(record, model.config)
        if len(pixels) != 1:
            raise InputError(f"{which} must be exactly one image of shape "
                             f"({model.config.channels}, {model.config.image_size}, {model.config.image_size}), "
                             f"got {len(pixels)} images: the audit compares one record with one other")
        return pixels
    if isinstance(model, TabularCINN):
        if not isinstance(record, pd.DataFrame) or len(record) != 1:
            rows = f"{len(record)} rows" if isinstance(record, pd.DataFrame) else f"a {type(record).__name__}"
            raise InputError(f"{which} must be a one-row DataFrame (e.g. frame.iloc[[5]]), got {rows}: "
                             "the audit compares one record with one other")
        return record
    raise InputError(f"cannot audit a {type(model).__name__}")


@torch.inference_mode()
def encode_records(model, record, condition=None) -> torch.Tensor:
    """Latent (1, D) of one record: pixels (C, H, W) on [0, 255] with its class label (index or name), or a
    one-row DataFrame; inputs are checked as ``privatize`` checks them."""
    record = _one_record(model, record)
    if isinstance(model, ImageCINN):
        if condition is None:
            raise InputError("an image record needs its class label (index or name) as the condition")
        return model.encode(record, _image_labels(condition, model.config, 1)).cpu()
    return model.encode(model.data_encoder.transform(record), model.condition_encoder.transform(record)).cpu()


def distinguishing_audit(model, record_a, record_b, condition, mechanism: Mechanism, *,
                         releases: int = 10_000, generator: torch.Generator | None = None,
                         progress=None) -> AuditResult:
    """Audit ``mechanism`` on two records with the same kept condition.

    Images: one image each, pixels (C, H, W) on [0, 255], and their label ``condition`` (index or class name).
    Tables: one-row DataFrames holding the condition columns (``condition`` None); their
    condition values must agree. Each record is encoded once; see ``latent_audit``.
    ``paper`` is applied one record per batch (the app audits single records).
    """
    record_a = _one_record(model, record_a, "record A")
    record_b = _one_record(model, record_b, "record B")
    if isinstance(model, TabularCINN):
        names = model.config.condition_columns
        for name in names:
            if name not in record_a.columns or name not in record_b.columns:
                raise InputError(f"both records need the condition column {name!r}")
            if str(record_a[name].iloc[0]) != str(record_b[name].iloc[0]):
                raise InputError(f"the two records must share the kept condition; {name!r} differs")
    _report(progress, 0.0, "encoding the two records")
    latent_a = encode_records(model, record_a, condition)
    latent_b = encode_records(model, record_b, condition)

    def inner(share, message):
        _report(progress, 0.1 + 0.9 * share, message)

    return latent_audit(latent_a, latent_b, mechanism, releases, generator, progress=inner)


# --------------------------------------------------------------------------- re-identification

def _nearest_rate(originals: torch.Tensor, releases: torch.Tensor, norm: int = 2,
                  groups: torch.Tensor | None = None) -> float:
    originals = torch.as_tensor(originals).reshape(len(originals), -1).double()
    releases = torch.as_tensor(releases).reshape(len(releases), -1).double()
    nearest = []
    for start in range(0, len(releases), 1000):
        distances = torch.cdist(releases[start:start + 1000], originals, p=norm)
        if groups is not None:  # only originals with the condition released with it
            distances[groups[start:start + 1000, None] != groups[None, :]] = math.inf
        nearest.append(distances.argmin(1))
    return float((torch.cat(nearest) == torch.arange(len(releases))).double().mean())


def _condition_groups(conditions) -> torch.Tensor:
    """One group number per record from its condition values (numbers, names or one row of values each)."""
    values = np.asarray(conditions)
    if values.ndim == 0 or values.size == 0:
        raise InputError(f"conditions must hold one value per record, got {conditions!r}")
    rows = values.reshape(len(values), -1)
    try:
        _, groups = np.unique(rows, axis=0, return_inverse=True)
    except TypeError:  # values of mixed types (e.g. names and None): compared as text
        _, groups = np.unique(rows.astype(str), axis=0, return_inverse=True)
    return torch.from_numpy(groups.reshape(-1))


def chance_given_condition(conditions) -> float:
    """Top-1 rate of a guess among the records that share a record's condition: the mean of 1 / its group's size."""
    groups = _condition_groups(conditions)
    return float((1 / (groups[:, None] == groups[None, :]).sum(1).double()).mean())


@torch.inference_mode()
def reidentification(originals_pixels, releases_pixels, *, latents_original=None,
                     latents_released=None, latent_norm: int = 2, conditions=None) -> dict:
    """Top-1 re-identification: release i is matched to its nearest original (L2 in pixel or data space).

    Returns {"pixel": rate, "latent": rate or None, "chance": 1/N, "chance_given_condition": rate or None,
    "n": N}. The latent attacker has the model: it matches each released latent to the nearest of
    ``latents_original`` in the ``latent_norm``. For a mechanism's releases pass the originals' centers
    (``release_centers``) and the mechanism's ``likelihood_norm``. ``conditions`` (one value per record: its
    kept label or condition group, released exactly with it) restricts both attackers to the originals that
    share it; the nearest center among them is then the most likely source (the maximum-likelihood attacker),
    and "chance_given_condition" the rate of a guess among them (mean of 1 / the size of a record's group).
    """
    if len(originals_pixels) != len(releases_pixels) or len(originals_pixels) == 0:
        raise InputError(f"need as many releases as originals (> 0), got {len(originals_pixels)} "
                         f"and {len(releases_pixels)}")
    count = len(originals_pixels)
    groups, given = None, None
    if conditions is not None:
        groups = _condition_groups(conditions)
        if len(groups) != count:
            raise InputError(f"need one condition per record, got {len(groups)} for {count}")
        given = chance_given_condition(groups)
    latent = None
    if latents_original is not None and latents_released is not None:
        latent = _nearest_rate(latents_original, latents_released, latent_norm, groups)
    return {"pixel": _nearest_rate(originals_pixels, releases_pixels, 2, groups), "latent": latent,
            "chance": 1.0 / count, "chance_given_condition": given, "n": count}


# --------------------------------------------------------------------------- shared helpers

class EvalCNN(nn.Module):
    """The downstream classifier of the utility sweep: two small conv layers (smaller than SmallCNN, for speed)."""

    def __init__(self, num_classes: int, channels: int = 1, image_size: int = 28):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * (image_size // 4) ** 2, num_classes))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels.float() / 255.0 - 0.5)


def train_eval_cnn(pixels: torch.Tensor, labels: torch.Tensor, num_classes: int, *, epochs: int, seed: int,
                   device: torch.device, batch_size: int = 64) -> EvalCNN:
    """Train EvalCNN with Adam; the seed fixes initialization and batch order (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = EvalCNN(num_classes, pixels.shape[1], pixels.shape[-1]).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    order_generator = torch.Generator().manual_seed(seed)
    pixels, labels = pixels.to(device), labels.to(device)
    classifier.train()
    for _ in range(epochs):
        order = torch.randperm(len(pixels), generator=order_generator).to(device)
        for start in range(0, len(pixels), batch_size):
            index = order[start:start + batch_size]
            loss = nn.functional.cross_entropy(classifier(pixels[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return classifier.eval()


@torch.inference_mode()
def cnn_accuracy(classifier: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    device = next(classifier.parameters()).device
    predictions = torch.cat([classifier(pixels[s:s + 1000].to(device)).argmax(1).cpu()
                             for s in range(0, len(pixels), 1000)])
    return float((predictions == labels).float().mean())


@torch.inference_mode()
def _encode(model, inputs: torch.Tensor, conditions: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model.encode(inputs[s:s + batch_size], conditions[s:s + batch_size]).cpu()
                      for s in range(0, len(inputs), batch_size)])


@torch.inference_mode()
def _decode(model, latents: torch.Tensor, conditions: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model.decode(latents[s:s + batch_size], conditions[s:s + batch_size]).cpu()
                      for s in range(0, len(latents), batch_size)])


@torch.inference_mode()
def apply_mechanism(mechanism: Mechanism, latents: torch.Tensor, generator: torch.Generator,
                    batch_size: int | None = None) -> torch.Tensor:
    """M(z) for a set of latents: one call, or consecutive batches of ``batch_size`` (paper)."""
    if batch_size is None:
        return mechanism(latents, generator)
    return torch.cat([mechanism(part, generator) for part in latents.split(batch_size)])


def release_centers(mechanism: Mechanism, latents: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """What ``apply_mechanism`` adds its noise to, for each latent (batched alike): the attacker's reference."""
    if batch_size is None:
        return mechanism.center(latents)
    return torch.cat([mechanism.center(part) for part in latents.split(batch_size)])


def sweep_mechanism(name: str, epsilon: float, delta: float = DEFAULT_DELTA) -> Mechanism:
    """The mechanisms as the sweep runs them: laplace / gaussian at constant temperature 0.7."""
    if name in ("laplace", "gaussian"):
        return make_mechanism(name, epsilon, delta=delta if name == "gaussian" else None,
                              temperature=AUDIT_TEMPERATURE)
    return make_mechanism(name, epsilon)


REID_LATENT_TEXT = ("released latent M(z) matched to the nearest of the centers (clipped latents; paper: the scaled "
                    "batch; metric: the latents) of the originals with the condition released with it (the kept "
                    "label), in the noise's norm (L1 Laplace, L2 Gaussian): the maximum-likelihood attacker with "
                    "the model")

METHOD_LABELS = {
    "laplace": "CADP Laplace (eps-LDP, temperature 0.7)",
    "gaussian": "CADP Gaussian ((eps, 1e-5)-LDP, temperature 0.7)",
    "metric": "CADP metric privacy (eps per unit of L1 latent distance)",
    "paper": f"CADP paper code ({PAPER_LABEL})",
}


def _summary(values: list[list[float]]) -> dict:
    """{"mean": [...], "std": [...], "seeds": [[...], ...]} over seeds (inner lists) for each setting (outer list);
    the std is the sample standard deviation (None with one seed)."""
    return {"mean": [float(np.mean(row)) for row in values], "std": [_spread(row) for row in values],
            "seeds": [[float(v) for v in row] for row in values]}


def _spread(values: list[float]) -> float | None:
    """Sample standard deviation over seeds (ddof 1); None for one seed, which says nothing about the spread."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _mean(values: list[list[float | None]]) -> list[float | None]:
    out = []
    for row in values:
        row = [v for v in row if v is not None]
        out.append(float(np.mean(row)) if row else None)
    return out


def _image_quality(originals: torch.Tensor, releases: torch.Tensor) -> tuple[float, float]:
    """Mean SSIM and PSNR (dB, data range 255) between originals and releases."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    first = originals.double().numpy()
    second = releases.double().numpy()
    ssim = [structural_similarity(a, b, data_range=255.0, channel_axis=0) for a, b in zip(first, second)]
    with np.errstate(divide="ignore"):
        psnr = [peak_signal_noise_ratio(a, b, data_range=255.0) for a, b in zip(first, second)]
    psnr = [min(p, 100.0) for p in psnr]  # identical images: infinite PSNR, capped
    return float(np.mean(ssim)), float(np.mean(psnr))


def _seeded(seed: int, *parts) -> torch.Generator:
    """An evaluation generator (reproducible on purpose: this measures, it releases nothing)."""
    value = int(seed)
    for part in parts:
        value = (value * 1_000_003 + int(part)) % (2 ** 62)
    return torch.Generator().manual_seed(value)


# --------------------------------------------------------------------------- utility sweep

FULL_SIZES = {"image": {"n_train": 1000, "n_test": 500, "cnn_epochs": 4},
              "tabular": {"n_train": 5000, "n_test": 2000}}
QUICK = {"epsilons": (1, 1000), "seeds": (0, 1, 2), "n_train": 60, "n_test": 30, "n_reid": 30, "cnn_epochs": 1}
# The app's "Recompute": sizes whose curves mean something, unlike QUICK's (MNIST real -> real accuracy 0.87, as in
# the full run's 0.88; QUICK: 0.13, chance), one seed and five epsilons. MNIST: 103 s on one thread of a busy
# 2-core machine (500 training images and 3 epochs: 0.77). A table keeps a full run's sizes (seconds).
APP_EPSILONS = (1, 10, 100, 1000, 10000)
APP_SIZES = {"image": {"epsilons": APP_EPSILONS, "seeds": (0,), "n_train": 1000, "n_test": 300, "n_reid": 200,
                       "cnn_epochs": 4},
             "tabular": {"epsilons": APP_EPSILONS, "seeds": (0,), "n_reid": 500}}


def _subset_images(data, count: int, seed: int):
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data))[:count])
    return data.images[order].float(), data.labels[order]


def _load_image_data(config, data):
    from cadp.data import load_image_dataset

    if data is not None:
        return data
    try:
        _check_public(config.dataset)
        return load_image_dataset(config.dataset, "train"), load_image_dataset(config.dataset, "test")
    except CadpError as error:
        raise InputError(f"cannot load the model's dataset {config.dataset!r} ({error}); give the image folder it was "
                         "trained on with --data (Python: data=(train, test))") from None


def _check_public(dataset: str) -> None:
    """Only a bundled dataset is loaded by its name: a CSV or folder name in config.json would be read from
    wherever the command runs, perhaps another file of that name."""
    from cadp.data import PUBLIC_DATASETS

    if dataset not in PUBLIC_DATASETS:
        raise InputError("it is not a bundled dataset")


# a table's test rows are few (61 for heart): 3 seeds left a rate's sampling error at about 3 points, and one laplace
# point drew above its ε-LDP ceiling; a table's sweep takes seconds a seed
TABLE_SEEDS = tuple(range(30))


def utility_sweep(loaded, *, epsilons=None, mechanisms=None, seeds=None, n_train: int | None = None,
                  n_test: int | None = None, n_reid: int = 500, device: str = "auto", progress=None,
                  cnn_epochs: int | None = None, data=None, include_baselines: bool = True) -> dict:
    """The "utility" section of eval.json (layout: docs/DEVELOPING.md) for a loaded model folder.

    Each input is encoded once; its latent is reused for every epsilon, mechanism
    and seed. Images: EvalCNN trained on releases of ``n_train`` training images
    with their true (kept) labels, tested on ``n_test`` real test images (p/o) and
    on their releases (p/p), against real/real (o/o); SSIM / PSNR on the test
    releases; re-identification on the first ``n_reid`` test images (latent
    attacker: given the noisy latent M(z) itself, more than the release shows, as
    the release is M(z) decoded, clamped to [0, 255] and rounded; the baselines'
    releases are encoded with the model). Baselines: DP-Pix, blur, mosaic. Tables: see ``_tabular_sweep``.
    ``data``: optional (train, test) ImageDatasets or DataFrames instead of the
    model's dataset. The defaults (sizes in FULL_SIZES) fit a 28x28 model in
    15 minutes on 2 CPU cores.
    """
    epsilons = [float(e) for e in (epsilons if epsilons is not None else DEFAULT_EPSILONS)]
    if seeds is None:  # (a table's test rows are few: more seeds)
        seeds = (0, 1, 2) if loaded.config.kind == "image" else TABLE_SEEDS
    mechanisms = list(mechanisms if mechanisms is not None else DEFAULT_MECHANISMS)
    unknown = [m for m in mechanisms if m not in DEFAULT_MECHANISMS]
    if unknown:
        raise InputError(f"mechanisms must be among {', '.join(DEFAULT_MECHANISMS)}, got {unknown}")
    if len(seeds) < 1:
        raise InputError("give at least one seed")
    for name, size in (("n_train", n_train), ("n_test", n_test), ("n_reid", n_reid)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2):
            raise InputError(f"{name} must be a whole number >= 2 (or None for the default), got {size!r}")
    device = resolve_device(device)
    model = loaded.model.to(device).eval()
    start = time.monotonic()
    common = dict(epsilons=epsilons, mechanisms=mechanisms, seeds=list(seeds), n_reid=n_reid, device=device,
                  progress=progress, data=data)
    if isinstance(model, ImageCINN):
        sizes = FULL_SIZES["image"]
        result = _image_sweep(loaded, model, n_train=n_train or sizes["n_train"], n_test=n_test or sizes["n_test"],
                              cnn_epochs=cnn_epochs or sizes["cnn_epochs"], include_baselines=include_baselines,
                              **common)
    else:
        sizes = FULL_SIZES["tabular"]
        result = _tabular_sweep(loaded, model, n_train=n_train or sizes["n_train"],
                                n_test=n_test or sizes["n_test"], **common)
    loaded.model.cpu()
    result["settings"].update({
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - start, 1),
        "command": recorded_command("cadp.evaluate", sys.argv[1:]) if sys.argv[0].endswith("evaluate.py")
        else "cadp.evaluate.utility_sweep",
    })
    _report(progress, 1.0, "utility sweep done")
    return result


def _image_sweep(loaded, model: ImageCINN, *, epsilons, mechanisms, seeds, n_train, n_test, n_reid, device,
                 progress, data, cnn_epochs, include_baselines) -> dict:
    config = model.config
    train, test = _load_image_data(config, data)
    train_pixels, train_labels = _subset_images(train, min(n_train, len(train)), seed=0)
    test_pixels, test_labels = _subset_images(test, min(n_test, len(test)), seed=1)
    n_reid = min(n_reid, len(test_pixels))
    paper_batch = PAPER_BATCH_SIZE.get(config.dataset, PAPER_DEFAULT_BATCH)
    classes = config.num_classes

    cells = [c for c in baselines.MOSAIC_CELLS if config.image_size % c == 0 and c < config.image_size]
    dp_pix_cell = baselines.DP_PIX_CELL if config.image_size % baselines.DP_PIX_CELL == 0 else 2
    units = len(seeds) * (1 + len(mechanisms) * len(epsilons)
                          + (len(epsilons) + len(baselines.BLUR_SIGMAS) + len(cells) if include_baselines else 0))
    done = [0]

    def step(message: str) -> None:
        done[0] += 1
        _report(progress, 0.05 + 0.95 * done[0] / units, message)

    _report(progress, 0.0, f"encoding {len(train_pixels)} training and {len(test_pixels)} test images once")
    train_latents = _encode(model, train_pixels, train_labels)
    test_latents = _encode(model, test_pixels, test_labels)

    def score(train_release: torch.Tensor, test_release: torch.Tensor, seed: int) -> tuple[float, float]:
        classifier = train_eval_cnn(train_release, train_labels, classes, epochs=cnn_epochs, seed=seed, device=device)
        return cnn_accuracy(classifier, test_pixels, test_labels), cnn_accuracy(classifier, test_release, test_labels)

    reference = []
    for seed in seeds:
        classifier = train_eval_cnn(train_pixels, train_labels, classes, epochs=cnn_epochs, seed=seed, device=device)
        reference.append(cnn_accuracy(classifier, test_pixels, test_labels))
        step(f"real/real classifier, seed {seed}")

    def evaluate_setting(make_releases, label: str, public=None) -> dict:
        """Metrics over seeds of one setting; make_releases(seed) -> (train, test, test latents or None,
        (the test latents' centers, the mechanism's likelihood norm) or None). ``public``: a pixel-space
        baseline's own transform, (function of the originals, the norm its noise calls for): the attacker applies
        it to every original and matches each release to the nearest result ("reid_public")."""
        p_o, p_p, ssim, psnr, reid_pixel, reid_latent, reid_public = [], [], [], [], [], [], []
        for seed in seeds:
            train_release, test_release, released_latents, attacker = make_releases(seed)
            accuracy_po, accuracy_pp = score(train_release, test_release, seed)
            quality = _image_quality(test_pixels, test_release)
            if released_latents is None:  # a pixel-space release: the attacker encodes it with the model
                released_latents = _encode(model, test_release[:n_reid], test_labels[:n_reid])
                attacker = (test_latents, 2)
            references, norm = attacker
            reid = reidentification(test_pixels[:n_reid], test_release[:n_reid], latents_original=references[:n_reid],
                                    latents_released=released_latents[:n_reid], latent_norm=norm,
                                    conditions=test_labels[:n_reid])  # the label is released with each image
            p_o.append(accuracy_po)
            p_p.append(accuracy_pp)
            ssim.append(quality[0])
            psnr.append(quality[1])
            reid_pixel.append(reid["pixel"])
            reid_latent.append(reid["latent"])
            if public is not None:
                transform, norm = public
                reid_public.append(_nearest_rate(transform(test_pixels[:n_reid]), test_release[:n_reid], norm,
                                                 _condition_groups(test_labels[:n_reid])))
            step(f"{label}, seed {seed}")
        return {"p/o": p_o, "p/p": p_p, "ssim": ssim, "psnr": psnr, "reid_pixel": reid_pixel,
                "reid_latent": reid_latent, **({"reid_public": reid_public} if public is not None else {})}

    def collect(rows: list[dict]) -> dict:
        return {"p/o": _summary([r["p/o"] for r in rows]), "p/p": _summary([r["p/p"] for r in rows]),
                "ssim": _mean([r["ssim"] for r in rows]), "psnr": _mean([r["psnr"] for r in rows]),
                "reid_pixel": _mean([r["reid_pixel"] for r in rows]),
                "reid_latent": _mean([r["reid_latent"] for r in rows]),
                **({"reid_public": _mean([r["reid_public"] for r in rows])} if "reid_public" in rows[0] else {})}

    methods = {}
    for index, name in enumerate(mechanisms):
        batch = paper_batch if name == "paper" else None
        rows = []
        for epsilon in epsilons:
            mechanism = sweep_mechanism(name, epsilon)

            def releases(seed, mechanism=mechanism, batch=batch, epsilon=epsilon, index=index):
                generator = _seeded(seed, index, int(epsilon * 1000))
                noisy_train = apply_mechanism(mechanism, train_latents, generator, batch)
                noisy_test = apply_mechanism(mechanism, test_latents, generator, batch)
                release_train = _decode(model, noisy_train, train_labels).clamp(0, 255).round()
                release_test = _decode(model, noisy_test, test_labels).clamp(0, 255).round()
                centers = release_centers(mechanism, test_latents, batch)
                return release_train, release_test, noisy_test, (centers, mechanism.likelihood_norm)

            rows.append(evaluate_setting(releases, f"{name} epsilon {epsilon:g}"))
        entry = {"label": METHOD_LABELS[name], "kind": "reference-reproduction" if name == "paper" else "cadp",
                 "formal": name != "paper", **collect(rows)}
        if name == "paper":
            entry["batch_size"] = paper_batch
        if name == "metric":
            entry["epsilon_meaning"] = "per unit of L1 latent distance"
        methods[name] = entry

    if include_baselines:
        rows = []
        for epsilon in epsilons:
            def releases(seed, epsilon=epsilon):
                generator = _seeded(seed, 99, int(epsilon * 1000))
                return (baselines.dp_pix(train_pixels, epsilon, cell=dp_pix_cell, generator=generator).round(),
                        baselines.dp_pix(test_pixels, epsilon, cell=dp_pix_cell, generator=generator).round(), None,
                        None)

            # the most likely source of noisy cell means: the nearest originals' cell means, in L1 (Laplace noise)
            rows.append(evaluate_setting(releases, f"DP-Pix epsilon {epsilon:g}",
                                         public=(partial(baselines.pixelate, cell=dp_pix_cell), 1)))
        methods["dp-pix"] = {"label": f"DP-Pix (Fan 2018), b={dp_pix_cell}, m={baselines.DP_PIX_M}: "
                                      f"eps-DP for images differing in {baselines.DP_PIX_M} pixel",
                             "kind": "baseline", "formal": True, "cell": dp_pix_cell, "m": baselines.DP_PIX_M,
                             **collect(rows)}
        for name, parameters, function, meaning in (
                ("blur", list(baselines.BLUR_SIGMAS), baselines.blur, "Gaussian blur sigma (pixels)"),
                ("mosaic", cells, baselines.mosaic, "mosaic cell size (pixels)")):
            rows = []
            for parameter in parameters:
                def releases(seed, parameter=parameter, function=function):
                    return function(train_pixels, parameter).round(), function(test_pixels, parameter).round(), None, None

                # a public, deterministic transform: applied to every original, it finds each release exactly
                rows.append(evaluate_setting(releases, f"{name} {parameter}",
                                             public=(lambda pixels, f=function, p=parameter: f(pixels, p).round(), 2)))
            methods[name] = {"label": f"{name} ({baselines.NOT_PRIVATE})", "kind": "baseline", "formal": False,
                             "parameters": parameters, "parameter": meaning, **collect(rows)}

    return {
        "settings": {"kind": "image", "dataset": config.dataset, "n_train": len(train_pixels),
                     "n_test": len(test_pixels), "n_reid": n_reid, "seeds": list(seeds),
                     "classifier": "EvalCNN (conv 8, conv 16, linear), Adam 3e-3, batch 64",
                     "cnn_epochs": cnn_epochs, "temperature": AUDIT_TEMPERATURE, "delta": DEFAULT_DELTA,
                     "paper_batch_size": paper_batch,
                     "subsets": "seeded permutations (0: training, 1: test) of the model's dataset splits",
                     "reid_latent": REID_LATENT_TEXT + "; baselines: their releases encoded with the model and "
                                    "the true label, matched to the original latents of that label (L2)",
                     "reid_pixel": "released image matched to the nearest original image with the same label (L2)",
                     "reid_public": "baselines: the baseline's own public transform applied to every original "
                                    "(blur, mosaic; DP-Pix: the cell means), each release matched to the nearest "
                                    "result with the same label (L2; DP-Pix: L1, as its Laplace noise calls for)",
                     "guarantee": "all CADP epsilons are local (per record); metric is per unit of L1 latent distance"},
        "epsilons": epsilons,
        "reference": {"o/o": {"mean": float(np.mean(reference)), "std": _spread(reference)}},
        "chance": 1.0 / n_reid,
        "chance_given_condition": chance_given_condition(test_labels[:n_reid]),
        "majority_class": majority_share(test_labels.tolist()),
        "methods": methods,
    }


def majority_share(labels: list) -> float:
    """The accuracy of always predicting the most frequent class of the test labels: what an accuracy is read
    against (heart's test rows are 84% one class)."""
    counts = collections.Counter(labels)
    return max(counts.values()) / len(labels) if labels else float("nan")


def _load_table_data(config, data):
    from cadp.data import load_table

    if data is not None:
        return data
    try:
        _check_public(config.dataset)
        frame = load_table(config.dataset).frame
    except CadpError as error:
        raise InputError(f"cannot load the model's table {config.dataset!r} ({error}); give the CSV it was "
                         "trained on with --data (Python: data=(train, test))") from None
    return split_table(frame, config.permutation_seed, conditions=config.condition_columns)  # cadp.train's split


def ks_statistic(first: pd.Series, second: pd.Series) -> float | None:
    """Two-sample KS statistic of two columns' numbers, empty and non-numeric cells left out (None if either
    has none left)."""
    from scipy.stats import ks_2samp

    first = pd.to_numeric(first, errors="coerce").dropna()
    second = pd.to_numeric(second, errors="coerce").dropna()
    if first.empty or second.empty:
        return None
    with warnings.catch_warnings():  # "exact calculation unsuccessful": scipy falls back to the asymptotic one
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ks_2samp(first, second).statistic)


def fidelity(model: TabularCINN, real: pd.DataFrame, released: pd.DataFrame) -> dict:
    """Per-column KS (numeric; empty cells left out) / total variation distance (categorical) and
    correlation-matrix difference."""
    columns = {}
    for spec in model.data_encoder.columns:
        if spec.kind == "numeric":
            columns[spec.name] = ks_statistic(real[spec.name], released[spec.name])
        else:
            first = real[spec.name].astype(str).value_counts(normalize=True)
            second = released[spec.name].astype(str).value_counts(normalize=True)
            columns[spec.name] = float(0.5 * first.subtract(second, fill_value=0).abs().sum())
    encoded_real = model.data_encoder.transform(real).double().numpy()
    encoded_released = model.data_encoder.transform(released).double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        real_corr, released_corr = (np.corrcoef(encoded, rowvar=False) for encoded in (encoded_real, encoded_released))
    # a column without spread has no correlation: counted as 0, so a column collapsed to one value costs its lost
    # correlations instead of dropping out of the mean; pairs of distinct columns only (the diagonal is always 1)
    pairs = np.triu_indices(len(real_corr), k=1)
    difference = np.abs(np.nan_to_num(real_corr[pairs]) - np.nan_to_num(released_corr[pairs]))
    return {"columns": columns, "corr_diff": float(difference.mean()) if difference.size else None}


def _distance_to_closest_record(released: np.ndarray, real: np.ndarray) -> float:
    """Median L2 distance (encoded space) from each released row to its closest real training row."""
    distances = torch.cdist(torch.as_tensor(released, dtype=torch.float64), torch.as_tensor(real, dtype=torch.float64))
    return float(distances.min(1).values.median())


def _tabular_sweep(loaded, model: TabularCINN, *, epsilons, mechanisms, seeds, n_train, n_test, n_reid, device,
                   progress, data) -> dict:
    """Tables: logistic regression and gradient boosting predicting the first kept condition column from the
    data columns, trained on releases (p/o) or real rows (o/o), tested on real rows; per-column KS / TVD and
    correlation-matrix difference against the real training rows; median distance to the closest record (DCR);
    re-identification in the encoded data space ("reid_data") and in latent space."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    config = model.config
    train, test = _load_table_data(config, data)
    train = train.iloc[:n_train].reset_index(drop=True)
    test = test.iloc[:n_test].reset_index(drop=True)
    n_reid = min(n_reid, len(test))
    encoder, conditions = model.data_encoder, model.condition_encoder
    task = config.condition_columns[0] if config.condition_columns else None

    def features(frame: pd.DataFrame) -> np.ndarray:
        return encoder.transform(frame).double().numpy()

    def fit_scores(frame: pd.DataFrame, seed: int) -> tuple[float | None, float | None]:
        if task is None or frame[task].astype(str).nunique() < 2:
            return None, None
        x, y = features(frame), frame[task].astype(str).to_numpy()
        scores = []
        for classifier in (LogisticRegression(max_iter=2000, random_state=seed),
                           GradientBoostingClassifier(random_state=seed)):
            classifier.fit(x, y)
            scores.append(float(classifier.score(features(test), test[task].astype(str).to_numpy())))
        return scores[0], scores[1]

    train_rows, test_rows = encoder.transform(train), encoder.transform(test)
    train_condition, test_condition = conditions.transform(train), conditions.transform(test)
    _report(progress, 0.0, f"encoding {len(train)} training and {len(test)} test rows once")
    train_latents = _encode(model, train_rows, train_condition)
    test_latents = _encode(model, test_rows, test_condition)
    test_groups = condition_groups(test_condition)  # the kept conditions are released with each row
    units = len(seeds) * (1 + len(mechanisms) * len(epsilons))
    done = [0]

    def step(message):
        done[0] += 1
        _report(progress, 0.05 + 0.95 * done[0] / units, message)

    reference_lr, reference_gb = [], []
    for seed in seeds:
        lr, gb = fit_scores(train, seed)
        reference_lr.append(lr)
        reference_gb.append(gb)
        step(f"real/real classifiers, seed {seed}")
    holdout_dcr = _distance_to_closest_record(test_rows.double().numpy(), train_rows.double().numpy())

    def decode(noisy: torch.Tensor, condition: torch.Tensor, frame: pd.DataFrame) -> pd.DataFrame:
        released = encoder.inverse_transform(_decode(model, noisy, condition))
        for name in config.condition_columns:  # kept conditions are released exactly
            released[name] = frame[name].to_numpy()
        return released

    methods = {}
    for index, name in enumerate(mechanisms):
        batch = PAPER_DEFAULT_BATCH * 8 if name == "paper" else None  # 512, as for MNIST
        metrics = {key: [] for key in ("p/o", "p/o_gb", "p/p", "ks", "tvd", "corr_diff", "dcr", "reid_data",
                                       "reid_latent")}
        per_column: dict[str, list[float]] = {spec.name: [] for spec in encoder.columns}
        for epsilon in epsilons:
            mechanism = sweep_mechanism(name, epsilon)
            row = {key: [] for key in metrics}
            column_values: dict[str, list[float]] = {key: [] for key in per_column}
            for seed in seeds:
                generator = _seeded(seed, index, int(epsilon * 1000))
                noisy_train = apply_mechanism(mechanism, train_latents, generator, batch)
                noisy_test = apply_mechanism(mechanism, test_latents, generator, batch)
                released_train = decode(noisy_train, train_condition, train)
                released_test = decode(noisy_test, test_condition, test)
                lr, gb = fit_scores(released_train, seed)
                row["p/o"].append(lr)
                row["p/o_gb"].append(gb)
                pp = None
                if lr is not None:
                    classifier = LogisticRegression(max_iter=2000, random_state=seed).fit(
                        features(released_train), released_train[task].astype(str).to_numpy())
                    pp = float(classifier.score(features(released_test), test[task].astype(str).to_numpy()))
                row["p/p"].append(pp)
                fidelity_found = fidelity(model, train, released_train)
                for key, value in fidelity_found["columns"].items():
                    column_values[key].append(value)
                numeric = [fidelity_found["columns"][s.name] for s in encoder.columns
                           if s.kind == "numeric" and fidelity_found["columns"][s.name] is not None]
                categorical = [fidelity_found["columns"][s.name] for s in encoder.columns if s.kind != "numeric"]
                row["ks"].append(float(np.mean(numeric)) if numeric else None)
                row["tvd"].append(float(np.mean(categorical)) if categorical else None)
                row["corr_diff"].append(fidelity_found["corr_diff"])
                released_rows = features(released_train)
                row["dcr"].append(_distance_to_closest_record(released_rows, train_rows.double().numpy()))
                centers = release_centers(mechanism, test_latents, batch)
                reid = reidentification(test_rows[:n_reid], features(released_test)[:n_reid],
                                        latents_original=centers[:n_reid], latents_released=noisy_test[:n_reid],
                                        latent_norm=mechanism.likelihood_norm, conditions=test_groups[:n_reid])
                row["reid_data"].append(reid["pixel"])
                row["reid_latent"].append(reid["latent"])
                step(f"{name} epsilon {epsilon:g}, seed {seed}")
            for key in metrics:
                metrics[key].append(row[key])
            for key in per_column:
                known = [v for v in column_values[key] if v is not None]
                per_column[key].append(float(np.mean(known)) if known else None)
        entry = {"label": METHOD_LABELS[name], "kind": "reference-reproduction" if name == "paper" else "cadp",
                 "formal": name != "paper"}
        for key in ("p/o", "p/o_gb", "p/p"):
            if all(v is not None for values in metrics[key] for v in values):
                entry[key] = _summary(metrics[key])
        for key in ("ks", "tvd", "corr_diff", "dcr", "reid_data", "reid_latent"):
            entry[key] = _mean(metrics[key])
        entry["columns"] = per_column
        if name == "paper":
            entry["batch_size"] = batch
        methods[name] = entry

    reference = {"dcr_holdout": holdout_dcr}
    if task is not None and None not in reference_lr:
        reference["o/o"] = {"mean": float(np.mean(reference_lr)), "std": _spread(reference_lr)}
        reference["o/o_gb"] = {"mean": float(np.mean(reference_gb)), "std": _spread(reference_gb)}
    return {
        "settings": {"kind": "tabular", "dataset": config.dataset, "n_train": len(train), "n_test": len(test),
                     "n_reid": n_reid, "seeds": list(seeds), "task": f"predict {task!r} from the data columns"
                     if task else None, "classifiers": "p/o: logistic regression; p/o_gb: gradient boosting (sklearn)",
                     "temperature": AUDIT_TEMPERATURE, "delta": DEFAULT_DELTA,
                     "paper_batch_size": PAPER_DEFAULT_BATCH * 8,
                     "reid_data": "released row matched to the nearest original test row with the same kept "
                                  "conditions (encoded, L2)",
                     "reid_latent": REID_LATENT_TEXT,
                     "fidelity": "ks: mean KS over numeric columns; tvd: mean total variation over categorical "
                                 "columns; corr_diff: mean |corr(real) - corr(released)| over pairs of encoded columns (a column "
                                 "without spread: correlation 0); "
                                 "dcr: median distance (encoded, L2) of a released row to its closest real "
                                 "training row (reference: held-out rows, dcr_holdout)",
                     "guarantee": "all CADP epsilons are local (per record); metric is per unit of L1 latent distance"},
        "epsilons": epsilons,
        "reference": reference,
        "chance": 1.0 / n_reid,
        "chance_given_condition": chance_given_condition(test_groups[:n_reid]),
        **({"majority_class": majority_share(test[task].astype(str).tolist())} if task is not None else {}),
        "methods": methods,
    }


# --------------------------------------------------------------------------- bits/dim and fidelity

@torch.inference_mode()
def bits_per_dim_report(loaded, *, data=None, samples: int = 2000, progress=None) -> dict:
    """The "bpd" section of eval.json.

    Images: test bits/dim on the full test split and the share of class-conditional
    samples at temperature 0.7 the folder's classifier recognizes. Tables: the
    epsilon = infinity round trip (NoNoise through cadp.privatize.privatize) on the
    test rows, and per numeric column the KS statistic between model samples
    (N(0, I) latents decoded with conditions drawn from the training rows) and the
    column's marginal: all rows of the table. Against the few test rows alone the KS
    is mostly sampling noise, so it is reported beside the KS between the training and
    test rows themselves (what a perfect model would score there).
    """

    model = loaded.model.cpu().eval()
    start = time.monotonic()
    if isinstance(model, ImageCINN):
        train, test = _load_image_data(model.config, data)
        _report(progress, 0.1, f"bits/dim on {len(test)} test images")
        result = {"kind": "image", "test_bits_per_dim": evaluate_bits_per_dim(model, test),
                  "test_records": len(test), **_image_round_trip(model, test)}
        if loaded.classifier is not None:
            _report(progress, 0.8, "sample recognition at temperature 0.7")
            result["sample_recognition_t0.7"] = sample_recognition(model, loaded.classifier,
                                                                   model.config.num_classes)
            result["sample_recognition_per_class"] = 100
        else:
            result["sample_recognition_t0.7"] = None
            result["note"] = "the folder has no classifier.safetensors: sample recognition not measured"
    else:
        result = _tabular_fidelity(model, data, samples, progress)
    result["wall_seconds"] = round(time.monotonic() - start, 1)
    _report(progress, 1.0, "bits/dim report done")
    return result


@torch.inference_mode()
def _image_round_trip(model: ImageCINN, test, count: int = 1000) -> dict:
    """epsilon = infinity on the first ``count`` test images: largest pixel error, and whether 8-bit rounding undoes it."""
    pixels, labels = test.images[:count], test.labels[:count]
    back = _decode(model, _encode(model, pixels, labels), labels)
    return {"round_trip_max_abs_error": float((back - pixels.float()).abs().max()),
            "round_trip_exact_8bit": bool(torch.equal(back.round().clamp(0, 255), pixels.float())),
            "round_trip_records": len(pixels)}


CARD_REID_EPSILONS = (1.0, 10.0, 100.0, 1000.0)


# the latent attacker is given each release's noisy latent M(z), not only the release: a stronger attacker than one
# who encodes the released image or row (decoded values are clamped and rounded, so encoding them need not give M(z))
NOISY_LATENT_WORDS = ("sees each release's noisy latent (more than a release shows: a release is that latent decoded, "
                      "then clamped to the data's range and rounded, and encoding it need not give the latent back)")


def reid_card_markdown(utility: dict, command: str) -> str:
    """The model card's block for the re-identification rates of the "utility" section of eval.json: the stronger
    attacker's top-1 rate per mechanism with a formal guarantee, at a few epsilons, against its baseline."""
    from cadp.curves import released_words, strongest_reidentification

    settings = utility.get("settings") or {}
    epsilons = [float(e) for e in utility.get("epsilons", [])]
    shown = [e for e in CARD_REID_EPSILONS if e in epsilons]
    released = released_words(utility)
    given, chance = utility.get("chance_given_condition"), utility.get("chance")
    lines = ["### Re-identification", "", f"Measured by `{command}`.", "",
             f"An attacker who holds this model and {NOISY_LATENT_WORDS} matches each release to the most likely of "
             f"the originals with the {released} released with it (top-1 rate, the stronger of this attacker and one "
             f"who compares the release with the originals themselves; mean of "
             f"{len(settings.get('seeds', []))} seeds of {settings.get('n_reid', '?')} records"
             + (", a quick run: few records" if settings.get("quick") else "") + "). "
             + (f"A guess among those records finds {given:.1%}" if given is not None else "")
             + (f" (among all records {chance:.1%})" if chance is not None else "") + ".", ""]
    rows = [(utility["methods"][name].get("label", name), strongest_reidentification(utility["methods"][name]))
            for name in ("laplace", "gaussian") if name in utility.get("methods", {})]
    rows = [(label, rates) for label, rates in rows if rates is not None]
    if not shown or not rows:
        return "\n".join(lines + ["- no re-identification rates at the usual epsilons in this run"])
    lines.append("| mechanism | " + " | ".join(f"ε = {e:g}" for e in shown) + " |")
    lines.append("|---|" + "---|" * len(shown))
    for label, rates in rows:
        lines.append(f"| {label} | " + " | ".join(f"{rates[epsilons.index(e)]:.1%}" for e in shown) + " |")
    kind = "class" if released == "label" else "conditions"
    lines += ["", f"A release that looks like a fresh sample of its {kind} is not one: the rate above the guess is "
              "what the noise lets through, and epsilon = 100 allows a probability ratio of e^100 between two "
              "records' releases."]
    return "\n".join(lines)


def bpd_card_markdown(result: dict, command: str) -> str:
    """The model card's block for the "bpd" section of eval.json."""
    lines = ["### Quality", "", f"Measured by `{command}`.", ""]  # (a short heading: it wraps on a phone)
    if result.get("kind") == "image":
        lines.append(f"- test bits/dim: **{result['test_bits_per_dim']:.3f}** on {result['test_records']:,} test "
                     "images (uniform dequantization)")
        recognized = result.get("sample_recognition_t0.7")
        lines.append("- class-conditional samples at temperature 0.7 recognized as their class by the folder's "
                     f"classifier: **{recognized:.3f}** ({result.get('sample_recognition_per_class')} per class)"
                     if recognized is not None else f"- samples not scored: {result.get('note', 'no classifier')}")
        if "round_trip_max_abs_error" in result:
            error = result["round_trip_max_abs_error"]
            lines.append(f"- epsilon = infinity round trip on {result['round_trip_records']:,} test images: largest pixel "
                         f"error {error:.4f} of 255 ({error / 255:.1e} of the range, float32 arithmetic); "
                         + ("exact after rounding to 8-bit pixels" if result["round_trip_exact_8bit"]
                            else "NOT exact after rounding to 8-bit pixels"))
    else:
        held_out = result.get("round_trip_heldout", {})
        empty = result.get("round_trip_empty_cells_left_out", 0) + held_out.get("empty_cells_left_out", 0)
        lines.append(f"- epsilon = infinity round trip: {'exact' if result['round_trip_exact'] else 'NOT exact'} on "
                     f"{result['round_trip_rows']} training rows, "
                     f"{'exact' if held_out.get('exact') else 'not exact'} on {held_out.get('rows')} test rows"
                     + (f" ({empty:,} empty input cells left out: a release fills them)" if empty else ""))
        ks = result.get("sample_ks") or {}
        if ks:
            lines.append(f"- KS statistic of {result['samples']:,} model samples against "
                         f"{result.get('sample_ks_against', 'the data')}, per numeric column (empty cells left "
                         "out): " + ", ".join(f"{name} {_ks_text(value)}" for name, value in ks.items()))
            test_rows = [v for v in (result.get("sample_ks_test_rows") or {}).values() if v is not None]
            floor = [v for v in (result.get("ks_train_vs_test_rows") or {}).values() if v is not None]
            if test_rows and floor:
                lines.append(f"- against the {result['test_records']} test rows alone: at most "
                             f"{max(test_rows):.3f}; the training rows themselves are at most "
                             f"{max(floor):.3f} from them (sampling noise of so few rows)")
    return "\n".join(lines)


def _ks_text(value: float | None) -> str:
    return "n/a (no numbers)" if value is None else f"{value:.3f}"


def _round_trip(model: TabularCINN, frame: pd.DataFrame) -> dict:
    """epsilon = infinity (NoNoise) through privatize: which columns come back different, and by how much."""
    from cadp.privatize import privatize

    result = privatize(model, frame, None, NoNoise(), seed=0)
    original, released = result.original_frame.reset_index(drop=True), result.privatized_frame.reset_index(drop=True)
    mismatched, max_error, rows_differing = [], 0.0, np.zeros(len(original), dtype=bool)
    empty = 0  # input cells without a value: released filled (the training mean or most frequent category)
    for column in original.columns:
        first, second = original[column], released[column]
        present = first.notna().to_numpy()
        empty += int((~present).sum())
        if pd.api.types.is_float_dtype(first) and column in model.config.data_columns:
            errors = np.abs(first.to_numpy(float) - second.to_numpy(float)) / np.maximum(1.0, np.abs(first.to_numpy(float)))
            max_error = max(max_error, float(np.nanmax(errors, initial=0.0)))
            differs = (errors > 1e-4) & present
        else:  # a condition or category: equal as text, or, read as floats (2.0), as the number (2) it comes back as
            differs = (first.astype(str).to_numpy() != second.astype(str).to_numpy()) & present
            if pd.api.types.is_float_dtype(first):  # (text '01' back as '1', an id past 2**53: compared as text)
                numbers = first.to_numpy(float), pd.to_numeric(second, errors="coerce").to_numpy(float)
                differs &= ~(numbers[0] == numbers[1])  # (NaN, text that is no number, never equals)
        if differs.any():
            mismatched.append(column)
            rows_differing |= differs
    return {"exact": not mismatched, "mismatched_columns": mismatched, "max_relative_error": max_error,
            "rows": len(original), "rows_differing": int(rows_differing.sum()), "empty_cells_left_out": empty}


def _tabular_fidelity(model: TabularCINN, data, samples: int, progress) -> dict:
    train, test = _load_table_data(model.config, data)
    _report(progress, 0.1, "epsilon = infinity round trip")
    fitted = _round_trip(model, train)
    held_out = _round_trip(model, test)
    _report(progress, 0.5, f"KS of {samples} model samples against the table's marginals")
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(0, len(train), (samples,), generator=generator).numpy()
    conditions = model.condition_encoder.transform(train.iloc[picks])
    latents = torch.randn(samples, model.latent_dim, generator=generator)
    sampled = model.data_encoder.inverse_transform(model.decode(latents, conditions))
    every_row = pd.concat([train, test])
    numeric = [spec.name for spec in model.data_encoder.columns if spec.kind == "numeric"]

    def ks(first: pd.DataFrame, second: pd.DataFrame) -> dict:
        return {c: ks_statistic(first[c], second[c]) for c in numeric}

    ks_all, ks_test, floor = ks(sampled, every_row), ks(sampled, test), ks(train, test)
    return {"kind": "tabular", "round_trip_exact": fitted["exact"],
            "round_trip_mismatched_columns": fitted["mismatched_columns"],
            "round_trip_max_relative_error": fitted["max_relative_error"], "round_trip_rows": fitted["rows"],
            "round_trip_rows_used": "training rows (the encoder's fitted range)",
            "round_trip_empty_cells_left_out": fitted["empty_cells_left_out"],
            "round_trip_heldout": held_out,
            "sample_ks": ks_all,
            "sample_ks_mean": float(np.mean(known)) if (known := [v for v in ks_all.values() if v is not None]) else None,
            "sample_ks_against": f"all {len(every_row)} rows of the table (training and test)",
            "sample_ks_test_rows": ks_test, "ks_train_vs_test_rows": floor,
            "samples": samples, "test_records": len(test)}


# --------------------------------------------------------------------------- audit of a model

def worst_case_latents(mechanism: Mechanism, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two latents (1, dim) on which ``mechanism`` loses the most privacy, so that an audit of them has the
    most power. laplace / gaussian: +-c e_1 with c = 2R, which clip to +-R e_1, 2R apart in L1 and L2 (the
    sensitivity). paper (one record per batch): +-c (1, ..., 1), scaled to +-s (1, ..., 1), 2sD apart in L1
    against the noise scale s / eps that it calibrates to 2s. metric: +-e_1, 2 apart (its claim is eps_unit x 2).
    Every latent is the encoding of some record (the network is invertible), so both are valid inputs."""
    latent = torch.zeros(1, dim)
    if isinstance(mechanism, PaperMechanism):
        latent += 2 * mechanism.clip_size
    else:
        latent[0, 0] = 2 * getattr(mechanism, "clip_radius", 0.5)
    return latent, -latent


AXIS_PAIR, DIAGONAL_PAIR, CORNERS_PAIR = "axis: +-2R e_1", "diagonal: +-2R (1, ..., 1)", "corners: +-2s (1, ..., 1)"


def worst_case_pairs(mechanism: Mechanism, dim: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """The pairs an audit of ``mechanism`` tries (``pairs_audit``): ``worst_case_latents``, and for laplace and
    gaussian also +-2R (1, ..., 1), which a correct clip brings to 2R apart too (L1: +-R/D each coordinate; L2:
    +-R/sqrt(D)), while a clip in another norm leaves them sqrt(D) times farther apart (an L2 clip of laplace's
    latent, a per-coordinate clamp of gaussian's) and a missing clip 2 sqrt(D) (L2) to 2D (L1) times: on one axis
    every such clip agrees, so the axis pair alone cannot tell them apart."""
    latent_a, latent_b = worst_case_latents(mechanism, dim)
    if isinstance(mechanism, PaperMechanism):
        return [(CORNERS_PAIR, latent_a, latent_b)]
    if not isinstance(mechanism, (LaplaceMechanism, GaussianMechanism)):
        return [("", latent_a, latent_b)]
    diagonal = torch.full((1, dim), 2 * mechanism.clip_radius)
    return [(AXIS_PAIR, latent_a, latent_b), (DIAGONAL_PAIR, diagonal, -diagonal)]


def audit_model(loaded, *, epsilons=(0.5, 1, 3, 10), releases: int = 10_000, seed: int = 0, progress=None) -> dict:
    """The "audit" section: distinguishing audits of laplace / gaussian / paper at ``epsilons`` (constant
    temperature), each on its ``worst_case_latents`` in the model's latent size: the audit tests the
    mechanisms' code, which no model changes. Noise is seeded (reproducible evaluation, not a release)."""
    dim = loaded.config.latent_dim
    results = []
    settings = [(name, eps) for eps in epsilons for name in ("laplace", "gaussian", "paper")]
    for index, (name, epsilon) in enumerate(settings):
        def inner(share, message, index=index, name=name, epsilon=epsilon):
            _report(progress, (index + share) / len(settings), f"{name} epsilon {epsilon:g}: {message}")

        mechanism = sweep_mechanism(name, epsilon)
        result = pairs_audit(worst_case_pairs(mechanism, dim), mechanism, releases, _seeded(seed, index),
                             progress=inner)
        results.append({**result.to_dict(), "nominal_epsilon": float(epsilon)})
    return {"records": {"pair": WORST_CASE_TEXT, "latent_dim": dim},
            "releases": releases, "confidence": CONFIDENCE, "temperature": AUDIT_TEMPERATURE, "seed": seed,
            "paper_batch_size": 1, "provable_ceiling": largest_provable_epsilon(releases), "results": results,
            "note": "a lower bound above claimed_epsilon disproves the claim; a claim at or above provable_ceiling "
                    f"cannot be disproved with this many releases (not testable); paper has no claim ({PAPER_LABEL}) "
                    f"and is shown against its nominal epsilon. {AUDIT_POWER_NOTE}"}


WORST_CASE_TEXT = ("the latents on which each mechanism loses the most privacy: +-2R e_1 for laplace and gaussian "
                   "(clipped to +-R e_1: the sensitivity 2R), and +-2R (1, ..., 1), which a correct clip brings 2R "
                   "apart too and a clip in another norm does not (the first half of the releases picks the pair "
                   "measured: 'pair' in each result); +-2s (1, ..., 1) for paper (scaled to +-s (1, ..., 1))")
AUDIT_POWER_NOTE = ("A result below the claim is no proof: the test's power is limited (at epsilon 1 and 10,000 "
                    "releases a gaussian with half its noise, or calibrated to half its sensitivity, passes, while "
                    "a laplace with half its noise fails).")


# --------------------------------------------------------------------------- central reference (DP-SGD)

def dpsgd_reference(loaded, *, epsilons=(1, 3, 10), seeds=(0, 1, 2), n_train: int | None = None,
                    n_test: int | None = None, epochs: int = 10, max_grad_norm: float = 1.0, device: str = "auto",
                    data=None, progress=None) -> dict:
    """The "central" section: DP-SGD (Opacus) on the real training subset, delta = 1/N, tested on real data.

    Central DP (a trusted curator trains one model) is a different guarantee from
    CADP's local DP: plot it on its own panel, never on the local axes. Images:
    EvalCNN; tables: logistic regression (one linear layer) on the encoded data columns.
    """
    import warnings

    from opacus import PrivacyEngine

    device = resolve_device(device)
    model = loaded.model
    if isinstance(model, ImageCINN):
        sizes = FULL_SIZES["image"]
        train, test = _load_image_data(model.config, data)
        train_x, train_y = _subset_images(train, min(n_train or sizes["n_train"], len(train)), seed=0)
        test_x, test_y = _subset_images(test, min(n_test or sizes["n_test"], len(test)), seed=1)
        classes = model.config.num_classes

        def network():
            return EvalCNN(classes, train_x.shape[1], train_x.shape[-1])
        architecture = "EvalCNN (conv 8, conv 16, linear)"
    else:
        train, test = _load_table_data(model.config, data)
        if not model.config.condition_columns:
            raise InputError("the table model has no condition column to predict")
        task = model.config.condition_columns[0]
        train = train.iloc[:n_train or FULL_SIZES["tabular"]["n_train"]]
        test = test.iloc[:n_test or FULL_SIZES["tabular"]["n_test"]]
        spec = model.condition_encoder.spec(task)
        train_x, test_x = model.data_encoder.transform(train), model.data_encoder.transform(test)
        train_y = model.condition_encoder.subset([task]).transform(train).argmax(1)
        test_y = model.condition_encoder.subset([task]).transform(test).argmax(1)
        classes = spec.width

        def network():
            return nn.Linear(train_x.shape[1], classes)
        architecture = f"logistic regression predicting {task!r}"
    delta = 1.0 / len(train_x)
    rows, total = [], len(epsilons) * len(seeds)
    for epsilon in epsilons:
        accuracies, spent = [], []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                classifier = network().to(device)
                optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
                loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x.float(), train_y),
                                                     batch_size=64, shuffle=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # secure_mode off: a reference measurement, not a release
                    engine = PrivacyEngine()
                    classifier, optimizer, loader = engine.make_private_with_epsilon(
                        module=classifier, optimizer=optimizer, data_loader=loader, target_epsilon=float(epsilon),
                        target_delta=delta, epochs=epochs, max_grad_norm=max_grad_norm)
                    classifier.train()
                    for _ in range(epochs):
                        for inputs, labels in loader:
                            if len(inputs) == 0:
                                continue
                            loss = nn.functional.cross_entropy(classifier(inputs.to(device)), labels.to(device))
                            optimizer.zero_grad(set_to_none=True)
                            loss.backward()
                            optimizer.step()
                    spent.append(float(engine.get_epsilon(delta)))
            classifier.eval()
            accuracies.append(cnn_accuracy(classifier, test_x.float(), test_y))
            _report(progress, (len(rows) * len(seeds) + len(accuracies)) / total,
                    f"DP-SGD epsilon {epsilon:g}, seed {seed}")
        rows.append((accuracies, spent))
    return {"label": "DP-SGD (Opacus): central DP, trusted curator — not comparable to local DP on one axis",
            "guarantee": "central", "epsilons": [float(e) for e in epsilons], "delta": delta,
            "accuracy": _summary([r[0] for r in rows]), "epsilon_spent": _mean([r[1] for r in rows]),
            "settings": {"architecture": architecture, "n_train": len(train_x), "n_test": len(test_x),
                         "epochs": epochs, "batch_size": 64, "max_grad_norm": max_grad_norm, "optimizer": "Adam 3e-3",
                         "seeds": list(seeds), "device": str(device)}}


# --------------------------------------------------------------------------- report

def write_report(folder: Path | str, self_contained: bool = False) -> Path:
    """report.html: plotly curves of the folder's eval.json (local methods, baselines, central DP apart).

    It loads plotly.js from its CDN (a few KB), or holds it (``self_contained``: about 5 MB more) to draw
    without a connection."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from cadp.curves import released_words, strongest_reidentification
    from cadp.hub import current_eval

    folder = Path(folder)
    results, other_weights = current_eval(folder)
    utility = results.get("utility")
    titles = ["accuracy trained on releases, tested on real data (p/o)",
              "re-identification top-1 rate", "SSIM (images) / mean KS (tables)",
              "not private: blur and mosaic (p/o, and re-identification)", "central DP (DP-SGD): a different guarantee",
              "distinguishing audit: lower bound vs claim"]
    figure = make_subplots(rows=3, cols=2, subplot_titles=titles, vertical_spacing=0.09)
    drawn_wrong = []  # sections of eval.json that are not as cadp.evaluate writes them (it may come from anyone)

    def draw(section: str, drawing) -> None:
        try:
            drawing()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            drawn_wrong.append(section)

    def draw_utility() -> None:
        if utility:
            epsilons = utility["epsilons"]
            for name, entry in utility["methods"].items():
                if "parameters" in entry:
                    figure.add_trace(go.Scatter(x=entry["parameters"], y=entry["p/o"]["mean"], mode="lines+markers",
                                                name=entry["label"],
                                                error_y={"array": entry["p/o"]["std"]}), row=2, col=2)
                    strongest = strongest_reidentification(entry)
                    if strongest is not None:  # how private it looks: every attacker's best, on the same axis
                        figure.add_trace(go.Scatter(x=entry["parameters"], y=strongest, mode="lines+markers",
                                                    name=f"{name}: re-identification (best attacker)",
                                                    line={"dash": "dashdot"}), row=2, col=2)
                    figure.update_xaxes(title_text="blur sigma / mosaic cell size (pixels)", row=2, col=2)
                    continue
                if "p/o" in entry:
                    figure.add_trace(go.Scatter(x=epsilons, y=entry["p/o"]["mean"], error_y={"array": entry["p/o"]["std"]},
                                                mode="lines+markers", name=entry["label"]), row=1, col=1)
                short = f"paper ({PAPER_LABEL})" if name == "paper" else name  # the label wherever paper is shown
                for key, dash in (("reid_latent", "solid"), ("reid_pixel", "dot"), ("reid_data", "dot"),
                                  ("reid_public", "dashdot")):
                    if entry.get(key) is not None:
                        figure.add_trace(go.Scatter(x=epsilons, y=entry[key], mode="lines+markers",
                                                    name=f"{short}: {key}", line={"dash": dash}), row=1, col=2)
                quality = entry.get("ssim") or entry.get("ks")
                if quality is not None:
                    figure.add_trace(go.Scatter(x=epsilons, y=quality, mode="lines+markers",
                                                name=f"{short}: {'SSIM' if 'ssim' in entry else 'KS'}"), row=2, col=1)
            reference = utility["reference"].get("o/o")
            if reference:
                figure.add_hline(y=reference["mean"], line_dash="dash", annotation_text="real/real (o/o)", row=1, col=1)
            if utility.get("majority_class") is not None:
                figure.add_hline(y=utility["majority_class"], line_dash="dashdot", row=1, col=1,
                                 annotation_text="majority class (always predicting it)")
            figure.add_hline(y=utility["chance"], line_dash="dash", annotation_text="chance among all records (1/N)",
                             row=1, col=2)
            if utility.get("chance_given_condition") is not None:  # the attackers guess among these: their baseline
                figure.add_hline(y=utility["chance_given_condition"], line_dash="dot", row=1, col=2,
                                 annotation_text=f"chance knowing the released {released_words(utility)}")
            for row, col in ((1, 1), (1, 2), (2, 1)):
                figure.update_xaxes(type="log", title_text="epsilon (local, per record; metric: per unit L1 latent "
                                                           "distance; DP-Pix: per 1-pixel change)", row=row, col=col)

    def draw_central() -> None:
        central = results.get("central")
        if central:
            figure.add_trace(go.Scatter(x=central["epsilons"], y=central["accuracy"]["mean"],
                                        error_y={"array": central["accuracy"]["std"]}, mode="lines+markers",
                                        name=central["label"]), row=3, col=1)
            figure.update_xaxes(type="log", title_text="epsilon (central, delta = 1/N: weaker than the usual delta << 1/N)",
                                row=3, col=1)

    def draw_audit() -> None:
        audit = results.get("audit")
        if audit:
            for name in ("laplace", "gaussian", "paper"):
                points = [r for r in audit["results"] if r["mechanism"] == name]
                figure.add_trace(go.Scatter(x=[r["nominal_epsilon"] for r in points],
                                            y=[r["epsilon_lower_bound"] for r in points], mode="markers",
                                            name=f"audit {name}" + (f" ({PAPER_LABEL})" if name == "paper" else "")),
                                 row=3, col=2)
            top = max(r["nominal_epsilon"] for r in audit["results"])
            figure.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="lower bound = claim",
                                        line={"dash": "dash"}), row=3, col=2)
            if isinstance(audit.get("releases"), int):  # a bound on this line is "at least this much", no more
                ceiling = largest_provable_epsilon(audit["releases"])
                figure.add_trace(go.Scatter(x=[0, top], y=[ceiling, ceiling], mode="lines", line={"dash": "dot"},
                                            name=f"the most {audit['releases']:,} releases can show ({ceiling:.2f})"),
                                 row=3, col=2)
            confidence = audit.get("confidence")
            level = f"{confidence:.0%} " if isinstance(confidence, float) else ""
            figure.update_xaxes(title_text="claimed epsilon", row=3, col=2)
            figure.update_yaxes(title_text=f"{level}lower bound on epsilon", row=3, col=2)

    draw("utility", draw_utility)
    draw("central", draw_central)
    draw("audit", draw_audit)
    figure.update_layout(height=1300, title=f"CADP evaluation of {folder.name}")
    path = folder / REPORT_NAME
    html = figure.to_html(include_plotlyjs=True if self_contained else "cdn", full_html=True)
    from html import escape

    note = "".join(f'<p style="font: 14px sans-serif; margin: 0 2em 1em">{escape(line)}</p>\n'
                   for line in report_notes(folder, results, drawn_wrong, other_weights))
    write_text_whole(path, html.replace("</body>", note + ("" if self_contained else OFFLINE_NOTICE) + "</body>", 1))
    return path


def report_notes(folder: Path, results: dict, drawn_wrong: list[str], other_weights: list[str] = ()) -> list[str]:
    """The sentences under report.html's charts: what the error bars are, what metric's axis means between real
    records (PRIVACY.md: eps_unit * d_typ and eps_unit * d_nn), how paper was batched, and which sections of
    eval.json could not be drawn (``drawn_wrong``) or were measured on other weights (``other_weights``)."""
    from cadp.curves import error_bars_note, mean_of
    from cadp.hub import leave_out_other_distances, read_config

    notes = []
    utility = results.get("utility") if isinstance(results.get("utility"), dict) else None
    if utility is not None and "utility" not in drawn_wrong:
        notes.append(error_bars_note(utility.get("settings"), mean_of((utility.get("reference") or {}).get("o/o"))))
        methods = utility.get("methods") if isinstance(utility.get("methods"), dict) else {}
        try:
            config = read_config(folder)
            leave_out_other_distances(config, folder)  # (another network's distances are not this one's)
            distances = config.latent_distances
        except CadpError:
            distances = None
        if "metric" in methods and distances is not None:
            # (rounded up, as the app and the terms say them: 11.64 read "11.6 x", less than it is)
            typical, nearest = readable(distances.d_typ, up=True), readable(distances.d_nn, up=True)
            notes.append(f"metric: its epsilon is per unit of L1 latent distance; between two typical records with "
                         f"the same condition (d_typ = {typical}) it is {typical} x the value on the axis, between a "
                         f"record and its nearest neighbour (d_nn = {nearest}) {nearest} x that value.")
        batches = paper_batches_text(utility.get("settings") if isinstance(utility.get("settings"), dict) else {})
        if "paper" in methods and batches:
            notes.append(f"paper ({PAPER_LABEL}): its output depends on the batch; these curves ran on {batches}.")
    audit = results.get("audit") if isinstance(results.get("audit"), dict) else None
    if audit is not None and "audit" not in drawn_wrong:
        rows = [r for r in audit.get("results") or [] if isinstance(r, dict) and r.get("verdict")]
        verdicts = "; ".join(f"{r.get('mechanism')} at {r.get('nominal_epsilon')}: {r.get('verdict')}" for r in rows)
        confidence = audit.get("confidence")
        level = f"{confidence:.0%}" if isinstance(confidence, float) else "stated"
        notes.append(f"audit: each point is a {level}-confidence lower bound on the privacy loss; one above the "
                     "claim (the dashed line) disproves it, one below is no proof (the test's power is limited: "
                     "at epsilon 1 a gaussian with half its noise passes), and a claim at or above the dotted "
                     "ceiling cannot be "
                     "tested with this many releases." + (f" Verdicts: {verdicts}." if verdicts else ""))
    if audit is not None and "audit" not in drawn_wrong and any(
            isinstance(r, dict) and r.get("mechanism") == "paper" for r in audit.get("results") or []):
        sizes = sorted({r.get("batch_size") for r in audit["results"] if isinstance(r, dict)
                        and r.get("mechanism") == "paper" and isinstance(r.get("batch_size"), int)})
        notes.append("audit: paper released one record per batch (batch size "
                     + (", ".join(map(str, sizes)) or "1") + ").")
    if other_weights:
        from cadp.hub import other_weights_words

        notes.append(other_weights_words(list(other_weights), f"python -m cadp.evaluate COMMAND --model "
                                                               f"{folder.name}"))
    if drawn_wrong:
        one = len(drawn_wrong) == 1
        notes.append(f"eval.json's {plural('section', len(drawn_wrong))} {', '.join(drawn_wrong)} "
                     f"{'is' if one else 'are'} not as cadp.evaluate writes {'it' if one else 'them'}, so "
                     f"{'it is' if one else 'they are'} not drawn (or only in part): run "
                     f"{'that evaluation' if one else 'those evaluations'} again.")
    return notes


# report.html loads plotly.js from its CDN (embedding it would add ~3.5 MB per model folder); without a
# connection the charts cannot draw, and the page says so instead of staying blank.
OFFLINE_NOTICE = """<script>
if (typeof Plotly === "undefined") {
  document.body.insertAdjacentHTML("afterbegin", '<p id="cadp-offline" style="font: 16px sans-serif; '
    + 'padding: 1em; background: #fff3cd">The charts of this report need plotly.js from cdn.plot.ly, which '
    + 'this browser could not load (no internet connection?). The same numbers are in eval.json next to '
    + 'this file; the app shows that file on its Model card page and draws the utility curves on its '
    + '"Utility curves" page, without a connection. <code>python -m cadp.evaluate report --model '
    + 'THE-MODEL-FOLDER --self-contained</code> writes a report that holds plotly.js (about 5 MB) and '
    + 'draws without one.</p>');
}
</script>
"""


# --------------------------------------------------------------------------- CLI

def _tqdm_progress(description: str):
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=description, dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 20)

    def update(share: float, message: str) -> None:
        bar.n = int(share * 1000)
        bar.set_postfix_str(message[:60], refresh=False)
        bar.refresh()

    return bar, update


# huggingface_hub's cache keeps each downloaded commit as <cache>/<type>s--<owner>--<name>/snapshots/<commit>/
HUB_CACHE_REPO_PREFIXES = ("models--", "datasets--", "spaces--")


def hub_cache_snapshot(folder: Path | str) -> Path | None:
    """The Hugging Face cache snapshot folder that ``folder`` is or lies in, else None: by the path as given and
    with its links resolved (a link named ``my-model`` to a snapshot is the snapshot)."""
    for path in (Path(os.path.abspath(folder)), Path(folder).resolve()):
        parts = path.parts
        for index in range(1, len(parts)):
            if parts[index] == "snapshots" and parts[index - 1].startswith(HUB_CACHE_REPO_PREFIXES):
                repo = Path(*parts[:index])  # a cache's repo folder holds blobs/ (the files) beside snapshots/
                if (repo / "blobs").is_dir() or (repo / "refs").is_dir():
                    return Path(*parts[:index + 2])
    return None


def refuse_hub_cache_snapshot(model: str, command: str) -> None:
    """Refuse a --model in the Hugging Face cache: its files are the Hub commit's (links into the cache's blobs/),
    which a later load presents as the publisher's; results written there would pass for theirs, and go when the
    cache is pruned."""
    snapshot = hub_cache_snapshot(model)
    if snapshot is None:
        return
    raise InputError(f"--model {model} is a Hub model's snapshot in the Hugging Face cache ({snapshot}): its files "
                     "are that Hub commit's as its publisher made them, and the cache may remove them, so "
                     "cadp.evaluate writes no results there (eval.json, report.html, the model card). Copy the "
                     f"folder and evaluate the copy: cp -rL {shlex.quote(model)} my-model (-L copies the files its "
                     f"links point to), then python -m cadp.evaluate {command} --model my-model")


def check_folder_writable(folder: Path) -> None:
    """Refuse a model folder that cannot be written, before any work: the results are written last (eval.json,
    report.html, README.md), each beside its file first and then renamed over it, as this probe is written."""
    probe = Path(folder) / f".cadp-write-check-{os.getpid()}.part"
    try:
        handle = open(probe, "x", encoding="utf-8")
        try:
            with handle:  # closing it flushes: a full disk may say so only then
                handle.write("cadp.evaluate checks that it can write here\n")
        finally:
            probe.unlink(missing_ok=True)
    except OSError as error:
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            reason = "is read-only" if error.errno == errno.EROFS else "cannot be written by this user"
            raise InputError(f"the model folder {folder} {reason} ({error.strerror}): cadp.evaluate writes its "
                             "results there (eval.json, report.html, the model card), so nothing was computed. "
                             f"Copy it and evaluate the copy: cp -rL {shlex.quote(str(folder))} my-model") from None
        raise InputError(f"cannot write in the model folder {folder} ({error.strerror or error}), where "
                         "cadp.evaluate writes its results (eval.json, report.html, the model card), so nothing "
                         "was computed") from None


def section_or_none(evaluation: dict, name: str) -> dict | None:
    """eval.json's section ``name`` when it is an object, as cadp writes it, else None (with a note when it is
    there but something else: eval.json may come from anyone)."""
    section = evaluation.get(name)
    if section is None or isinstance(section, dict):
        return section
    print(f"note: eval.json's {name!r} section is not an object, as cadp writes it: it is read as absent",
          file=sys.stderr)
    return None


def load_training_data(config, path: Path | str, training: dict | None = None, split_version: int | None = None):
    """(train, test) of a CSV or image folder, split as ``cadp.train`` split it for this model.

    For models trained on data of their own (a CSV or an ImageFolder): the model's config names only the
    file's or folder's name, not where it lies. ``training`` (eval.json's section, when the folder has one) holds
    the split's sizes: data that splits otherwise is not what the model was trained on.
    """
    from cadp.train import split_fingerprint

    if training is not None and not isinstance(training, dict):  # eval.json may come from anyone
        print(f"note: eval.json's 'training' section is not an object, as cadp.train writes it: --data {path} "
              "cannot be checked against the split the model was trained on", file=sys.stderr)
        training = None
    split_version = _split_version(config, path, training, split_version)
    train, test = _load_training_data(config, path, split_version)
    max_train = (training or {}).get("max_train")
    if config.kind == "image" and isinstance(max_train, int) and not isinstance(max_train, bool) and \
            0 < max_train < len(train):  # trained with --max-train: the same images of the training split
        from cadp.data import ImageDataset
        from cadp.train import first_of_each_class

        kept = first_of_each_class(train.labels, max_train)
        train = ImageDataset(train.images[kept], train.labels[kept], train.class_names, train.name)
    recorded = tuple((training or {}).get(key) for key in ("train_records", "test_records"))
    if config.kind != "image" and config.condition_columns and all(isinstance(count, int) for count in recorded) \
            and recorded != (len(train), len(test)):  # trained before a level only in the test fifth kept a row
        plain = _load_training_data(config, path, split_version, keep_levels=False)
        if recorded == (len(plain[0]), len(plain[1])):
            print(f"note: --data {path} is split as cadp.train split it before 2026-11-30 for this model (since "
                  "then a condition level whose rows all fell in the test fifth keeps one for training; this "
                  "model's network never trained on such a level)", file=sys.stderr)
            train, test = plain
    if all(isinstance(count, int) for count in recorded) and recorded != (len(train), len(test)):
        raise InputError(f"--data {path} splits into {len(train):,} training and {len(test):,} test records; the "
                         f"model was trained on {recorded[0]:,} and tested on {recorded[1]:,} (eval.json): give the "
                         "data it was trained on, or the test records would include training records"
                         + (" (a model trained with --max-train by an earlier CADP version did not record it, "
                            "and its training split cannot be told apart from other data: train it again)"
                            if config.kind == "image" and recorded[1] == len(test) and recorded[0] < len(train)
                            else "")
                         + (" (if it is that folder: since 2026-11-30 every class keeps a training image, so a "
                            "folder where one class had every image held out splits otherwise; that class never "
                            "trained, so train the model again)" if config.kind == "image" else ""))
    fingerprint = (training or {}).get("test_fingerprint")
    columns = () if config.kind == "image" else tuple(config.data_columns + config.condition_columns)
    if isinstance(fingerprint, str) and split_fingerprint(test, columns) != fingerprint:
        raise InputError(f"--data {path} splits into other test records than the model's training run held out "
                         "(eval.json; a re-ordered or edited copy of the data does, and so does an image folder with "
                         "linked folders, hidden images or DICOM files without a suffix read by a CADP version "
                         "before 2026-11-29, which read those otherwise, or other images without a suffix, which "
                         "versions until 2026-11-29 skipped): give the file or folder it was trained on "
                         "as it was, or the test records would include training records")
    from cadp.train import rows_seen_in_training

    seen = rows_seen_in_training(config, test) if config.kind != "image" else None  # a bundled table's model
    if seen:  # its training rows are known: a re-ordered copy of its table splits them into the test records
        raise InputError(f"{seen:,} of the {len(test):,} test rows of --data {path} are rows the model was trained "
                         f"on ({config.dataset}'s training split): its results would be measured on training "
                         "records; give the data as it was, or leave out --data for a bundled table")
    return train, test


def _hub_download_hint(model: str) -> str | None:
    """For a --model that names no folder but reads as a Hub repo ``owner/name[@revision]``: how to get a folder of
    it that is the user's own (not the cache's snapshot, which evaluate refuses)."""
    from cadp.hub import parse_hub_source

    if Path(model).exists() or Path(model).parent.is_dir():  # "weights/nope" is a missing folder, not a repo
        return None
    try:
        repo_id, revision = parse_hub_source(model)
    except CadpError:
        return None
    return (f"--model takes a model folder; to evaluate the Hub repo {repo_id}, download it into a folder of its "
            f"own and give that: hf download {repo_id}{f' --revision {revision}' if revision else ''} "
            "--local-dir my-model")


def _split_version(config, path, training: dict | None, given: int | None) -> int:
    """How an image folder was split for this model: ``given`` (--split-version), else as its eval.json's training
    section records it (since version 2; a section without it: version 1, which runs before recorded nothing).
    Without a record, the two versions are compared: where they split the folder alike either is right, else
    InputError (a guess would test on training images)."""
    from cadp.data import SPLIT_VERSIONS

    if given is not None or config.kind != "image":
        return 1 if given is None else given
    if training is not None:
        recorded = training.get("split_version", 1)
        if isinstance(recorded, bool) or recorded not in SPLIT_VERSIONS:
            raise InputError(f"eval.json's training section gives split_version {recorded!r}, not one of "
                             f"{', '.join(map(str, SPLIT_VERSIONS))}: give --split-version (1 for models trained "
                             "before 2026-11-30, 2 after)")
        return recorded
    from cadp.data import load_image_folder
    from cadp.train import split_fingerprint

    tests = {version: split_fingerprint(load_image_folder(path, "test", image_size=config.image_size,
                                                          channels=config.channels, split_version=version))
             for version in SPLIT_VERSIONS}
    if len(set(tests.values())) > 1:
        raise InputError(f"--data {path}: the model folder has no eval.json training section to say how the folder "
                         "was split, and the ways CADP versions split it differ here: give --split-version (1 for "
                         "models trained before 2026-11-30, 2 after), or its test images could be training images")
    return SPLIT_VERSIONS[-1]


def _load_training_data(config, path: Path | str, split_version=1, keep_levels: bool = True):
    """(train, test) of --data as cadp.train split it; ``keep_levels=False``: a table split as before every
    condition level kept a training row (split_table without conditions)."""
    from cadp.data import case_hint, load_image_folder, load_table

    path = Path(path)
    if not path.exists():
        raise InputError(f"--data {path} does not exist")
    if config.kind == "image":
        if not path.is_dir():
            raise InputError(f"--data {path}: an image model needs the image folder it was trained on "
                             "(one sub-folder per class)")
        train, test = (load_image_folder(path, split, image_size=config.image_size, channels=config.channels,
                                         split_version=split_version) for split in ("train", "test"))
        if train.class_names != list(config.class_names):
            raise InputError(f"--data {path} has the classes {train.class_names}; the model was trained on "
                             f"{list(config.class_names)}")
        return train, test
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise InputError(f"--data {path}: a table model needs the .csv it was trained on")
    table = load_table(str(path))
    frame = table.frame
    missing = [c for c in config.data_columns + config.condition_columns if c not in frame.columns]
    if missing:  # perhaps dropped while reading it: say why
        raise InputError(f"--data {path} lacks the model's {plural('column', len(missing))} {missing}"
                         + case_hint(missing, frame.columns, config.data_columns + config.condition_columns)
                         + (f" (reading it: {'; '.join(table.notes)})" if table.notes else ""))
    return split_table(frame, config.permutation_seed, conditions=config.condition_columns if keep_levels else ())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadp.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("bpd", "utility", "audit", "dpsgd", "report"))
    parser.add_argument("--model", required=True, help="model folder (config.json + model.safetensors)")
    parser.add_argument("--data", type=Path,
                        help="the CSV or image folder the model was trained on (models not trained on a bundled "
                             "dataset); split as cadp.train split it")
    parser.add_argument("--split-version", type=int, choices=(1, 2),
                        help="how cadp.train split an image folder given with --data: 1 before 2026-11-30, 2 after "
                             "(default: as the model's eval.json records it)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for CI and tests")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--seed", type=int, default=0,
                        help="audit: the seed of its noise (default 0, as the bundled results; another seed gives "
                             "an independent audit, e.g. to confirm one that found a violation)")
    parser.add_argument("--self-contained", action="store_true",
                        help="write report.html with plotly.js inside it (about 5 MB more), so that it draws "
                             "without an internet connection (by default it loads plotly.js from its CDN)")
    parser.add_argument("--replace-full", action="store_true",
                        help="let a --quick run replace a full run's results in eval.json (refused otherwise)")
    args = parser.parse_args(argv)
    from cadp.hub import EVALUATE_COMMANDS, current_eval, load_folder, update_card_section, update_eval
    from cadp.runtime import configure_allocator

    configure_allocator()

    written = False
    try:
        refuse_hub_cache_snapshot(args.model, args.command)  # before anything is read or computed
        try:
            loaded = load_folder(args.model)
        except ModelError as error:  # "owner/name": --model is a folder, not a Hub repo
            hint = _hub_download_hint(args.model)
            if hint is None:
                raise
            raise ModelError(f"{error} ({hint})") from None
        check_folder_writable(loaded.folder)  # a read-only folder is refused now, not after the whole sweep
        section_name = {command: section for section, command in EVALUATE_COMMANDS.items()}.get(args.command,
                                                                                                  args.command)
        # eval.json, read once: the section a --quick run would replace, and the training split --data must match
        # (sections measured on weights replaced since are another network's: neither read nor drawn)
        evaluation, other_weights = current_eval(loaded.folder)
        if other_weights:
            one = len(other_weights) == 1
            print(f"note: eval.json's {plural('section', len(other_weights))} {', '.join(other_weights)} "
                  f"{'was' if one else 'were'} measured on other weights than "
                  f"{Path(args.model) / 'model.safetensors'} (replaced since): {'it is' if one else 'they are'} "
                  f"not read, and report.html leaves {'it' if one else 'them'} out; run "
                  f"{'its command' if one else 'their commands'} again to measure these weights", file=sys.stderr)
        earlier = section_or_none(evaluation, section_name) if args.command != "report" else None
        settings = (earlier or {}).get("settings")
        if settings is not None and not isinstance(settings, dict):
            print(f"note: eval.json's {section_name!r} section has settings that are not an object, as "
                  "cadp.evaluate writes them: it is read as no earlier run", file=sys.stderr)
            earlier, settings = None, None
        if args.quick and earlier is not None and not args.replace_full and \
                not (earlier.get("quick") or (settings or {}).get("quick")):
            raise InputError(f"{loaded.folder / 'eval.json'} holds a full {args.command} run; a --quick run would "
                             "replace it: evaluate a copy of the folder without its eval.json, or pass --replace-full")
        resolve_device(args.device)  # a GPU asked for and missing, or no device at all: said before any work
        if args.command != "audit" and args.seed != 0:
            print(f"note: --seed {args.seed} is not used: it seeds the audit's noise ({args.command} has its "
                  "own fixed seeds)", file=sys.stderr)
        if args.command in ("bpd", "audit") and args.device not in ("auto", "cpu"):
            print(f"note: --device {args.device} is not used: {args.command} runs on the CPU", file=sys.stderr)
        if args.data is not None:
            data = load_training_data(loaded.config, args.data, evaluation.get("training"), args.split_version)
        elif args.command not in ("report", "audit"):  # read before the progress bar starts: a missing dataset says so first
            data = (_load_image_data if loaded.config.kind == "image" else _load_table_data)(loaded.config, None)
        else:
            data = None
        bar, progress = _tqdm_progress(f"{args.command} {Path(args.model).name}") if args.command != "report" \
            else (None, None)
        start = time.monotonic()
        if args.command == "bpd":
            section, value = "bpd", bits_per_dim_report(loaded, samples=200 if args.quick else 2000,
                                                        progress=progress, data=data)
        elif args.command == "utility":
            quick = QUICK if args.quick else {}
            value = utility_sweep(loaded, epsilons=quick.get("epsilons"), seeds=quick.get("seeds"),
                                  n_train=quick.get("n_train"), n_test=quick.get("n_test"),
                                  n_reid=quick.get("n_reid", 500), cnn_epochs=quick.get("cnn_epochs"),
                                  device=args.device, progress=progress, data=data)
            value["settings"]["quick"] = args.quick
            section = "utility"
        elif args.command == "audit":
            section, value = "audit", audit_model(loaded, releases=2000 if args.quick else 10_000,
                                                  epsilons=(0.5, 3) if args.quick else (0.5, 1, 3, 10),
                                                  seed=args.seed, progress=progress)
        elif args.command == "dpsgd":
            section = "central"
            value = dpsgd_reference(loaded, epsilons=(1, 10) if args.quick else (1, 3, 10),
                                    seeds=(0,) if args.quick else (0, 1, 2), epochs=1 if args.quick else 10,
                                    n_train=200 if args.quick else None, n_test=100 if args.quick else None,
                                    device=args.device, progress=progress, data=data)
        else:
            section, value = None, None
        if bar is not None:
            bar.close()
        if section is not None:
            if section != "utility":  # utility records it in its settings
                value["quick"] = args.quick  # a quick run replaces the full one: the file says which it holds
            update_eval(loaded.folder, section, value)
            written = True
            command = recorded_command("cadp.evaluate", [args.command, "--model", Path(args.model).as_posix()]
                                       + (["--data", str(args.data)] if args.data is not None else [])
                                       + ["--quick"] * args.quick
                                       + (["--seed", str(args.seed)] if args.seed != 0 else []))
            if section == "bpd":
                update_card_section(loaded.folder, "bpd", bpd_card_markdown(value, command))
            elif section == "utility":
                update_card_section(loaded.folder, "reid", reid_card_markdown(value, command))
            print(f"wrote the {args.command} results (section {section!r}) to {loaded.folder / 'eval.json'} in "
                  f"{time.monotonic() - start:.0f} s")
        print(f"wrote {write_report(loaded.folder, args.self_contained)}")
    except KeyboardInterrupt:
        print(f"stopped: interrupted; {Path(args.model) / 'eval.json'} "
              + ("holds this run's results; the model card (README.md) and report.html may be older" if written
                 else "is as it was"), file=sys.stderr)
        return 130
    except CadpError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only folder: each file is replaced whole or left as it was
        print(f"error: cannot read or write {error.filename or args.model} ({error.strerror or error}); "
              f"{Path(args.model) / 'eval.json'} "
              + ("holds this run's results; the model card (README.md) and report.html may be older" if written
                 else "is as it was"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
