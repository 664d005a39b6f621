"""Print the README's model and headline-result tables from the bundled models' eval.json.

    .venv/bin/python scripts/readme_tables.py

Every number comes from weights/<name>/eval.json, written by `python -m cadp.train` and
`python -m cadp.evaluate bpd|utility|audit|dpsgd --model weights/<name>`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from cadp.mechanisms import paper_batches_text  # noqa: E402

IMAGE_MODELS = ("mnist-cinn", "fashion-mnist-cinn")
TABLE_MODELS = ("diabetes-cinn", "heart-cinn")
TARGET_BPD = {"mnist-cinn": 2.0, "fashion-mnist-cinn": 3.4}
HEADLINE_EPSILONS = (0.5, 1, 2, 3, 6, 10, 100, 1000, 10000)
ROWS = ("laplace", "gaussian", "metric", "paper", "dp-pix")


def load(name: str) -> dict:
    return json.loads((ROOT / "weights" / name / "eval.json").read_text())


def fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def model_table() -> str:
    lines = ["| model | data | test bits/dim (target) | samples at T=0.7 recognized (target 0.9) | training |",
             "| --- | --- | --- | --- | --- |"]
    for name in IMAGE_MODELS:
        evaluation = load(name)
        bpd, training = evaluation.get("bpd", {}), evaluation.get("training", {})
        lines.append(
            f"| `{name}` | {training.get('train_records')} train / {training.get('test_records')} test images "
            f"| {fmt(bpd.get('test_bits_per_dim'))} (<= {TARGET_BPD[name]}) "
            f"| {fmt(bpd.get('sample_recognition_t0.7'))} "
            f"| {training.get('steps')} steps, {training.get('seconds', 0) / 60:.0f} min on {training.get('device')} |")
    lines += ["", "| model | data | epsilon = infinity round trip | max KS of numeric columns vs all rows (target 0.1) "
              "| max KS vs test rows only (training rows vs test rows) | training |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name in TABLE_MODELS:
        evaluation = load(name)
        bpd, training = evaluation.get("bpd", {}), evaluation.get("training", {})
        ks = bpd.get("sample_ks", {})
        worst = max(ks.items(), key=lambda item: item[1]) if ks else (None, None)
        exact = bpd.get("round_trip_exact")
        lines.append(
            f"| `{name}` | {training.get('train_records')} train / {training.get('test_records')} test rows "
            f"| {'exact' if exact else 'not exact'} | {fmt(worst[1])} ({worst[0]}); "
            f"{sum(v <= 0.1 for v in ks.values())} of {len(ks)} columns <= 0.1 "
            f"| {fmt(max(bpd.get('sample_ks_test_rows', {}).values(), default=None))} "
            f"({fmt(max(bpd.get('ks_train_vs_test_rows', {}).values(), default=None))}) "
            f"| {training_words(training)} |")
    return "\n".join(lines)


def training_words(training: dict) -> str:
    """A table model's training as the README's table says it: the steps that ran and their seconds, and where the
    weights kept are an earlier step's (the best validated one: fit_tabular), which."""
    ran = training.get("steps_run", training.get("steps"))
    words = f"{ran} steps, {training.get('seconds', 0):.0f} s"
    if training.get("steps_run") is not None and training.get("steps") != ran:
        words += f"; weights of step {training.get('steps')}"
    return words


def results_table(name: str) -> str:
    utility = load(name)["utility"]
    epsilons = utility["epsilons"]
    columns = [epsilons.index(e) for e in HEADLINE_EPSILONS if e in epsilons]
    header = ("| method | " + " | ".join(f"ε={epsilons[i]:g}" for i in columns)
              + " | re-id ε=1 (latent / pixel [/ own transform]) | re-id ε=10 (latent / pixel [/ own transform]) |")
    lines = [header, "|" + " --- |" * (len(columns) + 3)]
    for method in ROWS:
        entry = utility["methods"].get(method)
        if entry is None:
            continue
        accuracy = entry["p/o"]["mean"]
        reid = {e: " / ".join(fmt(entry[key][epsilons.index(e)]) for key in ("reid_latent", "reid_pixel", "reid_public")
                              if key in entry) for e in (1, 10)}
        lines.append(f"| {entry['label']} | " + " | ".join(fmt(accuracy[i]) for i in columns)
                     + f" | {reid[1]} | {reid[10]} |")
    reference = utility["reference"]["o/o"]
    settings = utility["settings"]
    lines.append("")
    spread = "" if reference.get("std") is None else f" ± {reference['std']:.3f} (standard deviation over the seeds)"
    lines.append(f"Real/real (o/o): {reference['mean']:.3f}{spread}. Re-identification: top-1 rate of matching each "
                 "release to its nearest original among those with the label released with it, in latent space with "
                 "the model (given the release's noisy latent, which shows more than the released image; to the "
                 "center of each original's release distribution, for laplace and gaussian its "
                 "clipped latent, in the noise's norm: the most likely source; the baselines' releases encoded by the "
                 "model), in pixel space and, for a baseline, by its own public transform applied to every original "
                 f"(DP-Pix: the cell means, L1), chance {utility['chance']:.3f}"
                 + (f", {utility['chance_given_condition']:.3f} for a guess among the records of that label"
                    if utility.get("chance_given_condition") is not None else "")
                 + f". Downstream: {settings.get('classifier')}, "
                 f"{settings.get('cnn_epochs')} epochs, trained on {settings['n_train']} privatized training images, "
                 f"tested on {settings['n_test']} real test images, mean of seeds {settings['seeds']}; paper mechanism "
                 f"{paper_batches_text(settings)}; {settings['n_reid']} records for re-identification; "
                 f"{settings.get('device')}, {settings.get('wall_seconds', 0) / 60:.1f} min, {settings.get('date', '')[:10]}. "
                 f"Command: `{settings.get('command')}`.")
    for method in ("blur", "mosaic"):
        entry = utility["methods"].get(method)
        if entry:
            values = ", ".join(f"{p:g}: {fmt(a)}" for p, a in zip(entry["parameters"], entry["p/o"]["mean"], strict=False))
            found = ("; re-identified by its own transform: " + ", ".join(
                f"{p:g}: {fmt(r)}" for p, r in zip(entry["parameters"], entry["reid_public"], strict=False))
                if "reid_public" in entry else "")
            lines.append(f"{entry['label']} ({entry.get('parameter')}): p/o {values}{found}.")
    central = load(name).get("central")
    if central:
        values = ", ".join(f"ε={e:g}: {fmt(a)}" for e, a in zip(central["epsilons"], central["accuracy"]["mean"], strict=False))
        label = central["label"]
        if "not comparable" not in label:
            label += " — not comparable on one axis with the local results above"
        records = (central.get("settings") or {}).get("n_train")
        weak = (f" = 1/N for its {records:,} training images, a weak setting (δ ≪ 1/N is usual) that flatters DP-SGD"
                if records and round(1 / central["delta"]) == records else "")
        lines.append(f"Central-DP reference: {label}, δ={central['delta']:g}{weak}: {values}.")
    return "\n".join(lines)


def main() -> int:
    print("### Models\n")
    print(model_table())
    for name in IMAGE_MODELS:
        print(f"\n### {name}: downstream accuracy (trained on privatized, tested on real)\n")
        print(results_table(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
