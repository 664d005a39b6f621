"""Comparisons of originals and releases shown by the app: image quality, changed cells,
correlation differences, downstream accuracy, and in-memory ZIP/PNG downloads.

Nothing here touches the disk: downloads are built in memory.
"""

from __future__ import annotations

import csv
import io
import math
import random
import re
import unicodedata
import zipfile
from collections import Counter

import numpy as np
import pandas as pd
import torch

from cadp.errors import InputError


def preload() -> None:
    """Import what this module's scores load on first use: ~0.8 s for scikit-image (with SciPy), ~0.2-0.9 s
    for scikit-learn, ~0.06 s for pandas' Styler (the app's highlighted table). The app calls it in a
    background thread when it loads a model, so that a session's first release does not wait for it."""
    import pandas.io.formats.style  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: F401 - lazy attributes


def _channels(pixels) -> np.ndarray:
    """An image as (channels, height, width) floats."""
    array = torch.as_tensor(np.array(pixels) if isinstance(pixels, np.ndarray) else pixels).detach().cpu().float().numpy()
    return array.reshape(-1, *array.shape[-2:])


def image_quality(original, released) -> dict[str, float]:
    """SSIM and PSNR (dB) of a release against its original, pixel values on [0, 255], each colour channel
    compared as itself, as the evaluation does (averaged into grey first, a release with its channels swapped
    scored as a perfect copy)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = np.clip(_channels(original), 0, 255)
    b = np.clip(_channels(released), 0, 255)
    ssim = float(structural_similarity(a, b, data_range=255.0, channel_axis=0))
    psnr = float(peak_signal_noise_ratio(a, b, data_range=255.0)) if not np.array_equal(a, b) else float("inf")
    return {"ssim": ssim, "psnr": psnr}


def latent_distance(latent, noisy_latent) -> float:
    """L1 distance ||M(z) - z||_1 of one record."""
    return float((torch.as_tensor(noisy_latent) - torch.as_tensor(latent)).abs().sum())


def batch_zip(files: list[tuple[str, bytes]], manifest: list[dict], guarantee: str) -> bytes:
    """A ZIP (in memory) of the released PNGs, a manifest.csv (one row per file: released condition, mechanism,
    cost, noise source, and where the rows have one, polarity) and guarantee.txt, so that the download carries its
    own privacy terms. Facts about these records (copies of one record) are not part of it: ``cautions_text``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
        table = io.StringIO()
        fields = ["file", "condition", "mechanism", "cost", "noise"] + ["polarity"] * any("polarity" in row
                                                                                      for row in manifest)
        writer = csv.DictWriter(table, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(manifest)
        archive.writestr("manifest.csv", table.getvalue())
        archive.writestr("guarantee.txt", guarantee.rstrip("\n") + "\n")
    return buffer.getvalue()


CAUTIONS_HEADER = ("Not part of the release: facts about the records of this upload (such as copies of one record), "
                   "for whoever made the release. Share the privatized files, manifest.csv and guarantee.txt only.")


def cautions_text(cautions: str, release_id: str) -> str:
    """cautions.txt as the app offers it beside a release (never inside its ZIP: the CLI keeps it to the runner
    too), saying first that it is not part of the release; ``release_id`` as ``release_id_line`` says it."""
    return f"{CAUTIONS_HEADER}\n\n{cautions.rstrip(chr(10))}\n\n{release_id_line(release_id)}\n"


def new_release_id() -> str:
    """A release's id, drawn at random: a text download without one (terms, cautions) had the same bytes for the same
    table and settings, and the app's media store serves each file at a hash of its bytes, to anyone who asks, so
    whoever held a candidate table could ask whether some visitor was releasing it."""
    import secrets

    return secrets.token_hex(8)


def release_id_line(release_id: str) -> str:
    return (f"Release id: {release_id} (drawn at random when the release was made, so that this file's bytes are "
            "its own; it tells nothing of the records).")


def release_tag(mechanism, seeded: bool = False) -> str:
    """What a released file's name says about its terms: ``laplace-eps10``, ``metric-eps1-per-unit`` (epsilon per
    unit of latent distance), or ``not-private`` (paper, a fixed seed). The full terms are inside the file."""
    if not mechanism.formal or seeded:
        return "not-private"
    from cadp.mechanisms import written_up  # (rounded up: a name never says less epsilon than its release spent)

    return f"{mechanism.name}-eps{written_up(mechanism.epsilon)}" + ("-per-unit" if mechanism.name == "metric" else "")


def _name_part(text: str) -> str:
    """``text`` as part of a file name: letters (any script), digits and ``._-`` only (``T-shirt/top`` ->
    ``T-shirt-top``, ``Lungenentzündung`` stays)."""
    return re.sub(r"[^\w.-]+", "-", unicodedata.normalize("NFC", text)).strip("-._")


def released_name(name: str, index: int, copy_name: bool = True, tag: str = "not-private",
                  label: str | None = None) -> str:
    """The download's file name: numbered, with the input's stem (letters, digits, ``._-`` only) when
    ``copy_name``; without it (a randomized or resampled label: names often carry the true one) the number only.
    Then ``label-<released label>`` when ``label`` is given (the label released with the image, never the
    true one unless it was kept), and last the release's ``tag`` (``release_tag``). At most 255 bytes in UTF-8
    (most file systems' limit: a longer name cannot be saved or extracted): the stem, then the label, is shortened,
    the number keeping names unique."""
    parts = [f"{index:04d}"]
    if copy_name:
        parts.append(_name_part(name.rsplit("/", 1)[-1].rsplit(".", 1)[0]) or "image")
    if label is not None:
        parts.append(f"label-{_name_part(label) or 'x' + label.encode().hex()[:16]}")  # never a word like a class
    parts.append(tag)
    excess = len("-".join(parts).encode()) + len(".png") - 255
    for position in range(1, len(parts) - 1):  # the stem, then the label
        if excess <= 0:
            break
        part = parts[position].encode()
        first = len(parts[position][0].encode())  # at least a whole character
        parts[position] = part[:max(first, len(part) - excess)].decode("utf-8", "ignore").rstrip("-._")
        excess -= len(part) - len(parts[position].encode())
    return "-".join(parts) + ".png"


def released_description(terms: str, label: str, handling: str) -> str:
    """A released image's Description text: the release's terms and the label released with it (so that the
    file, shared alone, cannot be given the true label by hand in place of a randomized or resampled one)."""
    how = {"kept": "kept: released as given", "randomized": "randomized: not necessarily the true label",
           "resampled": "resampled: drawn independently of the image"}.get(handling, handling)
    return f"{terms} Released label: {label} ({how})."


POLARITY_AS_READ = "as the input"  # a manifest's polarity column, for an image the model read as it is


def release_files(result, names: list[str], class_names: list[str], handling: str, *, tag: str, terms: str,
                  mechanism: str, cost: str, written_back: list[bool] | None = None, keep_names: bool = False
                  ) -> tuple[list[tuple[str, bytes]], list[dict]]:
    """The PNG files of an image release and their manifest rows. Each PNG carries ``terms`` and its released
    label. The input names are kept (numbered in the upload's order) only with ``keep_names`` and a kept label;
    else the files are numbered in an order drawn at random (names often identify a patient or carry the true
    label, and the upload's order would tell which input each is). An image to be written back in its input's polarity (``written_back``, one
    flag per image, ``uploads.written_back``: all or none of a release's, so the column says nothing of one input)
    is inverted back, and the manifest then says so of each file."""
    from cadp.uploads import INVERTED_BACK, in_input_polarity, png_bytes

    order = list(range(len(names)))
    copied = keep_names and handling == "kept"
    if not copied:
        random.SystemRandom().shuffle(order)
    files, manifest = [], []
    for number, index in enumerate(order):
        label = class_names[int(result.released_condition["label"][index])]
        file = released_name(names[index], number, copy_name=copied, tag=tag, label=label)
        description = released_description(terms, label, handling)
        flipped = bool(written_back and written_back[index])
        files.append((file, png_bytes(in_input_polarity(result.privatized[index].numpy(), flipped),
                                      description=description)))
        manifest.append({"file": file, "condition": label, "mechanism": mechanism, "cost": cost,
                         "noise": result.noise_source}
                        | ({"polarity": INVERTED_BACK if flipped else POLARITY_AS_READ} if any(written_back or ()) else {}))
    return files, manifest


def plural(noun: str, count: int) -> str:
    """``noun`` as ``count`` of it is said: 'row' for one, 'rows' otherwise."""
    return noun if count == 1 else noun + "s"


def counted(count: int, noun: str) -> str:
    """'1 release', '2 releases' (a count and its noun, in the plural but for one)."""
    return f"{count:,} {plural(noun, count)}"


def repeated_images_note(keys: list[str], cost: str, extras: tuple[int, str] | None = None,
                         formal: bool = True) -> str | None:
    """What a release of several images says when some are the same record (``keys``: the ledger's record keys;
    ``cost``: one release's, as the ledger writes it; ``extras``: the number and cost of the further releases of
    the first image's record in the same press, the strip and the gallery), or None: each copy is a release of
    that record."""
    counts = Counter(keys)
    repeated = [count for count in counts.values() if count > 1]
    if not repeated:
        return None
    first = counts[keys[0]]
    also = (f"; the first image's record {first} times {cost} and {counted(extras[0], 'more release')} by the strip and the "
            f"gallery ({extras[1]})" if extras and first > 1 else "")
    return (f"{sum(repeated)} images of this upload are copies of {counted(len(repeated), 'record')} (the same pixels after "
            "preprocessing, or their negative): each copy was released separately, with its own noise, so such a "
            f"record has cost {_copies_cost(max(repeated), cost, formal)} here{also} (the ledger adds them up; each file's "
            "cost in manifest.csv is one release's).")


def _copies_cost(most: int, cost: str, formal: bool) -> str:
    """What a record released ``most`` times costs, as the notes on copies say it: k times one release's epsilon,
    or, without a formal guarantee (paper), k releases and no epsilon to add up (as the terms say it)."""
    if formal:
        return f"up to {most} times {cost}"
    return f"up to {most} releases (no formal guarantee: there is no epsilon to add up)"


def repeated_rows_note(keys: list[str], cost: str, released: bool, formal: bool = True) -> str | None:
    """What the table page says when some rows of a table are the same record (``keys``: the ledger's row keys;
    ``cost``: one release's, as the ledger writes it), before a release (``released`` False) or after it, or None:
    each copy is a release of that record, and the guarantee the page states is one release's."""
    counts = Counter(keys)
    repeated = [count for count in counts.values() if count > 1]
    if not repeated:
        return None
    rows, records, most = sum(repeated), len(repeated), max(repeated)
    if released:
        return (f"{rows:,} rows of this table were copies of {counted(records, 'record')} (the same values in the model's "
                "columns): each copy was released separately, with its own noise, so such a record has cost "
                f"{_copies_cost(most, cost, formal)} in this release (the ledger adds them up; the guarantee above "
                "is one release's).")
    return (f"{rows:,} rows of this table are copies of {counted(records, 'record')} (the same values in the model's "
            "columns): each copy is released separately, with its own noise, so a release of this table costs such "
            f"a record {_copies_cost(most, cost, formal)} (the ledger adds them up). Remove the copies first if "
            "they are one patient's repeated row.")


def download_note(handling: str, first_file: str, written_back: bool = False, keep_names: bool = False,
                  uploaded: bool = True) -> str:
    """What the app says of an image release's downloaded files (``release_files``, ``keep_names`` as given to it):
    their names and contents (``written_back``: the images were inverted back, ``uploads.written_back``);
    ``uploaded``: the inputs are uploads (a bundled test image has no file name of its own)."""
    inverted_note = (" Every image was inverted for the model (Inversion: always): each is shown and downloaded "
                     "inverted back, as you uploaded it.")
    if not uploaded:
        names = (f"Downloaded files are numbered; each name carries the label "
                 f"{'kept' if handling == 'kept' else 'released'} with its image ({first_file}).")
    elif handling == "kept" and not keep_names:
        names = ("Downloaded files are numbered in an order drawn at random: your file names (which can identify a "
                 "patient) and the upload's order are left out (\"Keep your file names\" above keeps them). Each "
                 f"name carries the label kept with its image ({first_file}).")
    elif handling == "kept":
        names = (f"Downloaded files keep your file names ({first_file}), numbered in the upload's order (a ZIP's "
                 "folders are left out of the names: two files of one name in two folders differ by their number "
                 "only, in the order the page's Show list gives them): rename them before sharing if a name "
                 "identifies a patient. The guarantee covers the image content, not file names.")
    else:
        names = ("Downloaded files are numbered in an order drawn at random: with a label that is not kept, names "
                 "(which often carry the true label) and the upload's order are left out. Each name carries the "
                 f"label released with its image ({first_file}): share it with that label, never with the true one.")
    return (names + inverted_note * written_back + "\n\nEach PNG carries this release's terms and its released label as its Description text "
            "(shown by image viewers' properties or `exiftool`); a name ending in -not-private marks a release "
            "without a formal guarantee (paper, or a fixed seed).")


# Magma's stops written out: by name, Streamlit's chart theme took its first colour (#000004) for one of its own
# and drew the smallest values pink, near the largest; the pages also draw these maps with theme=None
LATENT_MAP_COLOURS = [[0.0, "#000004"], [0.25, "#51127c"], [0.5, "#b73779"], [0.75, "#fc8961"], [1.0, "#fcfdbf"]]


def latent_map_figure(array, title: str):
    """A small image-like heat map (row 0 at the top, square cells; NaN cells empty), from 0 (black) to its
    largest value (pale yellow), with a thin colour bar; go, not px: ~5 ms instead of ~30 per map."""
    import plotly.graph_objects as go

    figure = go.Figure(go.Heatmap(z=array, colorscale=LATENT_MAP_COLOURS, zmin=0, showscale=True,
                                  colorbar=dict(thickness=8, len=0.9, tickfont=dict(size=9))))
    figure.update_layout(title=title, height=220, margin=dict(l=0, r=0, t=30, b=0))
    figure.update_xaxes(visible=False, constrain="domain")
    figure.update_yaxes(visible=False, autorange="reversed", scaleanchor="x", constrain="domain")
    return figure


# --------------------------------------------------------------------------- tables

def _aligned(original: pd.DataFrame, released: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The original rows and their releases, row by row, in the columns the release has (``privatize`` leaves out
    a column its model does not know, such as an id: the caller's whole frame is compared on the rest)."""
    if len(original) != len(released):
        raise InputError(f"the original has {len(original):,} rows and the release {len(released):,}: compare a "
                         "release with the rows it was made from (PrivatizationResult.original_frame)")
    shared = [column for column in original.columns if column in released.columns]
    if not shared:
        raise InputError("the original and the release have no column in common: compare a release with the rows "
                         "it was made from (PrivatizationResult.original_frame)")
    return original.reset_index(drop=True)[shared], released.reset_index(drop=True)[shared]


def changed_cells(original: pd.DataFrame, released: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame: True where a released cell differs from the original (numbers: beyond 1e-9 relative), in
    the columns both have."""
    original, released = _aligned(original, released)
    changed = pd.DataFrame(False, index=original.index, columns=original.columns)
    for column in original.columns:
        a, b = original[column], released[column]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            a_values, b_values = a.to_numpy(float), b.to_numpy(float)
            changed[column] = ~np.isclose(a_values, b_values, rtol=1e-9, atol=1e-12, equal_nan=True)
        else:  # (a class written otherwise, 2 for 2.0, is the same class)
            a_classes, b_classes = _classes(a, b)
            changed[column] = a_classes != b_classes
    return changed


def changed_counts_words(changed: pd.DataFrame) -> str:
    """What the highlight shows, in words (not by colour alone): how many cells of each column changed."""
    rows = len(changed)
    return "; ".join(f"{column}: {int(changed[column].sum())} of {rows}" for column in changed.columns)


def highlighted_changes(original: pd.DataFrame, released: pd.DataFrame):
    """``released`` as a pandas Styler: cells that differ from ``original`` highlighted, floats in short form."""
    changed = changed_cells(original, released)
    changed.index = released.index  # (row by row: the release keeps its caller's index, changed_cells counts)
    styled = released.style.apply(lambda _: changed.reindex(columns=released.columns, fill_value=False).map(
        lambda c: "background-color: #fde68a" if c else ""), axis=None)
    # 53, not 53.000; an empty cell (an empty category released, pandas' NA or NaN) empty, not "<NA>" or "nan"
    return styled.format(lambda v: "" if v is pd.NA or (isinstance(v, float) and math.isnan(v))
                         else f"{v:.6g}" if isinstance(v, float) else v)


def numeric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].nunique() > 1]


def correlation_difference(original: pd.DataFrame, released: pd.DataFrame) -> pd.DataFrame:
    """corr(released) - corr(original) over the numeric columns (Pearson)."""
    columns = [c for c in numeric_columns(original) if c in numeric_columns(released)]
    if len(columns) < 2:
        raise InputError("the correlation difference needs at least two numeric columns that vary")
    return released[columns].astype(float).corr() - original[columns].astype(float).corr()


def latent_map_words(array: np.ndarray) -> str:
    """A latent difference map in words: its mean and largest |M(z) - z| (cells without a coordinate left out)."""
    values = np.asarray(array, dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return "no coordinates"
    return f"{values.size:,} coordinates: mean |M(z) − z| {values.mean():.2f}, largest {values.max():.2f}"


def distribution_figure(original: pd.DataFrame, released: pd.DataFrame, column: str):
    """Overlaid histograms of one column in the original and the released table, on shared bins."""
    import plotly.graph_objects as go  # go, not px: ~5 ms instead of ~45 per page run

    # two colours apart in hue and lightness, and a hatch on the privatized bars: told apart without colour too
    figure = go.Figure([go.Histogram(x=frame[column], name=name, opacity=0.6, bingroup="table",
                                     marker={"color": colour, "pattern": {"shape": pattern}})
                        for name, frame, colour, pattern in (("original", original, "#1f4e79", ""),
                                                             ("privatized", released, "#e08a00", "/"))])
    figure.update_layout(barmode="overlay", xaxis_title=column, yaxis_title="count", legend_title_text="table")
    return figure


def correlation_figure(difference: pd.DataFrame):
    """Heat map of ``correlation_difference`` on a fixed -1..1 scale."""
    import plotly.graph_objects as go

    heat = go.Figure(go.Heatmap(z=difference.values, x=difference.columns, y=difference.index,
                                colorscale="RdBu", zmid=0, zmin=-1, zmax=1))
    heat.update_layout(title="Correlation difference (privatized − original)", height=420)
    return heat


MIN_TASK_ROWS = 10  # fewer rows cannot train and test a classifier that says anything


def task_columns(frame: pd.DataFrame, kinds: dict[str, str], handlings: dict) -> tuple[list[str], int]:
    """(columns a downstream classifier can predict: 2 to 20 values, an empty cell counting as one; index of the
    default one). A kept condition first, then another condition or a category: a number with few values is
    rarely the task. None below ``MIN_TASK_ROWS`` rows."""
    if len(frame) < MIN_TASK_ROWS:
        return [], 0
    targets = [c for c in frame.columns if 2 <= frame[c].nunique(dropna=False) <= 20]
    preferred = [c for c, h in handlings.items() if h.handling == "kept"] + list(handlings) + [
        c for c in targets if kinds.get(c) == "categorical"]
    default = next((c for c in preferred if c in targets), targets[0] if targets else None)
    return targets, targets.index(default) if targets else 0


def _classes(original: pd.Series, released: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The classes of the original and the released cells, as texts: a released value written otherwise than an
    original class of the same number (2 for 2.0: a CSV read as floats, a release written as whole numbers) is that
    class, where exactly one class has its number; an empty cell is a class of its own (pandas 3 keeps NaN through
    astype(str), and scikit-learn refuses it)."""
    def texts(cells: pd.Series) -> list[str]:
        return cells.astype(object).where(cells.notna(), "(empty)").astype(str).tolist()

    def number(text: str) -> float | None:
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    labels_o, labels_p = texts(original), texts(released)
    classes = set(labels_o)
    by_number: dict[float, list[str]] = {}
    for name in classes:
        if number(name) is not None:
            by_number.setdefault(number(name), []).append(name)

    def as_class(text: str) -> str:
        if text in classes:
            return text
        alike = by_number.get(number(text), [])
        return alike[0] if len(alike) == 1 else text

    return np.array(labels_o, dtype=object), np.array([as_class(text) for text in labels_p], dtype=object)


def downstream_accuracy(original: pd.DataFrame, released: pd.DataFrame, target: str, *,
                        test_fraction: float = 0.3, seed: int = 0) -> dict[str, float]:
    """Logistic regression predicting ``target``: trained on released rows (p/o) or real rows (o/o),
    both tested on held-out real rows. The split is by row, so no tested row was trained on."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if target not in original.columns or target not in released.columns:
        raise InputError(f"no column named {target!r}" + (" in the release" if target in original.columns else ""))
    original, released = _aligned(original, released)
    if original[target].nunique() < 2:
        raise InputError(f"the target {target!r} has a single value; pick a column with at least two classes")
    features = pd.get_dummies(pd.concat([original, released], keys=["o", "p"]).drop(columns=[target]), dtype=float)
    features = features.replace([np.inf, -np.inf], np.nan).fillna(0.0)  # cells without a finite number count as 0
    # a column of numbers about 1e154 and up overflows the scaler's variance (NaN, which the classifier refuses,
    # after the release was made): such columns are divided by their largest size first, which standardizing undoes
    size = features.abs().max()
    features = features.div(size.where(size > 1e100, 1.0), axis=1)
    features_o, features_p = features.loc["o"].to_numpy(), features.loc["p"].to_numpy()
    labels_o, labels_p = _classes(original[target], released[target])
    order = np.random.default_rng(seed).permutation(len(original))
    n_test = max(2, int(round(test_fraction * len(original))))
    test, train = order[:n_test], order[n_test:]
    if len(train) < 2:
        raise InputError("the table is too small to train and test a classifier")
    results = {"chance": float(pd.Series(labels_o[test]).value_counts(normalize=True).max()),
               "n_train": len(train), "n_test": len(test)}
    for name, x, y in (("o/o", features_o, labels_o), ("p/o", features_p, labels_p)):
        if len(set(y[train])) < 2:  # one class to learn: predicting it, scored on the real rows as the others
            results[name] = float(np.mean(labels_o[test] == y[train][0]))
            continue
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        classifier.fit(x[train], y[train])
        results[name] = float(classifier.score(features_o[test], labels_o[test]))
    return results


FITTED_HERE_UNEVALUATED = ("this model was fitted here and no evaluation was run for it (`python -m cadp.evaluate` "
                           "measures a saved model folder, such as one `python -m cadp.train` writes, not a model "
                           "fitted in the app)")


NOT_EVALUATED = ("this model's folder holds no evaluation of its releases (`python -m cadp.evaluate utility --model "
                 "FOLDER` runs one)")

def with_command(words: str, command: str) -> str:
    """NOT_EVALUATED or EVALUATED_OTHER_WEIGHTS naming the model's own command (``ui.evaluate_command``) where they
    say FOLDER."""
    return words.replace("`python -m cadp.evaluate utility --model FOLDER`", f"`{command}`")


EVALUATED_OTHER_WEIGHTS = ("this model's folder holds an evaluation of its releases measured on other weights than "
                           "its model.safetensors (replaced since), which is not this model's (`python -m "
                           "cadp.evaluate utility --model FOLDER` measures it)")


def downstream_words(accuracy: dict, no_evaluation: str | None = None) -> str:
    """How ``downstream_accuracy``'s numbers were made, and why its o/o differs from an evaluation's (or, for a
    model without one, ``no_evaluation``: why there is none, FITTED_HERE_UNEVALUATED, NOT_EVALUATED or
    EVALUATED_OTHER_WEIGHTS)."""
    tested = accuracy["n_test"]
    text = (f"Logistic regression, trained on {accuracy['n_train']} rows of this release (privatized for p/o, their "
            f"originals for o/o) and tested on the other {tested} real rows: a split of this release alone"
            + (f"; {no_evaluation}." if no_evaluation else
               ", so its o/o differs from the model's evaluation (trained on the model's training rows)."))
    if isinstance(tested, int) and tested > 0:
        text += f" With {tested} test rows, one row moves an accuracy by {1 / tested:.3f}."
    if no_evaluation == FITTED_HERE_UNEVALUATED:  # its model learned from every row but its validation share
        text += (" The model was fitted on this table, its test rows included (but any it held out to choose "
                 "when to stop): they are held out from the classifiers, not from the model, so p/o may read "
                 "higher than on rows the model never saw.")
    if accuracy["chance"] >= max(accuracy["p/o"], accuracy["o/o"]):
        text += (" Predicting the majority class alone does as well as both classifiers here: on this table the "
                 "check cannot tell what the release keeps for this task.")
    return text


def kept_target_words(target: str, no_evaluation: str | None = None) -> str:
    """Why a high accuracy for a kept condition says little about what of the rows' own values survives (a model
    without an evaluation, ``no_evaluation``: why nothing measured it, which the caption above this one (made by
    ``downstream_words``) gives, so it is not said twice)."""
    return (f"{target} is a kept condition, released exactly: at small ε a released row is close to a fresh sample "
            f"of its {target} group, so this accuracy comes from the model's picture of each group, not from the "
            "rows' own values. " + ("Re-identification would say how much of those survives; it was not measured "
                                    "for this model (the caption above says why)." if no_evaluation else
                                    "Re-identification (the model's evaluation) says how much of those survives."))


def downstream_check(original: pd.DataFrame, released: pd.DataFrame, target: str) -> dict[str, float] | str:
    """``downstream_accuracy``, or the sentence saying why there is none for ``target``."""
    try:
        return downstream_accuracy(original, released, target)
    except InputError as error:
        return f"No downstream check for {target}: {error}."


def no_task_reason(frame: pd.DataFrame) -> str:
    """Why ``task_columns`` found no column to predict in ``frame``."""
    if len(frame) < MIN_TASK_ROWS:
        return (f"No downstream check: it needs at least {MIN_TASK_ROWS} rows to train and test a classifier, and "
                f"this release has {len(frame)}.")
    return "No downstream check: no column of this release has between 2 and 20 distinct values to predict."


def correlation_or_reason(original: pd.DataFrame, released: pd.DataFrame) -> pd.DataFrame | str:
    """``correlation_difference``, or the sentence saying why there is none."""
    try:
        return correlation_difference(original, released)
    except InputError as error:
        return str(error)


def shuffled_rows_note(seed: int | None) -> str:
    """What a table release's download says of its row order (``download_rows``)."""
    return ("Rows are written in an order drawn at random: the input's order would show through (a file sorted by "
            "a column, privatized or not, would tell each row's rank in it); the page shows them in the input's "
            "order, for you only."
            + ("" if seed is None else f" With the fixed seed {seed} the order is drawn from the seed: anyone with "
               "it can reproduce it (not private: reproducible seed)."))


def download_rows(released: pd.DataFrame, seed: int | None) -> tuple[pd.DataFrame, str]:
    """The released rows as a download writes them, always in an order drawn at random (as the batch CLI writes
    them), and the note saying so: a file sorted by a privatized column would otherwise tell each row's rank."""
    order = np.random.default_rng(seed).permutation(len(released))  # seed None: fresh entropy from the OS
    return released.iloc[order].reset_index(drop=True), shuffled_rows_note(seed)
