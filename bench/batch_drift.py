"""How much the network's own arithmetic moves with the batch size: ``python -m bench.batch_drift``.

Each bundled model encodes the same records alone (batch 1) and in batches of 4, 5, 64 and 256; the largest
absolute difference of a latent coordinate from batch 1 is printed per batch size. The mechanisms clip per
record and draw each record's noise by its place, so this is the only way a batch changes a record's release
(README, "What the guarantee does and does not say").
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from pathlib import Path

import torch

BATCHES = (4, 5, 64, 256)
RECORDS = 256


def records(loaded) -> tuple:
    """The first RECORDS test records of the model's dataset, as privatize reads them."""
    from cadp.data import load_image_dataset, load_table
    from cadp.train import split_table

    config = loaded.config
    if config.kind == "image":
        data = load_image_dataset(config.dataset, "test")
        return data.images[:RECORDS].float(), data.labels[:RECORDS]
    _, test = split_table(load_table(config.dataset).frame, config.permutation_seed)
    frame = test.head(RECORDS).reset_index(drop=True)
    encoder, conditions = loaded.model.data_encoder, loaded.model.condition_encoder
    return encoder.transform(frame), conditions.transform(frame)


@torch.inference_mode()
def drift(folder: Path) -> dict[int, float]:
    """Largest |latent at batch b - latent at batch 1| over the records, per batch size b."""
    from cadp.hub import load_folder

    loaded = load_folder(folder)
    inputs, conditions = records(loaded)
    count = len(inputs)
    alone = torch.cat([loaded.model.encode(inputs[i:i + 1], conditions[i:i + 1]) for i in range(count)])
    result = {}
    for batch in BATCHES:
        together = torch.cat([loaded.model.encode(inputs[i:i + batch], conditions[i:i + batch])
                              for i in range(0, count, batch)])
        result[batch] = float((together - alone).abs().max())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="model folders (default: every bundled model)")
    args = parser.parse_args(argv)
    from cadp.hub import BUNDLED_DIR, model_folders

    folders = args.folders or [BUNDLED_DIR / name for name in model_folders(BUNDLED_DIR)]
    from datetime import datetime

    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; {RECORDS} test records per model")
    print("| model | " + " | ".join(f"batch {batch}" for batch in BATCHES) + " |")
    print("|---|" + "---|" * len(BATCHES))
    for folder in folders:
        values = drift(folder)
        print(f"| {folder.name} | " + " | ".join(f"{values[batch]:.1e}" for batch in BATCHES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
