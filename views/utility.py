"""Utility curves from eval.json: accuracy, re-identification and SSIM against epsilon; central DP apart."""

import importlib

import plotly.graph_objects as go
import streamlit as st

from cadp import ui
from cadp.hub import read_eval
from cadp.mechanisms import PAPER_LABEL

LIVE = "utility_live"


def _std(value):
    return value.get("std") if isinstance(value, dict) else None


def method_label(name: str, method: dict, distances=None) -> str:
    """A legend entry: paper with its label, baselines marked, metric with what its ε means between records."""
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


def epsilon_figure(utility: dict, metric: str, title: str, y_title: str, *, reference=None, chance=None,
                   distances=None):
    figure = go.Figure()
    for name, method in utility.get("methods", {}).items():
        if "parameters" in method or metric not in method:
            continue  # blur / mosaic have no epsilon axis
        epsilons = method.get("epsilons", utility.get("epsilons", []))
        figure.add_trace(go.Scatter(x=epsilons, y=ui.mean_of(method[metric]),
                                    name=method_label(name, method, distances),
                                    mode="lines+markers",
                                    line=dict(dash="dot") if method.get("kind") != "cadp" else None,
                                    error_y=dict(type="data", array=_std(method[metric]))
                                    if _std(method[metric]) else None))
    if reference is not None:
        figure.add_hline(y=reference, line_dash="dash", line_color="black", annotation_text="o/o (real → real)")
    if chance is not None:
        figure.add_hline(y=chance, line_dash="dash", line_color="gray", annotation_text="chance")
    given = utility.get("chance_given_condition") if chance is not None else None
    if isinstance(given, (int, float)):  # the label is released exactly: a guess among its records does this well
        figure.add_hline(y=given, line_dash="dot", line_color="gray", annotation_text="chance knowing the label")
    figure.update_layout(title=title, xaxis_title="ε (local; metric: per unit of latent L1 distance)",
                         yaxis_title=y_title, xaxis_type="log", height=420)
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


def frontier_figure(utility: dict):
    figure = go.Figure()
    for name, method in with_strongest_attacker(utility)["methods"].items():
        if "p/o" not in method:
            continue
        points = method.get("parameters", method.get("epsilons", utility.get("epsilons", [])))
        figure.add_trace(go.Scatter(x=method["reid"], y=ui.mean_of(method["p/o"]), mode="lines+markers",
                                    name=method_label(name, method), text=[f"{p:g}" for p in points],
                                    hovertemplate="%{text}: re-id %{x:.3f}, accuracy %{y:.3f}"))
    if "chance" in utility:
        figure.add_vline(x=utility["chance"], line_dash="dash", line_color="gray", annotation_text="chance")
    if isinstance(utility.get("chance_given_condition"), (int, float)):
        figure.add_vline(x=utility["chance_given_condition"], line_dash="dot", line_color="gray",
                         annotation_text="chance knowing the label")
    figure.update_layout(title="Privacy–utility frontier (up and to the left is better)",
                         xaxis_title="re-identification rate (the best attacker)",
                         yaxis_title="downstream accuracy (p/o)", height=420)
    return figure


def show_utility(utility: dict, key: str, config) -> None:
    reference = ui.mean_of(utility.get("reference", {}).get("o/o"))
    distances = getattr(config, "latent_distances", None)
    st.plotly_chart(epsilon_figure(utility, "p/o", "Downstream accuracy: trained on releases, tested on real data",
                                   "accuracy", reference=reference, distances=distances), key=f"{key}_accuracy")
    st.plotly_chart(epsilon_figure(with_strongest_attacker(utility), "reid", "Re-identification: the best attacker",
                                   "top-1 rate", chance=utility.get("chance"), distances=distances),
                    key=f"{key}_reid")
    st.caption("Each release is matched to its nearest original among those with the label or conditions released "
               "with it (public), by each attacker: in latent space with the model (to where each original's "
               "release is centred: its clipped latent for laplace and gaussian; in the noise's norm: the most "
               "likely source; a baseline's release is encoded by the model), and in pixel or encoded data space. "
               "The curve is the best of them at each point; a blurred or mosaicked image, re-encoded by the "
               "model, hides from the latent attacker but not from the pixel one.")
    if any("ssim" in m for m in utility.get("methods", {}).values()):
        st.plotly_chart(epsilon_figure(utility, "ssim", "SSIM of release vs original", "SSIM", distances=distances),
                        key=f"{key}_ssim")
    if "metric" in utility.get("methods", {}):
        st.caption("metric's ε is per unit of latent L1 distance, so its points do not compare with the others' at "
                   "the same axis value. At axis value 1: " + ui.metric_meaning(config, 1.0))
    st.plotly_chart(frontier_figure(utility), key=f"{key}_frontier")
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
    with st.form("utility_recompute"):
        st.markdown("Recompute the curves here (quick settings; the result stays in this session).")
        submitted = st.form_submit_button("Recompute")
    if submitted:
        utility_sweep = ui.require("utility_sweep", "cadp.evaluate")
        bar = st.progress(0.0, text="Recomputing…")
        quick = getattr(importlib.import_module("cadp.evaluate"), "QUICK", {})
        st.session_state[LIVE] = (name, utility_sweep(
            loaded, epsilons=quick.get("epsilons"), seeds=quick.get("seeds", (0,)), n_train=quick.get("n_train"),
            n_test=quick.get("n_test"), n_reid=quick.get("n_reid", 200), cnn_epochs=quick.get("cnn_epochs"),
            progress=lambda share, message: bar.progress(min(float(share), 1.0), text=str(message))))
        bar.progress(1.0, text="Done")
    live = st.session_state.get(LIVE)
    if live is not None and live[0] == name:
        st.subheader("Recomputed in this session")
        show_utility(live[1], "live", loaded.config)
    central = evaluation.get("central")
    if central:
        show_central(central)
    else:
        st.caption(f"No central DP baseline in eval.json (produce it with `{ui.evaluate_command(loaded, 'dpsgd')}`).")


ui.run_page("Utility curves", page)
