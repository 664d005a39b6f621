"""python -m bench [--short | --full] [--device cpu|cuda] [--browser] [--out results.json]

Runs the suite, writes the results as JSON and prints a Markdown summary with each
target met or missed. --short (the default, for CI) measures fewer points for less
time; --full measures every point at length. The browser part (app cold start judged, Privatize-to-render)
runs only with --browser, in either mode: `python -m bench --full --browser` is the complete suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import BATCH_SIZES, IMAGE_MODELS, ROOT, TABLE_MODELS, WEIGHTS, judge, machine, other_load
from cadp.runtime import configure_allocator

MODES = {
    "short": {"batches": (1, 256), "latency": {"min_calls": 20, "min_seconds": 0.5},
              "throughput": {"min_calls": 2, "min_seconds": 0.5, "warmup": 1}, "peak": {"min_calls": 2, "min_seconds": 0.2},
              "fit_steps": (None,), "cold_starts": 1, "load_repeats": 3, "cold_loads": 1, "presses": 3, "rounds": 1,
              "one_worker_per_model": True},
    "full": {"batches": BATCH_SIZES, "latency": {"min_calls": 200, "min_seconds": 3.0},
             "throughput": {"min_calls": 3, "min_seconds": 3.0}, "peak": {"min_calls": 5, "min_seconds": 1.0},
             "fit_steps": (None, 400, None, None), "latency_repeats": 3, "cold_starts": 3, "load_repeats": 5, "cold_loads": 3, "presses": 7, "rounds": 2,
             "one_worker_per_model": False},
}
UTILITY_COMMAND = "python -m cadp.evaluate utility --model {folder}"


def run_worker(module: str, arguments: dict, timeout: float = 900) -> dict | list:
    """Run ``python -m module '<json>'`` in a fresh process (its own peak memory); its JSON result."""
    done = subprocess.run([sys.executable, "-m", module, json.dumps(arguments)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {arguments} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def model_folders(names: list[str] | None) -> list[Path]:
    """The chosen models (names in weights/ or folders), default every bundled model with weights."""
    if names:
        # resolved: the workers run in the repository's root, not where the suite was started
        return [Path(name).resolve() if Path(name).is_dir() else WEIGHTS / name for name in names]
    return [WEIGHTS / name for name in IMAGE_MODELS + TABLE_MODELS]


def bench_models(folders: list[Path], settings: dict, device: str, threads: int | None) -> tuple[dict, dict]:
    """(peak FLOP/s, per-model results): latency, throughput and memory per batch size, FLOPs, efficiency."""
    import torch

    from bench.compute import count_flops, load, load_times, peak_flops

    available, results = [], {}
    for folder in folders:
        if not (folder / "model.safetensors").exists():
            results[folder.name] = {"missing": f"{folder} has no model.safetensors (not trained yet)"}
            continue
        available.append(load(folder, torch.device(device)))
    peak = peak_flops(available, device, **settings["peak"])
    for loaded in available:
        name = loaded.folder.name
        entry = {"kind": loaded.config.kind, "parameters": sum(p.numel() for p in loaded.model.parameters()),
                 "latent_dim": loaded.config.latent_dim, **count_flops(loaded),
                 **load_times(loaded.folder, settings["load_repeats"]), "batches": {}}
        points = [{"batch": batch, "dp_pix": batch == 1, "with_reconstruction": batch == 1 and entry["kind"] == "image",
                   **(settings["latency"] if batch == 1 else settings["throughput"])} for batch in settings["batches"]]
        groups = [points] if settings["one_worker_per_model"] else [[point] for point in points]
        measured = [result for group in groups for result in run_worker(
            "bench.compute", {"model_folder": str(loaded.folder), "points": group, "device": device, "threads": threads})]
        entry["batches"] = {str(batch): point for batch, point in zip(settings["batches"], measured)}
        entry["cold_load"] = cold_loads(loaded.folder, settings["cold_loads"], threads)
        results[name] = entry
    # single records again, each model in turn, so that the runs lie minutes apart (the machine's speed drifts)
    singles = {loaded.folder.name: [results[loaded.folder.name]["batches"]["1"]] for loaded in available
               if "1" in results[loaded.folder.name]["batches"]}
    for _ in range(settings.get("latency_repeats", 1) - 1):
        for loaded in available:
            if loaded.folder.name in singles:
                point = {"batch": 1, "dp_pix": True, "with_reconstruction": loaded.config.kind == "image",
                         **settings["latency"]}
                singles[loaded.folder.name] += run_worker("bench.compute", {
                    "model_folder": str(loaded.folder), "points": [point], "device": device, "threads": threads})
    for name, runs in singles.items():
        chosen = dict(sorted(runs, key=lambda run: run["p50_ms"])[len(runs) // 2])  # its DP-Pix: the same worker
        # every worker's p50 and mean call (the share is judged on the chosen one's), in the order they ran (runs
        # stored before 2026-12-01 kept only their p50s, as p50_ms_runs)
        chosen["runs"] = [{"p50_ms": run["p50_ms"], "mean_ms": run["mean_ms"], "records_per_s": run["records_per_s"]}
                          for run in runs]
        results[name]["batches"]["1"] = chosen
    # the peak again after the workers: the machine's speed drifts, and a peak measured in a slow moment would let
    # a later worker pass 100%; the larger of the two is the reference, for the machine and for each model
    if available:
        again = peak_flops(available, device, **settings["peak"])
        first = peak["peak_flops_per_s"]
        model_peaks = {name: max(peak["model_peaks"][name], again["model_peaks"][name],
                                 key=lambda reference: reference["peak_flops_per_s"]) for name in peak["model_peaks"]}
        if again["peak_flops_per_s"] > first:
            peak = again
        peak["model_peaks"] = model_peaks
        peak["peak_flops_per_s_start_end"] = [first, again["peak_flops_per_s"]]
    for loaded in available:
        entry = results[loaded.folder.name]
        reference = peak["model_peaks"][loaded.folder.name]
        entry["reference_peak"] = reference  # the best of the matmuls and of this model's own largest layer
        for point in [*entry["batches"].values(), *entry["batches"].get("1", {}).get("runs", [])]:
            point["flops_per_s"] = entry["privatize_flops_per_record"] * point["records_per_s"]
            point["efficiency"] = point["flops_per_s"] / reference["peak_flops_per_s"]
        entry["targets"] = model_targets(entry)
    return peak, results


def cold_loads(folder: Path, repeats: int, threads: int | None = None) -> dict:
    """bench.load in ``repeats`` fresh processes (on the CPU), each timed whole from the parent; the median run
    by process time, with every run's process time."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        run = run_worker("bench.load", {"model": str(folder), "threads": threads})
        run["process_s"] = time.perf_counter() - start
        runs.append(run)
    chosen = dict(sorted(runs, key=lambda run: run["process_s"])[len(runs) // 2])
    chosen["process_s_runs"] = [run["process_s"] for run in runs]
    return chosen


def judge_share(name: str, share: float | None) -> dict:
    """``judge`` for a share of the measured peak; above 1 the peak was measured in a slower moment than the
    workload: not judged."""
    verdict = judge(name, share)
    if share is not None and share > 1:
        verdict.update(met=None, note="above 100% of the peak: the machine's speed changed during the run; not judged")
    return verdict


def model_targets(entry: dict) -> dict:
    batches = entry["batches"]
    single = batches.get("1", {})
    if entry["kind"] == "image":
        if "dp_pix" in single:
            entry["content_awareness_cost"] = single["p50_ms"] / single["dp_pix"]["p50_ms"]
        return {"image_latency_p50_ms": judge("image_latency_p50_ms", single.get("p50_ms")),
                "image_efficiency_batch256": judge_share("image_efficiency_batch256",
                                                         batches.get("256", {}).get("efficiency")),
                "image_efficiency_batch1": judge_share("image_efficiency_batch1", single.get("efficiency"))}
    best = max(batches, key=lambda b: batches[b]["records_per_s"])
    verdict = judge("table_throughput_rows_per_s", batches[best]["records_per_s"])
    verdict["at_batch"] = int(best)
    return {"table_latency_p50_ms": judge("table_latency_p50_ms", single.get("p50_ms")),
            "table_throughput_rows_per_s": verdict}


def bench_fit(settings: dict, threads: int | None) -> dict:
    """Fits in fresh processes, each with its own seed (fit_tabular's ``seed``: another initialization and
    batch order); the target is judged on the median of the default-steps runs (full mode: 3, apart in time,
    as this shared machine's speed drifts by tens of percent over minutes), and is met only where every
    default-steps fit is also of usable quality (bench.fit.USABLE); the first run also checks the CONTROLS,
    each of which its own quality check must reject, or the verdict is not judged."""
    runs = [run_worker("bench.fit", {"steps": steps, "threads": threads, "controls": index == 0, "seed": index})
            for index, steps in enumerate(settings["fit_steps"])]
    defaults = [run for run in runs if run["steps"] == "fit_tabular default"]
    seconds = sorted(run["seconds"] for run in defaults)
    median = seconds[len(seconds) // 2] if seconds else None
    verdict = judge("tabular_fit_seconds", median)
    if len(seconds) > 1:
        verdict["description"] += f", median of {len(seconds)} fits"
    if defaults:
        verdict["usable_quality"] = all(run["quality"]["usable"] for run in defaults)
        if verdict["met"] and not verdict["usable_quality"]:
            verdict["met"] = False
            verdict["note"] = "fast enough, but not of usable quality: " + "; ".join(
                next(run["quality"]["failed"] for run in defaults if not run["quality"]["usable"]))
        verdict["description"] += " and usable quality"
    controls = {name: control for run in runs for name, control in run.get("controls", {}).items()}
    escaped = [name for name, control in controls.items()
               if control["usable"] or control["check"] not in control["failed_checks"]]
    if escaped and verdict["met"] is not None:  # a check that passes its control cannot vouch for "usable"
        verdict["met"] = None
        verdict["note"] = ("not judged: the quality check let through a control built to fail it ("
                           + ", ".join(escaped) + ")")
    return {"runs": runs, "targets": {"tabular_fit_seconds": verdict}}


def evaluation_times(folders: list[Path], quick: bool, device: str = "cpu", threads: int | None = None) -> dict:
    """Wall time of the default utility sweep (``--quick``'s tiny one when ``quick``), run and timed by this
    suite: each model folder is copied without its eval.json and report.html to a temporary folder and
    evaluated there (the bundled results stay as they are), in a fresh process; beside it, the wall time that
    the folder's own eval.json recorded for the run behind it."""
    import shutil
    import tempfile

    from cadp.hub import read_eval

    times = {}
    for folder in folders:
        if not (folder / "model.safetensors").exists():
            continue
        bundled = folder.resolve().parent == WEIGHTS.resolve()  # another folder (a candidate) is named as given
        command = (UTILITY_COMMAND.format(folder=f"weights/{folder.name}" if bundled else folder)
                   + f" --device {device}" + (" --quick" if quick else ""))
        entry = {"quick": quick, "command": command}
        environment = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / folder.name
            shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("eval.json", "report.html"))
            start = time.perf_counter()
            sweep = subprocess.Popen([sys.executable, "-m", "cadp.evaluate", "utility", "--model", str(copy),
                                      "--device", device] + (["--quick"] if quick else []), cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
            sampler = GpuSampler(sweep) if device == "cuda" else None
            try:
                error_text = sweep.communicate(timeout=3600)[1]
            except subprocess.TimeoutExpired:
                sweep.kill()
                error_text = sweep.communicate()[1]
            entry["process_s"] = time.perf_counter() - start
            if sampler is not None:
                entry["gpu_utilization"] = sampler.summary()
            if sweep.returncode != 0:
                entry["error"] = error_text.strip().splitlines()[-1][:300] if error_text.strip() else "failed"
            else:
                settings = read_eval(copy)["utility"]["settings"]
                entry.update(wall_seconds=settings["wall_seconds"], torch_threads=settings.get("torch_threads"))
        try:
            recorded = read_eval(folder).get("utility", {}).get("settings", {})
        except Exception as error:  # noqa: BLE001 - a broken eval.json is reported, not fatal
            recorded = {"error": str(error)}
        if "wall_seconds" in recorded:
            entry["recorded"] = {key: recorded.get(key) for key in
                                 ("wall_seconds", "quick", "device", "torch_threads", "date")}
        times[folder.name] = entry
    return times


NVIDIA_SMI = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--id=0"]


class GpuSampler:
    """The GPU's utilization (NVML's: the share of each sample period in which a kernel ran), read with nvidia-smi
    every ``interval`` seconds in a thread while ``process`` runs: for a sweep that runs in another process, where
    torch.profiler cannot see."""

    def __init__(self, process, interval: float = 0.5, command: list[str] | None = None):
        import threading

        self.samples: list[float] = []
        self.failed: str | None = None
        self.command = command or NVIDIA_SMI
        self.thread = threading.Thread(target=self._sample, args=(process, interval), daemon=True)
        self.thread.start()

    def _sample(self, process, interval: float) -> None:
        while process.poll() is None:
            try:
                out = subprocess.run(self.command, capture_output=True, text=True, timeout=10).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
                self.failed = f"{' '.join(self.command[:1])}: {type(error).__name__}"
                return
            time.sleep(interval)

    def summary(self) -> dict:
        self.thread.join(timeout=15)
        if not self.samples:
            return {"samples": 0, "note": self.failed or "the sweep ended before the first sample"}
        ordered = sorted(self.samples)
        return {"samples": len(ordered), "mean_percent": sum(ordered) / len(ordered),
                "median_percent": ordered[len(ordered) // 2],
                "busy_sample_share": sum(value > 0 for value in ordered) / len(ordered),
                **({"note": self.failed} if self.failed else {})}


def bench_app(settings: dict, folders: list[Path], browser: bool, weights: str | None) -> dict:
    from bench.app import browser_measurements, cold_start

    app = {"cold_start": cold_start(settings["cold_starts"], browser=browser)}
    # "/" answers with Streamlit's static page before any of the app runs: only a browser sees the first page
    rendered = app["cold_start"]["median"].get("first_render_s")
    app["targets"] = {"app_cold_start_seconds": judge("app_cold_start_seconds", rendered)}
    if rendered is None:
        app["targets"]["app_cold_start_seconds"]["note"] = "needs --browser: the app's first page is drawn there"
    if browser:
        app["browser"] = browser_measurements(settings["presses"], 5, settings["rounds"], weights)
        render = app["browser"]["privatize_to_render"]
        worst = max(render.values(), key=lambda r: r["median_s"])
        verdict = judge("privatize_to_render_seconds", worst["median_s"])
        verdict["page"] = "image" if worst is render.get("image") else "table"
        app["targets"]["privatize_to_render_seconds"] = verdict
    else:
        app["browser"] = {"skipped": "run with --browser"}
    return app


# --------------------------------------------------------------------------- report

def _threads(count, kind: str = "") -> str:
    """'1 thread', '2 torch threads'; a count not recorded: 'threads not recorded'."""
    from cadp.compare import counted

    return f"{kind}threads not recorded" if count is None else counted(count, f"{kind}thread")


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _verdict(target: dict) -> str:
    if target["met"] is None and target.get("note"):
        return f"not judged ({target['note']})"
    verdict = {True: "met", False: "**missed**", None: "not measured"}[target["met"]]
    return f"{verdict} ({target['note']})" if target["met"] is False and target.get("note") else verdict


def _fit_steps(run: dict) -> str:
    return f"{run['steps']} (seed {run['seed']})" if "seed" in run else str(run["steps"])


def _cpu_kind(info: dict) -> str:
    """" (family 25 model 17; avx2, avx512f, ...)" where the run recorded them (runs before 2026-11-29 13:40 UTC did not)."""
    if "cpu_family" not in info:
        return " (family, model and vector extensions not recorded)"
    return (f" (family {info['cpu_family'] or '?'} model {info['cpu_model_number'] or '?'}; "
            f"{', '.join(info.get('cpu_vector_flags', [])) or 'no vector flags listed'})")


def report(results: dict) -> str:
    """Markdown tables of one run's results."""
    info = results["machine"]
    lines = [f"Run: `{results['command']}` ({results['mode']} mode, device {results['device']}), "
             f"{info['date']}, {results.get('seconds', math.nan):.0f} s.",
             f"Machine: {info.get('cpu_model', '?')}{_cpu_kind(info)}, {info['cpu_count']} CPUs ({info.get('cores_per_socket', '?')} "
             f"cores/socket, {info.get('threads_per_core', '?')} thread/core), {info.get('memory_gib', '?')} GiB; "
             f"Python {info['python']}, torch {info['torch']}, {_threads(info['torch_threads'], 'torch ')} "
             f"(OMP_NUM_THREADS={info['omp_num_threads_env']}); allocator: {info.get('allocator', 'not recorded')}.",
             f"Other load: at start {_load(info['other_load'])}; at end {_load(info.get('other_load_at_end'))}."]
    if info.get("gpu"):
        lines.append(f"GPU: {info['gpu']}" + (" (the device measured)." if results["device"] == "cuda" else
                                              " (present, not measured: device cpu)."))
    if results["device"] == "cuda":
        lines.append("On the GPU: the model points and the peak. On the CPU whatever the device: the warm and cold "
                     "loads, the tabular fit (fit_tabular runs on the CPU) and the app.")
    if "commit" in info:
        lines.append(f"Code: commit {info['commit'][:12]}" + (" with changes to tracked files (not that commit's "
                                                               "code alone)." if info["tracked_files_changed"] else "."))
    lines.append("")
    peak = results.get("peak")
    if peak:
        lines += [f"Measured peak float32: {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['peak_source']}; "
                  f"{_threads(peak['torch_threads'])})", ""]
        lines += ["| peak candidate | GFLOP/s |", "|---|---|"]
        lines += [f"| {name} | {rate / 1e9:.1f} |" for name, rate in peak["rates_flops_per_s"].items()]
        lines.append("")
    for name, entry in results.get("models", {}).items():
        if "missing" in entry:
            lines += [f"### {name}", "", entry["missing"], ""]
            continue
        lines += [f"### {name} ({entry['kind']}, {entry['parameters']:,} parameters, latent {entry['latent_dim']})", ""]
        lines.append(f"FLOPs per record: encode {entry['encode_flops_per_record'] / 1e6:.3g} M, decode "
                     f"{entry['decode_flops_per_record'] / 1e6:.3g} M, privatize ({_privatize_terms(entry)}) "
                     f"{entry['privatize_flops_per_record'] / 1e6:.3g} M. Load, warm (files cached, loaded before in "
                     f"the process): load_folder {entry['load_folder_s'] * 1e3:.0f} ms"
                     + (f", load_model {entry['load_model_s'] * 1e3:.0f} ms" if "load_model_s" in entry else "")
                     + "." + _cold_load(entry.get("cold_load")))
        reference = entry.get("reference_peak")
        if reference:
            lines.append(f"Efficiency against {reference['peak_flops_per_s'] / 1e9:.1f} GFLOP/s, the best of the "
                         f"matmuls and of this model's own largest layer ({reference['peak_source']}).")
        single = entry["batches"].get("1", {})
        if len(single.get("runs", [])) > 1:
            lines.append(f"One record in {len(single['runs'])} separate workers (the later ones after every model's "
                         "other points), p50 / mean / share of the peak: "
                         + ", ".join(f"{run['p50_ms']:.2f} / {run['mean_ms']:.2f} ms / {100 * run['efficiency']:.1f}%"
                                     for run in single["runs"])
                         + "; the batch-1 row and the verdicts are the median run by p50.")
        elif len(single.get("p50_ms_runs", [])) > 1:
            lines.append(f"One record, p50 in {len(single['p50_ms_runs'])} separate workers (the later ones after every model's other points): "
                         + ", ".join(f"{value:.2f}" for value in single["p50_ms_runs"])
                         + " ms; the batch-1 row and the verdict are the median run.")
        if "with_reconstruction" in single:
            lines.append(f"One record with the noiseless reconstruction decoded too (the image page's call): p50 "
                         f"{single['with_reconstruction']['p50_ms']:.2f} ms, p95 "
                         f"{single['with_reconstruction']['p95_ms']:.2f} ms.")
        if "content_awareness_cost" in entry:
            lines.append(f"Cost of content-awareness: CADP p50 {single['p50_ms']:.2f} ms / DP-Pix p50 "
                         f"{single['dp_pix']['p50_ms']:.3f} ms = {entry['content_awareness_cost']:.0f}x.")
        gpu = any("gpu_busy_share" in point for point in entry["batches"].values())
        added = any("privatize_added_mib" in point for point in entry["batches"].values())
        lines += ["", "| batch | p50 ms/call | p95 ms/call | records/s | peak RSS MiB |" + (" added MiB |" if added else "")
                  + " GFLOP/s | efficiency |" + (" peak CUDA MiB | GPU busy |" if gpu else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if added else "") + ("---|---|" if gpu else "")]
        for batch, point in entry["batches"].items():
            lines.append(f"| {batch} | {point['p50_ms']:.2f} | {point['p95_ms']:.2f} | {_number(point['records_per_s'])}"
                         f" | {point['peak_rss_mib']:.0f} |"
                         + (f" {point['privatize_added_mib']:.0f} |" if "privatize_added_mib" in point
                            else " – |" if added else "")
                         + f" {point['flops_per_s'] / 1e9:.2f} | "
                         f"{100 * point['efficiency']:.1f}% |"
                         + (f" {point.get('peak_cuda_mib', float('nan')):.0f} | "
                            f"{100 * point.get('gpu_busy_share', float('nan')):.0f}% |" if gpu else ""))
        if gpu:
            lines.append("(GPU busy: the time in which the GPU ran kernels or copies during 5 calls, from "
                         "torch.profiler's CUDA events, as a share of 5 calls' mean time without the profiler.)")
        if added:
            lines.append("(Peak RSS: the process's resident peak during that row's warm-up and timed calls (model, "
                         "libraries and inputs resident, loading them not counted); added: that peak less the "
                         "resident size just before the calls.)")
        if any(point.get("peak_rss_scope", "").startswith("this and") for point in entry["batches"].values()):
            lines.append("(Short mode: one process per model, so a row's peak RSS includes the rows above it.)")
        lines.append("")
        lines += _target_rows(entry["targets"])
    fit = results.get("tabular_fit")
    if fit:
        lines += ["### On-the-fly tabular fit (synthetic 1,000 x 15, one categorical condition)", "",
                  "| steps | seconds | validation NLL (nats/dim) | group accuracy, model rows / real rows | "
                  "column distance (floor) | dependencies (floor) | usable | peak RSS MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {_fit_steps(run)} | {run['seconds']:.1f} | {run['validation_nll_per_dim']:.3f} | "
                  + _quality_cells(run.get("quality")) + f" | {run['peak_rss_mib']:.0f} |" for run in fit["runs"]]
        for run in fit["runs"]:
            for name, control in run.get("controls", {}).items():
                lines.append(f"| control: {name} (check: {control['check']}) | - | - | " + _quality_cells(control)
                             + " | - |")
        if any("quality" in run for run in fit["runs"]):
            lines += ["", "(Quality, bench/fit.py: rows drawn from the fitted model against new rows of the generator; "
                      "usable = (a) group accuracy of a classifier trained on them >= 0.93 x that of one trained on "
                      "real rows, (b) mean column distance at most 0.04 above the floor of real against new rows, "
                      "(c) mean correlation difference over the dependent pairs at most 0.03 above its floor. Each "
                      "control keeps all but what its check guards, and must fail that check.)"]
        lines.append("")
        lines += _target_rows(fit["targets"])
    app = results.get("app")
    if app:
        cold = app["cold_start"]["median"]
        lines += ["### App", "", f"Cold start (median of {len(app['cold_start']['samples'])}): health "
                  f"{cold['health_s']:.2f} s, page served {cold['page_s']:.2f} s"
                  + (f", home page rendered in a browser {cold['first_render_s']:.2f} s" if "first_render_s" in cold
                     else "") + "."]
        browser = app["browser"]
        if "skipped" in browser:
            lines.append(f"Browser measurements skipped ({browser['skipped']}).")
        else:
            for page, render in browser["privatize_to_render"].items():
                lines.append(f"Privatize -> rendered, {page} page ({render['model']}): median "
                             f"{render['median_s']:.2f} s over {len(render['samples_s'])} presses "
                             f"(max {max(render['samples_s']):.2f} s).")
            concurrent = browser["concurrent"]
            lines.append(f"{concurrent['sessions']} concurrent sessions x {concurrent['rounds']} rounds (upload CSV -> "
                         f"Privatize -> download): {concurrent['completed']} completed, {concurrent['failed']} failed; "
                         f"whole session p50 {concurrent['total_p50_s']:.2f} s, p95 {concurrent['total_p95_s']:.2f} s; "
                         f"Privatize -> download p50 {concurrent['privatize_to_download_p50_s']:.2f} s, "
                         f"p95 {concurrent['privatize_to_download_p95_s']:.2f} s.")
        lines.append("")
        lines += _target_rows(app["targets"])
    for name, entry in results.get("evaluation", {}).items():
        if "utility_wall_seconds" in entry:  # runs stored before the suite ran the sweep itself
            lines.append(f"Evaluation, {name}: utility sweep {entry['utility_wall_seconds']:.0f} s (from eval.json)."
                         if entry["utility_wall_seconds"] is not None else f"Evaluation, {name}: {entry['note']}.")
            continue
        kind = "quick (--quick) utility sweep" if entry["quick"] else "default utility sweep"
        if "error" in entry:
            lines.append(f"Evaluation, {name}: the {kind} failed ({entry['error']}).")
            continue
        line = (f"Evaluation, {name}: {kind} {entry['process_s']:.0f} s, measured by this run "
                f"(`{entry['command']}` on a copy of the folder, {_threads(entry.get('torch_threads'), 'torch ')}; "
                f"{entry['wall_seconds']:.0f} s of it inside the sweep)")
        utilization = entry.get("gpu_utilization")
        if utilization:
            line += ("; GPU utilization " + (f"mean {utilization['mean_percent']:.0f}%, median "
                                             f"{utilization['median_percent']:.0f}% over {utilization['samples']} "
                                             "samples (nvidia-smi, every 0.5 s)" if utilization["samples"]
                                             else f"not sampled ({utilization['note']})"))
        recorded = entry.get("recorded")
        if recorded:
            line += (f"; the run behind the bundled eval.json recorded {recorded['wall_seconds']:.0f} s "
                     f"({'quick' if recorded['quick'] else 'default'}, {_threads(recorded['torch_threads'])}, "
                     f"{recorded['date']})")
        lines.append(line + ".")
    return "\n".join(lines) + "\n"


def _quality_cells(quality: dict | None) -> str:
    if quality is None:  # runs stored before the suite judged quality
        return "n/a | n/a | n/a | n/a"
    return (f"{quality['tstr']:.3f} / {quality['trtr']:.3f} | {quality['column_distance']:.3f} "
            f"({quality['column_distance_floor']:.3f}) | {quality['dependency_difference']:.3f} "
            f"({quality['dependency_difference_floor']:.3f}) | "
            + ("yes" if quality["usable"] else "no: " + ", ".join(quality["failed_checks"])))


def _privatize_terms(entry: dict) -> str:
    """What the timed privatize call decodes; runs stored before the release-only call decoded twice."""
    decodes = round((entry["privatize_flops_per_record"] - entry["encode_flops_per_record"])
                    / entry["decode_flops_per_record"])
    return "encode + decode of the release" if decodes == 1 else f"encode + {decodes} decodes"


def _cold_load(cold: dict | None) -> str:
    if not cold:
        return ""
    runs = cold["process_s_runs"]
    return (f" Cold, in a fresh process (median of {len(runs)} by process time): imports {cold['import_s']:.2f} s, "
            f"load_model {cold['load_model_s']:.2f} s, then privatize one record (no warm-up) "
            f"{cold['first_privatize_s'] * 1e3:.0f} / {cold['second_privatize_s'] * 1e3:.0f} / "
            f"{cold['third_privatize_s'] * 1e3:.0f} ms (calls 1 / 2 / 3); whole process {cold['process_s']:.2f} s "
            "(interpreter start to exit).")


def _load(load: dict | None) -> str:
    if not load:
        return "n/a"
    processes = "; ".join(load["cadp_processes"]) or "no cadp.train / cadp.evaluate process"
    copy = f", memory copy {load['memory_copy_gb_s']:.1f} GB/s" if "memory_copy_gb_s" in load else ""
    return f"load average {load['load_average_1min']:.2f}{copy}, {processes}"


def _target_rows(targets: dict) -> list[str]:
    rows = ["| target | value | required | verdict |", "|---|---|---|---|"]
    for name, target in targets.items():
        where = f" (batch {target['at_batch']})" if "at_batch" in target else ""
        where += f" ({target['page']} page)" if "page" in target else ""
        value = target["value"]
        shown = f"{100 * value:.1f}%" if value is not None and "efficiency" in name else _number(value)
        required = target["target"]
        if "efficiency" in name:
            required = required.split()[0] + f" {100 * float(required.split()[1]):.0f}%"
        rows.append(f"| {target['description']}{where} | {shown} | {required} | {_verdict(target)} |")
    return rows + [""]


def compare(before: dict, after: dict) -> str:
    """Markdown table: each model and batch size of two stored runs, side by side."""
    rows = ["| model | batch | p50 ms before | after | records/s before | after | efficiency before | after "
            "| process peak RSS MiB before | after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in after.get("models", {}).items():
        old_batches = before.get("models", {}).get(name, {}).get("batches", {})
        for batch, new in entry["batches"].items():
            old = old_batches.get(batch, {})

            def pair(key, digits, scale=1.0, suffix="", old=old, new=new):
                values = [point.get(key) for point in (old, new)]
                if key == "process_peak_rss_mib":  # runs before this key: their peak_rss_mib was the process's
                    values = [point.get(key, point.get("peak_rss_mib")) for point in (old, new)]
                return " | ".join("–" if v is None else f"{scale * v:,.{digits}f}{suffix}" for v in values)

            rows.append(f"| {name} | {batch} | {pair('p50_ms', 2)} | {pair('records_per_s', 0)} "
                        f"| {pair('efficiency', 1, 100.0, '%')} | {pair('process_peak_rss_mib', 0)} |")
    dates = [run.get("machine", {}).get("date", "?") for run in (before, after)]
    notes = []
    for name, entry in after.get("models", {}).items():
        old_entry = before.get("models", {}).get(name)
        if not all(e and "privatize_flops_per_record" in e for e in (old_entry, entry)):
            continue
        terms = [_privatize_terms(old_entry), _privatize_terms(entry)]
        if terms[0] != terms[1]:
            notes.append(f"{name}: the timed call differs: before {terms[0]}, after {terms[1]}.")
        single = entry["batches"].get("1", {}).get("with_reconstruction")
        if single and terms[0] != terms[1]:
            notes.append(f"{name}, batch 1, the same call as before (with the reconstruction): p50 "
                         f"{old_entry['batches'].get('1', {}).get('p50_ms', math.nan):.2f} -> {single['p50_ms']:.2f} ms.")
    notes.append("(Process peak RSS: the worker's whole peak, loading the model, libraries and inputs included; "
                 "--report's peak RSS is that of the calls alone.)")
    return "\n".join(rows + ["", f"before: {dates[0]}, after: {dates[1]}"] + notes)


# --------------------------------------------------------------------------- CLI

def positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, e.g. 2, not {text!r}")
    return value


def stored_run(parser: argparse.ArgumentParser, path: str) -> dict:
    """A stored results file, or the parser's error (exit 2) where it cannot be read as one."""
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        parser.error(f"{path} cannot be read as a results file: {error}")
    if not isinstance(stored, dict) or not {"mode", "machine"} <= set(stored):
        parser.error(f"{path} is not a results file of `python -m bench` (it has no 'mode' and 'machine'; other "
                     "modules' files, such as bench.architectures', are read as they are)")
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--short", dest="mode", action="store_const", const="short", help="quick run for CI (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="every measurement")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=positive_count, help="torch threads (default: torch's default, one per core)")
    parser.add_argument("--browser", action="store_true", help="also the browser measurements (Chromium)")
    parser.add_argument("--models", nargs="+", help="model names in weights/ or folders (default: the bundled ones)")
    parser.add_argument("--skip", nargs="+", default=[], choices=["models", "fit", "app", "evaluation"],
                        help="sections to leave out")
    parser.add_argument("--weights-dir", help="CADP_WEIGHTS_DIR for the app's browser measurements")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-results.json"),
                        help="where the JSON results go (default: runs/bench-results.json, git-ignored)")
    parser.add_argument("--report", metavar="RESULTS_JSON", help="print the Markdown summary of a stored run; measure nothing")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE_JSON", "AFTER_JSON"),
                        help="print a before/after table of two stored runs; measure nothing")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (stored_run(parser, path) for path in args.compare)
        print(compare(before, after))
        return 0
    if args.report:
        stored = stored_run(parser, args.report)
        print(report(stored))
        return 0
    args.mode = args.mode or "short"
    settings = MODES[args.mode]
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA GPU is available")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    folders = model_folders(args.models)
    # every process of the suite applies the app's allocator settings (cadp.runtime); the workers do so themselves
    allocator = ("glibc malloc: no mmap, trim threshold 512 MiB (cadp.runtime.configure_allocator)"
                 if configure_allocator() else "the C library's defaults")
    results = {"mode": args.mode, "device": args.device, "command": "python -m bench " + " ".join(argv or sys.argv[1:]),
               "machine": machine() | {"allocator": allocator}, "settings": {k: v for k, v in settings.items()}}
    sections = results["section_seconds"] = {}
    if "models" not in args.skip:
        results["peak"], results["models"] = bench_models(folders, settings, args.device, args.threads)
        sections["models"] = time.perf_counter() - started
    if "fit" not in args.skip:
        results["tabular_fit"] = bench_fit(settings, args.threads)
        sections["fit"] = time.perf_counter() - started - sum(sections.values())
    if "app" not in args.skip:
        results["app"] = bench_app(settings, folders, args.browser, args.weights_dir)
        sections["app"] = time.perf_counter() - started - sum(sections.values())
    if "evaluation" not in args.skip:  # the default sweep in full mode (minutes per image model), --quick's in short
        results["evaluation"] = evaluation_times(folders, quick=args.mode == "short", device=args.device,
                                                 threads=args.threads)
        sections["evaluation"] = time.perf_counter() - started - sum(sections.values())
    results["machine"]["other_load_at_end"] = other_load()
    results["seconds"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report(results))
    print(f"{args.mode} run: {results['seconds']:.0f} s; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
