"""A table whose columns are named by whole numbers (a DataFrame's default labels) keeps its model's condition
frequencies through save and load: JSON stores the keys as text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cadp.hub import load_folder, save_model
from cadp.train import fit_tabular


def test_condition_priors_of_number_named_columns_survive_a_reload(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({0: rng.normal(size=300), 1: rng.normal(size=300),
                          2: rng.choice(["a", "b"], p=[0.9, 0.1], size=300)})
    model = fit_tabular(frame, [2], steps=30)
    assert set(model.config.condition_priors) == {2}
    save_model(model, tmp_path / "numbers")
    loaded = load_folder(tmp_path / "numbers").model
    assert loaded.config.condition_priors == model.config.condition_priors
    samples = loaded.sample_frame(2000, generator=torch.Generator().manual_seed(0))
    assert 0.85 < (samples[2] == "a").mean() < 0.95  # drawn from the stored 0.9, not a uniform 0.5
