"""One image's privatize call with ``models._check_pairs`` (the one-condition-per-record check that encode and
decode run since the twenty-fourth round) against a no-op, alternating in one process:
``python -m bench.check_pairs mnist-cinn`` (BENCHMARKS.md, "Twenty-fourth round")."""

from __future__ import annotations

import statistics
import sys
import time

import torch

from cadp import models
from cadp.hub import load_model
from cadp.mechanisms import make_mechanism
from cadp.privatize import privatize


def main(name: str, rounds: int = 40, calls: int = 20) -> str:
    real = models._check_pairs
    loaded = load_model(name)
    image = torch.rand(1, 1, 28, 28) * 255
    mechanism = make_mechanism("laplace", 1.0)
    for _ in range(20):  # warm-up
        privatize(loaded.model, image, [3], mechanism, reconstruct=False)
    ratios, times = [], {"check": [], "none": []}
    try:
        for round_ in range(rounds):
            medians = {}
            for which in ("check", "none") if round_ % 2 == 0 else ("none", "check"):
                models._check_pairs = real if which == "check" else (lambda *args: None)
                timed = []
                for _ in range(calls):
                    start = time.perf_counter()
                    privatize(loaded.model, image, [3], mechanism, reconstruct=False)
                    timed.append(time.perf_counter() - start)
                medians[which] = statistics.median(timed)
                times[which].append(medians[which])
            ratios.append(medians["check"] / medians["none"])
    finally:
        models._check_pairs = real
    quartiles = statistics.quantiles(ratios, n=4)
    return (f"{name}: ratio (with the check / without) median {statistics.median(ratios):.3f}, quartiles "
            f"{quartiles[0]:.3f}-{quartiles[2]:.3f}; medians {statistics.median(times['check']) * 1e3:.3f} and "
            f"{statistics.median(times['none']) * 1e3:.3f} ms per call; {rounds} rounds of {calls} calls, order "
            "flipped each round")


if __name__ == "__main__":
    for model in sys.argv[1:] or ["mnist-cinn"]:
        print(main(model))
