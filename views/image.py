"""Image privatization: upload or sample -> preprocessing -> condition -> mechanism -> release."""

from collections import Counter

import numpy as np
import pandas as pd
import streamlit as st
import torch

from cadp import compare, ui
from cadp.curves import literal
from cadp.data import IMAGE_DATASETS
from cadp.mechanisms import new_generator
from cadp.models import ClassIndices
from cadp.privatize import latent_difference_maps, privatize
from cadp.uploads import FIRST_FRAME, default_invert, in_input_polarity, several_frames_note

STRIP_EPSILONS = [1, 10, 100, 1000, 10000]
RESULT = "image_result"
PAPER_ALONE = ("; paper: each of the first image alone, a batch of 1, whose clip is its largest coordinate, not the "
               "release's batch")
# the clip counts too: at small ε laplace and gaussian scale a latent down to a small radius, so the distance is
# then nearly the latent's own norm at any ε (a reviewer read it as the noise's alone)
LATENT_DISTANCE_HELP = ("‖M(z) − z‖₁: how far the release's latent is from this record's own, the clip and the noise "
                        "together (laplace and gaussian first scale a latent down to their clip radius, paper to its "
                        "batch's bound; at small ε that clip alone moves it by nearly its whole norm, so this number "
                        "changes little there: how much of the record survives is what re-identification measures).")
WRITTEN_BACK_NOTE = ("Every image is inverted for the model (Inversion: always): this one is shown, measured and "
                     "downloaded inverted back, as you uploaded it.")
NOT_WRITTEN_BACK_NOTE = ("The model read this image as its negative (auto: its border is brighter than its centre). Its "
                         "release is shown and downloaded as the model reads it, light on dark: written back in your "
                         "image's polarity it would show exactly whether the image was dark on light, which the "
                         "guarantee does not cover. With Inversion 'always' (every image inverted, whatever its "
                         "pixels) releases come back dark on light.")
HAND_LABELS = "image_hand_labels"  # labels chosen by hand, per image (label_ids), for one image or a batch
INVERT_DEFAULT = "image_invert_default"  # the default the inversion's current value was chosen under


def choose_inputs(loaded) -> list[ui.ImageRecord]:
    config = loaded.config
    sources = ["Upload"] + ["Sample from the bundled test set"] * (config.dataset in IMAGE_DATASETS)
    source = st.radio("Input", sources, horizontal=True, key=ui.kept("image_source"))
    if source == "Upload":
        files = ui.kept_uploads("Images (PNG, JPEG, BMP, TIFF, GIF, WebP, DICOM); several files or a ZIP of them for a batch",
                                "image_upload", derived=(ui.PREPARED_UPLOADS, RESULT, HAND_LABELS),
                                type=ui.IMAGE_UPLOAD_TYPES, accept_multiple_files=True)
        # the default follows the model: a remembered choice made under another default (a model of MNIST, then
        # one trained on an image folder) would show the new model the negatives of what it learned
        default = default_invert(config.dataset)
        if st.session_state.get(INVERT_DEFAULT) != default or "image_invert" not in st.session_state:
            st.session_state["image_invert"] = default
            st.session_state[INVERT_DEFAULT] = default
        invert = st.radio("Inversion (the bundled models expect a light object on a dark background; a model "
                          "trained on an image folder saw its images as they are)", ["auto", "always", "never"],
                          horizontal=True, key=ui.kept("image_invert"))
        if not files:
            st.session_state.pop(ui.PREPARED_UPLOADS, None)  # the upload was forgotten: so are its images
            st.info("Upload an image, several images or a ZIP to start.")
            return []
        records, problems = ui.image_records_from_uploads(files, image_size=config.image_size,
                                                          channels=config.channels, invert=invert)
        ui.show_problems(problems)
        if not records and not problems:
            st.warning("No image found in the upload (an empty ZIP?). Upload PNG, JPEG, BMP, TIFF or DICOM files, "
                       "or a ZIP of them.")
        return records
    st.session_state.pop(ui.PREPARED_UPLOADS, None)
    count = len(ui.test_images(config.dataset, config.image_size, config.channels).labels)
    index = st.number_input(f"Test image number (0 to {count - 1:,})", 0, count - 1, 0,
                            key=ui.kept("image_sample_index"))
    return [ui.sample_record(config, index)]


def show_preprocessing(records: list[ui.ImageRecord]) -> None:
    # a series or a stack: a clinician expects every slice (the note sat in a collapsed expander)
    stacks = several_frames_note([literal(r.name) for r in records if any(s.startswith(FIRST_FRAME) for s in r.steps)])
    if stacks:
        st.warning(stacks)
    with st.expander(f"Preprocessing ({len(records)} image{'s' * (len(records) > 1)})", expanded=len(records) == 1):
        for record in records[:4]:
            left, right = st.columns([1, 3])
            left.image(ui.inline_image(record.pixels), width=ui.IMAGE_WIDTH, caption=f"model input: {record.name}",
                       alt=f"{record.name} as the model reads it")
            right.markdown("\n".join(f"- {step}" for step in record.steps))  # an inversion is one of the steps
        if len(records) > 4:
            st.caption(f"… and {len(records) - 4} more.")


def label_ids(model: str, class_names: list[str], records) -> list[tuple]:
    """Each image's id in HAND_LABELS: the model and its classes (a retrained model's differ), the ledger key (the
    same under any inversion), its file name, and which upload of that image under that name it is (the nth, the
    nth), never its place: copies of one image under other names keep their own labels whatever their order."""
    copies, ids = Counter(), []
    for record in records:
        copies[record.key, record.name] += 1
        ids.append((model, tuple(class_names), record.key, record.name, copies[record.key, record.name]))
    return ids


def choose_labels(loaded, records) -> np.ndarray:
    class_names = loaded.config.class_names
    pixels = np.stack([r.pixels for r in records])
    suggestion = ui.suggest_labels(loaded, pixels)
    model = ui.record_key(f"{loaded.config.name}\n{loaded.origin}".encode())  # two models may share a name
    # one store for one image and for a batch: a label chosen by hand follows its image when files are added or
    # removed (one image becomes a batch, a batch one image) or Inversion changes; a new image has none, and starts
    # from its own suggestion (the boxes are keyed by the inputs' pixels, so a changed suggestion is shown too)
    ids = label_ids(model, class_names, records)
    if len(records) == 1:
        index = 0
        if suggestion is not None:
            index = int(suggestion[0][0])
            st.caption(f"The classifier suggests **{literal(class_names[index])}** "
                       f"(confidence {suggestion[1][0]:.0%}: a small CNN trained on "
                       f"{literal(loaded.config.dataset)}; on other kinds of images its confidence means little). "
                       "Confirm or change it.")
        else:
            st.caption("This model has no classifier: choose the label.")
        chosen, offer = st.session_state.setdefault(HAND_LABELS, {}), class_names[index]
        key = f"image_label_{model}_{ui.record_key(records[0].pixels.tobytes())}"
        if key not in st.session_state:  # first drawn for this input (the store, not ui.kept, outlives a page)
            st.session_state[key] = chosen.get(ids[0], offer)
        label = st.selectbox("Label (condition)", class_names, key=key)
        if ids[0] in chosen or label != offer:  # as ui.kept_editor remembers a batch's
            chosen[ids[0]] = label
        return np.array([class_names.index(label)])
    suggested = suggestion[0] if suggestion is not None else np.zeros(len(records), dtype=int)
    table = pd.DataFrame({"file": [r.name for r in records],
                          "confidence": suggestion[1] if suggestion is not None else np.nan,
                          "label": [class_names[i] for i in suggested]})
    if suggestion is not None:  # the single image's caveat, for the table's confidences too
        st.caption(f"Labels suggested by a small CNN trained on {literal(loaded.config.dataset)}; on other kinds of "
                   "images its confidence means little. Confirm or change each label.")
    # (the names too: copies of one image in another order are other rows, whose edits the editor must not keep)
    inputs = ui.record_key(b"".join(r.pixels.tobytes() + r.name.encode("utf-8", "replace") + b"\0" for r in records))
    edited = ui.kept_editor(table, f"image_batch_labels_{model}_{inputs}", "label", rows=ids, edits=HAND_LABELS,
                            disabled=["file", "confidence"], hide_index=True,
                            column_config={"label": st.column_config.SelectboxColumn("label", options=class_names,
                                                                                     required=True),
                                           "confidence": st.column_config.NumberColumn(format="percent")})
    return np.array([class_names.index(v) for v in edited["label"]])


PROGRESS_CHUNK = 250  # images per privatize chunk of a large batch, each one step of the progress bar


def extra_releases(settings, strip: bool, gallery: int) -> list:
    """The mechanisms of the first image's extra releases one press makes: the strip's ε values, then the gallery's
    draws at the chosen ε."""
    return [settings.at(epsilon) for epsilon in STRIP_EPSILONS] * strip + [settings.mechanism] * gallery


def released_label(result) -> int:
    """The label the first image of a release was released with (a randomized or resampled one can differ)."""
    return int(result.released_condition["label"][0])


def extra_caption(epsilon_words: str, label: int, class_names: list[str], handling: str, cost: float) -> str:
    """A strip image's or gallery draw's caption: its ε, and where the label is not kept (``handling``), the label
    released with it and the ε that label costs (``cost``: each draw's label is drawn again)."""
    if handling == "kept":
        return epsilon_words
    words = [part for part in (epsilon_words, f"label ε {cost:g}" if cost else "") if part]
    return ", ".join(words) + (" · " if words else "") + f"released as {class_names[label]}"


def release(loaded, records, labels, handling, settings, strip: bool, gallery: int, keep_names: bool = False,
            uploaded: bool = True) -> dict:
    model, name = loaded.model, settings.name
    generator = new_generator(settings.seed)
    pixels = torch.as_tensor(np.stack([r.pixels for r in records]))
    progress = st.progress(0.0, text="Privatizing…")
    share = 0.3 if strip or gallery else 1.0  # of the bar: the strip and the gallery take the rest

    def report(done: int, total: int) -> None:
        progress.progress(share * done / total, text=f"Privatizing… {done:,} of {total:,} images")

    # chunks for the bar (2,000 images: over a minute on 2 cores); paper's output depends on its batch: one
    # (indices from the label boxes: a class named "1" at index 0 is never read as index 1)
    result = privatize(model, pixels, ClassIndices(torch.as_tensor(labels)), settings.mechanism, generator,
                       seed=settings.seed,
                       condition_handling={"label": handling}, progress=report,
                       batch_size=None if name == "paper" or len(records) <= PROGRESS_CHUNK else PROGRESS_CHUNK)
    # charged together once every release is made, just before the page keeps them: a press that a second press
    # cuts short (Streamlit stops a run at its next element) releases nothing, and was charged for all it computed
    charges = [(record.key, record.name, settings.mechanism) for record in records]
    first = (pixels[:1], ClassIndices(torch.as_tensor(labels[:1])))
    strip_images, gallery_images = [], []
    if strip:
        for step, epsilon in enumerate(STRIP_EPSILONS):
            progress.progress(0.3 + 0.3 * step / len(STRIP_EPSILONS), text=f"ε strip: {epsilon:g}")
            mechanism = settings.at(epsilon)
            out = privatize(model, *first, mechanism, generator, seed=settings.seed,
                            condition_handling={"label": handling})
            charges.append((records[0].key, records[0].name, mechanism))
            strip_images.append((epsilon, out.privatized[0], released_label(out)))
    for draw in range(gallery):
        progress.progress(0.6 + 0.4 * draw / max(gallery, 1), text=f"Gallery draw {draw + 1}")
        out = privatize(model, *first, settings.mechanism, generator, seed=settings.seed,
                        condition_handling={"label": handling})
        charges.append((records[0].key, records[0].name, settings.mechanism))
        gallery_images.append((out.privatized[0], released_label(out)))
    progress.progress(1.0, text="Done")  # (the run's last element: nothing after it can cut the run short)
    files, manifest = compare.release_files(
        result, [r.name for r in records], loaded.config.class_names, handling.handling,
        tag=(tag := compare.release_tag(settings.mechanism, seeded=settings.seed is not None)), terms=ui.release_terms(result),
        mechanism=ui.MECHANISM_LABELS[name] + (f" (ran on {result.batch_text})" if name == "paper" else ""),
        cost=ui.cost_text([settings.mechanism], handling.cost), written_back=[r.written_back for r in records],
        keep_names=keep_names)
    extra = extra_releases(settings, strip, gallery)
    repeats = compare.repeated_images_note([r.key for r in records], ui.cost_text([settings.mechanism], handling.cost),
                                           (len(extra), ui.cost_text(extra, handling.cost)) if extra else None,
                                           formal=settings.mechanism.formal)
    for key, record_name, mechanism in charges:  # (no element from here until the page keeps the release)
        ui.charge(key, record_name, mechanism, handling.cost, seeded=settings.seed is not None,
                  model=ui.latent_space(loaded))
    return {"names": [r.name for r in records], "result": result, "repeats": repeats, "handling": handling.handling,
            "label_cost": handling.cost,
            "strip": strip_images, "gallery": gallery_images, "files": files, "manifest": manifest, "tag": tag,
            "keep_names": keep_names, "uploaded": uploaded,
            "epsilon": settings.epsilon, "per_unit": name == "metric",  # metric: epsilon per unit of distance
            # paper's output depends on its batch: the extra releases run on the first image alone
            "alone": name == "paper" and len(records) > 1,
            "zip_terms": ui.release_terms(result),  # the terms only: what copies cost is a caution, apart
            # an image inverted for the model under Inversion 'always' is shown and downloaded inverted back, as it
            # was uploaded; under 'auto' as the model reads it (uploads.written_back)
            "written_back": [r.written_back for r in records], "inverted": [r.inverted for r in records]}


def show_result(loaded, state, changed: bool) -> None:
    result, names = state["result"], state["names"]
    class_names = loaded.config.class_names
    if changed:
        st.info("The label, its handling or the privacy settings changed since this release: what is shown is the "
                "release made before. Press **Privatize** to release with the current choices.")
    index = 0
    if len(names) > 1:
        index = st.selectbox("Show", range(len(names)), format_func=lambda i: names[i], key=ui.kept("image_show"))
    back = state.get("written_back") or [False] * len(names)
    inverted = state.get("inverted") or [False] * len(names)

    def shown(image, flipped: bool):  # as it is downloaded (sent to this session only: ui.inline_image)
        return ui.inline_image(in_input_polarity(image, flipped))

    original = in_input_polarity(result.original[index], back[index])
    privatized = in_input_polarity(result.privatized[index], back[index])
    kept = int(result.condition["label"][index]) == int(result.released_condition["label"][index])
    if back[index]:
        st.caption(WRITTEN_BACK_NOTE)
    elif inverted[index]:
        st.caption(NOT_WRITTEN_BACK_NOTE)
    columns = st.columns(4)
    released_label = class_names[int(result.released_condition['label'][index])]
    columns[0].image(ui.inline_image(original), width=ui.IMAGE_WIDTH, caption="original",
                     alt=f"the original image, {names[index]}")
    columns[1].image(shown(result.reconstruction[index], back[index]), width=ui.IMAGE_WIDTH,
                     caption="reconstruction (no noise)", alt="the network's reconstruction of the original, no noise")
    columns[2].image(ui.inline_image(privatized), width=ui.IMAGE_WIDTH, caption=f"privatized ({released_label})",
                     alt=f"the privatized image, released with the label {released_label}")
    difference = (privatized - original).abs()
    columns[3].image(ui.inline_image(difference), width=ui.IMAGE_WIDTH, caption="pixel difference |x' − x|",
                     alt=f"the pixel difference between the privatized and the original image: mean "
                         f"{float(difference.float().mean()):.1f}, largest {float(difference.max()):.0f} of 255")
    maps = latent_difference_maps(loaded.model, result.latent[index], result.noisy_latent[index])
    st.caption("Below, how much the mechanism changed the record's latent code z (what the network turns the image "
               "into) at each of its positions, |M(z) − z|: brighter is more change. The code has a part for each "
               "stage of the network, each drawn as a grid of its own (its size in brackets).")
    for column, (title, array) in zip(st.columns(len(maps)), maps):
        column.plotly_chart(compare.latent_map_figure(array, f"|M(z) − z|: {title}"), key=f"latent_map_{title}",
                            theme=None, config={"displayModeBar": False})  # its bar covered the titles
        column.caption(compare.latent_map_words(array))  # the map in words (not by colour alone)
    quality = compare.image_quality(original, privatized)
    metrics = st.columns(4)
    metrics[0].metric("SSIM", f"{quality['ssim']:.3f}")
    metrics[1].metric("PSNR", f"{quality['psnr']:.1f} dB")
    distances = getattr(loaded.config, "latent_distances", None)
    metrics[2].metric("latent L1 distance", f"{compare.latent_distance(result.latent[index], result.noisy_latent[index]):.1f}",
                      help=LATENT_DISTANCE_HELP
                           + ("" if distances is None else f" For scale, two typical records of one class are "
                              f"d_typ = {distances.d_typ:.0f} apart, a record and its nearest neighbour "
                              f"d_nn = {distances.d_nn:.0f}."))
    handling = state["handling"]
    metrics[3].metric("label", "kept" if handling == "kept" else
                      f"{'unchanged' if kept else 'changed'} ({handling})")
    st.markdown("**Guarantee of this release**")
    st.info(result.guarantee)
    if state.get("repeats"):
        st.warning(state["repeats"])
    ui.release_facts(result)
    extra = (state.get("handling", "kept"), state.get("label_cost", 0.0))  # how each extra release's label went
    if state["strip"]:
        st.markdown("**The same input at several ε** (each a separate release, charged to the ledger"
                    + (PAPER_ALONE if state.get("alone") else "") + ")")
        for column, (epsilon, image, label) in zip(st.columns(len(state["strip"])), state["strip"]):
            column.image(shown(image, back[0]), width=ui.IMAGE_WIDTH, caption=extra_caption(
                f"ε = {epsilon:g}" + (" per unit" if state["per_unit"] else ""), label, class_names, *extra),
                alt=f"a release of the same input at ε = {epsilon:g}")
    if state["gallery"]:
        per_unit = " per unit of latent distance" if state["per_unit"] else ""
        st.markdown(f"**{len(state['gallery'])} draws at ε = {state['epsilon']:g}{per_unit}** (each charged to the "
                    "ledger" + (PAPER_ALONE if state.get("alone") else "") + ")")
        for column, (image, label) in zip(st.columns(len(state["gallery"])), state["gallery"]):
            column.image(shown(image, back[0]), width=ui.IMAGE_WIDTH,
                         caption=extra_caption("", label, class_names, *extra) or None,
                         alt=f"another release of the same input at ε = {state['epsilon']:g}")
    if len(names) == 1:
        st.download_button("Download privatized PNG", state["files"][0][1], file_name=state["files"][0][0],
                           mime="image/png", on_click="ignore", key="download_png")
    else:
        st.download_button(f"Download {len(names)} privatized images (ZIP with manifest.csv and guarantee.txt)",
                           compare.batch_zip(state["files"], state["manifest"], state["zip_terms"]),
                           file_name=f"cadp-privatized-{state.get('tag', 'not-private')}.zip", mime="application/zip",
                           on_click="ignore", key="download_zip")
    if state.get("repeats"):  # facts about the records, for whoever released them: never inside the release
        st.download_button("Download cautions.txt (for you, not part of the release)",
                           compare.cautions_text(state["repeats"], state.setdefault(
                               "release_id", compare.new_release_id())), file_name="cautions.txt", mime="text/plain",
                           on_click="ignore", key="download_cautions")
    st.caption(compare.download_note(state["handling"], state["files"][0][0], any(back), state.get("keep_names", False),
                                     uploaded=state.get("uploaded", True)))


def page(loaded) -> None:
    st.header("1 · Input")
    records = choose_inputs(loaded)
    if not records:
        st.session_state.pop(RESULT, None)
        return
    show_preprocessing(records)
    st.header("2 · Condition")
    labels = choose_labels(loaded, records)
    handling = ui.condition_handling_controls("label", "image_label")
    st.header("3 · Privacy")
    settings = ui.privacy_controls(loaded.config, "image", label_kept=handling.handling == "kept",
                                   publisher=ui.stated_by(loaded.model), folder=loaded.folder)
    ui.evaluation_preview(loaded, settings, "image", conditions_kept=handling.handling == "kept",
                          release_batch=len(records))
    left, right = st.columns(2)
    strip = left.checkbox(f"Also show a strip at ε = {', '.join(f'{e:g}' for e in STRIP_EPSILONS)}", key=ui.kept("image_strip"))
    gallery = right.slider("Gallery: extra draws at this ε", 0, 8, 0, key=ui.kept("image_gallery"))
    if strip or gallery:
        extra = extra_releases(settings, strip, gallery)
        st.caption(f"Each strip image and each gallery draw is a release of the first image: one press adds "
                   f"{compare.counted(len(extra), 'release')} to its ledger entry besides the release itself; together they "
                   f"cost {ui.cost_text(extra, handling.cost)}.")
    # names often identify a patient: kept only on request, and only with a kept label (names carry the true one)
    uploaded = st.session_state.get("image_source", "Upload") == "Upload"  # (a test image has no file name)
    keep_names = uploaded and handling.handling == "kept" and st.checkbox(
        "Keep your file names in the downloaded files' names", value=False, key=ui.kept("image_keep_names"),
        help="Off: the files are numbered in an order drawn at random. The guarantee covers the image content, "
             "not file names: a name that identifies a patient stays readable in the download.")
    # a release is shown with the model and the inputs (pixels as prepared: inversion included; and their names,
    # which its files carry: a file renamed to hide a patient's name must not be downloaded under the old one)
    made_of = (loaded.config.name, loaded.origin, ui.record_key(b"".join(r.pixels.tobytes() for r in records)),
               tuple(r.name for r in records))
    choices = (tuple(int(label) for label in labels), handling, settings.summary,  # (the strip and gallery: extras)
               keep_names)
    before = ui.released_before_note([r.key for r in records], "image")
    if before:
        st.warning(before)
    if st.button("Privatize", type="primary", key="image_privatize"):
        st.session_state[RESULT] = release(loaded, records, labels, handling, settings, strip, gallery, keep_names,
                                           uploaded)
        st.session_state[RESULT].update(made_of=made_of, choices=choices)
    state = st.session_state.get(RESULT)
    if state is not None and state.get("made_of") == made_of:
        st.header("4 · Release")
        show_result(loaded, state, changed=state["choices"] != choices)


ui.run_page("Image privatization", page, "image")
