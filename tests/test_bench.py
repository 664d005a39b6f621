"""The benchmark suite's short mode: it runs, writes a results file with every section, and its verdicts add up.

No timing is asserted: only that what is reported is consistent with what was measured.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from bench import TARGETS, judge, percentile
from bench.__main__ import compare, main, report
from tests.conftest import bundled

pytestmark = pytest.mark.slow  # starts workers and a streamlit server: ~20 s on an idle 2-core machine


def test_judge_and_percentile():
    assert judge("image_latency_p50_ms", 9.9)["met"] is True
    assert judge("image_latency_p50_ms", 10.1)["met"] is False
    assert judge("table_throughput_rows_per_s", 49_999.0)["met"] is False
    assert judge("image_efficiency_batch1", None)["met"] is None
    assert percentile([4.0, 1.0, 3.0, 2.0, 5.0], 0.5) == 3.0
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    model = bundled("diabetes-cinn")
    out = tmp_path_factory.mktemp("bench") / "results.json"
    assert main(["--short", "--models", str(model), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_short_mode_writes_every_section(short_run):
    assert short_run["mode"] == "short"
    assert {"machine", "peak", "models", "tabular_fit", "app", "evaluation", "seconds"} <= set(short_run)
    assert short_run["machine"]["torch"] and short_run["machine"]["cpu_count"] >= 1
    assert short_run["machine"]["other_load"]["memory_copy_gb_s"] > 0
    assert short_run["machine"]["other_load_at_end"]["memory_copy_gb_s"] > 0
    assert short_run["machine"]["allocator"]
    if short_run["machine"].get("cpu_model") and "cpu_family" in short_run["machine"]:  # lscpu ran (Linux)
        assert isinstance(short_run["machine"]["cpu_vector_flags"], list)
        assert short_run["machine"]["cpu_family"] and short_run["machine"]["cpu_model_number"]
    assert short_run["app"]["browser"] == {"skipped": "run with --browser"}
    sweep = short_run["evaluation"]["diabetes-cinn"]
    assert sweep["quick"] is True and 0 < sweep["wall_seconds"] <= sweep["process_s"]
    assert sweep["command"] == "python -m cadp.evaluate utility --model weights/diabetes-cinn --device cpu --quick"


def test_short_mode_numbers_are_consistent(short_run):
    peak = short_run["peak"]
    assert peak["peak_flops_per_s"] == max(peak["rates_flops_per_s"].values()) > 0
    entry = short_run["models"]["diabetes-cinn"]
    # the timed call: encode, mechanism and the release's decode (no reconstruction)
    assert entry["privatize_flops_per_record"] == pytest.approx(
        entry["encode_flops_per_record"] + entry["decode_flops_per_record"], rel=0.01)
    assert "with_reconstruction" not in entry["batches"]["1"]  # timed for image models only
    assert set(entry["batches"]) == {"1", "256"}
    for batch, point in entry["batches"].items():
        assert 0 < point["p50_ms"] <= point["p95_ms"]
        assert point["records_per_s"] == pytest.approx(int(batch) * 1e3 / point["mean_ms"], rel=1e-6)
        assert point["efficiency"] == pytest.approx(
            entry["privatize_flops_per_record"] * point["records_per_s"] / entry["reference_peak"]["peak_flops_per_s"])
        # the peak of the calls alone (VmHWM reset after loading), within the whole process's peak
        assert point["peak_rss_scope"] == "the warm-up and timed calls (VmHWM reset before them)"
        assert 0 < point["rss_before_privatize_mib"] <= point["peak_rss_mib"] <= point["process_peak_rss_mib"]
        assert point["process_peak_rss_mib"] >= point["peak_rss_before_privatize_mib"] > 0
        assert point["privatize_added_mib"] == pytest.approx(point["peak_rss_mib"] - point["rss_before_privatize_mib"])
    # the short mode measures both batch sizes in one process: its peak so far can only grow (a reset forgot it)
    assert entry["batches"]["256"]["process_peak_rss_mib"] >= entry["batches"]["1"]["process_peak_rss_mib"]
    for name, verdict in entry["targets"].items():
        direction, limit, _ = TARGETS[name]
        assert verdict["met"] == (verdict["value"] <= limit if direction == "max" else verdict["value"] >= limit)
    cold = entry["cold_load"]
    assert cold["process_s"] > cold["import_s"] + cold["load_model_s"] + cold["first_privatize_s"] > 0
    assert len(cold["process_s_runs"]) == 1 and cold["third_privatize_s"] > 0
    fit = short_run["tabular_fit"]["runs"][0]
    assert (fit["rows"], fit["columns"], fit["steps"]) == (1000, 15, "fit_tabular default")
    assert fit["numeric_columns"] > 0 and fit["categorical_columns"] > 0
    assert math.isfinite(fit["validation_nll_per_dim"]) and fit["seconds"] > 0
    quality = fit["quality"]
    assert 0 <= quality["majority"] < quality["trtr"] <= 1 and 0 <= quality["tstr"] <= 1
    assert quality["usable"] == (not quality["failed"]) and quality["dependent_pairs"] > 0
    for name, control in fit["controls"].items():  # each keeps all but what its check guards: that check fails it
        assert control["usable"] is False and control["check"] in control["failed_checks"], name
    verdict = short_run["tabular_fit"]["targets"]["tabular_fit_seconds"]  # judged in short mode too (one fit)
    assert verdict["usable_quality"] is quality["usable"] and verdict["value"] == fit["seconds"]
    assert verdict["met"] == (fit["seconds"] <= 30 and quality["usable"])
    cold = short_run["app"]["cold_start"]["median"]
    assert 0 < cold["health_s"] <= cold["page_s"]


def test_short_mode_report_shows_the_verdicts(short_run):
    text = report(short_run)
    assert "### diabetes-cinn" in text and "| table row, one record, p50 |" in text
    assert ("| met |" in text) or ("**missed**" in text)
    assert "| batch | p50 ms/call | p95 ms/call | records/s | peak RSS MiB | added MiB |" in text
    assert "| fit_tabular default (seed 0) |" in text
    if "cpu_family" in short_run["machine"]:
        assert f"(family {short_run['machine']['cpu_family']} model " in text


def test_fit_verdict_is_not_judged_when_a_control_passes_its_check(monkeypatch):
    import bench.__main__ as suite

    def fit_run(seed, control_usable):
        quality = {"usable": True, "failed": [], "failed_checks": []}
        run = {"steps": "fit_tabular default", "seconds": 10.0 + seed, "seed": seed, "quality": quality}
        if seed == 0:
            failed = [] if control_usable else ["group accuracy"]
            run["controls"] = {"independent columns": {"usable": control_usable, "check": "group accuracy",
                                                       "failed": failed, "failed_checks": failed}}
        return run

    for control_usable, expected in ((False, True), (True, None)):
        seeds = []

        def worker(module, arguments, control_usable=control_usable, seeds=seeds):
            seeds.append(arguments["seed"])
            return fit_run(arguments["seed"], control_usable)

        monkeypatch.setattr(suite, "run_worker", worker)
        verdict = suite.bench_fit({"fit_steps": (None, None, None)}, threads=1)["targets"]["tabular_fit_seconds"]
        assert seeds == [0, 1, 2]  # each fit its own seed
        assert verdict["value"] == 11.0 and verdict["met"] is expected
        if expected is None:
            assert "independent columns" in verdict["note"]


def test_compare_lines_up_two_runs():
    def run(p50, date):
        return {"machine": {"date": date},
                "models": {"m": {"batches": {"1": {"p50_ms": p50, "records_per_s": 1000 / p50, "efficiency": 0.05,
                                                   "peak_rss_mib": 400.0}}}}}

    table = compare(run(20.0, "before-date"), run(12.5, "after-date"))
    assert "| m | 1 | 20.00 | 12.50 | 50 | 80 | 5.0% | 5.0% | 400 | 400 |" in table
    assert "before: before-date, after: after-date" in table
    # a model missing from the earlier run shows dashes, not an error
    assert "| m | 1 | – | 12.50 |" in compare({}, run(12.5, "d"))
    # runs that timed different calls say so, with the like-for-like number where there is one
    old, new = run(20.0, "a"), run(9.0, "b")
    old["models"]["m"] |= {"encode_flops_per_record": 1.0, "decode_flops_per_record": 1.0,
                           "privatize_flops_per_record": 3.0}
    new["models"]["m"] |= {"encode_flops_per_record": 1.0, "decode_flops_per_record": 1.0,
                           "privatize_flops_per_record": 2.0}
    new["models"]["m"]["batches"]["1"]["with_reconstruction"] = {"p50_ms": 15.0}
    notes = compare(old, new)
    assert "m: the timed call differs: before encode + 2 decodes, after encode + decode of the release." in notes
    assert "the same call as before (with the reconstruction): p50 20.00 -> 15.00 ms" in notes


def test_profile_tables_time_every_flow_path_and_fit_part():
    import torch

    from bench import WEIGHTS
    from bench.compute import load
    from bench.profile import fit_step_parts, table_flow_paths

    paths = table_flow_paths(load(WEIGHTS / "diabetes-cinn", torch.device("cpu")), batches=(1, 80), calls=5)
    rows = [line.split("|")[1:-1] for line in paths.splitlines() if line.startswith("| ") and "rows" not in line]
    assert [row[0].strip() for row in rows] == ["1", "80"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])  # NumPy, trace, graph, the model's choice
    parts = fit_step_parts(steps=5)
    assert parts.count("| ") >= 8 and "one flat tensor, fused" in parts and "traced (fit_tabular)" in parts


def test_profile_tables_time_the_small_batch_forms_of_an_image_model():
    import torch

    from bench import WEIGHTS
    from bench.compute import load
    from bench.profile import image_fusion_calls, image_small_batch_calls, image_small_batch_layers
    from cadp import models

    loaded = load(WEIGHTS / "mnist-cinn", torch.device("cpu"))
    layers = image_small_batch_layers(loaded, batches=(1, 2), calls=3)
    rows = [line.split("|")[1:-1] for line in layers.splitlines() if line.startswith("| ") and "layer" not in line]
    convolutions = {f"{layer.in_channels} -> {layer.out_channels}, {layer.kernel_size[0]}x{layer.kernel_size[1]}"
                    for module in loaded.model.modules() if isinstance(module, torch.nn.Sequential)
                    for layer in module if isinstance(layer, torch.nn.Conv2d)}
    assert len(convolutions) >= 4 and {row[0].strip() for row in rows} == convolutions  # every distinct one
    assert all(float(value) > 0 for row in rows for cell in row[2:] for value in cell.split("/"))
    calls = image_small_batch_calls(loaded, calls=4)
    assert "the target's call" in calls and "the image page's call" in calls
    assert "_small_batch_forms" not in loaded.model.__dict__  # the switch is undone
    fusion = image_fusion_calls(loaded, calls=4)
    rows = [line.split("|")[1:-1] for line in fusion.splitlines() if line.startswith("| ") and "fused (used)" not in line]
    assert len(rows) == 2 and all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)
    if hasattr(torch.jit, "enable_onednn_fusion") and torch.backends.mkldnn.is_available():
        assert all(row[1].strip().endswith("(fused)") for row in rows)  # the model's passes were fused
    assert models.ONEDNN_GRAPH is True  # switched back


def test_busy_share_is_the_covered_part_of_the_window():
    from bench.compute import busy_share

    assert busy_share([], 0.0, 10.0) == 0.0
    assert busy_share([(2.0, 4.0), (3.0, 5.0), (8.0, 20.0)], 0.0, 10.0) == pytest.approx(0.5)  # overlaps once
    assert busy_share([(-5.0, 1.0), (1.0, 2.0), (1.5, 1.8)], 0.0, 4.0) == pytest.approx(0.5)  # clipped, nested
    assert busy_share([(0.0, 10.0)], 0.0, 10.0) == 1.0


def test_report_shows_gpu_columns_only_for_gpu_runs(short_run):
    import copy

    assert "GPU busy" not in report(short_run) and "GPU:" not in report(short_run)
    gpu_run = copy.deepcopy(short_run)
    gpu_run["device"], gpu_run["machine"]["gpu"] = "cuda", "NVIDIA H200"
    for point in gpu_run["models"]["diabetes-cinn"]["batches"].values():
        point |= {"peak_cuda_mib": 12.0, "gpu_busy_share": 0.875}
    gpu_run["evaluation"]["diabetes-cinn"]["gpu_utilization"] = {"samples": 8, "mean_percent": 61.5,
                                                                 "median_percent": 70.0, "busy_sample_share": 0.9}
    text = report(gpu_run)
    assert "| peak CUDA MiB | GPU busy |" in text and "| 12 | 88% |" in text
    assert "GPU: NVIDIA H200 (the device measured)." in text  # the results are recorded with the GPU's name
    assert "On the CPU whatever the device: the warm and cold loads, the tabular fit" in text
    assert "GPU utilization mean 62%, median 70% over 8 samples" in text


def test_a_run_records_the_commit_it_measured(short_run):
    """A run did not say which code it measured: BENCHMARKS.md named commits no results file could confirm."""
    info = short_run["machine"]
    assert len(info["commit"]) == 40 and isinstance(info["tracked_files_changed"], bool)
    assert f"Code: commit {info['commit'][:12]}" in report(short_run)



def test_each_model_is_judged_against_the_matmuls_and_its_own_largest_layer(tiny_weights, monkeypatch):
    """A model's share used the best layer of every model in the run (a table model's share changed with the image
    models run beside it); the issue's reference is the matmuls and the model's own largest layer."""
    import torch

    import bench.compute as compute
    from tests.app_helpers import IMAGE_MODEL, TABLE_MODEL

    def timed(call, device, **options):  # a convolution runs fastest, then a linear layer, then the matmuls
        layer = (call.__defaults__ or (None,))[0]
        return [1e-6 if isinstance(layer, torch.nn.Conv2d) else 1e-5 if isinstance(layer, torch.nn.Linear) else 1.0]

    monkeypatch.setattr(compute, "timed_calls", timed)
    image = compute.load(tiny_weights / IMAGE_MODEL, torch.device("cpu"))
    table = compute.load(tiny_weights / TABLE_MODEL, torch.device("cpu"))
    peak = compute.peak_flops([image, table], matmul_sizes=(64, 128))
    rates = peak["rates_flops_per_s"]
    assert peak["peak_source"].startswith(f"{image.config.name}: ") and "Conv2d" in peak["peak_source"]
    for loaded in (image, table):
        reference = peak["model_peaks"][loaded.folder.name]
        own = [name for name in rates if name.startswith(f"{loaded.config.name}: ")]
        assert reference["peak_source"] == max([*own, "matmul 64", "matmul 128"], key=rates.get)
    assert peak["model_peaks"][TABLE_MODEL]["peak_source"].startswith(f"{table.config.name}: ")  # not the image's


def test_gpu_sampler_reads_utilization_while_the_sweep_runs_and_says_why_it_could_not():
    import subprocess
    import sys

    from bench.__main__ import GpuSampler

    sweep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.2)"])
    sampler = GpuSampler(sweep, interval=0.1, command=[sys.executable, "-c", "print('42')"])
    sweep.wait()
    summary = sampler.summary()
    assert summary["samples"] >= 2 and summary["mean_percent"] == 42.0 and summary["busy_sample_share"] == 1.0
    sweep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    missing = GpuSampler(sweep, interval=0.1, command=["/nonexistent/nvidia-smi"]).summary()
    sweep.wait()
    assert missing["samples"] == 0 and "FileNotFoundError" in missing["note"]


def test_bad_options_and_unreadable_results_are_one_line_errors(tmp_path, capsys):
    for argv in (["--threads", "-1"], ["--threads", "0"], ["--threads", "two"]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2 and "a whole number of at least 1" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for argv in (["--report", str(broken)], ["--compare", str(broken), str(broken)], ["--report", str(tmp_path)]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        error = capsys.readouterr().err
        assert stopped.value.code == 2 and "cannot be read as a results file" in error and "Traceback" not in error
    partial = tmp_path / "partial.json"
    partial.write_text('{"mode": "full"}')  # (a KeyError traceback in the report; an empty --compare table)
    for argv in (["--report", str(partial)], ["--compare", str(partial), str(partial)]):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2 and "is not a results file of `python -m bench`" in capsys.readouterr().err


def test_architecture_variants_are_built_as_configured_and_measured():
    import torch

    from bench import WEIGHTS
    from bench.architectures import measure, report, variant
    from bench.compute import load

    loaded = load(WEIGHTS / "mnist-cinn", torch.device("cpu"))
    small = {"conv_subnet": "3-3-3", "conv_width": 8, "conv_blocks": [1, 1], "fc_blocks": 1, "fc_width": 16}
    built = variant(loaded, "small 3-3-3", small)
    assert built.config.conv_subnet == "3-3-3" and built.config.conv_width == 8
    assert all(p.any() for p in built.model.parameters() if p.requires_grad)  # no identity couplings
    x = torch.zeros(2, 1, 28, 28) + 100
    with torch.inference_mode():
        assert (built.model.decode(built.model.encode(x, torch.tensor([1, 2])), torch.tensor([1, 2])) - x).abs().max() < 1e-2
    measured = measure({"small 3-3-3": built}, rounds=2, min_seconds=0.01,
                       peak_options={"matmul_sizes": (256,), "min_seconds": 0.05})
    row = measured["results"][0]
    assert len(row["batch1_ms_per_round"]) == len(row["batch256_efficiency_per_round"]) == 2
    peak = measured["peak"]["peak_flops_per_s"]
    assert row["batch256_efficiency_per_round"][0] == pytest.approx(
        row["flops_per_record"] * 256 / (row["batch256_ms_per_round"][0] / 1e3) / peak)
    assert "| small 3-3-3 |" in report(measured)


def test_sample_grid_has_a_row_per_class_and_a_panel_per_model(tiny_weights, tmp_path):
    from PIL import Image

    from bench import samples
    from tests.app_helpers import IMAGE_MODEL

    out = tmp_path / "grid.png"
    assert samples.main([str(tiny_weights / IMAGE_MODEL), str(tiny_weights / IMAGE_MODEL), "--out", str(out)]) == 0
    width, height = Image.open(out).size
    assert height == 2 * 10 * 28 and width == 2 * (2 * samples.PER_CLASS * 28 + 8)  # two panels, one gap
    grid = samples.sample_grid(tiny_weights / IMAGE_MODEL)
    assert grid.shape == (280, samples.PER_CLASS * 28)
    assert (grid[:28] != grid[28:56]).any()  # classes condition the samples (the untrained model's labels too)


def test_evaluation_times_run_the_sweep_on_a_copy_named_as_given(tmp_path):
    """The suite times the sweep itself, on a copy: a candidate folder is named by its path (not the bundled
    model of the same name), and neither folder's eval.json changes."""
    import shutil

    from bench.__main__ import evaluation_times

    candidate = tmp_path / "diabetes-cinn"
    shutil.copytree(bundled("diabetes-cinn"), candidate)
    before = (candidate / "eval.json").read_bytes()
    entry = evaluation_times([candidate], quick=True)["diabetes-cinn"]
    assert "error" not in entry, entry.get("error")
    assert entry["command"] == f"python -m cadp.evaluate utility --model {candidate} --device cpu --quick"
    assert 0 < entry["wall_seconds"] <= entry["process_s"]
    assert entry["recorded"]["quick"] is False and entry["recorded"]["wall_seconds"] > 0  # the bundled full run
    assert (candidate / "eval.json").read_bytes() == before


def test_mechanisms_line_names_the_commit_and_every_mechanism(capsys):
    """bench.mechanisms times one record per mechanism on the bundled models (the tenth round's A/B runs)."""
    from bench import mechanisms

    assert mechanisms.main(["--calls", "3"]) == 0
    line = capsys.readouterr().out.strip()
    for key in ("image laplace", "row laplace", "image gaussian", "row gaussian"):
        assert re.search(rf"{key} p50 \d+\.\d\d ms", line), line


def test_noise_words_times_seeded_and_unseeded_generators_for_each_case(capsys, monkeypatch):
    """bench.noise_words compares torch's stream with os.urandom's words (the twelfth round): both are timed, and
    the unseeded calls really draw from the operating system."""
    from bench import noise_words
    from cadp import mechanisms

    drawn = []
    real = mechanisms.os.urandom
    monkeypatch.setattr(mechanisms.os, "urandom", lambda n: drawn.append(n) or real(n))
    assert noise_words.main(["--calls", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["one image", "256 images", "one row"]
    for line in lines:
        assert re.search(r"seeded \(torch\) p50 \d+\.\d\d ms; unseeded \(os.urandom\) p50 \d+\.\d\d ms", line), line
    assert sum(drawn) >= 8 * 3 * 784 * 256  # the words of a batch of 256 images, at least


def test_a_share_above_the_peak_is_not_judged_and_cold_start_needs_a_browser(monkeypatch):
    """A peak measured in a slow moment let a later worker reach 123% and pass; "/" answers before the app runs."""
    import bench.app
    from bench.__main__ import _verdict, bench_app, judge_share

    assert judge_share("image_efficiency_batch256", 0.75)["met"] is True
    over = judge_share("image_efficiency_batch256", 1.23)
    assert over["met"] is None and _verdict(over).startswith("not judged (above 100% of the peak")
    monkeypatch.setattr(bench.app, "cold_start", lambda repeats, browser: {
        "median": {"health_s": 0.6, "page_s": 0.6, **({"first_render_s": 5.2} if browser else {})}})
    monkeypatch.setattr(bench.app, "browser_measurements", lambda *a: {"privatize_to_render": {
        "image": {"median_s": 0.5}, "table": {"median_s": 0.6}}})
    settings = {"cold_starts": 1, "presses": 1, "rounds": 1}
    without = bench_app(settings, [], browser=False, weights=None)["targets"]["app_cold_start_seconds"]
    assert without["met"] is None and "needs --browser" in without["note"]
    rendered = bench_app(settings, [], browser=True, weights=None)["targets"]["app_cold_start_seconds"]
    assert rendered["value"] == 5.2 and rendered["met"] is False


def test_fit_quality_rejects_a_network_that_has_not_learned_and_accepts_a_fitted_one():
    """The 'usable quality' of the fit benchmark can fail: an untrained network (one step) and a 25-step one
    fail it, a fit of the app's default length (400 steps) passes it, on the same data."""
    from bench.fit import CONDITION, HELD_OUT_ROWS, _parsed, fit_quality, synthetic_frame
    from cadp.data import infer_column_kind
    from cadp.train import fit_tabular

    frame, held_out = _parsed(synthetic_frame(1000, seed=0)), _parsed(synthetic_frame(HELD_OUT_ROWS, seed=1))
    kinds = {column: infer_column_kind(frame[column]) for column in frame.columns}
    for steps in (1, 25):
        early = fit_quality(fit_tabular(frame, [CONDITION], steps=steps), frame, held_out, kinds)
        assert early["usable"] is False and "group accuracy" in early["failed_checks"], steps
    fitted = fit_quality(fit_tabular(frame, [CONDITION], steps=400), frame, held_out, kinds)
    assert fitted["usable"] is True, fitted["failed"]


def test_the_fit_target_needs_usable_quality_as_well_as_time(monkeypatch):
    """bench_fit's verdict: fast enough but not usable is missed, with the failing checks named; the median
    is over the default-steps fits only."""
    import bench.__main__ as suite

    def fake_worker(module, arguments, timeout=900):
        usable = arguments["steps"] != "bad"
        return {"steps": "fit_tabular default" if arguments["steps"] in (None, "bad") else arguments["steps"],
                "seconds": 12.0, "quality": {"usable": usable, "failed": [] if usable else ["dependencies 0.2 > 0.05"],
                                             "failed_checks": [] if usable else ["dependencies"]}}

    monkeypatch.setattr(suite, "run_worker", fake_worker)
    good = suite.bench_fit({"fit_steps": (None, 400)}, None)["targets"]["tabular_fit_seconds"]
    assert good["met"] is True and good["usable_quality"] is True and good["value"] == 12.0
    bad = suite.bench_fit({"fit_steps": (None, "bad")}, None)["targets"]["tabular_fit_seconds"]
    assert bad["met"] is False and bad["usable_quality"] is False
    assert bad["note"] == "fast enough, but not of usable quality: dependencies 0.2 > 0.05"
    assert "**missed** (fast enough, but not of usable quality" in "\n".join(suite._target_rows({"tabular_fit_seconds": bad}))


def test_short_mode_judges_an_image_model(tiny_weights, tmp_path):
    """CI's bench run covers the image path too (a tiny image model, the models section only): latency and
    both efficiency verdicts, the DP-Pix ratio, the call with the noiseless reconstruction, a cold load."""
    from tests.app_helpers import IMAGE_MODEL

    out = tmp_path / "image.json"
    assert main(["--short", "--models", str(tiny_weights / IMAGE_MODEL), "--skip", "fit", "app", "evaluation",
                 "--out", str(out)]) == 0
    entry = json.loads(out.read_text())["models"][IMAGE_MODEL]
    assert entry["kind"] == "image" and set(entry["batches"]) == {"1", "256"}
    assert {"image_latency_p50_ms", "image_efficiency_batch256", "image_efficiency_batch1"} <= set(entry["targets"])
    run = json.loads(out.read_text())
    reference = entry["reference_peak"]["peak_flops_per_s"]
    assert entry["reference_peak"] == run["peak"]["model_peaks"][IMAGE_MODEL]
    for name, batch, limit in (("image_efficiency_batch256", "256", 0.70), ("image_efficiency_batch1", "1", 0.40)):
        point, target = entry["batches"][batch], entry["targets"][name]
        share = entry["privatize_flops_per_record"] * point["records_per_s"] / reference
        assert target["value"] == pytest.approx(share) and share > 0  # flops x records/s over the model's peak
        assert target["met"] is (None if share > 1 else share >= limit)  # above 100%: not judged
    single = entry["batches"]["1"]
    assert single["with_reconstruction"]["p50_ms"] > 0 and single["dp_pix"]["p50_ms"] > 0
    assert entry["content_awareness_cost"] == pytest.approx(single["p50_ms"] / single["dp_pix"]["p50_ms"])
    assert entry["cold_load"]["first_privatize_s"] > 0



def test_render_timing_uploads_an_image_of_the_data_of_the_model_the_page_opens_on(tmp_path, monkeypatch):
    import io
    import shutil

    from PIL import Image

    from bench.app import opening_image_model, test_image_png
    from cadp.data import load_image_dataset
    from cadp.ui import WEIGHTS_ENV, bundled_models

    for name in ("heart-cinn", "mnist-cinn"):  # the image page skips table models
        (tmp_path / name).mkdir()
        shutil.copy(bundled(name) / "config.json", tmp_path / name / "config.json")
    assert opening_image_model(str(tmp_path)) == "mnist-cinn"
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert opening_image_model() == bundled_models("image")[0]  # the app's own choice on the bundled folder

    png, source = test_image_png("fashion-mnist-cinn")
    assert source == "fashion-mnist test image #0"
    pixels = list(Image.open(io.BytesIO(png)).tobytes())
    assert pixels == load_image_dataset("fashion-mnist", "test").images[0, 0].flatten().tolist()
    assert pixels != list(Image.open(io.BytesIO(test_image_png()[0])).tobytes())


def test_batch1_alternatives_compute_the_layer_and_the_table_restores_the_model_route():
    import torch

    from bench import WEIGHTS
    from bench.compute import load
    from bench.profile import BATCH1_ALTERNATIVES, fold_conv, image_batch1_alternatives, image_call_parts, winograd_conv
    from cadp import models

    torch.manual_seed(0)
    with torch.inference_mode():
        for in_channels, out_channels, kernel, size, batch in ((8, 2, 3, 7, 1), (6, 5, 3, 14, 3), (4, 3, 1, 5, 2),
                                                               (5, 4, 5, 9, 1)):
            layer = torch.nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)
            x = torch.randn(batch, in_channels, size, size)
            assert torch.allclose(fold_conv(layer, x), layer(x), atol=1e-5)
            if kernel == 3:
                assert torch.allclose(winograd_conv(layer, x), layer(x), atol=1e-5)
            else:
                assert not BATCH1_ALTERNATIVES["Winograd F(2x2,3x3)"][1](layer)
        strided = torch.nn.Conv2d(4, 2, 3, padding=1, stride=2)
        assert not BATCH1_ALTERNATIVES["matmul + fold"][1](strided)
    original = models._run_subnet
    loaded = load(WEIGHTS / "mnist-cinn", torch.device("cpu"))
    table = image_batch1_alternatives(loaded, layer_calls=3, calls=4)
    assert models._run_subnet is original
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ")]
    layers = [row for row in rows if "x" in row[1] and "->" in row[0]]
    assert len(layers) >= 4 and all(float(row[2]) > 0 for row in layers)
    assert all(float(cell.split("(")[1].rstrip(") ")) < 1e-3 for row in layers for cell in row[3:] if "(" in cell)
    assert any(row[0].strip() == "oneDNN Graph, frozen passes (used)" and row[-1].strip() == "1.00" for row in rows)
    assert any(row[0].strip().startswith("oneDNN, weights reordered once (used where fusion") for row in rows)
    assert any(row[0].strip().startswith("weights reordered once, traces frozen") for row in rows)
    assert models.ONEDNN_GRAPH is True  # switched back
    parts = image_call_parts(loaded, calls=5)
    values = {row.split("|")[1].strip(): float(row.split("|")[2]) for row in parts.splitlines()[4:]}
    assert len(values) == 6 and all(value > 0 for name, value in values.items() if "rest" not in name)
    assert values["the rest (noise, checks, the release)"] == pytest.approx(
        values["privatize call"] - values["encode (logit transform + forward pass)"]
        - values["decode (reverse pass + pixels)"], abs=1.0)


def test_archive_memory_runs_the_cli_on_distinct_rows_and_reports_its_peak(capsys, tmp_path):
    import pandas as pd

    from bench import archive_memory
    from cadp.hub import load_folder

    model = Path(__file__).resolve().parent.parent / "weights" / "diabetes-cinn"
    source = tmp_path / "rows.csv"
    archive_memory.write_rows(model, 500, source)
    rows = pd.read_csv(source)
    config = load_folder(model).config
    assert list(rows.columns) == [*config.data_columns, *config.condition_columns] and len(rows) == 500
    assert rows.duplicated().sum() < 10  # jittered: a CSV of mostly distinct rows, as an archive is
    assert archive_memory.main(["--rows", "300", "600"]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("| 300 |") or line.startswith("| 600 |")]
    assert len(lines) == 2 and all(line.endswith("| 0 |") for line in lines)
    peaks = [float(line.split("|")[2].replace(",", "")) for line in lines]
    assert all(peak > 100 for peak in peaks)  # a Python process with torch: hundreds of MiB, measured not assumed
    assert "MiB per million rows (300 -> 600 rows)" in printed


@pytest.mark.skipif(shutil.which("g++") is None or shutil.which("ninja") is None, reason="needs g++ and ninja")
def test_fused_coupling_computes_the_model_coupling_and_restores_the_model_route():
    import torch

    from bench import fused_coupling
    from bench.compute import load
    from cadp import models

    fused_coupling.compile_operator()
    assert fused_coupling.compile_operator() == 0.0  # compiled once per process
    loaded = load(Path(__file__).resolve().parent.parent / "weights" / "mnist-cinn", torch.device("cpu"))
    torch.manual_seed(0)
    with torch.inference_mode():
        for node in loaded.model.inn.node_list:
            module = node.module
            if type(module).__name__ != "GLOWCouplingBlock":
                continue
            shape = (2, *node.input_dims[0])
            x, c = torch.randn(shape), torch.rand(2, *node.conditions[0].output_dims[0])
            for rev in (False, True):
                expected, _ = models._coupling(module, x, (c,), rev)
                got, _ = fused_coupling.compiled_coupling(module, x, (c,), rev)
                assert torch.allclose(got, expected, atol=1e-4), (node.name, rev)
    original = models._coupling
    lines = fused_coupling.compare_model("mnist-cinn", rounds=1, calls=3)
    assert models._coupling is original and models.ONEDNN_GRAPH is True
    difference = next(line for line in lines if line.startswith("- largest difference"))
    assert all(float(value.split()[-1]) < 1e-3 for value in difference.split(":")[1].split(","))
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and "ms per round" not in line]
    assert len(rows) == 3 and all(float(cell) > 0 for row in rows for cell in row[1:])


def test_call_parts_times_the_real_call_and_puts_everything_back():
    """The steps are timed inside the suite's own call (the functions it calls, wrapped), add up to less than the
    call, and the wrappers are gone afterwards: a later release runs the library's own functions."""
    import cadp.mechanisms as mechanisms
    import cadp.privatize as privatize
    from bench import call_parts

    before = {name: getattr(module, name) for module, name in ((mechanisms, "laplace_noise"),
                                                                (privatize, "_image_pixels"),
                                                                (privatize, "_image_labels"),
                                                                (privatize, "release_condition"),
                                                                (privatize, "_guarantee"))}
    parts = call_parts.call_parts(str(bundled("mnist-cinn")), calls=5)
    assert set(parts) == {*call_parts.STEPS, "rest", "call"}
    assert all(parts[step] > 0 for step in call_parts.STEPS)  # each step was reached through its wrapper
    assert parts["encode"] + parts["decode"] < parts["call"] and parts["rest"] > 0
    assert before == {name: getattr(mechanisms if name == "laplace_noise" else privatize, name) for name in before}
    operations = call_parts.after_a_pass(str(bundled("mnist-cinn")), repeats=3)
    assert set(operations) == {"z + 1", "isfinite(z).all()", "float64 sum of z", "torch.empty(0)"}
    assert all(cold > 0 and warm > 0 for cold, warm in operations.values())


def test_huge_pages_moves_the_weights_with_their_strides_and_the_model_computes_the_same(tiny_weights):
    import torch

    from bench.compute import image_inputs, load
    from bench.huge_pages import HUGE_PAGE, on_huge_pages
    from tests.app_helpers import IMAGE_MODEL

    loaded, moved = (load(str(tiny_weights / IMAGE_MODEL), torch.device("cpu")) for _ in range(2))
    region = on_huge_pages(moved.model)
    before = dict(loaded.model.named_parameters())
    for name, parameter in moved.model.named_parameters():
        assert parameter.stride() == before[name].stride() and torch.equal(parameter, before[name]), name
    import ctypes

    start = ctypes.addressof(ctypes.c_char.from_buffer(region))  # the mapping holds them all
    assert len(region) % HUGE_PAGE == 0
    for name, parameter in moved.model.named_parameters():
        assert start <= parameter.data_ptr() < start + len(region), name
        assert not start <= before[name].data_ptr() < start + len(region), name
    pixels, labels, _ = image_inputs(loaded.config, 2)
    with torch.inference_mode():
        assert torch.equal(loaded.model.encode(pixels.float(), labels), moved.model.encode(pixels.float(), labels))


def test_call_parts_takes_model_names_as_the_suite_does(tiny_weights, monkeypatch, capsys):
    """It took folders only: `--models mnist-cinn` failed with 'model folder mnist-cinn does not exist'."""
    from bench import __main__ as suite
    from bench import call_parts
    from tests.app_helpers import IMAGE_MODEL

    monkeypatch.setattr(suite, "WEIGHTS", tiny_weights)
    assert call_parts.main(["--models", IMAGE_MODEL, "--calls", "2", "--rounds", "1"]) == 0
    assert f"{tiny_weights / IMAGE_MODEL}: one image's call" in capsys.readouterr().out


def test_the_numpy_mechanism_comparison_releases_what_the_library_does(tiny_weights, monkeypatch, capsys):
    """The NumPy arithmetic kept for the comparison releases what the library's mechanism releases (the same noise
    around the same clipped latent, up to float rounding), and the run prints a ratio per model and the mechanism's
    time after a pass."""
    import torch

    from bench import __main__ as suite
    from bench import numpy_mechanism
    from cadp.mechanisms import make_mechanism, new_generator
    from tests.app_helpers import IMAGE_MODEL

    library = make_mechanism("laplace", 3.0, clip_radius=2.0)
    tried = numpy_mechanism.NumpyLaplace(library.epsilon, library.clip_radius, library.temperature)
    z = 0.5 * torch.randn(20, 100, generator=torch.Generator().manual_seed(0))
    released = tried(z, new_generator(3))
    assert released.dtype == torch.float32
    assert torch.allclose(released, library(z, new_generator(3)), rtol=1e-6, atol=1e-6)
    assert not torch.equal(released, tried(z, new_generator(4)))
    monkeypatch.setattr(suite, "WEIGHTS", tiny_weights)
    threads = torch.get_num_threads()
    try:
        assert numpy_mechanism.main(["--models", IMAGE_MODEL, "--rounds", "2", "--calls", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # (the run sets 2, as the suite times)
    out = capsys.readouterr().out
    assert f"{IMAGE_MODEL}: one image's call, 2 rounds of 1 calls each" in out and "ratio per round" in out
    assert "| mechanism in torch |" in out and "| mechanism in NumPy |" in out


def test_report_counts_threads_in_the_singular_for_one():
    """The stored evaluation run's bundled eval.json ran with one thread each: "1 thread", not "1 threads"."""
    from bench.__main__ import _threads, report

    stored = json.loads((Path(__file__).parent.parent / "bench/results/twenty-seventh-evaluation.json").read_text())
    text = report(stored)
    assert "(default, 1 thread, " in text and "1 threads" not in text and "2 torch threads" in text
    assert (_threads(1), _threads(2, "torch "), _threads(None)) == ("1 thread", "2 torch threads", "threads not recorded")


def test_fused_memory_measures_each_route_and_tabulates_what_stays():
    """bench.fused_memory: each route's passes are what it names (fused: frozen passes; copies: weight copies), the
    resident sizes are read, and the table says what a load adds and what stays after the drop."""
    import torch

    from bench import WEIGHTS, fused_memory

    if not hasattr(torch.jit, "enable_onednn_fusion") or not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch has no oneDNN Graph fuser")
    results = {route: fused_memory.measure(str(WEIGHTS / "mnist-cinn"), route, loads=2) for route in fused_memory.ROUTES}
    assert results["fused"]["rounds"][0]["passes"] == ["_Snapshot"]
    assert results["copies"]["rounds"][0]["passes"] == ["_ConvPacks"]
    assert all(entry[key] > 100 for result in results.values() for entry in result["rounds"]
               for key in ("loaded", "called", "dropped"))
    shown = fused_memory.table("mnist-cinn", results)
    rows = [line.split("|")[1:-1] for line in shown.splitlines() if line.startswith("| ") and "route" not in line]
    assert [row[0].strip() for row in rows] == list(fused_memory.ROUTES.values())
    assert all(len(row[3].split(",")) == 2 for row in rows)  # one value per load
    assert [row[1].strip() for row in rows] == ["_Snapshot", "_ConvPacks"]  # every load's passes, by route
    for row, result in zip(rows, results.values()):  # per load after the first, and over the second half
        held = [entry["dropped"] - result["start"] for entry in result["rounds"]]
        assert float(row[4]) == pytest.approx(held[1] - held[0], abs=0.06)
        assert float(row[5]) == pytest.approx(held[1] - held[0], abs=0.06)  # (of two loads: the second)
    alternating = fused_memory.measure(",".join(str(WEIGHTS / name) for name in ("mnist-cinn", "fashion-mnist-cinn")),
                                       "copies", loads=3)  # (--alternate: the models in turn)
    assert [entry["model"] for entry in alternating["rounds"]] == ["mnist-cinn", "fashion-mnist-cinn", "mnist-cinn"]
    fits = fused_memory.measure_fits(fits=1, steps=3)
    assert fits["rounds"][0]["passes"] == ["likelihood", "encode", "decode"]  # (a fit's, then the whole table's)
    shown = fused_memory.table("fits", {"traces": fits}, loads="fits", each="fit, privatize, drop")
    assert "1 fit in turn (each: fit, privatize, drop)" in shown and "held per fit after the first" in shown


def test_app_memory_fits_in_each_session_and_reports_what_stays():
    """bench.app_memory: each table-page session uploads another table and fits a model on it (none served from an
    earlier fit), and the report gives the resident size after each session relative to the first."""
    from bench import app_memory

    result = app_memory.measure(sessions=2, steps=100, rows=200)
    assert result["fitted"] == [True, True] and len(result["held_mib"]) == 2 and result["held_mib"][0] == 0
    shown = app_memory.report(result)
    assert "2 table-page sessions in one process" in shown and "fitted in every session: True" in shown
    assert f"above the first session's: 0.0, {result['held_mib'][1]:.1f}" in shown
