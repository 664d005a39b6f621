"""Where privatize spends its time: ``python -m bench.profile [--models NAME ...] [--threads N]``.

Images: torch.profiler's operators at batch 256, with the GFLOP/s each convolution
and matmul shape reaches (FLOPs from the shapes, as for stride-1 'same' convolutions; time as
the operator's share of the operators' self time times the measured wall time per call); each
subnet convolution at 1-8 images in PyTorch's route and in the passes' for few images (oneDNN, weights
reordered once), one image's call with the passes for few images off and on, and with those passes
fused by oneDNN Graph (the model's route) against weight copies (where fusion is off or fails); with
``--batch1-alternatives``, other ways to compute one image's convolutions (the direct kernel, oneDNN
reordering per call, matmul + fold, Winograd F(2x2,3x3)) per layer and in whole calls.
Tables: the share of cadp.data's encoder (pandas) against the flow, by cProfile, at batch 1 and 1024;
one flow pass through each inference path (NumPy, trace, FrEIA's graph) at a few batch sizes;
one step of the on-the-fly fit through each likelihood path and optimizer layout.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
import weakref
from functools import partial

import torch

from bench import WEIGHTS
from bench.compute import image_inputs, load, privatize_call, table_inputs


def image_operators(loaded, batch: int = 256, calls: int = 2, rows: int = 8) -> str:
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from cadp.models import graph_mode

    call, _ = privatize_call(loaded, batch)
    call()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    wall_ms = (time.perf_counter() - started) * 1e3 / calls
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(calls):
            call()
    with FlopCounterMode(display=False) as counter, graph_mode():
        call()
    total_ms = sum(event.self_cpu_time_total for event in profiler.key_averages()) / 1e3 / calls
    lines = [f"{loaded.folder.name}, batch {batch}: {wall_ms:.1f} ms per call; torch operators' self time "
             f"{total_ms:.1f} ms per call (summed over threads, so it can exceed the wall time); "
             f"{counter.get_total_flops() / batch / 1e6:.0f} MFLOP per record", "",
             "| operator | input shapes | share | GFLOP/s |", "|---|---|---|---|"]
    events = sorted(profiler.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    for event in events[:rows]:
        share = event.self_cpu_time_total / 1e3 / calls / total_ms
        flops = _operator_flops(event.key, event.input_shapes) * event.count / calls
        # self times are summed over threads (their total can exceed the wall time): an operator's
        # wall time is its share of the total times the measured wall time per call
        rate = flops / (share * wall_ms / 1e3) / 1e9 if flops else None
        shapes = str(event.input_shapes[:2]).replace("|", "/")
        lines.append(f"| {event.key} | {shapes} | {100 * share:.1f}% | {'' if rate is None else f'{rate:.1f}'} |")
    return "\n".join(lines)


def _operator_flops(name: str, shapes: list) -> float:
    """FLOPs of one call from its input shapes: stride-1 'same' convolutions and addmm; 0 for anything else."""
    if "conv" in name and len(shapes) > 1 and len(shapes[0]) == 4 and len(shapes[1]) == 4:
        (batch, _channels, height, width), (out_channels, in_per_group, kernel_h, kernel_w) = shapes[0], shapes[1]
        return 2.0 * batch * height * width * out_channels * in_per_group * kernel_h * kernel_w
    if name == "aten::addmm" and len(shapes) > 2 and len(shapes[1]) == 2 and len(shapes[2]) == 2:
        return 2.0 * shapes[1][0] * shapes[1][1] * shapes[2][1]
    return 0.0


def table_shares(loaded, batch: int, calls: int = 20) -> str:
    call, _ = privatize_call(loaded, batch)
    for _ in range(3):
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = max(entry[3] for entry in stats.values())

    def cumulative(file_end: str, function: str) -> float:
        return sum(entry[3] for (file, _line, name), entry in stats.items()
                   if file.endswith(file_end) and name == function)

    parts = {"encoder: transform (pandas -> tensor)": cumulative("cadp/data.py", "transform"),
             "encoder: decode_columns (tensor -> column arrays)": cumulative("cadp/data.py", "decode_columns"),
             "flow: encode + mechanism + decode": cumulative("cadp/privatize.py", "_latent_pass")}
    parts["other (checks, condition release, building the frames)"] = total - sum(parts.values())
    lines = [f"{loaded.folder.name}, batch {batch}: {1e3 * total / calls:.2f} ms per call under cProfile", "",
             "| part | share |", "|---|---|"]
    lines += [f"| {name} | {100 * seconds / total:.0f}% |" for name, seconds in parts.items()]
    return "\n".join(lines)


def _p50_us(calls: dict, repeats: int, rounds: int = 5) -> dict:
    """p50 microseconds of each zero-argument call over ``repeats`` calls, in ``rounds`` blocks taken in turn.

    Blocks, not single calls, alternate: the machine's drift hits every call alike, and each call
    still follows calls of its own kind (torch's worker threads spin for a while after an
    operator, which would slow whatever ran next).
    """
    seconds = {name: [] for name in calls}
    block = max(1, repeats // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(max(3, block // 10)):
                call()
            for _ in range(block):
                started = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - started)
    return {name: 1e6 * sorted(values)[len(values) // 2] for name, values in seconds.items()}


def table_flow_paths(loaded, batches=(1, 8, 64, 256), calls: int = 500) -> str:
    """p50 of one encode pass per inference path: what ``TabularCINN`` picks, and each path forced."""
    from cadp.models import NumpyFlow, graph_mode

    model = loaded.model
    frame, _ = table_inputs(loaded.config, max(batches))
    rows = model.data_encoder.transform(frame)
    condition = model._condition(model.condition_encoder.transform(frame))
    numpy_flow = NumpyFlow.of(model.inn)
    lines = [f"{loaded.folder.name}: one encode pass, p50 us (the model uses NumPy up to "
             f"{NumpyFlow.MAX_ROWS} rows, the trace above)", "",
             "| rows | NumPy | trace | FrEIA graph | the model's choice |", "|---|---|---|---|---|"]
    def graph(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        with graph_mode():
            return model._flow(x, [c], False)

    with torch.inference_mode():
        for batch in batches:
            x, c = rows[:batch], condition[:batch]
            paths = {"numpy": partial(numpy_flow.run, x.numpy(), c.numpy(), False)} if numpy_flow else {}
            paths |= {"trace": partial(model._traced.run, model.inn, x, [c], False), "graph": partial(graph, x, c),
                      "model": partial(model._flow, x, [c], False)}
            timings = _p50_us(paths, calls)
            lines.append(f"| {batch} | " + " | ".join(f"{timings[name]:.0f}" if name in timings else "-"
                                                     for name in ("numpy", "trace", "graph", "model")) + " |")
    return "\n".join(lines)


def image_small_batch_layers(loaded, batches=(1, 2, 4, 8), calls: int = 300) -> str:
    """Each distinct subnet convolution of an image model, p50 us: PyTorch's default route against the
    passes' for up to ``SMALL_BATCH`` images (``models._run_subnet``: oneDNN, weights reordered once). Inputs
    are random and channels-last, as in the flow."""
    from cadp.models import SMALL_BATCH, _ConvPacks, _run_subnet, graph_mode

    model = loaded.model
    shapes: dict[tuple, tuple[torch.nn.Module, tuple[int, ...]]] = {}

    def remember(module, args, _output) -> None:
        shapes.setdefault((tuple(module.weight.shape), tuple(args[0].shape[1:])), (module, tuple(args[0].shape[1:])))

    subnet_layers = [layer for module in model.modules() if isinstance(module, torch.nn.Sequential)
                     for layer in module if isinstance(layer, torch.nn.Conv2d)]
    hooks = [layer.register_forward_hook(remember) for layer in subnet_layers]
    pixels, labels, _ = image_inputs(loaded.config, 1)
    try:
        with torch.inference_mode(), graph_mode():
            model.encode(pixels, labels)
    finally:
        for hook in hooks:
            hook.remove()
    generator = torch.Generator().manual_seed(0)
    lines = [f"{loaded.folder.name}: one subnet convolution, p50 us per call at 1-{max(batches)} images, PyTorch's "
             f"route / the route of the passes for up to {SMALL_BATCH} images (timed in turn)", "",
             "| layer | input | " + " | ".join(f"batch {batch}" for batch in batches) + " |",
             "|---|---|" + "---|" * len(batches)]
    with torch.inference_mode():
        for (weight, _input), (layer, shape) in shapes.items():
            cells = []
            for batch in batches:
                x = torch.randn(batch, *shape, generator=generator).contiguous(memory_format=torch.channels_last)
                wrapped = torch.nn.Sequential(layer)  # a one-layer subnet for _run_subnet
                timings = _p50_us({"default": partial(layer, x),
                                   "small": partial(_run_subnet, wrapped, x, True, _ConvPacks())}, calls)
                cells.append(f"{timings['default']:.0f} / {timings['small']:.0f}")
            name = f"{weight[1]} -> {weight[0]}, {weight[2]}x{weight[3]}"
            lines.append(f"| {name} | {'x'.join(map(str, shape))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def image_small_batch_calls(loaded, calls: int = 200) -> str:
    """One image's privatize call (the target's, and the image page's with the reconstruction), p50 ms,
    with the passes for few images (``ImageCINN._small_batch_forms``) off and on, in turn."""
    model = loaded.model
    lines = [f"{loaded.folder.name}: one image, p50 ms, the passes for few images off / on (timed in turn)", "",
             "| call | off | on | on / off |", "|---|---|---|---|"]
    for reconstruct, label in ((False, "encode + decode of the release (the target's call)"),
                               (True, "with the noiseless reconstruction (the image page's call)")):
        call, _ = privatize_call(loaded, 1, reconstruct=reconstruct)

        def switched(on: bool, call=call) -> None:
            model._small_batch_forms = on  # an instance attribute: both sets of traces stay cached
            call()

        try:
            timings = _p50_us({"off": partial(switched, False), "on": partial(switched, True)}, calls, rounds=10)
        finally:
            model.__dict__.pop("_small_batch_forms", None)
        lines.append(f"| {label} | {timings['off'] / 1e3:.2f} | {timings['on'] / 1e3:.2f} | "
                     f"{timings['on'] / timings['off']:.2f} |")
    return "\n".join(lines)


def image_fusion_calls(loaded, calls: int = 200) -> str:
    """One image's privatize call, p50 ms, with its passes fused by oneDNN Graph (the model's route,
    ``models._fused_pass``) and with the route where that is off or fails (oneDNN, weights reordered once:
    ``models._ConvPacks``), in turn."""
    copies = load(loaded.folder, torch.device("cpu"))
    copies.model._traced.fuse = False
    lines = [f"{loaded.folder.name}: one image, p50 ms, passes fused by oneDNN Graph / with weight copies "
             "(timed in turn)", "", "| call | fused (used) | weight copies | fused / copies |", "|---|---|---|---|"]
    for reconstruct, label in ((False, "encode + decode of the release (the target's call)"),
                               (True, "with the noiseless reconstruction (the image page's call)")):
        fused_call, _ = privatize_call(loaded, 1, reconstruct=reconstruct)
        copies_call, _ = privatize_call(copies, 1, reconstruct=reconstruct)
        fused_call()
        copies_call()
        kinds = {type(entry[1]).__name__ for entry in loaded.model._traced._entries.values()}
        shown = "fused" if "_Snapshot" in kinds else "fused: not made here, weight copies"
        timings = _p50_us({"fused": fused_call, "copies": copies_call}, calls, rounds=10)
        lines.append(f"| {label} | {timings['fused'] / 1e3:.2f} ({shown}) | {timings['copies'] / 1e3:.2f} | "
                     f"{timings['fused'] / timings['copies']:.2f} |")
    return "\n".join(lines)


def image_call_parts(loaded, calls: int = 1000) -> str:
    """One image's privatize call (the target's: encode, mechanism, decode of the release) against its parts,
    p50 us, timed in turn: the rest of the call is the mechanism's noise, the checks and the release."""
    model = loaded.model
    call, _ = privatize_call(loaded, 1)
    pixels, labels, _ = image_inputs(loaded.config, 1)
    with torch.inference_mode():
        latent = model.encode(pixels, labels)
        conditions = model.condition(labels)
        logit, _ = model._to_logit(pixels, None)

    def inference(function, *args):
        with torch.inference_mode():
            return function(*args)

    parts = {"privatize call": call, "encode (logit transform + forward pass)": partial(inference, model.encode,
                                                                                      pixels, labels),
             "decode (reverse pass + pixels)": partial(inference, model.decode, latent, labels),
             "forward pass alone": partial(inference, partial(model._flow, rev=False), logit, conditions),
             "reverse pass alone": partial(inference, partial(model._flow, rev=True), latent, conditions)}
    timings = _p50_us(parts, calls, rounds=10)
    lines = [f"{loaded.folder.name}: one image's privatize call and its parts, p50 us (timed in turn)", "",
             "| part | p50 us |", "|---|---|"]
    lines += [f"| {name} | {value:.0f} |" for name, value in timings.items()]
    rest = timings["privatize call"] - timings["encode (logit transform + forward pass)"] - \
        timings["decode (reverse pass + pixels)"]
    return "\n".join(lines + [f"| the rest (noise, checks, the release) | {rest:.0f} |"])


def fold_conv(layer: torch.nn.Conv2d, u: torch.Tensor) -> torch.Tensor:
    """``layer(u)`` for stride 1 and size-keeping padding as a matrix product and ``fold`` (col2im).

    The direct kernel copies each input pixel once per kernel tap (im2col) before its product; here
    the product comes first (each pixel's contribution to every tap of every output channel) and
    ``fold`` adds the contributions at their shifted places, with the kernel flipped: the layer's
    cross-correlation. Less copying where outputs are few (a subnet's last layer, 128 -> 4).
    """
    batch, channels, height, width = u.shape
    taps = layer.weight.flip((2, 3)).permute(0, 2, 3, 1).reshape(-1, channels)  # (out x kh x kw, in)
    out = torch.nn.functional.fold(taps @ u.reshape(batch, channels, height * width), (height, width),
                                   layer.kernel_size, padding=layer.padding)
    return out if layer.bias is None else out.add_(layer.bias.view(1, -1, 1, 1))


_WINOGRAD = {  # F(2x2, 3x3) (Lavin and Gray, 2016) as Kronecker products on flattened 4x4 / 3x3 / 2x2 tiles
    name: torch.kron(torch.tensor(m), torch.tensor(m)) for name, m in (
        ("input", [[1.0, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]),
        ("kernel", [[1.0, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
        ("output", [[1.0, 1, 1, 0], [0, 1, -1, -1]]))}
_WINOGRAD_KERNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer: (weight version, transform)


def winograd_conv(layer: torch.nn.Conv2d, u: torch.Tensor) -> torch.Tensor:
    """``layer(u)`` for a 3x3, stride-1, padding-1 layer by Winograd's F(2x2, 3x3): 16 batched products
    of (out x in) by (in x tiles), 2.25x fewer multiplications, plus tile transforms in PyTorch operators.
    The weights' transform is computed once per layer and weight version (not timed)."""
    batch, channels, height, width = u.shape
    rows, cols = (height + 1) // 2, (width + 1) // 2
    tiles = torch.nn.functional.pad(u, (1, 1 + 2 * cols - width, 1, 1 + 2 * rows - height))
    tiles = tiles.unfold(2, 4, 2).unfold(3, 4, 2).permute(4, 5, 1, 0, 2, 3).reshape(16, -1)
    inputs = (_WINOGRAD["input"] @ tiles).view(16, channels, -1)
    out_channels = layer.out_channels
    version = None if layer.weight.is_inference() else layer.weight._version  # inference tensors: no versions
    if _WINOGRAD_KERNELS.get(layer, (-1,))[0] != version:  # kept as a deployment would keep them
        _WINOGRAD_KERNELS[layer] = (version, (_WINOGRAD["kernel"] @ layer.weight.permute(2, 3, 0, 1).reshape(9, -1))
                                    .view(16, out_channels, channels))
    products = torch.bmm(_WINOGRAD_KERNELS[layer][1], inputs).view(16, -1)
    out = (_WINOGRAD["output"] @ products).view(2, 2, out_channels, batch, rows, cols).permute(3, 2, 4, 0, 5, 1)
    out = out.reshape(batch, out_channels, 2 * rows, 2 * cols)[:, :, :height, :width]
    return out + layer.bias.view(1, -1, 1, 1) if layer.bias is not None else out.contiguous()


def _same_size(layer: torch.nn.Conv2d) -> bool:
    return (tuple(layer.stride) == (1, 1) and tuple(layer.dilation) == (1, 1) and layer.groups == 1
            and all(2 * pad == size - 1 for pad, size in zip(layer.padding, layer.kernel_size)))


def _direct_conv(layer: torch.nn.Conv2d, u: torch.Tensor) -> torch.Tensor:
    from cadp import models

    return models._THNN_CONV2D(u, layer.weight, layer.kernel_size, layer.bias, layer.stride, layer.padding)


BATCH1_ALTERNATIVES = {  # name: (computation, whether it applies to a layer)
    "direct kernel (im2col)": (_direct_conv, lambda layer: True),
    "oneDNN, weights reordered per call": (lambda layer, u: layer(u), lambda layer: True),
    "matmul + fold": (fold_conv, _same_size),
    "Winograd F(2x2,3x3)": (winograd_conv, lambda layer: _same_size(layer) and tuple(layer.kernel_size) == (3, 3))}


def _subnet_runner(replaced: dict, original):
    """A stand-in for ``cadp.models._run_subnet`` (``original``) that computes the layers keyed in ``replaced``
    by ``(weight shape, input shape)`` with the function given there, the others (with a ReLU after them) as
    the model's own does."""
    def run(subnet, u, small_batch, packs=None):
        if not small_batch or u.dim() != 4 or not isinstance(subnet, torch.nn.Sequential):
            return subnet(u)
        layers, index = list(subnet), 0
        while index < len(layers):
            layer = layers[index]
            key = (tuple(layer.weight.shape), tuple(u.shape[1:])) if isinstance(layer, torch.nn.Conv2d) else None
            if key in replaced:
                u, index = replaced[key](layer, u), index + 1
                continue
            step = 2 if index + 1 < len(layers) and type(layers[index + 1]) is torch.nn.ReLU else 1
            u, index = original(torch.nn.Sequential(*layers[index:index + step]), u, True, packs), index + step
        return u
    return run


def image_batch1_alternatives(loaded, layer_calls: int = 300, calls: int = 200) -> str:
    """Other ways to compute one image's subnet convolutions, against the unfused passes' for few images (oneDNN,
    weights reordered once: ``models._ConvPacks``, where oneDNN Graph's fusion is off or fails): each distinct
    layer alone (p50 us, channels-last inputs, as in the flow), then one image's privatize call (p50 ms) with
    each alternative on the layers where it was the faster alone, beside the model's route (passes fused by
    oneDNN Graph) and the unfused passes frozen."""
    from cadp import models

    model = loaded.model
    layers: dict[tuple, tuple[torch.nn.Conv2d, tuple[int, ...]]] = {}

    def remember(module, args, _output) -> None:
        layers.setdefault((tuple(module.weight.shape), tuple(args[0].shape[1:])), (module, tuple(args[0].shape[1:])))

    hooks = [layer.register_forward_hook(remember) for module in model.modules()
             if isinstance(module, torch.nn.Sequential) for layer in module if isinstance(layer, torch.nn.Conv2d)]
    pixels, labels, _ = image_inputs(loaded.config, 1)
    try:
        with torch.inference_mode(), models.graph_mode():
            model.encode(pixels, labels)
    finally:
        for hook in hooks:
            hook.remove()
    generator = torch.Generator().manual_seed(0)
    names = list(BATCH1_ALTERNATIVES)
    faster: dict[str, dict] = {name: {} for name in names}
    copies = models._packed_conv2d() is not None  # else the unfused route is the direct kernel
    used = COPIES if copies else COPIES_WITHOUT_ONEDNN
    lines = [f"{loaded.folder.name}: one image's subnet convolutions, p50 us (largest difference from "
             "the model's own route)", "", f"| layer | input | {used} | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    with torch.inference_mode():
        for key, (layer, shape) in layers.items():
            x = torch.randn(1, *shape, generator=generator).contiguous(memory_format=torch.channels_last)
            expected = layer(x)
            timed = {"used": partial(models._ConvPacks().conv, layer, x, False) if copies
                     else partial(_direct_conv, layer, x)}
            timed["used"]()  # makes the copy of the weights
            timed |= {name: partial(compute, layer, x) for name, (compute, applies) in BATCH1_ALTERNATIVES.items()
                      if applies(layer)}
            timings = _p50_us(timed, layer_calls)
            cells = []
            for name in names:
                if name not in timed:
                    cells.append("n/a")
                    continue
                error = (timed[name]() - expected).abs().max().item()
                cells.append(f"{timings[name]:.0f} ({error:.0e})")
                if timings[name] < timings["used"]:
                    faster[name][key] = BATCH1_ALTERNATIVES[name][0]
            lines.append(f"| {key[0][1]} -> {key[0][0]}, {key[0][2]}x{key[0][3]} | {'x'.join(map(str, shape))} | "
                         f"{timings['used']:.0f} | " + " | ".join(cells) + " |")
    variants = {used: {}} | {name: chosen for name, chosen in faster.items() if chosen}
    fused = load(loaded.folder, torch.device("cpu"))  # the model's route: passes fused by oneDNN Graph
    runs = {FUSED: privatize_call(fused, 1)[0]}
    runs[FUSED]()
    original = models._run_subnet
    try:
        for name, replaced in variants.items():
            copy = load(loaded.folder, torch.device("cpu"))
            copy.model._traced.fuse = False  # the alternatives replace layers of the unfused passes
            models._run_subnet = _subnet_runner(replaced, original)  # read when the first call traces the passes
            runs[name], _ = privatize_call(copy, 1)
            runs[name]()
            models._run_subnet = original
    finally:
        models._run_subnet = original
    frozen = load(loaded.folder, torch.device("cpu"))  # the unfused route, its traces frozen
    frozen.model._traced.fuse = False
    runs[FROZEN], _ = privatize_call(frozen, 1)
    runs[FROZEN]()
    entries = frozen.model._traced._entries
    for key, (traced, packs) in entries.items():
        entries[key] = (traced.frozen() if isinstance(traced, models._GraphPass) else torch.jit.freeze(traced.eval()),
                        packs)
    timings = _p50_us(runs, calls, rounds=10)
    base = timings[FUSED]
    lines += ["", f"{loaded.folder.name}: one image's privatize call, p50 ms (timed in turn), each alternative on "
              "the layers where it was the faster alone", "", "| layers computed by | layers | p50 ms | / used |",
              "|---|---|---|---|"]
    for name, replaced in ({FUSED: {}} | variants | {FROZEN: {}}).items():
        shown = ", ".join(f"{k[0][1]} -> {k[0][0]} at {k[1][1]}x{k[1][2]}" for k in replaced) or "all"
        lines.append(f"| {name} | {shown} | {timings[name] / 1e3:.2f} | {timings[name] / base:.2f} |")
    return "\n".join(lines)


FUSED = "oneDNN Graph, frozen passes (used)"
COPIES = "oneDNN, weights reordered once (used where fusion is off or fails)"
COPIES_WITHOUT_ONEDNN = "direct kernel (used where fusion is off or fails: this PyTorch has no oneDNN)"
FROZEN = "weights reordered once, traces frozen (weights as constants, as torch.jit.freeze makes them)"


def fit_step_parts(steps: int = 200) -> str:
    """One step of ``fit_tabular``'s loop on the suite's synthetic table, per likelihood path and optimizer layout."""
    from bench.fit import CONDITION, synthetic_frame
    from cadp.data import draw_in_boxes
    from cadp.models import TabularCINN, graph_mode
    from cadp.train import flat_parameters, tabular_config

    frame = synthetic_frame()
    model = TabularCINN(tabular_config(frame, [CONDITION], name="bench", dataset="synthetic", width=32))
    model.config.clamp = 0.5
    model.train()
    generator = torch.Generator().manual_seed(0)
    rows = model.data_encoder.transform(frame[:256])
    condition = model.condition_encoder.transform(frame[:256])
    base, span = model.data_encoder.dequantization_boxes(rows)
    params = [p for p in model.parameters() if p.requires_grad]

    def backward(path: str) -> None:
        model.zero_grad(set_to_none=True)
        inputs, conditions = draw_in_boxes(base, span, generator), [model._condition(condition)]
        if path == "graph":
            with graph_mode():
                z, log_det = model._flow_log_det(inputs, conditions)
        else:
            z, log_det = model._flow_log_det(inputs, conditions, traced=path == "trace")
        (0.5 * (z ** 2).sum(1) - log_det).mean().backward()

    backward("eager")
    separate = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-3, foreach=True)

    def separate_step():
        torch.nn.utils.clip_grad_norm_(params, 10.0, foreach=True)
        separate.step()

    timings = _p50_us({"graph": partial(backward, "graph"), "eager": partial(backward, "eager"),
                       "trace": partial(backward, "trace"),
                       "dequantize": partial(model.data_encoder.dequantize, rows, generator),
                       "boxes": partial(draw_in_boxes, base, span, generator), "separate": separate_step}, steps)
    with flat_parameters(params) as flat:
        backward("eager")
        fused = torch.optim.AdamW([flat], lr=1e-3, weight_decay=1e-3, fused=True)

        def flat_step():
            torch.nn.utils.clip_grad_norm_([flat], 10.0)
            fused.step()

        timings |= _p50_us({"flat": flat_step}, steps)
    labels = {"graph": "likelihood + backward, FrEIA's graph (before)",
              "eager": "likelihood + backward, lean couplings, eager",
              "trace": "likelihood + backward, lean couplings, traced (fit_tabular)",
              "dequantize": "dequantization, per column (before)",
              "boxes": "dequantization, precomputed boxes (fit_tabular)",
              "separate": f"clip + AdamW, {len(params)} tensors, foreach (before)",
              "flat": "clip + AdamW, one flat tensor, fused (fit_tabular)"}
    lines = ["On-the-fly fit: one step's parts on the synthetic 1,000 x 15 table, batch 256, p50 us "
             "(the parts run in turn)", "", "| part | p50 us |", "|---|---|"]
    lines += [f"| {label} | {timings[name]:.0f} |" for name, label in labels.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[1])
    parser.add_argument("--models", nargs="+", default=["mnist-cinn", "heart-cinn"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--fit", action=argparse.BooleanOptionalAction, default=True,
                        help="also profile one step of the on-the-fly tabular fit (default: on)")
    parser.add_argument("--batch1-alternatives", action="store_true",
                        help="also time other ways to compute one image's convolutions (oneDNN, matmul + fold, "
                             "Winograd), per layer and in whole calls")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}\n")
    for name in args.models:
        loaded = load(WEIGHTS / name, torch.device("cpu"))
        if loaded.config.kind == "image":
            print(image_operators(loaded, batch=1, calls=50, rows=4) + "\n")
            print(image_operators(loaded) + "\n")
            print(image_small_batch_layers(loaded) + "\n")
            print(image_small_batch_calls(loaded) + "\n")
            print(image_fusion_calls(loaded) + "\n")
            if args.batch1_alternatives:
                print(image_call_parts(loaded) + "\n")
                print(image_batch1_alternatives(loaded) + "\n")
        else:
            for batch in (1, 1024):
                print(table_shares(loaded, batch) + "\n")
            print(table_flow_paths(loaded) + "\n")
    if args.fit:
        print(fit_step_parts() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
