"""Memory that one image's passes hold, fused or not: ``python -m bench.fused_memory [--models NAME ...]``.

For each image model and route (passes fused by oneDNN Graph, the model's route; weight copies, where fusion is
off or fails), in a fresh process: the resident size after loading the model, after its first privatize calls of
one image (its encode and decode passes made), and after the model is dropped and collected, over four loads in
turn (``--loads``); each resident size after ``malloc_trim`` (memory in use, not what the allocator keeps for reuse).
A pass's graph is freed with its model (``cadp.models._GraphPass``); oneDNN Graph keeps what it compiled for fused
passes in caches of bounded size, so what stays per load shrinks as they fill (the table's last column).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys

import torch

from bench import WEIGHTS

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
    """Resident MiB in this process: at the start, then per load (loaded, after two calls, after the drop)."""
    from bench.compute import load, privatize_call

    start = resident_mib()  # (glibc's default allocator: cadp.runtime.configure_allocator would keep freed memory)
    rounds = []
    for _ in range(loads):
        loaded = load(folder, torch.device("cpu"))
        loaded.model._traced.fuse = route == "fused"
        loaded_mib = resident_mib()
        call, _ = privatize_call(loaded, 1)
        call()
        call()
        called_mib = resident_mib()
        kinds = sorted({type(entry[1]).__name__ for entry in loaded.model._traced._entries.values()})
        del call, loaded
        gc.collect()
        rounds.append({"loaded": loaded_mib, "called": called_mib, "dropped": resident_mib(), "passes": kinds})
    return {"start": start, "rounds": rounds}


def table(name: str, results: dict[str, dict]) -> str:
    lines = [f"{name}: resident MiB after malloc_trim, {len(next(iter(results.values()))['rounds'])} loads in turn "
             "(each: load, two privatize calls of one image, drop)", "",
             "| route | passes | calls add (first load) | held after each drop, above the start | "
             "held per load after the first | held per load, second half of the loads |", "|---|---|---|---|---|---|"]
    for route, result in results.items():
        rounds = result["rounds"]
        held = [entry["dropped"] - result["start"] for entry in rounds]
        half = len(held) // 2  # (whether what stays keeps growing, or stops where a cache is full)
        per_load = (held[-1] - held[0]) / (len(held) - 1) if len(held) > 1 else float("nan")
        late = (held[-1] - held[half - 1]) / (len(held) - half) if half else float("nan")
        kinds = sorted({kind for entry in rounds for kind in entry["passes"]})  # (every load's passes)
        lines.append(f"| {ROUTES[route]} | {', '.join(kinds)} | "
                     f"{rounds[0]['called'] - rounds[0]['loaded']:.1f} | {', '.join(f'{value:.1f}' for value in held)} "
                     f"| {per_load:.1f} | {late:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fused_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mnist-cinn", "fashion-mnist-cinn"])
    parser.add_argument("--loads", type=int, default=4)
    parser.add_argument("--one", nargs=2, metavar=("FOLDER", "ROUTE"), help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.loads)))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        results = {}
        for route in ROUTES:
            child = subprocess.run([sys.executable, "-m", "bench.fused_memory", "--loads", str(args.loads),
                                    "--one", str(WEIGHTS / name), route], capture_output=True, text=True, check=True)
            results[route] = json.loads(child.stdout.strip().splitlines()[-1])
        print()
        print(table(name, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
