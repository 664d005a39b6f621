"""Class-conditional samples side by side: ``python -m bench.samples FOLDER [FOLDER ...] --out FILE.png``.

For each image model folder, 8 samples per class at temperature 0.7 (rows: classes), decoded
from the same seeded latents, so that two networks of one dataset can be compared by eye (the
eighth and ninth rounds of BENCHMARKS.md: a retrained network against the bundled one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PER_CLASS = 8
TEMPERATURE = 0.7


def sample_grid(folder: Path, seed: int = 0) -> np.ndarray:
    """(classes x 28, PER_CLASS x 28) uint8 grid of one model's samples (one channel)."""
    from cadp.hub import load_folder

    loaded = load_folder(folder)
    config = loaded.config
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(config.num_classes).repeat_interleave(PER_CLASS)
    latents = TEMPERATURE * torch.randn(len(labels), config.latent_dim, generator=generator)
    with torch.inference_mode():
        pixels = loaded.model.eval().decode(latents, labels).clamp(0, 255).round().to(torch.uint8).numpy()
    size = config.image_size
    pixels = pixels[:, 0].reshape(config.num_classes, PER_CLASS, size, size)
    return pixels.transpose(0, 2, 1, 3).reshape(config.num_classes * size, PER_CLASS * size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.samples", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    grids = [sample_grid(folder) for folder in args.folders]
    gap = np.full((grids[0].shape[0], 8), 128, np.uint8)
    joined = np.concatenate([part for grid in grids for part in (grid, gap)][:-1], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(joined).resize((joined.shape[1] * 2, joined.shape[0] * 2), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}: {', '.join(str(f) for f in args.folders)} (left to right)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
