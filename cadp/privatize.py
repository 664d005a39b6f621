"""x -> z -> M(z) -> x': privatize images and table rows, batched.

    python -m cadp.privatize --model weights/mnist-cinn --mechanism laplace --epsilon 1 INPUT OUTPUT

INPUT is a folder of images (labels from class sub-folders or a labels CSV), a
ZIP of such a folder, or a CSV of rows; OUTPUT is a folder with the privatized
files and a manifest CSV.
"""

# ruff: noqa: E402 (the command line's Ctrl-C handler comes before the libraries it loads)
from __future__ import annotations

import functools
import math
import sys

if __name__ == "__main__":  # the command line: Ctrl-C while its libraries load is noted (cadp.startup), never lost
    from cadp.startup import note_stop_signals

    note_stop_signals()

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cadp.compare import counted, plural
from cadp.data import PUBLIC_DATASETS, ColumnSpec, FrameCells, whole_numbers
from cadp.errors import InputError, ModelError
from cadp.mechanisms import (
    UNKNOWN_ORIGIN,
    ConditionHandling,
    Mechanism,
    MetricMechanism,
    NoNoise,
    PaperMechanism,
    batch_sizes,
    epsilon_terms,
    exact,
    generator_seed,
    keep_probability,
    new_generator,
    release_condition,
    stated,
    stated_total,
    total_epsilon,
)
from cadp.models import DISTANCES_OF_OTHER_WEIGHTS, ImageCINN, TabularCINN, checked_pixel_values, class_indices

NOT_PRIVATE_SEED = "not private: reproducible seed"
CALLER_GENERATOR = ("not known to be private: torch.Generator() starts from the same seed every time, and torch's CPU "
                    "generator keeps only 32 bits of any seed, so its noise can be found by trying every seed; "
                    "cadp.mechanisms.new_generator() without a seed draws the noise from the operating system")
UPLOAD_DATASET = "upload"  # config.dataset of a model fitted on the rows it then releases


@dataclass
class PrivatizationResult:
    """Everything one privatization produced.

    Images: tensors of pixel values (B, C, H, W) on [0, 255] (privatized clamped).
    Tables: encoded rows (B, width) plus decoded frames.
    """

    original: torch.Tensor
    reconstruction: torch.Tensor | None  # None when privatize ran with reconstruct=False
    privatized: torch.Tensor
    latent: torch.Tensor
    noisy_latent: torch.Tensor
    condition: dict[str, torch.Tensor]
    released_condition: dict[str, torch.Tensor]
    mechanism: dict
    epsilon_latent: float | None
    epsilon_conditions: float
    delta: float | None
    guarantee: str
    seed: int | None
    original_frame: pd.DataFrame | None = None
    privatized_frame: pd.DataFrame | None = None
    reconstruction_frame: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # sizes of the batches the mechanism ran on, in order
    noise_origin: str = "os"  # "os" (OS entropy), "seed" (a fixed seed) or "caller" (a generator given by the caller)

    @property
    def batch_text(self) -> str:
        """'one batch of 3 records', 'batches of 512 + 488 records': what the paper mechanism's output depends on."""
        if len(self.batches) == 1:
            return f"one batch of {self.batches[0]:,} record{'s' * (self.batches[0] != 1)}"
        if len(self.batches) <= 4:
            return f"batches of {' + '.join(f'{size:,}' for size in self.batches)} records"
        return f"{len(self.batches):,} batches of up to {max(self.batches):,} records"

    @property
    def private(self) -> bool:
        """True only for noise from OS entropy under a mechanism with a guarantee (laplace, gaussian, metric): a
        fixed seed is reproducible, and a caller's generator may be; never for paper (no formal guarantee) nor
        for epsilon = infinity, which adds no noise."""
        return self.noise_origin == "os" and self.mechanism.get("mechanism") not in (NoNoise.name, PaperMechanism.name)

    @property
    def epsilon_spent(self) -> float | None:
        """eps_latent + sum(eps_c) per record; None without a formal guarantee and for metric (its latent epsilon
        is per unit of L1 latent distance: ``epsilon_latent`` and ``epsilon_conditions`` hold the two parts)."""
        if self.epsilon_latent is None or self.mechanism.get("mechanism") == "metric":
            return None
        return self.epsilon_latent + self.epsilon_conditions

    @property
    def noise_source(self) -> str:
        if self.mechanism.get("mechanism") == NoNoise.name:
            return "none (epsilon = infinity: no noise is added)"
        if self.noise_origin == "caller":
            return f"a generator given by the caller ({CALLER_GENERATOR})"
        return "OS entropy" if self.noise_origin == "os" else f"seed {self.seed} ({NOT_PRIVATE_SEED})"


def public_training_data(model) -> bool:
    """Whether the model was trained on a public dataset, as far as this app can tell: a bundled or local model's
    config says so; a Hub model's config is its publisher's word (``stated_by``), which the app cannot check."""
    return model.config.dataset in PUBLIC_DATASETS and getattr(model, "stated_by", None) is None


def _guarantee(model, mechanism: Mechanism, handlings: dict[str, ConditionHandling], seed, origin: str) -> str:
    distances = model.config.latent_distances
    stated_by = getattr(model, "stated_by", None)
    kwargs = ({"d_typ": distances.d_typ, "d_nn": distances.d_nn, "distances_measured_on": distances.measured_on
               + (f", according to {stated_by} (not checked by this app)" if stated_by else "")}
              if distances else
              # (hub.leave_out_other_distances dropped those of the config: another network's)
              {"distances_missing": "its " + DISTANCES_OF_OTHER_WEIGHTS}
              if getattr(model.config, "distances_of_other_weights", False) else {})
    dataset = model.config.dataset
    public = public_training_data(model)
    names = _condition_names(model)
    kept = [name for name in names if handlings.get(name, ConditionHandling()).handling == "kept"] if names else None
    # the publisher's word (a Hub model), or a local folder's config.json's (not a folder bundled with CADP)
    by_config = stated_by is None and getattr(model, "config_states_training", False)
    stated_public = dataset if (stated_by is not None or by_config) and dataset in PUBLIC_DATASETS else None
    text = mechanism.guarantee(fitted_on_records=dataset == UPLOAD_DATASET, trained_on=None if public else dataset,
                               kept=kept, stated_public=stated_public,
                               stated_public_by="config" if by_config else None, **kwargs)
    parts = [text]
    released = {name: h for name, h in handlings.items() if h.handling != "kept"}
    levels = ({"label": model.config.num_classes} if isinstance(model, ImageCINN)
              else {spec.name: spec.width for spec in model.condition_encoder.columns})
    if released:
        parts.append("Conditions: " + "; ".join(
            f"{name} randomized by randomized response with epsilon = {stated(h.epsilon)} over its {levels[name]} values "
            f"(kept with probability {keep_probability(h.epsilon, levels[name]):.3g})" if h.handling == "randomized"
            else f"{name} resampled from {_prior_words(model, name, public)} (costs 0)"
            for name, h in released.items()) + ".")
        if isinstance(mechanism, MetricMechanism):  # two units: they do not add into one number
            conditions = stated_total(epsilon_terms(mechanism, handlings))  # (the conditions' only: per unit)
            parts.append(f"Total of this release (basic composition): {stated(mechanism.epsilon)} per unit of latent L1 "
                         f"distance + epsilon = {conditions} for conditions.")
        elif mechanism.formal:
            delta = getattr(mechanism, "delta", None)  # (gaussian: the conditions add epsilon only)
            total_epsilon(mechanism, handlings)  # (refuses a total that overflows to infinity)
            parts.append("Total epsilon of this release (basic composition): "
                         + stated_total(epsilon_terms(mechanism, handlings))
                         + (f", with delta = {exact(delta)}." if delta is not None else "."))
    if seed is not None:  # said first: what follows holds only for noise nobody can reproduce
        parts.insert(0, f"NOT PRIVATE: noise from a fixed seed ({NOT_PRIVATE_SEED}); anyone with the seed can "
                        "remove it, and the terms below hold only for noise drawn unpredictably.")
    elif origin == "caller":
        parts.append(f"Noise from a generator given by the caller: {CALLER_GENERATOR}.")
    return " ".join(parts)


def repeated_cost_note(mechanism: dict, occasions: str) -> str:
    """What releasing a record again costs (PRIVACY.md: n releases cost n * eps_total), for a download's terms;
    ``mechanism`` as ``Mechanism.describe()`` gives it, ``occasions`` the ways a record is released again."""
    if mechanism.get("mechanism") == "paper":  # no formal guarantee for the latent: nothing to add up there
        return (f"Releasing the same record again ({occasions}) reveals more of it; paper gives no formal "
                "guarantee for the latent, so there is no epsilon to add up for it (a randomized condition still "
                "costs its epsilon again with each release).")
    cost = "epsilon and delta" if mechanism.get("delta") is not None else "epsilon"
    return (f"Releasing the same record again ({occasions}) costs its {cost} again (basic composition): a record "
            f"released n times costs n times the {cost} of one release.")


def release_guarantee(model: ImageCINN | TabularCINN, mechanism: Mechanism,
                      generator: torch.Generator | None = None, *, seed: int | None = None,
                      condition_handling: dict[str, ConditionHandling] | None = None) -> str:
    """The terms ``privatize`` states (``PrivatizationResult.guarantee``) for a release with these arguments, known
    before any record is released: a batch run writes them before its first file."""
    _, seed, origin = _noise(generator, seed)
    handlings = _check_release(model, mechanism, condition_handling)
    if isinstance(model, ImageCINN):
        handlings = {"label": handlings.get("label", ConditionHandling())}
    return _guarantee(model, mechanism, handlings, seed, origin)


def public_prior(dataset: str, spec: ColumnSpec) -> list[float] | None:
    """A condition's frequencies over its levels (``spec.categories``, in order) in the bundled public table
    ``dataset``, counted there as ``train.tabular_config`` counts them, or None (a uniform prior) where that table
    has no such column or none of its levels."""
    return _public_prior(dataset, spec.name, tuple(spec.categories))


@functools.lru_cache(maxsize=64)
def _public_prior(dataset: str, name: str, categories: tuple) -> list[float] | None:
    from cadp.data import TABULAR_DATASETS, level_frequencies, load_table

    if dataset not in TABULAR_DATASETS:
        return None
    frame = load_table(dataset).frame
    if name not in frame.columns:
        return None
    prior = level_frequencies(frame[name], categories)
    return prior if sum(prior) > 0 else None


def _prior_words(model, name: str, public: bool) -> str:
    """Where a resampled condition's prior comes from: a public dataset's frequencies, else uniform."""
    if isinstance(model, ImageCINN):  # an image label's prior is uniform over the classes
        return "a uniform prior over the classes"
    if public:
        spec = next(spec for spec in model.condition_encoder.columns if spec.name == name)
        if public_prior(model.config.dataset, spec) is not None:
            return f"its frequencies in the public {model.config.dataset} data"
        return (f"a uniform prior (the public {model.config.dataset} data has no column {name} with the model's "
                "levels)")
    if getattr(model, "stated_by", None) is not None and model.config.dataset in PUBLIC_DATASETS:
        return (f"a uniform prior (its frequencies in the {model.config.dataset} data that {model.stated_by} "
                "states the model was trained on are not checked by this app)")
    return ("a uniform prior (the frequencies in the model's own training data are neither public nor independent "
            "of a record among them)")


def _condition_names(model) -> list[str]:
    return ["label"] if isinstance(model, ImageCINN) else list(model.config.condition_columns)


def _chunks(count: int, batch_size: int | None):
    size = batch_size or count or 1
    return [slice(start, start + size) for start in range(0, count, size)]


@torch.inference_mode()
def privatize(model: ImageCINN | TabularCINN, x, condition, mechanism: Mechanism,
              generator: torch.Generator | None = None, *, seed: int | None = None,
              condition_handling: dict[str, ConditionHandling] | None = None,
              batch_size: int | None = None, reconstruct: bool = True,
              progress: Callable[[int, int], None] | None = None) -> PrivatizationResult:
    """Privatize a batch of images (pixels (B, C, H, W), labels (B,)) or table rows (a DataFrame).

    ``condition``: class labels for images; for tables None (condition columns are
    read from the frame) or a frame of the condition columns. Noise comes from
    ``generator`` (one from ``cadp.mechanisms.new_generator`` keeps its seed or OS entropy on record; any other
    is marked as the caller's, not known to be private), else from ``seed`` (marked not private), else from OS
    entropy. A seed with a generator of another seed is refused.
    ``batch_size`` chunks the work (the ``paper`` mechanism's output depends on it).
    ``reconstruct=False`` skips decoding the noiseless reconstruction (``reconstruction`` and
    ``reconstruction_frame`` are then None): a third less flow work where nobody looks at it.
    ``progress(done, total)`` is called after each chunk of ``batch_size`` records.
    """
    generator, seed, origin = _noise(generator, seed)
    handlings = _check_release(model, mechanism, condition_handling)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise InputError(f"batch_size must be a whole number >= 1 (or None for one batch), got {batch_size!r}")
    batch_size = None if batch_size is None else int(batch_size)  # (NumPy's: the result's record stays JSON)
    if isinstance(model, ImageCINN):
        return _privatize_images(model, x, condition, mechanism, generator, seed, origin,
                                 handlings, batch_size, reconstruct, progress)
    return _privatize_rows(model, x, condition, mechanism, generator, seed, origin,
                           handlings, batch_size, reconstruct, progress)


def _check_release(model, mechanism, condition_handling) -> dict[str, ConditionHandling]:
    """The checks of a release's model, mechanism and condition handling, shared by ``privatize`` and
    ``release_guarantee`` (terms are never stated for arguments a release refuses); the handlings, {} for None."""
    if not isinstance(mechanism, Mechanism):
        raise InputError(f"mechanism must be a Mechanism, e.g. make_mechanism('laplace', 1, temperature=0.7), "
                         f"got {mechanism!r}")
    if not isinstance(model, (ImageCINN, TabularCINN)):
        raise InputError(f"cannot privatize with a {type(model).__name__}")
    handlings = condition_handling or {}
    _check_handlings(handlings, _condition_names(model))
    return handlings


def _noise(generator: torch.Generator | None, seed) -> tuple[torch.Generator, int | None, str]:
    """(generator, seed, origin): where a release's noise comes from, so that it is never called private wrongly."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise InputError(f"seed must be an integer, got {seed!r}")
    seed = None if seed is None else int(seed)
    if generator is None:
        return new_generator(seed), seed, "os" if seed is None else "seed"
    if not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    made = generator_seed(generator)
    if made is UNKNOWN_ORIGIN:
        if seed is not None:
            raise InputError("give a seed or a generator, not both: the noise would come from the generator "
                             f"while the release said seed {seed}")
        return generator, None, "caller"
    if seed is not None and made != seed:
        raise InputError(f"seed {seed} differs from the seed of the generator given ({made})")
    return generator, made, "os" if made is None else "seed"


def _check_handlings(handlings: dict[str, ConditionHandling], names: list[str]) -> None:
    if not isinstance(handlings, dict) or not all(isinstance(h, ConditionHandling) for h in handlings.values()):
        raise InputError("condition_handling maps a condition's name to a cadp.mechanisms.ConditionHandling, "
                         "e.g. {'label': ConditionHandling('resampled')}")
    unknown = set(handlings) - set(names)
    if unknown:
        raise InputError(f"condition handling given for unknown {plural('attribute', len(unknown))} {sorted(unknown)}; "
                         f"the model's conditions are {names}")


def _latent_pass(model, inputs, condition, released, mechanism, generator, batch_size, reconstruct, progress=None):
    latents, noisy, reconstructions, outputs = [], [], [], []
    for part in _chunks(len(inputs), batch_size):
        z = model.encode(inputs[part], condition[part])
        # NaN would pass through the noise and tell which record it was. A float64 sum of float32 values cannot
        # overflow: it is finite exactly when every value is (one operation on every call); the full check decides
        # otherwise (a float64 model's sum can overflow)
        if not math.isfinite(z.sum(dtype=torch.float64)) and not torch.isfinite(z).all():
            bad = part.start + int((~torch.isfinite(z).all(1)).nonzero()[0])
            raise InputError(f"record {bad} (counting from 0) has a latent that is not finite (the model overflowed "
                             "on it): nothing was released; check that record's values")
        z_noisy = mechanism(z, generator)
        latents.append(z.cpu())
        noisy.append(z_noisy.cpu())
        if not reconstruct:
            outputs.append(model.decode(z_noisy, released[part]).cpu())
        else:  # reconstruction and release in one decode call: one pass of the flow's per-call overhead, not two
            decoded = model.decode(torch.cat([z, z_noisy]), torch.cat([condition[part], released[part]])).cpu()
            reconstructions.append(decoded[:len(z)])
            outputs.append(decoded[len(z):])
        # a release decoded to NaN or infinity (a broken network, or one overflowing on a noisy latent) came out as
        # made-up values (a range's end, a first category, pixel 0) listed as released: refused, as a latent is
        if not math.isfinite(outputs[-1].sum(dtype=torch.float64)) and not torch.isfinite(outputs[-1]).all():
            bad = part.start + int((~torch.isfinite(outputs[-1].flatten(1)).all(1)).nonzero()[0])
            raise ModelError(f"the model decoded the noisy latent of record {bad} (counting from 0) to values that "
                             "are not finite (the network overflowed or is broken): nothing was released")
        if progress is not None:
            progress(min(part.stop, len(inputs)), len(inputs))
    reconstruction = _joined(reconstructions) if reconstruct else None
    return _joined(latents), _joined(noisy), reconstruction, _joined(outputs)


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)  # one chunk (the usual case): no copy


def _image_pixels(pixels, config) -> tuple[torch.Tensor, list[str]]:
    """Images as float pixel values (B, C, H, W) on [0, 255], and notes on how they were read; shapes, non-finite
    values and images scaled to [0, 1] refused. One image (C, H, W), or (H, W, C) as PIL and NumPy hold it, is a
    batch of one; for a one-channel model (H, W) is one image too ((B, H, W) is refused: it could be a colour
    image (3, H, W) as much as three grayscale ones)."""
    try:
        if not isinstance(pixels, torch.Tensor):
            pixels = np.asarray(pixels)
            # a read-only array (an upload's pixels, shared with its preview): torch may not share memory it cannot
            # write, so the batch gets its own copy
            pixels = torch.as_tensor(pixels if pixels.flags.writeable else pixels.copy())
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"images must be a tensor or array of pixel values, got {type(pixels).__name__} "
                         "(read files with cadp.uploads.to_model_input)") from None
    given = tuple(pixels.shape)
    expected = (config.channels, config.image_size, config.image_size)
    if pixels.dim() == 2 and config.channels == 1:  # one grayscale image (H, W), e.g. a PIL image's array
        pixels = pixels[None, None]
    # (3, H, W) stays one image of 3 channels: read as 3 grayscale images, a colour image passed as 3 records
    elif pixels.dim() == 3 and given[-1] == config.channels and given[0] != config.channels:
        pixels = pixels.permute(2, 0, 1)[None]  # one image (H, W, C), as PIL and NumPy hold colour images
    elif pixels.dim() == 3:
        pixels = pixels[None]
    if pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected or len(pixels) == 0:
        size = f"{config.image_size}, {config.image_size}"
        one = f"({size})" if config.channels == 1 else f"({config.channels}, {size}) or ({size}, {config.channels})"
        several = (f" (several grayscale images (batch, {size}): add the channel axis, images[:, None])"
                   if config.channels == 1 and len(given) == 3 and given[1:] == expected[1:] else "")
        raise InputError(f"images must have shape (batch, {', '.join(map(str, expected))}) with batch >= 1, or be "
                         f"one image {one}; got {given}{several}")
    return checked_pixel_values(pixels)


def _image_labels(labels, config, count: int) -> torch.Tensor:
    """Class indices (count,) of ``count`` images: one per image, or one label for all of them."""
    labels = class_indices(labels, config.class_names)
    if len(labels) == 1 and count > 1:
        labels = labels.expand(count)
    if len(labels) != count:
        raise InputError(f"got {count} image{'s' * (count != 1)} but {len(labels)} labels: give one label per "
                         "image, or one label for all of them")
    return labels


def _privatize_images(model: ImageCINN, pixels, labels, mechanism, generator, seed, origin, handlings, batch_size,
                      reconstruct, progress=None):
    config = model.config
    pixels, notes = _image_pixels(pixels, config)
    labels = _image_labels(labels, config, len(pixels))
    handling = handlings.get("label", ConditionHandling())
    released = release_condition(labels, config.num_classes, handling, None, generator)
    # the release's terms and record before the passes: they do not depend on the latents, and Python's steps cost
    # several times more right after a pass (BENCHMARKS.md, "Nineteenth round")
    guarantee = _guarantee(model, mechanism, {"label": handling}, seed, origin)
    batches = batch_sizes(len(pixels), batch_size or len(pixels))
    described = {**mechanism.describe(), "batch_size": max(batches)}  # the largest batch run, not the one asked
    latent, noisy, reconstruction, output = _latent_pass(model, pixels, labels, released, mechanism,
                                                         generator, batch_size, reconstruct, progress)
    return PrivatizationResult(
        original=pixels, reconstruction=reconstruction, privatized=output.clamp(0, 255),
        latent=latent, noisy_latent=noisy, condition={"label": labels}, released_condition={"label": released},
        mechanism=described, epsilon_latent=mechanism.epsilon if mechanism.formal else None,
        epsilon_conditions=handling.cost, delta=getattr(mechanism, "delta", None),
        guarantee=guarantee, seed=seed, noise_origin=origin, batches=batches, notes=notes)


def _input_notes(model, columns: list, filled: dict[str, int], clipped: dict[str, int]) -> list[str]:
    """What a release says about its input cells: read as the model's stored mean (of the table its encoders were built on), read as the range's nearer end, and
    columns the model does not have (left out)."""
    notes = [f"{name}: {counted(count, 'cell')} empty, not a number or infinite, read as the model's stored mean "
             f"{model.data_encoder.spec(name).mean:.4g}" for name, count in filled.items()]
    for name, count in clipped.items():
        spec = model.data_encoder.spec(name)
        notes.append(f"{name}: {counted(count, 'cell')} outside the range the model knows ({spec.low:.4g} to "
                     f"{spec.high:.4g}), read as its nearer end")
    known = set(model.config.data_columns) | set(model.config.condition_columns)
    unknown = [column for column in columns if column not in known]
    if unknown:
        notes.append(f"{plural('column', len(unknown))} the model does not have, left out of the release: "
                     + ", ".join(repr(c) for c in unknown))
    return notes


def input_notes(model: TabularCINN, frame: pd.DataFrame) -> list[str]:
    """The notes a release of ``frame`` with ``model`` will carry about its cells, known before any release (the
    table page shows them before Privatize): nothing is drawn and nothing is released."""
    filled: dict[str, int] = {}
    clipped: dict[str, int] = {}
    model.data_encoder.transform(frame, filled=filled, clipped=clipped)
    return _input_notes(model, list(frame.columns), filled, clipped)


def _privatize_rows(model: TabularCINN, frame, condition_frame, mechanism, generator, seed, origin, handlings,
                    batch_size, reconstruct, progress=None):
    if not isinstance(frame, pd.DataFrame):
        raise InputError("table rows must be given as a pandas DataFrame")
    row_index = frame.index  # the caller's: the released frames keep it, so they join back to the input
    if condition_frame is not None:
        if not isinstance(condition_frame, pd.DataFrame) or len(condition_frame) != len(frame):
            raise InputError("condition must be None (conditions read from the rows) or a DataFrame of the "
                             "condition columns with one row per table row")
        both = sorted(set(frame.columns) & set(condition_frame.columns))
        if both:
            one = len(both) == 1
            raise InputError(f"{plural('column', len(both))} {both} {'is' if one else 'are'} in both the rows and "
                             f"the condition frame: give {'it' if one else 'them'} once")
        frame = pd.concat([frame.reset_index(drop=True), _rows_aligned(condition_frame, row_index)], axis=1)
    if len(frame) == 0:
        raise InputError("the table has no rows")
    if not frame.columns.is_unique:  # (cached on the index: the usual case costs nothing)
        repeated = sorted({str(name) for name in frame.columns[frame.columns.duplicated()]})
        raise InputError(f"{plural('column', len(repeated))} {repeated} "
                         f"{'appears' if len(repeated) == 1 else 'appear'} more than once: give each column once")
    default_index = _is_default_index(row_index)
    if not _is_default_index(frame.index):  # (after a concatenation with a condition frame it already is)
        frame = frame.reset_index(drop=True)
    config = model.config
    handlings = dict(handlings)  # (checked by privatize)
    cells = FrameCells.of(frame)  # a few rows: read once for both encoders
    filled: dict[str, int] = {}
    clipped: dict[str, int] = {}
    rows = model.data_encoder.transform(frame, cells=cells, filled=filled, clipped=clipped)
    condition = model.condition_encoder.transform(frame, cells=cells)
    true_values, released_values, start = {}, {}, 0
    kept = all(handlings.get(spec.name, ConditionHandling()).handling == "kept" for spec in model.condition_encoder.columns)
    public = public_training_data(model)
    for spec in model.condition_encoder.columns:
        index = condition[:, start:start + spec.width].argmax(1)
        start += spec.width
        handling = handlings.setdefault(spec.name, ConditionHandling())
        # resampled from the training data's frequencies only where that data is public: frequencies of one's own
        # rows are neither public nor independent of a record among them (PRIVACY.md), so a uniform prior there;
        # counted in the public table itself, not read from config.json (whose numbers a copied folder may change)
        prior = public_prior(config.dataset, spec) if public and handling.handling == "resampled" else None
        released = release_condition(index, spec.width, handling, prior, generator)  # in column order, before the noise
        true_values[spec.name], released_values[spec.name] = index, released
    if kept:
        released_condition = condition  # the same one-hots
    else:
        released_condition = torch.cat([torch.nn.functional.one_hot(released_values[spec.name], spec.width).float()
                                        for spec in model.condition_encoder.columns], dim=1)
    latent, noisy, reconstruction, output = _latent_pass(model, rows, condition, released_condition, mechanism,
                                                         generator, batch_size, reconstruct, progress)
    count, rebuilt = len(frame), None
    if reconstruction is None:
        decoded = model.data_encoder.decode_columns(output)
    else:  # both decodes in one pass over the columns, then split
        values = model.data_encoder.decode_columns(torch.cat([output, reconstruction]))
        decoded = {name: _part(column, 0, count) for name, column in values.items()}
        rebuilt = {name: _part(column, count, 2 * count) for name, column in values.items()}
    for spec in model.condition_encoder.columns:
        decoded[spec.name] = spec.category_values(released_values[spec.name].numpy())
        if rebuilt is not None:
            rebuilt[spec.name] = frame[spec.name].to_numpy()
    columns = frame.columns.tolist()
    keep = [c for c in columns if c in decoded]
    original_frame = frame if len(keep) == len(columns) else frame[keep]
    specs = {spec.name: spec for spec in [*model.data_encoder.columns, *model.condition_encoder.columns]}
    conditions = set(config.condition_columns)  # (the reconstruction keeps the input's: it is never released)
    privatized_frame = pd.DataFrame({c: released_column(decoded[c], specs[c]) for c in keep}, copy=False)
    rebuilt_frame = None if rebuilt is None else pd.DataFrame({c: released_column(rebuilt[c], specs[c])
                                                               if c not in conditions else rebuilt[c]
                                                               for c in keep}, copy=False)
    if not default_index:
        for part in (original_frame, privatized_frame, rebuilt_frame):
            if part is not None:
                part.index = row_index
    notes = _input_notes(model, columns, filled, clipped)
    batches = batch_sizes(count, batch_size or count)
    return PrivatizationResult(
        original=rows, reconstruction=reconstruction, privatized=output, latent=latent, noisy_latent=noisy,
        condition=true_values, released_condition=released_values,
        mechanism={**mechanism.describe(), "batch_size": max(batches)},  # the largest batch run, not the one asked
        epsilon_latent=mechanism.epsilon if mechanism.formal else None,
        epsilon_conditions=sum(h.cost for h in handlings.values()), delta=getattr(mechanism, "delta", None),
        guarantee=_guarantee(model, mechanism, handlings, seed, origin), seed=seed, noise_origin=origin,
        batches=batches, notes=notes,
        original_frame=original_frame, privatized_frame=privatized_frame, reconstruction_frame=rebuilt_frame)


def _rows_aligned(condition_frame: pd.DataFrame, row_index: pd.Index) -> pd.DataFrame:
    """The condition frame's rows in the table's order, matched by index label as pandas does, not by position:
    a kept condition paired with another row would be released as that row's, exactly. Labels that differ
    (or repeat) are refused: which condition belongs to which row cannot be told."""
    if not condition_frame.index.equals(row_index):
        if not (row_index.is_unique and condition_frame.index.is_unique
                and set(condition_frame.index) == set(row_index)):  # (a set: labels of mixed types do not sort)
            raise InputError("the condition frame's index differs from the rows' index, so its rows cannot be "
                             "matched to the table's: give both frames the same index (e.g. take both from one "
                             "frame, or call .reset_index(drop=True) on both)")
        condition_frame = condition_frame.loc[row_index]
    return condition_frame.reset_index(drop=True)


def released_column(values, spec: ColumnSpec):
    """A released column in the model's own types, decided by the model alone: numbers the model holds as whole
    numbers (every value it was fitted on was one) as integers, other numbers as decoded (rounded to the decimal
    places the model learned), categories as the model lists them, whole-number categories as integers (pandas'
    nullable integers where an empty category is among them: never floats written "2.0").

    Never by the input's column (its pandas type, its categories, whether its numbers are whole): that is a fact
    about the records, and a release written by it would tell it. A one-row file whose bmi was written 32 came back
    rounded and one written 32.1 did not, and a record's release changed with its batch mates' values; the same
    record now gives the same file whatever it is written as and whoever it is released with (PRIVACY.md).
    """
    if spec.kind == "numeric":
        if not spec.integer:
            return values
        return whole_numbers(values, spec.name)  # (decoded values lie in the fitted range; older folders kept none)
    known = [c for c in spec.categories if c is not None]
    if not known or not all(isinstance(c, int | float) and not isinstance(c, bool) and float(c).is_integer()
                            for c in known):
        return values
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return values
    floats = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    gaps = np.isnan(floats)
    whole = np.round(np.where(gaps, 0.0, floats)).astype(np.int64)
    if None not in spec.categories:
        return whole
    released = pd.array(whole, dtype="Int64")
    released[gaps] = pd.NA
    return released


def _is_default_index(index: pd.Index) -> bool:
    """0, 1, 2, ...: the index the encoders and the released frames are built with."""
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1


def _part(column, start: int, stop: int):
    """Rows start:stop of a decoded column (an array, or a Series re-indexed from 0)."""
    if isinstance(column, pd.Series):
        return column.iloc[start:stop].reset_index(drop=True)
    return column[start:stop]


def latent_difference_maps(model: ImageCINN, latent: torch.Tensor, noisy_latent: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """|M(z) - z| of one record laid out per scale: (name, 2-D array) pairs for display; a fully connected
    scale is laid out on a square whose cells past its last coordinate are NaN (no coordinate: drawn empty)."""
    if latent.numel() != model.config.latent_dim or noisy_latent.shape != latent.shape:
        raise InputError(f"give one record's latent ({model.config.latent_dim} values) and its release, e.g. "
                         f"result.latent[0], result.noisy_latent[0]; got shapes {tuple(latent.shape)} and "
                         f"{tuple(noisy_latent.shape)}")
    difference = (noisy_latent - latent).abs().reshape(-1).numpy()
    maps, start = [], 0
    for name, shape in model.config.latent_scales():
        size = int(np.prod(shape))
        block = difference[start:start + size]
        start += size
        if len(shape) == 3:  # channels side by side
            channels, height, width = shape
            maps.append((name, block.reshape(channels, height, width).transpose(1, 0, 2).reshape(height, channels * width)))
        else:
            side = int(np.ceil(np.sqrt(size)))
            padded = np.full(side * side, np.nan, dtype=block.dtype)
            padded[:size] = block
            maps.append((name, padded.reshape(side, side)))
    return maps


def main(argv=None, *, exiting: bool = False) -> int:
    from cadp.archive import main as archive_main

    return archive_main(argv, exiting=exiting)


if __name__ == "__main__":  # main() takes over a Ctrl-C noted while starting, and stops before any release
    sys.exit(main(exiting=True))  # the process ends next: a late Ctrl-C is ignored, not a traceback
