"""What a table fit's record says: the step whose weights were kept (early stopping), not only the steps that ran;
and the training command's refusals and help for tables."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cadp import train
from cadp.data import load_table
from cadp.errors import InputError
from cadp.hub import read_eval
from cadp.models import TabularCINN


def _validation_log(monkeypatch) -> list[tuple[float, tuple]]:
    """Each validation NLL fit_tabular computes (no gradient, in training mode), with its inputs, in order: one every
    25 steps from step 0."""
    log, original = [], TabularCINN.nll_per_dim

    def logged(self, rows, condition):
        nll = original(self, rows, condition)
        if self.training and not torch.is_grad_enabled():
            log.append((float(nll.mean()), (rows, condition)))
        return nll

    monkeypatch.setattr(TabularCINN, "nll_per_dim", logged)
    return log


def test_a_table_fits_record_names_the_step_whose_weights_were_kept_and_its_validation_loss(monkeypatch):
    """The weights kept are those of the best-validated step; the record said the fit's full length, as if the
    later steps (which overfit) were in the model."""
    frame = load_table("diabetes").frame
    log = _validation_log(monkeypatch)
    model = train.fit_tabular(frame, ["sex"], steps=300)
    losses = [loss for loss, _ in log]
    best = int(np.argmin(losses))
    kept = 25 * best
    assert 0 < kept < 300  # (this fit overfits before its end: the case the record misdescribed)
    record = model.fit_record
    assert record["steps"] == kept and record["steps_run"] == 300
    assert record["validation_loss"] == pytest.approx(min(losses))
    trained = len(frame) - int(len(frame) * 0.15)
    assert record["epochs"] == pytest.approx(kept * 256 / trained)
    assert (f"The weights kept are those of step {kept} of the 300 that ran: they had the lowest validation NLL, "
            f"{min(losses):.3f} nats/dim on {int(len(frame) * 0.15)} of the training rows, held out") in record["kept"]
    assert f"Steps {kept + 1} to 300 ran but were not kept (no later check had a lower validation NLL)" in record["kept"]
    rows, condition = log[best][1]  # the kept weights are those that had that loss
    with torch.no_grad():
        assert float(model.train().nll_per_dim(rows, condition).mean()) == pytest.approx(min(losses), abs=1e-5)


def test_a_fit_without_validation_rows_keeps_and_records_its_last_step():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.integers(20, 80, 40), "bmi": rng.normal(25, 4, 40),
                          "diag": rng.choice(["x", "y"], 40)})
    record = train.fit_tabular(frame, ["diag"], steps=30).fit_record
    assert record["steps"] == record["steps_run"] == 30 and record["validation_loss"] is None
    assert record["kept"] == ("The weights kept are those of the last step, 30: under 50 rows, none were held out "
                              "to choose a step.")


def test_the_table_cards_and_eval_json_say_which_steps_weights_were_kept(tmp_path, monkeypatch, capsys):
    source = tmp_path / "rows.csv"
    load_table("diabetes").frame.to_csv(source, index=False)
    log = _validation_log(monkeypatch)
    out = tmp_path / "model"
    assert train.main(["--dataset", str(source), "--out", str(out), "--conditions", "sex", "--steps", "300"]) == 0
    losses = [loss for loss, _ in log]
    kept = 25 * int(np.argmin(losses))
    assert 0 < kept < 300
    record = read_eval(out)["training"]
    assert record["steps"] == kept and record["steps_run"] == 300
    assert record["validation_loss"] == pytest.approx(min(losses)) and math.isfinite(record["epochs"])
    card = (out / "README.md").read_text()
    training = card.split("## Training")[1].split("##")[0]
    assert "- 300 steps ran, " in training
    assert f"The weights kept are those of step {kept} of the 300 that ran" in training
    assert f"Steps {kept + 1} to 300 ran but were not kept" in training
    assert record["kept"] in training


def test_the_training_cli_refuses_a_condition_column_given_twice(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "heart", "--out", str(tmp_path / "m"), "--conditions", "target", "sex", "target"])
    assert exit_info.value.code == 2
    assert "--conditions: target is given more than once; give each condition column once" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_fit_tabular_refuses_a_condition_column_given_twice():
    frame = load_table("heart").frame
    with pytest.raises(InputError, match=r"condition column \['target'\] given more than once: give each "
                                         "condition column once"):
        train.fit_tabular(frame, ["target", "target"], steps=1)


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse's line breaks undone
    return shown.split(" options: ", 1)[1]  # after the usage line, which names every option


def test_the_training_help_says_what_steps_and_time_budget_do_for_tables(capsys):
    text = _help(capsys)
    steps = text.split("--steps STEPS")[1].split("--time-budget")[0]
    assert "by time budget" not in steps
    assert "Images: default none, the time budget decides" in steps
    assert f"Tables: default {train.TABLE_STEPS}; the weights kept are those of the step with the lowest loss" in steps
    budget = text.split("--time-budget TIME_BUDGET")[1].split("--resume")[0]
    assert "Default: 30 without --steps, none with it" in budget and "Tables: a limit on the steps" in budget
    assert "default 30 for images" not in budget


def test_the_training_help_lists_the_options_refused_for_tables_with_the_images_options(capsys):
    text = _help(capsys)
    general, images = text.split(" images: ")[0], text.split(" images: ")[1].split(" tables: ")[0]
    assert images.startswith("options refused for tables")
    for option in ("--lr LR", "--batch-size BATCH_SIZE", "--half"):
        assert option in images and option not in general


def test_a_column_given_two_types_is_refused(tmp_path, capsys):
    """--column-type bmi=numeric bmi=categorical silently kept the last one."""
    from cadp import train
    from cadp.data import load_table

    source = tmp_path / "t.csv"
    load_table("diabetes").frame.head(120).to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "m"), "--conditions", "sex",
                       "--column-type", "bmi=numeric", "bmi=categorical", "--steps", "1"]) == 2
    assert "--column-type gives bmi more than once: give each column one type" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_fit_the_time_budget_ended_says_so_and_counts_one_step_in_the_singular():
    """A fit stopped by its time budget recorded no reason ("1 steps ran" on the card, nothing else)."""
    from cadp import ui
    from cadp.data import load_table
    from cadp.train import fit_tabular

    model = fit_tabular(load_table("diabetes").frame, ["sex"], steps=1500, minutes=1e-9, seed=0)
    record = model.fit_record
    assert record["steps_run"] < 1500
    assert f"The time budget (1e-09 minutes) ended the fit after {record['steps_run']:,} step" in record["kept"]
    assert "of the 1,500 planned." in record["kept"]
    from types import SimpleNamespace

    one = SimpleNamespace(config=SimpleNamespace(condition_columns=["sex"]), fit_record={"steps": 1, "steps_run": 1})
    assert "(1 training step, conditions: sex)" in ui.model_line(None, one)


def test_numbers_too_large_to_compute_with_are_said_of_the_data_not_of_a_config_json():
    """A column near 1e200 was refused as "invalid model config: in config.json, ... std must be a finite number",
    while no config.json existed (a fit in the app, or cadp.train on a CSV)."""
    import numpy as np
    import pandas as pd

    from cadp.errors import InputError
    from cadp.train import fit_tabular

    rng = np.random.default_rng(0)
    # 3e19: past 2^63, every float is a whole number, released as int64: it came back as -9223372036854775808
    for scale in (1e200, 3e19):
        frame = pd.DataFrame({"x": rng.normal(5, 1, 80) * scale, "y": rng.normal(0, 1, 80),
                              "g": rng.choice(["a", "b"], 80)})
        with pytest.raises(InputError) as refused:
            fit_tabular(frame, ["g"], steps=1)
        assert "column ['x'] holds numbers too large to release (9.2e+18 = 2^63 or more" in str(refused.value)
        assert "config.json" not in str(refused.value)
    frame["x"] = rng.normal(5, 1, 80) * 1e17  # large, and still released as it is
    assert fit_tabular(frame, ["g"], steps=1).config.data_columns == ["x", "y"]


def test_the_training_loss_recorded_for_a_table_is_the_kept_weights(tmp_path, monkeypatch):
    """eval.json's final_train_loss was the loss of the last step that ran, while the weights are an earlier
    step's: a reader comparing it with the test NLL saw the overfitting of weights that are not in the model."""
    source = tmp_path / "rows.csv"
    load_table("diabetes").frame.to_csv(source, index=False)
    fitted, original = [], train.fit_tabular

    def kept(frame, *args, **kwargs):
        fitted.append((frame, original(frame, *args, **kwargs)))
        return fitted[-1][1]

    monkeypatch.setattr(train, "fit_tabular", kept)
    out = tmp_path / "model"
    assert train.main(["--dataset", str(source), "--out", str(out), "--conditions", "sex", "--steps", "300"]) == 0
    frame, model = fitted[0]
    record = model.fit_record
    assert 0 < record["steps"] < record["steps_run"]
    assert read_eval(out)["training"]["final_train_loss"] == pytest.approx(record["kept_train_loss"])
    # the kept weights' NLL on the rows the optimizer saw (fit_tabular's split: validation rows first in its seeded
    # order), averaged over fresh dequantization draws: what the record says, within one draw's noise
    order = torch.randperm(len(frame), generator=torch.Generator().manual_seed(0))
    optimized = order[int(len(frame) * 0.15):]
    base, span = model.data_encoder.dequantization_boxes(model.data_encoder.transform(frame))
    condition = model.condition_encoder.transform(frame)
    with torch.no_grad():
        draws = [float(model.nll_per_dim(train.draw_in_boxes(base[optimized], span[optimized],
                                                             torch.Generator().manual_seed(seed)),
                                         condition[optimized]).mean()) for seed in range(1, 9)]
    assert record["kept_train_loss"] == pytest.approx(np.mean(draws), abs=0.03)
    assert abs(record["last_train_loss"] - np.mean(draws)) > 0.1  # (what was recorded before: another step's)


def test_a_table_fit_under_a_time_budget_it_does_not_reach_is_reproducible():
    """The CLI's default 30-minute budget entered the first step's learning rate (its share of microseconds at
    step 0): the same command and seed gave other weights on every run."""
    frame = load_table("diabetes").frame.head(120)
    first, second = (train.fit_tabular(frame, ["sex"], steps=60, minutes=30.0, seed=0) for _ in range(2))
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
