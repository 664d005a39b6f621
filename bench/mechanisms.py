"""One-record privatization per mechanism: ``python -m bench.mechanisms [--calls N]``.

Median time of ``privatize`` on one MNIST test image (mnist-cinn) and one heart row (heart-cinn) with the
laplace and gaussian mechanisms at epsilon 10 (constant temperature 0.7, delta 1e-5), 2 threads. It prints one
line, so that two commits can be compared on the same machine state by running it in a worktree of each, in
turns (the tenth round of BENCHMARKS.md: the exact-tail noise against the old samplers).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import torch


def timings(calls: int) -> dict[str, float]:
    """{"image laplace": p50 ms, ...} for one record per call."""
    from cadp.data import load_image_dataset, load_table
    from cadp.hub import load_model
    from cadp.mechanisms import make_mechanism
    from cadp.privatize import privatize

    image = load_model("weights/mnist-cinn")
    data = load_image_dataset("mnist", "test")
    pixels, labels = data.images[:1], data.labels[:1]
    table = load_model("weights/heart-cinn")
    row = load_table("heart").frame.head(1)
    results = {}
    for name, mechanism in (("laplace", make_mechanism("laplace", 10, temperature=0.7)),
                            ("gaussian", make_mechanism("gaussian", 10, delta=1e-5, temperature=0.7))):
        for kind, call in (("image", lambda m=mechanism: privatize(image.model, pixels, labels, m)),
                           ("row", lambda m=mechanism: privatize(table.model, row, None, m, reconstruct=False))):
            for _ in range(20):  # traces and caches first
                call()
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            results[f"{kind} {name}"] = 1e3 * statistics.median(times)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mechanisms", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results = timings(args.calls)
    print(f"{commit or '?'}: " + "; ".join(f"{key} p50 {value:.2f} ms" for key, value in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
