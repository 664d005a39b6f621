"""On-the-fly tabular fit: cadp.train.fit_tabular on a synthetic 1,000 x 15 CSV, as an upload would be fitted.

``python -m bench.fit '<json>'`` runs one fit in its own process and prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cadp.runtime import configure_allocator

CONDITION = "group"  # the one categorical condition column
APP_DEFAULT_STEPS = 400  # the "Training steps" slider's default on the tabular page


def synthetic_frame(rows: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A 15-column table: 9 numeric (integers and decimals) and 6 categorical, most of them depending on the
    group (shifts of about half a standard deviation and group-specific category shares) and some on each
    other (systolic on age, weight on height, stage on age), so that a fit's quality can be judged by what it
    keeps: a classifier of the group trained on real rows reaches ~0.74 on new real rows (majority share 0.5)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], size=rows, p=[0.5, 0.3, 0.2])
    shift = pd.Series(group).map({"a": 0.0, "b": 1.0, "c": -1.0}).to_numpy()
    age = np.clip(rng.normal(50 + 8 * shift, 10), 18, 95).round().astype(int)
    height = np.round(rng.normal(170, 9, rows), 1)

    def by_group(options: list[str], shares: dict[str, list[float]]) -> np.ndarray:
        cumulative = np.array([shares[g] for g in group]).cumsum(1)
        return np.array(options)[(cumulative > rng.random((rows, 1))).argmax(1)]

    return pd.DataFrame({
        "age": age,
        "weight_kg": np.round(75 + 0.6 * (height - 170) + 5 * shift + rng.normal(0, 9, rows), 1),
        "height_cm": height,
        "systolic": np.round(100 + 0.6 * age + 4 * shift + rng.normal(0, 8, rows)).astype(int),
        "diastolic": np.round(rng.normal(80 + 3 * shift, 8)).astype(int),
        "cholesterol": np.round(rng.lognormal(5.3 + 0.1 * shift, 0.15), 0).astype(int),
        "glucose": np.round(rng.gamma(9, 11, rows) + 12 * shift.clip(0), 1),
        "income_k": np.round(rng.lognormal(3.8 + 0.3 * shift, 0.4), 2),
        "visits": rng.poisson(3 + 2 * shift.clip(0), rows) * 3 + rng.integers(0, 3, rows),
        "smoker": by_group(["yes", "no"], {"a": [0.2, 0.8], "b": [0.5, 0.5], "c": [0.1, 0.9]}),
        "region": rng.choice(["north", "south", "east", "west"], size=rows),
        "education": by_group(["primary", "secondary", "tertiary"],
                              {"a": [0.2, 0.5, 0.3], "b": [0.4, 0.4, 0.2], "c": [0.1, 0.4, 0.5]}),
        "married": rng.choice(["true", "false"], size=rows),
        "stage": np.clip((age - 30) // 15 + rng.integers(0, 2, rows), 1, 4),
        CONDITION: group,
    })


# "Usable quality": rows drawn from the fitted model (MODEL_ROWS; conditions of the training rows, latents
# N(0, I)), compared with HELD_OUT_ROWS new rows of the same generator, keep
#   (a) what a downstream task needs: a classifier of the group trained on them reaches at least
#       tstr_share_of_trtr x the accuracy of one trained on the real training rows (both tested on the new rows);
#   (b) the columns: mean per-column distance (KS for numbers, total variation for categories) at most
#       column_distance_above_floor above the floor, the distance between the real training rows and the new rows;
#   (c) the dependencies: mean |difference| of the correlations (encoded columns) over the pairs that depend on
#       each other (|correlation| > DEPENDENT_PAIR in the training rows and in the new rows) at most
#       dependency_above_floor above its floor.
# The thresholds were set (thirteenth round) so that each check rejects its own control, a table that keeps
# everything but what the check guards (CONTROLS): (a) the independent columns, (b) the numbers shifted by a
# quarter of a standard deviation, (c) the columns resampled within each group (the group's effects kept, the
# dependencies between columns lost). The first version (0.9, 0.05 and 0.05 over all pairs of encoded columns)
# let a control through check (c) and a 50-step fit through all three.
USABLE = {"tstr_share_of_trtr": 0.93, "column_distance_above_floor": 0.04, "dependency_above_floor": 0.03}
DEPENDENT_PAIR = 0.1
MODEL_ROWS = HELD_OUT_ROWS = 2000


def _parsed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` written as CSV and read back as an upload is (types as the app sees them)."""
    from cadp.data import load_table

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "synthetic.csv"
        frame.to_csv(path, index=False)
        return load_table(str(path)).frame


def _group_accuracy(train: pd.DataFrame, test: pd.DataFrame, kinds: dict[str, str]) -> float:
    """Accuracy on ``test`` of a logistic regression of the group (standardized numbers, one-hot categories)
    trained on ``train``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in train.columns if c != CONDITION and kinds[c] == "numeric"]
    categorical = [c for c in train.columns if c != CONDITION and kinds[c] != "numeric"]

    def features(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[numeric + categorical].copy()
        out[categorical] = out[categorical].astype(str)
        return out

    classifier = make_pipeline(
        ColumnTransformer([("numbers", StandardScaler(), numeric),
                           ("categories", OneHotEncoder(handle_unknown="ignore"), categorical)]),
        LogisticRegression(max_iter=2000))
    classifier.fit(features(train), train[CONDITION].astype(str))
    return float((classifier.predict(features(test)) == test[CONDITION].astype(str).to_numpy()).mean())


def model_rows(model, train: pd.DataFrame, count: int = MODEL_ROWS, seed: int = 0) -> pd.DataFrame:
    """``count`` rows drawn from the model: the conditions of randomly picked training rows, latents N(0, I)
    (temperature 1), decoded."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(train), (count,), generator=generator).numpy()
    conditions = train.iloc[picks][[CONDITION]].reset_index(drop=True)
    with torch.inference_mode():
        latents = torch.randn(count, model.latent_dim, generator=generator)
        rows = model.data_encoder.inverse_transform(model.decode(latents, model.condition_encoder.transform(conditions)))
    return pd.concat([rows.reset_index(drop=True), conditions], axis=1)[list(train.columns)]


def independent_columns(train: pd.DataFrame, kinds: dict[str, str], seed: int = 0) -> pd.DataFrame:
    """Control of (a): every column resampled on its own (each column's distribution kept, every dependency,
    the group's included, lost)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: train[c].to_numpy()[rng.integers(0, len(train), len(train))] for c in train.columns})


def shifted_numbers(train: pd.DataFrame, kinds: dict[str, str], seed: int = 0) -> pd.DataFrame:
    """Control of (b): the training rows with every number a quarter of its column's standard deviation higher
    (dependencies and the group's effects kept, the columns' distributions moved)."""
    shifted = train.copy()
    for column in train.columns:
        if kinds[column] == "numeric":
            shifted[column] = train[column] + 0.25 * train[column].std()
    return shifted


def within_groups(train: pd.DataFrame, kinds: dict[str, str], seed: int = 0) -> pd.DataFrame:
    """Control of (c): every column resampled on its own within each group (each column's distribution per
    group kept, so the group is as predictable as in real rows; the dependencies between columns lost)."""
    rng = np.random.default_rng(seed)
    parts = [pd.DataFrame({c: part[c].to_numpy()[rng.integers(0, len(part), len(part))] for c in train.columns})
             for _, part in train.groupby(CONDITION)]
    return pd.concat(parts, ignore_index=True)[list(train.columns)]


CONTROLS = {"independent columns": (independent_columns, "group accuracy"),
            "numbers shifted by 0.25 sd": (shifted_numbers, "column distance"),
            "columns resampled within groups": (within_groups, "dependencies")}


def _dependencies(model, train: pd.DataFrame, held_out: pd.DataFrame, rows: pd.DataFrame) -> tuple[float, float, int]:
    """(mean |corr(rows) - corr(held_out)|, the same for the training rows: the floor, number of pairs) over the
    pairs of encoded columns with |correlation| > DEPENDENT_PAIR in the training and the held-out rows."""
    def correlations(frame: pd.DataFrame) -> np.ndarray:
        encoded = model.data_encoder.transform(frame).double().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.nan_to_num(np.corrcoef(encoded, rowvar=False))  # a column without spread: 0
        return matrix[np.triu_indices(len(matrix), k=1)]

    real, new, drawn = correlations(train), correlations(held_out), correlations(rows)
    pairs = (np.abs(real) > DEPENDENT_PAIR) & (np.abs(new) > DEPENDENT_PAIR)
    if not pairs.any():
        return float("nan"), float("nan"), 0
    return float(np.abs(drawn - new)[pairs].mean()), float(np.abs(real - new)[pairs].mean()), int(pairs.sum())


def fit_quality(model, train: pd.DataFrame, held_out: pd.DataFrame, kinds: dict[str, str],
                rows: pd.DataFrame | None = None) -> dict:
    """The USABLE checks of ``rows`` (default: drawn from ``model``) against ``held_out``, with their floors;
    ``failed`` names the checks that rejected them."""
    from cadp.evaluate import fidelity

    rows = model_rows(model, train) if rows is None else rows

    def mean_distance(found: dict) -> float:
        return float(np.mean([v for v in found["columns"].values() if v is not None]))

    real, drawn = fidelity(model, held_out, train), fidelity(model, held_out, rows)
    trtr, tstr = _group_accuracy(train, held_out, kinds), _group_accuracy(rows, held_out, kinds)
    dependency, dependency_floor, pairs = _dependencies(model, train, held_out, rows)
    result = {"rows": len(rows), "held_out_rows": len(held_out), "tstr": tstr, "trtr": trtr,
              "majority": float(held_out[CONDITION].value_counts(normalize=True).max()),
              "column_distance": mean_distance(drawn), "column_distance_floor": mean_distance(real),
              "dependency_difference": dependency, "dependency_difference_floor": dependency_floor,
              "dependent_pairs": pairs}
    failed, checks = [], []
    if not tstr >= USABLE["tstr_share_of_trtr"] * trtr:
        checks.append("group accuracy")
        failed.append(f"group accuracy {tstr:.3f} < {USABLE['tstr_share_of_trtr']:g} x {trtr:.3f} (real rows)")
    if not result["column_distance"] <= result["column_distance_floor"] + USABLE["column_distance_above_floor"]:
        checks.append("column distance")
        failed.append(f"column distance {result['column_distance']:.3f} > floor "
                      f"{result['column_distance_floor']:.3f} + {USABLE['column_distance_above_floor']:g}")
    if not dependency <= dependency_floor + USABLE["dependency_above_floor"]:  # (nan: no dependent pair: fails)
        checks.append("dependencies")
        failed.append(f"dependencies {dependency:.3f} > floor {dependency_floor:.3f} + "
                      f"{USABLE['dependency_above_floor']:g} ({pairs} dependent pairs)")
    result.update(usable=not failed, failed=failed, failed_checks=checks)
    return result


def measure_fit(steps: int | None = None, rows: int = 1000, threads: int | None = None,
                controls: bool = False, seed: int = 0) -> dict:
    """Seconds of fit_tabular (its default steps when ``steps`` is None), the validation NLL it reached and
    its quality (``fit_quality`` against HELD_OUT_ROWS new rows of the generator); with ``controls``, also the
    quality of each of the CONTROLS, which its own check must reject.

    The first fit in a process also imports torch._dynamo (through torch.optim); that
    import is timed on its own as ``first_use_import_s``.
    """
    import torch

    from bench.compute import peak_rss_mib
    from cadp.data import infer_column_kind
    from cadp.train import fit_tabular

    if threads:
        torch.set_num_threads(threads)
    frame, held_out = _parsed(synthetic_frame(rows, seed=0)), _parsed(synthetic_frame(HELD_OUT_ROWS, seed=1))
    kinds = {column: infer_column_kind(frame[column]) for column in frame.columns}
    reached = {}

    def progress(share, loss):
        reached.update(share=share, loss=loss)

    options = {} if steps is None else {"steps": steps}
    start = time.perf_counter()
    import torch._dynamo  # noqa: F401 - torch.optim imports it on first use: timed apart from the fit
    first_use_import = time.perf_counter() - start
    start = time.perf_counter()
    model = fit_tabular(frame, [CONDITION], name="bench", dataset="upload", progress=progress, seed=seed, **options)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    result = {"rows": len(frame), "columns": frame.shape[1], "condition": CONDITION,
              "numeric_columns": sum(kind == "numeric" for kind in kinds.values()),
              "categorical_columns": sum(kind == "categorical" for kind in kinds.values()),
              "steps": steps if steps is not None else "fit_tabular default", "seed": seed,
              "seconds": seconds, "first_use_import_s": first_use_import,
              "validation_nll_per_dim": float(reached.get("loss", float("nan"))),
              "latent_dim": model.config.latent_dim, "torch_threads": torch.get_num_threads(),
              "peak_rss_mib": peak, "quality": fit_quality(model, frame, held_out, kinds)}
    if controls:  # each must be rejected, by its own check (CONTROLS)
        result["controls"] = {name: fit_quality(model, frame, held_out, kinds, rows=make(frame, kinds))
                              | {"check": check} for name, (make, check) in CONTROLS.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    configure_allocator()  # as the app and the CLIs run
    print(json.dumps(measure_fit(**json.loads((argv or sys.argv[1:])[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
