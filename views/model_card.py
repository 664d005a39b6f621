"""Model card: the folder's README.md, its config, bits/dim, class-conditional samples, limitations."""

import re
from dataclasses import asdict

import numpy as np
import streamlit as st
import torch

from cadp import ui
from cadp.curves import literal
from cadp.data import PUBLIC_DATASETS
from cadp.mechanisms import DEFAULT_TEMPERATURE
from cadp.models import ClassIndices
from cadp.privatize import public_training_data

MAX_CARD_CHARACTERS = 200_000  # a Hub card can be any size: the browser gets at most this much of it


@st.cache_resource(show_spinner="Drawing samples…", max_entries=8)
def sample_grid(_loaded, source: tuple, per_class: int, temperature: float, seed: int) -> np.ndarray:
    """(classes * H, per_class * W) grid of class-conditional samples, one row per class, of the model loaded
    from ``source`` (the cache's key: its folder and the folder's files as loaded, so a folder trained again is
    drawn again; the model is the page's own: loading it again by its folder took a second place in the model
    cache)."""
    loaded = _loaded
    classes = loaded.config.num_classes
    labels = torch.arange(classes).repeat_interleave(per_class)
    with torch.inference_mode():
        samples = loaded.model.sample(ClassIndices(labels), temperature, torch.Generator().manual_seed(seed))
    images = samples.round().to(torch.uint8)[:, 0].numpy()
    size = images.shape[-1]
    return images.reshape(classes, per_class, size, size).transpose(0, 2, 1, 3).reshape(classes * size, -1)


@st.cache_data(show_spinner="Drawing samples…", max_entries=8)
def sample_rows(_loaded, source: tuple, count: int, seed: int):
    """Rows sampled from a table model (conditions from the frequencies it stored, temperature 1)."""
    return _loaded.model.sample_frame(count, 1.0, torch.Generator().manual_seed(seed))


def sample_key(loaded) -> tuple:
    """The samples' cache key: the model's folder and its files' sizes and times when the model was loaded
    (ui.folder_stamp; stamped again here the files could have changed since: the old network's samples would be
    kept under the new files' stamp)."""
    return str(loaded.folder), loaded.stamp


def bits_per_dim(evaluation: dict) -> str | None:
    bpd = evaluation.get("bpd")
    if isinstance(bpd, dict):
        for key in ("test_bits_per_dim", "test", "bits_per_dim", "mean"):
            if isinstance(bpd.get(key), (int, float)):
                return f"{bpd[key]:.3f}"
    if isinstance(bpd, (int, float)):
        return f"{bpd:.3f}"
    training = evaluation.get("training", {})
    if "bits/dim" in str(training.get("test_metric_name", "")) and isinstance(training.get("test_metric"), float):
        return f"{training['test_metric']:.3f} (from training)"
    return None


def page(loaded) -> None:
    config = loaded.config
    st.caption(f"From: {loaded.origin}")
    evaluation = loaded.evaluation
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
        training = evaluation["training"]
        columns[2].metric(str(training.get("test_metric_name") or "test NLL (nats/dim)"),
                          f"{training.get('test_metric', float('nan')):.3f}",
                          help="Negative log-likelihood per encoded dimension on held-out rows: lower is better.")
    if config.kind == "image":
        st.subheader(f"Class-conditional samples (temperature {DEFAULT_TEMPERATURE})")
        per_class = st.slider("Samples per class", 2, 10, 6, key=ui.kept("card_per_class"))
        grid = sample_grid(loaded, sample_key(loaded), per_class, DEFAULT_TEMPERATURE, 0)
        st.image(np.kron(grid, np.ones((2, 2), dtype=np.uint8)),
                 caption="one row per class: " + ", ".join(config.class_names))
    else:
        public = public_training_data(loaded.model)
        priors = ("their frequencies in the whole public table the model was fitted on (training and held-out rows)"
                  if public else "their frequencies in the model's own table (training and held-out rows)")
        st.subheader("Sampled rows (temperature 1)")
        st.caption(f"Conditions drawn from {priors}."
                   + ("" if public else " The model was trained without DP: its samples can "
                      "reproduce details of its training rows."))
        st.dataframe(sample_rows(loaded, sample_key(loaded), 20, 0), hide_index=True)
    st.subheader("Limitations (this app's)")  # always: a card's own words may say otherwise
    stated_by = getattr(loaded.model, "stated_by", None)
    if public_training_data(loaded.model):
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
    card = re.sub(r"^<!-- /?cadp:[a-z]+ -->\n", "", card, flags=re.M)  # block markers for cadp.evaluate
    # an image from another host would be fetched by every visitor's browser (their address to its owner)
    card = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"[image not shown: \1]", card)
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
