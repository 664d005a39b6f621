"""One image's release with the Laplace mechanism's arithmetic in torch (the library's) and in NumPy (tried in the
twenty-first round, not kept): ``python -m bench.numpy_mechanism``.

BENCHMARKS.md, "Twenty-first round". The NumPy arithmetic is kept here, as a subclass of the mechanism, only to be
compared: both are the clipped latent plus the same exact-tail Laplace noise (the test checks that the NumPy one
releases what the library does). Calls alternate between the two in one process, in rounds whose order flips each
round (``bench.huge_pages.alternate``), so that the host's slow and fast phases fall on both alike: the ratio per
round (NumPy / torch) is the answer. A second part times the mechanism alone right after an encode pass and again at
once (``bench.call_parts.timed_after_a_pass``).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch

from cadp import mechanisms


class NumpyLaplace(mechanisms.LaplaceMechanism):
    """The Laplace mechanism with its clip and addition in NumPy (a CPU float32 latent): fewer steps than torch's
    between the flow passes."""

    def __call__(self, latent, generator=None):
        values = latent.detach().numpy().astype(np.float64, order="C")
        norms = np.abs(values).sum(axis=1, keepdims=True)
        values *= np.minimum(mechanisms._clip_factor_limit(self.clip_radius, values.shape[1]) / np.maximum(norms, 1e-300),
                             1.0)
        values += mechanisms.laplace_values(values.size, self.scale, generator).reshape(values.shape)
        return torch.from_numpy(values.astype(np.float32))


def calls_of(loaded) -> dict:
    """One image's privatize call (the suite's: batch 1, no reconstruction, epsilon 10, temperature 0.7) with each
    arithmetic."""
    from bench.compute import EPSILON, TEMPERATURE, image_inputs
    from cadp.privatize import privatize

    library = mechanisms.make_mechanism("laplace", EPSILON, temperature=TEMPERATURE)
    tried = NumpyLaplace(library.epsilon, library.clip_radius, library.temperature)
    pixels, labels, _ = image_inputs(loaded.config, 1)

    def call(mechanism):
        def run():
            with torch.inference_mode():
                return privatize(loaded.model, pixels, labels, mechanism, reconstruct=False)
        return run

    return {"torch": call(library), "numpy": call(tried)}


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
    from bench.huge_pages import alternate, ratio_summary
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
        print(f"{folder.name}: one image's call, {args.rounds} rounds of {args.calls} calls each: torch median "
              f"{statistics.median(times['torch']):.3f} ms, NumPy {statistics.median(times['numpy']):.3f} ms; ratio "
              f"per round (NumPy / torch) median {ratio_summary(times['torch'], times['numpy'])}")
        library = mechanisms.make_mechanism("laplace", EPSILON, temperature=TEMPERATURE)
        tried = NumpyLaplace(library.epsilon, library.clip_radius, library.temperature)
        pixels, labels, _ = image_inputs(loaded.config, 1)
        steps = {"mechanism in torch": library, "mechanism in NumPy": tried}  # each a function of the latent
        print("| step | after an encode pass (median us of 300) | again at once |\n|---|---|---|")
        for step, (cold, warm) in timed_after_a_pass(loaded.model, pixels.float(), labels, steps, 300).items():
            print(f"| {step} | {cold:.1f} | {warm:.1f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
