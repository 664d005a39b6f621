"""Utility curves from eval.json: accuracy, re-identification and SSIM against epsilon; central DP apart."""

import html
import importlib

import plotly.graph_objects as go
import streamlit as st

from cadp import curves, ui
from cadp.curves import epsilon_figure, frontier_figure, methods_caption, std_of, with_strongest_attacker
from cadp.data import PUBLIC_DATASETS
from cadp.errors import ModelError
from cadp.hub import current_eval
from cadp.mechanisms import PAPER_LABEL

LIVE = "utility_live"


def left_out_warning(section: str, left_out: list[str], command: str, drawn: bool) -> None:
    """Which parts of an eval.json section (it may come from anyone's Hub repo) are not as cadp.evaluate writes
    them, so not drawn: said in words, where the page would otherwise stop (``drawn``: the rest of it is)."""
    if not left_out:
        return
    shown = left_out[:5] + ([f"{len(left_out) - 5} more"] if len(left_out) > 5 else [])
    st.warning((f"Parts of this model's eval.json {section} section are not as `cadp.evaluate` writes them, so they "
                "are not drawn: " if drawn else f"This model's eval.json {section} section is not as `cadp.evaluate` "
                "writes it, so it is not drawn: ") + "; ".join(shown) + f". Produce it again with `{command}`.")


def show_utility(utility: dict, key: str, config, title_note: str = "", publisher: str | None = None) -> None:
    """The curves of one utility section; ``title_note`` ends every chart's title (what sets these curves apart);
    ``publisher``: who states the model's latent distances, where not this app (``ui.stated_by``)."""
    reference = curves.mean_of(utility.get("reference", {}).get("o/o"))
    distances = getattr(config, "latent_distances", None)
    ui.chart(epsilon_figure(utility, "p/o", "Downstream accuracy: trained on releases, tested on real data"
                                   + title_note, "accuracy", reference=reference,
                                   majority=utility.get("majority_class")), key=f"{key}_accuracy")
    st.caption(methods_caption(utility, distances))
    majority = curves.majority_note(utility, reference)
    if majority:
        st.caption(majority)
    st.caption(curves.kept_task_note(utility))
    if any(std_of(method.get("p/o")) for method in utility.get("methods", {}).values()):  # bars drawn: say what
        st.caption(curves.error_bars_note(utility.get("settings"), reference))
    ui.chart(epsilon_figure(with_strongest_attacker(utility), "reid", "Re-identification: the best attacker"
                                   + title_note, "top-1 rate", chance=utility.get("chance")), key=f"{key}_reid")
    st.caption(curves.reid_caption(utility))
    if any("ssim" in m for m in utility.get("methods", {}).values()):
        ui.chart(epsilon_figure(utility, "ssim", "SSIM of release vs original" + title_note, "SSIM"),
                        key=f"{key}_ssim")
    if "metric" in utility.get("methods", {}):
        st.caption("metric's ε is per unit of latent L1 distance, so its points do not compare with the others' at "
                   "the same axis value. At axis value 1: " + ui.metric_meaning(config, 1.0, publisher=publisher))
    ui.chart(frontier_figure(utility, "Privacy–utility frontier (up and to the left is better)" + title_note),
                    key=f"{key}_frontier")
    settings = utility.get("settings")
    if settings:
        with st.expander("Settings of this evaluation"):
            st.json(settings)


def _training_records(central: dict) -> int | None:
    records = (central.get("settings") or {}).get("n_train")
    return records if isinstance(records, int) else None


def show_central(central: dict | None, left_out: list[str], command: str) -> None:
    """The "central" section of eval.json as ``curves.drawable_central`` leaves it (None: none of it drawable)."""
    st.subheader("Central DP baseline (DP-SGD) — a different guarantee")
    st.caption("Central differential privacy protects the training set of one model, with a trusted curator. "
               "It is not comparable to CADP's local, per-record guarantee and is never drawn on the local axes.")
    left_out_warning("central", left_out, command, drawn=central is not None)
    if central is not None:
        if central.get("quick") is True:
            st.warning(f"This baseline comes from a quick run (`--quick`: few records, one epoch), not the model's "
                       f"measured DP-SGD baseline. Produce a full run with `{command}`.")
        epsilons, accuracy = central["epsilons"], curves.mean_of(central["accuracy"])
        spent = central.get("epsilon_spent")
        text = [f"ε spent {e:.3g}" for e in spent] if spent is not None else None
        std = std_of(central.get("accuracy"))
        label = html.escape(str(central.get("label") or "DP-SGD")[:200])  # plotly renders tags in trace names
        figure = go.Figure(go.Scatter(x=epsilons, y=accuracy, name=label, mode="lines+markers", text=text,
                                      error_y=dict(type="data", array=std) if std else None,
                                      hovertemplate="ε %{x}: accuracy %{y:.3f}<br>%{text}"))
        # ticks at the run's ε values: plotly's own log ticks at phone width labelled 0.9 "9", next to "1"
        figure.update_layout(title=curves.two_line_title("Central DP (DP-SGD): test accuracy against the training "
                                                         "run's ε"),  # (one line was cut on a phone)
                             xaxis_title="ε (central DP, target of the training run)", xaxis_type="log",
                             xaxis=dict(tickmode="array", tickvals=epsilons, ticktext=[f"{e:g}" for e in epsilons]),
                             yaxis_title="test accuracy", yaxis_range=[0, 1.05], height=380)
        ui.chart(figure, key="central_figure")
        if std:
            st.caption(curves.error_bars_note(central.get("settings")))
        architecture = (central.get("settings") or {}).get("architecture")
        if architecture:
            delta = central.get("delta")
            st.caption(f"Classifier: {curves.literal(str(architecture))}; δ = "
                       f"{f'{delta:.2g}' if isinstance(delta, (int, float)) else '?'}"
                       + (" = 1/N for its N training records: a weak setting (δ ≪ 1/N is usual; δ = 1/N allows "
                          "one training record to be published outright), so this baseline looks better than a "
                          "usual one." if isinstance(delta, (int, float)) and 0 < delta
                          and _training_records(central) == round(1 / delta) else "."))


def show_recomputed(live: dict, stored: dict | None, loaded) -> None:
    """The curves of this session's run, said to be smaller and noisier than eval.json's, side by side in words."""
    settings = {**(live.get("settings") or {}), "epsilons": live.get("epsilons")}
    st.subheader("Recomputed in this session (smaller run: not the stored curves)")
    text = f"This run used {curves.recompute_sizes(settings)}."
    if stored:
        text += (" Differences from the curves above of a few points of accuracy are noise of the smaller run, "
                 "not a change of the model.")
        pools = (live.get("settings") or {}).get("n_reid"), (stored.get("settings") or {}).get("n_reid")
        if all(isinstance(pool, int) for pool in pools) and pools[0] != pools[1]:
            small, large = sorted(pools)
            text += (f" Re-identification rates are not comparable between the two: this run matched among "
                     f"{pools[0]} records, the stored curves among {pools[1]}; among {small} a match is likelier "
                     f"than among {large} (chance alone is 1/{small} against 1/{large}), so the smaller pool reads "
                     "higher whatever the model.")
    here, there = curves.mean_of(live.get("reference", {}).get("o/o")), \
        curves.mean_of((stored or {}).get("reference", {}).get("o/o"))
    if isinstance(here, (int, float)):
        text += f" Real → real accuracy (o/o): {here:.3f} here" + \
            (f", {there:.3f} in eval.json." if isinstance(there, (int, float)) else ".")
    if (stored or {}).get("settings"):
        text += f" The stored curves used {curves.recompute_sizes({**stored['settings'], 'epsilons': stored.get('epsilons')})}"
    text += f"; reproduce them with `{ui.evaluate_command(loaded, 'utility')}`."
    st.info(text)
    show_utility(live, "live", loaded.config, title_note=" — recomputed, smaller run",
                 publisher=ui.stated_by(loaded.model))  # (the latent distances are still the config's)


def recompute_form(loaded) -> None:
    """The form that recomputes the utility curves in this session, on the model's bundled dataset."""
    sizes = getattr(importlib.import_module("cadp.evaluate"), "APP_SIZES", {}).get(loaded.config.kind, {})
    with st.form("utility_recompute"):
        records = "" if "n_train" in sizes else "as many records as a full run, "
        wait = "about 1–2 minutes on 2 CPU cores, more on a busy machine" if loaded.config.kind == "image" \
            else "under a minute"
        st.markdown(f"Recompute the curves here, on {records}"
                    f"{curves.recompute_sizes(sizes, planned=loaded.config.kind == 'tabular')}: {wait}. "
                    "The result stays in this session; eval.json is not changed.")
        submitted = st.form_submit_button("Recompute")
    if submitted:
        utility_sweep = ui.require("utility_sweep", "cadp.evaluate")
        bar = st.progress(0.0, text="Recomputing…")
        st.session_state[LIVE] = (loaded.folder.name, utility_sweep(
            loaded, **sizes, progress=lambda share, message: bar.progress(min(float(share), 1.0), text=str(message))))
        bar.progress(1.0, text="Done")


def page(loaded) -> None:
    name = loaded.folder.name
    command = ui.evaluate_command(loaded, "utility")
    other_weights = []
    try:
        (evaluation, other_weights), readable = current_eval(loaded.folder), True
    except ModelError:  # its words name the file's place on the server: the page says what is wrong instead
        st.warning("This model's eval.json is not as `cadp.evaluate` writes it (JSON holding an object of "
                   f"sections by name), so none of it is drawn. Produce it again with `{command}`.")
        evaluation, readable = {}, False
    st.caption("CADP curves are local (per record): laplace and gaussian local DP, metric local ε·d privacy "
               "(its ε is per unit of latent L1 distance, see its legend); paper is a " + PAPER_LABEL + ".")
    # the data of a model trained on its owner's data is not the app's: a recompute here could only fail
    own_data = None if loaded.config.dataset in PUBLIC_DATASETS else loaded.config.dataset
    utility = None
    stale = [section for section in ("utility", "central") if section in other_weights]  # the sections it draws
    if stale:
        st.warning(ui.other_weights_warning(loaded, stale))
    if evaluation.get("utility") is None:
        if readable and "utility" not in other_weights:
            st.warning(f"This model's eval.json has no utility section. Produce it with `{command}`.")
    else:
        utility, left_out = curves.drawable_utility(evaluation["utility"])
        left_out_warning("utility", left_out, command, drawn=utility is not None)
    if utility is not None:
        if utility["settings"].get("quick") is True:  # as the model card says of it: "a quick run: few records"
            st.warning("These curves come from a quick run (`--quick`: few records, for tests and CI), not the "
                       "model's measured privacy–utility trade-off: their accuracy can sit near chance. Produce a "
                       f"full run with `{command}`.")
        publisher = ui.stated_by(loaded.model)
        if publisher is not None:  # a Hub repo's eval.json: its numbers are its publisher's word
            st.info(f"These curves are drawn from the eval.json that {ui.literal(publisher)} publishes with the "
                    "model: this app did not measure them and cannot check them. "
                    + ("Recompute them below to see what this app measures." if own_data is None else
                       f"Measure them yourself with `{command}`."))
        show_utility(utility, "stored", loaded.config, publisher=publisher)
    if own_data is not None:
        st.info(f"This model's curves cannot be recomputed here: it was trained on {ui.literal(own_data)}, not on "
                "one of the public datasets bundled with the app, so the app has no records of it to measure "
                f"releases on. Measure them on the data it was trained on with `{command}`.")
    else:
        recompute_form(loaded)
    live = st.session_state.get(LIVE)
    if live is not None and live[0] == name:
        show_recomputed(live[1], utility, loaded)
    if evaluation.get("central") is not None:
        show_central(*curves.drawable_central(evaluation["central"]), ui.evaluate_command(loaded, "dpsgd"))
    elif readable and "central" not in other_weights:
        st.caption(f"No central DP baseline in eval.json (produce it with `{ui.evaluate_command(loaded, 'dpsgd')}`).")


ui.run_page("Utility curves", page)
