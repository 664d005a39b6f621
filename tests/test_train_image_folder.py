"""Training on the user's own data: what `python -m cadp.train` says of an image folder it does not read whole or
does not test whole, the class names it refuses, and what the model card claims of the data's license."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cadp import train
from cadp.archive import LabelResolver
from cadp.errors import InputError

TINY_IMAGE_RUN = ["--steps", "2", "--image-size", "16", "--width", "8", "--conv-blocks", "1", "--fc-blocks", "1",
                  "--fc-width", "16", "--classifier-minutes", "0.01"]
COMPOSED, DECOMPOSED = "Caf\u00e9", "Cafe\u0301"  # 'Café' as a spreadsheet writes it, and as macOS names folders


def _image_folder(root, classes: dict[str, int], seed: int = 0):
    """An ImageFolder of random 16x16 grey images, ``classes`` giving each class folder's number of images."""
    rng = np.random.default_rng(seed)
    for label, count in classes.items():
        (root / label).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / label / f"{index}.png")
    return root


def _front_matter(folder) -> str:
    return (folder / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[0]


def test_a_class_with_no_test_image_is_named_by_the_cli_and_the_card(tmp_path, capsys):
    """A class of one image has none held out: the test numbers did not cover it and said nothing; the card said
    only "split: 11 training / 2 test images"."""
    out = tmp_path / "model"
    assert train.main(["--dataset", str(_image_folder(tmp_path / "shoes", {"bags": 12, "boots": 1})),
                       "--out", str(out), *TINY_IMAGE_RUN]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: the test split holds no image of the class 'boots' (1 image, all training)" in err
    assert "classifier accuracy and latent distances, and evaluations of this folder (evaluate --data), do not " \
           "cover it; give such a class" in err and "'bags'" not in err
    card = " ".join((out / "README.md").read_text(encoding="utf-8").split())
    assert ("- split: 11 training / 2 test images (each class split 80/20 with the fixed seed 0, every class keeping "
            "at least one training image; --seed sets the network's initialisation and batches) no test image of the "
            "class boots: the test results below do not cover it") in card


def test_class_folders_named_alike_up_to_unicode_form_or_spaces_are_refused_naming_them(tmp_path, capsys):
    """'Café' composed and decomposed were two classes: privatize then released one folder's images under the
    other's label; 'dogs' and 'dogs ' could not be told apart by a labels CSV either."""
    folder = _image_folder(tmp_path / "pets", {COMPOSED: 10, DECOMPOSED: 10, "cafe": 10})
    assert train.main(["--dataset", str(folder), "--out", str(tmp_path / "model"), *TINY_IMAGE_RUN]) == 2
    err = capsys.readouterr().err
    assert "differ only in Unicode normalization" in err and f"{ascii(DECOMPOSED)} and {ascii(COMPOSED)}" in err
    assert "rename one of each" in err and "'cafe'" not in err and not (tmp_path / "model" / "README.md").exists()

    spaced = _image_folder(tmp_path / "spaced", {"dogs": 10, "dogs ": 10})
    assert train.main(["--dataset", str(spaced), "--out", str(tmp_path / "model2"), *TINY_IMAGE_RUN]) == 2
    assert "leading or trailing spaces: 'dogs' and 'dogs '" in capsys.readouterr().err


def test_training_names_the_hidden_class_folder_and_counts_the_hidden_files_it_left_out(tmp_path, capsys):
    """A hidden class folder of 5 images and a hidden image in a class folder were dropped without a word."""
    folder = _image_folder(tmp_path / "clothes", {"bag": 10, "shirt": 10, ".trouser": 5})
    (folder / "bag" / "0.png").rename(folder / "bag" / ".scan7.png")
    (folder / ".DS_Store").write_bytes(b"\0")  # what macOS writes beside files: not worth a word
    out = tmp_path / "model"
    assert train.main(["--dataset", str(folder), "--out", str(out), *TINY_IMAGE_RUN]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "note: 2 hidden files or folders (names starting with '.') under" in err
    assert ".trouser/, bag/.scan7.png" in err and "the hidden folder .trouser/ is not a class of the model" in err
    assert "- classes: bag, shirt" in (out / "README.md").read_text(encoding="utf-8")


def test_a_card_claims_a_license_in_its_front_matter_only_for_bundled_public_data(tmp_path):
    """Every card said `license: mit`, the user's own data's too, whose license its body calls unknown."""
    images = tmp_path / "images"
    assert train.main(["--dataset", str(_image_folder(tmp_path / "pets", {"cats": 10, "dogs": 10})),
                       "--out", str(images), *TINY_IMAGE_RUN]) == 0
    assert "license" not in _front_matter(images) and "library_name: cadp" in _front_matter(images)
    assert "user data: check its license" in (images / "README.md").read_text(encoding="utf-8")

    rng = np.random.default_rng(0)
    pd.DataFrame({"age": rng.integers(20, 80, 60), "bmi": rng.normal(25, 4, 60).round(1),
                  "diag": rng.choice(["x", "y"], 60)}).to_csv(tmp_path / "visits.csv", index=False)
    table = tmp_path / "table"
    assert train.main(["--dataset", str(tmp_path / "visits.csv"), "--out", str(table), "--conditions", "diag",
                       "--steps", "2"]) == 0
    assert "license" not in _front_matter(table)

    public = tmp_path / "public"
    assert train.main(["--dataset", "diabetes", "--out", str(public), "--steps", "2"]) == 0
    assert "license: mit" in _front_matter(public)


def test_a_class_name_found_by_its_unicode_form_is_never_another_existing_class():
    """The archive mapped names by their composed form, first come: the folder 'Café' (composed) was released as
    the class 'Café' (decomposed) of a model that has both; an exact name wins, an ambiguous form is refused."""
    resolver = LabelResolver([DECOMPOSED, COMPOSED, "cafe"])
    assert resolver.resolve(f"{COMPOSED}/1.png") == 1 and resolver.resolve(f"{DECOMPOSED}/1.png") == 0
    assert resolver.class_index("cafe") == 2
    with pytest.raises(InputError, match="could be the class .* differ only in Unicode normalization"):
        resolver.resolve(f"{COMPOSED} /1.png")
    one = LabelResolver([COMPOSED, "dogs"])  # one class of the form: a decomposed folder still finds it
    assert one.resolve(f"{DECOMPOSED}/1.png") == 0 and one.class_index(" dogs ") == 1
