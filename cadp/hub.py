"""Models as Hub-style folders: config.json + model.safetensors + README.md (+ eval.json).

A model loads the same from a local folder or a Hugging Face Hub repository
(``load_model``) and is published with ``push_model``. Loading never unpickles:
weights come from safetensors only.

    python -m cadp.hub load cadp/mnist-cinn@v0.1.0
    python -m cadp.hub push weights/mnist-cinn cadp/mnist-cinn --dry-run
    python -m cadp.hub space owner/cadp --dry-run      # the app itself, as a Hugging Face Space
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cadp.compare import counted, plural
from cadp.errors import CadpError, InputError, ModelError
from cadp.models import (
    ModelConfig,
    SmallCNN,
    build_model,
    check_permutations,
    config_from_dict,
    config_to_dict,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CLASSIFIER_NAME = "classifier.safetensors"
CARD_NAME = "README.md"
EVAL_NAME = "eval.json"
REPORT_NAME = "report.html"  # plotly curves of eval.json, drawn by cadp.evaluate
# written by cadp.train before it writes a model's files, removed once all are written: a folder that holds it
# holds a mix of two models' files (a run stopped while writing) and is refused
WRITING_NAME = ".cadp-writing"
CHECKPOINT_NAME = "checkpoint/training.safetensors"  # cadp.train's checkpoint, inside the output folder
REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DIR = REPO_ROOT / "weights"
SPACE_SDK = "docker"  # README.md's front matter declares a Docker Space

# The files of a model repo that are downloaded; anything else (pickles included) never is.
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, CLASSIFIER_NAME, CARD_NAME, EVAL_NAME)
REQUIRED_HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# What a model may cost before anything is allocated or downloaded: the app's Hub box is open to every visitor of
# a hosted Space, and a config.json can ask for any size (the bundled models have up to 1.6 million parameters)
MAX_PARAMETERS = 100_000_000  # 400 MB as float32
MAX_FILE_BYTES = 16 * 1024 * 1024  # config.json, README.md, eval.json, classifier.safetensors
MAX_CONFIG_DIGITS = 100  # a config.json number's digits: Python refuses to read an integer of over 4,300 at all


def max_weights_bytes() -> int:
    return 4 * MAX_PARAMETERS + MAX_FILE_BYTES  # float32 tensors and a generous header

# Hub repos of the bundled models -> their folder in weights/: used when the Hub cannot be reached.
BUNDLED_REPOS: dict[str, str] = {
    "cadp/mnist-cinn": "mnist-cinn",
    "cadp/fashion-mnist-cinn": "fashion-mnist-cinn",
    "cadp/diabetes-cinn": "diabetes-cinn",
    "cadp/heart-cinn": "heart-cinn",
}
# The revision a bundled repo id loads by default, so that it matches the bundled copy
# (the tag push_model(..., tag=...) creates when these folders are published).
BUNDLED_REVISIONS: dict[str, str] = {repo_id: "v0.1.0" for repo_id in BUNDLED_REPOS}


@dataclass
class LoadedModel:
    """A model, its classifier (images, if the folder has one), and where it came from."""

    model: torch.nn.Module
    config: ModelConfig
    folder: Path
    origin: str
    classifier: SmallCNN | None = None
    commit: str | None = None  # the Hub commit the files came from (None for local folders)
    repo_id: str | None = None  # the Hub repo they came from (None for local folders)
    stamp: tuple | None = None  # the app's: its folder's files as they were when loaded (ui.folder_stamp)
    loaded_at: float | None = None  # the app's: when a Hub model was loaded (ui's clock), to ask the Hub again

    @property
    def card(self) -> str:
        path = self.folder / CARD_NAME
        return path.read_text(encoding="utf-8") if path.exists() else ""

    @property
    def files_of(self) -> str | None:
        """How errors name this model's files: by Hub repo and commit for a download, None (by path) otherwise."""
        return hub_files(self.repo_id, self.commit) if self.repo_id is not None and self.commit else None

    @property
    def evaluation(self) -> dict:
        return read_eval(self.folder, self.files_of)

    def terms_line(self) -> str:
        """Which model made a release, as its shared terms say it: a bundled model (or the Hub repo it is published
        in) by name; any other only by its weights' SHA-256, which tells any copy of the same weights: a local
        folder's name (a model is named after its folder by default) or a private Hub repo's may name a person, a
        place or a project."""
        import hashlib

        if self.origin.startswith("bundled fallback"):  # a Hub id asked for, the Hub not reached
            named = (f"the model {self.config.name}, from the copy bundled with CADP (weights/{self.folder.name}), "
                     "the Hub not being reached")
        elif self.origin.startswith("bundled") or self.folder.resolve() == (BUNDLED_DIR / self.folder.name).resolve():
            named = f"the model {self.config.name}, from the models bundled with CADP (weights/{self.folder.name})"
        elif self.repo_id in BUNDLED_REPOS:
            named = f"the model {self.config.name}, from the Hub repo {self.repo_id} at commit {self.commit}"
        else:
            named = (f"a model from {'a Hub repo' if self.repo_id is not None else 'a local folder'} (not named "
                     "here: its name may name a person, a place or a private project)")
        try:
            with (self.folder / WEIGHTS_NAME).open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError:
            return f"Made with {named}."
        return f"Made with {named}; its weights' (model.safetensors) SHA-256 is {digest}."


def save_model(model: torch.nn.Module, folder: Path | str, *, card: str | None = None,
               classifier: SmallCNN | None = None, half_precision: bool = False, overwrite: bool = False) -> Path:
    """Write config.json, model.safetensors (and classifier, card, empty eval.json) to folder.

    A folder that already holds a model (config.json or model.safetensors) is refused unless ``overwrite``: its
    files would otherwise be mixed with the new ones. Overwriting first removes what described the old weights:
    eval.json (an empty one is written) and report.html always, classifier.safetensors unless ``classifier`` is
    given (the old model's may know other classes), and README.md unless ``card`` is given (its facts and results
    are the old model's; the folder then has no card). Other files (a training checkpoint) are left as they are.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder; choose a folder for the model")
    try:  # before anything on disk changes: a config JSON cannot hold leaves no half-written folder behind
        config_text = json.dumps(config_to_dict(model.config), indent=2) + "\n"
    except (TypeError, ValueError) as error:
        raise InputError(f"the model's config cannot be written as JSON ({error}): a category of one of its "
                         "columns is neither text, a number nor a boolean; fit it on a table whose categories "
                         "are") from None
    if (folder / CONFIG_NAME).exists() or (folder / WEIGHTS_NAME).exists():
        if not overwrite:
            raise InputError(f"{folder} already holds a model: choose another folder, or pass overwrite=True to "
                             "replace it (its eval.json, report.html, classifier and card go with the old weights)")
        stale = [EVAL_NAME, REPORT_NAME] + ([] if classifier is not None else [CLASSIFIER_NAME]) \
            + ([] if card is not None else [CARD_NAME])
        for name in stale:
            (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    _save_weights(weights_state(model, half_precision), folder / WEIGHTS_NAME)
    distances = model.config.latent_distances
    if distances is not None:  # the config says which weights they were measured with
        config, digest = config_to_dict(model.config), weights_digest(folder)
        recorded = getattr(distances, WEIGHTS_KEY, None)
        # measured fresh (none recorded): these weights'; recorded for others (a loaded model changed since, or
        # saved in half precision): another network's, not written as these weights'
        config["latent_distances"] = {**config["latent_distances"], WEIGHTS_KEY: digest} \
            if not isinstance(recorded, str) or recorded.lower() == digest else None
        config_text = json.dumps(config, indent=2) + "\n"
    (folder / CONFIG_NAME).write_text(config_text)
    if classifier is not None:
        _save_weights(weights_state(classifier, half_precision), folder / CLASSIFIER_NAME)
    if card is not None:
        (folder / CARD_NAME).write_text(card, encoding="utf-8")
    if not (folder / EVAL_NAME).exists():
        write_eval(folder, {})
    return folder


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """save_file, with the permissions the folder's other files get (0666 less the umask): safetensors creates
    its files owner-only (0600), which an app running as another user (the Docker image's) cannot read."""
    save_file(state, str(path))
    try:
        os.chmod(path, 0o666 & ~_umask())
    except OSError:  # a file system without Unix permissions (FAT, some network shares): its own rules apply
        pass


def _umask() -> int:
    """The process's umask, read without changing it for other threads (Linux: /proc), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def weights_state(module: torch.nn.Module, half_precision: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if half_precision and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor
    return state


def file_stamp(path: Path | None) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, None where there is none (or no path): whether it changed."""
    try:
        status = path.stat()
    except (AttributeError, OSError):
        return None
    return status.st_size, status.st_mtime_ns


def hub_files(repo_id: str, commit: str) -> str:
    """How errors name a Hub model's files ("config.json of owner/name at commit 0123456789ab"): its folder is the
    server's Hugging Face cache, a path the app's visitors must not see."""
    return f"{repo_id} at commit {commit[:12]}"


def _named(path: Path, files_of: str | None) -> str:
    """A model file as errors name it: by ``files_of`` (``hub_files``) for a Hub download, else by its path."""
    return f"{path.name} of {files_of}" if files_of else str(path)


def read_config(folder: Path, files_of: str | None = None) -> ModelConfig:
    """The folder's config.json, validated; ``files_of``: a Hub download's repo and commit (``hub_files``), named in
    errors instead of the folder's path."""
    path = folder / CONFIG_NAME
    if not path.exists():
        raise ModelError(f"{files_of or folder} has no {CONFIG_NAME}")

    return config_from_dict(_json_file(path, files_of, "a model config"))


def _json_file(path: Path, files_of: str | None, what: str, constants: bool = True):
    """A model folder's JSON file (anyone's, from the Hub), its errors as ModelErrors naming it (``_named``): whole
    numbers of at most MAX_CONFIG_DIGITS digits (int() itself refuses over 4,300, in words about sys settings);
    ``constants=False`` refuses NaN and Infinity too (not JSON; a page would draw them as numbers)."""
    def whole_number(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_CONFIG_DIGITS:
            raise ModelError(f"{_named(path, files_of)} holds a whole number of {len(digits.lstrip('-')):,} digits; "
                             f"{what}'s numbers have at most {MAX_CONFIG_DIGITS}: not {what}")
        return int(digits)

    def no_constant(name: str):
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_int=whole_number,
                          **({} if constants else {"parse_constant": no_constant}))
    except ModelError:  # (whole_number's, a ValueError too)
        raise
    except ValueError as error:  # (JSONDecodeError and UnicodeDecodeError are ValueErrors)
        raise ModelError(f"{_named(path, files_of)} is not valid JSON: {str(error)[:200]}") from None
    except RecursionError:  # [[[[...]]]] nested beyond what the parser can take
        raise ModelError(f"{_named(path, files_of)} is nested too deeply to be {what}") from None


def _built(config: ModelConfig, named: str) -> torch.nn.Module:
    """build_model, with what a config.json from anyone (a Hub repo) can make it raise said as a ModelError."""
    try:
        return build_model(config)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as error:
        raise ModelError(f"{named} describes a network that cannot be built ({type(error).__name__}: "
                         f"{str(error)[:200]})") from None


def _load_weights(module: torch.nn.Module, path: Path, files_of: str | None = None) -> None:
    if not path.exists():
        pickles = sorted(p.name for p in path.parent.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
        hint = f" (found {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
        raise ModelError(f"{files_of or path.parent} has no {path.name}{hint}")
    expected_bytes = sum(4 * t.numel() for t in module.state_dict().values())
    if path.stat().st_size > expected_bytes + MAX_FILE_BYTES:  # read before it is compared with config.json
        raise ModelError(f"{path.name} holds {path.stat().st_size:,} bytes, far more than the {expected_bytes:,} "
                         "its config.json implies: not loaded")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:  # (an OSError's words hold the path: not shown)
        detail = (error.strerror or type(error).__name__) if isinstance(error, OSError) else error
        raise ModelError(f"{path.name} is not a valid safetensors file: {detail}") from None
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
    check_permutations(module, path.name)  # they override config.json's permutation_seed


def load_folder(folder: Path | str, origin: str | None = None, files_of: str | None = None) -> LoadedModel:
    """Load a model folder from disk (safetensors only), in eval mode on the CPU. ``files_of``: a Hub download's
    repo and commit (``hub_files``), named in errors instead of the folder's path."""
    folder = Path(folder)
    if folder.is_file():
        raise ModelError(f"{folder} is a file; a model is a folder holding config.json and model.safetensors")
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    if (folder / WRITING_NAME).exists():
        raise ModelError(f"{_named(folder, files_of)}: cadp.train stopped while writing this model (it left "
                         f"{WRITING_NAME}), so its files may be a mix of this model's and an earlier one's: run the "
                         "training command again, with --resume for an image model whose checkpoint is in the "
                         "folder (it writes the model whole), else with --overwrite (it trains again)")
    if not (folder / CONFIG_NAME).exists() and (folder / CHECKPOINT_NAME).exists():
        raise ModelError(f"{_named(folder, files_of)} holds the checkpoint of a cadp.train run that has not "
                         "finished, and no model yet: run the training command again with --resume to finish it")
    config = read_config(folder, files_of)
    config_named = _named(folder / CONFIG_NAME, files_of)
    _check_model_size(config, config_named)
    with torch.random.fork_rng(devices=[]):  # the initial weights (replaced next) leave the caller's RNG as it was
        model = _built(config, config_named)
        classifier = SmallCNN(config.num_classes, config.channels, config.image_size) \
            if config.kind == "image" and (folder / CLASSIFIER_NAME).exists() else None
    _load_weights(model, folder / WEIGHTS_NAME, files_of)
    leave_out_other_distances(config, folder)
    model.eval()
    if classifier is not None:
        _load_weights(classifier, folder / CLASSIFIER_NAME, files_of)
        classifier.eval()
    # a folder outside weights/ (a copy of a Hub snapshot, a deployer's own models) says what it was trained on in
    # its config.json alone: the terms say whose word it is (privatize); a Hub download says its publisher's
    model.config_states_training = not bundled_folder(folder) and bundled_twin(folder) is None  # (a copy: known)
    return LoadedModel(model, config, folder, origin or f"folder {_display_path(folder)}", classifier)


def bundled_folder(folder: Path | str) -> bool:
    """Whether ``folder`` is one of the model folders bundled with CADP (in its weights/)."""
    try:
        return Path(folder).resolve().parent == BUNDLED_DIR.resolve()
    except OSError:
        return False


def _check_model_size(config: ModelConfig, config_named: str) -> None:
    """Refuse a config.json that asks for more than MAX_PARAMETERS, counted on the meta device (no memory)."""
    with torch.device("meta"):
        count = sum(p.numel() for p in _built(config, config_named).parameters())
    if count > MAX_PARAMETERS:
        raise ModelError(f"config.json asks for a network of {count:,} parameters; this app loads at most "
                         f"{MAX_PARAMETERS:,} (the bundled models have up to 1.6 million)")


def _display_path(folder: Path) -> str:
    """A folder as a user would type it: relative to the project when inside it."""
    try:
        return Path(folder).resolve().relative_to(BUNDLED_DIR.parent).as_posix()
    except ValueError:
        return str(folder)


def read_eval(folder: Path, files_of: str | None = None) -> dict:
    """The folder's eval.json ({} where it has none); ``files_of`` as for ``read_config``."""
    path = Path(folder) / EVAL_NAME
    if not path.exists():
        return {}
    evaluation = _json_file(path, files_of, "a model's evaluation", constants=False)
    if not isinstance(evaluation, dict):
        raise ModelError(f"{_named(path, files_of)} is not valid: it must hold a JSON object (sections by name)")
    return evaluation


def _finite_or_null(value):
    """NaN and infinities as None: strict JSON has no literal for them (Python's NaN breaks other readers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def write_text_whole(path: Path | str, text: str) -> None:
    """Replace ``path`` by ``text`` whole: written beside it first, then renamed over it, so that a full disk or
    a stop while writing leaves the old file (eval.json with every section of earlier runs), never half of it."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    try:
        part.write_text(text, encoding="utf-8")
        os.replace(part, path)
    except BaseException:  # (a disk full, or Ctrl-C): no .part left beside the file
        part.unlink(missing_ok=True)
        raise


def write_eval(folder: Path, results: dict) -> None:
    text = json.dumps(_finite_or_null(results), indent=2, sort_keys=True, allow_nan=False)
    write_text_whole(Path(folder) / EVAL_NAME, text + "\n")


def update_eval(folder: Path, section: str, value) -> dict:
    """Set one top-level section of eval.json, keeping the others. A section that is an object records the
    SHA-256 of the weights it was measured on (``WEIGHTS_KEY``): weights replaced later (a Hub repo's new push, a
    copied file) make its numbers another network's, which ``current_eval`` tells."""
    results = read_eval(folder)
    digest = weights_digest(folder)
    if isinstance(value, dict) and digest is not None:  # (a folder without weights yet records none)
        value = {**value, WEIGHTS_KEY: digest}
    results[section] = value
    write_eval(folder, results)
    return results


WEIGHTS_KEY = "weights_sha256"  # in each eval.json section: the model.safetensors it was measured on
# eval.json's sections that cadp.evaluate writes, and the command that writes each
EVALUATE_COMMANDS = {"bpd": "bpd", "utility": "utility", "audit": "audit", "central": "dpsgd"}


def weights_digest(folder: Path | str) -> str | None:
    """The SHA-256 (hex) of the folder's model.safetensors, None where it has none."""
    weights = Path(folder) / WEIGHTS_NAME
    stamp = file_stamp(weights)
    return None if stamp is None else _file_digest(str(weights), stamp)




def leave_out_other_distances(config, folder: Path | str) -> bool:
    """Drop ``config``'s latent distances where they record other weights than the folder's model.safetensors
    (their d_typ, d_nn and median norm are another network's); ``config.distances_of_other_weights`` then says so
    (``DISTANCES_OF_OTHER_WEIGHTS``). Distances that record none are kept: nothing tells. True where dropped."""
    recorded = getattr(config.latent_distances, WEIGHTS_KEY, None)
    if not isinstance(recorded, str) or recorded.lower() == weights_digest(folder):
        return False
    config.latent_distances = None
    config.distances_of_other_weights = True  # (not a field: never written to config.json)
    return True


def other_weights_sections(folder: Path | str, evaluation: dict) -> list[str]:
    """The sections of ``evaluation`` (the folder's eval.json) that record other weights than the folder's
    model.safetensors: their numbers are another network's. A section that records none (written before CADP
    recorded it, or by anyone else) is not counted: nothing tells."""
    recorded = {name: section.get(WEIGHTS_KEY).lower() for name, section in evaluation.items()
                if isinstance(section, dict) and isinstance(section.get(WEIGHTS_KEY), str)
                and _SHA256.fullmatch(section.get(WEIGHTS_KEY))}  # anything else is no record (anyone's file)
    if not recorded:
        return []
    digest = weights_digest(folder)
    if digest is None:  # an eval.json without its weights (copied apart): nothing to compare with
        return []
    return sorted(name for name, value in recorded.items() if value != digest)


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def current_eval(folder: Path | str, files_of: str | None = None) -> tuple[dict, list[str]]:
    """The folder's eval.json without the sections measured on other weights (``other_weights_sections``), and
    those sections' names."""
    evaluation = read_eval(Path(folder), files_of)
    other = other_weights_sections(folder, evaluation)
    return {name: section for name, section in evaluation.items() if name not in other}, other


def other_weights_words(other: list[str], command: str, also: str = "") -> str:
    """A page's or a report's sentence for ``other_weights_sections``; ``command``: what measures them again (the
    'training' section, cadp.train's, is named apart: only training the model again writes it)."""
    measured = [name for name in other if name != "training"]
    words = []
    if measured:
        named = ", ".join(f"'{name}'" for name in measured)
        one = len(measured) == 1
        words.append(f"This model's eval.json holds {plural('section', len(measured))} {named} measured on other "
                     "weights than its model.safetensors (the weights were replaced after "
                     f"{'it was' if one else 'they were'} measured), so {'it is' if one else 'they are'} not "
                     f"shown: {'its' if one else 'their'} numbers are another network's. Measure this network "
                     f"with `{command}`{also}.")
    if "training" in other:
        words.append("Its 'training' section (the training run's facts and test numbers) was written with other "
                     "weights than its model.safetensors, so it is not shown either; only `python -m cadp.train` "
                     "writes it, when it trains a model.")
    return " ".join(words)


def update_card_section(folder: Path | str, key: str, markdown: str) -> None:
    """Put ``markdown`` in the model card between ``<!-- cadp:key -->`` markers (replacing an earlier block).

    A new block goes before "## Privacy and limitations" (or at the end); nothing else changes.
    """
    path = Path(folder) / CARD_NAME
    card = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = f"<!-- cadp:{key} -->", f"<!-- /cadp:{key} -->"
    block = f"{start}\n{markdown.strip()}\n{end}\n"
    if start in card and end in card:
        before, rest = card.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        card = before + block + ("\n" + after if after else "")  # the blank line before the next heading stays
    elif "## Privacy and limitations" in card:
        before, rest = card.split("## Privacy and limitations", 1)
        card = before + block + "\n## Privacy and limitations" + rest
    else:
        card = card.rstrip("\n") + "\n\n" + block
    write_text_whole(path, card)


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, stamp: tuple[int, int]) -> str:  # (the stamp: a file changed is read again)
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def bundled_twin(folder: Path | str | None) -> str | None:
    """The name of the bundled model whose weights the model in ``folder`` has, byte for byte (the bundled folder
    itself, a copy of it, a Hub repo of it), or None: a network trained again on the same data, with the same
    config, is another network, and what was measured with the bundled ones is not its measurement."""
    if folder is None:
        return None
    weights = Path(folder) / WEIGHTS_NAME
    stamp = file_stamp(weights)
    if stamp is None:
        return None
    for name in model_folders(BUNDLED_DIR):
        bundled = BUNDLED_DIR / name / WEIGHTS_NAME
        bundled_stamp = file_stamp(bundled)
        if bundled_stamp is not None and bundled_stamp[0] == stamp[0] and \
                _file_digest(str(bundled), bundled_stamp) == _file_digest(str(weights), stamp):
            return name
    return None


def model_folders(folder: Path | str = BUNDLED_DIR, kind: str | None = None) -> list[str]:
    """Names of the model folders in ``folder`` (default: the shipped weights/), sorted; with ``kind`` ("image",
    "tabular") only those whose config.json is readable and of that kind."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = []
    for child in sorted(folder.iterdir()):
        if not (child / CONFIG_NAME).exists():
            continue
        if kind is not None:
            try:
                if read_config(child).kind != kind:
                    continue
            except ModelError:
                continue
        names.append(child.name)
    return names


# --------------------------------------------------------------------------- Hub: ids

_REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*")
_URL_PREFIXES = ("http:", "https:", "hf://", "huggingface.co/", "hf.co/", "www.")
_MAX_REPO_ID = 96


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it follows the Hub's rules for ``owner/name``, else raise ModelError naming the rule."""
    def refuse(rule: str) -> ModelError:
        return ModelError(f"{repo_id!r} is not a valid Hub repo id: {rule}")

    if not repo_id:
        raise refuse("it is empty; give owner/name")
    if "://" in repo_id or repo_id.lower().startswith(_URL_PREFIXES):
        raise refuse("give the repo id (owner/name), not a URL")
    if any(character.isspace() for character in repo_id):
        raise refuse("it must not contain spaces")
    if ".." in repo_id or "--" in repo_id:
        raise refuse("it must not contain '..' or '--'")
    if repo_id.count("/") != 1:
        raise refuse("it must have the form owner/name (exactly one '/'), and no local folder has that name")
    if len(repo_id) > _MAX_REPO_ID:
        raise refuse(f"it must be at most {_MAX_REPO_ID} characters long")
    if not all(_REPO_PART.fullmatch(part) for part in repo_id.split("/")):
        raise refuse("owner and name use only letters, digits, '-', '_' and '.', "
                     "and start and end with a letter or digit")
    if repo_id.endswith(".git"):
        raise refuse("it must not end with '.git'")
    return repo_id


def validate_revision(revision: str, repo_id: str) -> str:
    """Return ``revision`` (branch, tag or commit hash) if it is well formed, else raise ModelError."""
    if (not revision or len(revision) > 255 or not _REVISION.fullmatch(revision)
            or ".." in revision or revision.endswith(("/", ".lock"))):
        raise ModelError(f"{revision!r} is not a valid revision for Hub repo {repo_id}: use a branch, tag or "
                         "commit hash (letters, digits, '.', '_', '-', '/'; no spaces or '..')")
    return revision


def parse_hub_source(source: str, revision: str | None = None) -> tuple[str, str | None]:
    """Split ``owner/name@rev`` into a validated (repo id, revision or None)."""
    repo_id, at, source_revision = source.partition("@")
    validate_repo_id(repo_id)
    if at:
        validate_revision(source_revision, repo_id)
        if revision is not None and revision != source_revision:
            raise ModelError(f"two revisions given for Hub repo {repo_id}: {source_revision!r} in the id and "
                             f"{revision!r} as argument")
        revision = source_revision
    elif revision is not None:
        validate_revision(revision, repo_id)
    return repo_id, revision


def _looks_like_path(source: str) -> bool:
    return (source.startswith(("/", "./", "../", "~", "\\")) or source.endswith(("/", "\\"))
            or source in (".", "..") or (os.sep != "/" and os.sep in source))


# --------------------------------------------------------------------------- Hub: loading

class _HubUnavailable(Exception):
    """The Hub could not be asked (offline or unreachable) and the cache has no complete copy."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of the HTTP client huggingface_hub uses (httpx2/httpx in 1.x+, requests in 0.x)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                               ("requests", ("ConnectionError", "Timeout"))):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        errors += [getattr(module, name) for name in names if hasattr(module, name)]
    return tuple(errors)


_MARKDOWN_MARKS = re.compile(r"[\\`*\[\]<>!#$|~{}]")  # what a server's words could format in the app's Markdown


_PLAIN_BRACKETS = str.maketrans("[]{}<>", "()()()")


def _short(error: BaseException) -> str:
    """First line of an error message, for origins and error texts. A Hub server's words come in it (its error
    text): the characters Markdown could act on are shown as '?' (the app shows errors as Markdown: a link, an
    image from elsewhere, LaTeX), brackets as parentheses ('(Errno 111)', which a terminal shows too)."""
    text = str(error).strip().splitlines()
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {_MARKDOWN_MARKS.sub('?', text[0].translate(_PLAIN_BRACKETS))}"


def load_model(source: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
               endpoint: str | None = None, token: str | None = None) -> LoadedModel:
    """Load a model from a local folder, a bundled model's name, or a Hub repo ``owner/name[@revision]``.

    Hub files (config.json, model.safetensors, and classifier.safetensors, README.md, eval.json when
    the repo has them) are downloaded with ``huggingface_hub`` into its cache (``cache_dir``, default
    ``$HF_HOME/hub``) and loaded with ``load_folder``: safetensors only, config validated. ``endpoint``
    defaults to ``$HF_ENDPOINT``; ``HF_HUB_OFFLINE=1`` loads from the cache without any request. A
    bundled repo id (``BUNDLED_REPOS``) loads its pinned revision (``BUNDLED_REVISIONS``) and, when the
    Hub is offline or unreachable and nothing is cached, falls back to its folder in ``weights/``.
    ``LoadedModel.origin`` says which of these happened; ``LoadedModel.commit`` is the Hub commit.

    Raises ModelError naming the repo and the reason: invalid id, repo or revision not found, no
    safetensors weights, offline or unreachable without a cached copy, invalid config or weights.
    """
    text = str(source)
    path = Path(text).expanduser()
    if text and path.is_dir():
        if revision is not None:
            raise ModelError(f"{text} is a local folder; a revision applies only to Hub repos")
        return load_folder(path)
    name, at, _ = text.partition("@")
    if name and "/" not in name and (BUNDLED_DIR / name / CONFIG_NAME).exists():
        if at or revision is not None:  # "mnist-cinn@v1" or a revision argument: neither can apply to a folder
            raise ModelError(f"{name} is a bundled model in {BUNDLED_DIR.name}/: load it without a revision; a "
                             "revision applies only to Hub repos (give its Hub repo as owner/name@revision)")
        return load_folder(BUNDLED_DIR / name, origin=f"bundled {BUNDLED_DIR.name}/{name}")
    if _looks_like_path(text):
        raise ModelError(f"model folder {text} does not exist")
    repo_id, revision = parse_hub_source(text, revision)
    owner, bundled = repo_id.split("/", 1)
    if owner.lower() == BUNDLED_DIR.name:  # weights/mnist-cinn typed elsewhere: a folder, never asked of the Hub
        # (anyone can own a Hub account of that name and publish a repo named like a bundled or a user's model)
        how = (f": the bundled model {bundled} loads by its name alone ({bundled}) from any folder"
               if owner == BUNDLED_DIR.name and (BUNDLED_DIR / bundled / CONFIG_NAME).exists() else "")
        raise ModelError(f"there is no local folder {text} here ({Path.cwd()}){how}. It was not looked for on the "
                         f"Hub as a repo of an owner named {owner!r}: a folder's path typed elsewhere would load "
                         f"anyone's repo of that name (load_hub_model({text!r}) asks the Hub for it)")
    try:
        return _load_from_hub(repo_id, revision, cache_dir=cache_dir, endpoint=endpoint, token=token)
    except ModelError as error:  # "models/nope" reads as a Hub id too: say that no such folder exists either
        if Path(repo_id).parent.is_dir():
            raise ModelError(f"{error}; there is no local folder {text} either") from None
        raise


def _resolve_endpoint(endpoint: str | None) -> str:
    # checked before huggingface_hub is imported: its constants module parses $HF_ENDPOINT as it loads, and an
    # unclosed IPv6 address ('http://[::1') raised ValueError there, a traceback
    check_endpoint_setting()  # (an endpoint given too: huggingface_hub's import parses $HF_ENDPOINT all the same)
    if endpoint:
        _check_endpoint(endpoint, "the endpoint given")
    given = endpoint or os.environ.get("HF_ENDPOINT")
    from huggingface_hub import constants

    # No telemetry: with it, huggingface_hub also fetches an agent list from its import-time endpoint.
    constants.HF_HUB_DISABLE_TELEMETRY = True
    # huggingface_hub reads HF_ENDPOINT once at import; read it again so a later setting counts.
    return (given or constants.ENDPOINT).rstrip("/")


def check_endpoint_setting() -> None:
    """Refuse a $HF_ENDPOINT that is no Hub address (``_check_endpoint``), for code about to import huggingface_hub."""
    if os.environ.get("HF_ENDPOINT"):
        _check_endpoint(os.environ["HF_ENDPOINT"], "$HF_ENDPOINT")


def _check_endpoint(address: str, given: str) -> None:
    """Refuse a Hub address that is no http(s) URL: a mistake to say, not a Hub that is down (a bundled id would
    fall back to its folder as if the Hub could not be reached)."""
    from urllib.parse import urlsplit

    try:  # (urlsplit strips spaces and drops tabs and newlines, which the requests then meet: none allowed)
        parts = urlsplit(address)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0 \
            and not any(character.isspace() or not character.isprintable() for character in address)
    except ValueError:  # 'http://[::1' (an unclosed IPv6 address), a port that is no number
        valid = False
    if not valid:
        raise InputError(f"{given} ({address[:200]!r}) is not a Hub address: write it as http://host[:port] or "
                         "https://host[:port]")


def load_hub_model(source: str, *, cache_dir: str | Path | None = None, endpoint: str | None = None,
                   token: str | bool | None = None) -> LoadedModel:
    """A model from a Hub repo ``owner/name[@revision]`` only, never from a local folder: the app's Hub box is
    open to every visitor of a hosted Space, and a folder on its disk named like ``owner/name`` must not load
    (``load_model`` tries a folder first). Bundled repo ids keep their fallback to ``weights/``. ``token``: as
    huggingface_hub takes it (None: HF_TOKEN or the saved login; False: none, public repos only, as the app's box
    asks: the server's token must not open its owner's private repos to every visitor)."""
    repo_id, revision = parse_hub_source(source)
    return _load_from_hub(repo_id, revision, cache_dir=cache_dir, endpoint=endpoint, token=token)


def _load_from_hub(repo_id: str, revision: str | None, *, cache_dir: str | Path | None, endpoint: str | None,
                   token: str | bool | None) -> LoadedModel:
    pinned = BUNDLED_REVISIONS.get(repo_id) if repo_id in BUNDLED_REPOS else None
    requested = revision or pinned or "main"
    endpoint = _resolve_endpoint(endpoint)
    try:
        folder, commit, note = _download(repo_id, requested, cache_dir=cache_dir, endpoint=endpoint, token=token)
    except OSError as error:
        if error.filename is None:  # (network errors are OSErrors too: _download says what they mean)
            raise
        # a file huggingface_hub reads or writes: its token file, its cache (HF_HOME under a file, no permission)
        raise ModelError(f"cannot load Hub repo {repo_id}@{requested}: a Hugging Face file could not be read or "
                         f"written ({error.strerror}: {error.filename}); check HF_HOME, HF_TOKEN_PATH and the "
                         "cache folder (--cache-dir)") from None
    except _HubUnavailable as error:
        bundled = BUNDLED_REPOS.get(repo_id)
        if bundled is not None and revision in (None, pinned) and (BUNDLED_DIR / bundled / CONFIG_NAME).exists():
            return load_folder(BUNDLED_DIR / bundled,
                               origin=f"bundled fallback {BUNDLED_DIR.name}/{bundled} ({error.reason})")
        raise ModelError(f"cannot load Hub repo {repo_id}@{requested}: {error.reason}") from None
    shown = repo_id if requested in ("main", commit) and revision is None else f"{repo_id}@{requested}"
    loaded = load_folder(folder, origin=f"Hub {shown} at commit {commit[:12]}{note}",
                         files_of=hub_files(repo_id, commit))
    loaded.commit, loaded.repo_id = commit, repo_id
    # its config's training data and latent distances are its publisher's word: the terms say so (privatize)
    loaded.model.stated_by = f"the publisher of the Hub repo {repo_id}"
    return loaded


def _gated(repo_id: str, token) -> ModelError:
    return ModelError(f"Hub repo {repo_id} is gated: its files need its conditions accepted on the Hub and a token"
                      + (" (this loads public repos only, without a token)" if token is False
                         else ": accept them, then give a token or set HF_TOKEN"))


_COMMIT = re.compile(r"[0-9a-f]{40}")  # a Hub commit hash, as huggingface_hub's cache names its snapshot folders


def _not_a_commit(sent: str | None, name: str, where: str, endpoint: str) -> ModelError:
    """What the Hub sent as a commit (X-Repo-Commit) said back, the characters Markdown could act on as '?' (the
    app shows errors as Markdown)."""
    shown = "something else" if sent is None else \
        repr(re.sub(r"[^A-Za-z0-9._/-]", "?", sent[:60]) + ("..." if len(sent) > 60 else ""))
    return ModelError(f"the Hub at {endpoint} named {shown} as the commit of {name} in {where}: a commit is 40 hex "
                      "characters (0-9, a-f); not loaded")


TRANSIENT_HTTP = (408, 429)  # request timeout, too many requests: the Hub cannot serve it now, as for 5xx


def _download(repo_id: str, revision: str, *, cache_dir: str | Path | None, endpoint: str,
              token: str | bool | None) -> tuple[Path, str, str]:
    """Fetch the model files of one revision into the cache: (snapshot folder, commit hash, origin note)."""
    from huggingface_hub import HfApi, constants, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    where = f"{repo_id}@{revision}"
    hub_problem = listed_commit = None
    listing: set[str] | None = None
    if constants.is_offline_mode():
        hub_problem = "Hub offline: HF_HUB_OFFLINE is set"
    else:
        try:
            info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision, files_metadata=True)
            listing = {sibling.rfilename for sibling in info.siblings or []}
            listed_commit = info.sha if isinstance(info.sha, str) and _COMMIT.fullmatch(info.sha) else None
            sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
        except RevisionNotFoundError:
            raise ModelError(f"revision {revision!r} not found in Hub repo {repo_id} ({endpoint})") from None
        except GatedRepoError:  # (a RepositoryNotFoundError too)
            raise _gated(repo_id, token) from None
        except RepositoryNotFoundError:
            raise ModelError(f"Hub repo {repo_id} not found at {endpoint} ("
                             + ("this loads public repos only, without a token" if token is False else
                                "if it is private or gated, give a token or set HF_TOKEN") + ")") from None
        except HfHubHTTPError as error:
            if error.response is None or (error.response.status_code < 500
                                          and error.response.status_code not in TRANSIENT_HTTP):
                raise ModelError(f"the Hub refused {where}: {_short(error)}") from None
            hub_problem = (f"the Hub at {endpoint} cannot serve it now (it answered HTTP {error.response.status_code}: "
                           "try again later)")
        except _transport_errors() as error:
            hub_problem = (f"the Hub at {endpoint} cannot be reached (no network connection, or the server is down; "
                           f"details: {_short(error)})")

    if listing is not None:
        missing = [name for name in REQUIRED_HUB_FILES if name not in listing]
        if missing:
            pickles = sorted(name for name in listing if name.endswith(PICKLE_SUFFIXES))
            hint = f" (it has {', '.join(pickles)}: pickle files are never loaded)" if pickles else ""
            raise ModelError(f"Hub repo {where} has no {' or '.join(missing)}{hint}; "
                             "a CADP model repo holds config.json and model.safetensors")
        names = [name for name in HUB_FILES if name in listing]
        for name in names:  # before anything is downloaded
            limit = max_weights_bytes() if name == WEIGHTS_NAME else MAX_FILE_BYTES
            if isinstance(sizes.get(name), int) and sizes[name] > limit:
                raise ModelError(f"Hub repo {where}: {name} has {sizes[name]:,} bytes, more than the {limit:,} "
                                 "this app downloads for a model file")
    else:
        names = list(HUB_FILES)

    paths = []
    for name in names:
        try:
            paths.append(Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir,
                                              endpoint=endpoint, token=token,
                                              local_files_only=hub_problem is not None)))
        except FileNotFoundError as error:  # LocalEntryNotFoundError: not in the cache
            if hub_problem is None:
                raise ModelError(f"could not download {name} of Hub repo {where}: {_short(error)}") from None
            if name in REQUIRED_HUB_FILES:
                raise _HubUnavailable(f"{hub_problem}, and the Hugging Face cache has no copy of {where}") from None
        except GatedRepoError:  # its listing is public, its files are not: a 401 only now
            raise _gated(repo_id, token) from None
        except (RevisionNotFoundError, RepositoryNotFoundError) as error:
            raise ModelError(f"Hub repo {where} changed while downloading: {_short(error)}") from None
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status is not None and (status >= 500 or status in TRANSIENT_HTTP):
                raise _HubUnavailable(f"the Hub at {endpoint} cannot serve {name} now (it answered HTTP {status}: "
                                      "try again later)") from None
            raise ModelError(f"could not download {name} of Hub repo {where}: {_short(error)}") from None
        except _transport_errors() as error:
            raise _HubUnavailable(f"the Hub could not be reached while downloading {name} (no network connection, or "
                                  f"the server is down; details: {_short(error)})") from None
        except ValueError as error:  # "Invalid pointer path": the commit the Hub sent would make a folder elsewhere
            sent = re.search(r"revision='([^']*)'", str(error))
            raise _not_a_commit(sent.group(1) if sent else None, name, where, endpoint) from None
        except OSError as error:  # (after the subclasses above) its words hold the cache's path: not shown
            if str(error).startswith("Consistency check failed"):  # not the size its headers announced
                raise ModelError(f"Hub repo {where} changed while downloading, or the connection broke ({name} "
                                 "came with another size than announced); load it again") from None
            raise ModelError(f"could not store {name} of Hub repo {where} in the Hugging Face cache: "
                             f"{error.strerror or type(error).__name__}") from None

    for path in paths:  # a listing without sizes (a mirror may omit them) is checked here, before anything reads it
        limit = max_weights_bytes() if path.name == WEIGHTS_NAME else MAX_FILE_BYTES
        if path.stat().st_size > limit:
            raise ModelError(f"Hub repo {where}: {path.name} has {path.stat().st_size:,} bytes, more than the "
                             f"{limit:,} this app reads for a model file")
    snapshots = {path.parent for path in paths}
    if len(snapshots) != 1:
        raise ModelError(f"Hub repo {where} changed while downloading; load it again")
    folder = snapshots.pop()
    if folder.parent.name != "snapshots" or not _COMMIT.fullmatch(folder.name):  # huggingface_hub takes any header
        from huggingface_hub.file_download import repo_folder_name

        repo_folder = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
        sent = os.path.relpath(folder, repo_folder / "snapshots")
        _discard_snapshot(repo_folder, sent, revision)
        raise _not_a_commit(sent, names[0], where, endpoint)
    if listed_commit is not None and folder.name != listed_commit:  # the files' sizes were checked in that listing
        raise ModelError(f"Hub repo {where} changed while downloading (listed at commit {listed_commit[:12]}, its "
                         f"files came from commit {folder.name[:12]}); load it again")
    note = f" (cached copy; {hub_problem})" if hub_problem else ""
    return folder, folder.name, note


def _discard_snapshot(repo_folder: Path, sent: str, revision: str) -> None:
    """Remove what a download under a refused commit name left in the cache: its snapshot folder, the ref that names
    it and the blobs no other snapshot links to. Left there, a nested folder (a name with '/') makes
    huggingface_hub's cache scan skip the whole repo as corrupt, and the app's pruning would never count or delete
    its files: every hostile repo a visitor named would stay on the Space's disk."""
    snapshots = repo_folder / "snapshots"
    top = Path(sent).parts[0] if sent not in ("", ".") else None
    try:
        if top is None or top == ".." or (snapshots / top).resolve().parent != snapshots.resolve():
            return
        shutil.rmtree(snapshots / top) if (snapshots / top).is_dir() else (snapshots / top).unlink(missing_ok=True)
        ref = repo_folder / "refs" / revision
        if ref.is_file() and not _COMMIT.fullmatch(ref.read_text()):  # (it holds the name as sent, before paths)
            ref.unlink()
        linked = {path.resolve() for path in snapshots.rglob("*") if path.is_symlink()}
        for blob in (repo_folder / "blobs").iterdir():
            if blob.resolve() not in linked and not blob.name.endswith(".incomplete"):  # (a download under way)
                blob.unlink()
    except OSError:  # what stays is only disk space: the refusal is what matters
        pass


def prune_hub_cache(cache_dir: str | Path, budget_bytes: int, keep: set[Path],
                    keep_repos: set[str] = frozenset()) -> list[str]:
    """Delete the least recently used revisions of a Hugging Face cache folder until it holds at most
    ``budget_bytes``, never a revision whose snapshot folder is in ``keep`` (models in use) nor one of a repo in
    ``keep_repos`` (ids in lower case: repos downloading now, whose new files may link to an older revision's
    blobs). For a cache of the app's own (a public Space's disk filled with every repo a visitor named); returns
    the 'repo@commit' deleted."""
    from huggingface_hub import scan_cache_dir

    if not Path(cache_dir).is_dir():
        return []
    info = scan_cache_dir(cache_dir)
    kept = {Path(folder).resolve() for folder in keep}
    candidates = sorted(((repo.last_accessed, revision, repo.repo_id) for repo in info.repos
                         for revision in repo.revisions if Path(revision.snapshot_path).resolve() not in kept
                         and repo.repo_id.lower() not in keep_repos),
                        key=lambda item: item[0])
    total, chosen, deleted = info.size_on_disk, [], []
    for _, revision, repo_id in candidates:
        if total <= budget_bytes:
            break
        chosen.append(revision.commit_hash)
        deleted.append(f"{repo_id}@{revision.commit_hash[:12]}")
        total -= revision.size_on_disk  # (a blob shared with a kept revision stays: an upper bound)
    if chosen:
        info.delete_revisions(*chosen).execute()
    return deleted


# --------------------------------------------------------------------------- Hub: publishing

@dataclass
class PushResult:
    """What push_model uploaded (or would upload, for a dry run)."""

    repo_id: str
    files: list[str]
    dry_run: bool
    commit: str | None = None
    url: str | None = None
    skipped: list[str] = field(default_factory=list)


def upload_files(folder: Path | str) -> tuple[list[str], list[str]]:
    """(files to upload, files left out) of a model folder, as sorted POSIX paths relative to it.

    Left out: checkpoint/ (training state), hidden files, and pickle files (never loaded anyway).
    """
    folder = Path(folder)
    uploaded, skipped = [], []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        parts = relative.split("/")
        if parts[0] == "checkpoint" or any(part.startswith(".") for part in parts) \
                or relative.endswith(PICKLE_SUFFIXES):
            skipped.append(relative)
        else:
            uploaded.append(relative)
    return uploaded, skipped


@contextmanager
def _publishing_errors(what: str):
    """Turn the Hub's refusals and transport failures while publishing into one ModelError line."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as error:
        raise ModelError(f"{what}: {_short(error)}") from None
    except _transport_errors() as error:
        raise ModelError(f"{what}: Hub unreachable ({_short(error)})") from None
    except RuntimeError as error:  # huggingface_hub wraps a failed file upload ("Error while uploading ...")
        if error.__cause__ is None:
            raise
        raise ModelError(f"{what}: {error} ({_short(error.__cause__)})") from None


def push_model(folder: Path | str, repo_id: str, *, token: str | None = None, dry_run: bool = False,
               endpoint: str | None = None, tag: str | None = None, private: bool = False,
               publish_own_data: bool = False) -> PushResult:
    """Publish a model folder to the Hub model repo ``repo_id`` with ``HfApi.upload_folder``.

    The folder is loaded first (safetensors, config validated) so a broken model is never published.
    Uploads config.json, model.safetensors, README.md, eval.json, classifier.safetensors and any other
    plain file, but never checkpoint/, hidden files or pickle files (see ``upload_files``). Creates the
    repo if needed (``private`` applies then) and, with ``tag``, tags the new commit (``BUNDLED_REVISIONS``
    pins bundled repos to such a tag). ``token`` defaults to $HF_TOKEN or the saved login, ``endpoint``
    to $HF_ENDPOINT.

    A model trained on data that is not a public dataset (an upload, the user's own files) can reveal that
    data through its weights, config.json (column ranges and levels, class names) and model card: it is
    refused unless ``private`` (and then also when ``repo_id`` already exists as a public repo, which keeps
    its visibility) or ``publish_own_data`` says to publish it anyway. A dry run refuses the same, except an
    existing public repo, which only the push finds out (it asks the Hub).

    With ``dry_run=True`` nothing is sent: the result lists the files that would be uploaded.
    """
    from cadp.data import PUBLIC_DATASETS

    folder = Path(folder)
    validate_repo_id(repo_id)
    if tag is not None:
        validate_revision(tag, repo_id)
    loaded = load_folder(folder)
    own_data = loaded.config.dataset not in PUBLIC_DATASETS and not publish_own_data
    if own_data and not private:
        raise InputError(f"not pushed: {loaded.config.name} was trained without DP on {loaded.config.dataset}, not "
                         "on a public dataset, and a Hub repo is public: push it as private (a repo created now is "
                         "private; one that exists keeps its visibility), or say to publish that data anyway "
                         "(publish_own_data=True, --publish-own-data)")
    files, skipped = upload_files(folder)
    if dry_run:
        return PushResult(repo_id, files, dry_run=True, skipped=skipped)

    endpoint = _resolve_endpoint(endpoint)  # (before huggingface_hub is imported: it parses $HF_ENDPOINT then)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    with _publishing_errors(f"could not push {folder} to Hub repo {repo_id}"):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if own_data and api.model_info(repo_id).private is not True:  # (None: the Hub did not say)
            raise InputError(f"not pushed: the Hub repo {repo_id} exists and is public (or did not say it is "
                             f"private), and {loaded.config.name} was "
                             f"trained without DP on {loaded.config.dataset}, not on a public dataset: make the repo "
                             "private first, or push to a new one")
        if tag is not None:  # before the upload: a tag refused after it left the new files on main, untagged
            _refuse_existing_tag(api, repo_id, tag)
        # Exact paths as patterns: what is uploaded is exactly the list a dry run shows.
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=files,
                                 commit_message=f"Upload {read_config(folder).name} with cadp")
        if tag is not None:
            api.create_tag(repo_id, tag=tag, revision=info.oid)
    return PushResult(repo_id, files, dry_run=False, commit=info.oid, url=info.commit_url, skipped=skipped)


def _refuse_existing_tag(api, repo_id: str, tag: str) -> None:
    """InputError where ``tag`` already names a revision of ``repo_id`` (a tag or a branch): a Hub tag is not
    moved, so the push would fail after its files were committed to main."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        info = api.model_info(repo_id, revision=tag)
    except RevisionNotFoundError:
        return
    commit = (getattr(info, "sha", None) or "")[:12]
    raise InputError(f"not pushed: {tag!r} already names a revision of {repo_id}"
                     + (f" (commit {commit})" if commit else "") + "; a tag is not moved: push with another "
                     "--tag (e.g. the next version), or without one; nothing was uploaded")


def space_files(root: Path | str = REPO_ROOT) -> list[str]:
    """The files of the app's Space: every file git tracks in the checkout at ``root``, as committed.

    Tracked files only, so a data file lying in the working tree (an export, a CSV of patients) is
    never uploaded; a checkout with uncommitted changes to tracked files is refused, so the Space holds
    exactly one commit's files.
    """
    root = Path(root)

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        except OSError as error:
            raise ModelError(f"deploying a Space needs git ({error})") from None
        if done.returncode != 0:
            raise ModelError(f"{root} is not a git checkout of this app: a Space is deployed from one "
                             f"({done.stderr.strip()[:160]})")
        return done.stdout

    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    if changed:
        shown = ", ".join(line[3:] for line in changed[:5]) + (", ..." if len(changed) > 5 else "")
        one = len(changed) == 1
        raise ModelError(f"{counted(len(changed), 'tracked file')} {'has' if one else 'have'} uncommitted changes "
                         f"({shown}): commit or stash {'it' if one else 'them'} first, so that the Space holds "
                         "exactly one commit's files")
    entries = [line.split("\t", 1) for line in git("ls-files", "-s", "-z").split("\0") if line]
    files = sorted(name for _, name in entries)
    # upload_folder takes the names as glob patterns and reads the working tree: a link would upload its target
    # (perhaps outside the checkout), a name with * ? [ ] would upload untracked files that match it
    odd = [name for info, name in entries if not info.startswith("100") or any(c in name for c in "*?[]")]
    if odd:
        raise ModelError(f"tracked {plural('path', len(odd))} {odd[:5]} "
                         f"{'is a link, a submodule or holds' if len(odd) == 1 else 'are links, submodules or hold'}"
                         " * ? [ ]: a Space is deployed from plain files with plain names only")
    if "README.md" not in files or "Dockerfile" not in files:
        raise ModelError(f"{root} has no committed README.md and Dockerfile: not a checkout of this app")
    return files


def push_space(repo_id: str, *, root: Path | str = REPO_ROOT, token: str | None = None, dry_run: bool = False,
               endpoint: str | None = None, private: bool = False) -> PushResult:
    """Publish the app as the Docker Space ``repo_id`` (README.md's front matter) with ``HfApi.upload_folder``.

    Uploads ``space_files(root)`` (the checkout's committed files) after loading every bundled model,
    so a broken model is never published. The API stores binary and large files (the weights) as the
    Hub requires; a plain ``git push`` of this repository to a Space is refused for them. Files in the
    Space that the commit does not hold are deleted (but ``.gitattributes``): the Space mirrors the
    commit. Creates the Space if needed (``private`` applies then). ``token`` defaults to $HF_TOKEN or the
    saved login, ``endpoint`` to $HF_ENDPOINT. With ``dry_run=True`` nothing is sent.
    """
    validate_repo_id(repo_id)
    root = Path(root)
    files = space_files(root)
    for name in sorted({path.split("/")[1] for path in files if path.startswith("weights/") and path.count("/") == 2}):
        load_folder(root / "weights" / name)
    if dry_run:
        return PushResult(repo_id, files, dry_run=True)

    endpoint = _resolve_endpoint(endpoint)  # (before huggingface_hub is imported: it parses $HF_ENDPOINT then)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    with _publishing_errors(f"could not deploy the Space {repo_id}"):
        api.create_repo(repo_id, repo_type="space", space_sdk=SPACE_SDK, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=root, allow_patterns=files,
                                 delete_patterns="*", commit_message=f"Deploy CADP at commit {head}")
    return PushResult(repo_id, files, dry_run=False, commit=info.oid, url=info.commit_url)


# --------------------------------------------------------------------------- CLI

def _warn_about_own_training_data(folder: Path) -> bool:
    """Say that a model of data that is not public can reveal it; True for such a model."""
    from cadp.data import PUBLIC_DATASETS

    if not (folder / CONFIG_NAME).exists():
        return False  # push_model says what is missing
    config = read_config(folder)
    if config.dataset in PUBLIC_DATASETS:
        return False
    print(f"warning: {config.name} was trained without DP on {config.dataset}, not on a public dataset: its "
          "weights, config.json (column ranges and levels, class names) and model card can reveal that data. "
          "A Hub repo is public unless created with --private.", file=sys.stderr)
    return True


def describe(loaded: LoadedModel) -> str:
    """A few lines about a loaded model: origin, kind, data, latent size, parameters."""
    config = loaded.config
    parameters = sum(p.numel() for p in loaded.model.parameters())
    trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
    lines = [f"origin: {loaded.origin}",
             f"model: {config.name} ({config.kind} cINN, dataset {config.dataset})",
             f"latent dimensions: {config.latent_dim}",
             f"parameters: {parameters:,} ({trainable:,} trainable, as the model card counts them)"]
    if config.kind == "image":
        lines.append(f"images: {config.channels}x{config.image_size}x{config.image_size}, "
                     f"classes: {', '.join(config.class_names)}")
        lines.append(f"classifier: {'yes' if loaded.classifier is not None else 'no'}")
    else:
        lines.append(f"data columns: {', '.join(config.data_columns)}")
        lines.append(f"condition columns: {', '.join(config.condition_columns) or '(none)'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadp.hub", description="Load or publish CADP model folders.")
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="upload a model folder to a Hub repo")
    push.add_argument("folder")
    push.add_argument("repo_id", help="owner/name")
    push.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    push.add_argument("--tag", help="tag the new commit (e.g. v0.1.0)")
    push.add_argument("--private", action="store_true",
                      help="create the repo as private (a repo that exists keeps its visibility: a model of data "
                           "that is not public is then refused unless that repo is private)")
    push.add_argument("--publish-own-data", action="store_true",
                      help="push a model of data that is not public without --private (it can reveal that data)")
    push.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT or huggingface.co)")
    space = commands.add_parser("space", help="deploy this app (the checkout's committed files) as a Hub Space",
                                description="Upload the committed files of this checkout to the Docker Space "
                                "OWNER/NAME, creating it if needed; files in the Space that the commit does not "
                                "hold are deleted. Needs a Hub token ($HF_TOKEN or `hf auth login`).")
    space.add_argument("repo_id", help="owner/name of the Space")
    space.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; send nothing")
    space.add_argument("--private", action="store_true", help="create the Space as private")
    space.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT or huggingface.co)")
    load = commands.add_parser("load", help="load a folder or Hub repo and describe it")
    load.add_argument("source", help="a folder, a bundled model's name, or owner/name[@revision]")
    load.add_argument("--revision", help="a branch, tag or commit of a Hub repo (or write owner/name@revision)")
    load.add_argument("--cache-dir", help="Hugging Face cache folder (default: $HF_HOME/hub)")
    load.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT or huggingface.co)")
    args = parser.parse_args(argv)
    try:
        if args.command == "push":
            _warn_about_own_training_data(Path(args.folder))  # before anything is sent
            # push_model refuses such a model unless --private or --publish-own-data; a dry run the same
            result = push_model(args.folder, args.repo_id, dry_run=args.dry_run, endpoint=args.endpoint,
                                tag=args.tag, private=args.private, publish_own_data=args.publish_own_data)
            verb = "would upload" if result.dry_run else "uploaded"
            print(f"{verb} to {result.repo_id}:")
            print("\n".join(f"  {name}" for name in result.files))
            if result.skipped:
                print("left out: " + ", ".join(result.skipped))
            if args.tag:
                print(f"{'would tag' if result.dry_run else 'tagged'} the new commit {args.tag}")
            if result.commit:
                print(f"commit {result.commit}: {result.url}")
        elif args.command == "space":
            result = push_space(args.repo_id, root=REPO_ROOT, dry_run=args.dry_run, endpoint=args.endpoint, private=args.private)
            verb = "would upload" if result.dry_run else "uploaded"
            print(f"{verb} {len(result.files)} files to the Space {result.repo_id}:")
            print("\n".join(f"  {name}" for name in result.files))
            if result.commit:
                print(f"commit {result.commit}: {result.url}")
        else:
            print(describe(load_model(args.source, revision=args.revision, cache_dir=args.cache_dir,
                                      endpoint=args.endpoint)))
    except CadpError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
