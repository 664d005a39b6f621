"""An image folder's 80/20 split, per class: a class of a few images among many had every image drawn for
training, so no test number covered it. New runs split each class (split version 2) and record it; models trained
before keep their split (version 1), so that `evaluate --data` still finds their test images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cadp import train
from cadp.data import SPLIT_VERSION, load_image_folder, split_image_folder
from cadp.evaluate import load_training_data
from cadp.hub import read_config

try:
    from test_train_image_folder import TINY_IMAGE_RUN, _image_folder
except ImportError:  # tests/ imported as a package
    from tests.test_train_image_folder import TINY_IMAGE_RUN, _image_folder


def first_version(labels: np.ndarray, test_fraction: float = 0.2, seed: int = 0):
    """The split as versions before 2 drew it (written out here: it must never change)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = max(1, int(round(test_fraction * len(labels))))
    test, train_ = list(order[:n_test]), list(order[n_test:])
    trained = set(labels[train_].tolist())
    for position in range(len(test) - 1, -1, -1):
        label = int(labels[test[position]])
        if label not in trained:
            trained.add(label)
            train_.append(test.pop(position))
    return np.asarray(train_), np.asarray(test)


@pytest.mark.parametrize("counts", [[40, 40, 3], [8, 6], [100, 2, 1, 5], [1, 1, 30], [7] * 9])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_class_of_two_or_more_images_has_some_held_out_and_some_trained(counts, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    training, test = split_image_folder(labels, 0.2, seed)
    assert sorted([*training, *test]) == list(range(len(labels)))
    for label, count in enumerate(counts):
        held = int((labels[test] == label).sum())
        assert (labels[training] == label).sum() >= 1
        if count >= 2:
            assert 1 <= held <= max(1, round(0.2 * count)), (label, count, held)
        else:
            assert held == 0


@pytest.mark.parametrize("seed", [0, 3])
def test_the_first_version_draws_as_it_always_did(seed):
    labels = np.repeat(np.arange(4), [40, 3, 12, 1])
    got = split_image_folder(labels, 0.2, seed, version=1)
    want = first_version(labels, 0.2, seed)
    assert [a.tolist() for a in got] == [a.tolist() for a in want]


def test_training_a_folder_holds_out_a_rare_class_and_records_the_split_version(tmp_path, capsys):
    folder = _image_folder(tmp_path / "shoes", {"bags": 8, "boots": 6})
    out = tmp_path / "model"
    assert train.main(["--dataset", str(folder), "--out", str(out), *TINY_IMAGE_RUN]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "holds no image of the class" not in err
    facts = json.loads((out / "eval.json").read_text())["training"]
    assert facts["split_version"] == SPLIT_VERSION == 2 and facts["classes_without_test_images"] == []
    card = " ".join((out / "README.md").read_text(encoding="utf-8").split())
    assert "each class split 80/20 with the fixed seed 0" in card
    config = read_config(out)
    _, test = load_training_data(config, folder, facts)  # evaluate --data finds the same test images
    assert sorted(set(test.labels.tolist())) == [0, 1]


def test_a_model_trained_before_the_split_version_is_evaluated_on_its_own_split(tmp_path):
    """eval.json of a model trained by an earlier version: no split_version, the first version's fingerprint."""
    from cadp.train import split_fingerprint

    folder = _image_folder(tmp_path / "shoes", {"bags": 8, "boots": 6})
    out = tmp_path / "model"
    assert train.main(["--dataset", str(folder), "--out", str(out), *TINY_IMAGE_RUN]) == 0
    old_test = load_image_folder(folder, "test", image_size=16, split_version=1)
    old_train = load_image_folder(folder, "train", image_size=16, split_version=1)
    facts = {"train_records": len(old_train), "test_records": len(old_test),
             "test_fingerprint": split_fingerprint(old_test)}
    _, test = load_training_data(read_config(out), folder, facts)
    assert split_fingerprint(test) == facts["test_fingerprint"] and set(test.labels.tolist()) == {0}


def test_a_checkpoint_of_the_first_split_version_resumes_on_the_images_it_started_on(tmp_path, capsys):
    """A run interrupted before the split version was recorded: resumed, it must train on its own split (the new
    one would move images between training and test: the checkpoint was refused as another run's)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from cadp.train import CHECKPOINT_PATH, split_fingerprint

    folder = _image_folder(tmp_path / "shoes", {"bags": 8, "boots": 6})
    out = tmp_path / "model"
    assert train.main(["--dataset", str(folder), "--out", str(out), *TINY_IMAGE_RUN]) == 0
    checkpoint = out / CHECKPOINT_PATH
    with safe_open(str(checkpoint), "pt") as handle:
        state = json.loads(handle.metadata()["state"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    assert state["run"]["split_version"] == 2
    del state["run"]["split_version"]  # as a version before it wrote the checkpoint
    state["run"]["train_fingerprint"] = split_fingerprint(load_image_folder(folder, "train", image_size=16,
                                                                            split_version=1))
    save_file(tensors, str(checkpoint), metadata={"state": json.dumps(state)})
    capsys.readouterr()
    steps = TINY_IMAGE_RUN.index("--steps") + 1
    more = [*TINY_IMAGE_RUN[:steps], "4", *TINY_IMAGE_RUN[steps + 1:]]
    assert train.main(["--dataset", str(folder), "--out", str(out), *more, "--resume"]) == 0, capsys.readouterr().err
    facts = json.loads((out / "eval.json").read_text())["training"]
    assert facts["split_version"] == 1
    assert "split as versions before 2026-11-30 split a folder" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("recorded", [True, 3, "2", None])
def test_a_split_version_in_eval_json_that_is_not_1_or_2_is_refused_in_plain_words(tmp_path, recorded):
    from cadp.errors import InputError

    folder = _image_folder(tmp_path / "shoes", {"bags": 8, "boots": 6})
    out = tmp_path / "model"
    assert train.main(["--dataset", str(folder), "--out", str(out), *TINY_IMAGE_RUN]) == 0
    facts = json.loads((out / "eval.json").read_text())["training"]
    facts["split_version"] = recorded
    with pytest.raises(InputError, match="split_version .* not one of 1, 2: give --split-version"):
        load_training_data(read_config(out), folder, facts)


def test_without_eval_json_a_folder_the_two_versions_split_otherwise_needs_split_version(tmp_path):
    """No training section: the old split was assumed, and for a model trained now its test images included
    training images, unchecked."""
    from cadp.errors import InputError

    folder = _image_folder(tmp_path / "shoes", {"bags": 8, "boots": 6})  # versions 1 and 2 differ here
    out = tmp_path / "model"
    assert train.main(["--dataset", str(folder), "--out", str(out), *TINY_IMAGE_RUN]) == 0
    config = read_config(out)
    with pytest.raises(InputError, match="give --split-version"):
        load_training_data(config, folder, None)
    _, test = load_training_data(config, folder, None, split_version=2)
    assert set(test.labels.tolist()) == {0, 1}
