"""What other image networks would reach: ``python -m bench.architectures [--rounds N] [--out FILE]``.

The suite's efficiency ratio (FLOPs per record x records/s over the measured peak) for the
bundled fashion-mnist-cinn and for variants of its config that this library can train
(``cadp.train --conv-subnet 3-3-3 --width W --conv-blocks B --fc-blocks F --fc-width V``),
built here with random weights: time and FLOPs do not depend on the weights' values, the
quality does and is not measured here (a variant would need training and evaluation).
Each round times every network once, in turn, in one process (the machine's speed drifts);
the peak is measured as in the suite, with every network's largest layer as a candidate.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch

from bench import WEIGHTS, machine
from bench.compute import count_flops, load, peak_flops, privatize_call, timed_calls

BASE = "fashion-mnist-cinn"
# name -> overrides of the bundled model's config
VARIANTS = {
    "3-3-3, width 64, fc 1 x 128": {"conv_subnet": "3-3-3", "fc_blocks": 1, "fc_width": 128},
    "3-3-3, width 96, fc 1 x 128": {"conv_subnet": "3-3-3", "conv_width": 96, "fc_blocks": 1, "fc_width": 128},
    "3-3-3, width 128, 3 + 3 blocks, fc 1 x 128": {"conv_subnet": "3-3-3", "conv_width": 128,
                                                    "conv_blocks": [3, 3], "fc_blocks": 1, "fc_width": 128},
    "3-3-3, width 64, fc 4 x 512 (as bundled)": {"conv_subnet": "3-3-3"},
}
BATCHES = (1, 256)


def variant(loaded, name: str, overrides: dict, seed: int = 0):
    """A network of the bundled model's config with ``overrides``, random weights (last layers not zero)."""
    from cadp.hub import LoadedModel
    from cadp.models import ImageCINN

    config = dataclasses.replace(loaded.config, name=name, latent_distances=None, **overrides)
    torch.manual_seed(seed)
    model = ImageCINN(config)
    with torch.no_grad():  # zero-initialized last layers would make every coupling the identity
        for parameter in model.parameters():
            if parameter.requires_grad and not parameter.any():
                parameter.normal_(0, 0.01)
    return LoadedModel(model.eval(), config, loaded.folder, f"untrained variant of {loaded.config.name}")


def measure(networks: dict, rounds: int, min_seconds: float, peak_options: dict | None = None) -> dict:
    """Each network's FLOPs per record and, per round, its median call at each batch size; the peak."""
    flops = {name: count_flops(loaded)["privatize_flops_per_record"] for name, loaded in networks.items()}
    peak = peak_flops(list(networks.values()), **(peak_options or {}))
    calls = {(name, batch): privatize_call(loaded, batch)[0] for name, loaded in networks.items() for batch in BATCHES}
    times: dict[tuple, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for (name, batch), call in calls.items():
            seconds = timed_calls(call, torch.device("cpu"), warmup=3, min_calls=5 if batch > 1 else 50,
                                  min_seconds=min_seconds)
            times[name, batch].append(statistics.median(seconds))
    results = []
    for name in networks:
        row = {"network": name, "flops_per_record": flops[name],
               "parameters": sum(p.numel() for p in networks[name].model.parameters() if p.requires_grad)}
        for batch in BATCHES:
            per_round = times[name, batch]
            row[f"batch{batch}_ms_per_round"] = [1e3 * t for t in per_round]
            row[f"batch{batch}_efficiency_per_round"] = [flops[name] * batch / t / peak["peak_flops_per_s"]
                                                         for t in per_round]
        results.append(row)
    return {"peak": peak, "results": results}


def report(measured: dict) -> str:
    peak = measured["peak"]
    lines = [f"Peak {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['peak_source']}).", "",
             "| network | MFLOP per record | batch 1: ms | efficiency | batch 256: ms | efficiency |",
             "|---|---|---|---|---|---|"]
    for row in measured["results"]:
        cells = [row["network"], f"{row['flops_per_record'] / 1e6:.0f}"]
        for batch in BATCHES:
            cells.append(" / ".join(f"{ms:.1f}" for ms in row[f"batch{batch}_ms_per_round"]))
            cells.append(" / ".join(f"{share:.0%}" for share in row[f"batch{batch}_efficiency_per_round"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Each cell lists the rounds in order (median call of each round).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.architectures", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per network, batch and round")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args(argv)
    from cadp.runtime import configure_allocator

    configure_allocator()  # as the app and the CLIs run
    started = datetime.datetime.now(datetime.UTC)
    bundled = load(WEIGHTS / BASE, torch.device("cpu"))
    networks = {f"{BASE} (bundled, 3-1-3, trained)": bundled}
    networks.update({name: variant(bundled, name, overrides) for name, overrides in VARIANTS.items()})
    measured = measure(networks, args.rounds, args.min_seconds)
    text = report(measured)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python -m bench.architectures " + " ".join(argv or sys.argv[1:]),
                                        "started": started.isoformat(timespec="seconds"), "machine": machine(),
                                        "torch_threads": torch.get_num_threads(), **measured}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
