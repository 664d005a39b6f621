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
    """A 15-column table: 9 numeric (integers and decimals, correlated with the group) and 6 categorical."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b", "c"], size=rows, p=[0.5, 0.3, 0.2])
    shift = pd.Series(group).map({"a": 0.0, "b": 1.0, "c": -1.0}).to_numpy()
    age = np.clip(rng.normal(50 + 5 * shift, 12), 18, 95).round().astype(int)
    frame = pd.DataFrame({
        "age": age,
        "weight_kg": np.round(rng.normal(75 + 4 * shift, 12), 1),
        "height_cm": np.round(rng.normal(170, 9, rows), 1),
        "systolic": np.round(110 + 0.5 * age + rng.normal(0, 10, rows)).astype(int),
        "diastolic": np.round(rng.normal(80, 8, rows)).astype(int),
        "cholesterol": np.round(rng.lognormal(5.3, 0.2, rows), 0).astype(int),
        "glucose": np.round(rng.gamma(9, 11, rows), 1),
        "income_k": np.round(rng.lognormal(3.8 + 0.2 * shift, 0.5), 2),
        "visits": rng.poisson(3 + shift.clip(0), rows) * 3 + rng.integers(0, 3, rows),
        "smoker": rng.choice(["yes", "no"], size=rows, p=[0.25, 0.75]),
        "region": rng.choice(["north", "south", "east", "west"], size=rows),
        "education": rng.choice(["primary", "secondary", "tertiary"], size=rows, p=[0.2, 0.5, 0.3]),
        "married": rng.choice(["true", "false"], size=rows),
        "stage": rng.integers(1, 5, rows),
        CONDITION: group,
    })
    return frame


def measure_fit(steps: int | None = None, rows: int = 1000, threads: int | None = None) -> dict:
    """Seconds of fit_tabular (its default steps when ``steps`` is None) and the validation NLL it reached.

    The first fit in a process also imports torch._dynamo (through torch.optim); that
    import is timed on its own as ``first_use_import_s``.
    """
    import torch

    from bench.compute import peak_rss_mib
    from cadp.data import infer_column_kind, load_table
    from cadp.train import fit_tabular

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "synthetic.csv"
        synthetic_frame(rows).to_csv(path, index=False)
        frame = load_table(str(path)).frame  # parsed as an upload is
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
    return {"rows": len(frame), "columns": frame.shape[1], "condition": CONDITION,
            "numeric_columns": sum(kind == "numeric" for kind in kinds.values()),
            "categorical_columns": sum(kind == "categorical" for kind in kinds.values()),
            "steps": steps if steps is not None else "fit_tabular default",
            "seconds": seconds, "first_use_import_s": first_use_import, "validation_nll_per_dim": float(reached.get("loss", float("nan"))),
            "latent_dim": model.config.latent_dim, "torch_threads": torch.get_num_threads(),
            "peak_rss_mib": peak_rss_mib()}


def main(argv: list[str] | None = None) -> int:
    configure_allocator()  # as the app and the CLIs run
    print(json.dumps(measure_fit(**json.loads((argv or sys.argv[1:])[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
