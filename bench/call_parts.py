"""Where one image's privatize call spends its time besides the two flow passes: ``python -m bench.call_parts``.

The call timed is the suite's (``bench.compute.privatize_call``: batch 1, Laplace, no reconstruction). Its
steps are timed inside the real call by wrapping the functions it calls (the wrappers add about a microsecond
each); "rest" is the call's wall time less the wrapped steps (the mechanism's addition, the result's fields,
Python around them). A second probe times one small operation right after an encode pass and again at once:
what a step costs when the pass has just pushed the interpreter's and torch's code and data out of the caches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

STEPS = ("encode", "decode", "laplace noise words", "clip (center)", "pixels check", "labels check",
         "label release", "guarantee text")


def call_parts(folder: str, calls: int) -> dict[str, float]:
    """Microseconds per call of each wrapped step of ``calls`` batch-1 calls, with "call" (the whole) and "rest"."""
    import cadp.mechanisms as mechanisms
    import cadp.privatize as privatize
    from bench.compute import load, privatize_call

    loaded = load(folder, torch.device("cpu"))
    model = loaded.model
    call, _ = privatize_call(loaded, 1)
    noise = next(cell.cell_contents for cell in call.__closure__
                 if isinstance(cell.cell_contents, mechanisms.Mechanism))
    spent: dict[str, int] = dict.fromkeys(STEPS, 0)

    def timed(function, step: str):
        def wrapper(*args, **kwargs):
            start = time.perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                spent[step] += time.perf_counter_ns() - start
        return wrapper

    model.encode = timed(model.encode, "encode")
    model.decode = timed(model.decode, "decode")
    noise.center = timed(noise.center, "clip (center)")
    patches = [(mechanisms, "laplace_noise", "laplace noise words"), (privatize, "_image_pixels", "pixels check"),
               (privatize, "_image_labels", "labels check"), (privatize, "release_condition", "label release"),
               (privatize, "_guarantee", "guarantee text")]
    originals = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, step in patches:
            setattr(module, name, timed(getattr(module, name), step))
        for _ in range(30):
            call()
        for step in spent:
            spent[step] = 0
        total = 0
        for _ in range(calls):
            start = time.perf_counter_ns()
            call()
            total += time.perf_counter_ns() - start
    finally:
        for module, name, original in originals:
            setattr(module, name, original)
    parts = {step: value / calls / 1e3 for step, value in spent.items()}
    parts["call"] = total / calls / 1e3
    parts["rest"] = parts["call"] - sum(value for step, value in parts.items() if step != "call")
    return parts


def after_a_pass(folder: str, repeats: int) -> dict[str, tuple[float, float]]:
    """Median microseconds of small operations on the latent: (right after an encode pass, again at once)."""
    import math

    from bench.compute import image_inputs, load

    loaded = load(folder, torch.device("cpu"))
    model = loaded.model
    pixels, labels, _ = image_inputs(loaded.config, 1)
    pixels = pixels.float()
    operations = {"z + 1": lambda z: z + 1,
                  "isfinite(z).all()": lambda z: bool(torch.isfinite(z).all()),
                  "float64 sum of z": lambda z: math.isfinite(z.sum(dtype=torch.float64)),
                  "torch.empty(0)": lambda z: torch.empty(0)}
    return timed_after_a_pass(model, pixels, labels, operations, repeats)


def timed_after_a_pass(model, pixels, labels, operations: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median microseconds of each operation (a function of the latent) right after an encode pass of ``pixels``,
    and again at once."""
    medians = {}
    with torch.inference_mode():
        for name, operation in operations.items():
            cold, warm = [], []
            for _ in range(repeats):
                z = model.encode(pixels, labels)
                start = time.perf_counter_ns()
                operation(z)
                middle = time.perf_counter_ns()
                operation(z)
                cold.append(middle - start)
                warm.append(time.perf_counter_ns() - middle)
            medians[name] = (statistics.median(cold) / 1e3, statistics.median(warm) / 1e3)
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.call_parts", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist-cinn", "fashion-mnist-cinn"],
                        help="image model names in weights/ or folders (as for python -m bench)")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    from cadp.runtime import configure_allocator

    configure_allocator()  # as the app and the CLIs run
    torch.set_num_threads(args.threads)
    from bench.__main__ import model_folders

    for folder in map(str, model_folders(args.models)):
        print(f"{folder}: one image's call, microseconds per call ({args.calls} calls per round, "
              f"{args.threads} threads)")
        rounds = [call_parts(folder, args.calls) for _ in range(args.rounds)]
        print("| step | " + " | ".join(f"round {index + 1}" for index in range(args.rounds)) + " |")
        print("|---|" + "---|" * args.rounds)
        for step in (*STEPS, "rest", "call"):
            print(f"| {step} | " + " | ".join(f"{parts[step]:,.1f}" for parts in rounds) + " |")
        print(f"\n{folder}: one operation on the latent right after an encode pass, and again at once (median us)")
        print("| operation | after a pass | again |\n|---|---|---|")
        for name, (cold, warm) in after_a_pass(folder, 300).items():
            print(f"| {name} | {cold:.1f} | {warm:.1f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
