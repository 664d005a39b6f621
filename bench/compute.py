"""Model-level measurements: privatization latency and throughput, FLOPs, peak FLOP/s, DP-Pix.

``python -m bench.compute '<json>'`` is the worker the suite starts once per
(model, batch size) in full mode: it prints one JSON object whose ``peak_rss_mib`` belongs to that
measurement alone: VmHWM, reset (Linux's /proc/self/clear_refs) after the model and the inputs are loaded,
so loading the test set does not set it; ``process_peak_rss_mib`` is the whole process's, loading included
(``ru_maxrss`` would carry the parent's peak over the fork); on a GPU also the CUDA allocator's peak and
the share of the time the GPU is busy.
"""

from __future__ import annotations

import functools
import gc
import json
import resource
import sys
import time
from pathlib import Path

import torch

from bench import EPSILON, TEMPERATURE, summary_ms
from cadp.runtime import configure_allocator

# --------------------------------------------------------------------------- timing

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_calls(call, device: torch.device, *, warmup: int, min_calls: int, min_seconds: float,
                max_calls: int = 100_000) -> list[float]:
    """Seconds per call of ``call()``, after ``warmup`` untimed calls; at least min_calls and min_seconds."""
    for _ in range(warmup):
        call()
    synchronize(device)
    seconds, start = [], time.perf_counter()
    while len(seconds) < max_calls and (len(seconds) < min_calls or time.perf_counter() - start < min_seconds):
        began = time.perf_counter()
        call()
        synchronize(device)
        seconds.append(time.perf_counter() - began)
    return seconds


# --------------------------------------------------------------------------- inputs

def load(model_folder: str | Path, device: torch.device):
    from bench import strict_float32
    from cadp.hub import load_folder

    if torch.device(device).type == "cuda":
        strict_float32()
    loaded = load_folder(model_folder)
    loaded.model.to(device)
    return loaded


@functools.lru_cache(maxsize=2)
def _test_set(dataset: str, image_size: int, channels: int):
    from cadp.data import load_image_dataset

    return load_image_dataset(dataset, "test", image_size=image_size, channels=channels)


def image_inputs(config, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(pixels (count, C, H, W) float on [0, 255], labels, source): the model's test set, repeated as needed."""
    data = _test_set(config.dataset, config.image_size, config.channels)
    index = torch.arange(count) % len(data)
    return data.images[index].float(), data.labels[index], f"{config.dataset} test set"


def table_inputs(config, count: int):
    """(frame of count rows, source): the model's table, rows repeated as needed."""
    from cadp.data import load_table

    frame = load_table(config.dataset).frame
    frame = frame[config.data_columns + config.condition_columns]
    index = [i % len(frame) for i in range(count)]
    return frame.iloc[index].reset_index(drop=True), f"{config.dataset} table"


def mechanism():
    from cadp.mechanisms import make_mechanism

    return make_mechanism("laplace", EPSILON, temperature=TEMPERATURE)


def privatize_call(loaded, batch: int, reconstruct: bool = False):
    """A zero-argument function that privatizes ``batch`` records (the same ones each call), and the input source.

    ``reconstruct=False`` (the default): encode, mechanism, one decode (the release), as the
    archive CLI and the table page run it; True adds the noiseless reconstruction's decode that
    the image page shows next to the release.
    """
    from cadp.mechanisms import new_generator
    from cadp.privatize import privatize

    noise = mechanism()
    generator = new_generator()
    if loaded.config.kind == "image":
        pixels, labels, source = image_inputs(loaded.config, batch)
        # on the model's device before the clock, as DP-Pix's are (measure_dp_pix): a GPU call copies no input
        device = next(loaded.model.parameters()).device
        pixels, labels = pixels.to(device), labels.to(device)

        def call():
            with torch.inference_mode():
                return privatize(loaded.model, pixels, labels, noise, generator, reconstruct=reconstruct)
    else:
        frame, source = table_inputs(loaded.config, batch)

        def call():
            with torch.inference_mode():
                return privatize(loaded.model, frame, None, noise, generator, reconstruct=reconstruct)
    return call, source


# --------------------------------------------------------------------------- worker: one (model, batch)

def _status_mib(field: str) -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith(field + ":")).split()[1]) / 1024
    except (OSError, StopIteration, ValueError):
        return None


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB: VmHWM, which (unlike ru_maxrss) starts afresh at exec."""
    peak = _status_mib("VmHWM")
    if peak is None:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak


PROCESS_PEAK_MIB = [0.0]  # this process's peak before the latest VmHWM reset: a reset forgets it


def reset_peak_rss() -> bool:
    """Start VmHWM afresh from the current resident size (Linux >= 4.0: "5" to /proc/self/clear_refs), so the
    next peak_rss_mib is that of what runs after; False where the system does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure_points(model_folder: str, points: list[dict], device: str = "cpu",
                   threads: int | None = None) -> list[dict]:
    """``measure_privatize`` at each point (batch and timing settings) in turn, in this one process.

    Each point's ``peak_rss_mib`` is that of its own calls (VmHWM reset before them), where the system
    allows the reset; else, with several points (the short mode, to save process starts), it covers that
    point and the ones before it. ``process_peak_rss_mib`` is the process's so far, loading included.
    """
    if threads:
        torch.set_num_threads(threads)
    loaded = load(model_folder, torch.device(device))
    results = []
    for point in points:
        result = measure_privatize(loaded, device=device, **point)
        result.setdefault("peak_rss_scope", "this batch size alone" if len(points) == 1
                          else "this and the earlier batch sizes in one process")
        results.append(result)
    return results


def measure_privatize(loaded, batch: int, device: str = "cpu", *, min_calls: int = 20, min_seconds: float = 2.0,
                      warmup: int = 3, dp_pix: bool = False, with_reconstruction: bool = False) -> dict:
    """Latency per call and records/s of privatize at one batch size, and this process's peak memory.

    ``with_reconstruction``: also time the call with the reconstruction's decode (``privatize_call``).
    """
    device = torch.device(device)
    call, source = privatize_call(loaded, batch)
    gc.collect()
    process_peak_before = max(PROCESS_PEAK_MIB[0], peak_rss_mib())  # loading the model, libraries and inputs
    PROCESS_PEAK_MIB[0] = process_peak_before
    reset = reset_peak_rss()
    rss_before = _status_mib("VmRSS") if reset else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed_calls(call, device, warmup=warmup, min_calls=min_calls, min_seconds=min_seconds)
    peak = peak_rss_mib()
    PROCESS_PEAK_MIB[0] = max(PROCESS_PEAK_MIB[0], peak)
    result = {"model": loaded.folder.name, "batch": batch, "device": str(device), "inputs": source,
              "torch_threads": torch.get_num_threads(), **summary_ms(seconds),
              "records_per_s": batch * len(seconds) / sum(seconds),
              "peak_rss_mib": peak, "process_peak_rss_mib": PROCESS_PEAK_MIB[0],
              "peak_rss_before_privatize_mib": process_peak_before}
    if reset and rss_before is not None:  # the peak is that of the warm-up and timed calls alone
        result["rss_before_privatize_mib"] = rss_before
        result["privatize_added_mib"] = peak - rss_before
        result["peak_rss_scope"] = "the warm-up and timed calls (VmHWM reset before them)"
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result.update(gpu_busy_share(call, device, sum(seconds) / len(seconds)))
        result.update(__import__("bench").float32_settings())
    if with_reconstruction:
        reconstructing, _ = privatize_call(loaded, batch, reconstruct=True)
        result["with_reconstruction"] = summary_ms(timed_calls(reconstructing, device, warmup=warmup,
                                                               min_calls=min_calls, min_seconds=min_seconds))
    if dp_pix and loaded.config.kind == "image":
        result["dp_pix"] = measure_dp_pix(loaded.config, batch, device, min_calls=min_calls,
                                          min_seconds=min_seconds / 2, warmup=warmup)
    return result


def busy_share(intervals, start: float, end: float) -> float:
    """The share of [start, end] covered by the union of the (start, end) intervals, clipped to it."""
    covered, reach = 0.0, start
    for low, high in sorted(intervals):
        low, high = max(low, reach), min(high, end)
        if high > low:
            covered += high - low
            reach = high
    return covered / (end - start) if end > start else 0.0


GPU_WINDOW = "cadp bench: timed calls"


def gpu_busy_share(call, device: torch.device, seconds_per_call: float, calls: int = 5) -> dict:
    """The share of the calls' wall time in which the GPU ran kernels or copies (torch.profiler's CUDA events,
    their union, over ``calls`` calls): near 1, the GPU bounds the call; well below, Python and the CPU do.

    ``gpu_busy_share`` divides that time by ``calls`` x ``seconds_per_call``, the mean of the timed calls made
    without the profiler, whose own work on the host stretches the profiled window (by 6-12% on a CPU);
    ``gpu_busy_share_profiled_window`` divides it by that window (a lower bound)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, record_function

    call()
    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        with record_function(GPU_WINDOW):
            for _ in range(calls):
                call()
            synchronize(device)
    events = profiler.events()
    window = next(event for event in events if event.name == GPU_WINDOW and event.device_type == DeviceType.CPU)
    busy = [(event.time_range.start, event.time_range.end) for event in events
            if event.device_type == DeviceType.CUDA and not event.is_user_annotation]
    start, end = window.time_range.start, window.time_range.end
    share = busy_share(busy, start, end)  # of the window; the profiler's times are in microseconds
    busy_seconds = share * (end - start) / 1e6
    return {"gpu_busy_share": busy_seconds / (calls * seconds_per_call) if seconds_per_call > 0 else 0.0,
            "gpu_busy_share_profiled_window": share}


def measure_dp_pix(config, batch: int, device: torch.device, **timing) -> dict:
    """DP-Pix (cadp.baselines.dp_pix) on the same test images, same epsilon: latency per call."""
    from cadp.baselines import dp_pix
    from cadp.mechanisms import new_generator

    pixels, _labels, _source = image_inputs(config, batch)
    pixels = pixels.to(device)
    generator = new_generator()

    def call():
        with torch.inference_mode():
            return dp_pix(pixels, EPSILON, generator=generator)

    return summary_ms(timed_calls(call, device, **timing))


# --------------------------------------------------------------------------- FLOPs

def count_flops(loaded, batch: int = 8) -> dict:
    """FLOPs per record (FlopCounterMode: matmuls and convolutions) of encode, decode and one privatize call.

    The privatize call is the one timed (``privatize_call``: encode + mechanism + the release's
    decode), so its count is encode + decode; the throughput it is multiplied with is that call's.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from cadp.models import graph_mode

    call, _source = privatize_call(loaded, batch)
    model = loaded.model
    counts = {}
    with torch.inference_mode(), graph_mode():  # the counter watches operations: not through a trace
        if loaded.config.kind == "image":
            pixels, labels, _ = image_inputs(loaded.config, batch)
            inputs, condition = pixels, labels
        else:
            frame, _ = table_inputs(loaded.config, batch)
            inputs = model.data_encoder.transform(frame)
            condition = model.condition_encoder.transform(frame)
        with FlopCounterMode(display=False) as counter:
            latent = model.encode(inputs, condition)
        counts["encode"] = counter.get_total_flops() / batch
        with FlopCounterMode(display=False) as counter:
            model.decode(latent, condition)
        counts["decode"] = counter.get_total_flops() / batch
        with FlopCounterMode(display=False) as counter:
            call()
        counts["privatize"] = counter.get_total_flops() / batch
    return {"encode_flops_per_record": counts["encode"], "decode_flops_per_record": counts["decode"],
            "privatize_flops_per_record": counts["privatize"]}


def largest_layer(loaded) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    """The model's Conv2d or Linear with the most FLOPs per record, its per-record input shape and name."""
    model = loaded.model
    shapes: dict[str, tuple[int, ...]] = {}
    names = {module: name for name, module in model.named_modules()}

    def remember(module, args, _output) -> None:  # a forward hook that returns None leaves the output alone
        shapes.setdefault(names[module], tuple(args[0].shape[1:]))

    hooks = [module.register_forward_hook(remember) for module in model.modules()
             if isinstance(module, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        count_flops(loaded, batch=1)
    finally:
        for hook in hooks:
            hook.remove()

    def flops(name: str) -> float:
        module, shape = model.get_submodule(name), shapes[name]
        if isinstance(module, torch.nn.Linear):
            return 2 * module.in_features * module.out_features
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return 2 * module.in_channels * module.out_channels * kernel * shape[1] * shape[2] / module.groups

    name = max(shapes, key=flops)
    return model.get_submodule(name), shapes[name], name


def peak_flops(loaded_models: list, device: str = "cpu", *, matmul_sizes=(1024, 2048, 4096),
               layer_batch: int = 256, min_calls: int = 3, min_seconds: float = 1.0) -> dict:
    """The machine's measured peak float32 FLOP/s: best of large square matmuls and each model's largest layer.

    Layer FLOPs are counted as direct convolution; a library that uses Winograd or FFT
    convolutions does less work, so a layer's rate can exceed the matmul rate.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    rates = {}
    generator = torch.Generator().manual_seed(0)
    for size in matmul_sizes:
        left = torch.randn(size, size, generator=generator).to(device)
        right = torch.randn(size, size, generator=generator).to(device)
        with torch.inference_mode():
            seconds = timed_calls(lambda left=left, right=right: torch.mm(left, right), device, warmup=1,
                                  min_calls=min_calls, min_seconds=min_seconds)
        rates[f"matmul {size}"] = 2 * size**3 / min(seconds)
    for loaded in loaded_models:
        layer, shape, name = largest_layer(loaded)
        inputs = torch.randn(layer_batch, *shape, generator=generator).to(device)
        with torch.inference_mode():
            with FlopCounterMode(display=False) as counter:
                layer(inputs)
            seconds = timed_calls(lambda layer=layer, inputs=inputs: layer(inputs), device, warmup=2,
                                  min_calls=min_calls, min_seconds=min_seconds)
        rates[f"{loaded.config.name}: {name} {type(layer).__name__} {tuple(shape)} x{layer_batch}"] = \
            counter.get_total_flops() / min(seconds)
    best = max(rates, key=rates.get)
    matmul = max((name for name in rates if name.startswith("matmul ")), key=rates.get)
    # each model's reference: the matmuls and its own largest layer (another model's layer is not its limit)
    own = {loaded.folder.name: max((name for name in rates if name == matmul or name.startswith(
        f"{loaded.config.name}: ")), key=rates.get) for loaded in loaded_models}
    return {"peak_flops_per_s": rates[best], "peak_source": best, "rates_flops_per_s": rates,
            "model_peaks": {folder: {"peak_flops_per_s": rates[name], "peak_source": name}
                            for folder, name in own.items()},
            "torch_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- model loading

def load_times(model_folder: str, repeats: int = 5) -> dict:
    """Seconds of cadp.hub.load_folder and of cadp.hub.load_model (by bundled name), median of ``repeats``."""
    from cadp import hub

    folder = Path(model_folder)
    by_folder, by_name = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        hub.load_folder(folder)
        by_folder.append(time.perf_counter() - start)
        if folder.resolve().parent == hub.BUNDLED_DIR.resolve():
            start = time.perf_counter()
            hub.load_model(folder.name)
            by_name.append(time.perf_counter() - start)
    result = {"load_folder_s": sorted(by_folder)[len(by_folder) // 2]}
    if by_name:
        result["load_model_s"] = sorted(by_name)[len(by_name) // 2]
    return result


def main(argv: list[str] | None = None) -> int:
    arguments = json.loads((argv or sys.argv[1:])[0])
    configure_allocator()  # as the app and the CLIs run
    print(json.dumps(measure_points(**arguments)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
