"""Pixel-space baselines compared with CADP on the same images.

- ``dp_pix``: DP-Pix (Fan, DBSec 2018): average b x b cells, add Laplace noise of
  scale ``255 * m * C / (b^2 * epsilon)`` to every cell mean, per image (C channels:
  a pixel that changes moves one cell mean in each). It is epsilon-DP for images
  that differ in at most ``m`` pixels (by any amount, in every channel); it does
  not protect the image as a whole.
- ``blur`` and ``mosaic``: the non-private obfuscations of the CADP paper's
  figure 1. They carry no guarantee; label them "not private" wherever shown.

All functions take and return pixel tensors (N, C, H, W) on [0, 255].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cadp.errors import InputError
from cadp.mechanisms import _check_positive, laplace_noise

DP_PIX_CELL = 4  # b: 28 / 4 = 7 cells per side
DP_PIX_M = 1  # m: number of pixels in which neighbouring images may differ
BLUR_SIGMAS = (1.0, 2.0, 3.0, 4.0)
MOSAIC_CELLS = (2, 4, 7, 14)
NOT_PRIVATE = "not private"


def _check_pixels(pixels) -> torch.Tensor:
    pixels = torch.as_tensor(pixels).float()
    if pixels.dim() != 4:
        raise InputError(f"images must have shape (batch, channels, height, width), got {tuple(pixels.shape)}")
    return pixels


def _check_cell(cell: int, pixels: torch.Tensor, parameter: str) -> int:
    if not isinstance(cell, int) or cell < 1 or pixels.shape[-1] % cell or pixels.shape[-2] % cell:
        raise InputError(f"{parameter} must be a positive integer that divides the image size "
                         f"{tuple(pixels.shape[-2:])}, got {cell!r}")
    return cell


def dp_pix_scale(epsilon: float, cell: int = DP_PIX_CELL, m: int = DP_PIX_M, channels: int = 1) -> float:
    """Laplace scale of DP-Pix: the L1 sensitivity 255 * m * C / b^2 of the cell means (a pixel of C channels moves
    C cell means), divided by epsilon."""
    epsilon = _check_positive(epsilon, "epsilon")
    return 255.0 * m * channels / (cell * cell * epsilon)


def pixelate(pixels, cell: int) -> torch.Tensor:
    """Each b x b cell replaced by its mean (the same image size)."""
    pixels = _check_pixels(pixels)
    cell = _check_cell(cell, pixels, "cell")
    means = F.avg_pool2d(pixels, cell)
    return means.repeat_interleave(cell, dim=-2).repeat_interleave(cell, dim=-1)


def dp_pix(pixels, epsilon: float, *, cell: int = DP_PIX_CELL, m: int = DP_PIX_M,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """DP-Pix release of each image: noisy b x b cell means, clamped to [0, 255]."""
    pixels = _check_pixels(pixels)
    cell = _check_cell(cell, pixels, "cell")
    if not isinstance(m, int) or m < 1:
        raise InputError(f"m must be a positive integer (pixels that may differ), got {m!r}")
    scale = dp_pix_scale(epsilon, cell, m, channels=pixels.shape[1])
    means = F.avg_pool2d(pixels, cell)
    noisy = (means.double() + laplace_noise(means.shape, scale, generator, means.device)).to(means.dtype)
    return noisy.repeat_interleave(cell, dim=-2).repeat_interleave(cell, dim=-1).clamp(0, 255)


def blur(pixels, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (not private)."""
    pixels = _check_pixels(pixels)
    sigma = _check_positive(sigma, "sigma")
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = pixels.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(pixels, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(padded, horizontal, groups=channels)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), vertical, groups=channels)
    return out.clamp(0, 255)


def mosaic(pixels, cell: int) -> torch.Tensor:
    """Pixelation with b x b cells (not private)."""
    return pixelate(pixels, cell)
