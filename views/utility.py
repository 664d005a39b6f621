"""Utility curves from eval.json: accuracy, re-identification and SSIM against epsilon; central DP apart."""

import importlib
import re
import zlib

import plotly.graph_objects as go
import streamlit as st

from cadp import ui
from cadp.hub import read_eval
from cadp.mechanisms import PAPER_LABEL

LIVE = "utility_live"
# One colour and one legend place per method on every chart of the page (Okabe–Ito, colour-blind safe)
METHOD_ORDER = ("laplace", "gaussian", "metric", "paper", "dp-pix", "blur", "mosaic")
METHOD_COLOURS = {"laplace": "#0072B2", "gaussian": "#009E73", "metric": "#CC79A7", "paper": "#D55E00",
                  "dp-pix": "#8C564B", "blur": "#56B4E9", "mosaic": "#E69F00"}
OTHER_COLOURS = ("#7F3C8D", "#3969AC", "#F2B701", "#11A579")
SHORT_NAMES = {"laplace": "Laplace (ε-LDP)", "gaussian": "Gaussian ((ε, δ)-LDP)",
               "metric": "metric (ε per unit of latent L1 distance)", "paper": f"paper ({PAPER_LABEL})",
               "dp-pix": "DP-Pix (ε-DP per pixel)", "blur": "blur (not private)", "mosaic": "mosaic (not private)"}
LEGEND = dict(orientation="h", xanchor="left", x=0, yanchor="top", y=-0.2, title_text="")


def _std(value):
    return value.get("std") if isinstance(value, dict) else None


def method_colour(name: str) -> str:
    """The colour of a method on every chart; a method the page does not know gets one fixed by its name."""
    return METHOD_COLOURS.get(name) or OTHER_COLOURS[zlib.crc32(name.encode()) % len(OTHER_COLOURS)]


def method_rank(name: str) -> int:
    """The method's place in every legend (plotly's legendrank: lower comes first)."""
    return 100 * (METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)) + 1


def ordered(methods: dict) -> list[tuple[str, dict]]:
    return sorted(methods.items(), key=lambda item: (method_rank(item[0]), item[0]))


def method_label(name: str, method: dict, distances=None) -> str:
    """The full description of a method: paper with its label, baselines marked, metric with what its ε means
    between records."""
    label = method.get("label") or name
    if method.get("kind") == "reference-reproduction" and PAPER_LABEL not in label:
        label = f"{label} ({PAPER_LABEL})"
    elif not method.get("formal", True) and method.get("kind") == "baseline" and "not private" not in label:
        label = f"{label} (not private)"
    if name == "metric" and distances is not None:
        label += f"; between two typical records ε = {distances.d_typ:.3g} × the value on the axis"
        if not distances.held_out:
            label += " (d_typ measured on records the model was fitted on)"
    return label


def legend_name(name: str, method: dict) -> str:
    """A legend entry, short enough to leave the plot its width (the full description is in ``methods_caption``)."""
    return SHORT_NAMES.get(name) or method_label(name, method)


def _literal(text: str) -> str:
    """Text from eval.json (it may come from the Hub) shown as itself in a Markdown caption."""
    return re.sub(r"([\\`*_\[\]()#<>!~|$])", r"\\\1", text[:200])


def methods_caption(utility: dict, distances=None) -> str:
    """What each legend entry stands for, in full (where the full description says more than the legend)."""
    entries = [(legend_name(name, method), method_label(name, method, distances))
               for name, method in ordered(utility.get("methods", {}))]
    return "Methods: " + "; ".join(f"{_literal(short)}: {_literal(full)}" if full != short else _literal(short)
                                   for short, full in entries) + "."


def _method_trace(name: str, method: dict, **scatter) -> go.Scatter:
    colour = method_colour(name)
    dash = None if method.get("kind") == "cadp" else "dot"
    return go.Scatter(name=legend_name(name, method), legendgroup=name, legendrank=method_rank(name),
                      mode="lines+markers", line=dict(color=colour, dash=dash), marker=dict(color=colour), **scatter)


def _line_entry(figure, name: str, colour: str, dash: str) -> None:
    """A legend entry for a reference line drawn with add_hline / add_vline: named there, not on the plot,
    where a label would sit on the curves."""
    figure.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, legendrank=1000,
                                line=dict(color=colour, dash=dash), hoverinfo="skip"))


def _reference_lines(figure, add_line, reference=None, chance=None, given=None) -> None:
    for value, name, colour, dash in ((reference, "o/o (real → real)", "black", "dash"),
                                      (chance, "chance", "gray", "dash"),
                                      (given, "chance knowing the label", "gray", "dot")):
        if isinstance(value, (int, float)):
            add_line(value, line_dash=dash, line_color=colour)
            _line_entry(figure, name, colour, dash)


def epsilon_figure(utility: dict, metric: str, title: str, y_title: str, *, reference=None, chance=None):
    figure = go.Figure()
    for name, method in ordered(utility.get("methods", {})):
        if "parameters" in method or metric not in method:
            continue  # blur / mosaic have no epsilon axis
        std = _std(method[metric])
        figure.add_trace(_method_trace(name, method, x=method.get("epsilons", utility.get("epsilons", [])),
                                       y=ui.mean_of(method[metric]),
                                       error_y=dict(type="data", array=std) if std else None))
    given = utility.get("chance_given_condition") if chance is not None else None
    # the label is released exactly: a guess among its records does as well as "chance knowing the label"
    _reference_lines(figure, figure.add_hline, reference, chance, given)
    figure.update_layout(title=title, xaxis_title="ε (local; metric: per unit of latent L1 distance)",
                         yaxis_title=y_title, xaxis_type="log", height=480, legend=LEGEND)
    epsilons = utility.get("epsilons")
    if isinstance(epsilons, list) and epsilons:  # ticks at the evaluated values: plotly labels 0.5 as "5" otherwise
        figure.update_xaxes(tickvals=epsilons, ticktext=[f"{e:g}" if isinstance(e, (int, float)) else str(e)
                                                         for e in epsilons])
    return figure


def with_strongest_attacker(utility: dict) -> dict:
    """The utility section with each method's "reid": per point, the best of its re-identification attackers."""
    methods = {name: {**method, "reid": ui.strongest_reidentification(method)}
               for name, method in utility.get("methods", {}).items()}
    return {**utility, "methods": {name: method for name, method in methods.items() if method["reid"] is not None}}


def frontier_figure(utility: dict, title: str = "Privacy–utility frontier (up and to the left is better)"):
    figure = go.Figure()
    for name, method in ordered(with_strongest_attacker(utility)["methods"]):
        if "p/o" not in method:
            continue
        points = method.get("parameters", method.get("epsilons", utility.get("epsilons", [])))
        figure.add_trace(_method_trace(name, method, x=method["reid"], y=ui.mean_of(method["p/o"]),
                                       text=[f"{p:g}" for p in points],
                                       hovertemplate="%{text}: re-id %{x:.3f}, accuracy %{y:.3f}"))
    _reference_lines(figure, figure.add_vline, chance=utility.get("chance"),
                     given=utility.get("chance_given_condition"))
    figure.update_layout(title=title, xaxis_title="re-identification rate (the best attacker)",
                         yaxis_title="downstream accuracy (p/o)", height=480, legend=LEGEND)
    return figure


def show_utility(utility: dict, key: str, config, title_note: str = "") -> None:
    """The curves of one utility section; ``title_note`` ends every chart's title (what sets these curves apart)."""
    reference = ui.mean_of(utility.get("reference", {}).get("o/o"))
    distances = getattr(config, "latent_distances", None)
    st.plotly_chart(epsilon_figure(utility, "p/o", "Downstream accuracy: trained on releases, tested on real data"
                                   + title_note, "accuracy", reference=reference), key=f"{key}_accuracy")
    st.caption(methods_caption(utility, distances))
    st.plotly_chart(epsilon_figure(with_strongest_attacker(utility), "reid", "Re-identification: the best attacker"
                                   + title_note, "top-1 rate", chance=utility.get("chance")), key=f"{key}_reid")
    st.caption("Each release is matched to its nearest original among those with the label or conditions released "
               "with it (public), by each attacker: in latent space with the model (to where each original's "
               "release is centred: its clipped latent for laplace and gaussian; in the noise's norm: the most "
               "likely source; a baseline's release is encoded by the model), and in pixel or encoded data space. "
               "The curve is the best of them at each point; a blurred or mosaicked image, re-encoded by the "
               "model, hides from the latent attacker but not from the pixel one.")
    if any("ssim" in m for m in utility.get("methods", {}).values()):
        st.plotly_chart(epsilon_figure(utility, "ssim", "SSIM of release vs original" + title_note, "SSIM"),
                        key=f"{key}_ssim")
    if "metric" in utility.get("methods", {}):
        st.caption("metric's ε is per unit of latent L1 distance, so its points do not compare with the others' at "
                   "the same axis value. At axis value 1: " + ui.metric_meaning(config, 1.0))
    st.plotly_chart(frontier_figure(utility, "Privacy–utility frontier (up and to the left is better)" + title_note),
                    key=f"{key}_frontier")
    settings = utility.get("settings")
    if settings:
        with st.expander("Settings of this evaluation"):
            st.json(settings)


def _training_records(central: dict) -> int | None:
    records = (central.get("settings") or {}).get("n_train")
    return records if isinstance(records, int) else None


def show_central(central: dict) -> None:
    st.subheader("Central DP baseline (DP-SGD) — a different guarantee")
    st.caption("Central differential privacy protects the training set of one model, with a trusted curator. "
               "It is not comparable to CADP's local, per-record guarantee and is never drawn on the local axes.")
    epsilons, accuracy = central.get("epsilons"), ui.mean_of(central.get("accuracy"))
    spent = central.get("epsilon_spent")
    if isinstance(epsilons, list) and isinstance(accuracy, list) and len(accuracy) == len(epsilons):
        text = [f"ε spent {e:.3g}" for e in spent] if isinstance(spent, list) and len(spent) == len(epsilons) \
            else None
        std = _std(central.get("accuracy"))
        figure = go.Figure(go.Scatter(x=epsilons, y=accuracy, name=central.get("label", "DP-SGD"),
                                      mode="lines+markers", text=text, error_y=dict(type="data", array=std)
                                      if std else None, hovertemplate="ε %{x}: accuracy %{y:.3f}<br>%{text}"))
        figure.update_layout(xaxis_title="ε (central DP, target of the training run)", xaxis_type="log",
                             yaxis_title="test accuracy", yaxis_range=[0, 1.05], height=380)
        st.plotly_chart(figure, key="central_figure")
        architecture = (central.get("settings") or {}).get("architecture")
        if architecture:
            delta = central.get("delta")
            st.caption(f"Classifier: {architecture}; δ = "
                       f"{f'{delta:.2g}' if isinstance(delta, (int, float)) else '?'}"
                       + (" = 1/N for its N training records: a weak setting (δ ≪ 1/N is usual; δ = 1/N allows "
                          "one training record to be published outright), so this baseline looks better than a "
                          "usual one." if isinstance(delta, (int, float)) and 0 < delta
                          and _training_records(central) == round(1 / delta) else "."))
    else:
        st.json(central)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def recompute_sizes(settings: dict) -> str:
    """The sizes of a utility run in words (the "settings" of eval.json or the keyword arguments of the sweep)."""
    parts = []
    if isinstance(settings.get("n_train"), int) and isinstance(settings.get("n_test"), int):
        parts.append(f"{settings['n_train']} training and {settings['n_test']} test records")
    if isinstance(settings.get("cnn_epochs"), int):
        parts.append(_count(settings["cnn_epochs"], "CNN epoch"))
    seeds = settings.get("seeds")
    if isinstance(seeds, (list, tuple)):
        parts.append(_count(len(seeds), "seed"))
    epsilons = settings.get("epsilons")
    if isinstance(epsilons, (list, tuple)):
        parts.append(f"{len(epsilons)} epsilons ({', '.join(f'{e:g}' for e in epsilons)})")
    return ", ".join(parts) or "the default sizes"


def show_recomputed(live: dict, stored: dict | None, loaded) -> None:
    """The curves of this session's run, said to be smaller and noisier than eval.json's, side by side in words."""
    settings = {**(live.get("settings") or {}), "epsilons": live.get("epsilons")}
    st.subheader("Recomputed in this session (smaller run: not the stored curves)")
    text = f"This run used {recompute_sizes(settings)}."
    if stored:
        text += (" Differences from the curves above of a few points of accuracy are noise of the smaller run, "
                 "not a change of the model.")
    here, there = ui.mean_of(live.get("reference", {}).get("o/o")), \
        ui.mean_of((stored or {}).get("reference", {}).get("o/o"))
    if isinstance(here, (int, float)):
        text += f" Real → real accuracy (o/o): {here:.3f} here" + \
            (f", {there:.3f} in eval.json." if isinstance(there, (int, float)) else ".")
    if (stored or {}).get("settings"):
        text += f" The stored curves used {recompute_sizes({**stored['settings'], 'epsilons': stored.get('epsilons')})}"
    text += f"; reproduce them with `{ui.evaluate_command(loaded, 'utility')}`."
    st.info(text)
    show_utility(live, "live", loaded.config, title_note=" — recomputed, smaller run")


def page(loaded) -> None:
    name = loaded.folder.name
    evaluation = read_eval(loaded.folder)
    utility = evaluation.get("utility")
    st.caption("CADP curves are local (per record): laplace and gaussian local DP, metric local ε·d privacy "
               "(its ε is per unit of latent L1 distance, see its legend); paper is a " + PAPER_LABEL + ".")
    if utility:
        show_utility(utility, "stored", loaded.config)
    else:
        st.warning(f"This model's eval.json has no utility section. Produce it with "
                   f"`{ui.evaluate_command(loaded, 'utility')}`.")
    sizes = getattr(importlib.import_module("cadp.evaluate"), "APP_SIZES", {}).get(loaded.config.kind, {})
    with st.form("utility_recompute"):
        records = "" if "n_train" in sizes else "as many records as a full run, "
        wait = "about 1–2 minutes on 2 CPU cores, more on a busy machine" if loaded.config.kind == "image" \
            else "under a minute"
        st.markdown(f"Recompute the curves here, on {records}{recompute_sizes(sizes)}: {wait}. "
                    "The result stays in this session; eval.json is not changed.")
        submitted = st.form_submit_button("Recompute")
    if submitted:
        utility_sweep = ui.require("utility_sweep", "cadp.evaluate")
        bar = st.progress(0.0, text="Recomputing…")
        st.session_state[LIVE] = (name, utility_sweep(
            loaded, **sizes, progress=lambda share, message: bar.progress(min(float(share), 1.0), text=str(message))))
        bar.progress(1.0, text="Done")
    live = st.session_state.get(LIVE)
    if live is not None and live[0] == name:
        show_recomputed(live[1], utility, loaded)
    central = evaluation.get("central")
    if central:
        show_central(central)
    else:
        st.caption(f"No central DP baseline in eval.json (produce it with `{ui.evaluate_command(loaded, 'dpsgd')}`).")


ui.run_page("Utility curves", page)
