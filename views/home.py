"""Home: what CADP does, the guarantees of the four mechanisms in plain words, where to start."""

import streamlit as st

from cadp import hub, ui
from cadp.data import PUBLIC_DATASETS
from cadp.errors import ModelError

# top to bottom: left to right, a phone-wide page drew its labels a few pixels high
PIPELINE = """
digraph {
  rankdir=TB; node [shape=box, style="rounded,filled", fillcolor="#f0f4f8", fontname="sans-serif"];
  x [label="your record x\\n(image or table row)"]; c [label="kept attributes c\\n(e.g. the label)", fillcolor="#e6fffa"];
  z [label="latent z = f(x; c)"]; m [label="noise M(z)\\n(laplace, gaussian, metric, paper)", fillcolor="#fefcbf"];
  out [label="release x' = f⁻¹(M(z); c')", fillcolor="#e6fffa"];
  x -> z; c -> z; z -> m -> out; c -> out [label="kept, randomized\\nor resampled"];
}
"""


PIPELINE_WORDS = ("The diagram: your record x and its kept attributes c go into the network, which gives a latent "
                  "code z; the mechanism M adds noise to z; the network, run backwards with the attributes c' "
                  "(kept, randomized or resampled), turns the noisy code into the release x'.")
PRIVACY_IN_A_SENTENCE = (
    "**What ε (epsilon) means.** Differential privacy limits what a release can tell about which record it came "
    "from: whatever anyone concludes from a release, that conclusion is at most e^ε times more likely for one "
    "record than for any other with the same kept attributes (those are released as they are; plus a small "
    "chance δ for gaussian; per unit of latent distance for metric; paper, the original code's reproduction, gives "
    "no such bound). "
    "Smaller ε means more noise and more privacy; larger ε keeps more of the record. ε = 1 bounds that factor by "
    "e ≈ 2.7; at the ε of tens to hundreds that images need to stay recognizable, the bound says little, and "
    "the measured re-identification rates (Utility curves) are the better guide. The guarantee is a property of "
    "the noise, not of any one release: try a few values and compare.")


def listed_configs() -> dict:
    """The configs of the models the app lists (its weights folder), by name; an unreadable one is left out."""
    configs = {}
    for name in ui.bundled_models():
        try:
            configs[name] = hub.read_config(ui.weights_dir() / name)
        except ModelError:
            continue
    return configs


def page(_loaded) -> None:
    configs = listed_configs()  # the statements below are about these models, which need not be the bundled ones
    own_data = [name for name, config in configs.items() if config.dataset not in PUBLIC_DATASETS]
    bundled = [name for name in configs if hub.bundled_twin(ui.weights_dir() / name) is not None]
    public_others = [name for name in configs if name not in own_data and name not in bundled]
    unlike = [name for name, config in configs.items()
              if config.kind == "image" and not ui.measured_like_bundled(config, ui.weights_dir() / name)]
    st.markdown(
        "CADP privatizes one record at a time: a conditional invertible network maps your image or table row to "
        "a latent code, a noise mechanism perturbs that code, and the network maps it back to a release of the "
        "same kind. The attributes you choose to keep (a class label, a diagnosis) are the network's condition "
        "and are released exactly, so the release keeps what a downstream task needs while the noise (laplace, "
        "gaussian, metric) randomizes the record's other details, as far as ε allows (the Utility curves page "
        "shows how often an attacker still finds the record at each ε). Each record is privatized on its own (paper, the "
        "original code's reproduction, excepted: it clips whole batches), so its release needs no trusted curator; the machine that runs this app does see your original, so for sensitive data "
        "run the app on your own machine (`make run`, see the README).")
    st.markdown(PRIVACY_IN_A_SENTENCE)
    st.graphviz_chart(PIPELINE)
    st.caption(PIPELINE_WORDS)  # (the diagram's words for a screen reader, which reads the drawing as loose labels)
    st.subheader("The guarantees, in plain words")
    for name in ("laplace", "gaussian", "metric", "paper"):
        st.markdown(f"- {ui.GUARANTEES_IN_PLAIN_WORDS[name]}")
    st.markdown(ui.common_plain_words(own_data, bundled=bool(bundled) or not configs, public_others=public_others))
    st.markdown("Each attribute can be **kept** (released exactly, public), **randomized** (randomized response "
                "with its own ε, which adds to the total) or **resampled** from a public prior (costs nothing). "
                "Releasing the same record n times costs n · ε_total; the sidebar keeps this ledger for the "
                "session.")
    st.caption(ui.large_epsilon_note(bundled_only=bool(unlike)) + " (laplace and gaussian at their default constant "
               "temperature" + (f"; {', '.join(ui.literal(name) for name in unlike)}, of another size or data, may "
                                "differ (the Utility curves page shows a model's own rates where it was evaluated)"
                                if unlike else "") + ".)")
    st.subheader("Where to start")
    for path, label, words in ui.WHERE_TO_START:
        ui.page_link(path, label, words)
    st.caption("Uploaded files stay in this app's memory for your session only: they are never written to disk or "
               "logged, and never sent on from the machine that runs this app (which receives them: see above).")


ui.run_page("CADP — content-aware differential privacy", page, needs_model=False, picker=False)
