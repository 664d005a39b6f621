"""Mechanisms built directly are checked as make_mechanism's are; metric's terms without measured distances."""

from __future__ import annotations

import math

import pytest

from cadp.errors import InputError
from cadp.mechanisms import GaussianMechanism, LaplaceMechanism, MetricMechanism, PaperMechanism


@pytest.mark.parametrize("build", [
    lambda: LaplaceMechanism(-2.0, 1.0),  # its terms said "epsilon = -2", private
    lambda: LaplaceMechanism(math.inf, 1.0),  # no noise, said "epsilon = inf" LDP
    lambda: LaplaceMechanism(math.nan, 1.0),
    lambda: LaplaceMechanism(1.0, 0.0),
    lambda: LaplaceMechanism(1.0, -1.0),
    lambda: LaplaceMechanism(True, 1.0),
    lambda: LaplaceMechanism(1.0, 1.0, temperature=-0.7),
    lambda: GaussianMechanism(1.0, 0.0, 1.0),
    lambda: GaussianMechanism(1.0, 1.0, 1.0),
    lambda: GaussianMechanism(0.0, 1e-5, 1.0),
    lambda: GaussianMechanism(1.0, 1e-5, math.inf),
    lambda: MetricMechanism(0.0),
    lambda: MetricMechanism(-1.0),
    lambda: PaperMechanism(math.inf),
    lambda: PaperMechanism("ten"),
    lambda: LaplaceMechanism(1.0, 1e-320),  # a denormal radius: the clip's rounding left norms above it
    lambda: LaplaceMechanism(1.0, 1e40),  # releases not finite
    lambda: GaussianMechanism(1.0, 1e-5, 1e-320),
    lambda: MetricMechanism(1e-40),  # noise scale 1e40
])
def test_a_mechanism_with_impossible_settings_is_refused_when_built(build):
    with pytest.raises(InputError):
        build()


def test_valid_direct_builds_keep_their_values():
    laplace = LaplaceMechanism(2, 3)
    assert (laplace.epsilon, laplace.clip_radius, laplace.scale) == (2.0, 3.0, 3.0)
    assert GaussianMechanism.create(1.0, 1e-5, None, 0.7).clip_radius > 0
    assert MetricMechanism(1).epsilon == 1.0 and PaperMechanism(4).clip_size == 2.0


def test_metric_terms_without_measured_distances_say_what_is_not_known():
    """PRIVACY.md: always say what epsilon per unit means between real records; without distances the terms said
    nothing of it (a model whose config has none)."""
    terms = MetricMechanism(1.0).guarantee()
    assert "no measured latent distances" in terms and "is not known" in terms
    assert "protect only near-duplicates" in terms
    measured = MetricMechanism(1.0).guarantee(d_typ=600.0, d_nn=500.0)
    assert "no measured latent distances" not in measured and "epsilon = 600" in measured
