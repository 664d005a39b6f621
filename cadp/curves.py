"""Utility curves of an eval.json, as figures: one colour, legend place and label per method on every chart.

Plotly only (no Streamlit): the utility page draws these; ``cadp.ui`` reads its previews with the same helpers.
"""

from __future__ import annotations

import html
import math
import re
import zlib

import numpy as np
import plotly.graph_objects as go

from cadp.mechanisms import PAPER_LABEL, readable


def mean_of(value):
    """An eval.json value that is either a number or list, or ``{"mean": ..., "std": ...}``: its mean."""
    return value.get("mean") if isinstance(value, dict) else value


def finite_numbers(values, positive: bool = False) -> list[float] | None:
    """``values`` as floats when it is a non-empty list of finite (positive) numbers, else None."""
    if not isinstance(values, list) or not values:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values] if not positive or min(values) > 0 else None


# the re-identification attackers of an eval.json utility method: with the model in latent space, and by pixels or
# encoded data; a release is as identifiable as the best of them finds it
REID_ATTACKERS = ("reid_latent", "reid_pixel", "reid_data", "reid_public")
# the curves of a method the utility page draws
DRAWN_CURVES = ("p/o", "ssim") + REID_ATTACKERS


def strongest_reidentification(method: dict) -> list[float] | None:
    """Per evaluated point, the highest top-1 re-identification rate among the attackers an eval.json method
    holds (``REID_ATTACKERS``); None when it has none, or one that is not a full curve (a file from the Hub may
    be malformed: leaving that attacker out could understate the risk)."""
    curves = [finite_numbers(method[key]) for key in REID_ATTACKERS if method.get(key) is not None]
    if not curves or None in curves or len({len(curve) for curve in curves}) != 1:
        return None
    return [max(values) for values in zip(*curves)]


# More values than any evaluation of cadp.evaluate has (its epsilon grids and baseline parameters have tens, its
# methods fewer than ten): a section with more is not as cadp.evaluate writes it, and is not drawn (a figure of
# 2,000,000 epsilons took seconds to build on every rerun of the page)
MAX_POINTS = 1_000
MAX_METHODS = 100
# a section's settings are shown as they are (st.json): at most this many values and characters of text
MAX_SETTINGS_SIZE = 10_000


def _numbers_or_gaps(values, length: int) -> bool:
    """Whether ``values`` is a list of ``length`` finite numbers or nulls (eval.json writes NaN as null: a gap)."""
    return isinstance(values, list) and len(values) == length and all(
        value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
        for value in values)


def _axis(values, positive: bool) -> list[float] | None:
    """An x axis of eval.json: at most MAX_POINTS finite (positive) numbers, else None."""
    return finite_numbers(values, positive) if isinstance(values, list) and len(values) <= MAX_POINTS else None


def _curve_is_drawable(value, length: int) -> bool:
    """A curve of an eval.json method: a list, or ``{"mean": [...], "std": [...] | null}``, of ``length`` points."""
    if isinstance(value, dict):
        std = value.get("std")
        return _numbers_or_gaps(value.get("mean"), length) and (std is None or _numbers_or_gaps(std, length))
    return _numbers_or_gaps(value, length)


def _within_size(value, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) holds at most ``limit`` values and characters of text and keys."""
    stack, size = [value], 0
    while stack and size <= limit:
        value = stack.pop()
        size += 1 + (len(value) if isinstance(value, str) else 0)
        if isinstance(value, dict):
            size += sum(len(key) for key in value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return size <= limit


def _method_is_drawable(method, epsilons: list[float]) -> bool:
    if not isinstance(method, dict):
        return False
    if "parameters" in method:  # blur, mosaic: their own axis
        axis = _axis(method["parameters"], positive=False)
    elif "epsilons" in method:
        axis = _axis(method["epsilons"], positive=True)
    else:
        axis = epsilons
    return axis is not None and all(_curve_is_drawable(method[key], len(axis)) for key in DRAWN_CURVES
                                    if method.get(key) is not None)


def _probability(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1 else None


def drawable_utility(utility) -> tuple[dict | None, list[str]]:
    """What of an eval.json "utility" section can be drawn, and what cannot, in words (the file may come from
    anyone's Hub repo): (the section with only its well-formed parts, or None when nothing of it can be drawn:
    it is not an object, its epsilons are not at most MAX_POINTS positive numbers, or its methods not an object
    of at most MAX_METHODS; the parts left out, in Markdown-safe words: "the method laplace", "the reference
    (o/o)"). Its "settings" is always an object (empty when the file's is not one)."""
    if not isinstance(utility, dict):
        return None, ["it is not an object of curves"]
    epsilons = _axis(utility.get("epsilons"), positive=True)
    if epsilons is None:
        return None, [f"its epsilons are not a list of at most {MAX_POINTS:,} positive numbers"]
    methods = utility.get("methods")
    if not isinstance(methods, dict) or len(methods) > MAX_METHODS:
        return None, [f"its methods are not an object of at most {MAX_METHODS} methods by name"]
    drawable = {name: method for name, method in methods.items() if _method_is_drawable(method, epsilons)}
    left_out = [f"the method {literal(name)}" for name in methods if name not in drawable]
    drawn = {**utility, "epsilons": epsilons, "methods": drawable}
    reference = utility.get("reference")
    o_o = reference.get("o/o") if isinstance(reference, dict) else None
    if _probability(mean_of(o_o)) is None:
        drawn["reference"] = {}
        # cadp.evaluate leaves o/o out where there is no task (a table model without conditions, one class in
        # the rows evaluated): only a reference that is not an object, or an o/o that is not a rate, is malformed
        if "reference" in utility and (not isinstance(reference, dict) or o_o is not None):
            left_out.append("the reference (o/o)")
    for key, words in (("chance", "the chance (1/N)"),
                       ("chance_given_condition", "the chance knowing the released label or conditions")):
        if utility.get(key) is not None and _probability(utility[key]) is None:
            drawn.pop(key)
            left_out.append(words)
    settings = utility.get("settings")
    drawn["settings"] = settings if isinstance(settings, dict) and _within_size(settings, MAX_SETTINGS_SIZE) else {}
    if settings is not None and drawn["settings"] is not settings:
        left_out.append("its settings")
    if not drawn["methods"]:
        return None, left_out or ["it has no methods"]
    return drawn, left_out


def drawable_central(central) -> tuple[dict | None, list[str]]:
    """As ``drawable_utility``, for eval.json's "central" section (DP-SGD): None when its epsilons and accuracy
    are not one curve of at most MAX_POINTS points."""
    if not isinstance(central, dict):
        return None, ["it is not an object"]
    epsilons = _axis(central.get("epsilons"), positive=True)
    accuracy = central.get("accuracy")
    if epsilons is None or not _curve_is_drawable(accuracy, len(epsilons)):
        return None, [f"its epsilons and accuracy are not one curve of at most {MAX_POINTS:,} points"]
    drawn, left_out = {**central, "epsilons": epsilons}, []
    spent = central.get("epsilon_spent")
    if spent is not None and (finite_numbers(spent) is None or len(spent) != len(epsilons)):
        drawn.pop("epsilon_spent")
        left_out.append("the ε spent")
    settings = central.get("settings")
    if settings is not None and (not isinstance(settings, dict) or not _within_size(settings, MAX_SETTINGS_SIZE)):
        drawn["settings"] = {}
        left_out.append("its settings")
    delta = central.get("delta")
    if delta is not None and _probability(delta) is None:
        drawn.pop("delta")
        left_out.append("its δ")
    return drawn, left_out


# One colour and one legend place per method on every chart of the page (Okabe–Ito, colour-blind safe)
METHOD_ORDER = ("laplace", "gaussian", "metric", "paper", "dp-pix", "blur", "mosaic")
METHOD_COLOURS = {"laplace": "#0072B2", "gaussian": "#009E73", "metric": "#CC79A7", "paper": "#D55E00",
                  "dp-pix": "#8C564B", "blur": "#56B4E9", "mosaic": "#E69F00"}
OTHER_COLOURS = ("#7F3C8D", "#3969AC", "#F2B701", "#11A579")
SHORT_NAMES = {"laplace": "Laplace (ε-LDP)", "gaussian": "Gaussian ((ε, δ)-LDP)",
               "metric": "metric (ε per unit of latent L1 distance)", "paper": f"paper ({PAPER_LABEL})",
               "dp-pix": "DP-Pix (ε-DP for a 1-pixel change, not per record)", "blur": "blur (not private)", "mosaic": "mosaic (not private)"}
LEGEND = dict(orientation="h", xanchor="left", x=0, yanchor="top", y=-0.2, title_text="")


LEGEND_LINE = 40  # characters of a legend entry's line: one such line and its marker fit a 390 px phone's chart


def wrapped_legend(text: str, width: int = LEGEND_LINE) -> str:
    """``text`` broken into lines of at most ``width`` characters (between words) for a legend entry: plotly does
    not wrap one, and at a phone's width a longer entry ran past the chart's edge, cut."""
    import textwrap

    return "<br>".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)) or text


def fitted_height(figure: go.Figure) -> int:
    """A chart's height in pixels for its legend below the plot: on a phone-wide chart each entry takes a row (a
    row per line of an entry ``wrapped_legend`` broke), and the plot, shrunk by a fixed height's legend, left too
    little room under its axis for the axis title (the legend, placed a fifth of the plot's height below it, ran
    over the title)."""
    rows = sum(1 + trace.name.count("<br>") for trace in figure.data if trace.showlegend is not False and trace.name)
    return max(480, 440 + 32 * rows)


def std_of(value):
    """The std of an eval.json ``{"mean": ..., "std": ...}`` value; None for a plain number or list, and for a
    std of no numbers (one seed's run stores a list of nulls: no bar to draw, nor to explain)."""
    std = value.get("std") if isinstance(value, dict) else None
    if isinstance(std, list) and not any(isinstance(entry, (int, float)) and math.isfinite(entry) for entry in std):
        return None
    return std


def method_colour(name: str) -> str:
    """The colour of a method on every chart; a method the page does not know gets one fixed by its name."""
    return METHOD_COLOURS.get(name) or OTHER_COLOURS[zlib.crc32(name.encode()) % len(OTHER_COLOURS)]


def method_rank(name: str) -> int:
    """The method's place in every legend (plotly's legendrank: lower comes first)."""
    return 100 * (METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)) + 1


def ordered(methods: dict) -> list[tuple[str, dict]]:
    return sorted(methods.items(), key=lambda item: (method_rank(item[0]), item[0]))


def epsilon_axis_title(methods) -> str:
    """The ε axis's title, with what metric's and DP-Pix's ε are per, where they are drawn (a table's curves have
    no DP-Pix, and its title spoke of pixels)."""
    units = [words for name, words in (("metric", "metric: per L1 unit"), ("dp-pix", "DP-Pix: per 1-pixel change"))
             if isinstance(methods, dict) and name in methods]
    return "ε" + (f" ({'; '.join(units)})" if units else "")


def method_label(name: str, method: dict, distances=None) -> str:
    """The full description of a method: paper with its label, baselines marked, metric with what its ε means
    between records."""
    label = str(method.get("label") or name)[:200]  # a label from anyone's eval.json: a legend entry, not a page
    if method.get("kind") == "reference-reproduction" and PAPER_LABEL not in label:
        label = f"{label} ({PAPER_LABEL})"
    elif not method.get("formal", True) and method.get("kind") == "baseline" and "not private" not in label:
        label = f"{label} (not private)"
    if name == "metric" and distances is not None:
        # (rounded up, as every epsilon and the page's own d_typ: "11.6 x" beside "d_typ = 11.7" read as a slip)
        label += f"; between two typical records ε = {readable(distances.d_typ, up=True)} × the value on the axis"
        if not distances.held_out:
            label += " (d_typ measured on records the model was fitted on)"
    return label


def legend_name(name: str, method: dict) -> str:
    """A legend entry, short enough to leave the plot its width (the full description is in ``methods_caption``)."""
    return SHORT_NAMES.get(name) or method_label(name, method)


def literal(text: str) -> str:
    """Text from eval.json (it may come from the Hub) shown as itself in a Markdown caption."""
    return re.sub(r"([\\`*_\[\]()#<>!~|$])", r"\\\1", text[:200])


def methods_caption(utility: dict, distances=None) -> str:
    """What each legend entry stands for, in full (where the full description says more than the legend)."""
    entries = [(legend_name(name, method), method_label(name, method, distances))
               for name, method in ordered(utility.get("methods", {}))]
    return "Methods: " + "; ".join(f"{literal(short)}: {literal(full)}" if full != short else literal(short)
                                   for short, full in entries) + "."


def error_bars_note(settings: dict | None, reference=None) -> str:
    """What the accuracy curves' error bars are (``settings``: an eval.json section's settings; ``reference``:
    the real-to-real accuracy, for the size of the sampling error the bars leave out)."""
    settings = settings if isinstance(settings, dict) else {}
    seeds, n_test = settings.get("seeds"), settings.get("n_test")
    count = f"{len(seeds)} seeds" if isinstance(seeds, (list, tuple)) else "the seeds"
    # a table's classifier (logistic regression, lbfgs) trains alike on the same rows, whatever the seed
    what = ("the noise drawn differs by seed; the classifier, a logistic regression, trains the same way on the "
            "same rows" if settings.get("kind") == "tabular" else
            "the noise drawn and the classifier's training differ by seed")
    text = f"Error bars: the standard deviation over {count} ({what}"
    if not isinstance(n_test, int) or isinstance(n_test, bool) or n_test < 1:
        return text + ")."
    text += (f"); every seed tests on the same {n_test:,} real records, so the bars leave out the sampling "
             "error of that test set")
    if isinstance(reference, (int, float)) and 0 < reference < 1:
        text += (f" (a binomial standard error of about {math.sqrt(reference * (1 - reference) / n_test):.3f} at "
                 f"the real-to-real accuracy {reference:.3f})")
    return text + "."


def _method_trace(name: str, method: dict, **scatter) -> go.Scatter:
    colour = method_colour(name)
    dash = None if method.get("kind") == "cadp" else "dot"
    # escaped: plotly renders <a href> and other tags in trace names, and eval.json may come from anyone's repo
    return go.Scatter(name=html.escape(legend_name(name, method)), legendgroup=html.escape(name), legendrank=method_rank(name),
                      mode="lines+markers", line=dict(color=colour, dash=dash), marker=dict(color=colour), **scatter)


def _line_entry(figure, name: str, colour: str, dash: str) -> None:
    """A legend entry for a reference line drawn with add_hline / add_vline: named there, not on the plot,
    where a label would sit on the curves."""
    figure.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, legendrank=1000,
                                line=dict(color=colour, dash=dash), hoverinfo="skip"))


def _reference_lines(figure, add_line, reference=None, chance=None, given=None, released: str = "label",
                     majority=None) -> None:
    """Reference lines: real/real and the majority class (an accuracy is read against both), and the
    re-identification attackers' baselines. The attackers match a release only among the records with the label
    (conditions) released with it, so a guess among those (dotted) is their baseline; 1/N, a guess among all
    records, is drawn for scale."""
    for value, name, colour, dash in ((reference, "o/o (real → real)", "black", "dash"),
                                      (majority, "majority class (always predicting it)", "gray", "dashdot"),
                                      (chance, "chance among all records (1/N)", "gray", "dash"),
                                      (given, f"attackers' baseline: chance knowing the {released}", "gray",
                                       "dot")):
        if isinstance(value, (int, float)):
            add_line(value, line_dash=dash, line_color=colour)
            _line_entry(figure, name, colour, dash)


def majority_note(utility: dict, reference) -> str:
    """Under the accuracy chart: what always predicting the most frequent class scores, and, where the classifier
    trained on real records does little better, that the chart says little about the task ("" without it)."""
    majority = utility.get("majority_class")
    if not isinstance(majority, (int, float)) or isinstance(majority, bool) or not 0 < majority <= 1:
        return ""
    text = f"Always predicting the most frequent class scores {majority:.3f} on these test records (dash-dot line)."
    if isinstance(reference, (int, float)) and reference - majority < 0.05:
        text += (f" Trained on real records the classifier does little better ({reference:.3f}): on this task the "
                 "accuracy chart says little about what the releases keep.")
    return text


def ldp_ceiling(epsilon, given: float):
    """The most an attacker can match releases of an ε-LDP mechanism to their records, top-1, when it guesses
    among records of which a blind guess finds ``given`` (one in n = 1/given): e^ε / (e^ε + n - 1) for n equally
    likely records. ``given`` is a mean of 1/n over groups of other sizes, and the bound is concave in 1/n, so
    this is at or above the mean of the groups' bounds."""
    shrunk = np.exp(-np.asarray(epsilon, dtype=np.float64))  # (e^ε g / (1 + (e^ε - 1) g), without e^ε's overflow)
    return given / (given + (1 - given) * shrunk)


def reid_sampling_note(utility: dict) -> str:
    """Under the re-identification chart: a measured rate's sampling error where the ε-LDP ceiling is lowest, so
    that a point drawn above the gray line reads as what it is ("" without the settings to say it)."""
    settings = utility.get("settings") if isinstance(utility.get("settings"), dict) else {}
    seeds, records, given = settings.get("seeds"), settings.get("n_reid"), utility.get("chance_given_condition")
    evaluated = finite_numbers(utility.get("epsilons"), positive=True)
    if (not isinstance(seeds, (list, tuple)) or not seeds or not isinstance(records, int) or isinstance(records, bool)
            or records < 1 or not isinstance(given, (int, float)) or not 0 < given < 1 or not evaluated):
        return ""
    guesses, lowest = records * len(seeds), min(evaluated)
    ceiling = float(ldp_ceiling(lowest, given))
    error = math.sqrt(ceiling * (1 - ceiling) / guesses)
    return (f"Each rate is measured over {guesses:,} guesses ({records:,} records × {len(seeds)} seeds): at the gray "
            f"line's lowest point (ε = {lowest:g}, {100 * ceiling:.1f}%) one attacker's rate has a standard error of "
            f"about {100 * error:.1f} points; the curve takes the best of the attackers at each of many points, so "
            f"a point two to three standard errors above the line (about {200 * error:.1f}–{300 * error:.1f} "
            "points) can come from sampling alone.")


def released_words(utility: dict) -> str:
    """What is released exactly beside a record: "label" (images) or "conditions" (tables)."""
    settings = utility.get("settings")
    return "conditions" if isinstance(settings, dict) and settings.get("kind") == "tabular" else "label"


def kept_task_note(utility: dict) -> str:
    """Under an accuracy-against-ε chart: why the curve is flat from the smallest ε (the task is kept)."""
    image = released_words(utility) == "label"
    return (f"The predicted attribute is released exactly (the kept {'label' if image else 'conditions'}): at small "
            f"ε a CADP release is close to a fresh sample of its {'class' if image else 'kept group'} from the "
            f"model, so its accuracy there measures the model's picture of each {'class' if image else 'group'}, not "
            "what of the released records' own details survives: re-identification, below, says that. A central DP-SGD baseline, where shown, learns from the records alone.")


def two_line_title(title: str) -> str:
    """A chart title as a short head and a smaller second line (after its first ": " or " ("): plotly never wraps
    a title, and on a phone-wide chart one long line is cut."""
    for mark, keep in ((": ", ""), (" (", "(")):
        head, found, rest = title.partition(mark)
        if found and head:
            return f"{head}<br><sup>{keep}{rest}</sup>"
    return title


def epsilon_figure(utility: dict, metric: str, title: str, y_title: str, *, reference=None, chance=None,
                   majority=None):
    figure = go.Figure()
    for name, method in ordered(utility.get("methods", {})):
        if "parameters" in method or metric not in method:
            continue  # blur / mosaic have no epsilon axis
        std = std_of(method[metric])
        figure.add_trace(_method_trace(name, method, x=method.get("epsilons", utility.get("epsilons", [])),
                                       y=mean_of(method[metric]),
                                       error_y=dict(type="data", array=std) if std else None))
    given = utility.get("chance_given_condition") if chance is not None else None
    # the label is released exactly: a guess among its records does as well as "chance knowing the label"
    _reference_lines(figure, figure.add_hline, reference, chance, given, released_words(utility),
                     majority if isinstance(majority, (int, float)) and not isinstance(majority, bool)
                     and 0 < majority <= 1 else None)
    evaluated = finite_numbers(utility.get("epsilons"))
    if isinstance(given, (int, float)) and 0 < given < 1 and evaluated and min(evaluated) > 0:
        grid = np.geomspace(min(evaluated), max(evaluated), 60)
        figure.add_trace(go.Scatter(x=grid, y=ldp_ceiling(grid, given), mode="lines", hoverinfo="skip",
                                    name="ε-LDP ceiling on any attacker (laplace)", legendrank=1000,
                                    line=dict(color="gray", width=1)))
    figure.update_layout(title=two_line_title(title),
                         # short enough for a phone-wide chart; methods_caption says the rest
                         xaxis_title=epsilon_axis_title(utility.get("methods", {})),
                         yaxis_title=y_title, xaxis_type="log", height=fitted_height(figure), legend=LEGEND)
    epsilons = utility.get("epsilons")
    if isinstance(epsilons, list) and epsilons:  # ticks at the evaluated values: plotly labels 0.5 as "5" otherwise
        figure.update_xaxes(tickvals=epsilons, ticktext=[f"{e:g}" if isinstance(e, (int, float)) else str(e)
                                                         for e in epsilons])
    return figure


def with_strongest_attacker(utility: dict) -> dict:
    """The utility section with each method's "reid": per point, the best of its re-identification attackers."""
    methods = {name: {**method, "reid": strongest_reidentification(method)}
               for name, method in utility.get("methods", {}).items()}
    return {**utility, "methods": {name: method for name, method in methods.items() if method["reid"] is not None}}


def frontier_figure(utility: dict, title: str = "Privacy–utility frontier (up and to the left is better)"):
    figure = go.Figure()
    for name, method in ordered(with_strongest_attacker(utility)["methods"]):
        if "p/o" not in method:
            continue
        points = method.get("parameters", method.get("epsilons", utility.get("epsilons", [])))
        figure.add_trace(_method_trace(name, method, x=method["reid"], y=mean_of(method["p/o"]),
                                       text=[f"{p:g}" for p in points],
                                       hovertemplate="%{text}: re-id %{x:.3f}, accuracy %{y:.3f}"))
    _reference_lines(figure, figure.add_vline, chance=utility.get("chance"),
                     given=utility.get("chance_given_condition"), released=released_words(utility))
    figure.update_layout(title=two_line_title(title), xaxis_title="re-identification rate (the best attacker)",
                         yaxis_title="downstream accuracy (p/o)", height=fitted_height(figure), legend=LEGEND)
    return figure


def figure_values(figure) -> list[dict]:
    """A chart's plotted values as rows (series, x, y), for a table beside it: a screen reader reads no plotly
    chart. Traces drawn only as a guide (no hover: the ceiling's curve) are left out; so are reference lines drawn
    as shapes, which the chart's captions state in words."""
    x_title = getattr(figure.layout.xaxis.title, "text", None) or "x"
    y_title = getattr(figure.layout.yaxis.title, "text", None) or "y"
    def number(value):
        return round(float(value), 4) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    rows = []
    for trace in figure.data:
        if getattr(trace, "hoverinfo", None) == "skip" or trace.x is None or trace.y is None:
            continue
        name = re.sub(r"<[^>]+>", " ", trace.name or "").replace("  ", " ").strip()  # (a legend's <br>)
        error = getattr(getattr(trace, "error_y", None), "array", None)
        for index, (x, y) in enumerate(zip(trace.x, trace.y)):
            if isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y):
                row = {"series": name, x_title: number(x), y_title: number(y)}
                if error is not None and index < len(error):
                    row["± (std)"] = number(error[index])
                rows.append(row)
    return rows


def reid_caption(utility: dict) -> str:
    """How the re-identification chart's attackers match releases; the baselines' part only where baselines are
    drawn (a table's curves have none, and the caption spoke of pixels, blur and DP-Pix)."""
    methods = utility.get("methods", {}) if isinstance(utility.get("methods"), dict) else {}
    baselines = [name for name in ("dp-pix", "blur", "mosaic") if name in methods]
    space = "pixel space" if baselines else "the encoded data's space"
    unbound = ["gaussian's δ", "metric's per-unit ε"] + (["DP-Pix's 1-pixel ε"] if "dp-pix" in methods else []) \
        + ["paper (no guarantee)"]
    return ("Each release is matched to its nearest original among those with the label or conditions released "
            "with it (public), by each attacker: in latent space with the model (the CADP release's noisy latent, "
            "which shows more than the release, as the release is that latent decoded, clamped and rounded, "
            "matched to where each original's release is centred: its clipped latent for laplace and gaussian; "
            "in the noise's norm: the most likely source"
            + ("; a baseline's release is encoded by the model" if baselines else "") + f"), in {space}"
            + (", and, for a baseline, by applying its own public transform to every original (blur and mosaic "
               "are deterministic: that attacker finds every release)" if baselines else "") + ". "
            "The curve is the best of them at each point. The thin gray line is the most "
            "any attacker can reach against an ε-LDP mechanism (laplace) guessing among those records; "
            + ", ".join(unbound[:-1]) + f" and {unbound[-1]} are not bound by it. "
            + reid_sampling_note(utility))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def recompute_sizes(settings: dict, planned: bool = False) -> str:
    """The sizes of a utility run in words (the "settings" of eval.json or the keyword arguments of the sweep);
    ``planned``: the sweep's arguments, before it ran (its re-identification pool is at most its test records)."""
    parts = []
    if isinstance(settings.get("n_train"), int) and isinstance(settings.get("n_test"), int):
        parts.append(f"{settings['n_train']} training and {settings['n_test']} test records")
    if isinstance(settings.get("n_reid"), int):
        parts.append(f"re-identification among {settings['n_reid']} records" if not planned else
                     f"re-identification among up to {settings['n_reid']} test records (a table's held-out fifth "
                     "may hold fewer: all of them then)")
    if isinstance(settings.get("cnn_epochs"), int):
        parts.append(_count(settings["cnn_epochs"], "CNN epoch"))
    seeds = settings.get("seeds")
    if isinstance(seeds, (list, tuple)):
        parts.append(_count(len(seeds), "seed"))
    epsilons = settings.get("epsilons")
    epsilons = finite_numbers(list(epsilons)) if isinstance(epsilons, (list, tuple)) else None
    if epsilons:
        parts.append(f"{len(epsilons)} epsilons ({', '.join(f'{e:g}' for e in epsilons)})")
    return ", ".join(parts) or "the default sizes"
