"""One image's release with the Laplace mechanism's arithmetic as it was before the twenty-first round (the clip and
the addition in torch) and as it is now (in NumPy for a CPU latent): ``python -m bench.numpy_mechanism``.

BENCHMARKS.md, "Twenty-first round". The previous arithmetic is kept here, as a subclass of the mechanism, only to
be compared: both are the clipped latent plus the same exact-tail Laplace noise from ``os.urandom`` (the test
checks that the previous one still releases Laplace noise around the clipped latent). Calls alternate between the
two in one process, in rounds whose order flips each round (``bench.huge_pages.alternate``), so that the host's slow
and fast phases fall on both alike: the ratio per round (now / before) is the answer. A second part times the
mechanism alone right after an encode pass and again at once (``bench.call_parts.timed_after_a_pass``).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from cadp import mechanisms


class PreviousLaplace(mechanisms.LaplaceMechanism):
    """The Laplace mechanism with its arithmetic before the twenty-first round: the clip in torch, then the noise
    (the same words and values as now) added in torch."""

    def __call__(self, latent, generator=None):
        clipped = latent.double()
        norms = clipped.norm(p=1, dim=1, keepdim=True)
        clipped = clipped * torch.clamp(self.clip_radius * (1 - mechanisms.CLIP_MARGIN) / norms.clamp_min(1e-300),
                                        max=1.0)
        return (clipped + mechanisms.laplace_noise(latent.shape, self.scale, generator)).to(latent.dtype)


def calls_of(loaded) -> dict:
    """One image's privatize call (the suite's: batch 1, no reconstruction, epsilon 10, temperature 0.7) with each
    arithmetic."""
    from bench.compute import EPSILON, TEMPERATURE, image_inputs
    from cadp.privatize import privatize

    now = mechanisms.make_mechanism("laplace", EPSILON, temperature=TEMPERATURE)
    before = PreviousLaplace(now.epsilon, now.clip_radius, now.temperature)
    pixels, labels, _ = image_inputs(loaded.config, 1)

    def call(mechanism):
        def run():
            with torch.inference_mode():
                return privatize(loaded.model, pixels, labels, mechanism, reconstruct=False)
        return run

    return {"before": call(before), "now": call(now)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.numpy_mechanism", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist-cinn", "fashion-mnist-cinn"],
                        help="image model names in weights/ or folders (as for python -m bench)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--calls", type=int, default=20, help="calls per round and arithmetic")
    args = parser.parse_args(argv)
    from bench.__main__ import model_folders
    from bench.call_parts import timed_after_a_pass
    from bench.compute import EPSILON, TEMPERATURE, image_inputs, load
    from bench.huge_pages import alternate
    from cadp.runtime import configure_allocator

    configure_allocator()  # as the app and the CLIs run
    torch.set_num_threads(2)
    for folder in model_folders(args.models):
        loaded = load(str(folder), torch.device("cpu"))
        calls = calls_of(loaded)
        for call in calls.values():
            for _ in range(30):
                call()
        times = alternate(calls, args.rounds, args.calls)
        ratios = [now / before for before, now in zip(times["before"], times["now"])]
        quartiles = statistics.quantiles(ratios, n=4)
        print(f"{folder.name}: one image's call, {args.rounds} rounds of {args.calls} calls each: before median "
              f"{statistics.median(times['before']):.3f} ms, now {statistics.median(times['now']):.3f} ms; ratio per "
              f"round (now / before) median {statistics.median(ratios):.3f} (quartiles {quartiles[0]:.3f}-"
              f"{quartiles[2]:.3f})")
        now = mechanisms.make_mechanism("laplace", EPSILON, temperature=TEMPERATURE)
        before = PreviousLaplace(now.epsilon, now.clip_radius, now.temperature)
        pixels, labels, _ = image_inputs(loaded.config, 1)
        steps = {"mechanism before": before, "mechanism now": now}  # each a function of the latent
        print("| step | after an encode pass (median us of 300) | again at once |\n|---|---|---|")
        for step, (cold, warm) in timed_after_a_pass(loaded.model, pixels.float(), labels, steps, 300).items():
            print(f"| {step} | {cold:.1f} | {warm:.1f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
