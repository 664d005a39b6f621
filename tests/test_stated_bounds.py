"""Numbers and labels a user reads as a privacy bound: never less than the true loss, never without the label the
contract asks for (a review of the privacy arithmetic against PRIVACY.md)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from cadp import ui
from cadp.archive import RunSettings
from cadp.baselines import dp_pix, dp_pix_scale
from cadp.errors import InputError
from cadp.mechanisms import (
    PAPER_LABEL,
    SMALLEST_DELTA,
    _analytic_gaussian_delta_exact,
    analytic_gaussian_sigma,
    make_mechanism,
    readable,
)


@pytest.mark.parametrize("channels", [1, 3])
def test_dp_pix_noise_covers_a_pixel_changed_in_every_channel(channels):
    """A colour pixel that changes moves one cell mean per channel: the L1 change over the scale is the privacy
    loss, and it must not exceed epsilon (it was 3 epsilon for RGB)."""
    epsilon, cell = 1.0, 4
    first = torch.zeros(1, channels, 28, 28)
    second = first.clone()
    second[0, :, 5, 9] = 255.0  # one pixel, every channel, by the most it can
    change = (torch.nn.functional.avg_pool2d(second, cell) - torch.nn.functional.avg_pool2d(first, cell)).abs().sum()
    scale = dp_pix_scale(epsilon, cell, 1, channels=channels)
    assert change.item() / scale <= epsilon * (1 + 1e-9)
    released = dp_pix(first.expand(4000, -1, -1, -1), epsilon, cell=cell, generator=torch.Generator().manual_seed(3))
    cells = released[:, :, ::cell, ::cell]  # (clamped at 0: half the draws; |noise| of the other half)
    spread = cells[cells > 0].mean().item()
    assert spread == pytest.approx(scale, rel=0.05)


def test_a_delta_too_small_for_float64_is_refused_and_the_smallest_allowed_holds():
    for delta in (5e-324, 1e-315, 1e-310):
        with pytest.raises(InputError, match="delta must be at least"):
            make_mechanism("gaussian", 1.0, delta=delta, temperature=0.7)
    sigma = analytic_gaussian_sigma(1.0, SMALLEST_DELTA, 1.0)
    assert _analytic_gaussian_delta_exact(sigma, 1.0, 1.0) <= SMALLEST_DELTA


@pytest.mark.parametrize("value, shown", [(75.145, "75.2"), (63.145, "63.2"), (0.12341, "0.124"), (999.7, "1,000"),
                                          (1234.2, "1,235"), (5.0, "5"), (6680.0, "6,680")])
def test_an_epsilon_between_records_is_rounded_up(value, shown):
    assert readable(value, up=True) == shown


def test_the_metric_meaning_never_shows_less_than_the_loss_between_records():
    """eps_unit * d_typ = 75.145 read 'epsilon = 75.1' under the slider and in the terms."""
    distances = SimpleNamespace(d_typ=75.145, d_nn=63.145, measured_on="on held-out data")
    config = SimpleNamespace(latent_distances=distances, kind="image")
    text = ui.metric_meaning(config, 1.0)
    assert "ε = 75.2" in text and "ε = 63.2" in text, text
    terms = make_mechanism("metric", 1.0).guarantee(d_typ=75.145, d_nn=63.145)
    assert "epsilon = 75.2" in terms and "epsilon = 63.2" in terms, terms


def test_paper_is_labelled_as_the_contract_asks_in_the_ledger_and_the_manifest():
    paper = make_mechanism("paper", 2.0)
    assert PAPER_LABEL in ui.cost_text([paper])
    settings = RunSettings(mechanism=paper, generator=torch.Generator(), seed=None, batch_size=1, invert="none")
    assert PAPER_LABEL in settings.epsilon_of(3) and not math.isnan(paper.epsilon)
