"""The utility curves page (views/utility.py) on eval.json files as a Hub repo may hold them: malformed,
oversized, or from a ``--quick`` run. The page draws what is well-formed and says in words what it leaves out."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cadp import curves
from cadp.hub import write_eval
from tests import app_helpers as helpers
from tests.conftest import weights_dir

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """The tiny image model in a weights folder of this module's own: its eval.json is rewritten by each test
    (the session's tiny models are shared with the other app tests)."""
    with weights_dir(helpers.build_models(tmp_path_factory.mktemp("utility_weights"))) as folder:
        yield folder / helpers.IMAGE_MODEL


def evaluation() -> dict:
    """eval.json as cadp.evaluate writes it (the app tests' fixture): utility and central sections."""
    return copy.deepcopy({"utility": helpers.UTILITY, "central": helpers.CENTRAL})


def utility_page(folder: Path, results) -> AppTest:
    write_eval(folder, results)
    at = AppTest.from_file(str(ROOT / "views" / "utility.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(at: AppTest) -> list[str]:
    """Every message and caption of the page."""
    return [e.value for kind in (at.error, at.warning, at.info, at.caption, at.markdown) for e in kind]


def chart_titles(at: AppTest) -> list[str]:
    return [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]


def in_page_order(node) -> list:
    """The page's elements top to bottom."""
    children = getattr(node, "children", None)
    if not children:
        return [node]
    return [element for key in sorted(children) for element in in_page_order(children[key])]


def set_at(path: tuple, value):
    def change(results: dict) -> None:
        place = results
        for key in path[:-1]:
            place = place[key]
        place[path[-1]] = value
    return change


# (what is wrong, the change to a well-formed eval.json, the section said to be wrong, the charts still drawn)
MALFORMED = [
    ("utility a list", set_at(("utility",), [1, 2]), "utility", 1),
    ("utility a string", set_at(("utility",), "curves"), "utility", 1),
    ("methods a list", set_at(("utility", "methods"), [1]), "utility", 1),
    ("methods null", set_at(("utility", "methods"), None), "utility", 1),
    ("reference null", set_at(("utility", "reference"), None), "utility", 5),
    ("reference a list", set_at(("utility", "reference"), [0.9]), "utility", 5),
    ("settings a list", set_at(("utility", "settings"), [1]), "utility", 5),
    ("settings a string", set_at(("utility", "settings"), "quick"), "utility", 5),
    ("epsilons a string", set_at(("utility", "epsilons"), "abc"), "utility", 1),
    ("epsilons nulls", set_at(("utility", "epsilons"), [None, None, None]), "utility", 1),
    ("a method's p/o mean a string", set_at(("utility", "methods", "laplace", "p/o"), {"mean": "abc"}),
     "utility", 5),
    ("a method's std a string", set_at(("utility", "methods", "laplace", "p/o", "std"), "abc"), "utility", 5),
    ("blur's parameters a string", set_at(("utility", "methods", "blur", "parameters"), "ab"), "utility", 5),
    ("central a list", set_at(("central",), [1]), "central", 4),
    ("central epsilons strings", set_at(("central", "epsilons"), ["a", "b"]), "central", 4),
    ("central epsilon_spent strings", set_at(("central", "epsilon_spent"), ["a", "b"]), "central", 5),
    ("central settings a list", set_at(("central", "settings"), [1]), "central", 5),
]


@pytest.mark.parametrize("change, section, charts", [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_a_malformed_section_is_named_and_the_rest_is_drawn(image_folder, change, section, charts):
    results = evaluation()
    change(results)
    at = utility_page(image_folder, results)
    words = shown(at)
    assert not at.error, [e.value for e in at.error]  # "Something went wrong (AttributeError)… Try again"
    assert not any("Something went wrong" in text or "Try again" in text for text in words)
    said = [w.value for w in at.warning if f"eval.json {section} section" in w.value]
    assert len(said) == 1, [w.value for w in at.warning]
    assert "not as `cadp.evaluate` writes" in said[0] and "Traceback" not in said[0]
    assert len(at.get("plotly_chart")) == charts
    assert [b.label for b in at.button] == ["Recompute"]  # the form stays
    assert any("Central DP baseline" in s.value for s in at.subheader)


def test_a_malformed_method_is_named_and_the_others_are_drawn(image_folder):
    results = evaluation()
    results["utility"]["methods"]["laplace"]["p/o"] = {"mean": "abc"}
    at = utility_page(image_folder, results)
    assert any("not drawn: the method laplace." in w.value for w in at.warning), [w.value for w in at.warning]
    accuracy = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [trace.get("legendgroup") for trace in accuracy["data"]]
    assert "paper" in names and "laplace" not in names


def test_an_eval_json_that_is_not_an_object_is_said_without_the_servers_path(image_folder):
    at = utility_page(image_folder, [1, 2])
    words = shown(at)
    assert not at.error and not any("Something went wrong" in text for text in words)
    assert any("This model's eval.json is not as `cadp.evaluate` writes it" in w.value for w in at.warning)
    assert not any(str(image_folder / "eval.json") in text for text in words)  # ModelError's words named it
    assert [b.label for b in at.button] == ["Recompute"]


def test_curves_of_a_quick_run_are_said_to_be_one_above_them(image_folder):
    results = evaluation()
    results["utility"]["settings"] = {"command": "python -m cadp.evaluate utility --quick", "quick": True}
    at = utility_page(image_folder, results)
    quick = [w for w in at.warning if "quick run" in w.value]
    assert len(quick) == 1 and "few records" in quick[0].value
    assert "not the model's measured privacy–utility trade-off" in quick[0].value
    order = in_page_order(at.main)
    first_chart = next(i for i, element in enumerate(order) if element.type == "plotly_chart")
    assert order.index(quick[0]) < first_chart
    assert len(at.get("plotly_chart")) == 5  # still drawn, said for what they are

    results["utility"]["settings"]["quick"] = False  # a full run: nothing to say
    assert not [w for w in utility_page(image_folder, results).warning if "quick run" in w.value]


def test_a_quick_central_baseline_is_said_to_be_one(image_folder):
    results = evaluation()
    results["central"]["quick"] = True
    at = utility_page(image_folder, results)
    said = [w.value for w in at.warning if "quick run" in w.value]
    assert len(said) == 1 and said[0].startswith("This baseline comes from a quick run (`--quick`: few records, one "
                                                 "epoch), not the model's measured DP-SGD baseline.")
    assert "Produce a full run with `python -m cadp.evaluate dpsgd --model " in said[0]
    assert len(at.get("plotly_chart")) == 5


def with_points(points: int) -> dict:
    """eval.json whose utility and central sections are well-formed curves of ``points`` points each."""
    epsilons, curve = [float(e) for e in range(1, points + 1)], [0.5] * points
    results = evaluation()
    results["utility"] = {**results["utility"], "epsilons": epsilons, "methods": {
        "laplace": {"label": "laplace", "kind": "cadp", "formal": True, "p/o": {"mean": curve, "std": curve},
                    "ssim": curve, "reid_latent": curve}}}
    results["central"] = {**results["central"], "epsilons": epsilons, "accuracy": {"mean": curve},
                          "epsilon_spent": epsilons}
    return results


def test_a_section_with_more_points_than_any_evaluation_is_not_drawn(image_folder):
    """A file with millions of epsilons took seconds per chart on every rerun (cadp.evaluate's grids have tens
    of points): such a section is not drawn, and the page says why."""
    at = utility_page(image_folder, with_points(20_000))
    for section in ("utility", "central"):
        said = [w.value for w in at.warning if f"eval.json {section} section" in w.value]
        assert len(said) == 1 and "at most 1,000" in said[0], [w.value for w in at.warning]
    assert not at.get("plotly_chart")
    assert [b.label for b in at.button] == ["Recompute"]


def test_the_cap_on_points_is_above_every_evaluation_not_at_it(image_folder):
    at = utility_page(image_folder, with_points(curves.MAX_POINTS))
    assert not at.warning, [w.value for w in at.warning]
    assert len(at.get("plotly_chart")) == 5
    at = utility_page(image_folder, with_points(curves.MAX_POINTS + 1))
    assert len(at.warning) == 2 and not at.get("plotly_chart")


def test_drawable_utility_refuses_a_huge_section_before_looking_at_its_points():
    utility = {**copy.deepcopy(helpers.UTILITY), "epsilons": list(range(1, 2_000_001))}
    drawn, left_out = curves.drawable_utility(utility)
    assert drawn is None and left_out == [f"its epsilons are not a list of at most {curves.MAX_POINTS:,} positive "
                                          "numbers"]
    settings = {"command": "x" * (curves.MAX_SETTINGS_SIZE + 1)}
    drawn, left_out = curves.drawable_utility({**copy.deepcopy(helpers.UTILITY), "settings": settings})
    assert drawn["settings"] == {} and left_out == ["its settings"]


def test_a_reference_without_o_o_as_cadp_evaluate_writes_it_for_no_task_is_not_called_malformed(image_folder):
    """cadp.evaluate leaves o/o out where there is no task (a table model without conditions): the page warned
    that the section was not as cadp.evaluate writes it, which running the command again could never change."""
    results = evaluation()
    results["utility"]["reference"] = {"dcr_holdout": 1.5}
    at = utility_page(image_folder, results)
    assert not any("not as `cadp.evaluate` writes" in text for text in shown(at)), shown(at)
    drawn, left_out = curves.drawable_utility(results["utility"])
    assert drawn is not None and left_out == []
    results["utility"]["reference"] = {"o/o": "high"}  # present and not a rate: malformed
    assert curves.drawable_utility(results["utility"])[1] == ["the reference (o/o)"]


def test_the_recompute_form_says_a_tables_pool_is_at_most_its_test_records():
    """The form promised "re-identification among 500 records" for diabetes-cinn, whose run then matched among its
    88 held-out rows (all there are)."""
    from cadp.curves import recompute_sizes

    planned = recompute_sizes({"n_reid": 500, "seeds": [0, 1]}, planned=True)
    assert "re-identification among up to 500 test records" in planned and "among 500 records" not in planned
    assert "re-identification among 88 records" in recompute_sizes({"n_reid": 88})  # a run's own: as it was


def test_a_tables_curves_speak_of_no_pixels_or_image_baselines():
    """A table model's Utility page titled its axis "ε (metric: per L1 unit; DP-Pix: per 1-pixel change)" and
    explained pixel space, blur, mosaic and DP-Pix, none of which it draws."""
    from cadp.curves import epsilon_axis_title, reid_caption

    table = {"methods": {"laplace": {}, "gaussian": {}, "metric": {}, "paper": {}}}
    assert epsilon_axis_title(table["methods"]) == "ε (metric: per L1 unit)"
    words = reid_caption(table)
    assert not any(word in words for word in ("pixel", "DP-Pix", "blur", "mosaic", "baseline")), words
    assert "in the encoded data's space" in words and "metric's per-unit ε and paper (no guarantee) are not" in words
    images = {"methods": {**table["methods"], "dp-pix": {}, "blur": {}}}
    assert epsilon_axis_title(images["methods"]) == "ε (metric: per L1 unit; DP-Pix: per 1-pixel change)"
    assert "DP-Pix's 1-pixel ε" in reid_caption(images) and "blur and mosaic are deterministic" in reid_caption(images)


def test_every_chart_has_its_values_as_a_table_below_it(image_folder):
    """No chart had a text alternative: a screen reader read nothing of the curves, and the page stated the
    per-ε accuracy and re-identification values nowhere else."""
    at = utility_page(image_folder, evaluation())
    charts = at.get("plotly_chart")
    tables = [expander for expander in at.get("expander") if expander.label == "The chart's values, as a table"]
    assert len(charts) == len(tables) >= 4
    accuracy = tables[0].table[0].value
    laplace = accuracy[accuracy["series"] == "Laplace (ε-LDP)"]
    expected = curves.mean_of(helpers.UTILITY["methods"]["laplace"]["p/o"])
    assert list(laplace["accuracy"]) == [round(value, 4) for value in expected]
