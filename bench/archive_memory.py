"""Peak memory and wall time of a CSV archive run: ``python -m bench.archive_memory``.

A CSV's released rows are held until the end of the run (they are written in an order drawn at random), so a
run's memory grows with its rows. For each row count, this writes a CSV of that many distinct rows in the
columns of a bundled table model (the model's public table, resampled, with two columns jittered so that rows
rarely repeat) to a temporary folder, runs ``python -m cadp.privatize`` on it as a user would, and prints the
run's peak resident memory (the child's ``ru_maxrss``) and wall time; the growth per million rows is the
difference between the largest and the smallest count.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
COUNTS = (200_000, 1_000_000)


def write_rows(model: Path, count: int, target: Path) -> None:
    """``count`` rows of the model's columns, resampled from its public table and jittered (few repeats)."""
    from cadp.data import load_table
    from cadp.hub import load_folder

    config = load_folder(model).config
    table = load_table(config.dataset).frame
    rng = np.random.default_rng(0)
    rows = table.sample(n=count, replace=True, random_state=0).reset_index(drop=True)
    numeric = [spec["name"] for spec in config.data_encoder["columns"] if spec["kind"] == "numeric"]
    for name in numeric[:2]:
        spread = float(rows[name].std()) / 20
        rows[name] = (rows[name] + rng.normal(0, spread, count)).round(3)
    rows[[*config.data_columns, *config.condition_columns]].to_csv(target, index=False)


def run(model: Path, source: Path, output: Path) -> tuple[float, float, int]:
    """(peak resident MiB, wall seconds, exit status) of one archive run in a child process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cadp.privatize", "--model", str(model), "--mechanism", "laplace",
                           "--epsilon", "5", str(source), str(output)], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - started
    # the largest resident set of any child waited for so far: run the counts from small to large
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    return peak, seconds, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "weights" / "diabetes-cinn")
    parser.add_argument("--rows", type=int, nargs="+", default=list(COUNTS), help="row counts, smallest first")
    args = parser.parse_args(argv)
    counts = sorted(args.rows)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; python -m cadp.privatize --mechanism laplace --epsilon 5 on "
          f"{args.model.name}'s columns; peak resident memory of the run (ru_maxrss)")
    print("| rows | peak MiB | wall s | exit |")
    print("|---|---|---|---|")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in counts:
            source = Path(folder) / f"rows-{count}.csv"
            write_rows(args.model, count, source)
            results[count] = run(args.model, source, Path(folder) / f"out-{count}")
            source.unlink()
            peak, seconds, code = results[count]
            print(f"| {count:,} | {peak:,.0f} | {seconds:.1f} | {code} |", flush=True)
    if len(counts) > 1 and all(code == 0 for _, _, code in results.values()):
        low, high = counts[0], counts[-1]
        growth = (results[high][0] - results[low][0]) / (high - low) * 1e6
        print(f"\nGrowth: {growth:,.0f} MiB per million rows ({low:,} -> {high:,} rows)")
    return 0 if all(code == 0 for _, _, code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
