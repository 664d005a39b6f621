"""Pixel-space baselines: DP-Pix noise scale, blur and mosaic."""

from __future__ import annotations

import pytest
import torch

from cadp.baselines import blur, dp_pix, dp_pix_scale, mosaic, pixelate
from cadp.errors import InputError


@pytest.mark.parametrize("epsilon,cell,m", [(0.5, 4, 1), (1.0, 4, 1), (10.0, 2, 3), (100.0, 7, 1)])
def test_dp_pix_scale_is_255_m_over_b_squared_epsilon(epsilon, cell, m):
    assert dp_pix_scale(epsilon, cell, m) == pytest.approx(255.0 * m / (cell ** 2 * epsilon))


def test_dp_pix_noise_on_cell_means_has_the_laplace_scale():
    # mid-grey images so that clamping to [0, 255] never bites; Laplace(b) has mean |x| = b
    pixels = torch.full((400, 1, 28, 28), 127.5)
    epsilon, cell = 2.0, 4
    released = dp_pix(pixels, epsilon, cell=cell, generator=torch.Generator().manual_seed(0))
    cells = released[:, :, ::cell, ::cell] - 127.5
    assert cells.abs().mean().item() == pytest.approx(dp_pix_scale(epsilon, cell), rel=0.03)
    # every b x b cell is one value: the noise is added per cell, not per pixel
    assert torch.allclose(released, pixelate(released, cell), atol=1e-3)


def test_dp_pix_is_per_image_and_refuses_bad_parameters():
    pixels = torch.rand(3, 1, 28, 28) * 255
    first = dp_pix(pixels, 1.0, generator=torch.Generator().manual_seed(5))
    alone = dp_pix(pixels[:1], 1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first[:1], alone)
    with pytest.raises(InputError, match="epsilon"):
        dp_pix(pixels, 0.0)
    with pytest.raises(InputError, match="cell"):
        dp_pix(pixels, 1.0, cell=5)


def test_blur_and_mosaic_preserve_flat_images_and_smooth_edges():
    flat = torch.full((2, 1, 28, 28), 80.0)
    assert torch.allclose(blur(flat, 2.0), flat, atol=1e-4)
    assert torch.allclose(mosaic(flat, 7), flat)
    edge = torch.zeros(1, 1, 28, 28)
    edge[..., 14:] = 255
    assert 0 < blur(edge, 2.0)[0, 0, 0, 13] < 255
    blocks = mosaic(edge, 4)
    assert blocks[0, 0, 0, :4].unique().numel() == 1
    assert mosaic(torch.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
