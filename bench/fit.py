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


# "Usable quality", fixed before any fit was judged by it: rows drawn from the fitted model (conditions of the
# training rows, latents N(0, I)), compared with 1,000 new rows of the same generator, keep
#   - what a downstream task needs: a classifier of the group trained on them reaches >= 90% of the accuracy
#     of one trained on the real training rows (TSTR / TRTR; both tested on the new rows);
#   - the columns: mean per-column distance (KS for numbers, total variation for categories) at most 0.05
#     above that between the real training rows and the new rows (the sampling noise of 1,000 rows);
#   - the dependencies: mean absolute difference of the correlation matrices at most 0.05 above the same floor.
USABLE = {"tstr_share_of_trtr": 0.9, "column_distance_above_floor": 0.05, "correlation_above_floor": 0.05}


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


def model_rows(model, train: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """As many rows as ``train`` drawn from the model: the conditions of randomly picked training rows,
    latents N(0, I) (temperature 1), decoded."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(train), (len(train),), generator=generator).numpy()
    conditions = train.iloc[picks][[CONDITION]].reset_index(drop=True)
    with torch.inference_mode():
        latents = torch.randn(len(train), model.latent_dim, generator=generator)
        rows = model.data_encoder.inverse_transform(model.decode(latents, model.condition_encoder.transform(conditions)))
    return pd.concat([rows.reset_index(drop=True), conditions], axis=1)[list(train.columns)]


def independent_columns(train: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The control that learned nothing conditional: every column resampled on its own from the training rows
    (each marginal kept, every dependency, the group's included, lost)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: train[c].to_numpy()[rng.integers(0, len(train), len(train))] for c in train.columns})


def fit_quality(model, train: pd.DataFrame, held_out: pd.DataFrame, kinds: dict[str, str],
                rows: pd.DataFrame | None = None) -> dict:
    """The USABLE checks of ``rows`` (default: drawn from ``model``) against ``held_out``, with their floors."""
    from cadp.evaluate import fidelity

    rows = model_rows(model, train) if rows is None else rows

    def mean_distance(found: dict) -> float:
        return float(np.mean([v for v in found["columns"].values() if v is not None]))

    real, drawn = fidelity(model, held_out, train), fidelity(model, held_out, rows)
    trtr, tstr = _group_accuracy(train, held_out, kinds), _group_accuracy(rows, held_out, kinds)
    result = {"tstr": tstr, "trtr": trtr, "majority": float(held_out[CONDITION].value_counts(normalize=True).max()),
              "column_distance": mean_distance(drawn), "column_distance_floor": mean_distance(real),
              "correlation_difference": drawn["corr_diff"], "correlation_difference_floor": real["corr_diff"]}
    failed = []
    if tstr < USABLE["tstr_share_of_trtr"] * trtr:
        failed.append(f"group accuracy {tstr:.3f} < {USABLE['tstr_share_of_trtr']:g} x {trtr:.3f} (real rows)")
    if result["column_distance"] > result["column_distance_floor"] + USABLE["column_distance_above_floor"]:
        failed.append(f"column distance {result['column_distance']:.3f} > floor "
                      f"{result['column_distance_floor']:.3f} + {USABLE['column_distance_above_floor']:g}")
    if drawn["corr_diff"] > real["corr_diff"] + USABLE["correlation_above_floor"]:
        failed.append(f"correlation difference {drawn['corr_diff']:.3f} > floor {real['corr_diff']:.3f} + "
                      f"{USABLE['correlation_above_floor']:g}")
    result.update(usable=not failed, failed=failed)
    return result


def measure_fit(steps: int | None = None, rows: int = 1000, threads: int | None = None,
                controls: bool = False) -> dict:
    """Seconds of fit_tabular (its default steps when ``steps`` is None), the validation NLL it reached and
    its quality (``fit_quality`` against 1,000 new rows of the generator); with ``controls``, also the quality
    of the independent-columns control, which a check that can fail must reject.

    The first fit in a process also imports torch._dynamo (through torch.optim); that
    import is timed on its own as ``first_use_import_s``.
    """
    import torch

    from bench.compute import peak_rss_mib
    from cadp.data import infer_column_kind
    from cadp.train import fit_tabular

    if threads:
        torch.set_num_threads(threads)
    frame, held_out = _parsed(synthetic_frame(rows, seed=0)), _parsed(synthetic_frame(1000, seed=1))
    kinds = {column: infer_column_kind(frame[column]) for column in frame.columns}
    reached = {}

    def progress(share, loss):
        reached.update(share=share, loss=loss)

    options = {} if steps is None else {"steps": steps}
    start = time.perf_counter()
    import torch._dynamo  # noqa: F401 - torch.optim imports it on first use: timed apart from the fit
    first_use_import = time.perf_counter() - start
    start = time.perf_counter()
    model = fit_tabular(frame, [CONDITION], name="bench", dataset="upload", progress=progress, **options)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    result = {"rows": len(frame), "columns": frame.shape[1], "condition": CONDITION,
              "numeric_columns": sum(kind == "numeric" for kind in kinds.values()),
              "categorical_columns": sum(kind == "categorical" for kind in kinds.values()),
              "steps": steps if steps is not None else "fit_tabular default",
              "seconds": seconds, "first_use_import_s": first_use_import,
              "validation_nll_per_dim": float(reached.get("loss", float("nan"))),
              "latent_dim": model.config.latent_dim, "torch_threads": torch.get_num_threads(),
              "peak_rss_mib": peak, "quality": fit_quality(model, frame, held_out, kinds)}
    if controls:
        result["control_independent_columns"] = fit_quality(model, frame, held_out, kinds,
                                                            rows=independent_columns(frame))
    return result


def main(argv: list[str] | None = None) -> int:
    configure_allocator()  # as the app and the CLIs run
    print(json.dumps(measure_fit(**json.loads((argv or sys.argv[1:])[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
