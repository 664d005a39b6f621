"""Memory that a model's passes hold after it is gone: ``python -m bench.fused_memory [--models NAME ...] [--loads N]
[--fits N]``.

For each image model and route (passes fused by oneDNN Graph, the model's route; weight copies, where fusion is
off or fails), in a fresh process: the resident size after loading the model, after its first privatize calls of
one image (its encode and decode passes made), and after the model is dropped and collected, over four loads in
turn (``--loads``); each resident size after ``malloc_trim`` (memory in use, not what the allocator keeps for reuse).
A pass's graph is freed with its model (``cadp.models._GraphPass``); with fused passes some memory still stays
per load (about 1.2 MiB per load for the first 40-odd loads of mnist-cinn, 0.3 after: BENCHMARKS.md, "Thirtieth
round"; what holds it is not established). ``--alternate`` also
loads the models in turn in one process. Then the same for table models (``--fits``, four by default): each
fitted on the suite's synthetic table, its whole table privatized, dropped.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
from pathlib import Path

import torch

from bench import WEIGHTS
from bench.fit import APP_DEFAULT_STEPS

ROUTES = {"fused": "fused by oneDNN Graph (used)", "copies": "weight copies"}


def resident_mib() -> float:
    """This process's resident size, after giving freed heap memory back (glibc's ``malloc_trim``): what is
    still in use, not what the allocator keeps for reuse."""
    from bench.compute import _status_mib

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the resident size as it is
        pass
    return _status_mib("VmRSS")


def measure(folder: str, route: str, loads: int = 4) -> dict:
    """Resident MiB in this process: at the start, then per load (loaded, after two calls, after the drop).

    ``folder``: one model folder, or several joined by commas, loaded in turn (load 1 the first, load 2 the
    second, ...), as an app serving several models loads them."""
    from bench.compute import load, privatize_call
    from cadp import models  # noqa: F401 (imported before the start: the import is not what a load holds)

    folders = folder.split(",")
    start = resident_mib()  # (glibc's default allocator: cadp.runtime.configure_allocator would keep freed memory)
    rounds = []
    for index in range(loads):
        loaded = load(folders[index % len(folders)], torch.device("cpu"))
        loaded.model._traced.fuse = route == "fused"
        loaded_mib = resident_mib()
        call, _ = privatize_call(loaded, 1)
        call()
        call()
        called_mib = resident_mib()
        kinds = sorted({type(entry[1]).__name__ for entry in loaded.model._traced._entries.values()})
        del call, loaded
        gc.collect()
        rounds.append({"model": Path(folders[index % len(folders)]).name, "loaded": loaded_mib, "called": called_mib,
                       "dropped": resident_mib(), "passes": kinds})
    return {"start": start, "rounds": rounds}


def measure_fits(fits: int = 4, steps: int = APP_DEFAULT_STEPS) -> dict:
    """As ``measure``, for table models: each round fits one on the suite's synthetic 1,000 x 15 table (the app's
    default steps, its likelihood traced), privatizes the whole table (its passes traced: more rows than NumPy's
    route takes) and drops the model."""
    from bench.compute import mechanism
    from bench.fit import CONDITION, synthetic_frame
    from cadp.mechanisms import new_generator
    from cadp.privatize import privatize
    from cadp.train import fit_tabular

    frame = synthetic_frame()
    start = resident_mib()
    rounds = []
    for seed in range(fits):
        model = fit_tabular(frame, [CONDITION], steps=steps, seed=seed)
        fitted_mib = resident_mib()
        with torch.inference_mode():
            privatize(model, frame, None, mechanism(), new_generator())
        called_mib = resident_mib()
        kinds = [TABLE_PASSES[key[:2]] for key in model._traced._entries]
        del model
        gc.collect()
        rounds.append({"loaded": fitted_mib, "called": called_mib, "dropped": resident_mib(), "passes": kinds})
    return {"start": start, "rounds": rounds}


def growth(held: list[float]) -> tuple[float, float]:
    """MiB kept per load (or fit, or session) after the first, and over the second half of them: whether what stays
    keeps growing as they go on (nan where there are too few)."""
    half = len(held) // 2
    return ((held[-1] - held[0]) / (len(held) - 1) if len(held) > 1 else float("nan"),
            (held[-1] - held[half - 1]) / (len(held) - half) if half else float("nan"))


TABLE_PASSES = {(False, True): "likelihood", (False, False): "encode", (True, False): "decode"}  # (rev, jac)


def table(name: str, results: dict[str, dict], loads: str = "loads",
          each: str = "load, two privatize calls of one image, drop") -> str:
    count = len(next(iter(results.values()))["rounds"])
    lines = [f"{name}: resident MiB after malloc_trim, {count} {loads if count != 1 else loads[:-1]} in turn "
             f"(each: {each})", "",
             f"| route | passes | calls add (first {loads[:-1]}) | held after each drop, above the start | "
             f"held per {loads[:-1]} after the first | held per {loads[:-1]}, second half of the {loads} |",
             "|---|---|---|---|---|---|"]
    for route, result in results.items():
        rounds = result["rounds"]
        held = [entry["dropped"] - result["start"] for entry in rounds]
        per_load, late = growth(held)
        kinds = sorted({kind for entry in rounds for kind in entry["passes"]})  # (every load's passes)
        lines.append(f"| {ROUTES.get(route, route)} | {', '.join(kinds)} | "
                     f"{rounds[0]['called'] - rounds[0]['loaded']:.1f} | {', '.join(f'{value:.1f}' for value in held)} "
                     f"| {per_load:.1f} | {late:.1f} |")
    return "\n".join(lines)


def _child(*args: str) -> dict:
    """The JSON a fresh process of this module prints for ``args`` (a measurement of its own)."""
    child = subprocess.run([sys.executable, "-m", "bench.fused_memory", *args], capture_output=True, text=True,
                           check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fused_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mnist-cinn", "fashion-mnist-cinn"])
    parser.add_argument("--loads", type=int, default=4)
    parser.add_argument("--fits", type=int, default=4, help="table fits in turn, after the image models (0: none)")
    parser.add_argument("--alternate", action="store_true",
                        help="also load the models in turn in one process (each route), after each on its own")
    parser.add_argument("--one", nargs=2, metavar=("FOLDER", "ROUTE"), help=argparse.SUPPRESS)  # the child
    parser.add_argument("--one-fits", action="store_true", help=argparse.SUPPRESS)  # the child of the table fits
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.loads)))
        return 0
    if args.one_fits:
        print(json.dumps(measure_fits(args.fits)))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    groups = [(name, [name]) for name in args.models]
    if args.alternate and len(args.models) > 1:
        groups.append((" and ".join(args.models) + ", in turn in one process", args.models))
    for title, names in groups:
        results = {route: _child("--loads", str(args.loads), "--one", ",".join(str(WEIGHTS / name) for name in names),
                                 route) for route in ROUTES}
        print()
        print(table(title, results))
    if args.fits:
        print()
        print(table(f"table fits (synthetic 1,000 x 15, {APP_DEFAULT_STEPS} steps)",
                    {"traces": _child("--fits", str(args.fits), "--one-fits")}, loads="fits",
                    each="fit, privatize the whole table, drop"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
