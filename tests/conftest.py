"""Shared fixtures: small models built in a second, and the bundled weights."""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from cadp.models import ImageCINN, ImageModelConfig
from cadp.runtime import configure_allocator

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


@pytest.fixture(scope="session")
def digit_model(tmp_path_factory) -> Path:
    """A saved untrained tiny image model of ten digit classes (the batch CLI's tests read it from its folder)."""
    from cadp.hub import save_model

    torch.manual_seed(0)
    config = ImageModelConfig(name="d", dataset="d", class_names=[str(digit) for digit in range(10)], conv_width=4,
                              fc_width=8, conv_blocks=[1, 1], fc_blocks=1)
    return save_model(ImageCINN(config), tmp_path_factory.mktemp("models") / "digits")


def bundled(name: str) -> Path:
    folder = WEIGHTS / name
    if not (folder / "model.safetensors").exists():
        pytest.fail(f"bundled model {folder} is missing: train it with python -m cadp.train (see README)")
    return folder


# Single records through small networks: one intra-op thread is much faster than two on a
# busy 2-core machine (threads wait on each other), and results do not depend on it.
torch.set_num_threads(1)
configure_allocator()  # as the app and the CLIs run (cadp.runtime)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A weights folder of tiny models (built in about a second) for the app tests."""
    from tests import app_helpers

    return app_helpers.build_models(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def weights(tiny_weights):
    """The app reads its models from the tiny ones while the module that asks for this runs."""
    with weights_dir(tiny_weights):
        yield tiny_weights


@contextmanager
def weights_dir(folder: Path):
    """Point the app (CADP_WEIGHTS_DIR) at ``folder`` for the duration of the block."""
    previous = os.environ.get("CADP_WEIGHTS_DIR")
    os.environ["CADP_WEIGHTS_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("CADP_WEIGHTS_DIR", None)
        else:
            os.environ["CADP_WEIGHTS_DIR"] = previous


@pytest.fixture
def media(monkeypatch) -> dict[str, bytes]:
    """Bytes of every media file (downloads included) the app hands to Streamlit, by file id."""
    files: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        files[file_id] = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return files
