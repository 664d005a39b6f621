"""A training run stopped while it writes the model's files: they are several (config, weights, classifier, card,
eval.json), and a stop between two left a folder that mixed two models (a new config's class order with the old
weights: every label mapped to another class), that every command loaded and `--resume` called finished, while
the run said "the output folder holds no new model"."""

from __future__ import annotations

import pytest

from cadp import hub, train
from cadp.errors import ModelError
from tests.test_train_image_folder import TINY_IMAGE_RUN, _image_folder


def stop_after(monkeypatch, name: str) -> None:
    """``train.<name>`` runs, then the run is interrupted (Ctrl-C, or SIGTERM as the CLI reads it)."""
    real = getattr(train, name)

    def stopped(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, name, stopped)


@pytest.mark.parametrize("stop", ["save_model", "clear_stale_results", "_record_training"])
def test_an_image_model_stopped_while_written_is_refused_until_resume_writes_it_whole(tmp_path, capsys,
                                                                                     monkeypatch, stop):
    data, out = _image_folder(tmp_path / "shoes", {"boots": 10, "sandals": 10}), tmp_path / "model"
    assert train.main(["--dataset", str(data), "--out", str(out), *TINY_IMAGE_RUN]) == 0
    (data / "boots").rename(data / "zboots")  # the class order changes: sandals, zboots
    with monkeypatch.context() as patched:
        stop_after(patched, stop)
        code = train.main(["--dataset", str(data), "--out", str(out), *TINY_IMAGE_RUN, "--overwrite"])
    said = capsys.readouterr().err
    assert code == 130 and "interrupted while writing the model to" in said and "holds no new model" not in said
    assert "--resume to write it whole" in said
    with pytest.raises(ModelError, match="cadp.train stopped while writing this model"):
        hub.load_model(str(out))
    assert train.main(["--dataset", str(data), "--out", str(out), *TINY_IMAGE_RUN, "--resume"]) == 0
    assert "nothing to do" not in capsys.readouterr().err
    loaded = hub.load_model(str(out))
    assert loaded.config.class_names == ["sandals", "zboots"] and "zboots" in loaded.card
    assert hub.current_eval(out)[0]["training"]["weights_sha256"] == hub.weights_digest(out)
    assert not (out / hub.WRITING_NAME).exists()


def test_a_table_model_stopped_while_written_is_refused_until_trained_again(tmp_path, capsys, monkeypatch):
    out = tmp_path / "model"
    with monkeypatch.context() as patched:
        stop_after(patched, "save_model")
        code = train.main(["--dataset", "diabetes", "--out", str(out), "--steps", "2"])
    said = capsys.readouterr().err
    assert code == 130 and "interrupted while writing the model to" in said and "train again with --overwrite" in said
    with pytest.raises(ModelError, match="cadp.train stopped while writing this model") as refused:
        hub.load_model(str(out))
    assert "with --resume for an image model whose checkpoint is in the folder" in str(refused.value)
    assert "else with --overwrite (it trains again)" in str(refused.value)
    assert train.main(["--dataset", "diabetes", "--out", str(out), "--steps", "2", "--overwrite"]) == 0
    assert hub.load_model(str(out)).config.dataset == "diabetes"


def test_a_folder_of_an_unfinished_run_says_so_not_that_it_has_no_config(tmp_path):
    out = tmp_path / "model"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "training.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="holds the checkpoint of a cadp.train run that has not finished"):
        hub.load_model(str(out))


def test_a_resumed_runs_card_names_every_command_that_trained_it(tmp_path, capsys, monkeypatch):
    """The card recorded only the last command: a --resume with --steps 2000 of a run started with --steps 3000
    (whose steps ran on that schedule), a command that fails on a fresh folder."""
    data, out = _image_folder(tmp_path / "shoes", {"boots": 10, "sandals": 10}), tmp_path / "model"
    run = ["--dataset", str(data), "--out", str(out), *TINY_IMAGE_RUN]
    real_steps, calls = train._steps, []

    def stopped_once(*args, **kwargs):  # the first run stops at its first step (a checkpoint is saved)
        calls.append(1)
        if len(calls) == 1:
            args[5]["step"] = 1
            raise KeyboardInterrupt
        return real_steps(*args, **kwargs)

    monkeypatch.setattr(train, "_steps", stopped_once)
    assert train.main(run) == 130
    assert train.main([*run[:-len(TINY_IMAGE_RUN)], *TINY_IMAGE_RUN[:1], "3", *TINY_IMAGE_RUN[2:], "--resume"]) == 0
    card = (out / "README.md").read_text()
    assert "commands: started with `python -m cadp.train --dataset shoes --out model --steps 2 " in card, card
    assert "continued with `python -m cadp.train --dataset shoes --out model --steps 3 " in card
    assert hub.read_eval(out)["training"]["commands"][1].endswith("--resume")
    assert train.main([*run[:-len(TINY_IMAGE_RUN)], *TINY_IMAGE_RUN[:1], "3", *TINY_IMAGE_RUN[2:], "--resume"]) == 0
    assert len(train.checkpoint_commands(out / "checkpoint" / "training.safetensors")) == 2  # ran no step
    assert train.main(["--dataset", "diabetes", "--out", str(tmp_path / "table"), "--steps", "2"]) == 0
    assert "- command: `python -m cadp.train --dataset diabetes --out table --steps 2`" in \
        (tmp_path / "table" / "README.md").read_text()


def test_a_checkpoint_cut_short_is_an_error_line_not_a_traceback(tmp_path, capsys):
    data, out = _image_folder(tmp_path / "shoes", {"boots": 10, "sandals": 10}), tmp_path / "model"
    (out / "checkpoint").mkdir(parents=True)
    for content in (b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"):
        (out / "checkpoint" / "training.safetensors").write_bytes(content)
        assert train.main(["--dataset", str(data), "--out", str(out), *TINY_IMAGE_RUN, "--resume"]) == 2
        said = capsys.readouterr().err
        assert "error: the checkpoint at" in said and "cannot be read" in said and "Traceback" not in said


def test_image_size_and_channels_are_refused_for_the_bundled_digit_sets(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--dataset", "fashion-mnist", "--out", "x", "--image-size", "16"])
    assert "--image-size and --channels apply to an image folder" in capsys.readouterr().err
    assert train.parse_args(["--dataset", "fashion-mnist", "--out", "x", "--image-size", "28"]).image_size == 28


def test_training_says_it_resized_images_and_read_empty_cells_as_the_mean(tmp_path, capsys):
    from PIL import Image

    data = _image_folder(tmp_path / "shoes", {"boots": 10, "sandals": 10})
    Image.new("L", (30, 20), 128).save(data / "boots" / "wide.png")
    assert train.main(["--dataset", str(data), "--out", str(tmp_path / "m"), *TINY_IMAGE_RUN]) == 0
    said = capsys.readouterr().err
    assert "note: 1 image under" in said and "is not 16x16 and was resized to it" in said
    assert "1 of them not square, so their aspect ratio was kept" in said
    from cadp.data import load_table

    frame = load_table("diabetes").frame
    frame.loc[frame.index[:40], "bmi"] = float("nan")
    frame.to_csv(tmp_path / "visits.csv", index=False)
    assert train.main(["--dataset", str(tmp_path / "visits.csv"), "--out", str(tmp_path / "t"), "--steps", "2"]) == 0
    said = capsys.readouterr().err
    assert "cells of the training rows are empty, not a number or infinite, and were trained on as their " \
        "column's mean over the whole table, test rows included (the mean a release reads such a cell as: bmi: " \
        in said


def test_a_model_trained_with_max_train_is_evaluated_on_the_folder_it_was_trained_on(tmp_path, capsys):
    import shutil

    from cadp import evaluate

    data, out = _image_folder(tmp_path / "shoes", {"boots": 10, "sandals": 10}), tmp_path / "model"
    assert train.main(["--dataset", str(data), "--out", str(out), *TINY_IMAGE_RUN, "--max-train", "5"]) == 0
    assert hub.read_eval(out)["training"]["max_train"] == 5
    shutil.copytree(out, tmp_path / "copy")
    assert evaluate.main(["bpd", "--model", str(tmp_path / "copy"), "--data", str(data), "--quick"]) == 0, \
        capsys.readouterr().err
    other = _image_folder(tmp_path / "other", {"boots": 14, "sandals": 10}, seed=1)  # another folder: refused
    assert evaluate.main(["bpd", "--model", str(tmp_path / "copy"), "--data", str(other), "--quick"]) == 2


def test_test_records_that_copy_training_records_are_counted_not_called_held_out(tmp_path, capsys):
    import numpy as np

    from cadp.data import load_table

    frame = load_table("diabetes").frame
    pd_frame = frame.loc[np.repeat(frame.index, 2)]  # every row twice
    pd_frame.to_csv(tmp_path / "twice.csv", index=False)
    assert train.main(["--dataset", str(tmp_path / "twice.csv"), "--out", str(tmp_path / "t"), "--steps", "2"]) == 0
    said = capsys.readouterr().err
    copies = hub.read_eval(tmp_path / "t")["training"]["test_copies_of_training"]
    assert copies > 100 and f"warning: {copies} of the 177 test rows are exact copies of training rows" in said
    assert f"- {copies} of the 177 test rows are exact copies of training rows" in (tmp_path / "t" / "README.md").read_text()
    assert train.main(["--dataset", "diabetes", "--out", str(tmp_path / "d"), "--steps", "2"]) == 0
    assert "exact copies" not in capsys.readouterr().err + (tmp_path / "d" / "README.md").read_text()
    assert hub.read_eval(tmp_path / "d")["training"]["test_copies_of_training"] == 0

    data = _image_folder(tmp_path / "shoes", {"boots": 10, "sandals": 10})
    for file in list(data.rglob("*.png")):
        (file.parent / f"copy-{file.name}").write_bytes(file.read_bytes())
    assert train.main(["--dataset", str(data), "--out", str(tmp_path / "m"), *TINY_IMAGE_RUN]) == 0
    copies = hub.read_eval(tmp_path / "m")["training"]["test_copies_of_training"]
    assert copies > 0 and "test images are exact copies of training images" in capsys.readouterr().err


def test_a_condition_level_whose_rows_all_fell_among_the_test_rows_keeps_one_for_training(tmp_path, capsys):
    """It was released (resampled, randomized) though the network never trained on it; then refused for most
    seeds of a table with rare levels. Now its first row trains, and evaluate --data splits alike."""
    import numpy as np

    from cadp import evaluate
    from cadp.data import load_table

    frame = load_table("diabetes").frame.assign(group="common")
    _, test = train.split_table(frame, 0)
    rare = [frame.index[(frame["age"] == test["age"].iloc[i]) & (frame["bmi"] == test["bmi"].iloc[i])][0]
            for i in (0, 1, 2)]
    frame.loc[rare, "group"] = ["rare", "rare", np.nan]
    assert (train.split_table(frame, 0)[1]["group"] == "rare").sum() == 2  # the plain draw: both held out
    kept_train, kept_test = train.split_table(frame, 0, conditions=["group"])
    assert (kept_train["group"] == "rare").sum() == 1 and (kept_test["group"] == "rare").sum() == 1
    assert kept_train["group"].isna().sum() == 1 and len(kept_train) + len(kept_test) == len(frame)
    assert train.split_table(frame.assign(group="common"), 0, conditions=["group"])[1].equals(test)
    frame.to_csv(tmp_path / "rare.csv", index=False)
    assert train.main(["--dataset", str(tmp_path / "rare.csv"), "--out", str(tmp_path / "t"), "--steps", "2",
                       "--conditions", "group"]) == 0
    assert evaluate.main(["bpd", "--model", str(tmp_path / "t"), "--data", str(tmp_path / "rare.csv"),
                          "--quick"]) == 0, capsys.readouterr().err


def test_a_condition_level_whose_rows_all_fell_among_the_validation_rows_trains():
    import pandas as pd

    rows = pd.DataFrame({"x": [float(i % 7) for i in range(60)], "y": [float(i % 5) for i in range(60)],
                         "group": ["rare"] + ["common"] * 59})
    validated = {train.fit_tabular(rows, ["group"], steps=1, seed=seed).fit_record["validation_rows"]
                 for seed in range(12)}
    assert validated == {8, 9}  # 9 drawn: one less where the rare row was among them


def test_a_table_model_split_before_levels_kept_a_training_row_is_evaluated_on_its_own_split(tmp_path, capsys):
    """evaluate --data refused the very CSV such a model was trained on (the split it makes now differs)."""
    import json

    import numpy as np

    from cadp import evaluate
    from cadp.data import load_table

    frame = load_table("diabetes").frame.assign(group="common")
    _, test = train.split_table(frame, 0)
    rare = [frame.index[(frame["age"] == test["age"].iloc[i]) & (frame["bmi"] == test["bmi"].iloc[i])][0]
            for i in (0, 1)]
    frame.loc[rare, "group"] = "rare"
    frame.to_csv(tmp_path / "rare.csv", index=False)
    out = tmp_path / "t"
    assert train.main(["--dataset", str(tmp_path / "rare.csv"), "--out", str(out), "--steps", "2",
                       "--conditions", "group"]) == 0
    assert "1 row drawn into the test fifth (--seed 0) holds a condition level no training row has; it was moved" in \
        capsys.readouterr().err
    assert evaluate.main(["bpd", "--model", str(out), "--data", str(tmp_path / "rare.csv"), "--quick"]) == 0
    plain_train, plain_test = train.split_table(frame, 0)  # what the training section of an older run records
    evaluation = json.loads((out / "eval.json").read_text())
    evaluation["training"].update(train_records=len(plain_train), test_records=len(plain_test),
                                  test_fingerprint=train.split_fingerprint(plain_test, tuple(frame.columns)))
    (out / "eval.json").write_text(json.dumps(evaluation))
    assert evaluate.main(["bpd", "--model", str(out), "--data", str(tmp_path / "rare.csv"), "--quick",
                          "--replace-full"]) == 0, capsys.readouterr().err
    assert "is split as cadp.train split it before 2026-11-30" in capsys.readouterr().err
    assert np.isin(plain_test["bmi"], frame["bmi"]).all()
