"""Model card: the folder's README.md, its config, bits/dim, class-conditional samples, limitations."""

import re
from dataclasses import asdict

import numpy as np
import streamlit as st
import torch

from cadp import ui
from cadp.curves import finite_numbers, literal
from cadp.data import PUBLIC_DATASETS
from cadp.errors import ModelError
from cadp.hub import current_eval
from cadp.mechanisms import DEFAULT_TEMPERATURE
from cadp.models import DISTANCES_OF_OTHER_WEIGHTS, ClassIndices
from cadp.privatize import public_training_data

MAX_CARD_CHARACTERS = 200_000  # a Hub card can be any size: the browser gets at most this much of it
# a Hub config may have 1,000 classes and a network of 100M parameters: a page draws a few classes, a few images a call
MAX_SHOWN_CLASSES = 10
IMAGES_PER_CALL = 4


@st.cache_resource(show_spinner=False, max_entries=200)
def sample_row(_loaded, source: tuple, label: int, per_class: int, temperature: float, seed: int) -> np.ndarray:
    """uint8 (C, H, per_class * W): ``per_class`` samples of class ``label`` side by side, of the model loaded from
    ``source`` (the cache's key: its folder and the folder's files as loaded, so a folder trained again is drawn
    again; the model is the page's own: loading it again by its folder took a second place in the model cache).

    Drawn IMAGES_PER_CALL at a time (a Hub model may be large: memory stays that of a few images) with seed
    ``seed + label``, so a class's row is the same whichever other classes are shown."""
    generator = torch.Generator().manual_seed(seed + label)
    batches = []
    with torch.inference_mode():
        for start in range(0, per_class, IMAGES_PER_CALL):
            labels = torch.full((min(IMAGES_PER_CALL, per_class - start),), label, dtype=torch.long)
            batches.append(_loaded.model.sample(ClassIndices(labels), temperature, generator))
    samples = torch.cat(batches).round().to(torch.uint8)  # (per_class, C, H, W)
    return torch.cat(list(samples), dim=-1).numpy()


@st.cache_data(show_spinner="Drawing samples…", max_entries=8)
def sample_rows(_loaded, source: tuple, count: int, seed: int):
    """Rows sampled from a table model (conditions from the frequencies it stored, temperature 1)."""
    return _loaded.model.sample_frame(count, 1.0, torch.Generator().manual_seed(seed))


def sample_key(loaded) -> tuple:
    """The samples' cache key: the model's folder and its files' sizes and times when the model was loaded
    (ui.folder_stamp; stamped again here the files could have changed since: the old network's samples would be
    kept under the new files' stamp)."""
    return str(loaded.folder), loaded.stamp


def measured(value) -> str | None:
    """An eval.json number to three decimals; None for anything else (the file may come from anyone's Hub repo)."""
    numbers = finite_numbers([value])
    return None if numbers is None else f"{numbers[0]:.3f}"


def bits_per_dim(evaluation: dict) -> str | None:
    bpd = evaluation.get("bpd")
    values = ([bpd.get(key) for key in ("test_bits_per_dim", "test", "bits_per_dim", "mean")]
              if isinstance(bpd, dict) else [bpd])
    for shown in map(measured, values):
        if shown is not None:
            return shown
    training = evaluation.get("training")
    if isinstance(training, dict) and "bits/dim" in str(training.get("test_metric_name", "")):
        shown = measured(training.get("test_metric"))
        return None if shown is None else f"{shown} (from training)"
    return None


STALE_CARD_BLOCKS = {"bpd": "bpd", "utility": "reid"}  # section: the card block cadp.evaluate writes from it


def page(loaded) -> None:
    config = loaded.config
    st.caption(f"From: {loaded.origin}")
    try:
        evaluation, other_weights = current_eval(loaded.folder, loaded.files_of)
    except ModelError as error:  # anyone's file (a Hub repo): the card, config and samples are shown all the same
        st.warning(f"This model's eval.json cannot be read, so none of it is shown: {error}")
        evaluation, other_weights = {}, []
    if other_weights:
        st.warning(ui.other_weights_warning(loaded, other_weights)
                   + (" The model card below was written with those weights, by `cadp.train`: its facts and results "
                      "are the other network's." if "training" in other_weights else
                      " Their results in the model card below are left out; the rest of the card is its author's, "
                      "shown as it is."))
    if getattr(config, "distances_of_other_weights", False):
        st.warning(f"This model's {DISTANCES_OF_OTHER_WEIGHTS}: the app does not turn the metric "
                   "mechanism's ε into an ε between records or say where laplace leaves a typical latent whole, "
                   "and config.json below shows no latent distances. Training the model again measures them.")
    columns = st.columns(3)
    columns[0].metric("kind", config.kind)
    columns[1].metric("latent dimension", config.latent_dim)
    bpd = bits_per_dim(evaluation)
    if config.kind == "image":
        columns[2].metric("test bits/dim", bpd or "not measured",
                          help="Bits per pixel the model needs to describe held-out images: lower is better; 8 "
                               "bits/dim is a uniform guess over 8-bit pixels.")
        if bpd is None:
            st.caption(f"Measure it with `{ui.evaluate_command(loaded, 'bpd')}`.")
    elif "training" in evaluation:
        training = evaluation["training"] if isinstance(evaluation["training"], dict) else {}
        name = training.get("test_metric_name")
        columns[2].metric(literal(name) if isinstance(name, str) and name.strip() else "test NLL (nats/dim)",
                          measured(training.get("test_metric")) or "not available",
                          help="Negative log-likelihood per encoded dimension on held-out rows: lower is better.")
    if config.kind == "image":
        st.subheader(f"Class-conditional samples (temperature {DEFAULT_TEMPERATURE})")
        names = config.class_names
        # the choice outlives a page change, per model (another model's classes differ; two may share a name)
        model_key = ui.record_key(f"{config.name}\n{loaded.origin}".encode())
        classes = st.multiselect("Classes shown" + (f" (at most {MAX_SHOWN_CLASSES} at once; the model has "
                                                    f"{len(names):,})" if len(names) > MAX_SHOWN_CLASSES else ""),
                                 range(len(names)), default=range(min(len(names), MAX_SHOWN_CLASSES)),
                                 format_func=names.__getitem__, max_selections=MAX_SHOWN_CLASSES,
                                 key=ui.kept(f"card_classes_{model_key}"))
        per_class = st.slider("Samples per class", 2, 10, 6, key=ui.kept("card_per_class"))
        parameters = sum(parameter.numel() for parameter in loaded.model.parameters())
        asked = st.session_state.setdefault("card_samples_asked", set())  # models whose samples were asked for
        waiting = parameters > ui.SAMPLES_ON_REQUEST_PARAMETERS and model_key not in asked
        if waiting:
            st.info(f"This network has {parameters:,} parameters: drawing its samples can take minutes of this "
                    "machine's CPU (shared by everyone using this app), so they are drawn only when you press "
                    "Draw samples.")
            if st.button("Draw samples", key=f"card_draw_{model_key}"):
                asked.add(model_key)
                waiting = False
        if not classes:
            st.info("Choose a class to see its samples.")
        elif not waiting:
            progress = st.progress(0.0)
            rows = []
            for done, label in enumerate(classes):
                progress.progress(done / len(classes), text=f"Drawing samples: class {done + 1} of {len(classes)}…")
                rows.append(sample_row(loaded, sample_key(loaded), label, per_class, DEFAULT_TEMPERATURE, 0))
            progress.empty()
            st.image(ui.to_display(np.concatenate(rows, axis=1), scale=2),  # captions are Markdown: names escaped
                     caption="one row per class: " + ", ".join(ui.markdown_literal(names[label]) for label in classes),
                     alt=f"{per_class} samples drawn by the model for each of the classes "
                         + ", ".join(names[label] for label in classes))
    else:
        public = public_training_data(loaded.model)
        priors = ("the frequencies its config.json gives (for a model CADP trained: those of the whole public table "
                  "it was fitted on)" if public and getattr(loaded.model, "config_states_training", False) else
                  "their frequencies in the whole public table the model was fitted on (training and held-out rows)"
                  if public else "their frequencies in the model's own table (training and held-out rows)")
        st.subheader("Sampled rows (temperature 1)")
        st.caption(f"Conditions drawn from {priors}."
                   + ("" if public else " The model was trained without DP: its samples can "
                      "reproduce details of its training rows."))
        st.dataframe(sample_rows(loaded, sample_key(loaded), 20, 0), hide_index=True)
    st.subheader("Limitations (this app's)")  # always: a card's own words may say otherwise
    stated_by = getattr(loaded.model, "stated_by", None)
    if public_training_data(loaded.model) and getattr(loaded.model, "config_states_training", False):
        training = (f"on public data ({config.dataset}) as its config.json states, which this app checks only for "
                    "the models bundled with it")
    elif public_training_data(loaded.model):
        training = "on public data"
    elif stated_by and config.dataset in PUBLIC_DATASETS:
        training = f"on public data ({config.dataset}) as {literal(stated_by)} states, which this app cannot check"
    else:
        training = f"on '{literal(config.dataset)}', not a public dataset this app knows (check its card and license)"
    st.markdown(f"- Trained **without** differential privacy {training}: CADP's guarantees protect the "
                "record being privatized, not this training set.\n"
                "- Every guarantee is **local** (per record); kept attributes are public.\n"
                "- The `paper` mechanism is a reference reproduction with no formal guarantee.")
    st.subheader("Model card" + (f" (written by {literal(stated_by)})" if stated_by else ""))
    card = re.sub(r"\A---\n.*?\n---\n", "", loaded.card[:MAX_CARD_CHARACTERS], flags=re.S)
    for section, block in STALE_CARD_BLOCKS.items():  # cadp.evaluate's blocks of a section of other weights
        if section in other_weights:
            card = re.sub(rf"^<!-- cadp:{block} -->\n.*?^<!-- /cadp:{block} -->\n",
                          f"*(cadp.evaluate's {section} results are left out here: they were measured on other "
                          "weights.)*\n", card, flags=re.M | re.S)
    card = re.sub(r"^<!-- /?cadp:[a-z]+ -->\n", "", card, flags=re.M)  # block markers for cadp.evaluate
    # an image from another host would be fetched by every visitor's browser (their address to its owner)
    card = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"[image not shown: \1]", card)
    card = card.replace("![", "!\\[")  # any other image (by reference, brackets in its text): its text as written
    if card.strip():
        st.markdown(card)
        if len(loaded.card) > MAX_CARD_CHARACTERS:
            st.caption(f"The card is cut after {MAX_CARD_CHARACTERS:,} of its {len(loaded.card):,} characters.")
    else:
        st.info("This model folder has no README.md card.")
    with st.expander("config.json"):
        st.json(asdict(config))
    if evaluation:
        with st.expander("eval.json"):
            st.json(evaluation)


ui.run_page("Model card", page)
