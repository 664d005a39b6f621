"""One TorchScript function: a 2-D convolution by oneDNN with weights reordered once (``cadp.models._ConvPacks``).

Its own module because TorchScript reads the function's source and annotations, which
``from __future__ import annotations`` (used elsewhere in ``cadp``) would turn into strings.
"""

import torch


def packed_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: list[int],
                  stride: list[int], relu: bool) -> torch.Tensor:
    """``conv2d(x, weight, bias)`` (then ReLU if ``relu``), ``weight`` from ``mkldnn_reorder_conv2d_weight``."""
    no_scalars = torch.jit.annotate(list[int | float | complex | None], [])
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, [1, 1], 1,
                                                   "relu" if relu else "none", no_scalars, None)
