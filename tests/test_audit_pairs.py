"""The model audit tried one pair, +-2R e_1: on one axis an L1 clip, an L2 clip and a per-coordinate clamp agree,
so a laplace clipping in L2 or a gaussian clamping each coordinate (sqrt(D) times the sensitivity) passed with
every stored number unchanged, and a gaussian without any clip passed too. The audit now also tries the diagonal
pair and lets the first half of the releases pick which pair the second half measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cadp import mechanisms
from cadp.evaluate import (
    AXIS_PAIR,
    DIAGONAL_PAIR,
    audit_model,
    latent_audit,
    pairs_audit,
    report_notes,
    worst_case_latents,
    worst_case_pairs,
)
from cadp.hub import load_folder
from cadp.mechanisms import make_mechanism

ROOT = Path(__file__).resolve().parent.parent
DIM = 64


def broken(monkeypatch, which: str) -> None:
    if which == "laplace clips in L2":
        monkeypatch.setattr(mechanisms.LaplaceMechanism, "center",
                            lambda self, z: mechanisms.clip_per_sample(z, self.clip_radius, p=2))
    elif which == "gaussian clamps each coordinate":
        monkeypatch.setattr(mechanisms.GaussianMechanism, "center",
                            lambda self, z: z.double().clamp(-self.clip_radius, self.clip_radius))
    else:  # "gaussian without a clip"
        monkeypatch.setattr(mechanisms.GaussianMechanism, "center", lambda self, z: z.double())


@pytest.mark.parametrize("which", ["laplace clips in L2", "gaussian clamps each coordinate",
                                   "gaussian without a clip"])
def test_a_clip_in_another_norm_or_none_fails_the_audit(monkeypatch, which):
    name = which.split()[0]
    mechanism = make_mechanism(name, 1.0, delta=1e-5 if name == "gaussian" else None, temperature=0.7)
    correct = pairs_audit(worst_case_pairs(mechanism, DIM), mechanism, 4000, torch.Generator().manual_seed(3))
    assert correct.verdict.startswith("no violation found"), correct
    axis_only = latent_audit(*worst_case_latents(mechanism, DIM), mechanism, 4000, torch.Generator().manual_seed(3))
    broken(monkeypatch, which)
    blind = latent_audit(*worst_case_latents(mechanism, DIM), mechanism, 4000, torch.Generator().manual_seed(3))
    assert blind.verdict == axis_only.verdict  # the axis pair alone cannot tell
    caught = pairs_audit(worst_case_pairs(mechanism, DIM), mechanism, 4000, torch.Generator().manual_seed(3))
    assert caught.verdict.startswith("exceeds the claim") and caught.pair == DIAGONAL_PAIR, caught


def test_the_diagonal_pair_is_as_far_apart_as_the_sensitivity_under_a_correct_clip():
    for name in ("laplace", "gaussian"):
        mechanism = make_mechanism(name, 1.0, delta=1e-5 if name == "gaussian" else None, temperature=0.7)
        pairs = worst_case_pairs(mechanism, DIM)
        assert [pair for pair, _, _ in pairs] == [AXIS_PAIR, DIAGONAL_PAIR]
        norm = 1 if name == "laplace" else 2
        for _, a, b in pairs:
            apart = torch.linalg.vector_norm(mechanism.center(a) - mechanism.center(b), ord=norm)
            assert float(apart) == pytest.approx(2 * mechanism.clip_radius, rel=1e-6)


def test_one_pair_audits_as_before():
    mechanism = make_mechanism("laplace", 1.0, temperature=0.7)
    a, b = worst_case_latents(mechanism, DIM)
    one = latent_audit(a, b, mechanism, 2000, torch.Generator().manual_seed(1))
    again = pairs_audit([("", a, b)], mechanism, 2000, torch.Generator().manual_seed(1))
    assert one == again


def test_the_bundled_audits_record_the_pair_the_seed_and_the_power_note():
    for name in ("mnist-cinn", "heart-cinn"):
        audit = json.loads((ROOT / "weights" / name / "eval.json").read_text())["audit"]
        assert audit["seed"] == 0 and "A result below the claim is no proof" in audit["note"]
        pairs = {row["mechanism"]: set() for row in audit["results"]}
        for row in audit["results"]:
            pairs[row["mechanism"]].add(row["pair"])
        assert pairs["paper"] == {"corners: +-2s (1, ..., 1)"} and pairs["laplace"] <= {AXIS_PAIR, DIAGONAL_PAIR}


def test_the_report_says_what_an_audit_point_is_and_each_verdict(tmp_path):
    evaluation = json.loads((ROOT / "weights" / "diabetes-cinn" / "eval.json").read_text())
    notes = " ".join(report_notes(tmp_path, evaluation, []))
    assert "each point is a 95%-confidence lower bound on the privacy loss" in notes and "is no proof" in notes
    assert "laplace at 10.0: not testable" in notes


def test_an_audit_with_another_seed_is_independent_and_recorded(tmp_path):
    import shutil

    shutil.copytree(ROOT / "weights" / "heart-cinn", tmp_path / "m")
    done = subprocess.run([sys.executable, "-m", "cadp.evaluate", "audit", "--model", str(tmp_path / "m"), "--quick",
                           "--replace-full", "--seed", "7"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    audit = json.loads((tmp_path / "m" / "eval.json").read_text())["audit"]
    assert audit["seed"] == 7
    again = audit_model(load_folder(tmp_path / "m"), epsilons=(0.5, 3), releases=2000, seed=7)
    assert [row["epsilon_lower_bound"] for row in again["results"]] == \
        [row["epsilon_lower_bound"] for row in audit["results"]]
    other = audit_model(load_folder(tmp_path / "m"), epsilons=(0.5, 3), releases=2000, seed=0)
    assert [row["tpr"] for row in other["results"]] != [row["tpr"] for row in audit["results"]]
