"""The README's numbers are the ones its generating script prints from the committed eval.json files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tables_match_the_bundled_eval_json():
    printed = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py")], capture_output=True,
                             text=True, check=True).stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for line in printed.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) > 20
    stale = [line for line in lines if line not in readme]
    assert not stale, "README.md differs from scripts/readme_tables.py; paste its output:\n" + "\n".join(stale)


def test_readme_library_snippet_runs_as_written(monkeypatch):
    """The README's Python example, run from the repository root exactly as printed."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
                   if "load_image_dataset" in block)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    result, data = namespace["result"], namespace["data"]
    assert tuple(result.privatized.shape) == (10, 1, 28, 28)  # as its comment says
    assert sorted(data.labels[::100].tolist()) == list(range(10))  # "one per class"
    assert "epsilon = 10" in result.guarantee and namespace["pngs"].dtype.is_floating_point is False


def test_readme_front_matter_is_a_docker_space_the_hub_accepts():
    """The Hub refuses a Space whose front matter breaks its rules (a short_description over 60 characters
    was one): checked with the rules the local test Hub applies when a Space is deployed."""
    import yaml

    try:
        from hub_server import front_matter_errors
    except ImportError:
        from tests.hub_server import front_matter_errors

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert front_matter_errors(readme, "space") == []
    meta = yaml.safe_load(readme.split("---\n")[1])
    assert meta["sdk"] == "docker" and meta["app_port"] == 8501
    assert front_matter_errors(readme.replace(meta["short_description"], "x" * 61), "space") != []


def test_the_large_epsilon_note_quotes_the_bundled_image_models_measurements():
    """The app's note on large ε quotes re-identification rates; they must be those of the bundled models'
    eval.json (a note that releases up to ε 100 are like fresh samples contradicted them)."""
    import json
    import math
    import re

    from cadp.ui import large_epsilon_note

    rates = {}
    for name in ("mnist-cinn", "fashion-mnist-cinn"):
        utility = json.loads((ROOT / "weights" / name / "eval.json").read_text())["utility"]
        assert utility["chance_given_condition"] == 0.02
        for mechanism in ("laplace", "gaussian"):
            values = dict(zip(utility["epsilons"], utility["methods"][mechanism]["reid_latent"]))
            for epsilon in values:
                rates.setdefault((mechanism, epsilon), []).append(values[epsilon])

    def span(values, digits=0):  # as the note writes a range of percentages
        return f"{min(values):.{digits}%}"[:-1] + "–" + f"{max(values):.{digits}%}"[:-1] + " %"

    def standard_errors_above_chance(rate):  # 3 seeds x 500 records, against 2 %
        return (rate - 0.02) / (0.02 * 0.98 / 1500) ** 0.5

    note = large_epsilon_note()
    assert "(2 % within a label)" in note
    # gaussian: the first ε clearly above chance is 2 (at 0.5 within noise), as the note says
    low = rates["gaussian", 2.0] + rates["gaussian", 3.0]
    assert all(standard_errors_above_chance(rate) > 3 for rate in low)
    assert all(standard_errors_above_chance(rate) < 3 for rate in rates["gaussian", 0.5])
    assert (f"from about ε = 2 with gaussian ({span(low, 1)} at ε = 2 and 3, {span(rates['gaussian', 6.0])} at 6, "
            f"{span(rates['gaussian', 10.0])} at 10)") in note
    # laplace: clearly above chance from 6; below it at chance but for the one point the note names, which is
    # about what the guarantee allows an attacker among 1 / chance records (e^ε / (e^ε + n - 1))
    above = rates["laplace", 6.0] + rates["laplace", 10.0]
    assert all(standard_errors_above_chance(rate) > 3 for rate in above)
    assert (f"and from ε = 6 with laplace ({span(rates['laplace', 6.0], 1)} at 6, {span(rates['laplace', 10.0], 1)} "
            "at 10; below ε = 6 within noise of chance (under 3 standard errors) but for one point") in note
    stray = [(epsilon, rate) for epsilon in (0.5, 1.0, 2.0, 3.0) for rate in rates["laplace", epsilon]
             if standard_errors_above_chance(rate) >= 3]
    assert [epsilon for epsilon, _ in stray] == [0.5] and f"{stray[0][1]:.1%}"[:-1] + " % at ε = 0.5 on MNIST" in note
    allowed = math.exp(0.5) / (math.exp(0.5) + 50 - 1)
    assert f"allows among 50 records: {allowed:.1%}"[:-1] + " %)" in note and abs(stray[0][1] - allowed) < 0.005
    assert f"(laplace {span(rates['laplace', 100.0])}, gaussian over 99 %)" in note
    assert min(rates["gaussian", 100.0]) > 0.99
    assert not re.search(r"come back only|return only", note)
    # no command measured the range PRIVACY.md quotes (1,000–3,000, an earlier network) on these models
    assert "1,000–3,000" not in note and "about 1,000 and more, as the model cards say" in note


def test_the_readmes_epsilon_100_reidentification_ranges_are_the_bundled_image_models():
    """README's limitations quoted the previous networks' rates at ε 100 (58–76%) after the models were
    replaced (60–81%): both places it gives them must follow the bundled eval.json (best attacker)."""
    import json

    from cadp.curves import strongest_reidentification

    rates: dict[str, list[float]] = {"laplace": [], "gaussian": []}
    for name in ("mnist-cinn", "fashion-mnist-cinn"):
        utility = json.loads((ROOT / "weights" / name / "eval.json").read_text())["utility"]
        at = utility["epsilons"].index(100)
        for mechanism in rates:
            rates[mechanism].append(strongest_reidentification(utility["methods"][mechanism])[at])
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    laplace, gaussian = rates["laplace"], rates["gaussian"]
    assert (f"({100 * min(laplace):.0f}–{100 * max(laplace):.0f}% laplace, over {int(100 * min(gaussian))}% "
            "gaussian;") in readme
    assert (f"{min(laplace):.2f}–{max(laplace):.2f} (laplace) and {min(gaussian):.3f}–{max(gaussian):.3f} "
            "(gaussian) at 100") in readme


def test_the_bundled_reports_carry_the_notes_their_eval_json_gives():
    """The bundled report.html files were drawn before report_notes said how paper was batched (PRIVACY.md: record
    the batch size with every result): the notes cadp.evaluate writes today must be in each."""
    import html
    import json

    from cadp.evaluate import report_notes

    for name in ("mnist-cinn", "fashion-mnist-cinn", "diabetes-cinn", "heart-cinn"):
        folder = ROOT / "weights" / name
        notes = report_notes(folder, json.loads((folder / "eval.json").read_text()), [])
        page = (folder / "report.html").read_text(encoding="utf-8")
        assert any(note.startswith("paper (") and "batch size" in note for note in notes), name
        missing = [note for note in notes if html.escape(note) not in page]
        assert not missing, f"{name}: run python -m cadp.evaluate report --model weights/{name}; missing {missing}"


def test_bundled_table_models_say_which_steps_weights_they_hold():
    """A table fit keeps the best validated step's weights; the bundled cards and eval.json once said only
    "1500 steps" (the steps that ran), while the weights are step 50's and 75's."""
    import json

    from cadp.hub import model_folders
    from cadp.train import kept_weights_note

    tables = model_folders(kind="tabular")
    assert tables
    for name in tables:
        training = json.loads((ROOT / "weights" / name / "eval.json").read_text(encoding="utf-8"))["training"]
        assert training["steps"] <= training["steps_run"], name
        assert training["kept"] == kept_weights_note(training), name
        card = (ROOT / "weights" / name / "README.md").read_text(encoding="utf-8")
        section = card.split("## Training", 1)[1].split("\n## ", 1)[0]
        assert training["kept"] in section.replace("\n", " "), name
        assert f"{training['steps_run']:,} steps ran" in section, name
