"""Streamlit helpers shared by the app's pages: model picker, privacy ledger, controls, errors.

The only cadp module that imports streamlit. Uploaded bytes stay in memory: they
are hashed for the ledger, never written to disk or logged.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import math
import os
import re
import threading
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch
from streamlit.errors import StreamlitAPIException

from cadp import hub
from cadp.compare import counted
from cadp.curves import finite_numbers, literal, mean_of, released_words, strongest_reidentification
from cadp.data import IMAGE_DATASETS
from cadp.errors import CadpError, InputError, ModelError
from cadp.mechanisms import (
    DEFAULT_TEMPERATURE,
    MECHANISMS,
    PAPER_LABEL,
    Mechanism,
    batch_sizes,
    exact,
    make_mechanism,
    paper_batches_text,
    readable,
    written_up,
)
from cadp.models import DISTANCES_OF_OTHER_WEIGHTS, warm_up
from cadp.pages import TITLES
from cadp.privatize import UPLOAD_DATASET, repeated_cost_note
from cadp.uploads import (  # record keys: the CLI's too, one way to recognize a record
    MAX_ZIP_FILES,
    image_record_key,
    record_key,
)

WEIGHTS_ENV = "CADP_WEIGHTS_DIR"
IMAGE_WIDTH = 140  # display width of a 28x28 image, in CSS pixels
HUB_CHOICE = "Hub repository…"
# log-spaced 1-2-5 values from 0.1 to 10,000 (PRIVACY.md: the slider reaches 10,000 on a log scale)
EPSILON_VALUES = [round(m * 10.0 ** e, 1) if e < 0 else int(m * 10 ** e)
                  for e in range(-1, 5) for m in (1, 2, 5) if m * 10.0 ** e <= 10_000]
MECHANISM_LABELS = {
    "laplace": "laplace — pure ε-LDP",
    "gaussian": "gaussian — (ε, δ)-LDP",
    "metric": "metric — ε·d privacy",
    "paper": f"paper — {PAPER_LABEL}",
}
GUARANTEES_IN_PLAIN_WORDS = {
    "laplace": "**laplace** — pure ε-local differential privacy: the latent is clipped to an L1 ball per record "
               "and Laplace noise calibrated to its diameter is added.",
    "gaussian": "**gaussian** — (ε, δ)-local differential privacy: L2 clip per record, Gaussian noise from the "
                "analytic calibration (Balle & Wang 2018), valid for every ε > 0 up to 1e9, the largest the library takes.",
    "metric": "**metric** — ε·d privacy: no clipping; the slider sets ε per unit of latent L1 distance, so "
              "protection between two records depends on how far apart their latents are.",
    "paper": f"**paper** — {PAPER_LABEL}: the original CADP code (batch-level clipping, sensitivity "
             "understated by 2x), shown for comparison only. Its clip bounds each coordinate, not a latent's L1 "
             "norm: between two records released alone the privacy loss can reach 2·D·ε (D latent dimensions: "
             "1,568·ε for a 28x28 image), not ε.",
}
def common_plain_words(own_data: list[str] | tuple[str, ...] = (), bundled: bool = True,
                       public_others: list[str] | tuple[str, ...] = ()) -> str:
    """The guarantees' common terms, in plain words, for the models offered: ``bundled``, whether any of them is
    a bundled model; ``own_data``, the names of those of data that is not this app's; ``public_others``, the names
    of other networks trained on the public data the bundled ones were (not the bundled models)."""
    def were(names) -> str:
        return f"{', '.join(literal(name) for name in names)} {'was' if len(names) == 1 else 'were'}"

    trained = (["The bundled models were trained without DP on public data"] if bundled else []) + (
        [f"{', '.join(literal(name) for name in public_others)} "
         + ("says in its config.json that it was" if len(public_others) == 1 else
            "say in their config.json that they were")
         + " trained without DP on public data too, which this app checks only for the bundled models"]
        if public_others else []) + (
        [f"{were(own_data)} trained on data this app does not bundle (by `python -m cadp.train`, without DP)"]
        if own_data else [])
    return (
        "laplace and gaussian give **local** differential privacy and metric gives local ε·d privacy: each applies "
        "per record, with no trusted curator, and none is central DP; paper gives no formal guarantee. "
        + "; ".join(trained or ["The models were trained without DP"]) + ": the guarantee protects the record you "
        "privatize, not the training set, and for a record of that training data it does not cover what the model "
        "learned from the record. Kept attributes are released exactly; they are public, and the guarantee holds "
        "given them."
    )


COMMON_PLAIN_WORDS = common_plain_words()


def measured_like_bundled(config, folder) -> bool:
    """Whether the image figures the app quotes (measured with the bundled 28x28 grayscale models of public data)
    are this image model's: it is one of them (its weights, byte for byte, in ``folder``: a copy or a Hub repo of
    one counts), not only of their kind (another network trained on MNIST may differ)."""
    return (config.dataset in IMAGE_DATASETS and getattr(config, "image_size", None) == 28
            and getattr(config, "channels", None) == 1 and hub.bundled_twin(folder) is not None)


def large_epsilon_note(label_kept: bool = True, bundled_only: bool = False) -> str:
    """What large ε means for an image; the last sentence follows how the label is released. ``bundled_only``: the
    model in question (or some model offered) is not of the bundled models' kind, so the note names whose figures
    they are."""
    label = ("The kept label survives at every ε." if label_kept
             else "The label is not kept here: it is randomized or resampled as chosen above.")
    opening = ("What large ε means with the bundled 28x28 image models (their latents have 784 dimensions)."
               if bundled_only else "What large ε means here: a 28x28 image's latent has 784 dimensions.")
    return (f"{opening} In short: up to ε ≈ 100 a release looks like a new image of the "
            f"{'kept' if label_kept else 'released'} class, yet someone holding the model can trace some releases "
            "back to their record, more often the larger ε; ε = 100 is almost no formal protection. In detail: "
            f"with constant temperature 0.7, "
            f"releases at ε up to ~100 still look to the eye like fresh samples of the "
            f"{'kept' if label_kept else 'released'} class, and the record's own details (a logo, a pattern) "
            "become visible only at very large ε (about 1,000 and more, as the model cards say). Looking like a fresh sample is not being one: with the bundled "
            "image models, an attacker who holds the model and sees each release's noisy latent (more than the "
            "released image shows) traces releases to their record above chance (2 % "
            "within a label) from about ε = 2 with gaussian (3.3–4.5 % at ε = 2 and 3, 7–8 % at 6, 12–14 % at 10) "
            "and from ε = 6 with laplace (3.1–3.6 % at 6, 4.7–4.9 % at 10; below ε = 6 within noise of chance (under 3 standard errors) "
            "but for one point, 3.4 % at ε = 0.5 on MNIST, within one standard error (about 0.5 points) of the most "
            "that ε = 0.5 allows among 50 records: 3.3 %), and "
            "traces most of them at ε = 100 (laplace 60–81 %, gaussian over 99 %). Formally, ε = 100 allows one record's releases to be up to e^100 times likelier than "
            "another's, i.e. almost no protection. " + label)


LARGE_EPSILON_NOTE = large_epsilon_note()


# --------------------------------------------------------------------------- errors

@contextmanager
def page_errors(releases: bool = False):
    """Show any failure of a page body as a plain st.error; the session keeps working. ``releases``: the page
    releases records, so a failure after a release (made and charged) must not invite a second press unwarned."""
    before = _releases_counted()
    try:
        yield
    except CadpError as error:
        st.error(str(error))
    except Exception as error:  # noqa: BLE001 - a page must never show a traceback
        _log_failure(error)
        released = releases and _releases_counted() != before  # in this run, before the error
        st.error(f"Something went wrong ({type(error).__name__}). Try other inputs, where the page has them, or "
                 "reload the page; your session and its privacy ledger are kept."
                 + (" Records were released before the error, and they are counted in the ledger (see the "
                    "sidebar): pressing Privatize again releases them again, at their cost again." if released else ""))


RELEASES_COUNTED = "privacy_ledger_releases"  # releases charged this session, counted up by _count_releases


def _count_releases(releases: int) -> None:
    """Count releases charged to the ledger (``charge``, ``charge_rows``; never ``cost_text``'s sums, which a page
    makes on every run: counted, they made a later error say records had been released)."""
    st.session_state[RELEASES_COUNTED] = _releases_counted() + releases


def _releases_counted() -> int:
    """Releases charged this session so far (a counter: every page run reads it, and a ledger may hold the rows of
    large tables)."""
    return st.session_state.get(RELEASES_COUNTED, 0)


APP_LOG = logging.getLogger("cadp.app")


def _log_failure(error: BaseException) -> None:
    """Where an unexpected error happened, for whoever runs the app (the visitor sees a plain message): the error's
    kind and its traceback's frames (files, lines, code), never its words or values, which may quote an upload."""
    frames = "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
    APP_LOG.error("unexpected %s on a page (its message is not logged: it may hold uploaded data); traceback, most "
                  "recent call last:\n%s", type(error).__name__, frames)


def require(name: str, module: str):
    """An attribute of a cadp module that may not exist yet; InputError in plain words if missing."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise CadpError(f"This feature needs {module}.{name}, which is not available in this installation.") from None


# --------------------------------------------------------------------------- models

def evaluate_command(loaded, what: str) -> str:
    """The ``cadp.evaluate`` command that measures ``what`` for this model: its folder, and ``--data`` for a model
    of data that is not bundled (the command needs it; ``audit`` does not, it audits worst-case latents)."""
    from cadp.data import PUBLIC_DATASETS

    data = "" if loaded.config.dataset in PUBLIC_DATASETS or what == "audit" else " --data THE-DATA-IT-WAS-TRAINED-ON"
    if loaded.repo_id is not None:  # a Hub snapshot: results written there would pass for the repo's (and the
        # server's cache path is no visitor's business): the repo's files at that commit, downloaded to a folder
        repo = loaded.repo_id
        local = repo.replace("/", "--")
        # the model's own files only: a second command's download would put the repo's eval.json and card back
        # over the results the first one wrote (hf download replaces files changed locally)
        return (f"hf download {repo} --revision {loaded.commit} --include config.json --include model.safetensors "
                f"--include classifier.safetensors --local-dir {local} && "
                f"python -m cadp.evaluate {what} --model {local}{data}")
    folder = loaded.folder
    try:
        folder = folder.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return f"python -m cadp.evaluate {what} --model {folder.as_posix()}{data}"


def other_weights_warning(loaded, sections: list[str]) -> str:
    """One sentence for every section of ``sections`` (eval.json's, measured on other weights than the model's):
    ``hub.other_weights_words`` naming the model's own command for the first and, likewise, the others'."""
    commands = list(dict.fromkeys(command for section, command in hub.EVALUATE_COMMANDS.items()
                                  if section in sections))
    also = f" (and likewise `{'`, `'.join(commands[1:])}`)" if len(commands) > 1 else ""
    return hub.other_weights_words(sections, evaluate_command(loaded, commands[0] if commands else "bpd"), also)


def weights_dir() -> Path:
    """Folder of the bundled models: $CADP_WEIGHTS_DIR, else the repository's weights/."""
    return Path(os.environ.get(WEIGHTS_ENV) or hub.BUNDLED_DIR)


def bundled_models(kind: str | None = None) -> list[str]:
    return hub.model_folders(weights_dir(), kind)


MODELS_IN_MEMORY = 8  # load_model's cache of bundled and local models, for all sessions
# load_model's cache of Hub models, apart: the Hub ids anyone types never push the bundled models out (a reload and a
# warm-up for every visitor), and at most this many networks of anyone's size are held at once
HUB_MODELS_IN_MEMORY = 4
# a bundled image model has 1.6M parameters; a Hub one may have 100M: the Model card page draws the samples of a
# network above this only when asked (minutes of the CPU that every visitor of a hosted app shares)
SAMPLES_ON_REQUEST_PARAMETERS = 20_000_000
APP_HUB_CACHE_ENV = "CADP_APP_HUB_CACHE"
# the app's Hub downloads on disk; the folders of the last 2 * HUB_MODELS_IN_MEMORY Hub models used stay, whatever
# their size (each at most hub.max_weights_bytes and a few small files)
APP_HUB_CACHE_BYTES = 2 * 2**30
HUB_FOLDERS_IN_USE: collections.OrderedDict = collections.OrderedDict()  # Hub snapshot folder: None, last used last
_HUB_LOCK = threading.Lock()  # one pruning of the app's Hub cache at a time
HUB_DOWNLOADS_AT_ONCE = 2  # Hub downloads under way at once (one visitor's large repo no longer holds up all others)
_HUB_SLOTS = threading.BoundedSemaphore(HUB_DOWNLOADS_AT_ONCE)
_REPO_LOCKS: dict[str, list] = {}  # repo id (lower case) -> [its lock, sessions using it]: one download of a repo
_DOWNLOADING: Counter = Counter()  # repo ids (lower case) downloading now: a pruning leaves their revisions
_IN_USE_LOCK = threading.Lock()  # HUB_FOLDERS_IN_USE, changed by every session's page runs


def app_hub_cache() -> Path:
    """Where the app downloads Hub models: a cache of its own ($CADP_APP_HUB_CACHE, else HF_HOME/cadp-app-hub),
    pruned to APP_HUB_CACHE_BYTES, so that the app never deletes what other programs keep in the Hugging Face cache."""
    if os.environ.get(APP_HUB_CACHE_ENV):
        return Path(os.environ[APP_HUB_CACHE_ENV])
    hub.check_endpoint_setting()  # (before huggingface_hub is imported: a bad $HF_ENDPOINT raised ValueError there)
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "cadp-app-hub"


def load_model(source: str, hub_only: bool = False) -> hub.LoadedModel:
    """A model from a local folder, a bundled name, or a Hub id ``owner/name@rev`` (with ``hub_only``, a Hub id
    only: ``hub.load_hub_model``, into ``app_hub_cache``), cached for all sessions.

    Its inference passes are made, and the result views' libraries imported (``compare.preload``), in a
    background thread while the page renders, not on the first Privatize (which waits for a pass still
    being traced or a module still being imported). Every use of a Hub model is noted, so that pruning the
    app's Hub cache after a new download keeps the folders of the models the cache may still hold.
    """
    if hub_only:
        source = _hub_key(source)  # one repo written two ways is one model in memory
        generation = _HUB_GENERATIONS.get(source, 0)
        loaded = _load_hub_model(source, generation)
    else:
        loaded = _load_model(source, folder_stamp(source))
    # one session asks the Hub again, into a new entry of the cache; the others are served the entry they have
    # until that one is made (they never wait for the Hub)
    if hub_only and _outdated(loaded, source) and _RELOAD_LOCK.acquire(blocking=False):
        try:
            if _HUB_GENERATIONS.get(source, 0) == generation:
                loaded = _load_hub_model(source, generation + 1)
                with _IN_USE_LOCK:
                    _HUB_GENERATIONS[source] = generation + 1
                    _HUB_GENERATIONS.move_to_end(source)
                    while len(_HUB_GENERATIONS) > 4 * MODELS_IN_MEMORY:
                        _HUB_GENERATIONS.popitem(last=False)
            else:  # renewed meanwhile by another session
                loaded = _load_hub_model(source, _HUB_GENERATIONS.get(source, 0))
        finally:
            _RELOAD_LOCK.release()
    if hub_only:
        with _IN_USE_LOCK:
            HUB_FOLDERS_IN_USE.pop(loaded.folder, None)
            HUB_FOLDERS_IN_USE[loaded.folder] = None
            while len(HUB_FOLDERS_IN_USE) > 2 * HUB_MODELS_IN_MEMORY:  # (twice the Hub cache's size: a margin)
                HUB_FOLDERS_IN_USE.popitem(last=False)
    return loaded


def folder_stamp(source: str) -> tuple:
    """Size and modification time of a local model folder's loaded files: part of the cache's key, so that a folder
    trained again (``--resume``, ``--overwrite``) while the app runs is loaded anew, not served with the old network
    beside its new card and eval.json (which are read at each run)."""
    path = Path(source).expanduser()
    folder = path if path.is_dir() else hub.BUNDLED_DIR / source
    # (a file missing is None: loading says why, or goes on without a classifier)
    return tuple((name, hub.file_stamp(folder / name)) for name in (hub.CONFIG_NAME, hub.WEIGHTS_NAME,
                                                                     hub.CLASSIFIER_NAME))


@st.cache_resource(show_spinner="Loading the model…", max_entries=HUB_MODELS_IN_MEMORY)
def _load_hub_model(source: str, generation: int = 0) -> hub.LoadedModel:
    """A Hub model; ``generation``: its load, counted up when it is asked of the Hub again (``load_model``)."""
    return _loaded(source, True, None)


_HUB_GENERATIONS: collections.OrderedDict = collections.OrderedDict()  # Hub key -> its latest load's generation


@st.cache_resource(show_spinner="Loading the model…", max_entries=MODELS_IN_MEMORY)
def _load_model(source: str, stamp: tuple | None = None) -> hub.LoadedModel:
    """A bundled or local model (``stamp``: its folder's files as they are, ``folder_stamp``)."""
    return _loaded(source, False, stamp)


def clear_loaded_models() -> None:
    """Empty both model caches (the app's own models and Hub models)."""
    _load_model.clear()
    _load_hub_model.clear()


def _loaded(source: str, hub_only: bool, stamp: tuple | None) -> hub.LoadedModel:
    if hub_only:
        repo = hub.parse_hub_source(source)[0].lower()  # (an id that is none is refused here, before any wait)
        with _IN_USE_LOCK:
            entry = _REPO_LOCKS.setdefault(repo, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0], _HUB_SLOTS:  # one download per repo; a few repos at once
                loaded = None
                with _IN_USE_LOCK:
                    _DOWNLOADING[repo] += 1
                try:
                    # no token: the server's own (HF_TOKEN, a saved login) would open its owner's private and gated
                    # repos to every visitor of a hosted Space
                    loaded = hub.load_hub_model(source, cache_dir=app_hub_cache(), token=False)
                finally:  # also after a refused repo: its files were downloaded before its config was read
                    with _IN_USE_LOCK:
                        _DOWNLOADING[repo] -= 1
                        if _DOWNLOADING[repo] <= 0:
                            del _DOWNLOADING[repo]
                        in_use = set(HUB_FOLDERS_IN_USE) | ({loaded.folder} if loaded is not None else set())
                        downloading = set(_DOWNLOADING)
                    try:
                        with _HUB_LOCK:
                            hub.prune_hub_cache(app_hub_cache(), APP_HUB_CACHE_BYTES, in_use, downloading)
                    except Exception:  # noqa: BLE001 - a pruning that fails leaves more on disk, never fails a load
                        pass
        finally:
            with _IN_USE_LOCK:
                entry[1] -= 1
                if entry[1] == 0:
                    _REPO_LOCKS.pop(repo, None)
    else:
        loaded = hub.load_model(source)
    loaded.stamp = stamp  # what the model was loaded from: the key of what the pages cache of it (its samples)
    loaded.loaded_at = _clock()
    thread = threading.Thread(target=_warm_up_quietly, args=(loaded.model,), name="cadp-warm-up", daemon=True)
    WARM_UPS[:] = [*(t for t in WARM_UPS if t.is_alive()), thread]  # finished ones need no join at exit
    thread.start()
    return loaded


HUB_RETRY_SECONDS = 60  # a Hub model loaded while the Hub could not be asked (a fallback, a cached copy): asked again
HUB_RECHECK_SECONDS = 15 * 60  # a Hub branch or tag: asked again for its newest commit (a commit hash: never)
_clock = time.monotonic
_RELOAD_LOCK = threading.Lock()


def _outdated(loaded: hub.LoadedModel, source: str) -> bool:
    """Whether the cached Hub model ``loaded`` (for all sessions) should be asked of the Hub again: kept for good,
    a fallback chosen while the Hub was down would be served for as long as the app runs, and a branch's first
    commit after the branch moved on. A commit's files never change: a model of one loaded from the Hub is never
    asked again, one loaded while the Hub could not be asked only every HUB_RECHECK_SECONDS."""
    age = _clock() - (loaded.loaded_at if loaded.loaded_at is not None else _clock())
    commit = hub._COMMIT.fullmatch(source.partition("@")[2]) is not None
    if loaded.origin.startswith("bundled fallback") or "(cached copy;" in loaded.origin:
        # (a commit's files cannot change: only where it came from can, so it is asked less often)
        return age >= (HUB_RECHECK_SECONDS if commit else HUB_RETRY_SECONDS)
    return not commit and age >= HUB_RECHECK_SECONDS


def _hub_key(source: str) -> str:
    """A Hub id as the app's model cache keys it: ``owner/name@main`` is ``owner/name`` (the Hub's default branch),
    except for a bundled repo, whose bare id loads its pinned revision. An id that is none is left as typed (loading
    it says why)."""
    try:
        repo_id, revision = hub.parse_hub_source(source.strip())
    except CadpError:
        return source
    if revision == "main" and repo_id not in hub.BUNDLED_REPOS:
        revision = None
    return repo_id if revision is None else f"{repo_id}@{revision}"


WARM_UPS: list[threading.Thread] = []


@atexit.register
def _finish_warm_ups() -> None:
    """A process that exits while a warm-up is inside torch aborts ("terminate called without an active
    exception", exit code 134): let them end first (a second or two each)."""
    for thread in WARM_UPS:
        thread.join(timeout=60)


def _warm_up_quietly(model) -> None:
    from cadp import compare

    try:
        warm_up(model)
        compare.preload()  # the result views' scores: their libraries load here, not on the first release
    except Exception:  # noqa: BLE001 - only a head start: the first Privatize makes whatever is missing
        pass


def device_in_use() -> str:
    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(0)})"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' * (threads != 1)})"


def sidebar(kind: str | None = None, key: str = "model", main=None) -> tuple[hub.LoadedModel | None, str | None]:
    """Model picker, device and privacy ledger: (the chosen model or None, why it could not be loaded or None).

    ``main``: a placeholder on the page for the loading spinner (on a narrow screen the sidebar is folded away, and
    a spinner there would leave an empty page while a model loads)."""
    loaded = problem = None
    loading = main if main is not None else contextlib.nullcontext()
    with st.sidebar:
        st.subheader("Model")
        names = bundled_models(kind)
        options = names + [HUB_CHOICE]
        # the choice outlives a page change (Streamlit drops a widget's state with its page): per kind of page,
        # else the last model chosen anywhere, when this page lists it
        remembered = st.session_state.setdefault("chosen_models", {})
        preferred = [remembered.get(kind), remembered.get(None)]
        index = next((options.index(name) for name in preferred if name in options), 0)
        choice = st.selectbox("Model", options, index=index, key=f"{key}_choice",
                              help="Bundled models, or a Hugging Face Hub repository id.")
        remembered[kind] = remembered[None] = choice
        try:
            if choice == HUB_CHOICE:
                repo = st.text_input("Hub repository id (owner/name, optionally @revision)",
                                     value=remembered.get("hub", ""), key=f"{key}_hub",
                                     placeholder="owner/name@main").strip()
                remembered["hub"] = repo
                if repo:
                    try:
                        with loading:
                            loaded = load_model(repo, hub_only=True)  # never the server's disk, whatever the id says
                    except ModelError as error:
                        if not (repo.startswith(("/", ".", "~")) or "\\" in repo or repo.split("@")[0].count("/") > 1):
                            raise
                        # the folder by its role, not its path: a hosted app's visitors need not see the server's
                        where = ("the app's weights/ folder" if weights_dir().resolve() == hub.BUNDLED_DIR.resolve()
                                 else f"the folder {WEIGHTS_ENV} names")
                        raise ModelError(f"{error}. Local folders are not loaded from this box (Hub ids only): to use "
                                         f"a model folder in the app, put it in {where} (or start the app with "
                                         f"{WEIGHTS_ENV} set to the folder that holds it) and choose it above"
                                         ) from None
                else:
                    st.info("Type a Hub repository id to load a model from the Hub.")
            else:
                # a bundled name lets cadp.hub say "bundled weights/<name>" as the origin
                bundled = weights_dir().resolve() == hub.BUNDLED_DIR.resolve()
                with loading:
                    loaded = load_model(choice if bundled else str(weights_dir() / choice))
            if loaded is not None and kind is not None and loaded.config.kind != kind:
                problem = (f"This page needs {'an' if kind == 'image' else 'a'} {kind} model; "
                           f"{literal(loaded.config.name)} "
                           f"is {'an' if loaded.config.kind == 'image' else 'a'} {loaded.config.kind} model.")
                loaded = None
        except CadpError as error:
            problem, loaded = str(error), None
        except Exception as error:  # noqa: BLE001
            problem, loaded = f"The model could not be loaded ({type(error).__name__}).", None
        if problem is not None:
            st.error(problem)
        if loaded is not None:
            st.caption(f"From: {loaded.origin}")
        if not names:
            st.caption(f"No bundled {kind or ''} models found in {weights_dir()}.")
        st.caption(f"Device: {device_in_use()}")
    return loaded, problem


def model_line(loaded, fitted=None) -> str:
    """The page's own line naming the model its releases are made with (on a narrow screen the sidebar, with the
    picker, is folded away): the sidebar's ``loaded``, or ``fitted``, a model fitted on the page's upload instead."""
    if fitted is None:
        return (f"Model: **{literal(loaded.config.name)}** (data: {literal(str(loaded.config.dataset))}); choose "
                "another in the sidebar.")
    conditions = ", ".join(markdown_literal(str(c)) for c in fitted.config.condition_columns) or "none"
    record = getattr(fitted, "fit_record", {})
    steps, ran = record.get("steps"), record.get("steps_run")
    if isinstance(steps, int) and isinstance(ran, int) and ran != steps:  # the best validated step's weights
        made = f"the weights of step {steps:,} of {ran:,} training step{'s' * (ran != 1)}, "
    else:
        made = f"{steps:,} training step{'s' * (steps != 1)}, " if isinstance(steps, int) else ""
    made += f"conditions: {conditions}"
    instead = "" if loaded is None else f", not **{literal(loaded.config.name)}** (the model chosen in the sidebar)"
    return f"Model: fitted on this table ({made}){instead}; releases on this page are made with it."


WHERE_TO_START = tuple(  # the home page's list: (a page's file as app.py names it, its title there, what it is for)
    (path, TITLES[path], words) for path, words in (
        ("views/image.py", "Upload an image (or take a test image), confirm its label, pick a mechanism and ε, and "
         "compare the release with the original."),
        ("views/tabular.py", "Privatize a bundled table or your CSV and check what survives."),
        ("views/utility.py", "What each ε costs, measured."),
        ("views/audit.py", "A check of the code, a lower bound on the privacy each ε loses (no proof of the claim)."),
        ("views/model_card.py", "How each model was trained and what it cannot do."),
    ))


def page_link(path: str, label: str, words: str) -> None:
    """A link to another page of the app (``path`` as app.py names its file), what it is for beside it; the name in
    bold without a link where this script runs outside the app's navigation (a page file run by itself)."""
    columns = st.columns([1, 3], vertical_alignment="center")
    try:
        with columns[0]:
            st.page_link(path, label=f"**{label}**")  # (in the same session: the ledger stays)
    except StreamlitAPIException:
        columns[0].markdown(f"**{label}**")
    columns[1].markdown(words)


def run_page(title: str, body, kind: str | None = None, needs_model: bool = True, picker: bool = True,
             names_model: bool = True) -> None:
    """Title, sidebar, the page body inside page_errors, and the ledger last (so it shows this run's releases).

    ``picker=False``: a page that uses no model (home) shows no model picker. ``names_model=False``: the body names
    the model itself (``model_line``), where it may release with another than the sidebar's."""
    _restore_kept_values(title)
    st.title(title)
    loaded, problem = sidebar(kind, main=st.empty()) if picker else (None, None)
    if loaded is not None and names_model:  # on a narrow screen the sidebar is folded away: the page names it
        st.caption(model_line(loaded))
    try:
        if problem is not None:  # said in the sidebar too, folded away on phones
            st.error(problem + ("" if problem.endswith((".", "!", "?")) else ".") + " Choose another model in the "
                     "sidebar.")
        if loaded is None and needs_model:
            if problem is None:
                st.info(f"Choose {'an ' + kind if kind == 'image' else 'a ' + kind if kind else 'a'} model in the "
                        "sidebar.")
        else:
            with page_errors(releases=kind is not None):  # the image and table pages release records
                body(loaded)
    finally:
        with st.sidebar:
            render_ledger()


# --------------------------------------------------------------------------- what outlives a page change

KEPT_KEYS = "kept_widget_keys"


def kept(key: str) -> str:
    """``key``, for a widget whose value outlives a page change (Streamlit drops a widget's state with its page).

    ``run_page`` hands the remembered values back before a page draws its widgets; a value a
    widget no longer offers falls back to its default.
    """
    st.session_state.setdefault(KEPT_KEYS, set()).add(key)
    return key


KEPT_VALUES, KEPT_PAGE = "kept_widget_values", "kept_widget_page"


def _restore_kept_values(page: str) -> None:
    """Remember each kept widget's value; hand the values back on a page's first run and where a widget's state
    is gone (its page was left, or it was not drawn).

    A widget's key is set from session state only then: such a value is sent to the browser, and setting it
    on every run undid a slider's arrow presses made while the server was still busy with the first one."""
    remembered = st.session_state.setdefault(KEPT_VALUES, {})
    first_run = st.session_state.get(KEPT_PAGE) != page
    st.session_state[KEPT_PAGE] = page
    for key in st.session_state.get(KEPT_KEYS, ()):
        if key in st.session_state:
            remembered[key] = st.session_state[key]
            if first_run:  # the browser draws this page's widgets afresh: send it their values
                st.session_state[key] = remembered[key]
        elif key in remembered:
            st.session_state[key] = remembered[key]


def kept_editor(table: pd.DataFrame, key: str, column: str, rows: list | None = None, edits: str | None = None,
                **options) -> pd.DataFrame:
    """``st.data_editor`` whose edits of ``column`` outlive a page change.

    A data editor cannot be set from session state: its edits are remembered apart and, back on the
    page, handed to it as its data (the base stays the same while the page is shown, so edits made
    on it apply once).

    With ``rows`` (a stable, unique identifier per row, hashable: an image's hash, not its place) the edits are
    remembered per row in session state under ``edits``, whatever ``key``: a table drawn under another key (rows
    added or removed, other values offered in ``column``) shows each row's edit in that row, and an edit whose row
    is gone applies to no other row (it comes back with its row). ``table[column]`` holds the values offered where
    nothing was edited (suggestions); a row once edited keeps its edited value, even one equal to an offer.
    """
    store, base = f"{key}_kept_{column}", f"{key}_kept_base"
    if rows is not None:
        remembered = st.session_state.setdefault(edits, {})
        if key not in st.session_state or base not in st.session_state:  # first drawn on this visit
            st.session_state[base] = [remembered.get(row, offer) for row, offer in zip(rows, table[column])]
        edited = st.data_editor(table.assign(**{column: st.session_state[base]}), key=key, **options)
        for row, offer, value in zip(rows, table[column], edited[column]):
            if row in remembered or value != offer:
                remembered[row] = value
        return edited
    if key not in st.session_state:  # first drawn on this visit to the page
        saved = st.session_state.get(store)
        st.session_state[base] = saved if saved is not None and len(saved) == len(table) else None
    if st.session_state.get(base) is not None:
        table = table.assign(**{column: st.session_state[base]})
    edited = st.data_editor(table, key=key, **options)
    st.session_state[store] = list(edited[column])
    return edited


@dataclass(frozen=True)
class KeptFile:
    """An uploaded file held in this session's memory after its page was left (never written to disk)."""

    name: str
    data: bytes
    size: int

    def getvalue(self) -> bytes:
        return self.data


def kept_uploads(label: str, key: str, derived: tuple[str, ...] = (), **options) -> list:
    """``st.file_uploader``'s files as a list, still there after a page change (in this session's memory only).

    Back on the page the uploader is empty (Streamlit drops its state): the files uploaded before
    are used and named, with a button to forget them; removing them in the uploader forgets them too, and
    with them the session state named in ``derived`` (what the page made of them: results, fitted models,
    facts about their rows). An upload refused as too large changes nothing. The privacy ledger stays: forgetting a
    record does not undo its releases.
    """
    store = f"{key}_kept_files"

    def forget() -> None:
        for name in (store, *derived):
            st.session_state.pop(name, None)

    def remember() -> None:
        value = st.session_state.get(key)
        files = value if isinstance(value, list) else [value] if value is not None else []
        if not files:
            forget()
        elif not _too_much(files):
            st.session_state[store] = [KeptFile(f.name, f.getvalue(), f.size) for f in files]
        # a refused upload (too many files or bytes) changes nothing: the visitor removes some, as the error says,
        # and goes on with what was made of the files (labels chosen by hand), not silently without it

    value = st.file_uploader(label, key=key, on_change=remember, **options)
    files = value if isinstance(value, list) else [value] if value is not None else []
    problem = _too_much(files) if files else None
    if problem:
        raise InputError(problem)
    if files:
        if [(f.name, f.size) for f in files] != [(f.name, f.size) for f in st.session_state.get(store, [])]:
            remember()
        return files
    held = st.session_state.get(store, [])
    if held:
        names = ", ".join(f.name for f in held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        left, right = st.columns([4, 1])
        left.caption(f"Using {markdown_literal(names)}, uploaded earlier in this session (held in memory only, never on disk).")
        if right.button("Forget", key=f"{key}_forget", help="Drop the upload, and what was made of it, from "
                        "this session (its releases stay counted in the privacy ledger)"):
            forget()
            st.rerun()  # drawn again without it
    return held


MAX_UPLOAD_FILES = MAX_ZIP_FILES         # files in one upload: as many as a ZIP may hold
MAX_UPLOAD_TOTAL_BYTES = 200 * 2**20     # all files of one upload together (each is capped by maxUploadSize)


def _too_much(files: list) -> str | None:
    """Why an upload of several files is refused: each file is capped by Streamlit, their number and sum were
    not (8 files of 45 MB each were all held in the session's memory)."""
    total = sum(int(getattr(f, "size", 0) or 0) for f in files)
    if len(files) <= MAX_UPLOAD_FILES and total <= MAX_UPLOAD_TOTAL_BYTES:
        return None
    return (f"this upload holds {len(files):,} files, {total / 2**20:,.0f} MB in all; at most "
            f"{MAX_UPLOAD_FILES:,} files and {MAX_UPLOAD_TOTAL_BYTES // 2**20} MB in all are taken at once: remove "
            "some in the box above, or privatize them in parts (for an archive, use python -m cadp.privatize)")


# --------------------------------------------------------------------------- privacy ledger

@dataclass
class LedgerEntry:
    """What one record has cost this session (basic composition)."""

    name: str
    releases: int = 0
    epsilon: float = 0.0       # laplace/gaussian latent + randomized conditions
    delta: float = 0.0         # gaussian deltas add up too
    metric_units: float = 0.0  # metric: epsilon per unit of L1 latent distance, summed
    metric_condition_epsilon: float = 0.0
    informal: int = 0          # paper releases: no formal guarantee
    informal_condition_epsilon: float = 0.0  # ... whose randomized conditions still cost their ε
    also: list[str] = field(default_factory=list)  # other names the same record came under (a few)
    seeded: int = 0            # releases with noise from a fixed seed: not private
    # metric's per-unit epsilon by the model whose latent space it is in: units of two spaces do not add up
    metric_by_model: dict[str, float] = field(default_factory=dict)


def ledger() -> dict[str, LedgerEntry]:
    """This session's ledger: one entry per record, keyed by the record's content as the model sees it (an
    image's model-input pixels, a table row's values), so that the same record uploaded again, in another
    lossless file format or twice adds up (a resized or re-compressed copy is another record here)."""
    return st.session_state.setdefault("privacy_ledger", {})


LEDGER_TABLES = "privacy_ledger_tables"  # table releases: {table key: (its names, rows, each row's ledger keys,
# each row's key over all the table's columns)}


def charge(key: str, name: str, mechanism: Mechanism, condition_epsilon: float = 0.0, releases: int = 1,
           seeded: bool = False, model: str = "") -> None:
    """Record ``releases`` releases of one record with ``mechanism`` (noise from a fixed seed: ``seeded``) in this
    session's ledger; ``model``: which model's latent space a metric release's distance is measured in."""
    entry = ledger().setdefault(key, LedgerEntry(name))
    if name != entry.name and name not in entry.also and len(entry.also) < 3:
        entry.also.append(name)
    _add(entry, mechanism, condition_epsilon, releases, seeded, model)
    _count_releases(releases)


LEDGER_WHOLE_ROWS = "privacy_ledger_whole_rows"  # {a row's key over all its table's columns: its ledger keys}


def charge_rows(table_key: str, name: str, rows, mechanism: Mechanism, condition_epsilon: float = 0.0,
                seeded: bool = False, whole: list[str] | None = None, model: str = "") -> list[str]:
    """Record one release of each row of ``rows`` (the model's columns, as released) as a record of its own;
    returns each row's ledger key (the page's note on copies counts them). ``whole``: each row's key over every
    column of its table (``table_row_keys`` of the whole upload), which ties the row's keys through every model
    together.

    Rows are recognized by their values (in any column order): a row in two tables, in two encodings of one
    table, or twice in one table adds up, through one model or through models of other columns (whose keys differ:
    the ledger adds a row's keys up). The ledger shows a table by the most any of its rows has cost.
    """
    from cadp.train import row_record_keys

    if rows.empty:
        return []
    keys = row_record_keys(rows)
    for key, count in Counter(keys).items():
        _add(ledger().setdefault(key, LedgerEntry(name)), mechanism, condition_epsilon, count, seeded, model)
    _count_releases(len(keys))
    every = table_rows_keys(table_key, keys, whole)
    tables = st.session_state.setdefault(LEDGER_TABLES, {})
    names = tables[table_key][0] if table_key in tables else []
    if name not in names and len(names) < 4:  # the first name, and a few others it came under (as an image's)
        names = [*names, name]
    tables[table_key] = (names, len(rows), every, list(whole) if whole is not None and len(whole) == len(keys) else [])
    if whole is not None and len(whole) == len(keys):
        known = st.session_state.setdefault(LEDGER_WHOLE_ROWS, {})
        for row, row_keys in zip(whole, every):
            known[row] = list(dict.fromkeys(known.get(row, []) + row_keys))
    return keys


def table_rows_keys(table_key: str, keys: list[str], whole: list[str] | None = None) -> list[list[str]]:
    """Each row's ledger keys once ``keys`` (the rows' keys through the model in use) are added to those of this
    table's earlier releases and (``whole``: each row's key over all its table's columns) to those of the same rows
    released from another file: a row released through another model (other columns) has another key, and all
    count (the ledger's line for the table adds them up)."""
    earlier = st.session_state.get(LEDGER_TABLES, {}).get(table_key, ("", 0, []))[2]
    if len(earlier) != len(keys):
        earlier = [[] for _ in keys]
    known = st.session_state.get(LEDGER_WHOLE_ROWS, {}) if whole is not None and len(whole) == len(keys) else {}
    rows = []
    for index, (row, key) in enumerate(zip(earlier, keys)):
        joined = list(dict.fromkeys(row + (known.get(whole[index], []) if known else []) + [key]))
        rows.append(joined)
    return rows


def released_before_note(keys: list[str], noun: str = "record", every_key: list[list[str]] | None = None
                         ) -> str | None:
    """What a page says before a press that would release records this session's ledger lists already (``keys``:
    their ledger keys; ``every_key``: each record's keys of every release the ledger adds up for it, as
    ``table_rows_keys`` gives a table's rows), or None: each release of a record costs its ε again."""
    every_key = every_key if every_key is not None else [[key] for key in keys]
    before = {key for key, known in zip(keys, every_key) if any(k in ledger() for k in known)}
    if not before:
        return None
    one = len(before) == 1
    return (f"{counted(len(before), noun)} here {'was' if one else 'were'} released before in this session (the ledger "
            f"lists {'it' if one else 'them'}, with any release shown below): pressing the button releases "
            f"{'it' if one else 'them'} again, and each release costs its ε again (basic composition; the ledger adds "
            "them up).")


def table_row_keys(table_key: str, rows) -> list[str]:
    """The ledger's keys of ``rows`` (``charge_rows``' recognition), kept for this table and these columns across
    the page's reruns (hashes of values in the session's memory only, as the ledger's)."""
    from cadp.train import row_record_keys

    kept = st.session_state.setdefault("table_row_keys", {})
    token = (table_key, tuple(rows.columns))
    if token not in kept:
        for other in [other for other in kept if other[0] != table_key]:  # one table at a time (its column sets:
            del kept[other]  # the model's and the whole upload's)
        kept[token] = row_record_keys(rows)
    return kept[token]


FITTED_MODEL_NAME = "fitted on upload"  # the name of a model the table page fits on an upload


def latent_space(loaded=None, fit=None) -> str:
    """Which latent space a release's metric distance is in, for the ledger: a loaded model's name and origin (two
    networks may share a name: a Hub repo at two commits), or a model fitted here (``fit``: the page's key of its
    fit), numbered in this session (every fit has the same name, and each is another network)."""
    if loaded is not None:
        return f"{SPACE_OF_MODEL}{loaded.config.name} ({loaded.origin})"
    fits = st.session_state.setdefault("privacy_ledger_fits", [])
    if fit not in fits:
        fits.append(fit)
    return f"{SPACE_OF_FIT}{fits.index(fit) + 1}"


SPACE_OF_MODEL, SPACE_OF_FIT = "model:", "fit:"  # how latent_space's two kinds of keys begin


def _add(entry: LedgerEntry, mechanism: Mechanism, condition_epsilon: float, releases: int,
         seeded: bool = False, model: str = "") -> None:
    entry.releases += releases
    entry.seeded += releases * seeded
    if not mechanism.formal:
        entry.informal += releases
        entry.informal_condition_epsilon += releases * condition_epsilon
    elif mechanism.name == "metric":
        entry.metric_units += releases * mechanism.epsilon
        entry.metric_by_model[model] = entry.metric_by_model.get(model, 0.0) + releases * mechanism.epsilon
        entry.metric_condition_epsilon += releases * condition_epsilon
    else:
        entry.epsilon += releases * (mechanism.epsilon + condition_epsilon)
        entry.delta += releases * (getattr(mechanism, "delta", None) or 0.0)


def cost_text(mechanisms: list[Mechanism], condition_epsilon: float = 0.0) -> str:
    """What releasing one record once with each of ``mechanisms`` adds to its ledger entry, as the ledger says it."""
    entry = LedgerEntry("")
    for mechanism in mechanisms:
        _add(entry, mechanism, condition_epsilon, 1)
    return _entry_text(entry)


def _entry_text(entry: LedgerEntry, among: bool = False) -> str:
    """The entry's costs; ``among``: after its number of releases ("2 releases: ..."), which its paper releases are
    then said to be among."""
    parts = []
    if entry.epsilon:
        delta = "" if not entry.delta else f", δ = {written_up(entry.delta, 2)}" if entry.delta < 1 else \
            f", δ = {written_up(entry.delta, 2)} (≥ 1: no guarantee left)"  # as the CLI's manifest says it
        parts.append(f"ε = {written_up(entry.epsilon)}{delta}")
    spaces = {model: units for model, units in entry.metric_by_model.items() if units}
    if entry.metric_units and len(spaces) > 1:  # ε1·d1 + ε2·d2: no one distance to multiply a sum by
        def space(model: str) -> str:
            if model.startswith(SPACE_OF_FIT):  # ('fit:2': the second fit of this session)
                return f"the latent space of the model fitted here, fit {model[len(SPACE_OF_FIT):]}"
            named = model.removeprefix(SPACE_OF_MODEL)
            return f"the latent space of {literal(named) if named else 'a model'}"

        text = (" + ".join(f"{written_up(units)} per unit in {space(model)}" for model, units in spaces.items())
                + f" (ε·d; {len(spaces)} models' latent distances differ, so these do not add into one number)")
        if entry.metric_condition_epsilon:
            text += f" + ε = {written_up(entry.metric_condition_epsilon)} for conditions"
        parts.append(text)
    elif entry.metric_units:
        text = f"{written_up(entry.metric_units)} per unit of latent distance (ε·d)"
        if entry.metric_condition_epsilon:
            text += f" + ε = {written_up(entry.metric_condition_epsilon)} for conditions"
        parts.append(text)
    if entry.informal:
        # after "2 releases:" (or "at most 3 releases and ..."), among them: not read as more releases
        if among and (entry.informal < entry.releases or parts):
            words = f"{entry.informal} of them " + ("a paper release" if entry.informal == 1 else "paper releases")
        else:
            words = counted(entry.informal, "paper release")
        parts.append(f"{words} ({PAPER_LABEL})"
                     + (f" ({'its' if entry.informal == 1 else 'their'} randomized conditions: ε = "
                        f"{written_up(entry.informal_condition_epsilon)})" if entry.informal_condition_epsilon else ""))
    if entry.seeded:
        parts.append(f"{entry.seeded} with a fixed seed: not private")
    return "; ".join(parts or ["nothing"])


def chart(figure, key: str, **options) -> None:
    """A plotly chart and, folded below it, its values as a table (``curves.figure_values``): a screen reader
    reads none of a chart, and a teacher may want the numbers."""
    from cadp.curves import figure_values

    st.plotly_chart(figure, key=key, **options)
    values = figure_values(figure)
    if values:  # (a plain table, which a screen reader reads, unlike st.dataframe's canvas grid)
        with st.expander("The chart's values, as a table"):
            st.table(pd.DataFrame(values))


def markdown_literal(text: str) -> str:
    """``text`` shown as itself in Markdown (an upload's name: its * _ [ ] $ are not formatting; a "(" only links
    after a "]", which is escaped)."""
    return re.sub(r"([\\`*_\[\]#<>!~|$])", r"\\\1", text)


def ledger_lines() -> list[str]:
    """The ledger's lines, made again only after a release (every page's rerun shows them: a session's tables of
    100,000 rows took seconds each time)."""
    made = st.session_state.get(LEDGER_LINES)
    if made is not None and made[0] == _releases_counted():
        return made[1]
    lines = _ledger_lines()
    st.session_state[LEDGER_LINES] = (_releases_counted(), lines)
    return lines


LEDGER_LINES = "privacy_ledger_lines"  # (releases counted when they were made, the lines)


def _ledger_lines() -> list[str]:
    entries = ledger()
    literal = markdown_literal  # upload names as written: "**x** [link](...)" is a name, not Markdown
    lines = [f"**{literal(entry.name)}**" + (f" (also as {', '.join(map(literal, entry.also))})" if entry.also else "")
             + f" — {counted(entry.releases, 'release')}: {_entry_text(entry, among=True)}"
             for key, entry in entries.items() if not key.startswith("row ")]
    known = st.session_state.get(LEDGER_WHOLE_ROWS, {})
    for names, count, row_keys, *whole in st.session_state.get(LEDGER_TABLES, {}).values():
        name = names[0] + (f" (also as {', '.join(names[1:])})" if len(names) > 1 else "")
        whole = whole[0] if whole and len(whole[0]) == len(row_keys) else [None] * len(row_keys)
        # a row's cost: the sum over its keys (its releases through each model, from this file or another one
        # holding the same row), each key's entry once
        rows = [_sum([entries[key] for key in dict.fromkeys(keys + known.get(row, [])) if key in entries])
                for keys, row in zip(row_keys, whole)]
        rows = [row for row in rows if row.releases]
        if not rows:
            continue
        most = _most(rows)  # each quantity's largest value over the rows: what no row of the table exceeds
        if count == len(rows) and all(_costs(entry) == _costs(rows[0]) for entry in rows):
            lines.append(f"**each row of {literal(name)} ({counted(count, 'row')})** — {counted(most.releases, 'release')}: "
                         f"{_entry_text(most, among=True)}")
        else:
            lines.append(f"**each row of {literal(name)} ({counted(count, 'row')})** — rows differ (some also in other releases, or "
                         f"repeated in the table); at most {counted(most.releases, 'release')} and {_entry_text(most, among=True)} for "
                         "a row")
    return lines


COST_FIELDS = ("releases", "epsilon", "delta", "metric_units", "metric_condition_epsilon", "informal",
               "informal_condition_epsilon", "seeded")  # what a LedgerEntry counts (not its names)


def _costs(entry: LedgerEntry) -> tuple:
    return tuple(getattr(entry, name) for name in COST_FIELDS) + (tuple(sorted(entry.metric_by_model.items())),)


def _sum(entries: list[LedgerEntry]) -> LedgerEntry:
    total = LedgerEntry(entries[0].name if entries else "")
    for name in COST_FIELDS:
        setattr(total, name, sum(getattr(entry, name) for entry in entries))
    for entry in entries:
        for model, units in entry.metric_by_model.items():
            total.metric_by_model[model] = total.metric_by_model.get(model, 0.0) + units
    return total


def _most(entries: list[LedgerEntry]) -> LedgerEntry:
    most = LedgerEntry(entries[0].name)
    for name in COST_FIELDS:
        setattr(most, name, max(getattr(entry, name) for entry in entries))
    for entry in entries:  # (each model's largest share: what no row exceeds in that model's space)
        for model, units in entry.metric_by_model.items():
            most.metric_by_model[model] = max(most.metric_by_model.get(model, 0.0), units)
    return most


def render_ledger() -> None:
    st.subheader("Privacy ledger")
    lines = ledger_lines()
    if lines:
        for line in lines:
            st.markdown(line)
    else:
        st.caption("No record released yet in this session.")
    st.caption("Composition: releasing a record n times costs n · ε_total, with ε_total = ε_latent + Σ ε_conditions "
               "(basic composition). metric is counted per unit of latent L1 distance; paper releases carry "
               "no formal guarantee. A record is recognized by what the model sees: an image when its model input "
               "is the same pixels (or their negative), a table row when its values are the same. A record that was "
               "resized (also by this app, for a model of another image size), cropped, re-saved as JPEG or edited "
               "elsewhere counts as another, so it is not added up here: keep track of such copies yourself. The ledger lasts as long as this browser tab's session: "
               "reloading the page or opening the app again starts an empty one, and releases made before are not "
               "in it (nothing about them is kept anywhere).")


# --------------------------------------------------------------------------- privacy controls

@dataclass
class PrivacySettings:
    """The chosen mechanism and how to rebuild it at another epsilon (for the epsilon strip)."""

    mechanism: Mechanism
    name: str
    epsilon: float
    seed: int | None
    delta: float | None = None
    clip_radius: float | None = None
    temperature: float | None = None

    def at(self, epsilon: float) -> Mechanism:
        return make_mechanism(self.name, epsilon, delta=self.delta, clip_radius=self.clip_radius,
                              temperature=self.temperature)

    @property
    def noise_source(self) -> str:
        return "OS entropy" if self.seed is None else f"{self.seed} (not private: reproducible seed)"

    @property
    def summary(self) -> tuple:
        return (self.name, self.epsilon, self.seed, self.delta, self.clip_radius, self.temperature)


def stated_by(model) -> str | None:
    """Who states a model's own numbers (its eval.json, its config's latent distances) where this app did not
    measure them and cannot check them: the publisher of a Hub repo (``cadp.hub``), else None."""
    return getattr(model, "stated_by", None)


def according_to(publisher: str | None, what: str) -> str:
    """' (according to <publisher>'s <what>, which this app did not measure and cannot check)', or ''."""
    return "" if publisher is None else f" (according to {literal(publisher)}'s {what}, which this app did not " \
                                        "measure and cannot check)"


def metric_meaning(config, epsilon_unit: float, conditions_kept: bool = True, publisher: str | None = None) -> str:
    """ε·d between two typical records and between nearest neighbours; ``conditions_kept``: whether a table's
    conditions are kept (released exactly) in this release; ``publisher``: who states the distances (``stated_by``)."""
    distances = getattr(config, "latent_distances", None)
    if distances is None:
        why = (DISTANCES_OF_OTHER_WEIGHTS if getattr(config, "distances_of_other_weights", False)
               else None)
        return (f"This model's {why}, so ε·d cannot be turned into an ε between records." if why else
                "This model has no measured latent distances, so ε·d cannot be turned into an ε between records.")
    typical, nearest = epsilon_unit * distances.d_typ, epsilon_unit * distances.d_nn
    if getattr(config, "kind", "image") == "image":
        group = " of the same class"
    elif not getattr(config, "condition_columns", None):
        group = ""  # no condition: any two records
    else:  # not kept: randomized or resampled, at their own cost; the latent's bound is for equal values
        group = " with the same kept conditions" if conditions_kept else " with the same condition values"
    # the distances rounded up as the epsilons are: "(d_typ = 11.6): ε = 11.7" at 1 per unit read as a slip
    text = (f"Between two typical records{group} (L1 distance d_typ = {readable(distances.d_typ, up=True)}): "
            f"ε = {readable(typical, up=True)}. Between a record and its nearest neighbour (d_nn = "
            f"{readable(distances.d_nn, up=True)}): "
            f"ε = {readable(nearest, up=True)}. Both distances are medians measured {distances.measured_on}"
            f"{according_to(publisher, 'config.json')}.")
    if nearest > 10:
        text += " At this setting only near-duplicates are protected."
    return text


def whole_latent_epsilon(config, temperature: float) -> float | None:
    """The ε from which laplace at constant ``temperature`` leaves a typical latent of this model unclipped: its
    radius R = T·ε / (2√2) reaches the median latent L1 norm; None where the norm was not measured."""
    distances = getattr(config, "latent_distances", None)
    norm = getattr(distances, "latent_l1_norm", None)
    if not isinstance(norm, (int, float)) or not math.isfinite(norm) or norm <= 0 or not temperature:
        return None
    return 2 * math.sqrt(2) * norm / temperature


def whole_latent_words(config, temperature: float | None) -> str:
    """``whole_latent_epsilon`` in words, or "" where it is not known."""
    epsilon = whole_latent_epsilon(config, temperature) if temperature else None
    if epsilon is None:
        return ""
    return (f"For this model, laplace at temperature {temperature:g} clips a typical record's latent (L1 norm "
            f"{config.latent_distances.latent_l1_norm:.3g}) less and less as ε grows, and leaves it whole from ε ≈ "
            f"{epsilon:,.0f}.")


def epsilon_meaning(config, name: str, epsilon: float, temperature: float | None, clip_radius: float | None, *,
                    image: bool, label_kept: bool, publisher: str | None = None, folder=None) -> str:
    """What the chosen ε means for this mechanism and clip policy, in plain words, under the slider; ``folder``:
    the model's (whether it is a bundled one, whose measured figures are quoted)."""
    if name == "metric":
        return metric_meaning(config, epsilon, label_kept, publisher)
    if name == "paper":
        return ("paper scales the whole batch Z by min(1, s / ‖Z‖₁), with s = min(ε/2, 4) and ‖Z‖₁ the largest "
                "column sum of |Z|, then adds Laplace noise of scale s/ε: a release depends on the records released "
                "with it. For a single record ‖Z‖₁ is its largest |z_j|, so from ε = 8 on a latent whose largest "
                "coordinate is below 4 passes unscaled.")
    if clip_radius is not None:
        noise = ("Laplace noise of scale 2R/ε per coordinate" if name == "laplace"
                 else "Gaussian noise whose σ the analytic calibration sets from the sensitivity 2R, ε and δ")
        return (f"Fixed clip radius R = {clip_radius:g}: the latent is scaled into a ball of radius R, then gets "
                f"{noise}, so the noise grows as ε falls. A small R keeps little of the record at any ε; a large R "
                "needs a large ε for the record to show through the noise.")
    # laplace's L1 clip: gaussian clips in L2 at another radius, for which no latent norm was measured
    whole = whole_latent_words(config, temperature) if name == "laplace" else ""
    if not image:
        given = ("kept conditions" if label_kept else "conditions released with it") \
            if getattr(config, "condition_columns", None) else "table (the model has no condition)"
        # a model fitted here lives in this session only: the Utility curves page has no curves of it (it would
        # show the sidebar model's, measured on other rows)
        measured = ("this model was fitted here and not evaluated, so no attack on its releases was measured"
                    if config.dataset == UPLOAD_DATASET else
                    "the Utility curves page shows, for an evaluated model, how often an attacker who holds the "
                    "model and sees each release's noisy latent traced releases of held-out rows to their record "
                    "at each ε")
        return ("A table row has far fewer latent dimensions than an image, so useful releases come at much "
                "smaller ε than for images." + (f" {whole} Below that less of the record passes the clip, but a "
                                                 f"release need not be a fresh sample of its {given}: {measured}. "
                                                 "What bounds how often a release can be traced is ε itself (a "
                                                 "factor e^ε)." if whole else ""))
    # the figures quoted were measured with the bundled 28x28 grayscale models: another image model may differ
    bundled_kind = measured_like_bundled(config, folder)
    other = ("" if bundled_kind else
             f"This model's latent has {config.latent_dim:,} dimensions; the figures that follow were measured with "
             "the bundled 28x28 models and may differ for it (the Utility curves page shows its own rates where it "
             "was evaluated). ")
    if temperature == DEFAULT_TEMPERATURE:
        return other + large_epsilon_note(label_kept, bundled_only=not bundled_kind) + (f" {whole}" if whole else "")
    return (other + f"Constant temperature {temperature:g}: the noise stays at {temperature:g} per coordinate and "
            f"more ε lets more of the record's own latent through. At temperature {DEFAULT_TEMPERATURE:g} a record's "
            "own details become visible only at very large ε (about 1,000 and more) with the bundled 28x28 image models."
            + (f" {whole}" if whole else ""))


def privacy_controls(config, key: str, *, default_epsilon: float = 10, image: bool = True,
                     label_kept: bool = True, publisher: str | None = None, folder=None) -> PrivacySettings:
    """Mechanism, log-scale epsilon, clip-radius policy, delta and seed; returns the built mechanism. ``publisher``:
    who states the model's latent distances, where not this app (``stated_by``); ``folder``: the model's."""
    name = st.selectbox("Mechanism", list(MECHANISMS), format_func=MECHANISM_LABELS.get, key=kept(f"{key}_mechanism"))
    label = "ε per unit of latent L1 distance" if name == "metric" else "ε (epsilon)"
    epsilon = st.select_slider(label, options=EPSILON_VALUES, value=default_epsilon, key=kept(f"{key}_epsilon"),
                               help="Log scale from 0.1 to 10,000.")
    meaning = st.empty()  # filled below, once the clip policy in "Advanced" is known
    if name == "paper":
        st.warning(f"paper: {PAPER_LABEL}.")
    temperature, clip_radius, delta = DEFAULT_TEMPERATURE, None, None
    with st.expander("Advanced", key=f"{key}_advanced"):
        if name in ("laplace", "gaussian"):
            policy = st.radio("Clip-radius policy", ["constant temperature", "fixed radius"], key=kept(f"{key}_policy"),
                              horizontal=True)
            if policy == "constant temperature":
                temperature = st.number_input("Temperature T (noise standard deviation)", 0.05, 5.0,
                                              DEFAULT_TEMPERATURE, 0.05, key=kept(f"{key}_temperature"))
            else:
                temperature = None
                clip_radius = st.number_input("Clip radius R", 0.01, 100_000.0, 10.0, key=kept(f"{key}_radius"))
        if name == "gaussian":
            delta = st.select_slider("δ (delta)", options=[1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3], value=1e-5,
                                     key=kept(f"{key}_delta"), format_func=lambda v: f"{v:.0e}")
        fixed = st.checkbox("Fixed seed (not private: reproducible seed)", key=kept(f"{key}_fixed_seed"))
        seed = int(st.number_input("Seed", 0, 2**31 - 1, 0, key=kept(f"{key}_seed"))) if fixed else None
    if seed is not None:  # outside "Advanced": seen with the expander closed, and after a page change
        st.warning(f"Fixed seed {seed} (set in Advanced): not private, reproducible seed. Anyone with the seed "
                   "can remove the noise; the ledger marks these releases.")
    if name not in ("laplace", "gaussian"):
        temperature = None
    meaning.caption(epsilon_meaning(config, name, epsilon, temperature, clip_radius, image=image,
                                    label_kept=label_kept, publisher=publisher, folder=folder))
    mechanism = make_mechanism(name, epsilon, delta=delta, clip_radius=clip_radius, temperature=temperature)
    return PrivacySettings(mechanism, name, float(epsilon), seed, delta, clip_radius, temperature)


def condition_handling_controls(attribute: str, key: str):
    """kept / randomized (with its epsilon) / resampled for one attribute."""
    from cadp.mechanisms import ConditionHandling

    handling = st.radio(f"{attribute}: release as", ["kept", "randomized", "resampled"], key=kept(f"{key}_handling"),
                        horizontal=True,
                        help="kept: released exactly (public). randomized: k-ary randomized response with its own "
                             "ε. resampled: drawn from a public prior, costs 0.")
    if handling == "randomized":
        epsilon = st.select_slider(f"ε for {attribute}", options=[v for v in EPSILON_VALUES if v <= 20], value=2,
                                   key=kept(f"{key}_condition_epsilon"))
        return ConditionHandling("randomized", float(epsilon))
    return ConditionHandling(handling)


# --------------------------------------------------------------------------- evaluated utility at the chosen epsilon

def _number(value) -> float | None:
    numbers = finite_numbers([mean_of(value)])
    return numbers[0] if numbers else None


def _curves(utility, mechanism: str) -> tuple[list[float], list[float], list[float]] | None:
    """(epsilons, accuracy p/o, re-identification rate) of one mechanism in an eval.json utility section,
    or None unless all three are there as finite numbers of one length (files may come from the Hub)."""
    methods = utility.get("methods") if isinstance(utility, dict) else None
    method = methods.get(mechanism) if isinstance(methods, dict) else None
    if not isinstance(method, dict):
        return None
    epsilons = finite_numbers(method.get("epsilons", utility.get("epsilons")), positive=True)
    accuracy, reid = finite_numbers(mean_of(method.get("p/o"))), strongest_reidentification(method)
    if epsilons is None or accuracy is None or reid is None or not len(epsilons) == len(accuracy) == len(reid):
        return None
    return epsilons, accuracy, reid


LINE_LABEL_HEIGHT = 0.08  # a line label's height in the preview's y units (0 to 1.05 over about 210 px)


def preview_figure(utility: dict, mechanism: str, epsilon: float):
    """Downstream accuracy and re-identification rate against ε for one mechanism of an eval.json utility
    section, with the chosen ε marked; None when the section has no such curves."""
    import plotly.graph_objects as go

    curves = _curves(utility, mechanism)
    if curves is None:
        return None
    epsilons, accuracy, reid = curves
    figure = go.Figure([
        go.Scatter(x=epsilons, y=accuracy, name="downstream accuracy (p/o)", mode="lines+markers"),
        go.Scatter(x=epsilons, y=reid, name="re-identification rate", mode="lines+markers", line=dict(dash="dot")),
    ])
    taken: list[tuple[str, float, float]] = []  # (side, bottom, top) of the line labels placed so far

    def line(y: float, text: str, preferred: tuple[str, ...], **style) -> None:
        """A horizontal line with its label at the first of ``preferred`` positions where it covers no label placed
        before (two labels on one side less than a label's height apart printed over each other)."""
        def span(position: str) -> tuple[str, float, float]:
            side = position.split()[1]
            return (side, y, y + LINE_LABEL_HEIGHT) if position.startswith("top") else \
                (side, y - LINE_LABEL_HEIGHT, y)

        def free(position: str) -> bool:
            side, low, high = span(position)
            return all(other != side or high <= bottom or low >= top for other, bottom, top in taken)

        position = next((p for p in preferred if free(p)), preferred[0])
        taken.append(span(position))
        figure.add_hline(y=y, annotation_position=position, annotation_text=text, **style)

    reference = _number((utility.get("reference") or {}).get("o/o"))
    if reference is not None:
        line(reference, "accuracy on real in the evaluation (o/o)", ("top right", "bottom right", "top left",
                                                                      "bottom left"), line_dash="dash", line_color="black")
    given = _number(utility.get("chance_given_condition"))
    if given is not None:  # the attackers guess among the records with the released label: their baseline
        # above its line: below it, near 0, the text lay on the x axis' tick labels
        line(given, f"chance knowing the released {released_words(utility)} ({given:.1%}): the attackers' baseline",
             ("top right", "top left", "bottom right", "bottom left"), line_dash="dot", line_color="gray")
    chance = _number(utility.get("chance"))
    if chance is not None:
        line(chance, f"chance among all records, 1/N ({chance:.1%})", ("top left", "top right", "bottom left",
                                                                        "bottom right"), line_dash="dash", line_color="gray")
    majority = _number(utility.get("majority_class"))
    if majority is not None:  # (fashion-mnist: 0.124 beside a 2.0% baseline printed over it at the right)
        line(majority, f"always predicting the majority class ({majority:.3f})",
             ("bottom right", "top right", "top left", "bottom left"), line_dash="dashdot", line_color="gray")
    # a trace, not add_vline: on a log axis a shape's annotation takes log10(x) and would stretch the axis
    per_unit = " per unit" if mechanism == "metric" else ""  # metric's ε: per unit of latent distance
    figure.add_trace(go.Scatter(x=[epsilon, epsilon], y=[0, 1.05], mode="lines", line=dict(color="crimson"),
                                name=f"your ε = {format_epsilon(epsilon)}{per_unit}", hoverinfo="skip"))
    low, high = min(*epsilons, epsilon), max(*epsilons, epsilon)
    figure.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0), yaxis_range=[0, 1.05],
                         legend=dict(orientation="h", y=-0.3))
    # ticks at the evaluated values only: plotly's log ticks label 0.5 as "5" left of "1"
    figure.update_xaxes(type="log", range=[math.log10(low) - 0.15, math.log10(high) + 0.15], tickvals=epsilons,
                        ticktext=[format_epsilon(e) for e in epsilons],
                        title="ε per unit of latent L1 distance" if mechanism == "metric" else "ε")
    return figure


def _plain(value, default: str = "?") -> str:
    """A value from eval.json for a caption: short, without Markdown code marks (the file may come from the Hub)."""
    return default if value is None else str(value).replace("`", "'")[:160]


def preview_notes(utility: dict, settings: PrivacySettings, conditions_kept: bool,
                  publisher: str | None = None) -> list[str]:
    """Plain-words captions for ``preview_figure``: where the numbers come from (``publisher``: who states them,
    where not this app), the value at the chosen ε, and how the chosen settings differ from the evaluated ones."""
    epsilons, accuracy, reid = _curves(utility, settings.name)
    evaluated = utility.get("settings") if isinstance(utility.get("settings"), dict) else {}
    method = utility["methods"][settings.name]
    seeds = evaluated.get("seeds")
    seeds = ", ".join(_plain(seed) for seed in seeds) if isinstance(seeds, list) else "?"
    chance = _number(utility.get("chance"))
    source = "From the model's eval.json" + ("" if publisher is None else f", as {literal(publisher)} publishes it "
                                             "with the model: this app did not measure these numbers and cannot "
                                             "check them; its stated command")
    notes = [f"{source} (`{_plain(evaluated.get('command'), 'python -m cadp.evaluate utility')}`, "
             f"{_plain(evaluated.get('n_test'))} test records, seeds {seeds}): accuracy of a classifier trained on "
             f"releases and tested on real records ({_plain(evaluated.get('task'), 'the class label')}), and how "
             f"often the best of the attackers who know {_plain(evaluated.get('n_reid'))} originals (with the model, "
             f"given each release's noisy latent, which shows more than the release; or comparing the release with the "
             f"originals themselves) matched a release to its original among those with the "
             f"label or conditions released with it (top-1"
             + ("" if chance is None else f"; chance {chance:.1%}")
             + ("" if _number(utility.get("chance_given_condition")) is None else
                f", {_number(utility.get('chance_given_condition')):.1%} for a guess among those, as the label or "
                "conditions kept are public") + "). Measured, not a guarantee."]
    notes.append("The predicted attribute is a kept condition, released exactly in the evaluation: at small ε a "
                 "release is close to a fresh sample of its kept class, so accuracy there comes from the kept "
                 "label and the class's typical content, not from the record's own details (re-identification "
                 "says how much of those survives).")
    # metric's ε is per unit of latent L1 distance: "ε = 1" alone would read as a release's whole budget
    chosen = format_epsilon(settings.epsilon) + (" per unit of latent L1 distance" * (settings.name == "metric"))
    if settings.epsilon in epsilons:
        index = epsilons.index(settings.epsilon)
        notes.append(f"At ε = {chosen}: accuracy {accuracy[index]:.3f}, re-identification {reid[index]:.1%}.")
    else:
        notes.append(f"ε = {chosen} was not evaluated; the curves show the evaluated values "
                     f"({', '.join(format_epsilon(e) for e in epsilons)}).")
    differences = []
    if settings.temperature != evaluated.get("temperature", DEFAULT_TEMPERATURE) and settings.name != "metric" \
            and settings.name != "paper":
        differences.append("a fixed clip radius" if settings.temperature is None
                           else f"temperature {settings.temperature:g}")
    if settings.name == "gaussian" and settings.delta != evaluated.get("delta"):
        differences.append(f"δ {exact(settings.delta)}")
    if settings.name == "paper" and method.get("batch_size"):
        batches = paper_batches_text(evaluated) or f"batches of {_plain(method['batch_size'])} records"
        differences.append(f"evaluated on {batches}; the paper mechanism's batch-level clipping depends on the "
                           "batch")
    if not conditions_kept:
        differences.append("conditions not kept exactly (the evaluation kept them)")
    if differences:
        notes.append("Your settings differ from the evaluated ones: " + "; ".join(differences) + ".")
    from cadp.curves import majority_note

    majority = majority_note(utility, _number((utility.get("reference") or {}).get("o/o")))
    if majority:
        notes.append(majority)
    return notes


def paper_batch_note(utility: dict, release_batch: int) -> str | None:
    """Why the evaluated paper curves are not shown for a release of ``release_batch`` records, or None when
    the evaluation ran the paper mechanism on batches of that size."""
    method = (utility.get("methods") or {}).get("paper") or {}
    evaluated = utility.get("settings") if isinstance(utility.get("settings"), dict) else {}
    size, n_test = method.get("batch_size"), evaluated.get("n_test")
    if size == release_batch or (isinstance(size, int) and isinstance(n_test, int) and size > 0 and n_test > 0
                                 and release_batch in batch_sizes(n_test, size)):
        return None  # the evaluation's test releases ran in batches of this size
    batches = paper_batches_text(evaluated) or f"batches of {_plain(method.get('batch_size'))} records"
    single = (" (for one record the matrix norm is just its largest |z_j|, far smaller than a batch's)"
              if release_batch == 1 else "")
    return (f"The evaluated paper curves are not shown: they come from {batches}, and this release is one batch "
            f"of {release_batch} record{'s' * (release_batch != 1)}. The paper mechanism clips the whole batch at "
            f"once, so its effect depends on the batch{single}; those numbers do not describe this release.")


def not_evaluated_note(loaded: hub.LoadedModel, other_weights: bool = False) -> str:
    """Why a model's page has no preview of its evaluation (its eval.json has no utility curves, or
    ``other_weights``: curves measured on weights that were replaced since), and the command that measures them."""
    image = loaded.config.kind == "image"
    quoted = (" (the figures quoted above were measured with the bundled 28x28 models, not with it)"
              if image and not measured_like_bundled(loaded.config, loaded.folder) else "")
    why = ("its eval.json's utility curves were measured on other weights than its model.safetensors (the weights "
           "were replaced after they were measured)" if other_weights else "its eval.json has no utility curves")
    return (f"This model's releases were not evaluated: {why}, so no downstream accuracy or re-identification "
            f"rate was measured for it{quoted}. Measure them with `{evaluate_command(loaded, 'utility')}`.")


def evaluation_preview(loaded: hub.LoadedModel, settings: PrivacySettings, key: str, *, conditions_kept: bool,
                       release_batch: int) -> None:
    """What the chosen mechanism gave in the model's own evaluation, before anything is released.

    ``release_batch``: how many records the release privatizes in one call (the paper mechanism's batch)."""
    try:
        evaluation, other_weights = hub.current_eval(loaded.folder)
        utility = evaluation.get("utility")
        figure = preview_figure(utility, settings.name, settings.epsilon) if utility else None
        notes = preview_notes(utility, settings, conditions_kept, stated_by(loaded.model)) if figure is not None \
            else []
        batch_note = paper_batch_note(utility, release_batch) if figure is not None and settings.name == "paper" \
            else None
    except Exception:  # noqa: BLE001 - an optional view: an unreadable eval.json must not take the page with it
        st.caption("This model's eval.json could not be read for a preview of the evaluated curves.")
        return
    if not (isinstance(utility, dict) and utility.get("methods")):  # said where the preview would be, not left out
        with st.container(border=True):
            st.markdown("**No evaluation of this model's releases**")
            st.caption(not_evaluated_note(loaded, "utility" in other_weights))
        return
    if figure is None:
        return
    with st.container(border=True):
        label = f"{settings.name} ({PAPER_LABEL})" if settings.name == "paper" else settings.name
        st.markdown(f"**What {label} gave in this model's evaluation**")
        if batch_note is not None:
            st.caption(batch_note)
            return
        st.plotly_chart(figure, key=f"{key}_preview")
        for note in notes:
            st.caption(note)


# --------------------------------------------------------------------------- display

def release_terms(result) -> str:
    """A download's guarantee.txt: the guarantee, for paper the batch its output depends on, and what releasing the
    record again costs (``repeated_cost_note``, as the CLI's terms say it). Never a caution
    about the records (e.g. that some are rows the model trained on): the shared terms must not depend on what
    was released; the page shows such cautions on screen, and the guarantee's general sentence covers them."""
    image = getattr(result, "original_frame", None) is None
    again = repeated_cost_note(result.mechanism, "another press of Privatize" + (
        ", each strip or gallery image" if image else "") + ", or a release elsewhere")
    if result.mechanism.get("mechanism") == "paper":
        return f"{result.guarantee} This release ran it on {result.batch_text}.\n\n{again}"
    return f"{result.guarantee}\n\n{again}"


def release_facts(result) -> None:
    """The caption under a release's guarantee: where its noise came from and, for paper, its batch."""
    text = f"Noise source: {result.noise_source}."
    if result.mechanism.get("mechanism") == "paper":
        text += f" The paper mechanism ran on {result.batch_text}: its output depends on the batch."
    st.caption(text)


def to_display(pixels, scale: int = 4) -> np.ndarray:
    """(C, H, W) or (H, W) pixel values -> uint8 (H*s, W*s[, 3]) for st.image, nearest-neighbour upscaled."""
    array = torch.as_tensor(np.array(pixels) if isinstance(pixels, np.ndarray) else pixels).detach().cpu().float().clamp(0, 255).round().to(torch.uint8).numpy()
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    return np.kron(array, np.ones((scale, scale) + (1,) * (array.ndim - 2), dtype=np.uint8))


def inline_image(pixels, scale: int = 4) -> str:
    """``to_display(pixels)`` as a PNG data URL, for st.image: sent in this session's page only. Given pixels,
    Streamlit serves an image at /media/<hash of its bytes> to anyone who asks, so an image made only of a record's
    pixels (an upload as the model reads it, its reconstruction) would let anyone holding a candidate image test
    whether some visitor's page shows it now. (PNG, not the JPEG Streamlit makes of pixels: no blur either.)"""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_display(pixels, scale)).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def format_epsilon(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:g}"


__all__ = ["InputError", "page_errors", "sidebar", "privacy_controls", "charge", "record_key"]


# --------------------------------------------------------------------------- image inputs

IMAGE_UPLOAD_TYPES = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "gif", "webp", "dcm", "dicom", "zip"]


@dataclass
class ImageRecord:
    """One input image ready for the model, with how it got there; ``key`` hashes its bytes."""

    name: str
    pixels: np.ndarray  # uint8 (C, H, W)
    key: str
    steps: list[str]
    preview: np.ndarray | None = None
    inverted: bool = False  # read as its negative for the model
    written_back: bool = False  # its release inverted back, as uploaded (uploads.written_back: Inversion 'always')


PREPARED_UPLOADS = "image_upload_prepared"  # this session's prepared upload files (memory only, never disk)


@dataclass
class PreparedFile:
    """What one uploaded file (an image or a ZIP) gave: its records, its problems, the pixels decoding it cost,
    and the pixel budget that cut it short (None: read whole)."""

    records: list[ImageRecord]
    problems: list[tuple[str, str]]  # (file or ZIP member, what is wrong with it)
    decoded_pixels: int = 0
    cut_at: int | None = None
    skipped: int = 0


def image_records_from_uploads(files, *, image_size: int, channels: int, invert: str,
                               max_pixels: int | None = None):
    """Read uploaded files (images, DICOM or ZIPs of them) in memory: (records, problems), each problem a (file or
    ZIP member, what is wrong) pair, with "" for the upload as a whole (``show_problems`` shows them).

    Each file is decoded once per session and preparation (its bytes' hash, name, ``image_size``, ``channels``,
    ``invert``): a rerun (any widget moved) takes its records from this session's state, which keeps the files
    of the latest call only. At most ``max_pixels`` (``uploads.MAX_UPLOAD_PIXELS``) are decoded for all files
    together; the images past it are skipped, and said so."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    budget = require("MAX_UPLOAD_PIXELS", "cadp.uploads") if max_pixels is None else max_pixels
    in_session = get_script_run_ctx() is not None  # called outside a page (tests, scripts): nothing to keep
    cache = st.session_state.get(PREPARED_UPLOADS, {}) if in_session else {}
    kept, records, problems, spent, skipped = {}, [], [], 0, 0
    for file in files:
        data = file.getvalue()
        key = (record_key(data), file.name, image_size, channels, invert)
        if key in kept:  # the same file added twice: its images once (two entries of one key would evict each other)
            problems.append((file.name, "the same file is in the upload twice; its images are read once"))
            continue
        left = budget - spent
        prepared = kept.get(key) or cache.get(key)
        # a file read whole under a larger budget is the same under this one if it fits; a cut one only at its cut
        if prepared is None or (prepared.decoded_pixels > left if prepared.cut_at is None else prepared.cut_at != left):
            with st.spinner(f"Reading {file.name}…") if in_session else contextlib.nullcontext():  # a ZIP takes a while
                prepared = _prepare_file(file.name, data, image_size=image_size, channels=channels, invert=invert,
                                         budget=left)
        kept[key] = prepared
        records += prepared.records
        problems += prepared.problems
        spent += prepared.decoded_pixels
        skipped += prepared.skipped
    if in_session:
        st.session_state[PREPARED_UPLOADS] = kept  # files no longer uploaded are dropped
    if skipped:
        problems.append(("", f"This upload's images hold more than {budget:,} pixels in all, the most one upload "
                             f"may decode (the model reads them at {image_size}x{image_size}: downscale them before "
                             f"uploading, or upload fewer at a time); {skipped} image{'s' * (skipped > 1)} past it "
                             f"{'were' if skipped > 1 else 'was'} skipped"))
    return records, problems


def _prepare_file(name: str, data: bytes, *, image_size: int, channels: int, invert: str,
                  budget: int) -> PreparedFile:
    """Decode one uploaded file (an image, or each image of a ZIP) until ``budget`` decoded pixels are spent."""
    to_model_input = require("to_model_input", "cadp.uploads")
    written_back = require("written_back", "cadp.uploads")
    prepared = PreparedFile([], [])

    def add(name: str, data: bytes) -> None:
        if prepared.decoded_pixels >= budget:
            prepared.skipped += 1
            prepared.cut_at = budget
            return
        try:
            image = to_model_input(data, image_size=image_size, channels=channels, invert=invert, filename=name)
        except CadpError as error:
            prepared.problems.append((name, str(error)))
            prepared.decoded_pixels += getattr(error, "decoded_pixels", 0)  # a failed decode costs its work too
            return
        prepared.decoded_pixels += image.decoded_pixels
        pixels = np.asarray(image.pixels, dtype=np.uint8)
        # the preview (up to 1024 x 1024 per image) is not shown: it is not held in the session
        prepared.records.append(ImageRecord(name, pixels, image_record_key(pixels), list(image.steps),
                                            None, bool(image.inverted), written_back(bool(image.inverted), invert)))

    if name.lower().endswith(".zip"):
        iter_zip_images = require("iter_zip_images", "cadp.uploads")
        try:
            for member, item in iter_zip_images(data):
                if isinstance(item, Exception):
                    prepared.problems.append((f"{name}/{member}", str(item)))
                else:
                    add(f"{name}/{member}", item)
        except CadpError as error:  # (a ZIP past its limit stops there: the images read before it are kept)
            used = len(prepared.records)
            prepared.problems.append((name, f"{error} after its first {used:,} image{'s' * (used != 1)}, which "
                                            f"{'are' if used != 1 else 'is'} used; the rest skipped" if used
                                      else str(error)))
    else:
        add(name, data)
    return prepared


PROBLEM_KINDS_SHOWN = 3  # kinds of problem shown one box each; the rest in one box, every problem in an expander


def problem_text(where: str, what: str) -> str:
    """One problem of ``image_records_from_uploads`` as a sentence ("Skipped scan.png: ...")."""
    if not where:
        return what
    return f"{where}: {what}" if what.endswith("skipped") else f"Skipped {where}: {what}"


def show_problems(problems: list[tuple[str, str]]) -> None:
    """An upload's problems, one red box per kind (the same message) with its count and a few of its files, for
    the first PROBLEM_KINDS_SHOWN kinds; the others in one more box; the full list in an expander (a ZIP of 2,000
    text files showed 2,000 boxes)."""
    kinds: dict[str, list[str]] = {}
    for where, what in problems:
        kinds.setdefault(what, []).append(where)
    for what, places in list(kinds.items())[:PROBLEM_KINDS_SHOWN]:
        if len(places) == 1:
            st.error(problem_text(markdown_literal(places[0]), what))  # a name as written, not Markdown
            continue
        examples = ", ".join(map(markdown_literal, places[:3])) + (f" and {len(places) - 3:,} more"
                                                                   if len(places) > 3 else "")
        st.error(problem_text(f"{len(places):,} files ({examples})", what))
    others = list(kinds.values())[PROBLEM_KINDS_SHOWN:]
    if others:
        count = sum(len(places) for places in others)
        st.error(f"… and {count:,} more file{'s' * (count > 1)} with {len(others):,} other kind"
                 f"{'s' * (len(others) > 1)} of problem: see the list below")
    if len(problems) > 1 and (others or any(len(places) > 3 for places in kinds.values())):
        with st.expander(f"All {len(problems):,} problems"):
            st.text("\n".join(problem_text(where, what) for where, what in problems))  # names as written


@st.cache_resource(show_spinner="Loading the test set…", max_entries=4)
def test_images(dataset: str, image_size: int, channels: int):
    from cadp.data import load_image_dataset

    return load_image_dataset(dataset, "test", image_size=image_size, channels=channels)


def sample_record(config, index: int) -> ImageRecord:
    data = test_images(config.dataset, config.image_size, config.channels)
    index = int(index)
    if not 0 <= index < len(data.labels):  # never another image than the one asked for
        raise InputError(f"test image number {index} is out of range: {config.dataset}'s test set has "
                         f"{len(data.labels):,} images, numbered 0 to {len(data.labels) - 1:,}")
    pixels = data.images[index].numpy().astype(np.uint8)
    name = f"{config.dataset} test image #{index} ({data.class_names[int(data.labels[index])]})"
    return ImageRecord(name, pixels, image_record_key(pixels), ["bundled test image: no preprocessing"])


def suggest_labels(loaded, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The classifier's suggested labels and confidences for (B, C, H, W) pixels, or None without one."""
    if loaded.classifier is None:
        return None
    probabilities = loaded.classifier.predict_proba(torch.as_tensor(pixels).float())
    confidence, label = probabilities.max(dim=1)
    return label.numpy(), confidence.numpy()


# --------------------------------------------------------------------------- the table page's caches

@st.cache_resource(show_spinner="Loading the table…", max_entries=4)
def bundled_table(name: str, seed: int, conditions: tuple[str, ...] = ()):
    """(the table, its rows held out from the model's training, how many rows trained the model)."""
    from cadp.data import load_table
    from cadp.train import split_table

    table = load_table(name)
    train, test = split_table(table.frame, seed, conditions=conditions)  # the split cadp.train made for this model
    return table, test, len(train)


# what this module keeps of a table page's upload (the page adds its own): forgotten with it
TABLE_UPLOAD_DERIVED = ("table_fitted_models", "table_row_keys", "memo_rows_seen", "memo_input_notes")


def session_memo(name: str, key, compute, max_entries: int = 16):
    """``compute()`` once per ``key`` in this session, kept in its memory only: facts about an upload (its column
    names, counts) go with the session (or "Forget": see TABLE_UPLOAD_DERIVED), never into a cache that all sessions
    share and that outlives them."""
    store = st.session_state.setdefault(f"memo_{name}", {})
    if key not in store:
        while len(store) >= max_entries:
            store.pop(next(iter(store)))
        store[key] = compute()
    return store[key]


def table_rows_known(table_key: str, model: tuple, config, frame) -> tuple[int, int] | None:
    """``cadp.train.table_rows_known`` (training rows, held-out rows) once per table and model (name, dataset, split
    seed), not on every run of the page."""
    from cadp.train import table_rows_known as count

    return session_memo("rows_seen", (table_key, model), lambda: count(config, frame))


def input_notes(table_key: str, model_origin: str, model, frame) -> list[str]:
    """``cadp.privatize.input_notes`` once per table and model (by where it was loaded from: two models can share
    a name), not on every run of the page."""
    from cadp.privatize import input_notes as notes

    return session_memo("input_notes", (table_key, model_origin), lambda: notes(model, frame))


def training_rows_caution(loaded, frame, key: str, name: str, uploaded: bool = True) -> str | None:
    """(tabular page) What the release of ``frame`` (uploaded as ``name``) with a loaded model must say about rows
    the model trained on: counted for a bundled table's models, else by the upload's name (as cadp.privatize); and,
    for an upload (``uploaded``: the page's own held-out rows say it in their caption), about rows of that bundled
    table the network did not train on, which its encoder was fitted on all the same."""
    from cadp.train import held_out_caution, training_name_caution
    from cadp.train import training_rows_caution as caution

    config = loaded.config
    known = table_rows_known(key, (config.name, config.dataset, config.permutation_seed), config, frame)
    if known is None:  # (shown as Markdown: the model's and the upload's names are anyone's text)
        caution = training_name_caution(config, name)
        return None if caution is None else markdown_literal(caution)
    seen, held = known[0], known[1] if uploaded else None
    said = [text for text in (caution(config.name, seen, len(frame)), held_out_caution(config, held, len(frame)))
            if text]
    return markdown_literal(" ".join(said)) or None


def fitted_models() -> dict:
    """Models fitted on this session's uploads, by content hash (never written to disk, never shared with another
    session); at most 2, and gone with the session."""
    return st.session_state.setdefault("table_fitted_models", {})


FITS_AT_ONCE = 1  # fits on uploads running at once in the app's process: each takes every core while it runs
_FIT_SLOTS = threading.BoundedSemaphore(FITS_AT_ONCE)


def fitted_model(key: tuple, frame, progress=None):
    """The model fitted on ``frame`` for ``key`` (content hash, conditions, kinds, steps), fitted now if this session
    has none; one fit at a time in the process (a hosted app's visitors share its CPU: a fit waits for the one under
    way, and says so)."""
    from cadp.train import fit_tabular

    store = fitted_models()
    if key not in store:
        _content_hash, conditions, kinds, steps = key
        if not _FIT_SLOTS.acquire(blocking=False):
            waiting = st.empty()
            waiting.info("Another model is being fitted on this machine now (this app fits one at a time): yours "
                         "starts when that one ends.")
            _FIT_SLOTS.acquire()
            waiting.empty()
        try:
            model = fit_tabular(frame, list(conditions), name=FITTED_MODEL_NAME, dataset="upload",
                                kinds=dict(kinds), steps=steps, progress=progress)
        finally:
            _FIT_SLOTS.release()
        while len(store) >= 2:
            store.pop(next(iter(store)))
        store[key] = model
    return store[key]
