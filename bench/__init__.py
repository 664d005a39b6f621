"""Benchmarks of CADP: latency, throughput, memory, compute efficiency, on-the-fly fitting and the app.

    python -m bench [--short | --full] [--device cpu|cuda] [--browser] [--out results.json]

Every number is measured by this suite in one run, on the machine it runs on; the
machine's peak float32 FLOP/s is measured in the same run (``bench.compute.peak_flops``),
so compute efficiency is relative to what this machine reaches, not to a datasheet.
Each throughput point runs in its own subprocess so that peak resident memory is that
measurement's alone.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"
IMAGE_MODELS = ("mnist-cinn", "fashion-mnist-cinn")
TABLE_MODELS = ("diabetes-cinn", "heart-cinn")
BATCH_SIZES = (1, 32, 256, 1024)
EPSILON = 10.0  # the app's default image epsilon; the latency of a release does not depend on it
TEMPERATURE = 0.7  # constant-temperature Laplace, as in the app

# The targets on 2 CPU cores (float32). "max": lower is better; "min": higher is better.
TARGETS = {
    "image_latency_p50_ms": ("max", 10.0, "28x28 image, one record, p50"),
    "image_efficiency_batch256": ("min", 0.70, "image model, batch 256, share of measured peak FLOP/s"),
    "image_efficiency_batch1": ("min", 0.40, "image model, batch 1, share of measured peak FLOP/s"),
    "table_latency_p50_ms": ("max", 2.0, "table row, one record, p50"),
    "table_throughput_rows_per_s": ("min", 50_000.0, "table rows, best batch throughput"),
    "tabular_fit_seconds": ("max", 30.0, "fit_tabular on 1,000 x 15, default steps"),
    "app_cold_start_seconds": ("max", 5.0, "streamlit run -> home page rendered in a browser"),
    "privatize_to_render_seconds": ("max", 1.0, "Privatize pressed -> result rendered, median"),
}


def percentile(values: list[float], share: float) -> float:
    """The ``share`` quantile (0..1) of values, linear interpolation between order statistics."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = share * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict:
    """p50, p95, mean and count of per-call times given in seconds, reported in milliseconds."""
    return {"p50_ms": 1e3 * percentile(seconds, 0.5), "p95_ms": 1e3 * percentile(seconds, 0.95),
            "mean_ms": 1e3 * statistics.fmean(seconds), "calls": len(seconds)}


def judge(name: str, value: float | None) -> dict:
    """A target's verdict: {"target", "value", "met"} (met is None when nothing was measured)."""
    direction, limit, description = TARGETS[name]
    met = None
    if value is not None and not math.isnan(value):
        met = value <= limit if direction == "max" else value >= limit
    return {"target": f"{'<=' if direction == 'max' else '>='} {limit:g}", "value": value, "met": met,
            "description": description}


VECTOR_FLAGS = {"sse4_2", "avx", "avx2", "fma", "f16c", "amx_tile", "amx_bf16"}  # with every avx512* flag


def machine() -> dict:
    """CPU model, cores, memory, torch version and threads, date, and other heavy processes running."""
    import torch

    info = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS")}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu_model"] = fields.get("Model name", "").strip()
        info["cores_per_socket"] = fields.get("Core(s) per socket", "").strip()
        info["threads_per_core"] = fields.get("Thread(s) per core", "").strip()
        info["cpu_family"] = fields.get("CPU family", "").strip()
        info["cpu_model_number"] = fields.get("Model", "").strip()
        flags = set(fields.get("Flags", "").split())
        info["cpu_vector_flags"] = sorted(flag for flag in flags if flag in VECTOR_FLAGS or flag.startswith("avx512"))
    except (OSError, subprocess.SubprocessError):
        info["cpu_model"] = platform.processor()
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(next(line for line in meminfo.splitlines() if line.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info.update(source_state())
    info["other_load"] = other_load()
    return info


def source_state() -> dict:
    """The commit the suite ran at and whether the working tree differed from it (a run is attributed to a
    commit only where it did not), or nothing where git cannot say."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    if not commit or changed.returncode != 0:
        return {}
    return {"commit": commit, "tracked_files_changed": bool(changed.stdout.strip())}


def strict_float32() -> None:
    """On a GPU, float32 as the targets mean it: torch lets cuDNN run float32 convolutions in TF32 (10-bit
    mantissa) by default, which would make the measured peak and the models' shares TF32 numbers."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def float32_settings() -> dict:
    import torch

    return {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}


TOP_PROCESS_MIN_CPU = 5.0  # %CPU below which a process is not listed as competing load


def memory_bandwidth_gb_s(mib: int = 256, repeats: int = 5) -> float:
    """Best copy rate of a ``mib`` MiB float32 tensor (read + write bytes per second), in GB/s.

    A probe of the shared machine's state: the image flows' large batches are memory-bound in
    part, so runs on a busy host differ more here than in the matmul peak.
    """
    import time

    import torch

    source = torch.ones(mib * 2**20 // 4)
    target = torch.empty_like(source)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best / 1e9


def other_load() -> dict:
    """The 1-minute load average, a memory bandwidth probe and other CADP training or evaluation processes."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        found = subprocess.run(["pgrep", "-af", "cadp.train|cadp.evaluate"], capture_output=True, text=True,
                               timeout=10).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        found = []
    try:  # %CPU is averaged over each process's lifetime: a hint of what else competes for the cores
        listing = [line for line in subprocess.run(["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"],
                                                   capture_output=True, text=True, timeout=10).stdout.splitlines()[1:6]
                   if float(line.split()[1]) >= TOP_PROCESS_MIN_CPU]
    except (OSError, subprocess.SubprocessError):
        listing = []
    return {"load_average_1min": load, "memory_copy_gb_s": memory_bandwidth_gb_s(), "cadp_processes": found,
            "top_processes": [" ".join(line.split())[:160] for line in listing]}
