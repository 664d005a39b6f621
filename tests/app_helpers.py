"""Small models and inputs for the app tests: built in seconds, untrained (the app's behaviour, not quality)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from cadp.data import MNIST_CLASSES, load_table
from cadp.hub import save_model, update_card_section, update_eval
from cadp.models import ImageCINN, ImageModelConfig, LatentDistances, SmallCNN, TabularCINN
from cadp.train import tabular_config

IMAGE_MODEL = "tiny-image"
TABLE_MODEL = "tiny-table"
UTILITY = {
    "settings": {"command": "test fixture"},
    "epsilons": [1, 10, 100],
    "reference": {"o/o": {"mean": 0.9, "std": 0.01}},
    "chance": 0.01,
    "methods": {
        "laplace": {"label": "laplace", "kind": "cadp", "formal": True, "p/o": {"mean": [0.2, 0.5, 0.8], "std": [0, 0, 0]},
                    "ssim": [0.1, 0.2, 0.4], "reid_latent": [0.01, 0.02, 0.2], "reid_pixel": [0.01, 0.01, 0.1]},
        "paper": {"label": "paper", "kind": "reference-reproduction", "formal": False,
                  "p/o": {"mean": [0.7, 0.8, 0.85]}, "ssim": [0.5, 0.6, 0.7], "reid_latent": [0.5, 0.6, 0.7]},
        "blur": {"label": "blur", "kind": "baseline", "formal": False, "parameters": [1, 2],
                 "p/o": {"mean": [0.8, 0.7]}, "reid_latent": [0.9, 0.8]},
    },
}
CENTRAL = {"label": "DP-SGD", "epsilons": [1, 8], "epsilon_spent": [0.99, 7.9], "accuracy": {"mean": [0.7, 0.85]},
           "delta": 0.001, "settings": {"architecture": "EvalCNN", "n_train": 1000}}


def build_models(folder: Path) -> Path:
    """An untrained tiny image cINN (with classifier, card, eval.json utility) and a tiny diabetes cINN."""
    distances = LatentDistances(d_typ=700.0, d_nn=600.0, latent_l1_norm=400.0, n_records=100, held_out=True)
    config = ImageModelConfig(name=IMAGE_MODEL, dataset="mnist", class_names=list(MNIST_CLASSES), conv_width=4,
                              conv_blocks=[1, 1], fc_blocks=1, fc_width=16, latent_distances=distances)
    image_folder = save_model(ImageCINN(config), folder / IMAGE_MODEL, classifier=SmallCNN(10),
                              card="---\nlicense: mit\n---\n# tiny-image\n\nA test model card.\n")
    update_eval(image_folder, "utility", UTILITY)
    update_eval(image_folder, "central", CENTRAL)
    frame = load_table("diabetes").frame
    table_config = tabular_config(frame, ["sex"], name=TABLE_MODEL, dataset="diabetes", blocks=2, width=16)
    table_config.latent_distances = LatentDistances(d_typ=8.0, d_nn=3.0, latent_l1_norm=7.5, n_records=50, held_out=True)
    table_folder = save_model(TabularCINN(table_config), folder / TABLE_MODEL, card="# tiny-table\n")
    # the block `python -m cadp.evaluate bpd` writes (its markers must not show in the app)
    update_card_section(table_folder, "bpd", "### Quality\n\nMeasured by `python -m cadp.evaluate bpd --model tiny-table`.")
    return folder


def png(seed: int = 0, size: int = 40, dark_on_light: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    array = np.zeros((size, size), dtype=np.uint8)
    array[10:30, 15:25] = 200 + rng.integers(0, 55, (20, 10))
    if dark_on_light:
        array = 255 - array
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def small_csv() -> bytes:
    rng = np.random.default_rng(0)
    rows = ["age,weight,smoker,group"]
    for i in range(60):
        rows.append(f"{rng.integers(20, 80)},{rng.normal(70, 10):.1f},{'yes' if i % 3 else 'no'},{'ab'[i % 2]}")
    return ("\n".join(rows) + "\n").encode()


def conditions(at):
    """The tabular page's condition multiselect (keyed by its table and model)."""
    boxes = [box for box in at.multiselect if box.key and box.key.startswith("table_conditions_")]
    assert len(boxes) == 1, [box.key for box in at.multiselect]
    return boxes[0]


def upload_and_fit(at, data: bytes | None = None, name: str = "people.csv", kept: tuple[str, ...] = ("group",),
                   steps: int = 100):
    """On the table page: upload a CSV (``small_csv`` by default), keep ``kept`` and fit a model on it."""
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value((name, data if data is not None else small_csv(), "text/csv")).run()
    if kept:
        conditions(at).set_value(list(kept)).run()
    at.slider(key="table_steps").set_value(steps)
    at.button[0].click().run()  # the form's "Fit a model on this table"
    return at


def utility_command(model: str) -> str:
    """The command the app names to evaluate ``model`` of the weights folder it reads ($CADP_WEIGHTS_DIR)."""
    import os

    from cadp import ui
    from cadp.hub import load_folder

    return ui.evaluate_command(load_folder(Path(os.environ["CADP_WEIGHTS_DIR"]) / model), "utility")
