"""cINN models: invertibility on real data, likelihood units, configs, training smoke tests."""

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

import cadp.models as models
from cadp.data import load_image_dataset, load_table
from cadp.errors import InputError, ModelError
from cadp.hub import load_folder, save_model
from cadp.models import (
    SMALL_BATCH,
    ImageCINN,
    ImageModelConfig,
    _packed_conv2d,
    build_model,
    config_from_dict,
    config_to_dict,
    graph_mode,
)
from cadp.train import fit_tabular
from tests.conftest import bundled, perturbed


@pytest.fixture(scope="module")
def mnist_test():
    return load_image_dataset("mnist", "test")


def test_image_round_trip_on_real_digits(tiny_image_model, mnist_test):
    x, y = mnist_test.images[:64], mnist_test.labels[:64]
    with torch.no_grad():
        z = tiny_image_model.encode(x, y)
        assert z.shape == (64, 784)
        assert (tiny_image_model.decode(z, y) - x.float()).abs().max() <= 1e-4
        # the perturbed network really transforms: latent is not the logit image
        assert (z - tiny_image_model._to_logit(x, None)[0].flatten(1)).abs().max() > 0.1


@pytest.mark.parametrize("name", ["mnist-cinn", "fashion-mnist-cinn"])
def test_bundled_image_models_round_trip(name):
    loaded = load_folder(bundled(name))
    data = load_image_dataset(loaded.config.dataset, "test")
    x, y = data.images[:200], data.labels[:200]
    with torch.no_grad():
        back = loaded.model.decode(loaded.model.encode(x, y), y)
    # float32 arithmetic through a trained flow: errors of a few thousandths of a pixel value (2e-5 of the
    # 0..255 range, eval.json "bpd"); the bound is 1e-4 of the range, and 8-bit rounding must undo them
    assert (back - x.float()).abs().max() <= 255 * 1e-4
    assert torch.equal(back.round().clamp(0, 255), x.float())


def test_tabular_round_trip_and_condition_effect():
    table = load_table("diabetes")
    model = perturbed(fit_tabular(table.frame, ["sex"], steps=5))
    rows = model.data_encoder.transform(table.frame)
    condition = model.condition_encoder.transform(table.frame)
    with torch.no_grad():
        z = model.encode(rows, condition)
        assert (model.decode(z, condition) - rows).abs().max() <= 1e-4
        flipped = condition.flip(1)
        assert (model.encode(rows, flipped) - z).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["diabetes-cinn", "heart-cinn"])
def test_bundled_tabular_models_round_trip(name):
    loaded = load_folder(bundled(name))
    table = load_table(loaded.config.dataset)
    model = loaded.model
    rows = model.data_encoder.transform(table.frame)
    condition = model.condition_encoder.transform(table.frame)
    with torch.no_grad():
        assert (model.decode(model.encode(rows, condition), condition) - rows).abs().max() <= 1e-4


def test_bits_per_dim_of_untrained_model_is_about_logit_gaussian(tiny_image_model, mnist_test):
    """A fresh (identity) network gives the bits/dim of a standard normal in logit space: a known number."""
    config = tiny_image_model.config
    model = ImageCINN(config).eval()
    x, y = mnist_test.images[:32], mnist_test.labels[:32]
    generator = torch.Generator().manual_seed(0)
    bpd = model.bits_per_dim(x, y, generator)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    logit, log_det = model._to_logit(x, noise)
    expected = (0.5 * (logit.flatten(1) ** 2).sum(1) + 392 * math.log(2 * math.pi) - log_det) / (784 * math.log(2))
    assert torch.allclose(bpd, expected, rtol=1e-4)


def test_config_json_round_trip_and_validation(tmp_path, tiny_image_model):
    data = config_to_dict(tiny_image_model.config)
    assert config_from_dict(json.loads(json.dumps(data))) == tiny_image_model.config
    with pytest.raises(ModelError, match="unknown field"):
        config_from_dict({**data, "extra": 1})
    with pytest.raises(ModelError, match="conv_width must be"):
        config_from_dict({**data, "conv_width": -3})
    with pytest.raises(ModelError, match="kind must be"):
        config_from_dict({**data, "kind": "audio"})


def test_conv_subnets_with_a_3x3_middle_layer_invert_save_and_load(tmp_path, mnist_test):
    config = ImageModelConfig(name="wide", dataset="mnist", class_names=[str(i) for i in range(10)],
                              conv_width=8, conv_blocks=[2, 2], conv_subnet="3-3-3", fc_blocks=1, fc_width=16)
    model = perturbed(ImageCINN(config)).eval()
    middle = model.inn.module_list[1].subnet1[2]
    assert middle.kernel_size == (3, 3) and middle.padding == (1, 1)
    for count in (1, 2, 8):  # one image and a few run other convolution kernels (models._run_subnet)
        x, y = mnist_test.images[:count], mnist_test.labels[:count]
        with torch.inference_mode():
            z = model.encode(x, y)
            assert (model.decode(z, y) - x.float()).abs().max() <= 1e-3
    save_model(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["conv_subnet"] == "3-3-3"
    with torch.inference_mode():
        assert torch.equal(load_folder(tmp_path / "m").model.encode(x, y), model.encode(x, y))
    with pytest.raises(ModelError, match="conv_subnet must be '3-1-3' or '3-3-3'"):
        config_from_dict({**config_to_dict(config), "conv_subnet": "5-5-5"})
    old = config_to_dict(config)
    del old["conv_subnet"]  # config.json of a model saved before the option existed
    assert config_from_dict(old).conv_subnet == "3-1-3"


def test_saved_model_reloads_identically(tmp_path, tiny_image_model, mnist_test):
    save_model(tiny_image_model, tmp_path / "m")
    loaded = load_folder(tmp_path / "m")
    x, y = mnist_test.images[:4], mnist_test.labels[:4]
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(x, y), tiny_image_model.encode(x, y))


def test_state_dict_keys_do_not_depend_on_graph_sort_order(tiny_image_model):
    keys = list(tiny_image_model.state_dict())
    rebuilt = list(build_model(tiny_image_model.config).state_dict())
    assert keys == rebuilt
    assert keys[0].startswith("inn.module_list.0.")


def test_permutation_seed_does_not_touch_global_numpy_state(tiny_image_model):
    import numpy as np

    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    build_model(tiny_image_model.config)
    assert np.random.rand() == expected


def test_image_training_steps_decrease_the_loss(mnist_test):
    torch.manual_seed(0)
    config = ImageModelConfig(name="t", dataset="mnist", class_names=[str(i) for i in range(10)],
                              conv_width=8, conv_blocks=[1, 1], fc_blocks=1, fc_width=32)
    model = ImageCINN(config)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    x, y = mnist_test.images[:128], mnist_test.labels[:128]
    losses = []
    for _ in range(15):
        loss = model.bits_per_dim(x, y, torch.Generator().manual_seed(0)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_tabular_training_decreases_the_loss():
    table = load_table("heart")
    seen = []
    fit_tabular(table.frame, ["target", "sex"], steps=100, progress=lambda share, loss: seen.append(loss))
    assert seen[-1] < seen[0]


def test_a_kept_column_with_missing_values_fits_and_releases():
    from cadp.mechanisms import make_mechanism
    from cadp.privatize import privatize

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=60), "y": rng.normal(size=60),
                          "group": pd.Series(["a", "b", None] * 20, dtype="str")})
    model = fit_tabular(frame, ["group"], steps=5)
    distances = model.config.latent_distances
    assert distances is not None and distances.d_typ > 0  # measured within the three groups, missing one included
    released = privatize(model, frame, None, make_mechanism("laplace", 2, temperature=0.7), seed=0).privatized_frame
    assert released["group"].isna().sum() == 20  # kept exactly, missing values too


def test_latent_distances_of_a_large_table_use_a_bounded_sample():
    """All pairwise distances of one group take memory in the square of its size: a large upload is measured on
    DISTANCE_RECORDS of its records, the same ones on every run."""
    from cadp.train import DISTANCE_RECORDS, measure_latent_distances

    latents = torch.randn(DISTANCE_RECORDS + 1000, 3, generator=torch.Generator().manual_seed(0))
    first = measure_latent_distances(latents, torch.zeros(len(latents)), held_out=True)
    assert first.n_records == DISTANCE_RECORDS
    assert first == measure_latent_distances(latents, torch.zeros(len(latents)), held_out=True)
    whole = measure_latent_distances(latents[:DISTANCE_RECORDS], torch.zeros(DISTANCE_RECORDS), held_out=True)
    assert whole.n_records == DISTANCE_RECORDS and abs(first.d_typ / whole.d_typ - 1) < 0.05


def test_a_fitted_tables_latent_distances_are_measured_on_its_held_out_rows():
    """PRIVACY.md: d_typ and d_nn are measured on held-out data. fit_tabular holds out 15% of a table of 50 rows or
    more for early stopping: the distances are measured on those rows, and on all rows (said so) only where too
    few are held out to measure on."""
    table = load_table("heart")
    distances = fit_tabular(table.frame, ["target", "sex"], steps=3).config.latent_distances
    assert distances.held_out and distances.n_records == int(len(table.frame) * 0.15)
    assert distances.measured_on == (f"on {distances.n_records} held-out records (not trained on; at most used to "
                                     "choose when training stopped)")

    rng = np.random.default_rng(0)
    few = pd.DataFrame({"x": rng.normal(size=40), "y": rng.normal(size=40), "group": ["a", "b"] * 20})
    distances = fit_tabular(few, ["group"], steps=3).config.latent_distances  # under 50 rows: none held out
    assert not distances.held_out and distances.n_records == 40
    assert distances.measured_on == "on 40 records the model was fitted on (too few held-out ones to measure on)"
    from cadp.mechanisms import make_mechanism
    from cadp.privatize import privatize

    model = fit_tabular(few, ["group"], steps=3)
    metric = privatize(model, few.head(2), None, make_mechanism("metric", 1.0))
    assert "Both distances are medians measured on 40 records the model was fitted on" in metric.guarantee

    # two condition columns of 8 levels each (no identifiers), whose pairs only the last two rows share
    index = [min(i, 58) for i in range(60)]
    codes = pd.DataFrame({"x": rng.normal(size=60), "y": rng.normal(size=60),
                          "a": [f"a{i // 8}" for i in index], "b": [f"b{i % 8}" for i in index]})
    distances = fit_tabular(codes, ["a", "b"], steps=3).config.latent_distances  # no two of 9 held-out rows do
    assert not distances.held_out and distances.n_records == 60
    unique = codes.head(59).assign(b=[f"b{i % 8}" for i in range(59)], a=[f"a{i // 8}" for i in range(59)])
    with pytest.raises(InputError, match="no two of the 59 rows share condition values"):
        fit_tabular(unique, ["a", "b"], steps=3)
    # one row twice among rows of distinct conditions: fewer conditions do help, as the message says
    constant = pd.DataFrame({"age": [30] * 4, "weight": [70] * 4, "group": ["a", "a", "b", "b"],
                             "g2": ["x", "y", "x", "y"]})  # rows differ in their conditions only: dropping one helps
    with pytest.raises(InputError, match="no two of the 4 rows share condition values.*choose fewer or coarser"):
        fit_tabular(constant, ["group", "g2"], steps=3)
    with pytest.raises(InputError, match="the rows of the 60 that share condition values are copies of one another.*"
                                         "choose fewer or coarser"):  # (a row and its copy: they share, as copies)
        fit_tabular(pd.concat([unique, unique.head(1)], ignore_index=True), ["a", "b"], steps=3)
    # copies of one row share their conditions: fewer conditions cannot help (the message said to choose fewer)
    copies = pd.DataFrame({"age": [30] * 3, "weight": [70] * 3, "group": ["a"] * 3})
    for conditions in (["group"], []):
        with pytest.raises(InputError, match=r"the 3 rows hold only 1 different one, and no two different rows "
                                             "share condition values"):
            fit_tabular(copies, conditions, steps=3)


def test_a_table_no_fit_can_take_is_refused_before_any_step_and_by_check_fittable():
    """Rows that share no conditions were refused after every step of the fit had run (the distances are measured
    at its end); the same refusal now comes first, and ``check_fittable`` (the app's check before it offers a fit)
    gives it without training."""
    from cadp.train import check_fittable

    rng = np.random.default_rng(1)
    unique = pd.DataFrame({"x": rng.normal(size=8), "y": rng.normal(size=8), "ward": list("ppqqrrss"),
                           "shift": ["day", "night"] * 4})  # each (ward, shift) pair in one row
    calls = []
    with pytest.raises(InputError, match="no two of the 8 rows share condition values") as fitted:
        fit_tabular(unique, ["ward", "shift"], steps=50, progress=lambda share, loss: calls.append(share))
    assert calls == []  # no step ran
    with pytest.raises(InputError) as checked:
        check_fittable(unique, ["ward", "shift"])
    assert str(checked.value) == str(fitted.value)
    with pytest.raises(InputError, match="a table of 1 row"):
        check_fittable(unique.head(1), [])
    check_fittable(unique, [])  # one empty condition shared by every row: fittable, returns quietly
    # rows do share their conditions, as copies of one row per group: not "no two rows share condition values"
    copies = pd.DataFrame({"x": [1.0] * 40, "y": [2] * 40, "ward": list("pq") * 20})
    with pytest.raises(InputError, match="the rows of the 40 that share condition values are copies of one another"):
        check_fittable(copies, ["ward"])


def test_a_config_written_before_held_out_was_recorded_claims_neither(tiny_image_model):
    """Before the field, fit_tabular measured on the rows it was fitted on and the CLI on held-out ones: a
    config.json without it says which is not recorded (the bundled configs say held out: the CLI made them)."""
    data = config_to_dict(tiny_image_model.config)
    data["latent_distances"] = {"d_typ": 750.0, "d_nn": 630.0, "latent_l1_norm": 367.0, "n_records": 2000}
    distances = config_from_dict(json.loads(json.dumps(data))).latent_distances
    assert distances.held_out is None and "held-out records" not in distances.measured_on
    assert distances.measured_on == ("on 2000 records (whether held out or fitted on was not recorded with this "
                                     "model)")
    assert config_to_dict(config_from_dict(data))["latent_distances"]["held_out"] is None
    fitted = {**data["latent_distances"], "held_out": False}
    assert config_from_dict({**data, "latent_distances": fitted}).latent_distances.held_out is False
    with pytest.raises(ModelError, match="held_out must be true, false or absent"):
        config_from_dict({**data, "latent_distances": {**fitted, "held_out": "false"}})
    for name in ("mnist-cinn", "fashion-mnist-cinn", "diabetes-cinn", "heart-cinn"):
        assert load_folder(bundled(name)).config.latent_distances.held_out is True


def test_table_samples_draw_conditions_from_their_prior():
    table = load_table("heart")
    model = fit_tabular(table.frame, ["target", "sex"], steps=5)
    rows = model.sample_frame(4000, generator=torch.Generator().manual_seed(0))
    assert list(rows.columns) == model.config.data_columns + ["target", "sex"]
    assert rows["sex"].mean() == pytest.approx(table.frame["sex"].mean(), abs=0.03)
    assert set(rows["thal"]) <= set(table.frame["thal"])


def test_traced_inference_matches_the_graph_at_any_batch_size_and_follows_weight_changes(tiny_image_model,
                                                                                         mnist_test):
    table = load_table("heart")
    tabular = perturbed(fit_tabular(table.frame, ["target", "sex"], steps=3))
    rows = tabular.data_encoder.transform(table.frame)
    condition = tabular.condition_encoder.transform(table.frame)
    image = tiny_image_model.eval()
    x, y = mnist_test.images[:33], mnist_test.labels[:33]

    def graph(model, inputs, conditions, rev):  # FrEIA's graph, eagerly
        with torch.no_grad():
            c = model.condition(conditions) if isinstance(model, ImageCINN) else [model._condition(conditions)]
            return model.inn(inputs, c=c, rev=rev, jac=False)[0]

    with torch.inference_mode():
        tabular.encode(rows[:100], condition[:100])  # traced at one batch size ...
        image.decode(torch.zeros(1, 784), y[:1])
        z_rows, z_image = tabular.encode(rows, condition), image.encode(x, y)  # ... used at other sizes
    def inference_traces(model):  # keys (rev, jac, ...); a fit leaves its training pass's trace too
        return [key for key in model._traced._entries if not key[1]]

    assert len(inference_traces(tabular)) == 1 and len(inference_traces(image)) == 2
    # the traces run the couplings' lean inference form: the same function, up to float rounding
    assert torch.allclose(z_rows, graph(tabular, rows, condition, False), rtol=1e-5, atol=1e-5)
    assert torch.allclose(z_image, graph(image, image._to_logit(x, None)[0], y, False), atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(tabular.decode(z_rows, condition), graph(tabular, z_rows, condition, True), atol=1e-6)
        assert torch.allclose(image.decode(z_image, y), image._from_logit(graph(image, z_image, y, True)), atol=1e-3)
    # the traces share the parameters: a weight change shows in the next traced call
    with torch.no_grad():
        for parameter in tabular.parameters():
            if parameter.is_floating_point():
                parameter.mul_(1.5)
    with torch.inference_mode():
        changed = tabular.encode(rows, condition)
    assert torch.allclose(changed, graph(tabular, rows, condition, False), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(changed, z_rows, rtol=1e-3, atol=1e-3)
    # with gradients (training), the graph runs and gradients flow
    tabular.train()
    tabular.encode(rows[:8], condition[:8]).sum().backward()
    assert all(p.grad is not None for p in tabular.parameters() if p.requires_grad)


def test_few_images_run_their_own_trace_with_the_same_function_as_the_graph(tiny_image_model, mnist_test,
                                                                           monkeypatch):
    """The route with oneDNN copies of the weights (where oneDNN Graph's fusion is off or fails)."""
    monkeypatch.setattr(models, "ONEDNN_GRAPH", False)
    image = tiny_image_model.eval()
    image._traced.clear()
    x, y = mnist_test.images[:SMALL_BATCH + 1], mnist_test.labels[:SMALL_BATCH + 1]

    def graph(pixels, labels):  # FrEIA's graph, eagerly
        with torch.no_grad():
            return image.inn(image._to_logit(pixels, None)[0], c=image.condition(labels), jac=False)[0]

    def operators(small, rev=False):  # aten operators of the trace for few or more images
        (traced,) = [t for key, (t, _copies) in image._traced._entries.items() if key[:3] == (rev, False, small)]
        return {node.kind() for node in traced.inlined_graph.nodes()}

    with torch.inference_mode():
        few = [image.encode(x[:n], y[:n]) for n in (1, 2, SMALL_BATCH)]
        more = image.encode(x, y)
    for z in few:
        assert torch.allclose(z, graph(x[:len(z)], y[:len(z)]), atol=1e-5)
    assert torch.allclose(more, graph(x, y), atol=1e-5)
    assert torch.allclose(few[-1], more[:SMALL_BATCH], atol=1e-5)  # either trace: the same function
    # one trace for 1 to SMALL_BATCH images, its convolutions through oneDNN with the weights reordered once
    # (the direct kernel where this PyTorch has no oneDNN); another beyond
    few_images = "mkldnn::_convolution_pointwise" if _packed_conv2d() is not None else "aten::thnn_conv2d"
    assert few_images in operators(True) and few_images not in operators(False)
    assert "aten::_convolution" in operators(False) and "aten::_convolution" not in operators(True)
    with torch.inference_mode():
        back = image.decode(few[1], y[:2])  # the reverse pass has its own trace for few images
    assert few_images in operators(True, rev=True)
    copies = [packs for _traced, packs in image._traced._entries.values() if packs is not None]
    assert len(copies) == (2 if _packed_conv2d() is not None else 0) and all(p is copies[0] for p in copies)  # one set
    with torch.no_grad():
        expected = image._from_logit(image.inn(few[1], c=image.condition(y[:2]), rev=True, jac=False)[0])
    assert torch.allclose(back, expected, atol=1e-3)
    # the trace for few images shares the parameters too
    with torch.no_grad():
        image.inn.module_list[1].subnet1[0].weight.mul_(3.0)
    with torch.inference_mode():
        changed = image.encode(x[:2], y[:2])
    assert torch.allclose(changed, graph(x[:2], y[:2]), atol=1e-5)
    assert not torch.allclose(changed, few[1], atol=1e-3)
    # and a weight given other storage (the oneDNN copies are copies: made again)
    layer = image.inn.module_list[1].subnet2[2]
    layer.weight.data = layer.weight.data * 0.5
    with torch.inference_mode():
        halved = image.encode(x[:2], y[:2])
    assert torch.allclose(halved, graph(x[:2], y[:2]), atol=1e-5)
    assert not torch.allclose(halved, changed, atol=1e-3)


def test_an_image_model_made_under_inference_mode_runs_few_images(mnist_test):
    """Its weights are inference tensors, which have no version counter: the passes for few images read them
    (no oneDNN copies, which could not tell an in-place change) and follow a change made in place."""
    config = ImageModelConfig(name="tiny", dataset="mnist", class_names=[str(i) for i in range(10)],
                              conv_width=8, conv_blocks=[2, 2], fc_blocks=2, fc_width=32)
    with torch.inference_mode():
        model = perturbed(ImageCINN(config)).eval()
        x, y = mnist_test.images[:2], mnist_test.labels[:2]
        few = model.encode(x, y)
        with graph_mode():
            assert torch.allclose(few, model.encode(x, y), atol=1e-5)
        layer = model.inn.module_list[1].subnet2[0]
        layer.weight.mul_(2)
        changed = model.encode(x, y)
        with graph_mode():
            assert torch.allclose(changed, model.encode(x, y), atol=1e-5)
    assert not torch.allclose(changed, few, atol=1e-3)


def test_few_images_follow_weight_changes_no_version_counter_shows_after_train_and_eval(mnist_test, monkeypatch):
    """A fused optimizer's step leaves the weights' version counters as they were: the oneDNN copies the passes
    for few images read are dropped by the next train() or eval(); stale copies are not kept alive; a weight that
    records a gradient is not copied; a large network's copies stop at MAX_BYTES (the rest: the direct kernel)."""
    from cadp.models import _ConvPacks

    if _packed_conv2d() is None:
        pytest.skip("this PyTorch has no oneDNN: the passes read the weights themselves")
    monkeypatch.setattr(models, "ONEDNN_GRAPH", False)
    config = ImageModelConfig(name="tiny", dataset="mnist", class_names=[str(i) for i in range(10)],
                              conv_width=8, conv_blocks=[2, 2], fc_blocks=2, fc_width=32)
    torch.manual_seed(0)
    model = perturbed(ImageCINN(config))
    x, y = mnist_test.images[:2], mnist_test.labels[:2]

    def few_and_graph():
        with torch.inference_mode():
            few = model.encode(x, y)
            with graph_mode():
                return few, model.encode(x, y)

    before, _ = few_and_graph()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    model.bits_per_dim(x, y).mean().backward()
    versions = [p._version for p in model.parameters()]
    optimizer.step()
    assert [p._version for p in model.parameters()] == versions  # what the copies could not tell
    model.eval()
    after, graph = few_and_graph()
    assert torch.allclose(after, graph, atol=1e-4) and not torch.allclose(after, before, atol=1e-3)
    with torch.inference_mode():
        model.decode(after, y)  # both directions' passes read one set of copies
        layer = model.inn.module_list[1].subnet2[0]
        layer.weight.mul_(1.5)  # in place: the encode pass is made again, the decode pass's old copies dropped
        model.encode(x, y)
    copies = {id(packs) for _traced, packs in model._traced._entries.values() if packs is not None}
    assert len(copies) == 1 and model._traced._packs is not None and id(model._traced._packs) in copies

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    inputs = torch.randn(1, 3, 6, 6)
    assert _ConvPacks().conv(conv, inputs, relu=False) is None  # records a gradient: conv2d itself
    with torch.no_grad():
        assert torch.allclose(_ConvPacks().conv(conv, inputs, relu=False), conv(inputs), atol=1e-5)

    limited = _ConvPacks()
    limited.MAX_BYTES = conv.weight.numel() * 4  # room for one layer's copy
    other = torch.nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        assert limited.conv(conv, inputs, relu=False) is not None and limited.conv(other, inputs, relu=False) is None


def _fusion_or_skip():
    if not hasattr(torch.jit, "enable_onednn_fusion") or not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch has no oneDNN Graph fuser")


def _one_image_case(model, mnist_test):
    """(Skipped without the fuser.) The model in eval mode, one test image, its label and FrEIA's graph's latent of
    it."""
    _fusion_or_skip()
    image = model.eval()
    x, y = mnist_test.images[:1], mnist_test.labels[:1]
    with graph_mode(), torch.inference_mode():
        return image, x, y, image.encode(x, y)


def _fused_subnet_shapes(image) -> list[tuple[int, ...]]:
    """The input shape of each fused subnet graph the model's passes call, each graph checked to be fused (run once
    on zeros: its optimized graph has a oneDNN Graph group)."""
    shapes = []
    with torch.inference_mode():
        for (_subnet, shape, _strides), (graph, _handle) in image._traced._subnets._graphs.items():
            graph(torch.zeros(shape))
            assert "prim::oneDNNFusionGroup" in str(torch.jit.last_executed_optimized_graph())
            shapes.append(shape)
    return shapes


def test_few_images_run_a_pass_fused_by_onednn_graph_that_follows_weight_changes(tiny_image_model, mnist_test,
                                                                                 monkeypatch):
    """Passes for up to FUSED_BATCH images are frozen, their convolutional subnets fused by oneDNN Graph as graphs
    of their own that both directions call: the graph's function; the fuser is on only while a subnet is
    optimized; a weight changed in place, given other storage or stepped by a fused optimizer (then eval()) is
    followed."""
    _fusion_or_skip()
    image = tiny_image_model.eval()
    image._traced.clear()
    x, y = mnist_test.images[:SMALL_BATCH], mnist_test.labels[:SMALL_BATCH]
    conv_subnets = [module for module in image.modules() if isinstance(module, models.ConvSubnet)]

    def graph(pixels, labels):
        with graph_mode(), torch.inference_mode():
            return image.encode(pixels, labels)

    def kinds():  # (reverse, images if fused else 0) -> what the pass holds
        return {(key[0], key[-1]): type(copies).__name__ for key, (_t, copies) in image._traced._entries.items()}

    assert not torch.jit.onednn_fusion_enabled()
    with torch.inference_mode():
        few = [image.encode(x[:1], y[:1])]
        back_one = image.decode(few[0], y[:1])
        # both directions call the same graph for each subnet: one per subnet, not one per subnet and direction
        assert len(_fused_subnet_shapes(image)) == len(conv_subnets)
        for traced, _snapshot in image._traced._entries.values():
            assert "cadp::fused_subnet" in str(traced.inlined_graph) and traced.holds is image._traced._subnets
        few += [image.encode(x[:n], y[:n]) for n in (2, SMALL_BATCH)]
        back = image.decode(few[1], y[:2])
    assert not torch.jit.onednn_fusion_enabled()  # set back
    assert sorted(shape[0] for shape in _fused_subnet_shapes(image)) == [1] * len(conv_subnets) + [2] * len(
        conv_subnets)
    # one fused pass per batch size up to FUSED_BATCH (2); more images: the route with weight copies
    assert kinds() == {(False, 1): "_Snapshot", (True, 1): "_Snapshot", (False, 2): "_Snapshot",
                       (False, 0): "_ConvPacks", (True, 2): "_Snapshot"}
    with graph_mode(), torch.inference_mode():
        assert torch.allclose(back_one, image.decode(few[0], y[:1]), atol=1e-3)
    for z in few:
        assert z.dtype == torch.float32 and torch.allclose(z, graph(x[:len(z)], y[:len(z)]), atol=1e-4)
    with graph_mode(), torch.inference_mode():
        assert torch.allclose(back, image.decode(few[1], y[:2]), atol=1e-3)
    # in place: the frozen pass holds the weights as constants; it is made again
    with torch.no_grad():
        image.inn.module_list[1].subnet1[0].weight.mul_(3.0)
    with torch.inference_mode():
        changed = image.encode(x[:2], y[:2])
    assert torch.allclose(changed, graph(x[:2], y[:2]), atol=1e-4) and not torch.allclose(changed, few[1], atol=1e-3)
    # the passes that called the old graphs are dropped with them (not kept until their key is asked for)
    assert kinds() == {(False, 2): "_Snapshot"}
    layer = image.inn.module_list[1].subnet2[2]
    layer.weight.data = layer.weight.data * 0.5  # other storage
    with torch.inference_mode():
        halved = image.encode(x[:2], y[:2])
    assert torch.allclose(halved, graph(x[:2], y[:2]), atol=1e-4) and not torch.allclose(halved, changed, atol=1e-3)
    image.train()
    optimizer = torch.optim.Adam(image.parameters(), lr=0.05, fused=True)
    image.bits_per_dim(x, y).mean().backward()
    optimizer.step()  # advances no version counter
    image.eval()
    with torch.inference_mode():
        stepped = image.encode(x[:2], y[:2])
    assert torch.allclose(stepped, graph(x[:2], y[:2]), atol=1e-4) and not torch.allclose(stepped, halved, atol=1e-3)


def test_fusion_that_fails_or_does_not_fuse_leaves_the_pass_with_weight_copies(tiny_image_model, mnist_test,
                                                                               monkeypatch):
    """Where oneDNN Graph raises, or the optimized graph has no fused group, the pass reads oneDNN copies of the
    weights as before, and the fuser's switch is as it was."""
    image, x, y, expected = _one_image_case(tiny_image_model, mnist_test)
    switch, frozen = torch.jit.enable_onednn_fusion, models._GraphPass.frozen

    def failing(enabled):
        switch(enabled)
        if enabled:
            raise RuntimeError("partition compile failed")

    class OffWhenFused:  # the frozen pass, its fused run's result changed a little (more than float rounding)
        def __init__(self, module):
            self.module = module

        def __call__(self, *inputs):
            out = self.module(*inputs)
            return out + 1e-2 * (1 + out.abs().max()) if torch.jit.onednn_fusion_enabled() else out

    for patch in ({"enable_onednn_fusion": failing}, {"last_executed_optimized_graph": lambda: "graph()"},
                  {"frozen": lambda graph_pass: OffWhenFused(frozen(graph_pass))}):
        image._traced.clear()
        with monkeypatch.context() as context:
            for name, value in patch.items():
                context.setattr(models._GraphPass if name == "frozen" else torch.jit, name, value)
            with torch.inference_mode():
                z = image.encode(x, y)
        assert not torch.jit.onednn_fusion_enabled()
        assert {type(copies).__name__ for _t, copies in image._traced._entries.values()} <= {"_ConvPacks", "NoneType"}
        assert image._traced._subnets is None  # the graphs made on the way are not kept
        assert torch.allclose(z, expected, atol=1e-5)
    # a fuser switched on by the program stays on
    image._traced.clear()
    switch(True)
    try:
        with torch.inference_mode():
            image.encode(x, y)
        assert torch.jit.onednn_fusion_enabled()
    finally:
        switch(False)


def test_a_fused_pass_takes_any_layout_of_its_inputs_and_passes_are_fused_for_every_load(tiny_image_model,
                                                                                          mnist_test):
    """One-hot labels given as a slice, a transpose or an expansion, first or later, give the graph's latents and
    images (a frozen fused pass specialized again on other strides computed wrong latents or failed: each input
    is copied to one layout); passes made again and again are fused each time (no bound per process: a dropped
    pass is freed, ``_GraphPass``)."""
    _fusion_or_skip()
    image = tiny_image_model.eval()
    x, y = mnist_test.images[:2], mnist_test.labels[:2]
    one_hot = torch.nn.functional.one_hot(y.long(), 10).float()
    wide = torch.cat([one_hot, torch.ones(2, 5)], 1)
    layouts = [wide[:, :10], one_hot.t().contiguous().t(), one_hot[:1].expand(2, -1), y, one_hot]
    with torch.inference_mode():
        for first in (0, 1, 2):  # the pass made on labels of an odd layout, then each layout
            image._traced.clear()
            order = [layouts[first], *layouts]
            for labels in order:
                for n in (1, 2):
                    got = image.encode(x[:n], labels[:n])
                    with graph_mode():
                        want = image.encode(x[:n], labels[:n])
                    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
                    back = image.decode(got, labels[:n])
                    with graph_mode():
                        assert torch.allclose(back, image.decode(got, labels[:n]), atol=1e-3, rtol=1e-4)
            assert {type(c).__name__ for key, (_t, c) in image._traced._entries.items() if key[-1]} == {"_Snapshot"}
    for _ in range(6):  # (twelve passes more; a bound of eight per process was the rule before)
        image._traced.clear()
        with torch.inference_mode():
            image.decode(image.encode(x[:1], y[:1]), y[:1])
        assert {type(c).__name__ for _t, c in image._traced._entries.values()} == {"_Snapshot"}


def test_a_fused_pass_that_cannot_be_built_falls_back_and_an_interrupt_goes_on_up(tiny_image_model, mnist_test,
                                                                                   monkeypatch):
    """An error of any kind while building a fused pass (tracing it, freezing it) falls back to the route with
    weight copies instead of failing the call; an interrupt goes on up, and leaves the fuser off."""
    image, x, y, expected = _one_image_case(tiny_image_model, mnist_test)
    frozen, lean = models._GraphPass.frozen, models._FlowPass

    def failing_lean(*args, **kwargs):  # the fused pass's lean form (calling the fused subnets) fails
        if isinstance(kwargs.get("packs"), models._FusedSubnets):
            raise IndexError("no")
        return lean(*args, **kwargs)

    def failing_freeze(graph_pass):
        raise AssertionError("no")

    for owner, name, value in ((models, "_FlowPass", failing_lean), (models._GraphPass, "frozen", failing_freeze)):
        image._traced.clear()
        with monkeypatch.context() as context:
            context.setattr(owner, name, value)
            with torch.inference_mode():
                z = image.encode(x, y)
        assert torch.allclose(z, expected, atol=1e-5)
        assert {type(c).__name__ for _t, c in image._traced._entries.values()} == {"_ConvPacks"}
    assert models._GraphPass.frozen is frozen and models._FlowPass is lean
    image._traced.clear()

    def interrupted(*args, **kwargs):
        if isinstance(kwargs.get("packs"), models._FusedSubnets):
            raise KeyboardInterrupt
        return lean(*args, **kwargs)

    with monkeypatch.context() as context, pytest.raises(KeyboardInterrupt):  # (an interrupt goes on up)
        context.setattr(models, "_FlowPass", interrupted)
        with torch.inference_mode():
            image.encode(x, y)
    assert not torch.jit.onednn_fusion_enabled()
    image._traced.clear()
    with torch.inference_mode():
        image.encode(x, y)
    assert {type(c).__name__ for _t, c in image._traced._entries.values()} == {"_Snapshot"}  # fused again


def test_a_weight_change_drops_the_fused_passes_that_call_the_old_graphs(tiny_image_model, mnist_test):
    """After a weight change the next fused pass is made on new subnet graphs, and the other direction's pass, which
    calls the old ones, is dropped with them (not kept, with a second set of reordered weights, until it is asked
    for)."""
    import gc
    import weakref

    image, x, y, _ = _one_image_case(tiny_image_model, mnist_test)
    image._traced.clear()
    with torch.inference_mode():
        image.decode(image.encode(x, y), y)
    old = weakref.ref(image._traced._subnets)
    with torch.no_grad():
        image.inn.module_list[1].subnet1[0].weight.mul_(1.5)
    with torch.inference_mode():
        changed = image.encode(x, y)
    with graph_mode(), torch.inference_mode():
        assert torch.allclose(changed, image.encode(x, y), atol=1e-4)
    gc.collect()
    assert [key[0] for key in image._traced._entries] == [False] and old() is None


def test_a_torch_library_that_refuses_the_operator_leaves_the_weight_copies(tiny_image_model, mnist_test,
                                                                           monkeypatch):
    """Where ``torch.library`` refuses to define ``cadp::fused_subnet`` (another copy of the module defined it, or
    this PyTorch lacks it), passes read oneDNN copies of the weights, with the graph's result, and it is asked once."""
    image, x, y, expected = _one_image_case(tiny_image_model, mnist_test)
    asked = []

    def refusing(*args, **kwargs):
        asked.append(args)
        raise RuntimeError("Only a single TORCH_LIBRARY can be used to register the namespace cadp")

    monkeypatch.setattr(models, "_LIBRARY", [])
    monkeypatch.setattr(models, "_OPERATOR_REFUSED", [])
    monkeypatch.setattr(torch.library, "Library", refusing)
    image._traced.clear()
    with torch.inference_mode():
        z = image.encode(x, y)
        back = image.decode(z, y)
    assert torch.allclose(z, expected, atol=1e-4) and len(asked) == 1
    assert {type(c).__name__ for _t, c in image._traced._entries.values()} == {"_ConvPacks"}
    with graph_mode(), torch.inference_mode():
        assert torch.allclose(back, image.decode(z, y), atol=1e-3)
    image._traced.clear()


def test_passes_cleared_while_one_is_made_wait_for_it(tiny_image_model, mnist_test, monkeypatch):
    """``clear()`` (a ``load_state_dict``, a ``.to()``) from another thread while a fused pass is being made waits
    until it is made (it took the subnets away mid-build and failed the call before), and the graph's latent comes
    out; the next call makes the passes again."""
    import threading

    image, x, y, expected = _one_image_case(tiny_image_model, mnist_test)
    image._traced.clear()
    original, clearing = models._fused_pass, []

    def cleared_meanwhile(*args, **kwargs):
        if not clearing:
            clearing.append(threading.Thread(target=image._traced.clear))
            clearing[0].start()
            clearing[0].join(0.3)  # (it waits for the pass being made)
        return original(*args, **kwargs)

    monkeypatch.setattr(models, "_fused_pass", cleared_meanwhile)
    with torch.inference_mode():
        z = image.encode(x, y)
    clearing[0].join(10)
    assert torch.allclose(z, expected, atol=1e-4) and not image._traced._entries  # cleared after it
    with torch.inference_mode():
        assert torch.allclose(image.encode(x, y), expected, atol=1e-4)
    assert {type(c).__name__ for _t, c in image._traced._entries.values()} == {"_Snapshot"}


def test_an_interrupt_while_the_fuser_is_on_leaves_it_off_and_the_gate_free(tiny_image_model, mnist_test,
                                                                            monkeypatch):
    """A KeyboardInterrupt inside the fuser's moment (a subnet's graph optimized with the fuser on) goes on up; the
    fuser is off and the gate is free after it, and the next call is fused."""
    image, x, y, expected = _one_image_case(tiny_image_model, mnist_test)
    image._traced.clear()

    switch = torch.jit.enable_onednn_fusion

    def interrupted(enabled):  # the fuser switched on, then an interrupt
        switch(enabled)
        if enabled:
            raise KeyboardInterrupt

    with monkeypatch.context() as context, pytest.raises(KeyboardInterrupt):
        context.setattr(torch.jit, "enable_onednn_fusion", interrupted)
        with torch.inference_mode():
            image.encode(x, y)
    assert not torch.jit.onednn_fusion_enabled()
    gate = models.SCRIPT_GATE
    assert (gate._shared, gate._exclusive, gate._waiting) == (0, False, 0)
    with torch.inference_mode():
        assert torch.allclose(image.encode(x, y), expected, atol=1e-4)
    assert {type(c).__name__ for _t, c in image._traced._entries.values()} == {"_Snapshot"}


def test_fused_passes_made_before_a_reload_of_the_module_still_run():
    """``importlib.reload(cadp.models)`` keeps the operator the fused passes call and its table (a reload once
    dropped the operator, and a pass made before it crashed the process), and passes made after it are fused too.
    In a process of its own: a reload replaces the module's classes."""
    import subprocess
    import sys
    from pathlib import Path

    script = """
import importlib, torch
import cadp.models as models
from cadp.hub import load_model
image = load_model("weights/mnist-cinn").model.eval()
x, y = torch.rand(1, 1, 28, 28) * 255, torch.tensor([3])
with torch.inference_mode():
    before = image.encode(x, y)
importlib.reload(models)
fresh = load_model("weights/mnist-cinn").model.eval()  # (outside inference mode: weights that may be fused)
with torch.inference_mode():
    again = image.encode(x, y)
    other = fresh.encode(x, y)
kinds = {type(c).__name__ for m in (image, fresh) for _t, c in m._traced._entries.values()}
assert torch.equal(before, again) and torch.allclose(before, other, atol=1e-3), "latents differ"
assert kinds == {"_Snapshot"}, kinds
print("ok")
"""
    _fusion_or_skip()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_passes_wait_for_the_fusers_moment_and_it_waits_for_passes(tiny_image_model, mnist_test, monkeypatch):
    """A pass runs holding the gate shared (it waits while the fuser is on), and a fused pass is made holding it
    exclusively (it waits for a pass that is running)."""
    import threading

    _fusion_or_skip()
    image = tiny_image_model.eval()
    x, y = mnist_test.images[:1], mnist_test.labels[:1]
    with torch.inference_mode():
        image.encode(x, y)  # made
    order, held, release = [], threading.Event(), threading.Event()

    def holder(kind):
        with getattr(models.SCRIPT_GATE, kind)():
            held.set()
            release.wait(5)
            order.append(f"{kind} hold ends")

    def encode():
        with torch.inference_mode():
            image.encode(x, y)
        order.append("encoded")

    for kind, prepare in (("exclusive", None), ("shared", image._traced.clear)):
        order.clear()
        held.clear()
        release.clear()
        if prepare:
            prepare()  # the next encode makes a fused pass: an exclusive hold
        thread = threading.Thread(target=holder, args=(kind,))
        thread.start()
        held.wait(5)
        worker = threading.Thread(target=encode)
        worker.start()
        time.sleep(0.2)
        assert order == []  # the encode waits
        release.set()
        for running in (thread, worker):
            running.join(10)
        assert order == [f"{kind} hold ends", "encoded"]
    assert {type(c).__name__ for key, (_t, c) in image._traced._entries.items() if key[-1]} == {"_Snapshot"}


def test_a_table_fit_steps_backward_holding_the_script_gate_shared(monkeypatch):
    """A fit's backward step runs the traced likelihood's backward graph, which TorchScript optimizes on its first
    runs: it holds the gate shared, so the fuser's moment never falls on it."""
    from contextlib import contextmanager

    import cadp.train as train

    table = load_table("heart")
    holds = []

    class Recording:
        @contextmanager
        def shared(self):
            holds.append(torch.is_grad_enabled())
            yield

    monkeypatch.setattr(train, "SCRIPT_GATE", Recording())
    fit_tabular(table.frame, ["sex"], steps=5)
    assert len(holds) >= 5 and all(holds)  # one per step, with autograd on


def test_the_script_gate_keeps_an_exclusive_hold_apart_from_shared_ones():
    """While passes run (shared holds), the fuser's moment (an exclusive hold) waits, and passes wait for it."""
    import threading

    from cadp.models import _ScriptGate

    gate, order = _ScriptGate(), []
    running, release = threading.Event(), threading.Event()

    def pass_running():
        with gate.shared():
            running.set()
            release.wait(5)
            order.append("pass ends")

    def fusing():
        with gate.exclusive():
            order.append("fuser on")
            time.sleep(0.05)
            order.append("fuser off")

    def later_pass():
        with gate.shared():
            order.append("later pass")

    first = threading.Thread(target=pass_running)
    first.start()
    running.wait(5)
    second = threading.Thread(target=fusing)
    second.start()
    while not gate._waiting:
        time.sleep(0.001)
    third = threading.Thread(target=later_pass)  # behind the waiting exclusive hold
    third.start()
    time.sleep(0.05)
    assert order == []
    release.set()
    for thread in (first, second, third):
        thread.join(5)
    assert order == ["pass ends", "fuser on", "fuser off", "later pass"]


def test_lean_inference_replaces_only_atan_clamped_glow_couplings():
    from functools import partial

    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    from cadp.models import DenseSubnet, _FlowPass

    def graph(activation):
        nodes = [Ff.InputNode(6, name="in")]
        nodes.append(Ff.Node(nodes[-1], Fm.GLOWCouplingBlock, {"subnet_constructor": partial(DenseSubnet, width=8),
                                                               "clamp": 1.0, "clamp_activation": activation}))
        nodes.append(Ff.OutputNode(nodes[-1]))
        return Ff.GraphINN(nodes)

    assert len(_FlowPass(graph("ATAN"), False)._lean) == 1
    tanh = graph("TANH")
    for parameter in tanh.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    assert not _FlowPass(tanh, False)._lean  # FrEIA's own forward: the lean form knows only atan
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.equal(_FlowPass(tanh, False)(x), tanh(x, jac=False)[0])


def test_irevnet_downsampling_runs_as_pixel_unshuffle_only_with_freia_kernel():
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    from cadp.models import _FlowPass

    def graph(legacy=False):
        nodes = [Ff.InputNode(3, 8, 8, name="in")]
        nodes.append(Ff.Node(nodes[-1], Fm.IRevNetDownsampling, {"legacy_backend": legacy}, name="down"))
        nodes.append(Ff.OutputNode(nodes[-1], name="out"))
        return Ff.GraphINN(nodes)

    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    down = graph()
    with torch.no_grad():
        assert len(_FlowPass(down, False)._shuffles) == 1
        z, log_det = _FlowPass(down, False, jac=True)(x)
        assert torch.equal(z, down(x)[0]) and float(log_det) == 0.0  # the same values, not just close
        assert torch.equal(_FlowPass(down, True)(z), down(z, rev=True)[0]) and torch.equal(_FlowPass(down, True)(z), x)
        assert not _FlowPass(graph(legacy=True), False)._shuffles  # the legacy form orders channels otherwise
        down.module_list[0].downsample_kernel[0, 0, 0, 0] = 2.0  # a kernel that is not the reshape
        assert not _FlowPass(down, False)._shuffles
        assert torch.equal(_FlowPass(down, False)(x), down(x)[0])


def test_loading_weights_remakes_the_passes_that_were_chosen_from_them(tiny_image_model, mnist_test):
    image = tiny_image_model.eval()
    x, y = mnist_test.images[:3], mnist_test.labels[:3]
    with torch.inference_mode():
        before = image.encode(x, y)  # traced with the downsampling as pixel_unshuffle
    state = {name: tensor.clone() for name, tensor in image.state_dict().items()}
    kernel = next(name for name in state if name.endswith("downsample_kernel"))
    state[kernel][0, 0, 0, 0] = 2.0  # no longer the reshape: the convolution must run
    image.load_state_dict(state)
    with torch.inference_mode():
        after = image.encode(x, y)
    with torch.no_grad():
        expected = image.inn(image._to_logit(x, None)[0], c=image.condition(y), jac=False)[0]
    assert torch.allclose(after, expected, atol=1e-5) and not torch.allclose(after, before, atol=1e-3)


def test_likelihood_passes_match_freia_graph_in_value_and_gradient(tiny_image_model, mnist_test):
    from cadp.models import graph_mode

    table = load_table("heart")
    tabular = perturbed(fit_tabular(table.frame, ["target", "sex"], steps=3)).train()
    rows = tabular.data_encoder.transform(table.frame[:40])
    condition = tabular.condition_encoder.transform(table.frame[:40])
    image = perturbed(tiny_image_model, scale=0.02).train()
    x, y = mnist_test.images[:6], mnist_test.labels[:6]

    def value_and_gradients(loss):
        for model in (tabular, image):
            model.zero_grad(set_to_none=True)
        value = loss()
        value.sum().backward()
        return value.detach(), [p.grad.clone() for model in (tabular, image)
                                for p in model.parameters() if p.grad is not None]

    def losses():  # tabular: the traced lean pass; images: the eager lean pass
        table_nll = tabular.nll_per_dim(rows, condition)
        image_bpd = image.bits_per_dim(x, y, generator=torch.Generator().manual_seed(1))
        return torch.cat([table_nll, image_bpd])

    for _ in range(3):  # TorchScript's executor optimizes a trace after its first calls: check them all
        lean, lean_gradients = value_and_gradients(losses)
    with graph_mode():
        graph, graph_gradients = value_and_gradients(losses)
    assert torch.allclose(lean, graph, rtol=1e-5, atol=1e-5)
    assert len(lean_gradients) == len(graph_gradients) > 0
    for ours, theirs in zip(lean_gradients, graph_gradients):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(lean[:40], lean[:40].mean())  # rows differ: not a degenerate comparison


def test_fitted_table_model_likelihood_uses_its_final_weights(tmp_path):
    from cadp.models import graph_mode

    table = load_table("heart")
    model = fit_tabular(table.frame, ["target", "sex"], steps=60)  # best step restored after training
    rows = model.data_encoder.transform(table.frame)
    condition = model.condition_encoder.transform(table.frame)
    with torch.no_grad():
        traced = model.nll_per_dim(rows, condition)  # the trace made while training
        with graph_mode():
            graph = model.nll_per_dim(rows, condition)
    assert torch.allclose(traced, graph, rtol=1e-5, atol=1e-5)
    save_model(model, tmp_path / "m")  # the parameters own their storage again (safetensors refuses shared)
    reloaded = load_folder(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(reloaded.model.nll_per_dim(rows, condition), traced, rtol=1e-5, atol=1e-5)


def test_flat_parameters_train_as_the_separate_parameters_would():
    from cadp.train import flat_parameters

    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    reference = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    reference.load_state_dict(ours.state_dict())
    inputs = torch.randn(16, 3)
    params = list(ours.parameters())
    separate = torch.optim.AdamW(reference.parameters(), lr=0.05, weight_decay=0.01)
    with flat_parameters(params) as flat:
        optimizer = torch.optim.AdamW([flat], lr=0.05, weight_decay=0.01, fused=True)
        for _ in range(5):
            flat.grad.zero_()
            ours(inputs).square().mean().backward()
            torch.nn.utils.clip_grad_norm_([flat], 1.0)
            optimizer.step()
            separate.zero_grad()
            reference(inputs).square().mean().backward()
            torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
            separate.step()
    for mine, theirs in zip(params, reference.parameters()):
        assert torch.allclose(mine, theirs, atol=1e-6)
        assert mine.grad is None
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    assert not torch.allclose(params[0], torch.nn.Linear(3, 5).weight)


def test_numpy_flow_runs_few_table_rows_as_freia_graph_and_follows_the_weights():
    from cadp.models import NumpyFlow

    table = load_table("heart")
    model = perturbed(fit_tabular(table.frame, ["target", "sex"], steps=3))
    model._traced.clear()  # the fit encoded its rows through a trace
    rows = model.data_encoder.transform(table.frame)
    condition = model.condition_encoder.transform(table.frame)

    def graph(inputs, conditions, rev):
        with torch.no_grad():
            return model.inn(inputs, c=[model._condition(conditions)], rev=rev, jac=False)[0]

    with torch.inference_mode():
        for count in (1, 5, NumpyFlow.MAX_ROWS):
            z = model.encode(rows[:count], condition[:count])
            assert torch.allclose(z, graph(rows[:count], condition[:count], False), rtol=1e-5, atol=1e-5)
            assert torch.allclose(model.decode(z, condition[:count]), graph(z, condition[:count], True), atol=1e-5)
    assert model.__dict__["_numpy"][0] is not None and not model._traced._entries  # NumPy ran, no trace was made
    with torch.inference_mode():
        model.encode(rows[:NumpyFlow.MAX_ROWS + 1], condition[:NumpyFlow.MAX_ROWS + 1])
    assert len(model._traced._entries) == 1  # more rows: the trace
    with torch.inference_mode():
        before = model.encode(rows[:3], condition[:3])
    with torch.no_grad():  # in place: the views see it
        for parameter in model.parameters():
            if parameter.is_floating_point():
                parameter.mul_(1.3)
    with torch.inference_mode():
        changed = model.encode(rows[:3], condition[:3])
    assert not torch.allclose(changed, before, atol=1e-3)
    assert torch.allclose(changed, graph(rows[:3], condition[:3], False), rtol=1e-5, atol=1e-5)
    first = model.__dict__["_numpy"][0]
    for parameter in model.parameters():  # new storage: the views would be stale, a new NumPy flow is built
        if parameter.is_floating_point():
            parameter.data = parameter.data * 0.8
    assert not first.current()
    with torch.inference_mode():
        assert torch.allclose(model.encode(rows[:3], condition[:3]), graph(rows[:3], condition[:3], False),
                              rtol=1e-5, atol=1e-5)
    assert model.__dict__["_numpy"][0] is not first


def test_numpy_flow_only_for_chains_of_supported_blocks(tiny_image_model):
    from functools import partial

    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    from cadp.models import DenseSubnet, NumpyFlow

    assert NumpyFlow.of(tiny_image_model.inn) is None  # conv couplings, splits: the trace runs images
    nodes = [Ff.InputNode(6, name="in")]
    nodes.append(Ff.Node(nodes[-1], Fm.GLOWCouplingBlock, {"subnet_constructor": partial(DenseSubnet, width=8),
                                                           "clamp": 1.0, "clamp_activation": "TANH"}))
    nodes.append(Ff.OutputNode(nodes[-1]))
    assert NumpyFlow.of(Ff.GraphINN(nodes)) is None  # tanh clamp: not the lean coupling

    def couplings(*conditioned):
        condition = Ff.ConditionNode(2)
        nodes = [Ff.InputNode(6, name="in")]
        for given in conditioned:
            nodes.append(Ff.Node(nodes[-1], Fm.GLOWCouplingBlock,
                                 {"subnet_constructor": partial(DenseSubnet, width=8), "clamp": 1.0},
                                 conditions=condition if given else None))
        return Ff.GraphINN(nodes + [Ff.OutputNode(nodes[-1]), condition])

    assert NumpyFlow.of(couplings(True, True)) is not None
    assert NumpyFlow.of(couplings(True, False)) is None  # a coupling without the condition


def test_warm_up_makes_the_passes_that_a_first_privatize_needs(tiny_image_model, mnist_test):
    from cadp.mechanisms import make_mechanism
    from cadp.models import warm_up
    from cadp.privatize import privatize

    mechanism = make_mechanism("laplace", 10.0, temperature=0.7)
    table = load_table("heart")
    tabular = perturbed(fit_tabular(table.frame, ["target", "sex"], steps=3))
    image = tiny_image_model.eval()
    for model in (image, tabular):
        model._traced.clear()
        warm_up(model)
    made = {model: set(model._traced._entries) for model in (image, tabular)}
    assert {key[:3] for key in made[image]} == {(False, False, True), (True, False, True)}  # few-image passes
    assert {key[:3] for key in made[tabular]} == {(False, False, False), (True, False, False)}
    with torch.inference_mode():
        # the image page's call (one image, with the reconstruction) and the table page's (the whole table)
        privatize(image, mnist_test.images[:1], mnist_test.labels[:1], mechanism, seed=0, reconstruct=True)
        privatize(tabular, table.frame, None, mechanism, seed=0, reconstruct=True)
    assert all(set(model._traced._entries) == made[model] for model in (image, tabular))  # nothing traced anew


def test_passes_leave_nothing_in_torchscripts_process_wide_unit(tiny_image_model, mnist_test, monkeypatch):
    """A table fit (its likelihood traced with autograd), a table's passes beyond NumPy's rows, and an image
    model's passes of every route (fused where this PyTorch can, weight copies, many images) are traced into
    compilation units of their own, dropped with the model: TorchScript's process-wide unit, which keeps what it
    holds until the process ends (about 9 MiB per image model load and 22 per table fit with ``torch.jit.trace``),
    gains nothing."""
    from cadp.mechanisms import make_mechanism
    from cadp.privatize import privatize

    mechanism = make_mechanism("laplace", 10.0, temperature=0.7)
    table = load_table("heart")
    kept = torch.jit._state._python_cu.get_functions
    models._packed_conv2d()  # (scripted once per process, into that unit: before the count)
    before = len(kept())
    tabular = fit_tabular(table.frame, ["target", "sex"], steps=30)
    image = tiny_image_model.eval()
    with torch.inference_mode():
        privatize(tabular, table.frame, None, mechanism, seed=0, reconstruct=True)
        for n, fuse in ((1, True), (2, True), (1, False), (8, False)):
            image._traced.clear()
            image._traced.fuse = fuse
            privatize(image, mnist_test.images[:n], mnist_test.labels[:n], mechanism, seed=0, reconstruct=True)
    assert {key[:3] for key in tabular._traced._entries} >= {(False, True, False), (False, False, False)}
    assert len(kept()) == before


def test_fused_subnet_graphs_are_freed_with_their_model(tiny_image_model, mnist_test):
    """The operator's table of fused subnet graphs loses a model's entries when the model goes (it holds them weakly;
    the passes hold the graphs), and the operator refuses a graph that is gone."""
    import copy
    import gc

    _fusion_or_skip()
    twin = copy.deepcopy(tiny_image_model).eval()
    with torch.inference_mode():
        twin.decode(twin.encode(mnist_test.images[:1], mnist_test.labels[:1]), mnist_test.labels[:1])
    handles = [handle for _graph, handle in twin._traced._subnets._graphs.values()]
    assert handles and all(handle in models._FUSED_SUBNETS for handle in handles)
    del twin
    gc.collect()
    assert not any(handle in models._FUSED_SUBNETS for handle in handles)
    with pytest.raises(RuntimeError, match="was freed"):
        torch.ops.cadp.fused_subnet(torch.zeros(1, 12, 14, 14), handles[0])


def test_a_deep_copy_of_a_model_with_passes_runs_on_its_own_weights(tiny_image_model, mnist_test):
    """``copy.deepcopy`` of a model whose passes were made (a compilation unit cannot be copied) gives a model that
    makes its own passes, on its own weights: changing the copy's leaves the original's results as they were."""
    import copy

    table = load_table("heart")
    tabular = fit_tabular(table.frame, ["target", "sex"], steps=3).eval()
    image = tiny_image_model.eval()
    rows = torch.randn(100, tabular.latent_dim)  # (more rows than NumPy's route takes: a trace)
    condition = torch.zeros(len(rows), tabular.config.condition_dim)
    cases = [(tabular, lambda m: m.encode(rows, condition)),
             (image, lambda m: m.encode(mnist_test.images[:1], mnist_test.labels[:1]))]
    for model, run in cases:
        with torch.inference_mode():
            before = run(model)
        assert model._traced._entries
        twin = copy.deepcopy(model)
        with torch.no_grad():
            for parameter in twin.parameters():
                if parameter.is_floating_point():
                    parameter.mul_(1.01)
        with torch.inference_mode():
            got = run(twin)
            with graph_mode():
                want = run(twin)
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4) and not torch.allclose(got, before, atol=1e-4)
            assert torch.equal(run(model), before)
    # the eager likelihood pass a copy takes along runs the copy's couplings in their lean form, not FrEIA's
    with torch.no_grad():
        image.bits_per_dim(mnist_test.images[:2], mnist_test.labels[:2])
    twin = copy.deepcopy(image)
    lean = twin.__dict__["_log_det_pass"]._lean
    assert lean and lean <= set(twin.inn.modules()) and twin.__dict__["_log_det_pass"].inn is twin.inn


def test_table_training_cli_records_the_steps_that_ran(tmp_path, capsys):
    import math

    from cadp import train
    from cadp.hub import read_eval

    source = tmp_path / "rows.csv"
    load_table("diabetes").frame.head(120).to_csv(source, index=False)
    out = tmp_path / "model"
    assert train.main(["--dataset", str(source), "--out", str(out), "--conditions", "sex", "--steps", "40"]) == 0
    record = read_eval(out)["training"]
    assert record["steps"] == 40 and math.isfinite(record["final_train_loss"]) and math.isfinite(record["epochs"])
    assert "40 steps" in (out / "README.md").read_text()
    assert "training model" in capsys.readouterr().err  # a progress bar
    budget = tmp_path / "budget"
    assert train.main(["--dataset", str(source), "--out", str(budget), "--conditions", "sex", "--steps", "1000000",
                       "--time-budget", "0.02"]) == 0  # ~1 s: stops long before a million steps
    assert 0 < read_eval(budget)["training"]["steps"] < 1_000_000


@pytest.mark.parametrize("option", [["--steps", "0"], ["--time-budget", "-1"], ["--batch-size", "0"]])
def test_training_cli_refuses_settings_that_are_not_positive(option, tmp_path, capsys):
    from cadp import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", "diabetes", "--out", str(tmp_path / "m"), *option])
    assert exit_info.value.code == 2 and f"{option[0]} must be positive" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("dataset, options, message", [
    ("diabetes", ["--image-size", "32", "--half"], "--image-size, --half apply to image models only; diabetes is "
                                                  "a table dataset"),
    ("diabetes", ["--lr", "0.01"], "--lr applies to image models only"),
    ("mnist", ["--conditions", "sex"], "--conditions applies to table models only; mnist is an image dataset"),
])
def test_training_cli_refuses_options_that_would_do_nothing(dataset, options, message, tmp_path, capsys):
    from cadp import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", dataset, "--out", str(tmp_path / "m"), *options])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_mistyped_image_folder_is_not_called_a_table(tmp_path, capsys):
    from cadp import train

    assert train.main(["--dataset", str(tmp_path / "xrya"), "--out", str(tmp_path / "m"), "--image-size", "28"]) == 2
    err = capsys.readouterr().err
    assert "xrya" in err and "table dataset" not in err


def test_training_cli_never_replaces_a_model_or_an_interrupted_run_unasked(tmp_path, capsys):
    from cadp import train
    from cadp.hub import read_eval, update_eval

    source = tmp_path / "rows.csv"
    load_table("diabetes").frame.head(120).to_csv(source, index=False)
    out = tmp_path / "model"
    command = ["--dataset", str(source), "--out", str(out), "--conditions", "sex", "--steps", "20"]
    assert train.main(command) == 0
    update_eval(out, "utility", {"note": "measured on the first weights"})
    weights = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert train.main(command) == 2  # a second run into the same folder
    assert "already holds a model" in capsys.readouterr().err and (out / "model.safetensors").read_bytes() == weights
    assert train.main([*command, "--resume"]) == 2
    assert "image models only" in capsys.readouterr().err
    (out / "classifier.safetensors").write_bytes(b"an earlier image model's classifier")
    assert train.main([*command, "--seed", "1", "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() != weights
    assert set(read_eval(out)) == {"training"}  # the old evaluation described the old weights
    assert not (out / "classifier.safetensors").exists()  # and so did the old classifier
    assert "removed eval.json" in capsys.readouterr().err


def test_training_cli_never_writes_into_a_folder_of_other_files_unasked(tmp_path, capsys):
    from cadp import train
    from cadp.hub import read_eval

    source = tmp_path / "rows.csv"
    load_table("diabetes").frame.head(120).to_csv(source, index=False)
    study = tmp_path / "my study"
    study.mkdir()
    mine = {"README.md": "# My study: notes I wrote\n", "eval.json": '{"my": "results"}\n',
            "report.html": "<html>my report</html>\n"}
    for name, text in mine.items():
        (study / name).write_text(text)
    command = ["--dataset", str(source), "--out", str(study), "--conditions", "sex", "--steps", "5"]
    assert train.main(command) == 2
    err = capsys.readouterr().err
    assert f"--out {study} is a folder of other files (README.md, eval.json, report.html), not a model" in err
    assert "pass --overwrite" in err
    assert {name: (study / name).read_text() for name in mine} == mine and not (study / "config.json").exists()
    # asked: the model is written there, and nothing says its files described earlier weights (there were none)
    assert train.main([*command, "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "described the earlier weights" not in err and "removed eval.json, report.html" in err
    assert set(read_eval(study)) == {"training"} and not (study / "report.html").exists()
    # an empty folder (or one holding only folder metadata) is not a user's folder
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"")
    assert train.main([*command[:2], "--out", str(empty), *command[4:]]) == 0


def test_training_cli_refuses_to_restart_an_interrupted_image_run_unasked(tmp_path, capsys):
    from cadp import train

    out = tmp_path / "model"
    (out / train.CHECKPOINT_PATH).parent.mkdir(parents=True)
    (out / train.CHECKPOINT_PATH).write_bytes(b"an earlier run's state")
    assert train.main(["--dataset", "mnist", "--out", str(out), "--steps", "1"]) == 2
    assert "interrupted run" in capsys.readouterr().err and (out / train.CHECKPOINT_PATH).exists()
    fresh = tmp_path / "fresh"
    assert train.main(["--dataset", "mnist", "--out", str(fresh), "--steps", "1", "--resume"]) == 2
    assert "no checkpoint to continue" in capsys.readouterr().err and not fresh.exists()


def test_recorded_commands_are_quoted_and_name_no_local_folders():
    from cadp.train import recorded_command

    command = recorded_command("cadp.train", ["--dataset", "/home/dr x/pätients 2024.csv", "--out", "m y",
                                              "--width", "8"])
    assert command == "python -m cadp.train --dataset 'pätients 2024.csv' --out 'm y' --width 8"
    assert recorded_command("cadp.train", ["--dataset=/home/alice/rows.csv", "--out", "../../home/alice/m"]) == \
        "python -m cadp.train --dataset=rows.csv --out m"


def test_training_cli_refuses_an_output_path_that_is_a_file_and_an_unknown_device(tmp_path, capsys):
    from cadp import train

    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for out in (afile, afile / "model"):
        assert train.main(["--dataset", "diabetes", "--out", str(out), "--steps", "5"]) == 2
        assert f"{afile} is a file, not a folder" in capsys.readouterr().err
    assert train.main(["--dataset", "mnist", "--out", str(tmp_path / "m"), "--steps", "1", "--device", "tpu"]) == 2
    err = capsys.readouterr().err
    assert "--device 'tpu': use auto, cpu or cuda" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_own_data_named_like_a_public_dataset_is_not_called_public(tmp_path):
    from cadp import train
    from cadp.hub import load_folder
    from cadp.mechanisms import ConditionHandling, make_mechanism
    from cadp.privatize import privatize

    source = tmp_path / "heart.csv"  # the user's own rows, in a file named like the bundled set
    load_table("diabetes").frame.head(120).to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "m"), "--conditions", "sex",
                       "--steps", "20"]) == 0
    loaded = load_folder(tmp_path / "m")
    assert loaded.config.dataset == "heart.csv"
    result = privatize(loaded.model, load_table("diabetes").frame.head(3), None,
                       make_mechanism("laplace", 1, temperature=0.7))
    assert "trained without DP on its owner's data, not on a public dataset" in result.guarantee
    assert "heart.csv" not in result.guarantee  # shared terms never carry the training file's name
    assert "on public data" not in result.guarantee
    resampled = privatize(loaded.model, load_table("diabetes").frame.head(3), None,
                          make_mechanism("laplace", 1, temperature=0.7),
                          condition_handling={"sex": ConditionHandling("resampled")})
    assert "sex resampled from a uniform prior (the frequencies in the model's own training data are neither " \
        "public nor independent" in resampled.guarantee and "frequencies in heart.csv" not in resampled.guarantee
    card = (tmp_path / "m" / "README.md").read_text()
    assert "user data: check its license" in card and "whole public table" not in card


def test_training_on_a_csv_says_what_reading_it_did_and_never_stores_identifiers(tmp_path, capsys):
    from cadp import train

    frame = load_table("diabetes").frame.head(120).copy()
    frame["name"] = [f"Patient {i} Surname" for i in range(120)]
    frame["empty"] = ""
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "m"), "--conditions", "sex",
                       "--steps", "10"]) == 0
    err = capsys.readouterr().err
    assert "note: rows.csv: column 'name' has 120 distinct text values in 120 rows: treated as an identifier" in err
    assert "note: rows.csv: column 'empty' is empty in every row: dropped" in err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "name" not in [column["name"] for column in config["data_encoder"]["columns"]]
    assert "Patient 7" not in (tmp_path / "m" / "config.json").read_text() + (tmp_path / "m" / "README.md").read_text()


def test_training_on_a_small_csv_writes_a_model(tmp_path, capsys):
    """Below 50 rows there is no validation split, so the first pass without gradients was the test NLL; it
    ran under inference_mode, where a trace made during training raised a RuntimeError."""
    from cadp import train

    source = tmp_path / "rows.csv"
    load_table("diabetes").frame.head(30).to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "m"), "--steps", "20"]) == 0
    assert "test NLL" in capsys.readouterr().out
    assert (tmp_path / "m" / "model.safetensors").exists()
    card = " ".join((tmp_path / "m" / "README.md").read_text().split())  # the card warns what its files reveal
    assert "for a record the model was trained on, they do not cover what the model learned from it" in card
    assert "each numeric column's range and every category level and frequency) and this card can reveal" in card


def test_a_condition_column_dropped_while_reading_the_csv_is_said_so(tmp_path, capsys):
    """A date column asked for as a condition was reported as 'not in the table', which it is, in the file."""
    from cadp import train

    source = tmp_path / "visits.csv"
    pd.DataFrame({"visit": pd.date_range("2020-01-01", periods=40).astype(str), "age": np.arange(40) % 7,
                  "sex": ["m", "f"] * 20}).to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "m"), "--conditions", "visit",
                       "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "condition column ['visit'] not in visits.csv: reading it, column 'visit' has 40 distinct text values" in err
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_a_failed_run_keeps_the_folders_evaluation(tmp_path, capsys):
    from cadp import train
    from cadp.hub import read_eval, update_eval

    source = tmp_path / "rows.csv"
    load_table("diabetes").frame.head(120).to_csv(source, index=False)
    out = tmp_path / "model"
    assert train.main(["--dataset", str(source), "--out", str(out), "--conditions", "sex", "--steps", "20"]) == 0
    update_eval(out, "utility", {"note": "measured"})
    capsys.readouterr()
    assert train.main(["--dataset", str(tmp_path / "typo.csv"), "--out", str(out), "--overwrite"]) == 2
    assert "utility" in read_eval(out) and "removed" not in capsys.readouterr().err  # nothing lost


def test_ctrl_c_after_the_network_trained_says_that_resume_redoes_only_the_rest(tmp_path, capsys, monkeypatch):
    """Ctrl-C in the classifier's training said "nothing saved" though the network's checkpoint was on disk."""
    from cadp import train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_classifier", interrupted)
    out = tmp_path / "model"
    code = train.main(["--dataset", "mnist", "--out", str(out), "--steps", "2", "--width", "8", "--conv-blocks", "1",
                       "--fc-blocks", "1", "--fc-width", "16", "--max-train", "64"])
    err = capsys.readouterr().err
    assert code != 0 and "interrupted after the network finished training (2 steps); its checkpoint is in" in err
    assert "--resume to redo only its evaluation and the classifier" in err and (out / "checkpoint").exists()


def test_ctrl_c_saves_a_checkpoint_that_resume_continues_and_another_run_cannot(tmp_path):
    from cadp import train

    model = torch.nn.Linear(3, 1)
    data = torch.randn(64, 3)
    batches = train.endless_batches((data,), 8, torch.Generator().manual_seed(0))
    calls = [0]

    def loss_fn(x):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return model(x).pow(2).mean()

    checkpoint = tmp_path / "checkpoint" / "training.safetensors"
    run = {"dataset": "a", "width": 8}
    with pytest.raises(train.TrainingInterrupted, match="interrupted at step 5; saved .*--resume to continue"):
        train.fit(model, loss_fn, batches, steps=20, minutes=None, learning_rate=1e-2, checkpoint=checkpoint, run=run)
    steps, _, _ = train.fit(model, lambda x: model(x).pow(2).mean(), batches, steps=20, minutes=None,
                            learning_rate=1e-2, checkpoint=checkpoint, resume=True, run=run)
    assert steps == 20  # 5 before the interruption, 15 after
    with pytest.raises(InputError, match="another run \\(dataset 'a' -> 'b'\\)"):
        train.fit(model, lambda x: model(x).pow(2).mean(), batches, steps=30, minutes=None, learning_rate=1e-2,
                  checkpoint=checkpoint, resume=True, run={**run, "dataset": "b"})
    with pytest.raises(InputError, match="other model settings"):
        train.fit(torch.nn.Linear(4, 1), lambda x: x.sum(), batches, steps=30, minutes=None, learning_rate=1e-2,
                  checkpoint=checkpoint, resume=True)


def test_fit_reports_the_bias_corrected_running_loss_and_continues_it_across_a_resume(tmp_path):
    """The reported training loss was an average started at the first loss, restarted at a resume (NaN after a
    resume that added no steps), and called the final loss."""
    from cadp import train

    model = torch.nn.Linear(3, 1)
    batches = train.endless_batches((torch.randn(64, 3),), 8, torch.Generator().manual_seed(0))
    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])

    def scripted(x):  # a loss of known values that still has a gradient
        return model(x).sum() * 0 + next(losses)

    checkpoint = tmp_path / "checkpoint" / "training.safetensors"
    options = {"minutes": None, "learning_rate": 1e-2, "checkpoint": checkpoint, "run": {"dataset": "a"}}
    _, _, after_three = train.fit(model, scripted, batches, steps=3, **options)
    assert after_three == pytest.approx((0.98 ** 2 * 1 + 0.98 * 2 + 3) / (1 + 0.98 + 0.98 ** 2))
    _, _, after_five = train.fit(model, scripted, batches, steps=5, resume=True, **options)
    weights = [0.98 ** (4 - i) for i in range(5)]
    assert after_five == pytest.approx(sum(w * v for w, v in zip(weights, [1, 2, 3, 4, 5])) / sum(weights))
    _, _, nothing_added = train.fit(model, scripted, batches, steps=5, resume=True, **options)
    assert nothing_added == pytest.approx(after_five)


def _image_folder(root, per_class: int = 10):
    """An ImageFolder of two classes of random 16x16 grey images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / label / f"{index}.png")
    return root


TINY_IMAGE_RUN = ["--image-size", "16", "--width", "8", "--conv-blocks", "1", "--fc-blocks", "1", "--fc-width", "16"]


def test_resuming_an_image_run_refuses_other_images_lr_or_max_train_but_continues_an_older_checkpoint(
        tmp_path, capsys):
    """Images added to the folder split into a new permutation (trained-on images in the test split) and --lr or
    --max-train changed what the card says of the whole run: a resume accepted both silently."""
    from PIL import Image
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from cadp import train

    folder = _image_folder(tmp_path / "pets")
    out = tmp_path / "model"
    command = ["--dataset", str(folder), "--out", str(out), "--steps", "2", *TINY_IMAGE_RUN]
    assert train.main(command) == 0
    weights = (out / "model.safetensors").read_bytes()
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(folder / "dogs" / "new.png")  # one image added
    capsys.readouterr()
    assert train.main([*command[:5], "4", *TINY_IMAGE_RUN, "--resume"]) == 2
    assert "is of another run (train_fingerprint '" in capsys.readouterr().err
    (folder / "dogs" / "new.png").unlink()
    for option, changed in ((["--lr", "0.01"], "lr 0.001 -> 0.01)"),
                            (["--max-train", "10"], "max_train None -> 10, train_fingerprint '")):
        assert train.main([*command, "--resume", *option]) == 2
        assert f"is of another run ({changed}" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == weights
    # a checkpoint written before lr, max_train and the split's fingerprint were recorded still resumes
    checkpoint = out / train.CHECKPOINT_PATH
    with safe_open(str(checkpoint), "pt") as handle:
        state = json.loads(handle.metadata()["state"])
    for key in ("lr", "max_train", "train_fingerprint"):
        del state["run"][key]
    save_file(load_file(str(checkpoint)), str(checkpoint), metadata={"state": json.dumps(state)})
    assert train.main([*command[:5], "3", *TINY_IMAGE_RUN, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "predates recording lr, max_train, train_fingerprint: not checked" in err and "at step 2" in err


def test_resuming_a_finished_image_run_keeps_its_evaluations_unless_steps_are_added(tmp_path, capsys):
    """A --resume that added no steps removed eval.json's evaluations as if they described other weights (and
    retrained the classifier, rewrote the card): it now leaves the folder as it was."""
    from cadp import train
    from cadp.hub import read_eval, update_eval

    out = tmp_path / "model"
    command = ["--dataset", str(_image_folder(tmp_path / "pets")), "--out", str(out), "--steps", "2", *TINY_IMAGE_RUN]
    assert train.main(command) == 0
    update_eval(out, "utility", {"note": "measured on these weights"})
    (out / "report.html").write_text("<html>the report of these weights</html>")
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    checkpoint = (out / train.CHECKPOINT_PATH).read_bytes()
    capsys.readouterr()
    assert train.main([*command, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "already holds this run's weights (2 steps): nothing to do" in err and "removed" not in err
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before  # classifier too
    assert (out / train.CHECKPOINT_PATH).read_bytes() == checkpoint  # (written again, its seconds moved)
    assert read_eval(out)["utility"]["note"] == "measured on these weights"
    assert math.isfinite(read_eval(out)["training"]["final_train_loss"])
    assert train.main([*command[:5], "3", *TINY_IMAGE_RUN, "--resume"]) == 0  # one more step: other weights
    assert "removed eval.json, report.html" in capsys.readouterr().err
    assert set(read_eval(out)) == {"training"} and not (out / "report.html").exists()


def test_an_image_folder_models_card_states_the_split_seed_it_used(tmp_path):
    """The card said "80/20 by seed" next to "seed 3", but a folder splits with seed 0 whatever --seed is."""
    from cadp import train
    from cadp.data import load_image_folder
    from cadp.hub import read_eval

    folder, out = _image_folder(tmp_path / "pets"), tmp_path / "model"
    assert train.main(["--dataset", str(folder), "--out", str(out), "--steps", "2", "--seed", "3",
                       *TINY_IMAGE_RUN]) == 0
    card = " ".join((out / "README.md").read_text().split())
    assert "(each class split 80/20 with the fixed seed 0, every class keeping at least one training image; --seed sets the network's initialisation and batches)" in card
    assert "training loss: " in card and "the running average of the training loss over about the last 50 steps" \
        in card
    held_out = load_image_folder(folder, "test", image_size=16, seed=0)  # the seed the card names
    assert train.split_fingerprint(held_out) == read_eval(out)["training"]["test_fingerprint"]


def _small_table(rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"age": rng.integers(20, 80, rows), "bmi": rng.normal(25, 4, rows),
                         "diag": rng.choice(["x", "y"], rows)})


def test_fit_tabular_refuses_identifier_and_date_columns_that_a_release_would_carry_verbatim():
    """A DataFrame given to fit_tabular has not been read by load_table (which drops such columns from a CSV):
    a column of names, record numbers or dates would become categories stored in the model and released as
    other people's values; refused with what to do. Repeating categories and booleans are kept."""
    frame = _small_table()
    names = frame.assign(name=[f"Jane Doe {i}" for i in range(len(frame))])
    with pytest.raises(InputError, match="column 'name' has 60 distinct text values in 60 rows: treated as an "
                                         "identifier .* drop the column"):
        fit_tabular(names, ["diag"], steps=2)
    numbers = frame.assign(mrn=[f"MRN{100000 + i % 30}" for i in range(len(frame))])  # repeats: one row a visit
    with pytest.raises(InputError, match="'mrn' .* shaped like record numbers"):
        fit_tabular(numbers, ["diag"], steps=2)
    with pytest.raises(InputError, match=r"column \['seen'\] holds dates"):
        fit_tabular(frame.assign(seen=pd.date_range("2020-01-01", periods=len(frame))), ["diag"], steps=2)
    kept = frame.assign(city=["Berlin", "Rome", "Oslo"] * 20, smoker=[True, False] * 30)
    assert "city" in fit_tabular(kept, ["diag"], steps=2).config.data_columns


def test_fit_tabular_refuses_one_row_with_the_reason():
    with pytest.raises(InputError, match="a table of 1 row"):
        fit_tabular(_small_table().head(1), ["diag"], steps=2)


def test_save_model_writes_nothing_when_the_config_cannot_be_json(tmp_path):
    """A category JSON cannot hold (a Decimal) is refused before the folder is made, and an overwrite keeps
    the old model's files."""
    import decimal

    model = fit_tabular(_small_table().assign(level=[decimal.Decimal(i % 3) for i in range(60)]), ["diag"],
                        steps=2)
    with pytest.raises(InputError, match="cannot be written as JSON"):
        save_model(model, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    old = save_model(fit_tabular(_small_table(), ["diag"], steps=2), tmp_path / "old")
    before = {path.name: path.read_bytes() for path in old.iterdir()}
    with pytest.raises(InputError, match="cannot be written as JSON"):
        save_model(model, old, overwrite=True)
    assert {path.name: path.read_bytes() for path in old.iterdir()} == before


def test_image_samples_take_labels_as_privatize_reads_them(tiny_image_model):
    def draw(labels, temperature=0.7):
        return tiny_image_model.sample(labels, temperature, torch.Generator().manual_seed(0))

    samples = draw(torch.tensor([0, 1]))
    assert samples.shape == (2, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 255
    assert torch.equal(draw([0, 1]), samples) and torch.equal(draw(["0", "1"]), samples)
    # drawn without autograd even when the caller is not in inference mode: plain pixel values
    assert not samples.requires_grad and samples.grad_fn is None
    with pytest.raises(InputError, match="label 20 is out of range: labels must be class indices 0..9"):
        draw([20])
    with pytest.raises(InputError, match="label 'seven' is not one of the model's classes"):
        draw(["seven"])
    with pytest.raises(InputError, match="at least one"):
        draw([])
    for temperature in (-1, float("nan"), float("inf"), "0.7", True):
        with pytest.raises(InputError, match="temperature must be a finite number >= 0"):
            draw([0], temperature)
    assert draw([3], 0).shape == (1, 1, 28, 28)  # temperature 0: the mode of each class


@pytest.mark.parametrize("steps", [2.5, True, "10", 0])
def test_table_training_steps_must_be_a_whole_number(steps):
    frame = load_table("diabetes").frame.head(40)
    with pytest.raises(InputError, match=f"steps must be a whole number >= 1, e.g. 1500, got {steps!r}"):
        fit_tabular(frame, ["sex"], steps=steps)


def test_fit_tabular_refuses_a_category_with_a_different_value_per_row_and_short_identifier_columns():
    """An integer ID switched to categorical, names in a 20-row table, and dates or record numbers however few:
    each would be stored in the model and released as another row's value."""
    frame = _small_table(20)
    with pytest.raises(InputError, match="column 'patient_id' has a different value in every one of its 20 rows.*"
                                         "--column-type patient_id=numeric"):
        fit_tabular(frame.assign(patient_id=range(1001, 1021)), ["diag"], steps=2,
                    kinds={"patient_id": "categorical"})
    with pytest.raises(InputError, match="column 'name' has a different value in every one of its 20 rows"):
        fit_tabular(frame.assign(name=[f"Patient {i}" for i in range(20)]), ["diag"], steps=2)
    for column, values in (("visit", ["2024-01-01", "2024-01-08"] * 10), ("mrn", ["MRN100000", "MRN100001"] * 10)):
        with pytest.raises(InputError, match=f"column '{column}' has 2 distinct text values in 20 rows shaped like"):
            fit_tabular(frame.assign(**{column: values}), ["diag"], steps=2)
    assert "ward" in fit_tabular(frame.assign(ward=["A", "B", "C", "D"] * 5), ["diag"], steps=2).config.data_columns
    # a few whole numbers, inferred categorical (an 8-row table's ages, one each), are not an identifier
    eight = _small_table(8)
    assert eight["age"].nunique() == 8
    assert "age" in fit_tabular(eight, ["diag"], steps=2).config.data_columns


@pytest.mark.parametrize("rows", [1, 2, 7])
def test_the_training_cli_counts_the_files_rows_when_too_few(tmp_path, capsys, rows):
    """A 1-row CSV was reported as 'a table of 0 row(s)' (the training split's count after the test rows)."""
    from cadp import train

    source = tmp_path / "few.csv"
    _small_table(rows).to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "out"), "--conditions", "diag",
                       "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert f"few.csv has {rows} {'row' if rows == 1 else 'rows'}: this command holds out a fifth of them" in err
    assert "give at least 8" in err


def test_the_training_cli_refuses_an_output_folder_inside_the_image_folder(tmp_path, capsys):
    """A model written into its data folder became a class ("model", 0 images) of the next training there."""
    from cadp import train

    folder = _image_folder(tmp_path / "pets")
    assert train.main(["--dataset", str(folder), "--out", str(folder / "model"), "--steps", "2",
                       *TINY_IMAGE_RUN]) == 2
    assert "lies inside the image folder" in capsys.readouterr().err and not (folder / "model").exists()


@pytest.mark.parametrize("change, refused", [
    ({"latent_distances": {"d_typ": float("nan"), "d_nn": 1.0, "latent_l1_norm": 5.0, "n_records": 50}},
     "latent_distances must be finite numbers"),
    ({"latent_distances": {"d_typ": 5.0, "d_nn": -5.0, "latent_l1_norm": 5.0, "n_records": 50}},
     "latent_distances must be finite numbers"),
    ({"latent_distances": {"d_typ": "1e-6", "d_nn": 1.0, "latent_l1_norm": 5.0, "n_records": 50}},
     "latent_distances must be finite numbers"),
    ({"latent_distances": {"d_typ": 5.0, "d_nn": 1.0, "latent_l1_norm": 5.0, "n_records": -1}},
     "latent_distances.n_records must be a whole number >= 2"),
    ({"name": 123}, "name must be text"),
    ({"class_names": ["x", "y", "x"]}, "class_names must be distinct"),
    ({"class_names": [f"c{i}" for i in range(1001)]}, "class_names must be a list of 1 to 1,000 names"),
    ({"class_names": "0123456789"}, "class_names must be a list"),
    ({"class_names": [1, 2]}, "class_names must be a list"),
])
def test_a_config_from_anyone_is_refused_where_the_app_would_quote_or_sample_nonsense(change, refused):
    """A Hub publisher's config.json: NaN or negative latent distances went into the metric guarantee, a name
    of 123 broke every page, 1,000s of classes exhausted memory on the model card page, repeated class names
    released another class than the one shown."""
    import re

    from cadp.errors import ModelError

    config = ImageModelConfig(name="m", dataset="mnist", class_names=list("0123456789"), conv_width=4,
                              conv_blocks=[1, 1], fc_blocks=1, fc_width=16)
    data = {**config_to_dict(config), **change}
    with pytest.raises(ModelError, match=re.escape(refused)):
        config_from_dict(data)


def test_sigterm_and_sighup_stop_training_as_ctrl_c_does(tmp_path, monkeypatch, request):
    """kill, timeout, a batch scheduler or a closed terminal ended a training run without its checkpoint."""
    import os
    import signal

    from cadp import train

    model = torch.nn.Linear(3, 1)
    batches = train.endless_batches((torch.randn(64, 3),), 8, torch.Generator().manual_seed(0))
    calls = [0]

    def loss_fn(x):
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return model(x).pow(2).mean()

    def save_hung_up(*args):  # a second signal while the checkpoint is written (a closed terminal sends two)
        os.kill(os.getpid(), signal.SIGHUP)
        return save(*args)

    save = train._save_checkpoint
    monkeypatch.setattr(train, "_save_checkpoint", save_hung_up)

    checkpoint = tmp_path / "checkpoint" / "training.safetensors"
    # as a fresh process has them: cadp.privatize's tests, run in this process, leave them ignored (its CLI exits)
    saved = {signum: signal.signal(signum, signal.SIG_DFL) for signum in (signal.SIGTERM, signal.SIGHUP)}
    request.addfinalizer(lambda: [signal.signal(signum, handler) for signum, handler in saved.items()])
    before = signal.getsignal(signal.SIGTERM)
    with train.stops_as_ctrl_c() as received:
        with pytest.raises(train.TrainingInterrupted, match="interrupted at step 5; saved .*--resume to continue"):
            train.fit(model, loss_fn, batches, steps=20, minutes=None, learning_rate=1e-2, checkpoint=checkpoint)
    assert received == [signal.SIGTERM] and checkpoint.exists()
    assert signal.getsignal(signal.SIGTERM) is before  # put back

    def hung_up(_args):  # the command's exit status: 128 + the signal's number, as cadp.privatize's
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)
        except KeyboardInterrupt:
            return 130
        return 0

    monkeypatch.setattr(train, "_main", hung_up)
    assert train.main(["--dataset", "mnist", "--out", str(tmp_path / "out")]) == 128 + signal.SIGHUP


def test_training_says_an_empty_condition_cell_is_a_category_and_refuses_text_forced_to_numbers(tmp_path, capsys):
    """A condition's empty cell became a hidden category (released blank when resampled) without a word, and
    --column-type thal=numeric on a text column released every row's thal as the mean of two numbers."""
    from cadp import train

    frame = load_table("diabetes").frame.head(120).astype({"sex": object})
    frame.loc[3, "sex"] = None
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "m"), "--conditions", "sex",
                       "--steps", "5"]) == 0
    assert ("condition column 'sex' has 1 empty cell: the model takes an empty value as a category of its own"
            in capsys.readouterr().err)
    texts = load_table("diabetes").frame.head(120).assign(ward=["north"] * 118 + ["1", "2"])
    texts.to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "n"), "--conditions", "sex",
                       "--column-type", "ward=numeric", "--steps", "5"]) == 2
    assert ("column 'ward' is numeric here, but 118 of its 120 cells are not numbers (e.g. 'north'): a model "
            "would learn it from the few numbers" in capsys.readouterr().err)


def test_a_numeric_condition_column_is_refused_before_notes_on_its_cells_and_before_training(tmp_path, capsys):
    """--conditions bmi printed a note on bmi's empty cells "as a category" and started the progress bar before
    saying that a numeric column cannot be a condition."""
    from cadp import train

    frame = load_table("diabetes").frame.head(120)
    frame.loc[3, "bmi"] = None
    source = tmp_path / "rows.csv"
    frame.to_csv(source, index=False)
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "m"), "--conditions", "bmi",
                       "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "error: condition column 'bmi' is numeric; choose a categorical column" in err
    assert "empty cell" not in err and "training " not in err
    assert train.main(["--dataset", str(source), "--out", str(tmp_path / "m"), "--conditions", "bmi",
                       "--column-type", "bmi=categorical", "--steps", "1"]) in (0, 2)  # the override is honoured
    assert "is numeric" not in capsys.readouterr().err


def test_max_train_keeps_a_first_image_of_every_class_and_a_class_without_training_images_is_refused(
        tmp_path, capsys):
    """--max-train 1 trained a two-class model on one image of one class, without a word: randomized response
    could then release a class the network never saw."""
    from cadp import train

    folder = _image_folder(tmp_path / "pets")
    out = tmp_path / "model"
    command = ["--dataset", str(folder), "--out", str(out), "--steps", "1", *TINY_IMAGE_RUN,
               "--classifier-minutes", "0.02"]
    assert train.main([*command, "--max-train", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: the class 'dogs' has no training image: --max-train 1 keeps fewer images than the 2 classes; " \
           "randomized response could release a class the network never saw" in err
    assert not out.exists()
    assert train.main([*command, "--max-train", "2"]) == 0
    labels = torch.tensor([0, 0, 0, 0, 1, 0, 2])
    assert train.first_of_each_class(labels, 4).tolist() == [0, 1, 4, 6]  # the first 4, less two of class 0
    assert train.first_of_each_class(labels, 5).tolist() == [0, 1, 2, 4, 6]
    assert train.first_of_each_class(labels, 2).tolist() == [0, 4]
    assert train.first_of_each_class(labels, 7).tolist() == list(range(7))


def test_a_diverged_training_stops_with_what_to_do_and_saves_no_nan_checkpoint(tmp_path):
    """A run whose loss became NaN trained on to the end and failed only at writing the model ("latent_distances
    must be finite numbers"), its NaN checkpoint left for --resume."""
    from safetensors.torch import load_file

    from cadp import train
    from cadp.errors import CadpError

    model = torch.nn.Linear(3, 1)
    batches = train.endless_batches((torch.randn(64, 3),), 8, torch.Generator().manual_seed(0))
    calls = [0]

    def loss_fn(x):
        calls[0] += 1
        return model(x).pow(2).mean() * (float("nan") if calls[0] == 5 else 1.0)

    checkpoint = tmp_path / "checkpoint" / "training.safetensors"
    with pytest.raises(CadpError, match=r"training diverged \(net\): the loss was not a finite number \(nan\) at "
                                        r"step 5, so the weights are unusable; the last checkpoint, at step 4, is kept"):
        train.fit(model, loss_fn, batches, steps=20, minutes=None, learning_rate=1e-2, checkpoint=checkpoint,
                  checkpoint_every=2, description="net")
    assert all(torch.isfinite(tensor).all() for tensor in load_file(str(checkpoint)).values())
    assert train._checkpoint_step(checkpoint) == 4
    # a run that diverges before saving its own (--overwrite keeps the earlier run's file): not called its own
    calls[0] = 0
    with pytest.raises(CadpError, match=r"at step 5, so the weights are unusable; this run saved no checkpoint$"):
        train.fit(torch.nn.Linear(3, 1), loss_fn, batches, steps=20, minutes=None, learning_rate=1e-2,
                  checkpoint=checkpoint, checkpoint_every=10, description="net")
    assert train._checkpoint_step(checkpoint) == 4
    # a NaN checkpoint that an earlier version saved is not resumed
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    train._save_checkpoint(checkpoint, model, torch.optim.Adam(model.parameters()), {"step": 9, "seconds": 1.0})
    with pytest.raises(InputError, match="holds weights that are not finite numbers .* pass --overwrite to start over"):
        train.fit(torch.nn.Linear(3, 1), loss_fn, batches, steps=20, minutes=None, learning_rate=1e-2,
                  checkpoint=checkpoint, resume=True)


def test_the_training_cli_says_a_diverged_run_diverged_and_suggests_a_smaller_learning_rate(
        tmp_path, capsys, monkeypatch):
    from cadp import train

    original, calls = ImageCINN.bits_per_dim, [0]

    def diverging(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs) * (float("inf") if calls[0] >= 3 else 1.0)

    monkeypatch.setattr(ImageCINN, "bits_per_dim", diverging)
    out = tmp_path / "model"
    assert train.main(["--dataset", str(_image_folder(tmp_path / "pets")), "--out", str(out), "--steps", "20",
                       "--lr", "0.5", *TINY_IMAGE_RUN]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: training diverged (cINN model): the loss was not a finite number (inf) at step 3, so the weights " \
           "are unusable; this run saved no checkpoint. Train again with a smaller --lr than 0.5 (e.g. the default, " \
           "0.001)" + (" and --overwrite" if out.exists() else "") in err  # (0.05 was said: still 50 times it)
    assert not (out / "model.safetensors").exists() and not (out / train.CHECKPOINT_PATH).exists()
    assert err.endswith("0.001)") == (not out.exists())  # --overwrite only for a folder the run made


def test_fit_tabular_says_a_diverged_fit_diverged_and_refuses_a_learning_rate_that_is_not_positive(monkeypatch):
    from cadp import train
    from cadp.errors import CadpError
    from cadp.models import TabularCINN

    for rate in (0, -1e-3, float("nan"), float("inf")):
        with pytest.raises(InputError, match="learning_rate must be a positive, finite number"):
            fit_tabular(_small_table(), ["diag"], steps=5, learning_rate=rate)
    original, calls = TabularCINN.nll_per_dim, [0]

    def diverging(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs) * (float("nan") if calls[0] >= 10 else 1.0)

    monkeypatch.setattr(TabularCINN, "nll_per_dim", diverging)
    for rows in (40, 60):  # without a validation split (under 50 rows), and with one but nothing trained validated
        calls[0] = 0
        with pytest.raises(CadpError, match="fitting the table model diverged: its .* became nan .* no usable model "
                                            "was made; .* extreme values .*smaller learning_rate than 0.002"):
            fit_tabular(_small_table(rows), ["diag"], steps=40)
    assert train.TrainingDiverged.__mro__[1] is CadpError
    # weights validated after some training: the fit stops there and keeps them (early stopping did so before)
    from cadp.data import load_table

    calls[0] = -50  # NaN from the 60th call: training step ~57, seen at the validation of step 75
    model = fit_tabular(load_table("diabetes").frame, ["sex"], steps=200)
    assert model.fit_record["stopped"] == ("The fit stopped at step 75: its validation loss was no longer a finite "
                                           "number (it diverged). The weights kept are those of step 50, the best on "
                                           "the held-out rows before that.")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("option, message", [
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--classifier-minutes", "-1"], "--classifier-minutes must be positive, got -1"),
    (["--classifier-minutes", "0"], "--classifier-minutes must be positive, got 0"),
])
def test_training_cli_refuses_a_learning_rate_or_classifier_budget_that_is_not_a_positive_number(
        option, message, tmp_path, capsys):
    """--classifier-minutes 0 meant no limit and -1 was taken; --lr inf trained."""
    from cadp import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset", str(_image_folder(tmp_path / "pets")), "--out", str(tmp_path / "m"), "--steps", "1",
                    *TINY_IMAGE_RUN, *option])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_one_class_image_model_is_trained_with_a_warning_and_its_card_calls_its_accuracies_trivial(
        tmp_path, capsys):
    from cadp import train

    folder = _image_folder(tmp_path / "pets")
    for image in (folder / "dogs").iterdir():
        image.unlink()
    (folder / "dogs").rmdir()
    out = tmp_path / "model"
    assert train.main(["--dataset", str(folder), "--out", str(out), "--steps", "1", *TINY_IMAGE_RUN,
                       "--classifier-minutes", "0.02"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "has one class (cats): a one-class model's condition carries no information (every release keeps that " \
           "label) and its classifier accuracy is trivially 1.0" in err
    card = " ".join((out / "README.md").read_text().split())
    assert "one class only: both accuracies above are trivially 1.000 (there is no other class to tell apart)" in card


def test_an_image_config_takes_its_conv_blocks_as_a_tuple_too():
    """(1, 1) built before sizes were checked as whole numbers, and JSON writes it as a list."""
    config = ImageModelConfig(name="t", dataset="mnist", class_names=[str(i) for i in range(10)], conv_width=4,
                              conv_blocks=(1, 1), fc_blocks=1, fc_width=16)
    config.validate()
    with pytest.raises(ModelError, match="conv_blocks must be two whole numbers in 0..64"):
        ImageModelConfig(name="t", dataset="mnist", class_names=["a", "b"], conv_blocks=(1, 1.5)).validate()
