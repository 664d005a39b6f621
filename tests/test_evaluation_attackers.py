"""The utility sweep's attackers and reference lines: a pixel-space baseline is attacked with its own public
transform (blur and mosaic looked as private as CADP at ε = 1 while anyone re-identifies every image), and an
accuracy is drawn against the majority class (heart's test rows are 84% one class)."""

from __future__ import annotations

import pytest

from cadp import curves
from cadp.evaluate import majority_share, utility_sweep

try:
    from test_evaluate import tiny_image_folder, tiny_images
except ImportError:  # tests/ imported as a package
    from tests.test_evaluate import tiny_image_folder, tiny_images


@pytest.fixture(scope="module")
def utility(tmp_path_factory):
    loaded = tiny_image_folder(tmp_path_factory.mktemp("attackers"))
    return utility_sweep(loaded, epsilons=[1.0, 1000.0], seeds=(0,), n_train=40, n_test=30, n_reid=30, cnn_epochs=1,
                         device="cpu", data=(tiny_images(40, 1), tiny_images(30, 2)))


def test_a_deterministic_baseline_is_found_by_its_own_transform(utility):
    blur = utility["methods"]["blur"]
    assert blur["reid_public"] == [1.0] * len(blur["parameters"]), blur["reid_public"]
    assert curves.strongest_reidentification(blur) == [1.0] * len(blur["parameters"])
    mosaic = utility["methods"]["mosaic"]  # (two images whose coarsest mosaics are alike cannot be told apart)
    assert min(mosaic["reid_public"]) >= 0.9 and min(curves.strongest_reidentification(mosaic)) >= 0.9
    dp_pix = utility["methods"]["dp-pix"]
    assert len(dp_pix["reid_public"]) == 2 and dp_pix["reid_public"][1] >= dp_pix["reid_public"][0]
    assert "reid_public" not in utility["methods"]["laplace"]  # CADP's attacker is the latent one
    assert "public transform" in utility["settings"]["reid_public"]


def test_the_accuracy_chart_draws_the_majority_class(utility):
    assert utility["majority_class"] == pytest.approx(majority_share(tiny_images(30, 2).labels.tolist()))
    figure = curves.epsilon_figure(utility, "p/o", "accuracy", "accuracy", majority=utility["majority_class"])
    names = [trace.name for trace in figure.data]
    assert "majority class (always predicting it)" in names
    assert any(shape.y0 == utility["majority_class"] for shape in figure.layout.shapes)


def test_majority_share():
    assert majority_share(["a", "a", "b", "a"]) == 0.75


def test_the_majority_class_is_said_under_the_accuracy_chart_and_a_task_it_nearly_matches_is_flagged():
    assert curves.majority_note({}, 0.9) == ""
    plain = curves.majority_note({"majority_class": 0.11}, 0.88)
    assert plain.startswith("Always predicting the most frequent class scores 0.110") and "says little" not in plain
    heart = curves.majority_note({"majority_class": 0.836}, 0.852)  # heart: 51 of 61 test rows one class
    assert "does little better (0.852)" in heart and "says little about what the releases keep" in heart


def test_report_html_draws_the_baselines_re_identification(tmp_path):
    import json
    import re
    import shutil

    from cadp.evaluate import write_report
    from tests.conftest import bundled

    folder = tmp_path / "mnist-cinn"
    shutil.copytree(bundled("mnist-cinn"), folder)
    html = write_report(folder).read_text(encoding="utf-8")
    names = [json.loads(f'"{raw}"') for raw in re.findall(r'"name":"((?:[^"\\\\]|\\\\.)*)"', html)]
    assert "blur: re-identification (best attacker)" in names and "mosaic: re-identification (best attacker)" in names
    assert "dp-pix: reid_public" in names


def test_the_privatize_pages_preview_draws_the_majority_class_and_flags_a_task_it_nearly_matches():
    import json

    from cadp import ui
    from tests.conftest import bundled

    utility = json.loads((bundled("heart-cinn") / "eval.json").read_text())["utility"]
    figure = ui.preview_figure(utility, "laplace", 1.0)
    assert any("always predicting the majority class" in (shape.text or "") for shape in figure.layout.annotations)


def test_a_table_is_swept_over_the_table_seeds_by_default_from_python_too(monkeypatch):
    from cadp import evaluate
    from cadp.hub import load_folder
    from tests.conftest import bundled

    seen = {}

    def capture(loaded, model, **kwargs):
        seen["seeds"] = kwargs["seeds"]
        return {"settings": {}}

    monkeypatch.setattr(evaluate, "_tabular_sweep", capture)
    evaluate.utility_sweep(load_folder(bundled("heart-cinn")), device="cpu")
    assert tuple(seen["seeds"]) == evaluate.TABLE_SEEDS and len(evaluate.TABLE_SEEDS) == 30
