"""Models as Hub-style folders: config.json + model.safetensors + README.md (+ eval.json).

Loading never unpickles: weights come from safetensors only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cadp.errors import ModelError
from cadp.models import ModelConfig, SmallCNN, build_model, config_from_dict, config_to_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CLASSIFIER_NAME = "classifier.safetensors"
CARD_NAME = "README.md"
EVAL_NAME = "eval.json"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass
class LoadedModel:
    """A model, its classifier (images, if the folder has one), and where it came from."""

    model: torch.nn.Module
    config: ModelConfig
    folder: Path
    origin: str
    classifier: SmallCNN | None = None

    @property
    def card(self) -> str:
        path = self.folder / CARD_NAME
        return path.read_text(encoding="utf-8") if path.exists() else ""

    @property
    def evaluation(self) -> dict:
        return read_eval(self.folder)


def save_model(model: torch.nn.Module, folder: Path | str, *, card: str | None = None,
               classifier: SmallCNN | None = None, half_precision: bool = False) -> Path:
    """Write config.json, model.safetensors (and classifier, card, empty eval.json) to folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config_to_dict(model.config), indent=2) + "\n")
    save_file(_state(model, half_precision), str(folder / WEIGHTS_NAME))
    if classifier is not None:
        save_file(_state(classifier, half_precision), str(folder / CLASSIFIER_NAME))
    if card is not None:
        (folder / CARD_NAME).write_text(card, encoding="utf-8")
    if not (folder / EVAL_NAME).exists():
        write_eval(folder, {})
    return folder


def _state(module: torch.nn.Module, half_precision: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half_precision and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor
    return state


def read_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG_NAME
    if not path.exists():
        raise ModelError(f"{folder} has no {CONFIG_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path} is not valid JSON: {error}") from None
    return config_from_dict(data)


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    if not path.exists():
        pickles = sorted(p.name for p in path.parent.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        hint = f" (found {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
        raise ModelError(f"{path.parent} has no {path.name}{hint}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{path.name} is not a valid safetensors file: {error}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(f"{path.name} does not match config.json: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ModelError(f"{path.name}: tensor {key} has shape {tuple(tensor.shape)}, "
                             f"config.json implies {tuple(expected[key].shape)}")
        if not torch.isfinite(tensor.float()).all():
            raise ModelError(f"{path.name}: tensor {key} holds NaN or infinite values")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def load_folder(folder: Path | str, origin: str | None = None) -> LoadedModel:
    """Load a model folder from disk (safetensors only), in eval mode on the CPU."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    config = read_config(folder)
    model = build_model(config)
    _load_weights(model, folder / WEIGHTS_NAME)
    model.eval()
    classifier = None
    if config.kind == "image" and (folder / CLASSIFIER_NAME).exists():
        classifier = SmallCNN(config.num_classes, config.channels, config.image_size)
        _load_weights(classifier, folder / CLASSIFIER_NAME)
        classifier.eval()
    return LoadedModel(model, config, folder, origin or f"folder {folder}", classifier)


def read_eval(folder: Path) -> dict:
    path = Path(folder) / EVAL_NAME
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ModelError(f"{path} is not valid JSON: {error}") from None


def write_eval(folder: Path, results: dict) -> None:
    (Path(folder) / EVAL_NAME).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def update_eval(folder: Path, section: str, value) -> dict:
    """Set one top-level section of eval.json, keeping the others."""
    results = read_eval(folder)
    results[section] = value
    write_eval(folder, results)
    return results


def bundled_models() -> list[str]:
    """Names of the model folders shipped in weights/."""
    if not BUNDLED_DIR.exists():
        return []
    return sorted(d.name for d in BUNDLED_DIR.iterdir() if (d / CONFIG_NAME).exists())
