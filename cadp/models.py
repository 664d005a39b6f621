"""Conditional invertible networks (FrEIA) for images and table rows.

A model is built from a config dataclass (serialized to ``config.json``) and has
``encode(x, c) -> z`` with z flat of shape (batch, D) and ``decode(z, c) -> x``.
Images are pixel values on [0, 255] (float or uint8), shape (B, C, H, W);
their dequantization and logit transform belong to the model, so
``bits_per_dim`` is measured on [0, 256) pixel values.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache, partial

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import pandas as pd
import torch
from torch import nn

from cadp.errors import InputError, ModelError

FORMAT_VERSION = 1
# a conv subnet's kernel sizes -> its middle layer's kernel. "3-1-3": the bundled models; "3-3-3": more work per
# byte moved, a larger share of the CPU's peak (python -m bench.architectures; BENCHMARKS.md, "Eighth round")
CONV_SUBNETS = {"3-1-3": 1, "3-3-3": 3}


# --------------------------------------------------------------------------- configs

DISTANCES_OF_OTHER_WEIGHTS = ("config.json's latent distances were measured with other weights than its "
                              "model.safetensors (the weights were replaced after they were measured), so they are "
                              "not used")  # (hub.leave_out_other_distances: said by the pages and the release terms)


@dataclass
class LatentDistances:
    """Median L1 latent distances on held-out data (PRIVACY.md, metric mechanism), or, where too few records were
    held out to measure them (a small upload), on records the model was fitted on: ``held_out`` says which."""

    d_typ: float  # median same-class pairwise distance
    d_nn: float   # median nearest-neighbour distance (same class)
    latent_l1_norm: float  # median ||z||_1
    n_records: int
    held_out: bool | None = None  # None: not recorded (a config written before the field; fit_tabular then
    # measured on the rows it was fitted on, the training CLI on held-out ones)
    weights_sha256: str | None = None  # the SHA-256 of the model.safetensors they were measured with (hub.save_model
    # writes it); None: not recorded (a config written before the field, or by anyone else): nothing tells

    @property
    def measured_on(self) -> str:
        """Which records the distances were measured on, for a sentence: "on 45 held-out records (...)"."""
        if self.held_out:  # (a model fitted on an upload held them out of its training steps, to choose when to stop)
            return f"on {self.n_records} held-out records (not trained on; at most used to choose when training stopped)"
        if self.held_out is None:
            return f"on {self.n_records} records (whether held out or fitted on was not recorded with this model)"
        return f"on {self.n_records} records the model was fitted on (too few held-out ones to measure on)"


@dataclass
class ImageModelConfig:
    """Architecture and data description of an image cINN."""

    name: str
    dataset: str
    class_names: list[str]
    image_size: int = 28
    channels: int = 1
    conv_width: int = 64
    conv_blocks: list[int] = field(default_factory=lambda: [4, 4])
    conv_subnet: str = "3-1-3"  # kernel sizes of a conv subnet's three layers: CONV_SUBNETS
    fc_blocks: int = 4
    fc_width: int = 512
    clamp: float = 1.5
    logit_alpha: float = 0.05
    permutation_seed: int = 0
    latent_distances: LatentDistances | None = None
    kind: str = "image"
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def latent_dim(self) -> int:
        return self.channels * self.image_size ** 2

    def latent_scales(self) -> list[tuple[str, tuple[int, ...]]]:
        """How the flat latent splits into scales: (name, shape) in order."""
        side = self.image_size // 4
        split_channels = self.channels * 8
        return [(f"conv scale ({split_channels}x{side}x{side})", (split_channels, side, side)),
                (f"fully connected ({split_channels * side * side})", (split_channels * side * side,))]

    def validate(self) -> None:
        _check(self.kind == "image", "kind", "'image'")
        _check_common(self)
        _check(isinstance(self.class_names, list) and 1 <= len(self.class_names) <= MAX_CLASSES
               and all(isinstance(name, str) and 0 < len(name.strip()) <= MAX_NAME_LENGTH
                       for name in self.class_names), "class_names",
               f"a list of 1 to {MAX_CLASSES:,} names (text of 1 to {MAX_NAME_LENGTH} characters)")
        _check(len(set(self.class_names)) == len(self.class_names), "class_names",
               "distinct (a repeated name would stand for two classes)")
        _check(_whole(self.image_size) and self.image_size in (16, 28, 32, 64), "image_size", "16, 28, 32 or 64")
        _check(_whole(self.channels) and self.channels in (1, 3), "channels", "1 or 3")
        _check(_whole(self.conv_width, 1, 1024), "conv_width", "a whole number in 1..1024")
        _check(self.conv_subnet in CONV_SUBNETS, "conv_subnet", " or ".join(map(repr, CONV_SUBNETS)))
        _check(isinstance(self.conv_blocks, (list, tuple)) and len(self.conv_blocks) == 2
               and all(_whole(b, 0, 64) for b in self.conv_blocks), "conv_blocks", "two whole numbers in 0..64")
        _check(_whole(self.fc_blocks, 1, 64), "fc_blocks", "a whole number in 1..64")
        _check(_whole(self.fc_width, 1, 8192), "fc_width", "a whole number in 1..8192")
        _check(0 < self.clamp <= 10, "clamp", "(0, 10]")
        _check(0 < self.logit_alpha < 0.5, "logit_alpha", "(0, 0.5)")


@dataclass
class TabularModelConfig:
    """A tabular cINN: encoders for the data and condition columns plus the network size."""

    name: str
    dataset: str
    data_encoder: dict
    condition_encoder: dict
    blocks: int = 8
    width: int = 128
    clamp: float = 1.0
    permutation_seed: int = 0
    condition_priors: dict = field(default_factory=dict)
    latent_distances: LatentDistances | None = None
    kind: str = "tabular"
    format_version: int = FORMAT_VERSION

    @property
    def data_columns(self) -> list[str]:
        return [c["name"] for c in self.data_encoder["columns"]]

    @property
    def condition_columns(self) -> list[str]:
        return [c["name"] for c in self.condition_encoder["columns"]]

    @property
    def column_kinds(self) -> dict[str, str]:
        """Each column's kind ("numeric" or "categorical"), data and condition columns alike."""
        return {c["name"]: c["kind"] for c in self.data_encoder["columns"] + self.condition_encoder["columns"]}

    @property
    def latent_dim(self) -> int:
        return _encoder_width(self.data_encoder)

    @property
    def condition_dim(self) -> int:
        return _encoder_width(self.condition_encoder)

    def validate(self) -> None:
        _check(self.kind == "tabular", "kind", "'tabular'")
        _check_common(self)
        _check_column_specs(self)
        _check(2 <= self.latent_dim <= MAX_ENCODED_WIDTH, "data_encoder",
               f"2 to {MAX_ENCODED_WIDTH:,} encoded dimensions (a category is one)")
        _check(self.condition_dim <= MAX_ENCODED_WIDTH, "condition_encoder",
               f"at most {MAX_ENCODED_WIDTH:,} encoded dimensions (a category is one)")
        _check(_whole(self.blocks, 1, 64), "blocks", "a whole number in 1..64")
        _check(_whole(self.width, 1, 8192), "width", "a whole number in 1..8192")
        _check(0 < self.clamp <= 10, "clamp", "(0, 10]")


ModelConfig = ImageModelConfig | TabularModelConfig


def _encoder_width(state: dict) -> int:
    return sum(len(c["categories"]) if c["kind"] == "categorical" else 1 for c in state["columns"])


# --------------------------------------------------------------------------- table column specs

# what each kind of column reads of its entry in config.json (cadp.data.ColumnSpec); "grid": folders written
# before point masses. A field outside these is refused: the encoder would fail on it, or ignore a setting.
_COLUMN_FIELDS = {"name", "kind", "mean", "std", "integer", "categories", "dtype", "decimals", "atoms", "slope",
                  "shift", "scale", "low", "high", "grid"}


def _number(value) -> bool:
    """A finite int or float (not a bool, not text): what a config.json number must be to compute with."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_column_specs(config: TabularModelConfig) -> None:
    """Every field the table encoder reads, in each column entry of both encoders (cadp.data.ColumnSpec), and the
    stored condition priors: a config.json edited by hand or from anyone's Hub repo must not load as a model whose
    releases are silently wrong (a std of 0, negative decimals, a range upside down, a column under another's name)."""
    names: dict = {}  # column name -> where it was first seen
    for encoder in ("data_encoder", "condition_encoder"):
        state = getattr(config, encoder)
        _check(isinstance(state, dict) and isinstance(state.get("columns"), list), encoder,
               'an object holding a list of column entries ("columns")')
        _check(set(state) == {"columns"}, encoder, f'an object with only "columns" (got {sorted(map(str, state))})')
        for position, spec in enumerate(state["columns"]):
            place = f"in config.json, {encoder}.columns entry {position + 1}"
            _check(isinstance(spec, dict), place, "an object describing one column")
            name = spec.get("name")
            _check((isinstance(name, str) and name != "") or _whole(name), f"{place}: name",
                   f"a column's name (text, or a whole number as a DataFrame's column labels can be), got {name!r}")
            place = f"in config.json, {encoder} column {name!r} (entry {position + 1} of {encoder}.columns)"
            _check(name not in names, f"{place}: name",
                   f"unique, but {names.get(name)} has that name too (each column appears once: a column under "
                   "another's name would be released from that column's values)")
            names[name] = f"entry {position + 1} of {encoder}.columns"
            _check_column_spec(spec, place, condition=encoder == "condition_encoder")
    _check_condition_priors(config)


def _check_column_spec(spec: dict, place: str, condition: bool) -> None:
    """One column entry: the fields its kind reads, each of the type and range the encoder computes with."""
    from cadp.data import MAX_DECIMALS

    def check(ok: bool, field_name: str, allowed: str, got: str | None = None) -> None:
        if not ok:
            got = f"{spec.get(field_name)!r}" if got is None else got
            raise ModelError(f"invalid model config: {place}: {field_name} must be {allowed}, got {got}")

    unknown = sorted(str(key) for key in spec if key not in _COLUMN_FIELDS)
    _check(not unknown, place, f"an entry of known fields only (unknown: {unknown})")
    kind = spec.get("kind")
    check(kind in ("numeric", "categorical"), "kind", "'numeric' or 'categorical'")
    if condition:
        check(kind == "categorical", "kind", "'categorical' (a condition is one of a few values)")
    check(isinstance(spec.get("dtype", ""), str) and len(spec.get("dtype", "")) <= 100, "dtype",
          "text naming the column's data type (e.g. 'int64', 'float64', 'object')")
    check(isinstance(spec.get("categories", []), list), "categories", "a list")
    if kind == "categorical":
        categories = spec.get("categories", [])
        check(len(categories) >= 1, "categories", "a list of at least one category (its one-hot width)")
        # (a JSON list or object is no table cell; a model fitted in memory may hold what JSON cannot, as a Decimal:
        # save_model refuses that in its own words)
        check(not any(isinstance(value, (list, dict)) for value in categories), "categories",
              "a list of single values (text, numbers, booleans or null, the empty value)")
        # a release writes numeric categories as int64 (fit_tabular refuses larger ones)
        huge = [value for value in categories if _number(value) and abs(value) >= LARGEST_TABLE_NUMBER]
        check(not huge, "categories", "a list whose numbers are smaller than 2^63 in size (a release writes them as "
              "64-bit integers)", repr(huge[0]) if huge else None)
        keys = set()
        for value in categories:
            _check(_category_key(value) not in keys, f"{place}: categories",
                   f"distinct (the category {value!r} is listed twice, as the same value: one of its one-hot "
                   "positions could never be read or written)")
            keys.add(_category_key(value))
        return
    check(_number(spec.get("mean", 0.0)), "mean", "a finite number (the column's mean)")
    check(_number(spec.get("std", 1.0)) and spec.get("std", 1.0) > 0, "std",
          "a finite number > 0 (every value is divided by it)")
    check(isinstance(spec.get("integer", False), bool), "integer", "true or false")
    decimals = spec.get("decimals")
    check(decimals is None or _whole(decimals, 0, MAX_DECIMALS), "decimals",
          f"a whole number in 0..{MAX_DECIMALS} (released values are rounded to that many places) or null")
    check(spec.get("slope", 1.0) in (0, 1) and not isinstance(spec.get("slope", 1.0), bool), "slope",
          "0 (a lattice column: its values are only its point masses) or 1")
    check(_number(spec.get("shift", 0.0)), "shift", "a finite number")
    check(_number(spec.get("scale", 1.0)) and spec.get("scale", 1.0) > 0, "scale", "a finite number > 0")
    low, high = spec.get("low"), spec.get("high")
    check((low is None and high is None) or (_number(low) and _number(high)), "low",
          "a finite number, as is high (the fitted range), or both null")
    if low is not None:
        check(low <= high, "low", "at most high (released values are clipped to the range low..high)",
              f"low {low!r} and high {high!r}")
    atoms = spec.get("atoms", [])
    check(isinstance(atoms, list), "atoms", "a list of [value, cell width] pairs")
    for position, atom in enumerate(atoms):  # the first pair that is wrong, not the whole list
        check(isinstance(atom, list) and len(atom) == 2 and _number(atom[0]) and _number(atom[1]) and atom[1] > 0,
              f"atoms[{position}]", "a pair [value, cell width] of finite numbers, the width > 0", repr(atom))
        check(position == 0 or atoms[position - 1][0] < atom[0], f"atoms[{position}]",
              "after the previous pair's value (values increasing, each once)",
              f"{atom!r} after {atoms[position - 1]!r}")
    if spec.get("integer", False):  # released as int64, as fit_tabular refuses larger whole numbers
        for field_name in ("mean", "low", "high"):
            value = spec.get(field_name)
            check(value is None or abs(value) < LARGEST_TABLE_NUMBER, field_name,
                  "smaller than 2^63 in size for a column of whole numbers (a release writes them as 64-bit integers)")
        huge = [atom for atom in atoms if abs(atom[0]) >= LARGEST_TABLE_NUMBER]
        check(not huge, "atoms", "pairs whose values are smaller than 2^63 in size for a column of whole numbers "
              "(a release writes them as 64-bit integers)", repr(huge[0]) if huge else None)
    if "grid" in spec and "atoms" not in spec:  # a folder written before point masses: its levels become atoms
        grid = spec["grid"]
        check(isinstance(grid, list) and len(grid) >= 2 and all(_number(level) for level in grid)
              and all(a < b for a, b in zip(grid, grid[1:])), "grid",
              "a list of at least two finite numbers in increasing order (a lattice's levels)")
    elif spec.get("slope", 1.0) == 0:
        check(len(atoms) >= 1, "atoms", "at least one [value, cell width] pair for a lattice column (slope 0)")


def _category_key(value):
    """A category's identity as the encoder looks it up (cadp.data._key): 1 and 1.0 are one category, NaN and
    null another."""
    from cadp.data import _key

    return _key(value)


def _check_condition_priors(config: TabularModelConfig) -> None:
    """Each stored prior (a resampled condition's frequencies) names a condition column and gives one weight per
    category of it. JSON writes keys as text: a column named by a whole number has its prior under that text."""
    priors = config.condition_priors
    _check(isinstance(priors, dict), "in config.json, condition_priors",
           "an object: condition column name -> frequencies")
    widths = {}
    for spec in config.condition_encoder["columns"]:
        widths[spec["name"]] = widths[str(spec["name"])] = len(spec["categories"])
    for name, prior in priors.items():
        _check(name in widths, f"in config.json, condition_priors: the key {name!r}",
               f"the name of a condition column ({', '.join(map(repr, widths)) or 'there are none'})")
        _check(isinstance(prior, list) and len(prior) == widths[name]
               and all(_number(weight) and weight >= 0 for weight in prior) and sum(prior) > 0,
               f"in config.json, condition_priors[{name!r}]",
               f"one finite weight >= 0 per category of the column ({widths[name]}), not all zero")
    # back under the column's own name (the int 3, not "3"): a lookup by the column's name found no prior and drew
    # the model's samples from a uniform one after a reload
    names = [spec["name"] for spec in config.condition_encoder["columns"]]
    config.condition_priors = {next((column for column in names if str(column) == name), name)
                               if name not in names else name: prior for name, prior in priors.items()}


def _whole(value, low: int | None = None, high: int | None = None) -> bool:
    """An int (not a bool, not 16.5 or 28.0: a size the network is built with), within [low, high] where given."""
    return (isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low)
            and (high is None or value <= high))


# a config may come from anyone's Hub repo: a table model's one-hot width bounds what building it costs (a million
# categories took 20 s of permutations before its parameter count was refused); uploads hold at most 200 columns
# of 200 categories
MAX_ENCODED_WIDTH = 50_000


def _check(ok: bool, parameter: str, allowed: str) -> None:
    if not ok:
        raise ModelError(f"invalid model config: {parameter} must be {allowed}")


LARGEST_TABLE_NUMBER = 2.0 ** 63  # a table's numbers must be smaller in size: released whole numbers are int64
MAX_CLASSES = 1000  # a config may come from anyone's Hub repo: pages list every class (the card samples 10 at once)
MAX_NAME_LENGTH = 200


def _positive_number(value, zero_allowed: bool = False) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (value >= 0 if zero_allowed else value > 0))


def _check_common(config) -> None:
    """What both kinds of config must hold: text names, and latent distances that are numbers (the metric
    mechanism's guarantee quotes them)."""
    _check(isinstance(config.name, str) and 0 < len(config.name) <= MAX_NAME_LENGTH, "name",
           f"text of 1 to {MAX_NAME_LENGTH} characters")
    _check(isinstance(config.dataset, str) and 0 < len(config.dataset) <= 500, "dataset", "text of 1 to 500 characters")
    _check(isinstance(config.permutation_seed, int) and not isinstance(config.permutation_seed, bool)
           and 0 <= config.permutation_seed < 2**32, "permutation_seed", "a whole number in 0..2**32-1")
    distances = config.latent_distances
    if distances is not None:
        _check(_positive_number(distances.d_typ) and _positive_number(distances.d_nn, zero_allowed=True)
               and _positive_number(distances.latent_l1_norm), "latent_distances",
               "finite numbers (d_typ and latent_l1_norm > 0, d_nn >= 0)")
        _check(isinstance(distances.n_records, int) and not isinstance(distances.n_records, bool)
               and distances.n_records >= 2, "latent_distances.n_records", "a whole number >= 2")
        _check(distances.weights_sha256 is None or (isinstance(distances.weights_sha256, str)
                                                    and re.fullmatch(r"[0-9a-fA-F]{64}", distances.weights_sha256)),
               "latent_distances.weights_sha256", "absent, or 64 hexadecimal digits (a SHA-256)")


def config_to_dict(config: ModelConfig) -> dict:
    return asdict(config)


def config_from_dict(data: dict) -> ModelConfig:
    """Build and validate a config from parsed JSON; unknown or ill-typed fields are refused."""
    if not isinstance(data, dict):
        raise ModelError("invalid model config: expected a JSON object")
    kind = data.get("kind")
    cls = {"image": ImageModelConfig, "tabular": TabularModelConfig}.get(kind)
    if cls is None:
        raise ModelError(f"invalid model config: kind must be 'image' or 'tabular', got {kind!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"invalid model config: format_version must be {FORMAT_VERSION}")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ModelError(f"invalid model config: unknown field(s) {sorted(unknown)}")
    values = dict(data)
    try:
        if values.get("latent_distances") is not None:
            values["latent_distances"] = LatentDistances(**values["latent_distances"])
            if values["latent_distances"].held_out not in (True, False, None):  # "false" would read as held out
                raise ModelError("invalid model config: latent_distances.held_out must be true, false or absent")
        config = cls(**values)
        config.validate()
    except ModelError:
        raise
    except (TypeError, KeyError, ValueError) as error:
        raise ModelError(f"invalid model config: {error}") from None
    return config


# --------------------------------------------------------------------------- subnets

class ConvSubnet(nn.Sequential):
    """3x3 conv -> ReLU -> 1x1 (or 3x3) conv -> ReLU -> 3x3 conv (the last zero-initialized: blocks start as
    identity). A 3x3 middle layer does more work per byte moved: see ``CONV_SUBNETS``."""

    def __init__(self, channels_in: int, channels_out: int, width: int, middle_kernel: int = 1):
        super().__init__(
            nn.Conv2d(channels_in, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, middle_kernel, padding=middle_kernel // 2), nn.ReLU(inplace=True),
            nn.Conv2d(width, channels_out, 3, padding=1),
        )
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


class DenseSubnet(nn.Sequential):
    """Linear -> ReLU -> Linear -> ReLU -> Linear (zero-initialized last layer)."""

    def __init__(self, features_in: int, features_out: int, width: int):
        super().__init__(
            nn.Linear(features_in, width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.ReLU(inplace=True),
            nn.Linear(width, features_out),
        )
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


def _permutation(node, seed: int, name: str) -> Ff.Node:
    # FrEIA's PermuteRandom reseeds NumPy's global RNG: give it an explicit seed and restore the state.
    state = np.random.get_state()
    try:
        return Ff.Node(node, Fm.PermuteRandom, {"seed": seed}, name=name)
    finally:
        np.random.set_state(state)


def _graph(nodes: list[Ff.Node], conditions: list[Ff.ConditionNode]) -> Ff.GraphINN:
    """A GraphINN whose parameters are registered in the order the nodes were declared.

    FrEIA orders ``module_list`` by a topological sort over sets, which differs between
    processes at branches; state_dict keys must not depend on that.
    """
    inn = Ff.GraphINN(nodes + conditions)
    inn.module_list = nn.ModuleList([node.module for node in nodes if node.module is not None])
    return inn


# --------------------------------------------------------------------------- traced inference

_GRAPH_MODE = threading.local()


@contextmanager
def graph_mode():
    """Run flows through FrEIA's graph, not their traces, inside this block (this thread).

    For tools that watch the operations or modules: FLOP counters, forward hooks, profilers.
    """
    before = getattr(_GRAPH_MODE, "on", False)
    _GRAPH_MODE.on = True
    try:
        yield
    finally:
        _GRAPH_MODE.on = before


def _use_graph(model: nn.Module) -> bool:
    return model.training or torch.is_grad_enabled() or getattr(_GRAPH_MODE, "on", False)


ATAN_SCALE = 0.636  # FrEIA's "ATAN" soft clamp: s = clamp * 0.636 * atan(a)


SMALL_BATCH = 4  # at most this many images per pass: their own trace (_run_subnet)
_THNN_CONV2D = getattr(torch._C._nn, "thnn_conv2d", None)  # PyTorch's direct kernel (not public API: checked)


def _direct_conv_ok(layer: nn.Module) -> bool:
    """Whether ``_run_subnet`` may run this layer through ``thnn_conv2d`` or oneDNN (what ``layer`` computes)."""
    return (type(layer) is nn.Conv2d and layer.groups == 1 and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str) and tuple(layer.dilation) == (1, 1))


@lru_cache(maxsize=1)
def _packed_conv2d():
    """``cadp._onednn.packed_conv2d`` scripted, where this PyTorch has oneDNN and it computes a convolution
    as ``conv2d`` does (checked once on a small one); else None."""
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        from cadp._onednn import packed_conv2d

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script, still supported
            function = torch.jit.script(packed_conv2d)
        generator = torch.Generator().manual_seed(0)
        x, weight = torch.randn(1, 3, 5, 5, generator=generator), torch.randn(4, 3, 3, 3, generator=generator)
        bias = torch.randn(4, generator=generator)
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), [1, 1], [1, 1], [1, 1], 1,
                                                           list(x.shape))
        with torch.inference_mode():
            same = torch.allclose(function(x, packed, bias, [1, 1], [1, 1], True),
                                  torch.relu(nn.functional.conv2d(x, weight, bias, 1, 1)), atol=1e-4)
        return function if same else None
    except (RuntimeError, AttributeError, NotImplementedError):
        return None


class _ConvPacks(nn.Module):
    """oneDNN copies of a flow's convolution weights, reordered once, for the passes of a few images.

    One image's 3x3 convolution through ``conv2d`` reorders its weights for oneDNN on every call, or
    runs in PyTorch's direct (im2col + BLAS) kernel; with the weights reordered once, one image's layers
    took 0.6 of the direct kernel's time and its whole call 0.53-0.75 of the time before (BENCHMARKS.md,
    "Twenty-seventh round"); a ReLU after a convolution is computed in the same call. The copies are buffers of this module, so a trace reads them as it reads
    parameters. They are copies: ``current()`` says whether every source weight is still what was
    copied by its version counter, which in-place changes advance (``no_grad`` or ``inference_mode``
    arithmetic, ``load_state_dict``, a foreach optimizer's step), and its storage. A change that advances
    no counter (through ``.data``, a fused optimizer's step) is not seen until the model's next
    ``train()`` or ``eval()`` (``TracedFlow.train`` drops the copies). A weight made under
    ``inference_mode`` has no counter, and a weight that requires a gradient in a pass that records one
    is not copied: the direct kernel computes those layers from the weight itself; so does it once the
    copies of one model reach ``MAX_BYTES`` (a large network is not held twice).
    """

    MAX_BYTES = 64 * 2**20

    def __init__(self):
        super().__init__()
        self._names: dict[int, str] = {}  # id(layer) -> buffer name
        self._sources: list[torch.Tensor] = []
        self._stamps: list[tuple[int, int]] = []
        self._bytes = 0

    @staticmethod
    def _stamp(weight: torch.Tensor) -> tuple[int, int]:
        return weight._version, weight.data_ptr()

    def current(self) -> bool:
        return [self._stamp(weight) for weight in self._sources] == self._stamps

    def conv(self, layer: nn.Module, u: torch.Tensor, relu: bool) -> torch.Tensor | None:
        """``layer(u)`` (then ReLU) through oneDNN with the weights copied for ``layer``; None where it can't.

        Outside a trace a missing copy is made for ``u``'s shape; a trace only reads copies made before it.
        """
        function = _packed_conv2d()
        if function is None or not _direct_conv_ok(layer) or u.dtype != torch.float32 or u.device.type != "cpu" \
                or layer.weight.is_inference() \
                or (torch.is_grad_enabled() and (u.requires_grad or layer.weight.requires_grad)):
            return None
        name = self._names.get(id(layer))
        if name is None:
            size = layer.weight.numel() * layer.weight.element_size()
            if torch.jit.is_tracing() or self._bytes + size > self.MAX_BYTES:
                return None
            self._bytes += size
            name = f"weight_{len(self._names)}"
            weight = layer.weight.detach()
            self.register_buffer(name, torch._C._nn.mkldnn_reorder_conv2d_weight(
                weight.to_mkldnn(), list(layer.padding), list(layer.stride), [1, 1], 1, list(u.shape)),
                persistent=False)
            self._names[id(layer)] = name
            self._sources.append(layer.weight)
            self._stamps.append(self._stamp(layer.weight))
        return function(u, getattr(self, name), layer.bias, list(layer.padding), list(layer.stride), relu)


def _run_subnet(subnet: nn.Module, u: torch.Tensor, small_batch: bool,
                packs: _ConvPacks | _FusedSubnets | None = None) -> torch.Tensor:
    """``subnet(u)``; with ``small_batch`` its 2-D convolutions go to oneDNN with weights reordered once
    (``packs``), where this PyTorch allows, else to PyTorch's direct (im2col) kernel; with ``_FusedSubnets`` as
    ``packs`` the whole convolutional subnet is its fused graph (``_FusedSubnets.run``).

    From a batch of two PyTorch sends these convolutions to oneDNN, reordering their weights on each
    call, which made each of these layers 1.1-3.2x slower than the direct kernel for two to four images
    (``python -m bench.profile``; BENCHMARKS.md, "Fifth round"); with the weights reordered once oneDNN
    is faster than either ("Twenty-seventh round"). Same arithmetic: results differ only by float
    rounding. (Linear layers as ``W @ x.T`` looked faster alone and made whole passes 3-10% slower:
    not used.)
    """
    if not small_batch or u.dim() != 4 or not isinstance(subnet, nn.Sequential):
        return subnet(u)
    if isinstance(packs, _FusedSubnets):
        return packs.run(subnet, u)
    layers, index = list(subnet), 0
    while index < len(layers):
        layer = layers[index]
        relu = index + 1 < len(layers) and type(layers[index + 1]) is nn.ReLU
        packed = packs.conv(layer, u, relu) if packs is not None else None
        if packed is not None:
            u, index = packed, index + (2 if relu else 1)
            continue
        if _THNN_CONV2D is not None and _direct_conv_ok(layer):
            u = _THNN_CONV2D(u, layer.weight, layer.kernel_size, layer.bias, layer.stride, layer.padding)
        else:
            u = layer(u)
        index += 1
    return u


def _affine(module: Fm.GLOWCouplingBlock, x: torch.Tensor, u: torch.Tensor, subnet: nn.Module,
            split: int, rev: bool, jac: bool = False, small_batch: bool = False,
            packs: _ConvPacks | _FusedSubnets | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One affine half of a GLOW coupling: exp(s) * x + t forward, (x - t) * exp(-s) reverse.

    Returns (output, log-determinant): the half's sum of s (negated in reverse) as FrEIA computes
    it with ``jac``, else None. ``small_batch``, ``packs``: see ``_run_subnet``.
    """
    a = _run_subnet(subnet, u, small_batch, packs)
    if a.dim() == 4:  # channels-last conv output: channel slices would be strided and slow to compute on
        a = a.contiguous()
    scale = module.clamp * ATAN_SCALE
    t = a[:, split:]
    s = torch.atan(a[:, :split]).mul_(-scale if rev else scale)  # in reverse exp(-s): sign folded in
    log_det = s.flatten(1).sum(1) if jac else None  # taken before s is exponentiated in place
    y = (x - t).mul_(s.exp_()) if rev else torch.addcmul(t, s.exp_(), x)
    return y, log_det


def _coupling(module: Fm.GLOWCouplingBlock, x: torch.Tensor, c: tuple[torch.Tensor, ...],
              rev: bool, jac: bool = False, small_batch: bool = False,
              packs: _ConvPacks | _FusedSubnets | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``GLOWCouplingBlock`` with fewer operations: (output, log-determinant with ``jac``, else None).

    With ``jac`` it supports autograd (the training pass). ``small_batch``, ``packs``: see ``_run_subnet``.
    """
    x1, x2 = x[:, :module.split_len1], x[:, module.split_len1:]
    half = partial(_affine, module, rev=rev, jac=jac, small_batch=small_batch, packs=packs)
    if not rev:
        y1, log_det1 = half(x1, torch.cat([x2, *c], 1), module.subnet2, module.split_len1)
        y2, log_det2 = half(x2, torch.cat([y1, *c], 1), module.subnet1, module.split_len2)
    else:
        y2, log_det2 = half(x2, torch.cat([x1, *c], 1), module.subnet1, module.split_len2)
        y1, log_det1 = half(x1, torch.cat([y2, *c], 1), module.subnet2, module.split_len1)
    return torch.cat([y1, y2], 1), log_det1 + log_det2 if jac else None


def _atan_clamped(module: nn.Module) -> bool:
    f_clamp = getattr(module, "f_clamp", None)
    probe = torch.tensor([-3.0, 0.5, 2.0])
    return f_clamp is not None and torch.equal(f_clamp(probe), ATAN_SCALE * torch.atan(probe))


def _is_pixel_unshuffle(module: nn.Module) -> bool:
    """Whether ``module`` is an ``IRevNetDownsampling`` whose convolution is ``pixel_unshuffle(x, 2)``.

    FrEIA's (non-legacy) form convolves each channel with a fixed 2x2, stride-2 kernel that
    moves pixel (di, dj) of each patch to channel 4 c + 2 di + dj: exactly ``pixel_unshuffle``,
    and its transposed convolution is ``pixel_shuffle``. The kernel is a (frozen) parameter in
    the state dict: checked, not assumed.
    """
    if type(module) is not Fm.IRevNetDownsampling or module.legacy_backend or module.block_size != 2:
        return False
    pattern = torch.eye(4).view(4, 1, 2, 2).repeat(module.channels, 1, 1, 1)
    kernel = module.downsample_kernel.detach()
    return kernel.shape == pattern.shape and torch.equal(kernel.cpu().float(), pattern)


class _FlowPass(nn.Module):
    """One direction of a GraphINN with fewer operations: for the traces and for training.

    Walks FrEIA's node list as ``GraphINN.forward`` does, but runs GLOW couplings through
    ``_coupling`` and skips the per-node Jacobian bookkeeping (FrEIA builds a zero tensor
    for every node without one, even with ``jac=False``). With ``jac`` it returns
    (output, log-determinant), the sum over nodes that FrEIA's ``jac=True`` returns.
    ``small_batch``: the couplings' convolutions as for a few images (``_run_subnet``), through oneDNN
    copies of their weights (``packs``, given or new) made on the first untraced call, or through the fused
    graphs of ``_FusedSubnets`` given as ``packs``, without ``jac``.
    IRevNet downsamplings run as ``pixel_unshuffle`` / ``pixel_shuffle`` (the same values, no
    convolution: 5-7 us against 20-140 us for one or two images).
    """

    def __init__(self, inn: Ff.GraphINN, rev: bool, jac: bool = False, small_batch: bool = False,
                 packs: _ConvPacks | _FusedSubnets | None = None):
        super().__init__()
        self.inn, self.rev, self.jac, self.small_batch = inn, rev, jac, small_batch
        self.packs = (packs if packs is not None else _ConvPacks()) if small_batch and not jac else None
        # (the modules themselves, not their ids: a deep copy of a model maps them to its own modules)
        self._lean = {node.module for node in inn.node_list
                      if type(node.module) is Fm.GLOWCouplingBlock and _atan_clamped(node.module)}
        self._shuffles = {node.module for node in inn.node_list if _is_pixel_unshuffle(node.module)}

    def forward(self, x: torch.Tensor, *conditions: torch.Tensor):
        inn, rev, jac = self.inn, self.rev, self.jac
        outs = {(node, 0): tensor for node, tensor in zip(inn.condition_nodes, conditions)}
        start, end = (inn.out_nodes, inn.in_nodes) if rev else (inn.in_nodes, inn.out_nodes)
        outs[start[0], 0] = x
        special = set(inn.in_nodes + inn.out_nodes + inn.condition_nodes)
        log_det = 0.0
        for node in inn.node_list[::-1 if rev else 1]:
            if node in special:
                continue
            inputs = tuple(outs[previous, channel] for previous, channel in (node.outputs if rev else node.inputs))
            c = tuple(outs[condition, 0] for condition in node.conditions)
            if node.module in self._lean:
                output, node_log_det = _coupling(node.module, inputs[0], c, rev, jac, self.small_batch, self.packs)
                results = (output,)
            elif node.module in self._shuffles:  # volume-preserving: log-determinant 0
                shuffle = nn.functional.pixel_shuffle if rev else nn.functional.pixel_unshuffle
                results, node_log_det = (shuffle(inputs[0], 2),), 0.0
            else:
                results, node_log_det = node.module(inputs, c=c, rev=rev, jac=jac) if c else \
                    node.module(inputs, rev=rev, jac=jac)
            if jac:
                log_det = log_det + node_log_det
            for index, value in enumerate(results):
                outs[node, index] = value
        last = end[0]
        out = outs[(last.outputs if rev else last.inputs)[0]]
        return (out, log_det) if jac else out


class _ScriptGate:
    """Shared and exclusive holds on this process's TorchScript runs (the flows' passes, their backward).

    oneDNN Graph's fuser is switched on for the whole process (``torch.jit.enable_onednn_fusion``) and
    acts on every graph TorchScript optimizes while it is on; a graph is optimized on its first runs
    and again on other input shapes. ``_FusedSubnets`` switches it on for one run of a subnet's graph, holding
    the gate exclusively; the passes (``TracedPasses.run``) and a fit's backward step run holding it shared,
    so none of them is optimized in that moment. (TorchScript run elsewhere in the process does not take it.)
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # exclusive holds waiting: new shared holds wait behind them

    @contextmanager
    def shared(self):
        with self._condition:
            while self._exclusive or self._waiting:
                self._condition.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._condition:
                self._shared -= 1
                if not self._shared:
                    self._condition.notify_all()

    @contextmanager
    def exclusive(self):
        with self._condition:
            self._waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._condition.wait()
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


SCRIPT_GATE = _ScriptGate()

ONEDNN_GRAPH = True  # whether passes for one or two images may be fused by oneDNN Graph (``_fused_pass``)
# fused passes for at most this many images (one: the release; two: the image page's decode of the release and the
# reconstruction): each batch size has its own (each holds its weights reordered), and the gain shrank with more
# images (``python -m bench.profile``; BENCHMARKS.md, "Twenty-eighth round")
FUSED_BATCH = 2


def _laid_out(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` with the strides of a new contiguous one (``contiguous()`` keeps a view whose size-1
    dimensions have other strides, and an expanded one's zero strides become real)."""
    return tensor.clone(memory_format=torch.contiguous_format)


class _Snapshot:
    """The version counters and storage of a module's parameters and buffers, to tell when a frozen pass
    (its weights constants, reordered once by oneDNN) is out of date: as ``_ConvPacks.current``."""

    def __init__(self, module: nn.Module):
        self._sources = [*module.parameters(), *module.buffers()]
        self._stamps = self._now()

    def _now(self) -> list[tuple[int, int]]:
        return [_ConvPacks._stamp(tensor) for tensor in self._sources]

    def current(self) -> bool:
        return self._now() == self._stamps


# The operator's state survives ``importlib.reload`` of this module (it runs again in the same namespace): the
# torch.library that defines cadp::fused_subnet (dropping it removes the operator that made graphs call), the table
# from handle to a subnet's fused graph (while it lives) and the handles' counter.
_LIBRARY: list = globals().get("_LIBRARY", [])
_FUSED_SUBNETS: dict[int, weakref.ref] = globals().get("_FUSED_SUBNETS", {})
_HANDLES = globals().get("_HANDLES", itertools.count(1))


def _call_fused_subnet(u: torch.Tensor, handle: int) -> torch.Tensor:
    """``cadp::fused_subnet``'s kernel: the fused graph of ``handle`` on ``u``."""
    subnet = _FUSED_SUBNETS.get(handle)
    subnet = subnet() if subnet is not None else None
    if subnet is None:  # (a pass holds the graphs it calls)
        raise RuntimeError(f"the fused subnet graph {handle} was freed")
    return subnet(u)


_OPERATOR_LOCK = threading.Lock()  # (two threads making their first passes at once define it once)
_OPERATOR_REFUSED: list = []  # [True] where torch.library refused to define it: not tried again


def _fused_subnet_op():
    """``torch.ops.cadp.fused_subnet(u, handle)``: a subnet's fused graph (``_FusedSubnets``) called from a traced
    pass, defined once per process; None where this PyTorch's ``torch.library`` does not allow it, or another copy of
    this module defined it (its kernel reads that copy's table: the passes here read oneDNN copies of the weights)."""
    with _OPERATOR_LOCK:
        if _LIBRARY:  # (also when defined before this module was reloaded)
            return torch.ops.cadp.fused_subnet
        if _OPERATOR_REFUSED:
            return None
        try:
            library = torch.library.Library("cadp", "DEF")
            library.define("fused_subnet(Tensor u, int handle) -> Tensor")
            library.impl("fused_subnet", _call_fused_subnet, "CPU")
        except (RuntimeError, AttributeError, TypeError, ValueError):
            _OPERATOR_REFUSED.append(True)
            return None
        _LIBRARY.append(library)
        return torch.ops.cadp.fused_subnet


class _FusedSubnets:
    """Each convolutional subnet of a flow as a graph of its own, frozen and fused by oneDNN Graph, one per input
    shape and layout, called from both directions' passes (``_fused_pass``).

    A graph fused whole holds its own weights reordered by oneDNN, and its own compiled kernels: the encode and the
    decode of one image held two sets, and taking turns between them cost about a fifth of the two passes' time
    (BENCHMARKS.md, "Thirtieth round"). Here the subnets' graphs are shared by the two directions, and the rest of a
    pass is a traced graph without the fuser that calls them through ``cadp::fused_subnet``. Each graph's fused run
    is checked against its unfused runs on the input it was made on (in the pass that first needed it).
    ``snapshot``: the flow's weights when these were made.
    """

    def __init__(self, inn: Ff.GraphINN):
        self.snapshot = _Snapshot(inn)  # before the weights are read: a change meanwhile shows as one
        # (subnet, input shape, input strides) -> (its fused graph, handle); the subnets themselves are kept
        self._graphs: dict[tuple, tuple[_GraphPass, int]] = {}

    def run(self, subnet: nn.Module, u: torch.Tensor) -> torch.Tensor:
        """``subnet(u)`` through its fused graph, made for ``u``'s shape where missing (outside a trace only: a
        trace records a call of ``cadp::fused_subnet`` on a graph made before)."""
        key = (subnet, tuple(map(int, u.shape)), u.stride())  # (a trace's sizes are tensors)
        made = self._graphs.get(key)
        if made is None:
            if torch.jit.is_tracing():
                raise RuntimeError("a subnet's fused graph is made before the pass is traced")
            made = self._graphs[key] = self._make(subnet, u)
        return _fused_subnet_op()(u, made[1])

    @staticmethod
    def _make(subnet: nn.Module, u: torch.Tensor) -> tuple[_GraphPass, int]:
        graph = _GraphPass.traced(subnet, (u,)).frozen()
        with SCRIPT_GATE.shared():
            for _ in range(max(1, torch._C._jit_get_num_profiled_runs())):
                plain = graph(u)  # profiling runs: not optimized, not fused
        with SCRIPT_GATE.exclusive():
            before = torch.jit.onednn_fusion_enabled()
            try:
                torch.jit.enable_onednn_fusion(True)
                fused = graph(u)  # optimized now, with the fuser on
            finally:
                torch.jit.enable_onednn_fusion(before)
            optimized = str(torch.jit.last_executed_optimized_graph())  # this thread's last optimized graph
        if "prim::oneDNNFusionGroup" not in optimized or not _same_result(fused, plain):
            raise RuntimeError("oneDNN Graph did not fuse this subnet, or changed its result")
        handle = next(_HANDLES)
        _FUSED_SUBNETS[handle] = weakref.ref(graph)
        weakref.finalize(graph, _FUSED_SUBNETS.pop, handle, None)
        return graph, handle


def _fusable(inn: Ff.GraphINN, x: torch.Tensor, conditions: list[torch.Tensor]) -> bool:
    """Whether a pass of ``inn`` on these inputs may be tried fused (``_fused_pass``)."""
    return ONEDNN_GRAPH and hasattr(torch.jit, "enable_onednn_fusion") and torch.backends.mkldnn.is_available() \
        and x.device.type == "cpu" and all(t.dtype == torch.float32 for t in (x, *conditions)) \
        and not torch.is_grad_enabled() \
        and not any(tensor.is_inference() for tensor in [*inn.parameters(), *inn.buffers()]) \
        and _fused_subnet_op() is not None


def _fused_pass(inn: Ff.GraphINN, x: torch.Tensor, conditions: list[torch.Tensor], rev: bool,
                subnets: _FusedSubnets) -> _GraphPass | None:
    """One direction of ``inn`` traced and frozen, its convolutional subnets called as graphs fused by oneDNN Graph
    (``subnets``, shared with the other direction), for inputs shaped and laid out as ``x`` and ``conditions``;
    None where that fails or its result is not the unfused one (``_fusable`` says where it may be tried).

    oneDNN Graph compiles each convolution with its ReLU into one partition on weights reordered once, with less
    fixed cost per call than PyTorch's oneDNN operator (BENCHMARKS.md, "Twenty-eighth round"). The fuser is switched
    on only for the run in which TorchScript optimizes a subnet's graph (the second: the first profiles it), holding
    ``SCRIPT_GATE`` exclusively, then set back; the rest of the pass is optimized with it off. Each subnet's graph is
    checked against its unfused runs (``_FusedSubnets``), and the traced pass's result on a fixed input of ``x``'s
    shape (standard normal values, seed 0) with the given conditions against the same pass run untraced (through
    the same subnet graphs): the decision does not depend on the first record's pixels or latent, only on its
    labels.

    The weights are constants of the frozen graphs: ``_Snapshot`` (``subnets.snapshot``) says when they changed (a
    change through ``.data`` or a fused optimizer's step is seen after the next ``train()``/``eval()``, for every
    weight, where the copies route missed only its convolutions'). A fused graph must only see inputs laid out as
    the ones it was made on (``TracedPasses.run`` passes contiguous copies): on other strides TorchScript
    specializes the graph again, and that graph computed wrong latents or failed (a review found it). The graphs
    are freed with their model (``_GraphPass``); some memory still stays per fused load: about 1.2 MiB per load for
    the first 40-odd loads in a process, 0.3 after (``python -m bench.fused_memory``; BENCHMARKS.md, "Thirtieth
    round").
    """
    try:
        probe = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
        flow_pass = _FlowPass(inn, rev, small_batch=True, packs=subnets)
        untraced = flow_pass(probe, *conditions)  # makes the subnets' fused graphs for these shapes
        with warnings.catch_warnings():  # (the trace records each subnet as one call of the operator)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            frozen = _GraphPass.traced(flow_pass, (probe, *conditions)).frozen()
        frozen.holds = subnets  # the graphs it calls live as long as it does
        with SCRIPT_GATE.shared():
            for _ in range(max(1, torch._C._jit_get_num_profiled_runs()) + 1):
                traced = frozen(probe, *conditions)  # profiled, then optimized (the fuser off)
    except Exception:  # any failure of an optional route: the route with weight copies
        return None
    return frozen if _same_result(traced, untraced) else None


def _same_result(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Whether a fused or traced result is the reference one up to float rounding: same dtype and shape, finite,
    within 1e-4 x (1 + the largest magnitude) everywhere (seen: 1e-6 to 4e-6 relative)."""
    return got.dtype == want.dtype and got.shape == want.shape and bool(got.isfinite().all()) \
        and bool(want.isfinite().all()) and float((got - want).abs().max()) <= 1e-4 * (1.0 + float(want.abs().max()))


class _GraphPass:
    """A traced pass held by a TorchScript compilation unit of its own, so that it is freed with its model.

    ``torch.jit.trace`` of a module registers a type for the module and each submodule in TorchScript's
    process-wide compilation unit, which keeps their graphs, and what running them adds, until the process
    ends: about 9 MiB stayed per load of an image model, 33 MiB with fused passes, and 22 MiB per table fit
    (``python -m bench.fused_memory``; BENCHMARKS.md, "Twenty-ninth round"). ``traced`` records the same operations into a
    graph whose last inputs are the module's parameters and buffers, passed again on every call (the same
    tensors: in-place changes reach the pass, as they reach a traced module); ``frozen`` makes them constants,
    as ``torch.jit.freeze`` does. Either graph is a function of a new compilation unit, dropped with the pass.
    Called as a traced module is: ``pass_(x, *conditions)``.
    """

    def __init__(self, graph: torch._C.Graph, state: tuple[torch.Tensor, ...]):
        self._unit = torch._C.CompilationUnit()
        self._function = self._unit.create_function("forward", graph)
        self._state = state
        self.holds = None  # what the graph calls and must outlive it (``_fused_pass``)

    @classmethod
    def traced(cls, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> _GraphPass:
        from torch.jit._trace import _create_interpreter_name_lookup_fn

        state = tuple(dict.fromkeys([*module.parameters(), *module.buffers()]))  # (each tensor once)
        count = len(inputs)

        def call(*tensors):
            return module(*tensors[:count])

        graph, _ = torch._C._create_graph_by_tracing(call, [*inputs, *state], _create_interpreter_name_lookup_fn(),
                                                     True, False)  # (strict, not forced out of place)
        return cls(graph, state)

    def frozen(self) -> _GraphPass:
        """This pass with its parameters and buffers as constants of its graph, optimized as ``torch.jit.freeze``
        optimizes a frozen module's (the constants share the tensors' memory, as a frozen module's do). oneDNN's
        own tensors (``_ConvPacks``' copies) cannot be constants: they stay inputs."""
        graph = self._function.graph.copy()
        inputs = list(graph.inputs())
        first = len(inputs) - len(self._state)
        graph.setInsertPoint(next(iter(graph.nodes())))  # (constants before their first use)
        kept = []
        for index, (value, tensor) in reversed(list(enumerate(zip(inputs[first:], self._state), first))):
            if tensor.layout == torch.strided:
                value.replaceAllUsesWith(graph.insertConstant(tensor.detach()))
                graph.eraseInput(index)
            else:
                kept.insert(0, tensor)
        torch._C._jit_pass_inline(graph)
        torch._C._jit_pass_constant_propagation(graph)
        torch._C._jit_pass_optimize_frozen_graph(graph, True)
        return _GraphPass(graph, tuple(kept))

    def __call__(self, *inputs: torch.Tensor):
        return self._function(*inputs, *self._state)

    @property
    def inlined_graph(self) -> torch._C.Graph:
        """The graph with the scripted functions it calls inlined (``_packed_conv2d``), as TorchScript runs it."""
        return self._function.inlined_graph


def _trace(module: nn.Module, inputs: tuple[torch.Tensor, ...]):
    """``module`` traced on ``inputs`` as a ``_GraphPass``; with ``torch.jit.trace`` where that fails (the tracer's
    graph entry point and compilation units are not public API: another PyTorch may lack them or call them
    otherwise)."""
    try:
        return _GraphPass.traced(module, inputs)
    except (ImportError, AttributeError, TypeError, RuntimeError):
        return torch.jit.trace(module, inputs, check_trace=False)


class TracedPasses:
    """TorchScript traces of a flow's inference passes, made on first use per direction and device.

    A table row or a single image is a few hundred small operations; run eagerly through
    FrEIA's graph, Python overhead is most of the time, and a trace runs the same operations
    2-4x faster at batch 1 (bench/). The traces share the flow's parameters (in-place loads
    reach them), but for the oneDNN copies below; ``clear()`` drops them when the module moves to
    another device or dtype.
    The models use them for inference in eval mode without gradients, and for a table model's
    likelihood (``jac=True``, with autograd, also while training), outside ``graph_mode()``.
    (Freezing the traces with ``torch.jit.optimize_for_inference`` gained under 5% per table
    row here and would need re-tracing after every in-place weight change: not used.) A pass for one or
    two images is frozen and calls its convolutional subnets as graphs fused by oneDNN Graph (``_fused_pass``,
    one set for both directions), or where that fails reads oneDNN copies of the convolutions' weights
    (``_ConvPacks``, one set for both directions): either is made
    again when ``current()`` finds a weight changed since it was made, or after ``forget_copies()``.
    """

    def __init__(self):
        # key -> (trace, the weights' copies it reads or the snapshot of a frozen one, or None): one dict,
        # replaced whole by clear()
        self._entries: dict[tuple, tuple[_GraphPass | torch.jit.ScriptModule, _ConvPacks | _Snapshot | None]] = {}
        self._packs: _ConvPacks | None = None  # the copies new passes for few images read
        self._subnets: _FusedSubnets | None = None  # the fused subnets new fused passes call
        self._lock = threading.Lock()
        self.fuse = True  # whether this flow's passes for one or two images may be fused (with ONEDNN_GRAPH)

    def clear(self) -> None:
        with self._lock:  # (not while a pass is being made: it would be stored into the new, empty table)
            self._entries, self._packs, self._subnets = {}, None, None

    def __deepcopy__(self, memo) -> TracedPasses:
        """None of the passes (``copy.deepcopy`` of a model): a copy's passes are made on its first use, reading
        its own weights (a pass reads its model's tensors; a compilation unit cannot be copied)."""
        passes = TracedPasses()
        passes.fuse = self.fuse
        return passes

    def forget_copies(self) -> None:
        """Drop the passes that hold or read copies of the weights (frozen or ``_ConvPacks``: made again on next
        use)."""
        with self._lock:
            self._forget_copies()

    def _forget_copies(self) -> None:  # (with the lock held)
        self._entries = {key: entry for key, entry in self._entries.items() if entry[1] is None}
        self._packs = self._subnets = None

    def _current(self, key: tuple) -> _GraphPass | torch.jit.ScriptModule | None:
        """The pass for ``key`` if one was made and the weights it copied are unchanged, else None."""
        traced, packs = self._entries.get(key, (None, None))
        return traced if packs is None or packs.current() else None

    def run(self, inn: Ff.GraphINN, x: torch.Tensor, conditions: list[torch.Tensor], rev: bool,
            jac: bool = False, small_batch: bool = False):
        """The pass; with ``jac``, (output, log-determinant) as ``_FlowPass(jac=True)`` (autograd works).

        ``small_batch``: a separate trace with the convolutions as for a few images (``_run_subnet``).
        """
        key = (rev, jac, small_batch, x.device, x.dtype, tuple(x.shape[1:]),
               tuple((tuple(c.shape[1:]), c.dtype) for c in conditions),
               len(x) if small_batch and not jac and ONEDNN_GRAPH and self.fuse and len(x) <= FUSED_BATCH else 0)
        if key[-1]:  # a fused pass sees the layout it was made on, always (``_fused_pass``)
            x, conditions = _laid_out(x), [_laid_out(c) for c in conditions]
        traced = self._current(key)
        if traced is None:
            traced = self._make(key, inn, x, conditions)
        with SCRIPT_GATE.shared():
            return traced(x, *conditions)

    def _make(self, key: tuple, inn: Ff.GraphINN, x: torch.Tensor, conditions: list[torch.Tensor]):
        """The pass for ``key`` (rev, jac, small_batch, ...), made unless another thread made it meanwhile.

        For a few images (``small_batch``, no ``jac``) a pass fused by oneDNN Graph (``_fused_pass``) where it
        can be made, else one that reads oneDNN copies of the convolutions' weights (``_ConvPacks``).
        """
        rev, jac, small_batch = key[:3]
        with self._lock:
            traced = self._current(key)
            if traced is not None:
                return traced
            if self._packs is not None and not self._packs.current():
                self._forget_copies()  # every pass that reads them: the other direction's too
            if key[-1] and _fusable(inn, x, conditions):
                subnets = self._subnets
                if subnets is None or not subnets.snapshot.current():
                    if subnets is not None:  # the passes that call the old graphs are out of date too: dropped
                        self._entries = {other: entry for other, entry in self._entries.items()
                                         if entry[1] is not subnets.snapshot}
                    subnets = self._subnets = _FusedSubnets(inn)
                fused = _fused_pass(inn, x, conditions, rev, subnets)
                if fused is not None:
                    self._entries[key] = (fused, subnets.snapshot)
                    return fused
                if not any(entry[1] is subnets.snapshot for entry in self._entries.values()):
                    self._subnets = None  # no pass calls the graphs made on the way: freed
            if self._packs is None:
                self._packs = _ConvPacks()
            flow_pass = _FlowPass(inn, rev, jac, small_batch, self._packs)
            with warnings.catch_warnings(), SCRIPT_GATE.shared():  # (both run the scripted convolution)
                if flow_pass.packs is not None:
                    flow_pass(x, *conditions)  # untraced: copies the weights for these shapes
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)  # (_trace's fallback, torch.jit.trace)
                traced = _trace(flow_pass, (x, *conditions))
            packs = flow_pass.packs if flow_pass.packs is not None and flow_pass.packs._names else None
            self._entries[key] = (traced, packs)
            return traced


class NumpyFlow:
    """A fully connected flow's inference passes in NumPy, for a few rows at a time.

    A table row through the flow is ~300 tiny operations; NumPy runs most of them in under
    a microsecond where TorchScript's interpreter and torch's dispatcher take 1-3 (a third
    to a half less per pass from 1 to 64 rows: ``python -m bench.profile``, BENCHMARKS.md).
    The same float32 operations as ``_coupling``; tests compare it with FrEIA's graph. It holds NumPy views
    of the parameters: in-place weight changes show; ``current()`` is False once a parameter
    has been given other storage (``p.data = ...``), and the owner then builds a new one.
    """

    MAX_ROWS = 64  # above this, the trace (and torch's threads) catch up (python -m bench.profile)

    def __init__(self, steps: list[tuple], parameters: list[torch.Tensor]):
        self._steps = steps
        self._parameters = parameters
        self._pointers = [p.data_ptr() for p in parameters]

    @classmethod
    def of(cls, inn: Ff.GraphINN) -> NumpyFlow | None:
        """For a chain of atan-clamped GLOW couplings with Linear/ReLU subnets, all given the one condition,
        and random permutations; else None."""
        special = set(inn.in_nodes + inn.out_nodes + inn.condition_nodes)
        steps, parameters, previous = [], [], inn.in_nodes[0] if len(inn.in_nodes) == 1 else None
        if len(inn.condition_nodes) != 1:
            return None
        for node in inn.node_list:
            if node in special:
                continue
            module = node.module
            if previous is None or [source for source, _ in node.inputs] != [previous]:
                return None
            previous = node
            if type(module) is Fm.PermuteRandom:
                steps.append(("permute", module.perm.numpy(), module.perm_inv.numpy()))
            elif type(module) is Fm.GLOWCouplingBlock and _atan_clamped(module) and module.ndims == 1 \
                    and node.conditions == inn.condition_nodes:
                subnets = []
                for subnet in (module.subnet1, module.subnet2):
                    layers = []
                    for layer in subnet:
                        if type(layer) is nn.Linear and layer.bias is not None:
                            weight = layer.weight.detach()
                            if weight.dtype != torch.float32 or weight.device.type != "cpu":
                                return None
                            layers.append((weight.numpy().T, layer.bias.detach().numpy()))
                            parameters += [layer.weight, layer.bias]
                        elif type(layer) is nn.ReLU:
                            layers.append(None)
                        else:
                            return None
                    subnets.append(layers)
                steps.append(("couple", module.split_len1, module.split_len2, module.clamp * ATAN_SCALE, *subnets))
            else:
                return None
        if previous is None or [source for source, _ in inn.out_nodes[0].inputs] != [previous]:
            return None
        return cls(steps, parameters)

    def current(self) -> bool:
        return [p.data_ptr() for p in self._parameters] == self._pointers

    def run(self, x: np.ndarray, condition: np.ndarray, rev: bool) -> np.ndarray:
        for step in reversed(self._steps) if rev else self._steps:
            if step[0] == "permute":
                x = x[:, step[2] if rev else step[1]]
                continue
            _, split1, split2, scale, subnet1, subnet2 = step
            x1, x2 = x[:, :split1], x[:, split1:]
            if not rev:
                y1 = self._affine(x1, np.concatenate([x2, condition], 1), subnet2, split1, scale, rev)
                y2 = self._affine(x2, np.concatenate([y1, condition], 1), subnet1, split2, scale, rev)
            else:
                y2 = self._affine(x2, np.concatenate([x1, condition], 1), subnet1, split2, scale, rev)
                y1 = self._affine(x1, np.concatenate([y2, condition], 1), subnet2, split1, scale, rev)
            x = np.concatenate([y1, y2], 1)
        return x

    @staticmethod
    def _affine(x, u, layers, split, scale, rev):
        for layer in layers:
            if layer is None:
                np.maximum(u, 0, out=u)
            else:
                u = u @ layer[0]
                u += layer[1]
        s = np.arctan(u[:, :split])
        s *= -scale if rev else scale
        np.exp(s, out=s)
        t = u[:, split:]
        if rev:
            y = x - t
            y *= s
            return y
        y = s * x
        y += t
        return y


class TracedFlow:
    """Mixin for an ``nn.Module`` with a FrEIA graph ``inn`` and a ``TracedPasses`` in ``_traced``."""

    # whether inference passes of up to SMALL_BATCH records use their own trace (``_run_subnet``);
    # table models run few rows through NumpyFlow instead
    _small_batch_forms = False

    def train(self, mode: bool = True):
        """As ``nn.Module.train`` (and so ``eval()``); drops the passes that read oneDNN copies of the weights,
        which a change that advances no version counter (a fused optimizer's step, ``.data``) would leave stale
        (``_ConvPacks``)."""
        traced = self.__dict__.get("_traced")
        if traced is not None:
            traced.forget_copies()
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``; the passes are made again on next use.

        In-place loads would reach the traces, but a pass decides per module from the weights it
        sees (``_is_pixel_unshuffle``), and ``assign=True`` gives the parameters new storage.
        """
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._forget_passes()
        return result

    def _apply(self, fn, recurse: bool = True):
        self._forget_passes()  # traces and NumPy views hold the old device's tensors
        self.__dict__.pop("_device", None)
        return super()._apply(fn, recurse)

    def _forget_passes(self) -> None:
        """Drop the traces, the NumPy flow and the eager likelihood pass: made again on next use."""
        self._traced.clear()
        for name in ("_numpy", "_log_det_pass"):
            self.__dict__.pop(name, None)

    @property
    def device(self) -> torch.device:
        """Where the parameters are (remembered until the module moves: looking it up was per call)."""
        device = self.__dict__.get("_device")
        if device is None:
            device = self.__dict__["_device"] = next(self.parameters()).device
        return device

    def _flow(self, x: torch.Tensor, conditions: list[torch.Tensor], rev: bool) -> torch.Tensor:
        """The flow in one direction: FrEIA's graph when training or with gradients; for inference,
        NumPy for a few rows of a fully connected flow on the CPU, else traced."""
        if _use_graph(self):
            return self.inn(x, c=conditions, rev=rev, jac=False)[0]
        if len(x) <= NumpyFlow.MAX_ROWS and len(conditions) == 1 and x.dim() == 2 and x.device.type == "cpu" \
                and x.dtype == torch.float32 and conditions[0].dtype == torch.float32:
            flow = self._numpy_flow()
            if flow is not None:
                return torch.from_numpy(flow.run(x.numpy(), conditions[0].numpy(), rev))
        small_batch = self._small_batch_forms and len(x) <= SMALL_BATCH and x.device.type == "cpu"
        return self._traced.run(self.inn, x, conditions, rev, small_batch=small_batch)

    def _numpy_flow(self) -> NumpyFlow | None:
        cached = self.__dict__.get("_numpy")
        if cached is not None and (cached[0] is None or cached[0].current()):
            return cached[0]
        flow = NumpyFlow.of(self.inn)
        self.__dict__["_numpy"] = (flow,)
        return flow

    def _flow_log_det(self, x: torch.Tensor, conditions: list[torch.Tensor],
                      traced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass and its log-determinant, for likelihoods and training (autograd works).

        With the lean couplings: eager, or with ``traced`` a TorchScript trace (fewer Python and
        autograd steps; a table fit's step: ``python -m bench.profile``); FrEIA's graph inside
        ``graph_mode()``.
        """
        if getattr(_GRAPH_MODE, "on", False):
            return self.inn(x, c=conditions)
        if traced:
            return self._traced.run(self.inn, x, conditions, rev=False, jac=True)
        lean = self.__dict__.get("_log_det_pass")  # not a registered submodule: no second copy of the weights
        if lean is None:
            lean = self.__dict__["_log_det_pass"] = _FlowPass(self.inn, rev=False, jac=True)
        return lean(x, *conditions)


# --------------------------------------------------------------------------- image cINN

def build_image_graph(config: ImageModelConfig) -> Ff.GraphINN:
    """Multi-scale graph: downsample, conv couplings at two scales, split, fully connected couplings."""
    size, channels, classes = config.image_size, config.channels, config.num_classes
    cond_half = Ff.ConditionNode(classes, size // 2, size // 2, name="label 1/2")
    cond_quarter = Ff.ConditionNode(classes, size // 4, size // 4, name="label 1/4")
    cond_flat = Ff.ConditionNode(classes, name="label")
    conv = partial(ConvSubnet, width=config.conv_width, middle_kernel=CONV_SUBNETS[config.conv_subnet])
    dense = partial(DenseSubnet, width=config.fc_width)
    seed = config.permutation_seed

    nodes = [Ff.InputNode(channels, size, size, name="logit pixels")]
    for scale, (blocks, condition) in enumerate(zip(config.conv_blocks, (cond_half, cond_quarter))):
        nodes.append(Ff.Node(nodes[-1], Fm.IRevNetDownsampling, {}, name=f"downsample {scale}"))
        for block in range(blocks):
            nodes.append(Ff.Node(nodes[-1], Fm.GLOWCouplingBlock,
                                 {"subnet_constructor": conv, "clamp": config.clamp},
                                 conditions=condition, name=f"conv coupling {scale}.{block}"))
            nodes.append(_permutation(nodes[-1], seed, f"conv permutation {scale}.{block}"))
            seed += 1
    split = Ff.Node(nodes[-1], Fm.Split, {"n_sections": 2, "dim": 0}, name="split")
    split_out = Ff.Node(split.out0, Fm.Flatten, {}, name="flatten split")
    nodes += [split, split_out]
    nodes.append(Ff.Node(split.out1, Fm.Flatten, {}, name="flatten"))
    for block in range(config.fc_blocks):
        nodes.append(Ff.Node(nodes[-1], Fm.GLOWCouplingBlock,
                             {"subnet_constructor": dense, "clamp": config.clamp},
                             conditions=cond_flat, name=f"fc coupling {block}"))
        nodes.append(_permutation(nodes[-1], seed, f"fc permutation {block}"))
        seed += 1
    concat = Ff.Node([split_out.out0, nodes[-1].out0], Fm.Concat, {"dim": 0}, name="concat")
    nodes += [concat, Ff.OutputNode(concat, name="latent")]
    return _graph(nodes, [cond_half, cond_quarter, cond_flat])


# integer dtypes whose minimum and maximum torch computes on every device (not uint16/32/64 on the CPU)
_ANY_MINMAX_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


@dataclass(frozen=True)
class ClassIndices:
    """Image labels said to be class indices: ``privatize(model, pixels, ClassIndices(labels), mechanism)``.

    A whole number that is also another class's name is refused as ambiguous (``class_indices``); wrapped here it
    is read as an index, as code that holds indices (a dataset's labels, ``torch.arange(classes)``) means it."""

    values: object  # a whole number, or a list, array or tensor of them


@lru_cache(maxsize=16)
def _index_name_clashes(class_names: tuple[str, ...]) -> dict[int, int]:
    """Whole numbers that, as labels, name one class as an index and another as text: the number -> the index of
    the class named by its text (class folders 1, 2, 10 give the names "1", "10", "2": 1 is "10" as an index)."""
    clashes = {}
    for position, name in enumerate(class_names):
        try:
            number = int(name)
        except (TypeError, ValueError):
            continue
        if str(number) == name and not (0 <= number < len(class_names) and class_names[number] == name):
            clashes[number] = position
    return clashes


def _clash_message(number: int, named: int, class_names: list[str]) -> str:
    as_index = (f"as a class index it means the class {class_names[number]!r} (class_names[{number}])"
                if 0 <= number < len(class_names) else
                f"as a class index it is out of range (0..{len(class_names) - 1})")
    both = f"{class_names[number]!r} for the class at index {number}, " if 0 <= number < len(class_names) else ""
    indices = (f" (or say that numbers are indices: cadp.models.ClassIndices([{number}]))"
               if 0 <= number < len(class_names) else "")
    return (f"label {number} is ambiguous: {as_index}, but {str(number)!r} is also a class name (index {named}). "
            f"Give the class name as text: {both}{str(number)!r} for the class named {str(number)!r}{indices}")


def class_indices(labels, class_names: list[str]) -> torch.Tensor:
    """Class indices (or class names) as an int64 tensor (B,); fractions, booleans, unknown names and indices
    outside 0..K-1 refused. The one reading of an image model's labels (privatize, the audit, ``sample``).

    A whole number that is also another class's name (class names "1", "10", "2": 1 is the index of "10") is
    refused as ambiguous: give names as text there, or wrap indices in ``ClassIndices``. Where names and indices
    agree (MNIST's "0".."9") numbers are indices as everywhere."""
    if labels is None:
        raise InputError("labels are required for images: one class index (or name) per image")
    if isinstance(labels, ClassIndices):
        labels, clashes = labels.values, {}
    else:
        clashes = _index_name_clashes(tuple(class_names))
    whole = isinstance(labels, torch.Tensor) and labels.numel() and labels.dtype in _ANY_MINMAX_DTYPES
    if whole and not clashes:  # one range check (where a number can also be a name: each label, below)
        low, high = (int(bound) for bound in torch.aminmax(labels))  # (the loop below: ~50 us for one image)
        if 0 <= low and high < len(class_names):
            return labels.detach().reshape(-1).to(device="cpu", dtype=torch.int64, copy=True)
    values = np.asarray(labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels, dtype=object).reshape(-1)
    indices = []
    for value in values.tolist():
        if isinstance(value, str):
            if value not in class_names:
                raise InputError(f"label {value!r} is not one of the model's classes {class_names}")
            indices.append(class_names.index(value))
        elif ((isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)))
              or (isinstance(value, (float, np.floating)) and float(value).is_integer())):
            if int(value) in clashes:  # a kept label is released exactly: never guess between index and name
                raise InputError(_clash_message(int(value), clashes[int(value)], class_names))
            indices.append(int(value))
        else:
            raise InputError(f"labels must be class indices or class names, got {value!r}")
    outside = [index for index in indices if not 0 <= index < len(class_names)]
    if outside:
        raise InputError(f"label {outside[0]} is out of range: labels must be class indices 0..{len(class_names) - 1} "
                         f"(or the class names {class_names})")
    return torch.tensor(indices, dtype=torch.int64)


class ImageCINN(TracedFlow, nn.Module):
    """Class-conditional INN on images; pixels in [0, 255], latent z in R^D."""

    _small_batch_forms = True

    def __init__(self, config: ImageModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.inn = build_image_graph(config)
        self._traced = TracedPasses()
        # oneDNN's CPU convolutions skip a layout reorder per call on channels-last weights (bench/: ~25% faster)
        self.to(memory_format=torch.channels_last)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def condition(self, labels: torch.Tensor) -> list[torch.Tensor]:
        """One-hot labels (B,) int or (B, K) float, broadcast spatially for the conv stages."""
        device = self.device
        if labels.dim() == 1:
            labels = nn.functional.one_hot(labels.long().to(device), self.config.num_classes)
        one_hot = labels.float().to(device)
        size = self.config.image_size
        return [one_hot[:, :, None, None].expand(-1, -1, size // 2, size // 2),
                one_hot[:, :, None, None].expand(-1, -1, size // 4, size // 4),
                one_hot]

    def _to_logit(self, pixels: torch.Tensor, dequantization: torch.Tensor | None, log_det: bool = True):
        """(logit, log-determinant per image); the log-determinant None without ``log_det`` (encode needs none)."""
        alpha = self.config.logit_alpha
        offset = 0.5 if dequantization is None else dequantization
        unit = (pixels.float() + offset) / 256.0
        squashed = alpha + (1 - 2 * alpha) * unit
        log_squashed, log_rest = torch.log(squashed), torch.log1p(-squashed)
        logit = log_squashed - log_rest
        if not log_det:
            return logit, None
        return logit, (math.log(1 - 2 * alpha) - math.log(256.0) - log_squashed - log_rest).flatten(1).sum(1)

    def _from_logit(self, logit: torch.Tensor) -> torch.Tensor:
        alpha = self.config.logit_alpha
        unit = (torch.sigmoid(logit) - alpha) / (1 - 2 * alpha)
        return unit * 256.0 - 0.5

    def encode(self, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Latent (B, D) of pixel values in [0, 255] given class labels."""
        _check_pairs(pixels, labels, "images", "labels")
        device = self.device
        logit, _ = self._to_logit(pixels.to(device), None, log_det=False)
        return self._flow(logit, self.condition(labels), rev=False)

    def decode(self, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pixel values (B, C, H, W), unclamped, of latents (B, D) given class labels."""
        _check_pairs(latent, labels, "latents", "labels")
        device = self.device
        return self._from_logit(self._flow(latent.to(device), self.condition(labels), rev=True))

    def bits_per_dim(self, pixels: torch.Tensor, labels: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image negative log-likelihood in bits/dim on [0, 256), uniform dequantization."""
        device = self.device
        pixels = pixels.to(device)
        noise = torch.rand(pixels.shape, generator=generator, device="cpu").to(device)
        logit, log_det_pre = self._to_logit(pixels, noise)
        z, log_det = self._flow_log_det(logit, self.condition(labels))
        dims = z.shape[1]
        nll = 0.5 * (z ** 2).sum(1) + 0.5 * dims * math.log(2 * math.pi) - log_det - log_det_pre
        return nll / (dims * math.log(2))

    @torch.inference_mode()
    def sample(self, labels: torch.Tensor | list, temperature: float = 0.7,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Class-conditional samples (B, C, H, W), pixel values clamped to [0, 255], one per label.

        ``labels``: a tensor or list of class indices (or class names); latents are N(0, T^2 I) at
        ``temperature`` T >= 0.
        """
        if isinstance(labels, torch.Tensor) and labels.dim() > 1:
            raise InputError(f"labels must be one class index (or name) per sample, shape (B,), got shape "
                             f"{tuple(labels.shape)}")
        labels = class_indices(labels, self.config.class_names)
        if len(labels) == 0:
            raise InputError("labels must hold at least one class index (or name): one sample per label")
        _check_temperature(temperature)
        z = float(temperature) * torch.randn(len(labels), self.latent_dim, generator=generator)
        return self.decode(z, labels).clamp(0, 255)


# --------------------------------------------------------------------------- tabular cINN

def build_tabular_graph(config: TabularModelConfig) -> Ff.GraphINN:
    """Fully connected GLOW couplings with random permutations, conditioned on the kept columns."""
    condition = Ff.ConditionNode(max(config.condition_dim, 1), name="conditions")
    dense = partial(DenseSubnet, width=config.width)
    nodes = [Ff.InputNode(config.latent_dim, name="encoded row")]
    for block in range(config.blocks):
        nodes.append(Ff.Node(nodes[-1], Fm.GLOWCouplingBlock,
                             {"subnet_constructor": dense, "clamp": config.clamp},
                             conditions=condition, name=f"coupling {block}"))
        nodes.append(_permutation(nodes[-1], config.permutation_seed + block, f"permutation {block}"))
    nodes.append(Ff.OutputNode(nodes[-1], name="latent"))
    return _graph(nodes, [condition])


class TabularCINN(TracedFlow, nn.Module):
    """Conditional INN on encoded table rows (see ``cadp.data.TabularEncoder``)."""

    def __init__(self, config: TabularModelConfig):
        super().__init__()
        from cadp.data import TabularEncoder

        config.validate()
        self.config = config
        self.data_encoder = TabularEncoder.from_dict(config.data_encoder)
        self.condition_encoder = TabularEncoder.from_dict(config.condition_encoder)
        self.inn = build_tabular_graph(config)
        self._traced = TracedPasses()

    def _pass(self, x: torch.Tensor, condition: torch.Tensor, rev: bool) -> torch.Tensor:
        _check_pairs(x, condition, "latents" if rev else "rows", "condition rows")
        device = self.device
        return self._flow(x.float().to(device), [self._condition(condition)], rev)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def _condition(self, condition: torch.Tensor) -> torch.Tensor:
        device = self.device
        if condition.shape[1] == 0:  # no condition columns: a constant input
            return torch.zeros(condition.shape[0], 1, device=device)
        return condition.float().to(device)

    def encode(self, rows: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self._pass(rows, condition, rev=False)

    def decode(self, latent: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self._pass(latent, condition, rev=True)

    @torch.inference_mode()
    def sample_frame(self, count: int, temperature: float = 1.0,
                     generator: torch.Generator | None = None) -> pd.DataFrame:
        """Rows drawn from the model: conditions from their stored frequencies (uniform where none), latents
        N(0, T^2 I); ``count`` >= 1 rows, ``temperature`` T >= 0."""
        from cadp.mechanisms import resample

        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InputError(f"count must be a whole number >= 1 (how many rows to draw), got {count!r}")
        count = int(count)
        _check_temperature(temperature)
        condition_values = {}
        for spec in self.condition_encoder.columns:
            prior = self.config.condition_priors.get(spec.name) or [1.0 / spec.width] * spec.width
            condition_values[spec.name] = [spec.categories[i] for i in resample(count, prior, generator).tolist()]
        condition = self.condition_encoder.transform(pd.DataFrame(condition_values, index=range(count)))
        latent = temperature * torch.randn(count, self.latent_dim, generator=generator)
        frame = self.data_encoder.inverse_transform(self.decode(latent, condition).cpu())
        conditions = self.condition_encoder.inverse_transform(condition)
        return pd.concat([frame, conditions], axis=1)

    def nll_per_dim(self, rows: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per encoded dimension, in nats."""
        z, log_det = self._flow_log_det(rows.float(), [self._condition(condition)], traced=True)
        dims = z.shape[1]
        return (0.5 * (z ** 2).sum(1) + 0.5 * dims * math.log(2 * math.pi) - log_det) / dims


def warm_up(model: ImageCINN | TabularCINN, runs: int = 2) -> None:
    """Make the inference passes that a page's first Privatize needs, on placeholder inputs (zeros).

    Each traced pass is traced on its first call and optimized by TorchScript's executor on the
    next; the app runs this in a background thread when it loads a model (``ui.load_model``)
    rather than on a user's first press. Images: one encoded image and two decoded ones (the release and the reconstruction);
    tables: more rows than ``NumpyFlow`` takes (the bundled tables' pages; fewer rows need no trace).
    """
    with torch.inference_mode():
        for _ in range(runs):
            if isinstance(model, ImageCINN):
                config = model.config
                pixels = torch.zeros(1, config.channels, config.image_size, config.image_size)
                latent = model.encode(pixels, torch.zeros(1, dtype=torch.long))
                model.decode(latent.repeat(2, 1), torch.zeros(2, dtype=torch.long))
            else:
                rows = NumpyFlow.MAX_ROWS + 1
                condition = torch.zeros(rows, model.config.condition_dim)
                model.decode(model.encode(torch.zeros(rows, model.latent_dim), condition), condition)


def build_model(config: ModelConfig) -> ImageCINN | TabularCINN:
    """The network a config describes, with freshly initialized weights."""
    return ImageCINN(config) if config.kind == "image" else TabularCINN(config)


def check_permutations(model: nn.Module, where: str) -> None:
    """Refuse a model whose random permutations are not ones: each PermuteRandom's ``perm`` must hold 0..n-1 once
    each and ``perm_inv`` its inverse (``perm_inv[perm] == 0..n-1``). They are loaded with the weights, overriding
    ``permutation_seed``: an index out of range fails at release, a repeated one or a wrong inverse makes a flow
    whose decode does not undo its encode. ``where``: the weights file, for the message."""
    for name, module in model.named_modules():
        if type(module) is not Fm.PermuteRandom:
            continue
        perm, perm_inv = module.perm.detach(), module.perm_inv.detach()
        indices = torch.arange(len(perm), dtype=perm.dtype, device=perm.device)
        for key, tensor in (("perm", perm), ("perm_inv", perm_inv)):
            if not torch.equal(torch.sort(tensor).values, indices):
                raise ModelError(f"{where}: tensor {name}.{key} is not a permutation (each of 0..{len(perm) - 1} "
                                 "once): the flow could not be inverted")
        if not torch.equal(perm_inv[perm], indices):
            raise ModelError(f"{where}: tensor {name}.perm_inv is not the inverse of {name}.perm: the flow could not "
                             "be inverted")


# --------------------------------------------------------------------------- classifier

def _check_pairs(records: torch.Tensor, conditions: torch.Tensor, what: str, of: str) -> None:
    """One condition per record (InputError otherwise, before a flow pass fails deep inside with torch's words)."""
    if len(records) != len(conditions):
        raise InputError(f"got {len(records):,} {what} but {len(conditions):,} {of}: give one per record")


def _check_temperature(temperature) -> None:
    """A sampling temperature: a finite number >= 0 (InputError otherwise)."""
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating))
            or not math.isfinite(temperature) or temperature < 0):
        raise InputError(f"temperature must be a finite number >= 0 (e.g. 0.7), got {temperature!r}")


def checked_pixel_values(pixels: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """``pixels`` as float32 values on [0, 255], and notes on how they were read; non-finite values, values out of
    range and images scaled to [0, 1] refused (InputError)."""
    if pixels.dtype == torch.bool or pixels.is_complex():
        raise InputError(f"pixel values must be numbers in [0, 255], got {pixels.dtype}")
    given_pixels, pixels = pixels, pixels.float()
    if pixels.numel() == 0:
        raise InputError("no pixel values were given")
    low, high = (float(bound) for bound in torch.aminmax(pixels))  # NaN in, NaN out: fails both comparisons
    if not (low >= 0 and high <= 255):
        raise InputError("pixel values must be finite and within [0, 255]")
    # the usual mistake: an image scaled to [0, 1] would be read as near black (fractions looked for as given)
    if high <= 1 and given_pixels.is_floating_point() and bool(((given_pixels > 0) & (given_pixels < 1)).any()):
        raise InputError("pixel values look scaled to [0, 1]; give values in [0, 255] (multiply by 255)")
    notes = []
    if high == 1:  # only 0s and 1s: a 0/1 mask, or an 8-bit image that is nearly black; cannot tell
        notes.append("every pixel is 0 or 1, read as values in [0, 255] (nearly black); if these images were "
                     "scaled to [0, 1], multiply them by 255")
    return pixels, notes


class SmallCNN(nn.Module):
    """A small CNN classifier on pixel values [0, 255] (used to suggest labels and score samples)."""

    def __init__(self, num_classes: int, channels: int = 1, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25),
                                  nn.Linear(64 * (image_size // 4) ** 2, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels.float() / 255.0 - 0.5))

    @torch.inference_mode()
    def predict_proba(self, pixels: torch.Tensor, checked: bool = True) -> torch.Tensor:
        """Class probabilities (B, classes) of images (B, C, H, W) of pixel values on [0, 255]: a caller's images
        scaled to [0, 1] (where the scores would be meaningless) or out of range are refused (InputError);
        ``checked=False`` for images the package made itself (a model's samples, which a model of 0/1 masks draws
        near 0 and 1, or a dataset already read)."""
        self.eval()
        pixels = checked_pixel_values(torch.as_tensor(pixels))[0] if checked else torch.as_tensor(pixels)
        return torch.softmax(self(pixels), dim=1)
