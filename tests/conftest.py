"""Shared fixtures: small models built in a second, and the bundled weights."""

from pathlib import Path

import pytest
import torch

from cadp.models import ImageCINN, ImageModelConfig

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"


def perturbed(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Give every trainable weight a random nudge, so the network is far from the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture
def tiny_image_model() -> ImageCINN:
    config = ImageModelConfig(name="tiny", dataset="mnist", class_names=[str(i) for i in range(10)],
                              conv_width=8, conv_blocks=[2, 2], fc_blocks=2, fc_width=32)
    return perturbed(ImageCINN(config))


def bundled(name: str) -> Path:
    folder = WEIGHTS / name
    if not (folder / "model.safetensors").exists():
        pytest.fail(f"bundled model {folder} is missing: train it with python -m cadp.train (see README)")
    return folder


# Single records through small networks: one intra-op thread is much faster than two on a
# busy 2-core machine (threads wait on each other), and results do not depend on it.
torch.set_num_threads(1)
