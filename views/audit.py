"""Privacy audit: release two records many times and bound epsilon from below (docs/PRIVACY.md, Audits)."""

import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from cadp import ui
from cadp.curves import LEGEND, fitted_height, wrapped_legend
from cadp.data import PUBLIC_DATASETS
from cadp.mechanisms import DEFAULT_TEMPERATURE, MECHANISMS, PAPER_LABEL, make_mechanism

RESULT = "audit_results"
WORST_CASE = "the worst case for the mechanism"
TEST_RECORDS = "two test records"


def choose_records(loaded):
    """(record_a, record_b, condition, description) from the bundled test data, sharing the kept condition."""
    config = loaded.config
    if config.dataset not in PUBLIC_DATASETS:
        raise ui.InputError(f"This page audits with the model's bundled test records; {ui.literal(config.name)} was "
                            f"trained on {ui.literal(str(config.dataset))}, which is not bundled: choose \"{WORST_CASE}\" above, or audit it from "
                            f"the command line: {ui.evaluate_command(loaded, 'audit')}")
    if config.kind == "image":
        data = ui.test_images(config.dataset, config.image_size, config.channels)
        label = st.selectbox("Kept class (both records share it)", range(len(data.class_names)),
                             format_func=lambda i: data.class_names[i], key=ui.kept("audit_class"))
        indices = (data.labels == label).nonzero().flatten().tolist()
        if len(indices) < 2:
            raise ui.InputError("this class has fewer than two test images")
        left, right = st.columns(2)
        a = left.selectbox("Record A (test image number)", indices, index=0, key=ui.kept("audit_a"))
        # B is another image: a record against itself tests nothing (TPR = FPR), and passed
        b = right.selectbox("Record B (test image number)", [i for i in indices if i != a], index=0,
                            key=ui.kept("audit_b"))
        if torch.equal(data.images[a], data.images[b]):
            raise ui.InputError(f"test images #{a} and #{b} are identical: an audit of a record against a copy of "
                                "itself tests nothing; choose another record B")
        left.image(ui.to_display(data.images[a]), width=ui.IMAGE_WIDTH, caption=f"A: #{a}",
                   alt=f"record A of the audit, test image number {a}")
        right.image(ui.to_display(data.images[b]), width=ui.IMAGE_WIDTH, caption=f"B: #{b}",
                    alt=f"record B of the audit, test image number {b}")
        return data.images[a], data.images[b], label, f"test images #{a} and #{b} ({data.class_names[label]})"
    from cadp.data import load_table

    frame = load_table(config.dataset).frame
    left, right = st.columns(2)
    a = left.number_input("Record A (row)", 0, len(frame) - 1, 0, key=ui.kept("audit_row_a"))
    rows = frame[config.condition_columns].astype(str)
    same = [i for i in range(len(frame)) if i != a and (rows.iloc[i] == rows.iloc[a]).all()]
    if not same:
        raise ui.InputError("no other row shares record A's kept condition")
    b = right.selectbox("Record B (a row with the same kept condition)", same, key=ui.kept("audit_row_b"))
    if frame.iloc[a].equals(frame.iloc[b]):
        raise ui.InputError(f"rows {a} and {b} are identical: an audit of a record against a copy of itself tests "
                            "nothing; choose another record B")
    st.dataframe(frame.iloc[[a, b]], key="audit_rows")
    return frame.iloc[[a]], frame.iloc[[b]], None, f"rows {a} and {b}"


FLOOR = 0.01  # a lower bound of 0 on the log axis


def run_name(mechanism: str, setting: str) -> str:
    """A mechanism with its settings ("–": none), as the figure's legend and the verdicts under the table name it."""
    return mechanism if setting == "–" else f"{mechanism} ({setting})"


def audit_figure(results: list[dict], ceiling: float | None = None) -> go.Figure:
    """Lower bounds against claims on log-log axes, where the dashed diagonal is y = x everywhere."""
    frame = pd.DataFrame(results)
    figure = go.Figure()
    values = [v for v in frame["claimed"].tolist() + frame["estimate"].tolist() if math.isfinite(v) and v > 0]
    low, top = min([FLOOR] + values), max([1.0] + values)
    figure.add_trace(go.Scatter(x=[low, top * 2], y=[low, top * 2], mode="lines", name="y = x (the claim)",
                                line=dict(dash="dash", color="gray")))
    # one line per mechanism and settings (a run with another radius or δ is another line, not a zig-zag)
    for (mechanism, setting), group in frame.groupby(["mechanism", "settings"], sort=False):
        group = group.sort_values("claimed")
        bound = group["lower_bound"].clip(lower=FLOOR)
        figure.add_trace(go.Scatter(
            x=group["claimed"], y=bound, mode="markers+lines",
            # the mechanism on its own line(s), then its settings: a legend entry is not wrapped by plotly
            name=wrapped_legend(mechanism) + "<br>" + wrapped_legend(
                "lower bound" if setting == "–" else f"({setting}): lower bound"),
            customdata=group[["lower_bound", "estimate"]].to_numpy(),
            hovertemplate="claim %{x:.3g}: lower bound %{customdata[0]:.3g}, estimate %{customdata[1]:.3g}",
            error_y=dict(type="data", symmetric=False, array=(group["estimate"].clip(lower=FLOOR) - bound),
                         arrayminus=[0] * len(group)),
        ))
    if ceiling is not None and math.isfinite(ceiling):
        # a trace, not add_hline: its annotation lands at 10^ceiling on a log axis, stretching the axis to match
        figure.add_trace(go.Scatter(x=[low, top * 2], y=[ceiling, ceiling], mode="lines",
                                    name=wrapped_legend(f"the most these releases can show ({ceiling:.2f})"),
                                    line=dict(dash="dot", color="dimgray"), hoverinfo="name"))  # (paper is red)
    # a short x title and the legend below: at a phone's width a legend at the right took the plot's width
    figure.update_layout(xaxis_title="claimed ε (metric: ε_unit · d(A, B))",
                         # short: a longer title ran past the plot's height into the legend
                         yaxis_title=f"ε lower bound (95%; 0 drawn at {FLOOR})",
                         xaxis_type="log", yaxis_type="log", height=fitted_height(figure), legend=LEGEND)
    # ticks at powers of ten only: at a phone's width plotly labelled the minor ticks "2" and "5" without their
    # decade, and the axis read "5, 2, 1, 5, 2, 0.1"
    figure.update_xaxes(dtick=1)
    figure.update_yaxes(dtick=1)
    return figure


NUMBER_FORMAT = "localized"  # thousands separators, at most 3 decimals: 1,284.099 and 0.352
# the answer first, then what it rests on; widths in pixels so that numbers are never cut off. Model, records
# and releases are the same on every row (the caption names them), so they come last
TABLE_COLUMNS = {  # the verdict 180 px wide: at 400 it hid every other column at phone width (each is written out below)
    "verdict": st.column_config.TextColumn("verdict", width=180),
    "mechanism": st.column_config.TextColumn("mechanism", width=110),
    "epsilon": st.column_config.NumberColumn("ε", format=NUMBER_FORMAT, width=60,
                                             help="The ε chosen above (metric: per unit of latent L1 distance)"),
    "claimed": st.column_config.NumberColumn("claimed ε", format=NUMBER_FORMAT, width=85,
                                             help="paper claims nothing: its nominal ε; metric: ε_unit · d(A, B)"),
    "lower_bound": st.column_config.NumberColumn("lower bound", format=NUMBER_FORMAT, width=90,
                                                 help="Empirical ε lower bound, 95% Clopper–Pearson"),
    "estimate": st.column_config.NumberColumn("estimate", format=NUMBER_FORMAT, width=80,
                                              help="The same formula at the measured rates, with no confidence "
                                                   "margin. Where no false positive was seen it is capped at "
                                                   "ln(2n·TPR), n the held-out releases of a record: it then tells "
                                                   "how many releases were run, not how private the mechanism is"),
    "settings": st.column_config.TextColumn("settings", width=120),
    "pair": st.column_config.TextColumn("pair", width=170,
                                        help="Of the worst-case pairs tried, the one the first half of the releases "
                                             "picked and the second half measured (none for two test records)"),
    "tpr": st.column_config.NumberColumn("TPR", format="%.3f", width=60),
    "fpr": st.column_config.NumberColumn("FPR", format="%.3f", width=60),
    "releases": st.column_config.NumberColumn("releases", format="%,d"),
    "model": st.column_config.TextColumn("model"),
    "records": st.column_config.TextColumn("records"),
}


def verdict(audit, epsilon: float) -> str:
    """The audit's verdict; for paper, which claims nothing, whether it loses more than its nominal ε, and where
    its nominal ε is beyond what the releases can show (a bound below it then says nothing)."""
    if audit.verdict is not None:
        return audit.verdict
    words = f"no claim ({PAPER_LABEL}); released one record per batch (batch size {audit.batch_size})"
    if audit.epsilon_lower_bound > epsilon:
        return words + "; the bound exceeds its nominal ε"
    if epsilon >= audit.provable_ceiling:
        return words + (f"; {audit.releases:,} releases can show at most ε {audit.provable_ceiling:.2f}, below its "
                        "nominal ε: whether it loses more is not testable here")
    return words


def page(loaded) -> None:
    # two models may share a name (a Hub fork, a folder trained again under it): results are kept by origin too
    model_key = (loaded.config.name, loaded.origin, loaded.stamp)
    st.markdown("Two records are each released many times; the best threshold test between the two release sets "
                "gives a lower bound on ε (95% confidence). For laplace and gaussian it must stay at or below "
                "the claimed ε; for paper it can exceed it. This checks the code, it does not prove the claim.")
    source = st.radio("Records", [WORST_CASE, TEST_RECORDS], horizontal=True, key=ui.kept("audit_source"))
    if source == WORST_CASE:
        description = "the worst-case latents"
        st.caption("Latents built so that the mechanism loses the most privacy between them (laplace, gaussian: "
                   "a pair that clips to opposite ends of one axis, 2R apart, the sensitivity, and a pair on the "
                   "diagonal that a correct clip also brings 2R apart, while a clip in another norm or no clip "
                   "leaves it farther apart; each pair is released the chosen number of times, and half of the "
                   "releases pick the pair the other half measures; paper: opposite corners of its clip; metric: "
                   "±e₁, 2 apart, so its claim is ε · 2). The results name each pair by its latents before the "
                   "clip: \"axis: ±2R e_1\" is 2R and −2R on the first coordinate (e_1), which the clip of radius R "
                   "brings to +R and −R, 2R apart; \"diagonal: ±2R (1, ..., 1)\" is 2R and −2R on every "
                   "coordinate. The guarantee is stated for every latent, so these pairs are "
                   "where a broken clip or calibration shows most. The test's power is still limited: at 10,000 "
                   "releases a laplace mechanism with half its noise fails at ε = 1, a gaussian with half its "
                   "noise passes. Two real records are usually far less separated after clipping, and an audit "
                   "of them passes broken code more easily.")
    else:
        record_a, record_b, condition, description = choose_records(loaded)
    with st.form("audit_form"):
        mechanism = st.selectbox("Mechanism", list(MECHANISMS), format_func=ui.MECHANISM_LABELS.get,
                                 key=ui.kept("audit_mechanism"))
        epsilons = st.multiselect("ε values", ui.EPSILON_VALUES, default=[0.5, 1, 2], key=ui.kept("audit_epsilons"))
        releases = st.select_slider("Releases per record", [200, 1000, 2000, 5000, 10000, 20000], value=5000,
                                    key=ui.kept("audit_releases"))
        with st.expander("Advanced: clip radius (laplace, gaussian) and delta (gaussian)"):
            policy_name = st.radio("Clip-radius policy", ["constant temperature", "fixed radius"], horizontal=True,
                                   key=ui.kept("audit_policy"))
            temperature = st.number_input("Temperature", 0.01, 10.0, DEFAULT_TEMPERATURE, key=ui.kept("audit_temperature"))
            radius = st.number_input("Fixed clip radius R", 0.001, 1e6, 1.0, key=ui.kept("audit_radius"))
            delta = st.select_slider("δ", [1e-3, 1e-4, 1e-5, 1e-6, 1e-8], value=1e-5, key=ui.kept("audit_delta"))
        submitted = st.form_submit_button("Run the audit", type="primary")
    if mechanism == "metric":  # (the form's submitted choice)
        st.caption("For metric, ε is per unit of latent L1 distance, not per record. At ε = 1 per unit: "
                   + ui.metric_meaning(loaded.config, 1.0, publisher=ui.stated_by(loaded.model)))
    if submitted:
        if not epsilons:
            raise ui.InputError("choose at least one ε")
        distinguishing_audit = ui.require("distinguishing_audit", "cadp.evaluate")
        bar = st.progress(0.0, text="Auditing…")
        results = {}  # by mechanism, settings and ε: a rerun with the same settings replaces its rows
        for step, epsilon in enumerate(sorted(epsilons)):
            policy = {}
            if mechanism in ("laplace", "gaussian"):
                policy = {"temperature": temperature} if policy_name == "constant temperature" else {"clip_radius": radius}
            built = make_mechanism(mechanism, epsilon, delta=delta if mechanism == "gaussian" else None, **policy)
            setting = ", ".join([f"{name} {value:g}" for name, value in policy.items()]
                                + ([f"δ {delta:g}"] if mechanism == "gaussian" else [])).replace("clip_radius", "R")

            def report(share, message, step=step, epsilon=epsilon):
                bar.progress(min((step + share) / len(epsilons), 1.0), text=f"ε = {epsilon:g}: {message}")

            if source == WORST_CASE:
                pairs = ui.require("worst_case_pairs", "cadp.evaluate")(built, loaded.config.latent_dim)
                audit = ui.require("pairs_audit", "cadp.evaluate")(pairs, built, releases, progress=report)
            else:
                audit = distinguishing_audit(loaded.model, record_a, record_b, condition, built,
                                             releases=releases, progress=report)
            if audit.batch_size:  # paper: its output depends on the batch (PRIVACY.md: record the batch size)
                setting = f"batch size {audit.batch_size}"
            label, settings = ui.MECHANISM_LABELS[mechanism], setting or "–"
            results[(label, settings, epsilon)] = {
                "model": loaded.config.name, "records": description, "mechanism": label, "settings": settings,
                "epsilon": epsilon, "claimed": audit.claimed_epsilon if audit.claimed_epsilon is not None else epsilon,
                "lower_bound": audit.epsilon_lower_bound, "estimate": audit.epsilon_estimate,
                "tpr": audit.tpr, "fpr": audit.fpr, "releases": audit.releases, "verdict": verdict(audit, epsilon),
                "pair": audit.pair.replace("+-", "±") or "–"}
        bar.progress(1.0, text="Done")
        st.session_state.setdefault(RESULT, {}).setdefault((*model_key, description, releases), {}).update(results)
    runs = st.session_state.get(RESULT, {})
    results = list(runs.get((*model_key, description, releases), {}).values())  # this model, records, count
    if results:
        largest_provable_epsilon = ui.require("largest_provable_epsilon", "cadp.evaluate")
        ceiling = largest_provable_epsilon(releases)
        st.caption(f"Audited on {description} of {ui.literal(loaded.config.name)}, {releases:,} releases per record. With "
                   f"{releases:,} releases no audit can show more than ε ≈ {ceiling:.2f}: a bound near that line "
                   "means \"at least this much\", not that a larger claim holds, and a claim above it is not "
                   "testable (it passes whatever the code does; the verdict says so). The bar above a point reaches "
                   "the estimate, the same formula at the measured rates without the 95% margin: not a confidence "
                   "interval, and where no false positive was seen only a cap set by the release count.")
        # (its values are the results table's below, which a screen reader reads: no second table of them)
        st.plotly_chart(audit_figure(results, ceiling), key="audit_figure")
        st.dataframe(pd.DataFrame(results)[list(TABLE_COLUMNS)], key="audit_table", hide_index=True,
                     column_config=TABLE_COLUMNS)
        # the verdict column cuts a long verdict: each is said in full, under its row's mechanism and ε
        st.markdown("\n".join(f"- **{run_name(row['mechanism'], row['settings'])}, ε = {row['epsilon']:g}**: "
                               f"{row['verdict']}"
                               + (f" (measured on the pair {row['pair']})" if row.get("pair", "–") != "–" else "")
                               for row in results))
    elif runs:
        st.caption("Earlier audits in this session were of other models, records or release counts: run one here.")
    if runs and st.button("Clear audit results", key="audit_clear"):
        st.session_state.pop(RESULT)
        st.rerun()


ui.run_page("Privacy audit", page)
