"""Datasets and the tabular encoder."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cadp.data import (
    FASHION_MNIST_CLASSES,
    TabularEncoder,
    category_texts,
    fashion_mnist_dir,
    infer_column_kind,
    load_image_dataset,
    load_table,
    table_fit_problems,
)
from cadp.errors import InputError
from tests.conftest import bundled


def test_mnist_split_is_fixed_stratified_and_disjoint():
    train, test = load_image_dataset("mnist", "train"), load_image_dataset("mnist", "test")
    assert len(train) == 4000 and len(test) == 1000
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 28, 28)
    again = load_image_dataset("mnist", "test")
    assert torch.equal(again.images, test.images)
    train_rows = {bytes(img.numpy().tobytes()) for img in train.images}
    assert not any(bytes(img.numpy().tobytes()) in train_rows for img in test.images)


def test_fashion_mnist_loads_from_debian_package():
    test = load_image_dataset("fashion-mnist", "test")
    assert len(test) == 10_000 and test.class_names == FASHION_MNIST_CLASSES
    assert int(test.images.max()) == 255


def test_fashion_mnist_missing_names_package_and_variable(monkeypatch, tmp_path):
    import cadp.data

    monkeypatch.setenv("CADP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(cadp.data, "FASHION_MNIST_PACKAGE_DIR", tmp_path / "nowhere")
    with pytest.raises(InputError, match="dataset-fashion-mnist.*CADP_DATA_DIR"):
        fashion_mnist_dir()


def test_image_folder_grayscale_and_rgb_resized(tmp_path):
    rng = np.random.default_rng(0)
    for label, mode in (("cats", "RGB"), ("dogs", "L")):
        (tmp_path / label).mkdir()
        for i in range(5):
            shape = (40, 50, 3) if mode == "RGB" else (40, 50)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(tmp_path / label / f"{i}.png")
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    train = load_image_dataset(str(tmp_path), "train", image_size=16)
    test = load_image_dataset(str(tmp_path), "test", image_size=16)
    assert train.class_names == ["cats", "dogs"]
    assert len(train) + len(test) == 10 and len(test) == 2
    assert train.images.shape[1:] == (1, 16, 16)
    rgb = load_image_dataset(str(tmp_path), "train", image_size=16, channels=3)
    assert rgb.images.shape[1:] == (3, 16, 16)


def image_class_folders(root, counts: dict[str, int], seed: int = 0) -> None:
    """root/<class>/<i>.png: ``counts[class]`` random grayscale PNGs per class."""
    rng = np.random.default_rng(seed)
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L").save(root / label / f"{i}.png")


def images_per_class(path, **options) -> list[int]:
    train, test = (load_image_dataset(str(path), split, image_size=8, **options) for split in ("train", "test"))
    return torch.bincount(torch.cat([train.labels, test.labels]), minlength=len(train.class_names)).tolist()


def test_an_image_folder_lists_a_broken_link_as_unreadable_and_reads_a_folder_named_like_an_image(tmp_path,
                                                                                                   capsys):
    image_class_folders(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "a" / "broken_link.png").symlink_to("/nonexistent")
    (tmp_path / "a" / "dir.png").mkdir()  # a folder, whatever its name: its images are the class's
    image_class_folders(tmp_path / "a", {"dir.png": 1}, seed=1)
    assert images_per_class(tmp_path) == [6, 5]
    err = capsys.readouterr().err
    assert f"note: 1 file under {tmp_path} could not be read as images and was left out: a/broken_link.png" in err


def test_linked_folders_are_read_once_each_and_a_file_reached_twice_counts_once(tmp_path):
    """Folders are followed through links, as the privatize CLI follows them; a loop or a second link to a folder
    already read adds nothing."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    image_class_folders(data, {"a": 5})
    image_class_folders(elsewhere, {"b": 4, "more": 3}, seed=1)
    (data / "b").symlink_to(elsewhere / "b")  # a linked class folder
    (data / "a" / "more").symlink_to(elsewhere / "more")  # a linked sub-folder of a class
    (data / "a" / "more-again").symlink_to(elsewhere / "more")  # ... reached twice
    (data / "a" / "loop").symlink_to(data / "a")  # a loop
    (data / "a" / "same.png").symlink_to(data / "a" / "0.png")  # a file reached twice
    assert images_per_class(data) == [5 + 3, 4]


def test_dicom_files_without_a_suffix_are_read_by_their_content(tmp_path, capsys):
    """PACS exports name their files IM0001: the DICM magic says they are DICOM."""
    from tests import corpus

    image_class_folders(tmp_path, {"bar": 0, "square": 5})
    for i in range(5):
        (tmp_path / "bar" / f"IM{i:04d}").write_bytes(corpus.dicom())
    (tmp_path / "bar" / "NOTES").write_text("not an image, and no suffix to say so" * 10)
    assert images_per_class(tmp_path) == [5, 5]
    assert "1 file under" in capsys.readouterr().err  # NOTES, among the files left out


def test_a_class_folder_without_a_readable_image_is_refused(tmp_path, capsys):
    """Randomized response releases any class of the model: one it never saw an image of would be noise."""
    image_class_folders(tmp_path, {"a": 5, "b": 5, "few": 3, "empty": 0})
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match=r"the class folder 'empty' holds no readable image: remove it or add "
                                         r"images"):
        load_image_dataset(str(tmp_path), "train", image_size=8)
    (tmp_path / "empty" / "notes.txt").unlink()
    (tmp_path / "empty").rmdir()
    assert images_per_class(tmp_path) == [5, 5, 3]  # a class with a few images is a warning, as before
    assert "warning: classes with fewer than 10 readable images: a (5), b (5), few (3)" in capsys.readouterr().err
    # a model written into the data folder would become a class of the next model trained on it
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"0")
    with pytest.raises(InputError, match=r"'model' holds no readable image: remove it or add images \(it holds a "
                                         r"model: train with --out outside the data folder\)"):
        load_image_dataset(str(tmp_path), "train", image_size=8)


def test_files_left_out_for_their_name_or_place_are_said_in_one_line(tmp_path, capsys):
    image_class_folders(tmp_path, {"a": 5, "b": 5})
    (tmp_path / "a" / "notes.txt").write_text("notes")
    (tmp_path / "b" / "report.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / "b" / "scan.csv").write_text("x\n1\n")
    Image.new("L", (20, 20)).save(tmp_path / "stray.png")  # at the root: in no class
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # folder metadata: not worth a word, and no class
    image_class_folders(tmp_path / "__MACOSX", {"a": 1})
    assert images_per_class(tmp_path) == [5, 5]
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "left out" in line]
    assert lines == [f"note: 4 files under {tmp_path} are not images in a class folder and were left out "
                     f"(accepted: PNG, JPEG, BMP, TIFF, GIF, WebP, DICOM, as {tmp_path}/<class>/<image>): "
                     "a/notes.txt, b/report.pdf, b/scan.csv and 1 more"]



def test_notes_of_an_image_folder_count_one_file_in_the_singular_and_more_in_the_plural(tmp_path, capsys):
    """The notes said "1 image(s) under ... are stored in colour and were converted": one is "1 image ... is"."""
    from cadp.data import hidden_files_note

    rng = np.random.default_rng(0)
    for count, root in ((1, tmp_path / "one"), (2, tmp_path / "two")):
        image_class_folders(root, {"a": 5, "b": 5})
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8), "RGB").save(root / "a" / f"c{i}.png")
        (root / "a" / "notes.txt").write_text("notes")
        if count == 2:
            (root / "b" / "report.pdf").write_bytes(b"%PDF-1.4")
        load_image_dataset(str(root), "train", image_size=8)
    err = capsys.readouterr().err
    one, two = tmp_path / "one", tmp_path / "two"
    assert f"note: 1 image under {one} is stored in colour and was converted to greyscale (--channels 1" in err
    assert f"note: 2 images under {two} are stored in colour and were converted to greyscale (--channels 1" in err
    assert f"note: 1 file under {one} is not an image in a class folder and was left out (accepted: " in err
    assert f"note: 2 files under {two} are not images in a class folder and were left out (accepted: " in err
    assert "(s)" not in err
    assert hidden_files_note([".x/"], one) == (f"1 hidden file or folder (names starting with '.') under {one} was "
                                               "left out: .x/; the hidden folder .x/ is not a class of the model, and "
                                               "their images were not read; rename a file or folder that is data, and "
                                               "train again")
    assert hidden_files_note([".x/", ".y/", "a/.z.png"], one).startswith(
        f"3 hidden files or folders (names starting with '.') under {one} were left out: .x/, .y/, a/.z.png; the "
        "hidden folders .x/, .y/ are not classes of the model")

def test_unknown_dataset_error():
    with pytest.raises(InputError, match="unknown image dataset"):
        load_image_dataset("cifar-1000", "train")
    with pytest.raises(InputError, match="unknown table"):
        load_table("titanic")


@pytest.mark.parametrize("name, conditions", [("diabetes", ["sex"]), ("breast-cancer", ["target"]),
                                              ("heart", ["target", "sex"])])
def test_bundled_tables_round_trip_through_encoder(name, conditions):
    table = load_table(name)
    assert table.default_conditions == conditions
    encoder = TabularEncoder().fit(table.frame)
    encoded = encoder.transform(table.frame)
    decoded = encoder.inverse_transform(encoded)
    pd.testing.assert_frame_equal(decoded, table.frame, check_dtype=True)
    # dequantized encodings decode to the same frame
    jittered = encoder.transform(table.frame, torch.Generator().manual_seed(0))
    assert not torch.equal(jittered, encoded)
    pd.testing.assert_frame_equal(encoder.inverse_transform(jittered), table.frame)


def test_encoder_standardizes_numbers_and_one_hot_encodes_categories():
    frame = pd.DataFrame({"x": [1.5, 2.5, 3.5, 10.25] * 30, "color": ["red", "blue", "red", "green"] * 30})
    encoder = TabularEncoder().fit(frame)
    assert [s.kind for s in encoder.columns] == ["numeric", "categorical"]
    encoded = encoder.transform(frame)
    assert encoded.shape == (120, 4)
    assert encoded[:, 0].mean().abs() < 1e-5 and (encoded[:, 0].std(unbiased=False) - 1).abs() < 1e-4
    assert encoded[:, 1:].sum(1).eq(1).all()


def test_an_encoder_fits_a_column_with_infinite_numbers_as_if_they_were_empty():
    """inf in a table fitted here broke the fit ("Something went wrong (OverflowError)")."""
    x = np.arange(60) / 4
    x[[3, 10]], x[20] = np.inf, -np.inf
    frame = pd.DataFrame({"x": x, "y": list(range(60))})
    spec = TabularEncoder().fit(frame).columns[0]
    finite = TabularEncoder().fit(frame.assign(x=frame["x"].where(np.isfinite(frame["x"])))).columns[0]
    assert spec.kind == finite.kind == "numeric" and (spec.low, spec.high) == (0.0, 14.75)
    assert (spec.mean, spec.std, spec.decimals, spec.atoms) == (finite.mean, finite.std, 2, finite.atoms)
    assert np.isfinite(TabularEncoder().fit(frame).transform(frame).numpy()).all()


def test_a_column_of_very_small_numbers_is_decoded_with_its_digits_not_as_zero():
    """Values around 3e-10 were taken for whole numbers (0 decimal places): every release of them was 0.0."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"tiny": rng.uniform(1e-10, 5e-10, 60), "x": rng.normal(0, 1, 60).round(2)})
    encoder = TabularEncoder().fit(frame)
    assert encoder.spec("tiny").decimals is None and encoder.spec("x").decimals == 2
    decoded = encoder.inverse_transform(encoder.transform(frame))
    np.testing.assert_allclose(decoded["tiny"], frame["tiny"], rtol=1e-3)
    small = TabularEncoder().fit(pd.DataFrame({"dose": [0.001, 0.002, 0.0035] * 20})).spec("dose")
    assert small.decimals == 4  # few places where they represent the values


def test_an_encoder_of_no_columns_encodes_to_width_zero_and_an_unfitted_one_refuses():
    frame = pd.DataFrame({"x": np.arange(10.0), "c": ["a", "b"] * 5})
    none = TabularEncoder().fit(frame).subset([])  # a table model without kept columns
    assert none.transform(frame).shape == (10, 0)
    assert TabularEncoder.from_dict(none.to_dict()).transform(frame).shape == (10, 0)
    with pytest.raises(InputError, match="before fit"):
        TabularEncoder().transform(frame)
    with pytest.raises(InputError, match="rows must be a pandas DataFrame"):
        TabularEncoder().fit(frame).transform(frame.to_numpy())


def test_type_inference_and_overrides():
    assert infer_column_kind(pd.Series([0, 1, 2, 3] * 5)) == "categorical"
    assert infer_column_kind(pd.Series(range(50))) == "numeric"
    assert infer_column_kind(pd.Series(["a", "b"])) == "categorical"
    frame = pd.DataFrame({"grade": [1, 2, 3, 4] * 10, "y": np.linspace(0, 1, 40)})
    encoder = TabularEncoder({"grade": "numeric"}).fit(frame)
    assert encoder.spec("grade").kind == "numeric"
    with pytest.raises(InputError, match="must be 'numeric' or 'categorical'"):
        TabularEncoder({"grade": "ordinal"}).fit(frame)


def test_unseen_category_is_a_clear_error():
    encoder = TabularEncoder().fit(pd.DataFrame({"c": ["a", "b"] * 5, "x": np.arange(10.0)}))
    with pytest.raises(InputError, match="unseen"):
        encoder.transform(pd.DataFrame({"c": ["z"], "x": [1.0]}))


def test_a_table_with_an_empty_cell_the_model_never_saw_does_not_fit():
    """An empty categorical cell was said to fit, then refused when the rows were encoded."""
    from cadp.train import tabular_config

    frame = pd.DataFrame({"c": ["a", "b"] * 20, "x": np.linspace(0, 1, 40), "y": np.linspace(5, 9, 40)})
    kinds = {"c": "categorical", "x": "numeric", "y": "numeric"}
    config = tabular_config(frame, ["c"], name="t", dataset="t.csv", kinds=kinds, blocks=1, width=8)
    assert table_fit_problems(config, frame, kinds, ["c"]) == []
    holed = frame.assign(c=["a", None, None] + ["b"] * 37)
    assert table_fit_problems(config, holed, kinds, ["c"]) == [
        "column 'c' has 2 empty cells (data rows 2, 3, counting from 1 below the header), a value the model never "
        "saw (it knows 'a', 'b'): fill or remove those rows"]
    with_empty = tabular_config(holed, ["c"], name="t", dataset="t.csv", kinds=kinds, blocks=1, width=8)  # fitted with one: fits
    assert table_fit_problems(with_empty, holed, kinds, ["c"]) == []


def test_encoder_state_survives_json():
    import json

    table = load_table("heart")
    encoder = TabularEncoder().fit(table.frame)
    restored = TabularEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    pd.testing.assert_frame_equal(restored.inverse_transform(restored.transform(table.frame)), table.frame)


def test_lattice_columns_decode_unseen_levels_inside_the_range_exactly():
    frame = pd.DataFrame({"age": (list(range(20, 61, 2)) * 2)[:40],
                          "score": [0.5, 1.0, 2.5, 3.0, 4.5] * 8,
                          "weight": np.linspace(50.123, 90.456, 40)})
    encoder = TabularEncoder().fit(frame)
    assert encoder.spec("age").lattice == [float(a) for a in range(20, 61)]
    assert encoder.spec("score").lattice[:3] == [0.5, 0.6, 0.7]
    assert encoder.spec("weight").lattice is None  # 3 decimals over a range of 40: too fine for a lattice
    unseen = pd.DataFrame({"age": [23, 59], "score": [1.7, 4.4], "weight": [60.5, 70.25]})
    decoded = encoder.inverse_transform(encoder.transform(unseen, torch.Generator().manual_seed(0)))
    assert decoded["age"].tolist() == [23, 59] and decoded["score"].tolist() == [1.7, 4.4]


def test_point_masses_get_cells_and_continuous_values_stay_exact():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.zeros(60), np.full(30, 4.0), np.round(rng.gamma(2.0, 1.5, 110), 3)])
    frame = pd.DataFrame({"x": values})
    encoder = TabularEncoder().fit(frame)
    spec = encoder.spec("x")
    assert spec.slope == 1 and [v for v, _ in spec.atoms][:1] == [0.0] and 4.0 in [v for v, _ in spec.atoms]
    width = dict(map(tuple, spec.atoms))[0.0]
    assert width == pytest.approx(8.0 * 60 / 200)
    encoded = encoder.transform(frame)
    assert abs(float(encoded.mean())) < 1e-5 and abs(float(encoded.std(unbiased=False)) - 1) < 1e-4
    # dequantized zeros spread over their cell and still decode to 0; other values decode to themselves
    jittered = encoder.transform(frame, torch.Generator().manual_seed(1))
    assert jittered[:60, 0].std() > 0.1
    pd.testing.assert_frame_equal(encoder.inverse_transform(jittered), frame)
    unseen = pd.DataFrame({"x": [0.001, 3.999, 4.001, 17.5, -2.25]})  # next to atoms and outside the range
    decoded = encoder.inverse_transform(encoder.transform(unseen))["x"].tolist()
    assert decoded == [0.001, 3.999, 4.001, values.max(), 0.0]  # outside the fitted range: clipped to it
    # a sweep over the encoding decodes monotonically, landing on the atoms over whole intervals
    sweep = encoder.inverse_transform(torch.linspace(-4, 4, 2001)[:, None])["x"].to_numpy()
    assert np.all(np.diff(sweep) >= 0)
    assert (sweep == 0.0).sum() > 100 and (sweep == 4.0).sum() > 50


def test_folders_written_with_a_lattice_grid_still_decode_as_before():
    spec = {"name": "age", "kind": "numeric", "mean": 40.0, "std": 10.0, "integer": True, "categories": [],
            "dtype": "int64", "decimals": 0, "grid": [float(a) for a in range(20, 61)]}
    encoder = TabularEncoder.from_dict({"columns": [spec]})
    # the old encoding: standardized value; cells between midpoints of standardized levels
    assert encoder.transform(pd.DataFrame({"age": [30]}))[0, 0] == pytest.approx(-1.0)
    decoded = encoder.inverse_transform(torch.tensor([[-1.04], [-0.96], [-0.949], [-5.0], [9.0]]))
    assert decoded["age"].tolist() == [30, 30, 31, 20, 60]


@pytest.mark.parametrize("name", ["diabetes", "heart"])
def test_a_few_rows_encode_and_decode_as_in_a_large_batch(name):
    """Small frames take a scalar path (FrameCells, Python floats): it must give the batch path's exact values."""
    frame = load_table(name).frame
    encoder = TabularEncoder().fit(frame)
    rng = np.random.default_rng(0)
    picks = rng.choice(len(frame), 3, replace=False)
    large = encoder.transform(frame)[picks]
    small = frame.iloc[picks]  # a non-default index, as a user's selection has
    assert torch.equal(encoder.transform(small), large)
    # encodings of any value, atoms and their cell edges included, decode the same one at a time
    for spec in encoder.columns:
        if spec.kind != "numeric":
            continue
        values = np.concatenate([rng.normal(spec.mean, 2 * spec.std, 200), [v for v, _ in spec.atoms]])
        batch = spec.encode_numbers(values)
        assert np.array_equal(np.concatenate([spec.encode_numbers(values[i:i + 1]) for i in range(len(values))]),
                              batch)
        lower = (spec._cells()[3] - spec.shift) / spec.scale if spec.atoms else np.zeros(0)
        encoded = np.concatenate([batch, rng.normal(0, 2, 200), lower, np.nextafter(lower, -np.inf)])
        one_at_a_time = np.concatenate([spec.decode_numbers(encoded[i:i + 1]) for i in range(len(encoded))])
        assert np.array_equal(one_at_a_time, spec.decode_numbers(encoded))
    decoded = encoder.inverse_transform(large)
    pd.testing.assert_frame_equal(encoder.inverse_transform(large[:1]), decoded.iloc[:1])


def test_decoded_numbers_stay_within_the_fitted_range():
    frame = pd.DataFrame({"bmi": np.linspace(18.0, 42.2, 200).round(2), "dose": np.arange(200) * 1.5})
    encoder = TabularEncoder().fit(frame)
    far = torch.tensor([[-50.0, -50.0], [50.0, 50.0], [0.0, 0.0]])  # e.g. a latent given much noise
    decoded = encoder.inverse_transform(far)
    assert decoded["bmi"].tolist()[:2] == [18.0, 42.2] and decoded["dose"].tolist()[:2] == [0.0, 298.5]
    assert 18.0 < decoded["bmi"][2] < 42.2
    restored = TabularEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))  # stored in config.json
    assert restored.spec("bmi").low == 18.0 and restored.spec("bmi").high == 42.2
    old = encoder.to_dict()
    for column in old["columns"]:
        del column["low"], column["high"]  # a folder written before the ranges were kept: decoded as it was
    assert TabularEncoder.from_dict(old).inverse_transform(far)["bmi"][0] < 0


@pytest.mark.parametrize("name, dataset", [("diabetes-cinn", "diabetes"), ("heart-cinn", "heart")])
def test_bundled_table_models_keep_the_range_of_their_public_table(name, dataset):
    from cadp.hub import load_folder

    encoder = load_folder(bundled(name)).model.data_encoder
    frame = load_table(dataset).frame
    numeric = [spec for spec in encoder.columns if spec.kind == "numeric"]
    assert numeric and all((spec.low, spec.high) == (frame[spec.name].min(), frame[spec.name].max())
                           for spec in numeric)


@pytest.mark.parametrize("dtype", ["str", "object", "category"])
def test_a_text_column_with_a_missing_value_decodes_to_one_dtype_whichever_values_come_back(dtype):
    """The released column's dtype is the fitted column's, whether or not the missing value was drawn."""
    frame = pd.DataFrame({"city": pd.Series(["a", "b", None] * 4, dtype=dtype),
                          "dose": pd.Series([1.0, 2.0, np.nan] * 4)})
    encoder = TabularEncoder({"dose": "categorical"}).fit(frame)
    without, with_missing = (encoder.inverse_transform(encoder.transform(frame.iloc[:rows])) for rows in (2, 3))
    assert without["city"].dtype == with_missing["city"].dtype == frame["city"].dtype
    assert without["dose"].dtype == with_missing["dose"].dtype == np.float64
    assert with_missing["city"].isna().tolist() == [False, False, True]
    assert with_missing["dose"].isna().tolist() == [False, False, True]


def test_a_nested_image_folder_is_read_in_the_order_earlier_versions_read_it(tmp_path):
    """The 80/20 split of a folder follows its reading order, and evaluate --data checks a model's split by
    fingerprint: reading a class folder's own files before its sub-folders' would split nested folders anew."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from cadp.data import load_image_folder

    names = ["a/c.png", "a/b/x.png", "a/b-c.png", "a/B/y.png", "a/d.png", "b/z.png", "b/k/m/n.png", "b/k.png",
             "b/l.png", "b/j.png"]
    for shade, name in enumerate(names):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 20 * shade + 10, dtype=np.uint8)).save(path)
    # earlier versions: class folders sorted, then each one's files sorted by path parts (Path.rglob, sorted)
    earlier = sorted(names, key=lambda name: Path(name).parts)
    order = np.random.default_rng(0).permutation(len(names))
    test = load_image_folder(tmp_path, "test", image_size=8, seed=0)
    shades = [int(image.float().mean().round()) for image in test.images]
    assert shades == [20 * names.index(earlier[i]) + 10 for i in order[:len(test.images)]]


def test_a_link_to_a_folder_or_file_inside_the_image_folder_never_takes_the_real_ones_place(tmp_path):
    """0/shortcut -> ../1 sorts before 1/: its images were read as class 0 and the real class-1 files left out
    (the privatize CLI then released them with the kept label 0)."""
    import os

    import numpy as np
    from PIL import Image

    from cadp.data import folder_files, load_image_folder

    for label in ("0", "1"):
        (tmp_path / label).mkdir()
        for index in range(5):
            Image.fromarray(np.full((8, 8), 40 + 100 * int(label), dtype=np.uint8)).save(
                tmp_path / label / f"{label}_{index}.png")
    os.symlink(tmp_path / "1", tmp_path / "0" / "shortcut")
    os.symlink(tmp_path / "1" / "1_0.png", tmp_path / "0" / "a_dup.png")
    names = [name for name, _ in folder_files(tmp_path)]
    assert names == [f"0/0_{i}.png" for i in range(5)] + [f"1/1_{i}.png" for i in range(5)]
    data = [load_image_folder(tmp_path, split, image_size=8, test_fraction=0.2) for split in ("train", "test")]
    labels = torch.cat([d.labels for d in data])
    shades = torch.cat([d.images.float().mean(dim=(1, 2, 3)) for d in data])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 5
    assert torch.all((shades > 90) == (labels == 1))  # every image with its own class


def test_a_folder_that_cannot_be_listed_is_named_not_silently_left_out(tmp_path, monkeypatch, capsys):

    import numpy as np
    from PIL import Image

    from cadp.data import load_image_folder

    for label in ("a", "b"):
        for index in range(3):
            path = tmp_path / label / ("locked" if label == "b" and index == 2 else "") / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 50 * index, dtype=np.uint8)).save(path)
    from tests import corpus

    corpus.deny_listing(monkeypatch, "locked")
    load_image_folder(tmp_path, "train", image_size=8)
    assert "note: 1 folder under " in (err := capsys.readouterr().err)
    assert "cannot be listed, so their files were left out: b/locked (Permission denied)" in err


def test_the_texts_a_table_release_can_hold_are_its_text_categories_of_data_and_conditions():
    from types import SimpleNamespace

    config = SimpleNamespace(
        data_encoder={"columns": [{"name": "city", "kind": "categorical", "categories": ["Zürich", "Bern"]},
                                  {"name": "grade", "kind": "categorical", "categories": [1, 2, 3]},
                                  {"name": "age", "kind": "numeric", "categories": None}]},
        condition_encoder={"columns": [{"name": "ward", "kind": "categorical", "categories": ["Ä", None, "B"]}]})
    assert category_texts(config) == ["Zürich", "Bern", "Ä", "B"]


def test_an_image_folders_split_trains_on_every_class_even_one_of_a_single_image(tmp_path, capsys):
    """a/ of 19 images and b/ of 1: the random 80/20 split held out b's only image, the network never saw b, and
    the model could still release b under randomized response. A class of one image now trains on it."""
    from cadp.data import load_image_folder

    for label, count in (("a", 19), ("b", 1)):
        (tmp_path / label).mkdir()
        for index in range(count):
            Image.fromarray(np.full((8, 8), 10 * index + (200 if label == "b" else 0), np.uint8)).save(
                tmp_path / label / f"{index}.png")
    train, test = (load_image_folder(tmp_path, split, image_size=8) for split in ("train", "test"))
    assert torch.bincount(train.labels, minlength=2).tolist() == [15, 1]  # each class split 80/20 (version 2)
    assert torch.bincount(test.labels, minlength=2).tolist() == [4, 0]
    assert "fewer than 10 readable images: b (1)" in capsys.readouterr().err
    train, test = (load_image_folder(tmp_path, split, image_size=8, split_version=1) for split in ("train", "test"))
    assert torch.bincount(train.labels, minlength=2).tolist() == [16, 1]  # the whole folder at once (version 1)
    assert torch.bincount(test.labels, minlength=2).tolist() == [3, 0]


def test_the_image_folder_split_keeps_a_training_image_of_every_class_and_else_the_earlier_split():
    """Version 1 (models trained before 2026-11-30): every class with an image trains on at least one; where the
    earlier random split already trained every class it is unchanged (evaluate --data checks a model's split by
    fingerprint)."""
    from cadp.data import split_image_folder

    rng = np.random.default_rng(1)
    changed = 0
    for _ in range(300):
        counts = rng.integers(1, 6, rng.integers(1, 5))
        labels = np.repeat(np.arange(len(counts)), counts)
        if len(labels) < 2:
            continue
        train, test = split_image_folder(labels, 0.2, seed=0, version=1)
        assert sorted([*train.tolist(), *test.tolist()]) == list(range(len(labels)))
        assert set(labels[train].tolist()) == set(range(len(counts)))
        order = np.random.default_rng(0).permutation(len(labels))
        n_test = max(1, round(0.2 * len(labels)))
        if set(labels[order[n_test:]].tolist()) == set(range(len(counts))):
            assert test.tolist() == order[:n_test].tolist() and train.tolist() == order[n_test:].tolist()
        else:
            changed += 1
            assert len(test) < n_test
    assert changed  # the rule was exercised


def test_training_on_an_image_folder_says_how_many_files_were_read_by_their_first_frame_only(tmp_path, capsys):
    """The app and the privatize CLI say that only a multi-frame file's first frame is used; training said
    nothing and learned from the first slice of each stack."""
    from cadp.data import load_image_folder

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(4):
            frames = [Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)) for _ in range(3)]
            if label == "a" and index < 2:
                frames[0].save(tmp_path / label / f"{index}.tif", save_all=True, append_images=frames[1:])
            else:
                frames[0].save(tmp_path / label / f"{index}.png")
    load_image_folder(tmp_path, "train", image_size=8)
    err = " ".join(capsys.readouterr().err.split())
    assert (f"note: 2 files under {tmp_path} hold several frames (a series, a stack or an animation): only the "
            "first frame of each was used for training: a/0.tif, a/1.tif;") in err
    load_image_folder(tmp_path, "test", image_size=8)
    assert "several frames" not in capsys.readouterr().err  # said once per folder, not per split
