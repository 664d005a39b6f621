"""The cost of unpredictable noise words: ``python -m bench.noise_words [--calls N]``.

``privatize`` (laplace, epsilon 10, temperature 0.7, 2 threads) with a seeded generator (torch's stream, not
private) and an unseeded one (words from ``os.urandom``), in turn, in one process: one MNIST test image
(mnist-cinn), 256 of them without the reconstruction, and one heart row (heart-cinn). Prints the median of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timings(calls: int) -> dict[str, dict[str, float]]:
    """{case: {"seeded": p50 ms, "unseeded": p50 ms}}; a batch of 256 runs calls // 25 times (at least 5)."""
    from cadp.data import load_image_dataset, load_table
    from cadp.hub import load_model
    from cadp.mechanisms import make_mechanism, new_generator
    from cadp.privatize import privatize

    image, table = load_model("weights/mnist-cinn"), load_model("weights/heart-cinn")
    data, row = load_image_dataset("mnist", "test"), load_table("heart").frame.head(1)
    mechanism = make_mechanism("laplace", 10, temperature=0.7)
    cases = {
        "one image": (lambda g: privatize(image.model, data.images[:1], data.labels[:1], mechanism, g), calls),
        "256 images": (lambda g: privatize(image.model, data.images[:256], data.labels[:256], mechanism, g,
                                           reconstruct=False), max(calls // 25, 5)),
        "one row": (lambda g: privatize(table.model, row, None, mechanism, g, reconstruct=False), 3 * calls),
    }
    makers = {"seeded": lambda: new_generator(1), "unseeded": new_generator}
    results = {}
    for case, (call, count) in cases.items():
        for make in makers.values():  # traces and caches first
            for _ in range(5):
                call(make())
        times = {label: [] for label in makers}
        for _ in range(count):
            for label, make in makers.items():
                generator = make()
                start = time.perf_counter()
                call(generator)
                times[label].append(time.perf_counter() - start)
        results[case] = {label: 1e3 * statistics.median(values) for label, values in times.items()}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noise_words", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    for case, result in timings(args.calls).items():
        print(f"{case}: seeded (torch) p50 {result['seeded']:.2f} ms; unseeded (os.urandom) p50 "
              f"{result['unseeded']:.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
