"""Where privatize spends its time: ``python -m bench.profile [--models NAME ...] [--threads N]``.

Images: torch.profiler's operators at batch 256, with the GFLOP/s each convolution
and matmul shape reaches (FLOPs from the shapes, as for stride-1 'same' convolutions; time as
the operator's share of the operators' self time times the measured wall time per call).
Tables: the share of cadp.data's encoder (pandas) against the flow, by cProfile, at batch 1 and 1024.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import torch

from bench import WEIGHTS
from bench.compute import load, privatize_call


def image_operators(loaded, batch: int = 256, calls: int = 2, rows: int = 8) -> str:
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from cadp.models import graph_mode

    call, _ = privatize_call(loaded, batch)
    call()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    wall_ms = (time.perf_counter() - started) * 1e3 / calls
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(calls):
            call()
    with FlopCounterMode(display=False) as counter, graph_mode():
        call()
    total_ms = sum(event.self_cpu_time_total for event in profiler.key_averages()) / 1e3 / calls
    lines = [f"{loaded.folder.name}, batch {batch}: {wall_ms:.1f} ms per call; torch operators' self time "
             f"{total_ms:.1f} ms per call (summed over threads, so it can exceed the wall time); "
             f"{counter.get_total_flops() / batch / 1e6:.0f} MFLOP per record", "",
             "| operator | input shapes | share | GFLOP/s |", "|---|---|---|---|"]
    events = sorted(profiler.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    for event in events[:rows]:
        share = event.self_cpu_time_total / 1e3 / calls / total_ms
        flops = _operator_flops(event.key, event.input_shapes) * event.count / calls
        # self times are summed over threads (their total can exceed the wall time): an operator's
        # wall time is its share of the total times the measured wall time per call
        rate = flops / (share * wall_ms / 1e3) / 1e9 if flops else None
        shapes = str(event.input_shapes[:2]).replace("|", "/")
        lines.append(f"| {event.key} | {shapes} | {100 * share:.1f}% | {'' if rate is None else f'{rate:.1f}'} |")
    return "\n".join(lines)


def _operator_flops(name: str, shapes: list) -> float:
    """FLOPs of one call from its input shapes: stride-1 'same' convolutions and addmm; 0 for anything else."""
    if "conv" in name and len(shapes) > 1 and len(shapes[0]) == 4 and len(shapes[1]) == 4:
        (batch, _channels, height, width), (out_channels, in_per_group, kernel_h, kernel_w) = shapes[0], shapes[1]
        return 2.0 * batch * height * width * out_channels * in_per_group * kernel_h * kernel_w
    if name == "aten::addmm" and len(shapes) > 2 and len(shapes[1]) == 2 and len(shapes[2]) == 2:
        return 2.0 * shapes[1][0] * shapes[1][1] * shapes[2][1]
    return 0.0


def table_shares(loaded, batch: int, calls: int = 20) -> str:
    call, _ = privatize_call(loaded, batch)
    for _ in range(3):
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = max(entry[3] for entry in stats.values())

    def cumulative(file_end: str, function: str) -> float:
        return sum(entry[3] for (file, _line, name), entry in stats.items()
                   if file.endswith(file_end) and name == function)

    parts = {"encoder: transform (pandas -> tensor)": cumulative("cadp/data.py", "transform"),
             "encoder: decode_columns (tensor -> column arrays)": cumulative("cadp/data.py", "decode_columns"),
             "flow: encode + decode (FrEIA)": cumulative("cadp/privatize.py", "_latent_pass")}
    parts["other (checks, condition release, building the frames)"] = total - sum(parts.values())
    lines = [f"{loaded.folder.name}, batch {batch}: {1e3 * total / calls:.2f} ms per call under cProfile", "",
             "| part | share |", "|---|---|"]
    lines += [f"| {name} | {100 * seconds / total:.0f}% |" for name, seconds in parts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[1])
    parser.add_argument("--models", nargs="+", default=["mnist-cinn", "heart-cinn"])
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}\n")
    for name in args.models:
        loaded = load(WEIGHTS / name, torch.device("cpu"))
        if loaded.config.kind == "image":
            print(image_operators(loaded, batch=1, calls=50, rows=4) + "\n")
            print(image_operators(loaded) + "\n")
        else:
            for batch in (1, 1024):
                print(table_shares(loaded, batch) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
