"""The Streamlit pages, driven with streamlit.testing.v1.AppTest against tiny untrained models."""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.runtime.media_file_storage import MediaFileKind
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from cadp import compare, hub, ui
from cadp.mechanisms import PAPER_LABEL
from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90


pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "views" / name), default_timeout=TIMEOUT).run()


def whole_app() -> AppTest:
    """app.py with its navigation (pages are switched with ``switch_page``), run once."""
    return clean(AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run())


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def ledger(at: AppTest) -> list[str]:
    return [m.value for m in at.sidebar.markdown]


def guarantee(at: AppTest) -> str:
    texts = [i.value for i in at.info if "guarantee" in i.value or "privacy" in i.value or "Paper" in i.value]
    assert texts, [i.value for i in at.info]
    return texts[0]


def label_box(at: AppTest):
    """The image page's label selectbox (keyed by its input)."""
    boxes = [box for box in at.selectbox if box.key and box.key.startswith("image_label_")]
    assert len(boxes) == 1
    return boxes[0]


def downloads(at: AppTest) -> list:
    return at.get("download_button")


# --------------------------------------------------------------------------- navigation and home

def test_app_navigates_to_every_page():
    at = whole_app()
    assert at.title[0].value.startswith("CADP")
    for file, title in [("views/image.py", "Image privatization"), ("views/tabular.py", "Tabular privatization"),
                        ("views/utility.py", "Utility curves"), ("views/audit.py", "Privacy audit"),
                        ("views/model_card.py", "Model card")]:
        at.switch_page(file).run()
        clean(at)
        assert at.title[0].value == title
        assert not errors(at), (file, errors(at))


def test_home_states_the_guarantees_of_the_contract():
    at = clean(page("home.py"))
    text = " ".join(m.value for m in at.markdown)
    assert "pure ε-local differential privacy" in text
    assert "(ε, δ)-local differential privacy" in text
    assert "ε·d privacy" in text
    assert PAPER_LABEL in text
    assert "not the training set" in text and "local" in text
    assert at.get("graphviz_chart")
    # a reload empties the ledger: a clinician counting a record's releases must know it (a review found it unsaid)
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "No record released yet in this session." in sidebar and "reloading the page" in sidebar
    # uploads reach the machine that runs the app: "never ... sent anywhere" contradicted the page's own words
    captions = " ".join(c.value for c in at.main.caption)
    assert "sent anywhere" not in captions and "never sent on from the machine that runs this app" in captions


def test_home_links_each_page_where_to_start_and_names_them_when_run_alone():
    """In the app the names under "Where to start" are links to the pages (in the same session: the ledger stays);
    the home page run by itself (no navigation) names them in bold."""
    from cadp.pages import HOME, PAGES
    from cadp.ui import WHERE_TO_START

    at = whole_app()
    # one table names the pages for app.py's navigation and for these links
    assert [(path, label) for path, label, _ in WHERE_TO_START] == [page for page in PAGES if page[0] != HOME]
    links = at.get("page_link")
    assert [link.proto.label for link in links] == [f"**{label}**" for _, label, _ in WHERE_TO_START]
    assert all(link.proto.page.endswith(Path(path).stem) for link, (path, _, _) in zip(links, WHERE_TO_START))
    alone = clean(page("home.py"))
    assert not alone.get("page_link")
    text = " ".join(m.value for m in alone.markdown)
    assert all(f"**{label}**" in text and words in text for _, label, words in WHERE_TO_START)


# --------------------------------------------------------------------------- image page

def sample_page() -> AppTest:
    at = page("image.py")
    at.radio(key="image_source").set_value("Sample from the bundled test set").run()
    return clean(at)


def test_image_sample_release_shows_views_guarantee_and_download():
    at = sample_page()
    assert label_box(at).value in [str(d) for d in range(10)]
    at.button(key="image_privatize").click().run()
    clean(at)
    assert "Laplace mechanism: pure epsilon-local differential privacy with epsilon = 10" in guarantee(at)
    assert len(at.get("image")) >= 1 and len(at.get("plotly_chart")) == 3  # preview + two latent scales
    assert [m.label for m in at.metric] == ["SSIM", "PSNR", "latent L1 distance", "label"]
    assert len(downloads(at)) == 1
    assert any("1 release: ε = 10" in line for line in ledger(at))
    at.button(key="image_privatize").click().run()
    assert any("2 releases: ε = 20" in line for line in ledger(at)), ledger(at)  # n releases cost n * eps


@pytest.mark.parametrize("mechanism, expected", [
    ("gaussian", "(epsilon, delta)-local differential privacy"),
    ("metric", "Metric privacy (eps*d)"),
    ("paper", PAPER_LABEL),
])
def test_image_guarantee_follows_the_mechanism(mechanism, expected):
    at = sample_page()
    at.selectbox(key="image_mechanism").set_value(mechanism).run()
    at.button(key="image_privatize").click().run()
    clean(at)
    assert expected in guarantee(at)
    if mechanism == "metric":
        captions = " ".join(c.value for c in at.caption)
        assert "d_typ = 700" in captions and "ε = 7,000" in captions
    if mechanism == "paper":
        assert any("no formal guarantee" in line for line in ledger(at))


def preview(at: AppTest) -> tuple[dict, str]:
    """The evaluation preview's figure (as plotly JSON) and its captions."""
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    previews = [c for c in charts if any("re-identification" in t.get("name", "") for t in c["data"])]
    assert len(previews) == 1, [c["data"] for c in charts]
    return previews[0], " ".join(c.value for c in at.caption)


def test_image_page_shows_the_evaluated_curves_at_the_chosen_epsilon_before_a_release():
    at = sample_page()
    figure, captions = preview(at)
    accuracy, reid, chosen = figure["data"]
    assert accuracy["y"] == [0.2, 0.5, 0.8] and reid["y"] == [0.01, 0.02, 0.2]  # laplace, from eval.json
    assert chosen["x"] == [10, 10] and chosen["name"] == "your ε = 10"
    assert "At ε = 10: accuracy 0.500, re-identification 2.0%." in captions
    assert "Measured, not a guarantee" in captions and "chance 1.0%" in captions
    assert "differ from the evaluated ones" not in captions and not any("release" in line for line in ledger(at))
    at.select_slider(key="image_epsilon").set_value(1000).run()
    figure, captions = preview(at)
    assert "ε = 1000 was not evaluated" in captions and "At ε" not in captions
    at.number_input(key="image_temperature").set_value(1.5).run()
    at.radio(key="image_label_handling").set_value("resampled").run()
    _, captions = preview(at)
    assert "differ from the evaluated ones: temperature 1.5; conditions not kept exactly" in captions
    assert "The predicted attribute is a kept condition" in captions
    at.selectbox(key="image_mechanism").set_value("paper").run()
    assert any(f"What paper ({PAPER_LABEL}) gave" in m.value for m in at.markdown)
    # the evaluation batched paper; one image is a batch of one, which those numbers do not describe
    captions = " ".join(c.value for c in at.caption)
    assert "The evaluated paper curves are not shown" in captions and "one batch of 1 record." in captions
    assert not any("re-identification" in t.get("name", "") for c in at.get("plotly_chart")
                   for t in json.loads(c.proto.spec)["data"])
    at.selectbox(key="image_mechanism").set_value("gaussian").run()  # the fixture has no gaussian curves
    clean(at)
    assert not at.get("plotly_chart")


def test_a_paper_release_names_its_batch_and_no_temperature_note():
    at = sample_page()
    at.selectbox(key="image_mechanism").set_value("paper").run()
    at.button(key="image_privatize").click().run()
    clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "The paper mechanism ran on one batch of 1 record" in captions
    assert "largest |z_j|" in captions and "ε up to ~100 look like fresh samples" not in captions


def test_preview_figure_and_notes_say_what_was_evaluated():
    from cadp.mechanisms import make_mechanism

    utility = json.loads(json.dumps(helpers.UTILITY))
    assert ui.preview_figure(utility, "gaussian", 10) is None  # not evaluated
    utility["methods"]["paper"]["reid_latent"] = [0.5]  # a curve of the wrong length is not drawn
    assert ui.preview_figure(utility, "paper", 10) is None
    utility["methods"]["metric"] = {**utility["methods"]["laplace"]}
    assert ui.preview_figure(utility, "metric", 2)["layout"]["xaxis"]["title"]["text"].startswith("ε per unit")
    utility["settings"].update(temperature=0.7, delta=1e-5)
    utility["methods"]["gaussian"] = {**utility["methods"]["laplace"]}
    utility["methods"]["paper"] = {**utility["methods"]["laplace"], "batch_size": 512}

    def notes(name, epsilon=10, kept=True, **settings):
        mechanism = make_mechanism(name, epsilon, **settings)
        chosen = ui.PrivacySettings(mechanism, name, epsilon, None, settings.get("delta"),
                                    settings.get("clip_radius"), settings.get("temperature"))
        return " ".join(ui.preview_notes(utility, chosen, kept))

    assert "differ" not in notes("laplace", temperature=0.7) + notes("gaussian", delta=1e-5, temperature=0.7)
    assert "differ from the evaluated ones: a fixed clip radius." in notes("laplace", clip_radius=5.0)
    assert "δ 0.001" in notes("gaussian", delta=1e-3, temperature=0.7)
    assert "batches of 512 records" in notes("paper")  # settings without the split sizes
    utility["settings"].update(paper_batch_size=512, n_train=354, n_test=88)  # a table smaller than a batch
    assert "evaluated on batches of 354 training and 88 test records (batch size 512)" in notes("paper")
    utility["settings"].update(n_train=1000, n_test=500)
    assert "batches of 512 and 488 training and 500 test records" in notes("paper")
    from cadp.ui import paper_batch_note  # a release of 88 rows ran like the evaluation's 88 test rows
    assert paper_batch_note({**utility, "settings": {**utility["settings"], "n_test": 88}}, 88) is None
    assert "one batch of 1 record" in paper_batch_note(utility, 1)
    # metric's ε is per unit of latent distance, in the notes and the legend as on the slider and the axis
    assert "At ε = 100 per unit of latent L1 distance: accuracy 0.800, re-identification 20.0%." in notes("metric", 100)
    assert "ε = 3 per unit of latent L1 distance was not evaluated" in notes("metric", 3)
    assert ui.preview_figure(utility, "metric", 2)["data"][-1]["name"] == "your ε = 2 per unit"
    assert ui.preview_figure(utility, "laplace", 2)["data"][-1]["name"] == "your ε = 2"
    assert "conditions not kept exactly" in notes("laplace", kept=False, temperature=0.7)


@pytest.mark.parametrize("change", [
    lambda u: u["methods"]["laplace"]["p/o"]["mean"].__setitem__(1, None),  # NaN written as null
    lambda u: u["methods"]["laplace"].__setitem__("reid_latent", "0.1, 0.2, 0.3"),
    lambda u: u.__setitem__("epsilons", [0, 10, 100]),  # not on a log axis
    lambda u: u.__setitem__("epsilons", ["1", "10", "100"]),
    lambda u: u.__setitem__("methods", [1, 2]),
])
def test_preview_skips_a_malformed_utility_section(change):
    utility = json.loads(json.dumps(helpers.UTILITY))
    assert ui.preview_figure(utility, "laplace", 10) is not None
    change(utility)
    assert ui.preview_figure(utility, "laplace", 10) is None
    assert ui.preview_figure([], "laplace", 10) is None


def test_an_unreadable_eval_json_leaves_the_image_page_working(monkeypatch):
    from cadp import hub
    from cadp.errors import ModelError

    def broken(folder):
        raise ModelError("eval.json is not valid JSON")

    monkeypatch.setattr(hub, "read_eval", broken)
    at = sample_page()
    assert any("could not be read for a preview" in c.value for c in at.caption)
    at.button(key="image_privatize").click().run()
    clean(at)
    assert not errors(at) and len(at.get("plotly_chart")) == 2  # the release's two latent maps


def test_preview_notes_without_chance_or_settings_and_with_code_marks():
    from cadp.mechanisms import make_mechanism

    utility = json.loads(json.dumps(helpers.UTILITY))
    del utility["chance"]
    utility["settings"] = {"command": "x` **y**", "seeds": "not a list"}
    chosen = ui.PrivacySettings(make_mechanism("laplace", 10, temperature=0.7), "laplace", 10, None,
                                temperature=0.7)
    text = " ".join(ui.preview_notes(utility, chosen, True))
    assert "(top-1). Measured, not a guarantee." in text and "seeds ?" in text and "`x' **y**`" in text


def test_image_epsilon_slider_seed_condition_strip_and_gallery():
    at = sample_page()
    assert at.select_slider(key="image_epsilon").options[0] == "0.1"
    assert at.select_slider(key="image_epsilon").options[-1] == "10000"
    at.select_slider(key="image_epsilon").set_value(1000)
    at.checkbox(key="image_fixed_seed").check()
    at.radio(key="image_label_handling").set_value("randomized")
    at.checkbox(key="image_strip").check()
    at.slider(key="image_gallery").set_value(3)
    at.run()
    captions = " ".join(c.value for c in at.caption)
    assert "The label is not kept here" in captions and "The kept label survives" not in captions
    at.radio(key="image_policy").set_value("fixed radius").run()
    captions = " ".join(c.value for c in at.caption)
    # before the press: 5 strip releases (1 + 10 + ... + 10000) and 3 draws at 1000, each + 2 for the label
    assert "one press adds 8 releases to its ledger entry besides the release itself; together they cost ε = 14127." in captions
    # the note measured at constant temperature 0.7 does not describe a fixed radius
    assert "Fixed clip radius R = 10" in captions and "ε up to ~100 look like fresh samples" not in captions
    at.button(key="image_privatize").click().run()
    clean(at)
    assert any("9 releases: ε = 15129" in line for line in ledger(at)), ledger(at)  # 1002 + 14127
    assert any(w.value.startswith("1 image here was released before in this session (the ledger lists it") for w in clean(at.run()).warning)
    text = guarantee(at)
    assert "epsilon = 1000" in text and "L1 clip radius 10" in text
    assert "not private: reproducible seed" in text
    assert "randomized by randomized response with epsilon = 2 over its" in text and "Total epsilon of this release" in text
    # 1 release + 5 strip releases + 3 gallery draws, each charged to the ledger
    assert any("9 releases" in line for line in ledger(at)), ledger(at)
    assert len(at.get("image")) >= 4 + 5 + 3
    # each extra release draws its label again: its caption says which one and what that label costs
    captions = [image.caption for element in at.get("image") for image in element.proto.imgs]
    extras = [caption for caption in captions if "released as" in caption]
    assert len(extras) == 5 + 3 and all("label ε 2 · released as " in caption for caption in extras), captions
    assert sum(caption.startswith("ε = ") for caption in extras) == 5


def test_image_upload_valid_and_invalid():
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value(("digit.png", helpers.png(), "image/png")).run()
    clean(at)
    assert not errors(at)
    assert any("The classifier suggests" in c.value for c in at.caption)
    at.button(key="image_privatize").click().run()
    clean(at)
    assert len(downloads(at)) == 1 and "Laplace" in guarantee(at)
    assert any("digit.png" in line for line in ledger(at))
    at.file_uploader(key="image_upload").set_value(("broken.png", b"this is not an image", "image/png")).run()
    clean(at)
    assert errors(at) and "broken.png" in errors(at)[0]
    assert not downloads(at)
    # the session keeps working after the error
    at.file_uploader(key="image_upload").set_value(("digit.png", helpers.png(1), "image/png")).run()
    clean(at)
    assert not errors(at)
    at.file_uploader(key="image_upload").set_value(("light.png", helpers.png(2, dark_on_light=True),
                                                    "image/png")).run()
    steps = " ".join(m.value for m in at.markdown if m.value.startswith("- "))
    assert steps.count("invert") == 1, steps  # the inversion is listed once
    at.file_uploader(key="image_upload").set_value(("empty.zip", helpers.zip_of({}), "application/zip")).run()
    clean(at)
    assert any("No image found in the upload" in w.value for w in at.warning)


def test_moving_a_widget_does_not_decode_the_uploaded_images_again(monkeypatch):
    """Every rerun decoded and resized every uploaded image again: ~11 s per slider move for 67 photos."""
    from cadp import uploads

    decoded = []
    original = uploads.to_model_input

    def counting(data, **options):
        decoded.append(options["filename"])
        return original(data, **options)

    monkeypatch.setattr(uploads, "to_model_input", counting)
    at = page("image.py")
    files = [("a.png", helpers.png(0), "image/png"),
             ("b.zip", helpers.zip_of({"b1.png": helpers.png(1), "b2.png": helpers.png(2)}), "application/zip")]
    at.file_uploader(key="image_upload").set_value(files).run()
    assert sorted(decoded) == ["a.png", "b.zip/b1.png", "b.zip/b2.png"]
    at.select_slider(key="image_epsilon").set_value(1000).run()
    at.select_slider(key="image_epsilon").set_value(100).run()
    at.radio(key="image_label_handling").set_value("resampled").run()
    at.button(key="image_privatize").click().run()
    assert len(decoded) == 3 and "ZIP" in downloads(clean(at))[0].label  # released without decoding them again
    at.radio(key="image_invert").set_value("never").run()  # another preparation: decoded again, once
    at.select_slider(key="image_epsilon").set_value(10).run()
    assert len(decoded) == 6
    at.file_uploader(key="image_upload").set_value([files[0]]).run()  # the ZIP removed: its images are dropped
    assert len(decoded) == 6 and "Preprocessing (1 image)" in [e.label for e in clean(at).expander]
    assert len(at.session_state["image_upload_prepared"]) == 1
    at.file_uploader(key="image_upload").set_value([files[0], files[0]]).run()  # the same file twice: read once
    at.select_slider(key="image_epsilon").set_value(100).run()
    assert len(decoded) == 6 and "Preprocessing (1 image)" in [e.label for e in clean(at).expander]
    assert any("a.png: the same file is in the upload twice; its images are read once" in e.value for e in at.error)


def test_an_upload_past_the_decoded_pixel_budget_is_cut_with_a_plain_message(monkeypatch):
    from cadp import uploads

    monkeypatch.setattr(uploads, "MAX_UPLOAD_PIXELS", 2 * 40 * 40)  # two of the 40 x 40 test images
    at = page("image.py")
    members = {f"digit{i}.png": helpers.png(i) for i in range(4)}
    at.file_uploader(key="image_upload").set_value(("digits.zip", helpers.zip_of(members), "application/zip")).run()
    assert errors(clean(at)) == ["This upload's images hold more than 3,200 pixels in all, the most one upload may "
                                 "decode (the model reads them at 28x28: downscale them before uploading, or upload "
                                 "fewer at a time); 2 images past it were skipped"]
    assert "Preprocessing (2 images)" in [e.label for e in at.expander]
    at.select_slider(key="image_epsilon").set_value(1000).run()  # the same on a rerun, from the session
    assert len(errors(clean(at))) == 1 and "Preprocessing (2 images)" in [e.label for e in at.expander]
    at.file_uploader(key="image_upload").set_value([("first.png", helpers.png(9), "image/png"),
                                                    ("digits.zip", helpers.zip_of(members), "application/zip")]).run()
    assert "3 images past it were skipped" in errors(clean(at))[0]  # the first file took part of the budget
    at.file_uploader(key="image_upload").set_value(("digits.zip", helpers.zip_of(members), "application/zip")).run()
    assert "2 images past it were skipped" in errors(clean(at))[0]  # and gave it back when removed
    assert "Preprocessing (2 images)" in [e.label for e in at.expander]


def test_many_problems_in_an_upload_are_grouped_by_kind():
    """A ZIP of 1,999 text files and one image showed 1,999 red boxes above the image."""
    at = page("image.py")
    members = {f"notes{i}.txt": b"text" for i in range(40)} | {f"cut{i}.png": b"\x89PNG garbage" for i in range(5)}
    members |= {"odd.png": b"", "half.png": helpers.png(1)[:60], "digit.png": helpers.png(3)}
    at.file_uploader(key="image_upload").set_value(("mixed.zip", helpers.zip_of(members), "application/zip")).run()
    shown = errors(clean(at))
    assert len(shown) == 4, shown
    assert shown[0].startswith("40 files (mixed.zip/notes0.txt, mixed.zip/notes1.txt, mixed.zip/notes2.txt and "
                               "37 more): not an image")
    assert shown[1].startswith("Skipped 5 files (mixed.zip/cut0.png, mixed.zip/cut1.png, mixed.zip/cut2.png and 2 "
                               "more): the file is not an image that can be read")
    assert shown[2].startswith("Skipped mixed.zip/odd.png: the file is empty")
    assert shown[3] == "… and 1 more file with 1 other kind of problem: see the list below"
    everything = next(e for e in at.expander if e.label == "All 47 problems")
    assert len(everything.text[0].value.splitlines()) == 47
    assert "Preprocessing (1 image)" in [e.label for e in at.expander]


def test_image_zip_batch_and_invalid_zip():
    at = page("image.py")
    archive = helpers.zip_of({"a.png": helpers.png(0), "b.png": helpers.png(1, dark_on_light=True),
                              "notes.png": b"garbage"})
    at.file_uploader(key="image_upload").set_value(("batch.zip", archive, "application/zip")).run()
    clean(at)
    assert len(errors(at)) == 1 and "notes.png" in errors(at)[0]
    assert at.get("arrow_data_frame") or at.get("data_editor") or at.dataframe
    at.button(key="image_privatize").click().run()
    clean(at)
    assert downloads(at) and "ZIP" in downloads(at)[0].proto.label
    assert sum("1 release:" in line for line in ledger(at)) == 2
    at.file_uploader(key="image_upload").set_value(("bad.zip", b"PK\x03\x04 not really", "application/zip")).run()
    clean(at)
    assert errors(at) and not downloads(at)


def test_batch_zip_has_manifest_rows():
    data = compare.batch_zip([("0000-a-private.png", b"x")],
                             [{"file": "0000-a-private.png", "condition": "3", "mechanism": "laplace",
                               "cost": "ε = 10", "noise": "OS entropy"}], "Laplace mechanism ...")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = archive.read("manifest.csv").decode().splitlines()
        assert archive.read("guarantee.txt").decode() == "Laplace mechanism ...\n"
    assert manifest == ["file,condition,mechanism,cost,noise", "0000-a-private.png,3,laplace,ε = 10,OS entropy"]


def test_a_batch_download_carries_its_privacy_terms():
    at = page("image.py")
    files = [(f"digit{i}.png", helpers.png(), "image/png") for i in range(2)]
    at.file_uploader(key="image_upload").set_value(files).run()
    at.selectbox(key="image_mechanism").set_value("metric").run()
    at.radio(key="image_label_handling").set_value("randomized").run()
    at.checkbox(key="image_fixed_seed").check().run()
    at.button(key="image_privatize").click().run()
    clean(at)
    assert "ZIP with manifest.csv and guarantee.txt" in downloads(at)[0].label
    state = at.session_state["image_result"]  # what the download button is given
    with zipfile.ZipFile(io.BytesIO(compare.batch_zip(state["files"], state["manifest"],
                                                      ui.release_terms(state["result"])))) as archive:
        rows = archive.read("manifest.csv").decode().splitlines()
        terms = archive.read("guarantee.txt").decode()
    assert len(rows) == 3 and "metric — ε·d privacy" in rows[1]
    assert "per unit of latent distance (ε·d) + ε = 2 for conditions" in rows[1]  # two units, both named
    assert "not private: reproducible seed" in rows[1] and "not private: reproducible seed" in terms
    assert "Metric privacy" in terms and "randomized by randomized response with epsilon = 2 over its" in terms
    # a file shared on its own says what another release of the same image costs (PRIVACY.md: n releases, n eps)
    assert ("Releasing the same record again (another press of Privatize, each strip or gallery image, or a release "
            "elsewhere) costs its epsilon again (basic composition)") in terms
    assert any("names (which often carry the true label) and the upload's order are left out" in c.value
               for c in at.caption)
    # a fixed seed: not private, and the names, the ledger and a warning outside "Advanced" say so
    assert [re.sub(r"-label-\d-", "-label-N-", name) for name, _ in state["files"]] == \
        ["0000-label-N-not-private.png", "0001-label-N-not-private.png"]
    assert any("2 with a fixed seed: not private" in line for line in ledger(at)), ledger(at)
    assert any(w.value.startswith("Fixed seed 0 (set in Advanced): not private") for w in at.warning)


def test_a_batch_download_with_a_label_not_kept_is_numbered_in_a_random_order():
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([(f"digit{i}.png", helpers.png(i), "image/png")
                                                    for i in range(8)]).run()
    at.radio(key="image_label_handling").set_value("resampled").run()
    at.button(key="image_privatize").click().run()
    state = clean(at).session_state["image_result"]
    from PIL import Image

    from cadp.uploads import png_bytes

    def pixels(data):
        return np.asarray(Image.open(io.BytesIO(data))).tobytes()

    in_upload_order = [pixels(png_bytes(image.numpy())) for image in state["result"].privatized]
    downloaded = [pixels(data) for _, data in state["files"]]
    # every file carries the release's terms
    for name, data in state["files"]:  # and the label released with it, in its Description and its name
        label = name.split("-label-")[1].split("-")[0]
        assert Image.open(io.BytesIO(data)).text["Description"] == \
            f"{ui.release_terms(state['result'])} Released label: {label} (resampled: drawn independently of the image)."
    assert sorted(downloaded) == sorted(in_upload_order) and downloaded != in_upload_order  # 1 in 40,320 by chance
    manifest = {row["file"]: row["condition"] for row in state["manifest"]}
    released = state["result"].released_condition["label"].tolist()
    for name, data in state["files"]:  # each file's row names the label released with that very image
        assert manifest[name] == helpers.MNIST_CLASSES[released[in_upload_order.index(pixels(data))]]


def test_download_names_are_plain_and_never_carry_a_label_that_is_not_kept():
    from cadp.mechanisms import make_mechanism

    laplace = compare.release_tag(make_mechanism("laplace", 10, temperature=0.7))
    assert compare.released_name("fashion-mnist test image #0 (Ankle boot)", 0, tag=laplace) == \
        "0000-fashion-mnist-test-image-0-Ankle-boot-laplace-eps10.png"
    assert compare.released_name("scans/patient 7.png", 3, copy_name=False, tag=laplace) == "0003-laplace-eps10.png"
    assert compare.released_name("scan.png", 0) == "0000-scan-not-private.png"


def test_download_names_fit_a_file_system_s_255_bytes():
    """An upload named with 350 bytes gave a download name no file system takes, and ZIP members that could not
    be extracted ("File name too long")."""
    for stem in ("a" * 400, "é" * 200, "scan-" + "图" * 150):
        for label in ("Ankle boot", "Ankle boot" * 30):  # the stem is shortened first, then the label
            names = [compare.released_name(f"{stem}.png", number, tag="laplace-eps10", label=label)
                     for number in range(3)]
            assert all(len(name.encode()) <= 255 for name in names), [len(name.encode()) for name in names]
            assert all(name.endswith("-laplace-eps10.png") for name in names) and len(set(names)) == 3
            assert names[1].startswith("0001-" + stem[0])
        assert "-label-Ankle-boot-laplace-eps10.png" in compare.released_name(f"{stem}.png", 0, tag="laplace-eps10",
                                                                              label="Ankle boot")
    assert compare.released_name("a" * 400 + ".png", 0, tag="not-private") == \
        "0000-" + "a" * (255 - len("0000--not-private.png")) + "-not-private.png"


def test_a_single_download_carries_the_label_released_with_it_not_only_the_screen(media):
    """The PNG of one image with a randomized or resampled label held neither that label in its name nor in its
    Description: a user could attach the true label by hand, undoing the randomized response."""
    from PIL import Image

    for handling in ("randomized", "resampled"):
        at = page("image.py")
        at.file_uploader(key="image_upload").set_value(("scan.png", helpers.png(), "image/png")).run()
        at.radio(key="image_label_handling").set_value(handling).run()
        at.button(key="image_privatize").click().run()
        shown = next(i.proto.imgs[0].caption for i in clean(at).get("image")
                     if i.proto.imgs[0].caption.startswith("privatized ("))
        released = shown.removeprefix("privatized (").removesuffix(")")
        button = downloads(at)[0]
        assert button.label == "Download privatized PNG"
        # a click reruns nothing: a rerun on a busy server dropped the file before the browser fetched it
        assert button.proto.ignore_rerun
        description = Image.open(io.BytesIO(media[button.proto.url.rsplit("/", 1)[-1].split(".")[0]])).text["Description"]
        assert description.startswith("Laplace mechanism") and f"Released label: {released} ({handling}:" in description
        named = next(c.value for c in at.caption if "carries the label released with its image" in c.value)
        assert f"(0000-label-{released}-laplace-eps10.png)" in named, named


def test_download_names_carry_the_released_label_in_a_folder_safe_form():
    assert compare.released_name("x.png", 0, copy_name=False, tag="laplace-eps10", label="T-shirt/top") == \
        "0000-label-T-shirt-top-laplace-eps10.png"
    assert compare.released_name("scans/7.png", 2, tag="not-private", label="Ankle boot") == \
        "0002-7-label-Ankle-boot-not-private.png"
    assert compare.released_name("a.png", 1, copy_name=False, tag="not-private", label="/..") == \
        "0001-label-x2f2e2e-not-private.png"  # nothing readable left: its bytes, never a word like a class
    assert compare.released_name("a.png", 0, copy_name=False, tag="not-private", label="Lungenentzündung") == \
        "0000-label-Lungenentzündung-not-private.png"
    assert compare.released_name("a.png", 0, copy_name=False, tag="not-private", label="Пневмония") == \
        "0000-label-Пневмония-not-private.png"


def test_download_names_say_the_terms_and_never_call_a_release_private_unqualified():
    """A bare '-private.png' was given to metric releases (which protect only near-duplicates at usual settings)
    and to releases at epsilon 10,000 alike."""
    from cadp.mechanisms import make_mechanism

    assert compare.release_tag(make_mechanism("metric", 1)) == "metric-eps1-per-unit"
    assert compare.release_tag(make_mechanism("gaussian", 10000, delta=1e-5, temperature=0.7)) == \
        "gaussian-eps10000"
    assert compare.release_tag(make_mechanism("paper", 1)) == "not-private"
    assert compare.release_tag(make_mechanism("laplace", 1, temperature=0.7), seeded=True) == "not-private"


# --------------------------------------------------------------------------- tabular page

def test_tabular_bundled_release():
    at = page("tabular.py")
    clean(at)
    assert any("fits the model" in s.value for s in at.success)
    assert helpers.conditions(at).value == ["sex"]
    at.button(key="table_privatize").click().run()
    clean(at)
    assert "epsilon = 2" in guarantee(at)
    assert {"p/o: trained on privatized, tested on real",
            "o/o: trained on real, tested on real"} <= {m.label for m in at.metric}
    # the caption says how its split was made (tiny-table has no evaluation: none is pointed to; the command that
    # runs one names its folder)
    not_evaluated = compare.with_command(compare.NOT_EVALUATED, helpers.utility_command(helpers.TABLE_MODEL))
    assert "FOLDER" not in not_evaluated
    split = compare.downstream_accuracy(at.session_state["table_result"]["result"].original_frame,
                                        at.session_state["table_result"]["result"].privatized_frame, "sex")
    assert any(f"trained on {split['n_train']} rows of this release" in c.value and
               f"tested on the other {split['n_test']} real rows" in c.value and
               not_evaluated in c.value for c in at.caption)
    # sex is kept: its accuracy says how well the model pictures each group, not what of the rows survives
    assert compare.kept_target_words("sex", not_evaluated) in [c.value for c in at.caption]
    # said once after the release, by the downstream caption (the kept condition's caption points to it rather than
    # saying it again; the preview's box above says it before the release)
    assert sum(not_evaluated in c.value for c in at.caption) == 1, [c.value for c in at.caption]
    assert sum("releases were not evaluated" in c.value for c in at.caption) == 1, [c.value for c in at.caption]
    assert len(at.get("plotly_chart")) == 2
    assert [d.label for d in downloads(at)] == ["Download privatized CSV", "Download its terms (guarantee.txt)"]
    assert all(d.proto.ignore_rerun for d in downloads(at))  # a click must not rerun the page (see the PNG test)
    assert ui.release_terms(at.session_state["table_result"]["result"]).endswith(
        "Releasing the same record again (another press of Privatize, or a release elsewhere) costs its epsilon "
        "again (basic composition): a record released n times costs n times the epsilon of one release.")
    # only the rows the model did not train on: for the 354 others the guarantee would not cover the model
    assert any("each row of diabetes (held-out rows) (88 rows)" in line and "ε = 2" in line for line in ledger(at))
    assert any("The 88 rows of diabetes that the network of tiny-table did not train on" in c.value
               and "354 rows trained the network" in c.value for c in at.caption)
    # but the encoder was fitted on all rows: the caption does not imply that these rows shaped nothing
    assert any("The encoder's column types, levels, ranges and means, and the conditions' frequencies a resampled "
               "condition is drawn from, were computed from all 442 rows of the table, these included" in c.value
               for c in at.caption)


def test_a_release_of_rows_the_model_trained_on_says_so_on_screen_not_in_its_terms(media):
    """The page warned, but the guarantee box stated the plain guarantee for every row; the downloaded terms,
    which are shared with the release, must not say which rows were training rows (that depends on the records):
    they state the rule for any training row."""
    from cadp.data import load_table

    table = load_table("diabetes").frame
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("all.csv", table.to_csv(index=False).encode(), "text/csv")).run()
    at.button(key="table_privatize").click().run()
    caution = (f"354 of these 442 rows are rows {helpers.TABLE_MODEL} was trained on (without DP): for them the "
               "guarantee does not cover what the model learned from them. Rows are recognized by their exact values: "
               "a training row rounded or retyped is not counted here, and for it too the guarantee does not cover "
               "what the model learned.")
    assert guarantee(clean(at)).startswith(f"Caution: {caution}") and "epsilon = 2" in guarantee(at)
    terms = media[downloads(at)[1].proto.url.rsplit("/", 1)[-1].split(".")[0]]
    terms = terms.decode() if isinstance(terms, bytes) else terms
    assert "Caution" not in terms and "epsilon = 2" in terms
    # (the test's model lies outside weights/: its training data is its config.json's word)
    from cadp.mechanisms import stated_public_terms

    assert stated_public_terms("diabetes", "config") in terms
    assert "for a record of the training data it does not cover what the model learned from the record" in terms
    at.radio(key="table_source").set_value("Bundled table (diabetes)").run()  # held-out rows only: no caution
    at.button(key="table_privatize").click().run()
    assert "Caution" not in guarantee(clean(at))


def test_what_a_release_will_note_about_the_cells_is_said_before_privatize(media):
    """Numbers outside the model's range, unreadable cells and columns the model does not have were noted only
    after Privatize, once the release was made and charged."""
    from cadp.data import load_table

    rows = load_table("diabetes").frame.head(3).copy()
    rows["bmi"] = [1e6, rows["bmi"].iloc[1], rows["bmi"].iloc[2]]
    rows["bp"] = ["n/a", rows["bp"].iloc[1], rows["bp"].iloc[2]]
    rows["name"] = ["Ann", "Bob", "Cy"]
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("few.csv", rows.to_csv(index=False).encode(), "text/csv")).run()
    before = [i.value for i in clean(at).info if i.value.startswith("A release of this table as it is")]
    assert len(before) == 1 and "bmi: 1 cell outside the range the model knows" in before[0]
    assert "bp: 1 cell empty, not a number or infinite" in before[0]
    assert "column the model does not have, left out of the release: 'name'" in before[0]
    assert not downloads(at)  # nothing released yet
    at.button(key="table_privatize").click().run()
    after = " ".join(i.value for i in clean(at).info) + " ".join(c.value for c in at.caption)
    assert "outside the range the model knows" in after


def test_a_one_row_upload_is_released_without_an_error_it_cannot_act_on(media):
    """One row: the downstream check raised 'the target has a single value; pick a column...' with no column to
    pick, and the caution read '1 of these 1 rows are rows'."""
    from cadp.data import load_table

    table = load_table("diabetes").frame
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("one.csv", table.head(1).to_csv(index=False).encode(),
                                                    "text/csv")).run()
    at.button(key="table_privatize").click().run()
    assert not errors(clean(at)) and downloads(at)
    assert guarantee(at).startswith(f"Caution: This row is a row {helpers.TABLE_MODEL} was trained on")
    assert any("No downstream check: it needs at least 10 rows" in c.value for c in at.caption)
    assert any(m.value == "Original" for m in at.markdown)


def test_tabular_preview_for_the_bundled_model_only(monkeypatch):
    from cadp import hub

    read_eval = hub.read_eval
    monkeypatch.setattr(hub, "read_eval", lambda folder, *rest: {"utility": helpers.UTILITY} if Path(folder).name ==
                        helpers.TABLE_MODEL else read_eval(folder, *rest))
    at = page("tabular.py")
    at.select_slider(key="table_epsilon").set_value(1).run()
    _, captions = preview(clean(at))
    assert "At ε = 1: accuracy 0.200, re-identification 1.0%." in captions
    helpers.upload_and_fit(at)  # fitted here: the bundled model's evaluation does not describe it
    clean(at)
    assert at.button(key="table_privatize") and not at.get("plotly_chart")


def test_tabular_upload_without_kept_columns_fits_and_releases():
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("people.csv", helpers.small_csv(), "text/csv")).run()
    assert helpers.conditions(clean(at)).value == []
    at.slider(key="table_steps").set_value(100)
    at.button[0].click().run()  # the form's "Fit a model on this table", with no kept column
    clean(at)
    assert not errors(at)
    at.button(key="table_privatize").click().run()
    clean(at)
    assert not errors(at) and "epsilon = 2" in guarantee(at) and downloads(at)[0].label == "Download privatized CSV"


def test_switching_table_models_gives_each_its_own_conditions(weights, tmp_path, monkeypatch):
    import shutil

    from cadp.data import load_table
    from cadp.hub import save_model
    from cadp.models import TabularCINN
    from cadp.train import tabular_config

    shutil.copytree(weights / helpers.TABLE_MODEL, tmp_path / helpers.TABLE_MODEL)
    heart = load_table("heart").frame
    save_model(TabularCINN(tabular_config(heart, ["target", "sex"], name="tiny-heart", dataset="heart", blocks=1,
                                          width=8)), tmp_path / "tiny-heart", card="# tiny-heart\n")
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    at = page("tabular.py")
    at.sidebar.selectbox(key="model_choice").set_value(helpers.TABLE_MODEL).run()
    assert helpers.conditions(clean(at)).value == ["sex"]
    at.sidebar.selectbox(key="model_choice").set_value("tiny-heart").run()
    clean(at)  # the heart table with the heart model's conditions, not the ones chosen for diabetes
    assert helpers.conditions(at).value == ["target", "sex"]
    assert any("fits the model tiny-heart" in s.value for s in at.success) and not at.warning
    at.sidebar.selectbox(key="model_choice").set_value(helpers.TABLE_MODEL).run()
    assert helpers.conditions(at).value == ["sex"]


def test_a_models_text_codes_are_read_as_codes_from_any_csv(tmp_path, monkeypatch):
    from cadp.hub import save_model
    from cadp.models import TabularCINN
    from cadp.train import tabular_config
    from cadp.uploads import read_csv_upload

    codes = ["038.9", "250.00", "401.9"]
    text = "icd,age,bmi\n" + "".join(f"{codes[i % 3]},{20 + i},{20 + i % 7}.5\n" for i in range(30))
    frame = read_csv_upload(text.encode()).frame
    save_model(TabularCINN(tabular_config(frame, ["icd"], name="tiny-codes", dataset="codes.csv", blocks=1,
                                          width=8)), tmp_path / "tiny-codes", card="# tiny-codes\n")
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    at = page("tabular.py")
    at.sidebar.selectbox(key="model_choice").set_value("tiny-codes").run()
    later = "icd,age,bmi\n250.00,40,22.5\n401.9,51,24.5\n"  # no leading zero here: read alone, 250.0 and 401.9
    at.file_uploader(key="table_upload").set_value(("later.csv", later.encode(), "text/csv")).run()
    helpers.conditions(clean(at)).set_value(["icd"]).run()
    assert any("fits the model tiny-codes" in s.value for s in clean(at).success), [w.value for w in at.warning]


def test_tabular_release_scores_are_computed_once_per_release(monkeypatch):
    calls = []
    original = compare.downstream_accuracy
    monkeypatch.setattr(compare, "downstream_accuracy", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    at = page("tabular.py")
    at.button(key="table_privatize").click().run()
    clean(at)
    assert calls == ["sex"]
    at.selectbox(key="table_distribution_column").set_value("bmi").run()  # another histogram: no new score
    assert calls == ["sex"] and len(at.get("plotly_chart")) == 2
    assert {"p/o: trained on privatized, tested on real"} <= {m.label for m in at.metric}  # shown from the store
    at.button(key="table_privatize").click().run()  # a new release: scored afresh
    clean(at)
    assert calls == ["sex", "sex"]


def test_the_downstream_task_predicts_a_kept_condition_by_default():
    """On a small table the first column with few values, a number, was the default target (p/o 0.000)."""
    small = b"\n".join(helpers.small_csv().splitlines()[:19]) + b"\n"  # 18 rows: 'age' has at most 18 values
    at = page("tabular.py")
    helpers.upload_and_fit(at, small, kept=("group",))
    at.button(key="table_privatize").click().run()
    assert clean(at).selectbox(key="table_target").options[0] == "age"
    assert at.selectbox(key="table_target").value == "group"


def metric_meaning(at: AppTest) -> str:
    """The caption under the slider that says what the metric mechanism's ε means between records."""
    texts = [c.value for c in at.caption if c.value.startswith("Between two typical records")]
    assert len(texts) == 1, [c.value for c in at.caption]
    return texts[0]


def test_the_metric_caption_names_kept_conditions_only_when_there_are():
    """It said "two typical records of the same kept conditions" with no condition kept."""
    meaning = metric_meaning
    at = page("tabular.py")
    at.selectbox(key="table_mechanism").set_value("metric").run()
    assert meaning(clean(at)).startswith("Between two typical records with the same kept conditions (L1")
    at.radio(key="table_sex_handling").set_value("randomized").run()
    assert meaning(clean(at)).startswith("Between two typical records with the same condition values (L1")
    helpers.upload_and_fit(at, kept=())  # a model without conditions: any two records
    assert meaning(clean(at)).startswith("Between two typical records (L1 distance")


def test_the_metric_caption_says_which_records_its_distances_were_measured_on():
    """A model fitted on an upload measures d_typ and d_nn on the rows it held out for early stopping (15% of 50
    rows or more); below that, on the rows it was fitted on, and the caption says so."""
    at = page("tabular.py")
    at.selectbox(key="table_mechanism").set_value("metric").run()
    assert "measured on 50 held-out records (not trained on;" in metric_meaning(clean(at))  # the bundled model's config
    helpers.upload_and_fit(at, kept=())  # 60 rows
    assert "measured on 9 held-out records (not trained on; at most used to choose when training stopped)." in metric_meaning(clean(at))
    few = b"\n".join(helpers.small_csv().splitlines()[:41]) + b"\n"  # the header and 40 rows
    helpers.upload_and_fit(at, few, name="few.csv", kept=())
    assert "measured on 40 records the model was fitted on (too few held-out ones to measure on)." \
        in metric_meaning(clean(at))


def test_uploads_choices_and_releases_outlive_a_page_change():
    at = whole_app()
    at.switch_page("views/tabular.py").run()
    helpers.upload_and_fit(at)
    at.selectbox(key="table_mechanism").set_value("gaussian").run()
    at.button(key="table_privatize").click().run()
    released = guarantee(clean(at))
    at.switch_page("views/image.py").run()
    at.file_uploader(key="image_upload").set_value([("digit.png", helpers.png(), "image/png")]).run()
    label_box(clean(at)).set_value("3").run()
    at.switch_page("views/tabular.py").run()  # Streamlit drops the other page's widgets: their values come back
    clean(at)
    assert any(c.value.startswith("Using people.csv, uploaded earlier in this session") for c in at.caption)
    assert at.radio(key="table_source").value == "Upload a CSV" and helpers.conditions(at).value == ["group"]
    assert at.selectbox(key="table_mechanism").value == "gaussian" and guarantee(at) == released
    at.switch_page("views/image.py").run()
    assert any(c.value.startswith("Using digit.png") for c in clean(at).caption) and label_box(at).value == "3"
    at.button(key="image_upload_forget").click().run()
    assert any("Upload an image" in i.value for i in clean(at).info) and not downloads(at)
    assert not any(c.value.startswith("Using digit.png") for c in at.caption)


def test_kept_values_are_sent_to_the_browser_only_when_a_page_is_drawn_afresh():
    at = whole_app()
    at.switch_page("views/image.py").run()
    at.radio(key="image_source").set_value("Sample from the bundled test set").run()
    at.select_slider(key="image_epsilon").set_value(1000).run()
    at.run()  # the same page again: a value sent now would undo presses the browser made meanwhile
    assert not clean(at).select_slider(key="image_epsilon").proto.set_value
    at.switch_page("views/home.py").run()
    at.switch_page("views/image.py").run()  # drawn afresh: the browser is told the kept value
    slider = clean(at).select_slider(key="image_epsilon")
    assert slider.value == 1000 and slider.proto.set_value


def test_batch_label_edits_outlive_a_page_change(monkeypatch):
    import streamlit

    real, edits, shown = streamlit.data_editor, {}, []

    def editor(data, **options):  # a person's edits, as the real editor would return them
        shown.append(list(data["label"]))
        edited = real(data, **options).copy()
        for row, label in edits.items():
            edited.loc[row, "label"] = label
        return edited

    monkeypatch.setattr(streamlit, "data_editor", editor)
    at = whole_app()
    at.switch_page("views/image.py").run()
    archive = helpers.zip_of({"a.png": helpers.png(0), "b.png": helpers.png(1), "c.png": helpers.png(2)})
    at.file_uploader(key="image_upload").set_value(("batch.zip", archive, "application/zip")).run()
    suggested = shown[-1]
    edits[1] = "7" if suggested[1] != "7" else "8"
    at.run()
    edits.clear()  # the editor now holds the edit itself
    at.switch_page("views/home.py").run()
    at.switch_page("views/image.py").run()
    clean(at)
    assert shown[-1] == [suggested[0], "7" if suggested[1] != "7" else "8", suggested[2]]  # not the suggestions
    at.run()  # and while the page is shown, the base does not move
    assert shown[-1] == shown[-2]


def test_schema_edits_outlive_a_page_change():
    """A column type changed in the schema editor reset on returning: its condition was gone, so was the release."""
    data = helpers.small_csv()
    at = whole_app()
    at.switch_page("views/tabular.py").run()
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("people.csv", data, "text/csv")).run()
    identity = ui.record_key(repr((ui.record_key(data), ())).encode())
    # what the data editor sends when the visitor makes 'age' (row 0) categorical
    at.session_state[f"table_schema_{identity}"] = {"edited_rows": {0: {"type": "categorical"}}, "added_rows": [],
                                                    "deleted_rows": []}
    assert "age" in helpers.conditions(clean(at.run())).options
    helpers.upload_and_fit(at, data, kept=("age",))
    at.button(key="table_privatize").click().run()
    released = guarantee(clean(at))
    at.switch_page("views/home.py").run()
    at.switch_page("views/tabular.py").run()
    clean(at)
    assert "age" in helpers.conditions(at).options and helpers.conditions(at).value == ["age"]
    assert guarantee(at) == released and len(downloads(at)) == 2


def test_tabular_download_is_written_like_the_upload(media):
    text = helpers.small_csv().decode().replace(",", ";")
    text = "\n".join(line.replace(".", ",") for line in text.splitlines()) + "\n"  # 70,4: a decimal comma
    at = page("tabular.py")
    helpers.upload_and_fit(at, text.encode())
    at.button(key="table_privatize").click().run()
    clean(at)
    buttons = downloads(at)
    released = media[buttons[0].proto.url.rsplit("/", 1)[-1].split(".")[0]].decode()
    assert released.splitlines()[0] == "age;weight;smoker;group"
    assert re.search(r"^\d+;\d+,\d+;(yes|no);[ab]\r?$", released.splitlines()[1])
    frame = pd.read_csv(io.StringIO(released), sep=";", decimal=",")
    assert len(frame) == 60 and frame["weight"].dtype == np.float64
    assert any("Written semicolon-separated with decimal commas, as the upload was." in c.value for c in at.caption)


def test_a_download_says_which_kept_cells_were_written_with_an_apostrophe(media):
    """A kept column of '+' and '-' test results came back as "'+" and "'-" though kept conditions are released
    exactly, and nothing said so."""
    rows = [f"{20 + i % 50},{60 + i % 30}.5,{'+-'[i % 2]}" for i in range(60)]
    at = page("tabular.py")
    helpers.upload_and_fit(at, ("age,weight,test\n" + "\n".join(rows) + "\n").encode(), kept=("test",))
    at.button(key="table_privatize").click().run()
    buttons = downloads(clean(at))
    released = pd.read_csv(io.BytesIO(media[buttons[0].proto.url.rsplit("/", 1)[-1].split(".")[0]]))
    assert sorted(released["test"].unique()) == ["'+", "'-"]
    note = ("60 cells (or column names) are written with a leading apostrophe (') because they start with =, +, -, "
            "@, a tab or a carriage return, so that spreadsheet programs do not run them as formulas; the value is "
            "otherwise as released")
    assert any(note in c.value for c in at.caption), [c.value for c in at.caption]
    assert note in media[buttons[1].proto.url.rsplit("/", 1)[-1].split(".")[0]].decode()  # its terms too


def test_a_csv_without_a_header_row_is_refused_on_the_table_page():
    """Its first record was read as column names: the download carried that patient's values as its header row."""
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    rows = "\n".join(f"{20 + i},{60 + i % 30}.5,{'ab'[i % 2]}" for i in range(60))
    at.file_uploader(key="table_upload").set_value(("rows.csv", (rows + "\n").encode(), "text/csv")).run()
    assert any("the first row looks like data, not column names (2 of its 3 cells are numbers): add a header row"
               in error for error in errors(clean(at))), errors(at)
    assert not downloads(at) and not any(b.key == "table_privatize" for b in at.button)


def test_a_table_with_infinite_numbers_is_fitted_here_with_them_read_as_empty():
    """inf or 1e400 in an upload fitted here ended in "Something went wrong (OverflowError)"."""
    rows = [f"{20 + i % 50},{'inf' if i == 3 else '1e400' if i == 7 else f'{60 + i % 30}.5'},{'ab'[i % 2]}"
            for i in range(60)]
    at = page("tabular.py")
    helpers.upload_and_fit(at, ("age,weight,group\n" + "\n".join(rows) + "\n").encode())
    assert not errors(clean(at))
    assert any("column 'weight' has 2 cells that are not finite numbers" in c.value for c in at.caption)
    at.button(key="table_privatize").click().run()
    assert not errors(clean(at)) and downloads(at)[0].label == "Download privatized CSV"


def test_a_latin1_upload_comes_back_in_the_encoding_its_header_shows(media):
    """A CSV saved by Excel in Windows-1252 came back UTF-8 without a BOM, 'as the upload was': Excel showed
    'MÃ¤nnlich'. The encoding is the header's (its rows' letters are facts about records): Windows-1252 where the
    header shows it, else UTF-8 with a BOM, and the page says why."""
    for header, encoding in (("Geschlecht;Straße;Gewicht", "cp1252"), ("Geschlecht;Ort;Gewicht", "utf-8-sig")):
        rows = [header] + [f"{'Männlich' if i % 2 else 'Weiblich'};{'Zürich' if i % 3 else 'Köln'};"
                           f"{60 + (i * 7) % 30},{i % 10}" for i in range(60)]
        at = page("tabular.py")
        helpers.upload_and_fit(at, data=("\r\n".join(rows) + "\r\n").encode("cp1252"), kept=("Geschlecht",))
        at.button(key="table_privatize").click().run()
        released = media[downloads(clean(at))[0].proto.url.rsplit("/", 1)[-1].split(".")[0]]
        assert "Männlich".encode("utf-8" if encoding == "utf-8-sig" else encoding) in released
        assert (encoding == "cp1252") == (b"M\xe4nnlich" in released)
        column = header.split(";")[1]
        assert pd.read_csv(io.BytesIO(released), sep=";", decimal=",", encoding=encoding)[column].isin(
            ["Zürich", "Köln"]).all()
        captions = [c.value for c in at.caption]
        if encoding == "cp1252":
            assert "Written semicolon-separated with decimal commas, in Windows-1252, as the upload was." in captions
        else:
            assert ("Written semicolon-separated with decimal commas, in UTF-8 with a BOM: the upload's header shows "
                    "no encoding (its rows were read as Windows-1252), and a release's is chosen without its rows: "
                    "UTF-8, with a BOM as a text the model can release is not ASCII.") in captions, captions


def test_a_table_that_does_not_fit_the_model_says_why_and_extra_columns_are_left_out():
    from cadp.data import load_table
    from cadp.train import split_table

    _, held_out = split_table(load_table("diabetes").frame, 0)
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()

    def upload(frame):
        at.file_uploader(key="table_upload").set_value(("t.csv", frame.to_csv(index=False).encode(), "text/csv"))
        clean(at.run())  # (a table no model can be fitted on either says so in an error box)
        return [w.value for w in at.warning] + [e.value for e in at.error]

    warnings = upload(held_out.rename(columns={"bmi": "BMI"}))
    assert any("lacks the model's column 'bmi'" in w for w in warnings), warnings
    warnings = upload(held_out.rename(columns={"progression": "target"}))  # scikit-learn's name for it
    assert any("lacks the model's column 'progression' (the file has 'target', which the model does not: if it "
               "is 'progression', rename it)" in w for w in warnings), warnings
    unseen = held_out.copy()
    unseen.loc[unseen.index[0], "sex"] = 3
    warnings = upload(unseen)
    assert any("column 'sex' has a value the model never saw: 3 (it knows 1, 2)" in w for w in warnings), warnings
    empty = held_out.astype(object)
    empty.loc[empty.index[0], "sex"] = ""  # said to fit, then refused at Privatize
    warnings = upload(empty)
    assert any("column 'sex' has 1 empty cell (data row 1, counting from 1 below the header), a value the "
               "model never saw (it knows 1, 2): fill or remove those rows" in w for w in warnings), warnings
    assert not any("chosen here: none" in w for w in warnings)  # the page's own doing, not the table's
    units = held_out.astype({"bmi": object})
    units["bmi"] = [f"{value} kg/m2" for value in held_out["bmi"]]  # was "an identifier, dropped", then "lacks 'bmi'"
    warnings = upload(units)
    assert any(f"column 'bmi' holds text where the model has numbers ({len(held_out)} of its {len(held_out)} cells, "
               f"e.g. '{held_out['bmi'].iloc[0]} kg/m2'): write plain numbers" in w for w in warnings), warnings
    assert any(c.value.startswith("Note: column 'bmi' is one of the chosen model's number columns, but") and
               "so the table as it is does not fit that model: to release it with that model, write them as plain "
               "numbers, without units" in c.value for c in at.caption)  # (the page fits a model of its own)
    assert not any("identifier" in c.value and "'bmi'" in c.value for c in at.caption)
    trailing = held_out.to_csv(index=False) + "," * (held_out.shape[1] - 1) + "\n"  # a spreadsheet's empty row
    at.file_uploader(key="table_upload").set_value(("t.csv", trailing.encode(), "text/csv"))
    assert not any("does not match" in w.value for w in clean(at.run()).warning)
    assert any(c.value.startswith(f"Note: 1 row with every cell empty (data row {len(held_out) + 1}, counting")
               for c in at.caption)
    empty = held_out.astype(object)
    empty.loc[empty.index[0], "sex"] = ""
    warnings = upload(empty)
    assert not at.success and "Fit a model on this table" in [b.label for b in at.button]
    at.slider(key="table_steps").set_value(100)
    at.button[0].click().run()  # fitted here, where an empty cell is a value of its own
    at.button(key="table_privatize").click().run()
    assert not errors(clean(at)) and len(downloads(at)) == 2
    assert not any("does not match" in w for w in upload(held_out.head(1)))  # one patient's row: the model's kinds
    extra = held_out.assign(patient_id=range(1000, 1000 + len(held_out)))  # record numbers: dropped, never fitted
    assert not any("does not match" in w for w in upload(extra))
    assert any(s.value.startswith("The table fits the model") for s in at.success)
    at.button(key="table_privatize").click().run()
    assert "patient_id" not in clean(at).session_state["table_result"]["result"].privatized_frame.columns
    assert any("patient_id" in c.value for c in at.caption), [c.value for c in at.caption]
    # the upload's note on the ID-like column agrees with what happened to it (it said "modeled and released")
    assert any(c.value.startswith("Note: column 'patient_id' has a different whole number in every row") and
               "treated as an identifier (record numbers) and dropped" in c.value for c in at.caption)
    ward = held_out.assign(ward=["A" if i % 2 else "B" for i in range(len(held_out))])  # not the model's: left out
    assert not any("does not match" in w for w in upload(ward))
    at.button(key="table_privatize").click().run()
    assert "ward" not in clean(at).session_state["table_result"]["result"].privatized_frame.columns
    assert any("left out of the release: 'ward'" in c.value for c in at.caption), [c.value for c in at.caption]
    assert not any("patient_id" in c.value and "modeled and released" in c.value for c in at.caption)


def test_tabular_upload_fits_on_the_fly_and_invalid_csv():
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("people.csv", helpers.small_csv(), "text/csv")).run()
    clean(at)
    assert any("does not match" in w.value for w in at.warning)
    helpers.conditions(at).set_value(["group"]).run()
    at.radio(key="table_group_handling").set_value("resampled").run()
    at.slider(key="table_steps").set_value(100)
    at.button[0].click().run()  # the form's "Fit a model on this table"
    clean(at)
    at.button(key="table_privatize").click().run()
    clean(at)
    assert "group resampled from a uniform prior (the frequencies in the model's own training data are neither " \
        "public nor independent of a record among them) (costs 0)" in guarantee(at)
    assert downloads(at)[0].label == "Download privatized CSV"
    at.file_uploader(key="table_upload").set_value(("bad.csv", b"\x00\x01\x02" * 50, "text/csv")).run()
    clean(at)
    assert errors(at) and not downloads(at)


# --------------------------------------------------------------------------- other pages

def test_utility_page_plots_eval_json_and_central_apart():
    at = clean(page("utility.py"))
    titles = [json.dumps(json.loads(c.proto.spec), ensure_ascii=False) for c in at.get("plotly_chart")]
    assert len(titles) == 5  # accuracy, re-identification, SSIM, frontier + central panel
    assert "chance" in titles[1] and "o/o" in titles[0]
    assert PAPER_LABEL in titles[0]
    assert any("Central DP baseline" in s.value for s in at.subheader)
    assert "blur" not in titles[0] and "blur" in titles[3]  # not private baselines have no epsilon axis
    central = json.loads(at.get("plotly_chart")[4].proto.spec)
    assert [trace["y"] for trace in central["data"]] == [[0.7, 0.85]]  # accuracy only: ε is the axis, not a curve
    assert central["data"][0]["text"] == ["ε spent 0.99", "ε spent 7.9"]
    # ticks at the run's ε values, titled: plotly's log ticks at phone width read "9, 1, 2" (0.9 written "9")
    axis = central["layout"]["xaxis"]
    assert axis["tickvals"] == central["data"][0]["x"] and axis["ticktext"] == [f"{e:g}" for e in axis["tickvals"]]
    assert "Central DP" in central["layout"]["title"]["text"]
    assert any("δ = 0.001 = 1/N for its N training records: a weak setting" in c.value for c in at.caption)
    # the local curves have error bars and say what they are; the central one has none here, and says nothing
    assert [c.value for c in at.caption if "Error bars" in c.value] == [
        "Error bars: the standard deviation over the seeds (the noise drawn and the classifier's training differ by "
        "seed)."]


def test_utility_page_without_section_names_the_command(weights):
    at = page("utility.py")
    at.sidebar.selectbox(key="model_choice").set_value(helpers.TABLE_MODEL).run()
    clean(at)
    assert any("python -m cadp.evaluate utility --model " in w.value and "tiny-table" in w.value for w in at.warning)


def test_audit_page_runs_and_plots_the_claim_line(monkeypatch):
    import torch

    from cadp import evaluate

    # the page draws its noise from the OS: a correct mechanism "exceeds the claim" in up to 5% of audits (seen
    # once in CI), so this test's audit runs on a fixed seed
    real, calls = evaluate.pairs_audit, []

    def seeded(pairs, mechanism, releases, generator=None, **kwargs):
        calls.append(mechanism.name)
        return real(pairs, mechanism, releases, generator or torch.Generator().manual_seed(0), **kwargs)

    monkeypatch.setattr(evaluate, "pairs_audit", seeded)
    at = clean(page("audit.py"))
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1])
    at.button[0].click().run()
    clean(at)
    assert not errors(at) and calls == ["laplace"]  # the page's audit ran on the seeded noise
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    claim = next(trace for trace in figure["data"] if trace["name"] == "y = x (the claim)")
    assert claim["x"] == claim["y"]  # a straight diagonal: both axes log, so the claim line is y = x everywhere
    assert figure["layout"]["xaxis"]["type"] == figure["layout"]["yaxis"]["type"] == "log"
    from cadp.evaluate import largest_provable_epsilon

    ceiling = f"{largest_provable_epsilon(200):.2f}"  # 200 releases per record, 100 of them held out
    assert ceiling == "3.28"
    line = next(trace for trace in figure["data"] if trace["name"] == f"the most these releases can show ({ceiling})")
    assert line["y"] == [largest_provable_epsilon(200)] * 2  # drawn at the ceiling, its label in the legend
    # not add_hline: its label went to y = 10^3.28 on the log axis, stretching the axis to a million
    assert not figure["layout"].get("annotations") and not figure["layout"].get("shapes")
    assert any(f"no audit can show more than ε ≈ {ceiling}" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert list(table["claimed"]) == [1.0] and table["lower_bound"].notna().all()
    assert set(table["model"]) == {at.selectbox(key="model_choice").value}
    assert list(table["records"]) == ["the worst-case latents"] and list(table["verdict"]) == ["no violation found (the bound is at or below the claim)"]
    at.multiselect(key="audit_epsilons").set_value([10])  # above what 200 releases can show: passes, proves nothing
    at.button[0].click().run()
    table = clean(at).dataframe[0].value
    assert table["verdict"].iloc[-1] == "not testable: 200 releases can show at most epsilon 3.28, below the claim"


def plotted(values) -> list[float]:
    """A trace's values from a figure's JSON: plotly sends NumPy arrays and Series base64-encoded."""
    if isinstance(values, dict):
        import base64

        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def test_audit_page_rerun_with_the_same_settings_replaces_its_rows():
    """Pressing "Run the audit" twice showed every ε twice, and the chart zig-zagged between the two runs."""
    at = clean(page("audit.py"))
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1, 2])
    at.button[0].click().run()
    at.button[0].click().run()
    table = clean(at).dataframe[0].value
    assert list(table["epsilon"]) == [1, 2]
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    bounds = [trace for trace in figure["data"] if trace["name"].endswith(": lower bound")]
    assert len(bounds) == 1 and plotted(bounds[0]["x"]) == [1.0, 2.0]  # one point per ε, not a zig-zag
    at.multiselect(key="audit_epsilons").set_value([2, 5])  # ε 2 again (replaced), ε 5 added, ε 1 kept
    at.button[0].click().run()
    assert list(clean(at).dataframe[0].value["epsilon"]) == [1, 2, 5]


def test_audit_table_shows_the_verdict_first_and_formats_its_numbers():
    """The table cut 1284.0992 to ".284.0992" and left the verdict off-screen to the right."""
    at = clean(page("audit.py"))
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1])
    at.button[0].click().run()
    table = clean(at).dataframe[0]
    assert list(table.value.columns)[:5] == ["verdict", "mechanism", "epsilon", "claimed", "lower_bound"]
    columns = json.loads(table.proto.columns)
    # at phone width (390 px) the verdict, the mechanism and its ε fit side by side (the verdict, 400 px, hid them)
    assert sum(columns[name]["width"] for name in ("verdict", "mechanism", "epsilon")) <= 360
    assert all(columns[name]["width"] for name in list(table.value.columns)[:9])  # set, not left to guesswork
    for name in ("epsilon", "claimed", "lower_bound", "estimate"):
        assert columns[name]["type_config"]["format"] == "localized", name  # 1,284.099 with thousands separators
    assert columns["tpr"]["type_config"]["format"] == columns["fpr"]["type_config"]["format"] == "%.3f"


def test_audit_figure_puts_its_legend_below_the_plot_and_keeps_a_short_x_title():
    """At a 400 px window the legend sat at the right, took the chart's width (the plot shrank to ~70 px) and the
    x-axis title was clipped: the legend goes below the plot, as on the utility charts."""
    from cadp.curves import LEGEND

    at = clean(page("audit.py"))
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1])
    at.button[0].click().run()
    layout = json.loads(clean(at).get("plotly_chart")[0].proto.spec)["layout"]
    assert layout["legend"]["orientation"] == "h"
    assert (layout["legend"]["yanchor"], layout["legend"]["y"]) == (LEGEND["yanchor"], LEGEND["y"])  # below
    assert len(layout["xaxis"]["title"]["text"]) <= 40  # one line that fits a phone-wide chart
    # powers of ten only: plotly's minor labels "2" and "5" without a decade read "5, 2, 1, 5, 2, 0.1" on a phone
    assert layout["xaxis"]["dtick"] == layout["yaxis"]["dtick"] == 1


def test_audit_legend_entries_fit_a_phone_wide_chart_and_the_measured_pair_is_named():
    """At 390 px the paper run's legend entry ("paper — reference reproduction — no formal guarantee (batch size 1):
    lower bound") ran past the chart's edge, cut; and the page did not say which worst-case pair a result measured
    (eval.json did)."""
    from cadp.curves import LEGEND_LINE
    from cadp.evaluate import AXIS_PAIR, DIAGONAL_PAIR

    at = clean(page("audit.py"))
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1])
    for mechanism in ("paper", "laplace"):
        at.selectbox(key="audit_mechanism").set_value(mechanism)
        at.button[0].click().run()
    figure = json.loads(clean(at).get("plotly_chart")[0].proto.spec)
    names = [trace["name"] for trace in figure["data"]]
    assert any(name.startswith("paper") for name in names), names
    assert all(len(line) <= LEGEND_LINE for name in names for line in name.split("<br>")), names
    rows = sum(1 + name.count("<br>") for name in names)
    assert figure["layout"]["height"] >= 440 + 32 * rows  # the legend's rows get their room below the plot
    table = at.dataframe[0].value
    shown = {AXIS_PAIR.replace("+-", "±"), DIAGONAL_PAIR.replace("+-", "±")}
    laplace = table[table["mechanism"] == ui.MECHANISM_LABELS["laplace"]]
    assert set(laplace["pair"]) <= shown and len(laplace) == 1, table
    listed = "\n".join(m.value for m in at.markdown)
    assert f"(measured on the pair {laplace['pair'].iloc[0]})" in listed, listed


def test_audit_page_shows_every_verdict_in_full_under_the_table():
    """The table's verdict column cut "not testable: 200 releases can show at most epsilon 3.28, below th…": the
    reason was readable only by hovering."""
    at = clean(page("audit.py"))
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1, 10])
    at.button[0].click().run()
    table = clean(at).dataframe[0].value
    assert "verdict" in table.columns  # the table keeps its verdict column
    label = ui.MECHANISM_LABELS["laplace"]
    texts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    listed = [text for text in texts if "can show at most epsilon" in text]
    assert len(listed) == 1, texts  # one list of the verdicts
    listed = listed[0]
    for epsilon, expected in ((1, "no violation found (the bound is at or below the claim)"),
                              (10, "not testable: 200 releases can show at most epsilon 3.28, below the claim")):
        assert list(table.loc[table["epsilon"] == epsilon, "verdict"]) == [expected]
        prefix = f"{label} (temperature 0.7), ε = {epsilon}"  # whose verdict it is: the row's mechanism and ε
        assert re.search(rf"{re.escape(prefix)}\W+{re.escape(expected)}", listed), listed


def test_largest_provable_epsilon_is_the_bound_of_a_perfect_test():
    """A perfect test (two records told apart in every release) reaches the ceiling, and no more: the audit
    measures on its held-out half, so 2,000 releases per record can show what 1,000 perfect ones show."""
    import torch

    from cadp.evaluate import clopper_pearson, largest_provable_epsilon, latent_audit
    from cadp.mechanisms import make_mechanism, new_generator

    tpr_lower, _ = clopper_pearson(1000, 1000)
    _, fpr_upper = clopper_pearson(0, 1000)
    assert largest_provable_epsilon(2000) == pytest.approx(math.log(tpr_lower / fpr_upper))
    perfect = latent_audit(torch.zeros(4), torch.full((4,), 50.0), make_mechanism("laplace", 1000, clip_radius=100),
                           2000, new_generator(0))
    assert (perfect.tpr, perfect.fpr) == (1.0, 0.0)
    assert perfect.epsilon_lower_bound == pytest.approx(largest_provable_epsilon(2000))
    assert largest_provable_epsilon(200) < largest_provable_epsilon(2000) < largest_provable_epsilon(20000)


def test_audit_page_takes_a_fixed_radius_and_delta_for_gaussian(monkeypatch):
    import cadp.evaluate

    seen = []
    original = cadp.evaluate.distinguishing_audit

    def recording(model, a, b, condition, mechanism, **kwargs):
        seen.append(mechanism)
        return original(model, a, b, condition, mechanism, **kwargs)

    monkeypatch.setattr(cadp.evaluate, "distinguishing_audit", recording)
    at = clean(page("audit.py"))
    at.radio(key="audit_source").set_value("two test records").run()
    at.selectbox(key="audit_mechanism").set_value("gaussian")
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1])
    at.radio(key="audit_policy").set_value("fixed radius")
    at.number_input(key="audit_radius").set_value(2.5)
    at.select_slider(key="audit_delta").set_value(1e-6)
    at.button[0].click().run()
    clean(at)
    assert not errors(at)
    assert len(seen) == 1 and seen[0].clip_radius == 2.5 and seen[0].delta == 1e-6 and seen[0].temperature is None
    at.radio(key="audit_policy").set_value("constant temperature")  # a second run with other settings: its own line
    at.button[0].click().run()
    table = clean(at).dataframe[0].value
    assert list(table["settings"]) == ["R 2.5, δ 1e-06", "temperature 0.7, δ 1e-06"]
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [trace["name"] for trace in figure["data"]]
    assert any("(R 2.5, δ 1e-06): lower bound" in name for name in names)
    assert any("(temperature 0.7, δ 1e-06): lower bound" in name for name in names)


def test_model_card_page_shows_card_samples_and_config():
    at = clean(page("model_card.py"))
    assert any("A test model card." in m.value for m in at.markdown)
    assert len(at.get("image")) == 1
    assert at.get("json")


def test_model_card_of_a_table_model_shows_sampled_rows():
    at = page("model_card.py")
    at.sidebar.selectbox(key="model_choice").set_value(helpers.TABLE_MODEL).run()
    clean(at)
    rows = at.dataframe[0].value
    assert len(rows) == 20 and "sex" in rows.columns
    assert set(rows["sex"]) <= {1, 2}
    card = "\n".join(m.value for m in at.markdown)
    assert "Measured by `python -m cadp.evaluate bpd" in card and "<!--" not in card


def test_model_card_limitations_never_call_a_users_training_data_public(tmp_path):
    """A model without a card's "Privacy and limitations" section (e.g. from the Hub) trained on the user's own
    data got the fallback sentence "Trained without differential privacy on public data"."""
    from cadp.data import load_table
    from cadp.hub import save_model
    from cadp.models import TabularCINN
    from cadp.train import tabular_config
    from tests.conftest import weights_dir

    config = tabular_config(load_table("diabetes").frame, ["sex"], name="ward-table", dataset="ward-7.csv",
                            blocks=1, width=8)
    save_model(TabularCINN(config), tmp_path / "ward-table", card="# ward-table\n")
    with weights_dir(tmp_path):
        at = clean(page("model_card.py"))
    limitations = "\n".join(m.value for m in at.markdown)
    assert "without** differential privacy on 'ward-7.csv', not a public dataset" in limitations
    assert "on public data" not in limitations


def test_a_process_that_exits_right_after_loading_a_model_exits_cleanly():
    """The warm-up thread was still inside torch when the interpreter ended: 'terminate called without an
    active exception' and exit code 134 (a server stopped right after a page loaded a model; a test run)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "from cadp import ui; ui.load_model('weights/mnist-cinn')"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-500:]


def test_hub_id_that_does_not_exist_is_a_plain_error():
    at = page("model_card.py")
    at.sidebar.selectbox(key="model_choice").set_value("Hub repository…").run()
    at.sidebar.text_input(key="model_hub").input("not a valid id!!").run()
    clean(at)
    assert at.sidebar.error
    # on a phone the sidebar is folded away: the page itself says why there is no model
    assert [e.value for e in at.main.error] == [f"{at.sidebar.error[0].value}. Choose another model in the sidebar."]
    # the table page goes on without a model (it fits one on an upload): it says why there is none all the same
    at = page("tabular.py")
    at.sidebar.selectbox(key="model_choice").set_value("Hub repository…").run()
    at.sidebar.text_input(key="model_hub").input("not a valid id!!").run()
    assert f"{at.sidebar.error[0].value}. Choose another model in the sidebar." in [e.value for e in clean(at).main.error]
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("t.csv", helpers.small_csv(), "text/csv")).run()
    warnings = [w.value for w in clean(at).warning]
    assert any(w.startswith("No model is loaded, so a model is fitted on this table here.") for w in warnings)
    assert not any("does not match the chosen model" in w for w in warnings)


@pytest.mark.parametrize("typed, said", [
    ("/etc/models/x", "is not a valid Hub repo id"),
    ("weights/mnist-cinn", "cannot load Hub repo weights/mnist-cinn@main"),  # a folder here, shaped like an id
])
def test_the_hub_box_never_loads_a_folder_of_the_server(typed, said, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    at = page("model_card.py")
    at.sidebar.selectbox(key="model_choice").set_value("Hub repository…").run()
    at.sidebar.text_input(key="model_hub").input(typed).run()
    clean(at)
    assert any(said in e.value for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert not any(c.value.startswith("From: folder") for c in at.sidebar.caption)


def test_two_sessions_do_not_share_ledger_or_results():
    first = sample_page()
    first.button(key="image_privatize").click().run()
    assert ledger(first)
    second = sample_page()
    assert not ledger(second)
    assert not downloads(second)
    assert "image_result" not in second.session_state


def recompute(monkeypatch) -> AppTest:
    """The utility page after its "Recompute", at QUICK sizes (the page's own take a minute or two)."""
    from cadp import evaluate

    quick = {key: evaluate.QUICK[key] for key in ("epsilons", "n_train", "n_test", "n_reid", "cnn_epochs")}
    monkeypatch.setitem(evaluate.APP_SIZES, "image", {**quick, "seeds": (0,)})
    at = page("utility.py")
    at.button[0].click().run()  # the form's "Recompute"
    return clean(at)


def test_utility_recompute_runs_live_and_leaves_eval_json_alone(weights, monkeypatch):
    eval_json = weights / helpers.IMAGE_MODEL / "eval.json"
    before = eval_json.read_bytes()
    at = recompute(monkeypatch)
    assert not errors(at)
    assert any(s.value.startswith("Recomputed in this session") for s in at.subheader)
    assert len(at.get("plotly_chart")) == 9  # 4 stored + 4 recomputed + central
    assert eval_json.read_bytes() == before


def test_utility_recompute_says_it_is_a_smaller_run_and_how_to_reproduce_the_stored_one(monkeypatch):
    at = recompute(monkeypatch)
    subheader = next(s.value for s in at.subheader if s.value.startswith("Recomputed"))
    assert "not the stored curves" in subheader
    note = next(i.value for i in at.info if "This run used" in i.value)
    assert ("This run used 60 training and 30 test records, re-identification among 30 records, 1 CNN epoch, 1 seed, "
            "2 epsilons (1, 1000).") in note
    assert "not comparable" not in note  # the stored run's pool is not recorded in the fixture: nothing to compare
    assert re.search(r"Real → real accuracy \(o/o\): \d\.\d{3} here, 0\.900 in eval\.json\.", note)
    assert "`python -m cadp.evaluate utility --model " in note and helpers.IMAGE_MODEL in note
    titles = [re.sub("<[^>]+>", "", json.loads(c.proto.spec)["layout"]["title"]["text"])
              for c in at.get("plotly_chart")[:8]]
    assert all("recomputed" not in title for title in titles[:4])
    assert all(title.endswith(" — recomputed, smaller run") for title in titles[4:])


def test_a_recompute_says_its_reidentification_pool_is_not_the_stored_ones(tiny_weights, tmp_path, monkeypatch):
    """The app re-identifies among 200 images, the stored curves among 500: its rates read higher whatever the
    model (chance 1/200 against 1/500), and the info box called differences 'noise of the smaller run'."""
    import shutil

    from cadp.hub import update_eval

    shutil.copytree(tiny_weights / helpers.IMAGE_MODEL, tmp_path / helpers.IMAGE_MODEL)
    stored = {**helpers.UTILITY, "settings": {**helpers.UTILITY["settings"], "n_reid": 500}}
    update_eval(tmp_path / helpers.IMAGE_MODEL, "utility", stored)
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    note = next(i.value for i in recompute(monkeypatch).info if "This run used" in i.value)
    assert ("Re-identification rates are not comparable between the two: this run matched among 30 records, the "
            "stored curves among 500; among 30 a match is likelier than among 500 (chance alone is 1/30 against "
            "1/500)") in note, note
    assert "re-identification among 500 records" in note


def test_the_utility_page_recomputes_at_sizes_that_mean_something():
    """QUICK's 60 training images and 1 CNN epoch leave every curve at chance: the page trains its classifier
    on as many images, as long, as eval.json's full run."""
    from cadp import evaluate

    sizes = evaluate.APP_SIZES["image"]
    assert (sizes["n_train"], sizes["cnn_epochs"]) == (evaluate.FULL_SIZES["image"]["n_train"],
                                                     evaluate.FULL_SIZES["image"]["cnn_epochs"])
    assert sizes["n_test"] >= 300
    at = clean(page("utility.py"))
    form_text = " ".join(m.value for m in at.markdown)
    assert ("1000 training and 300 test records, re-identification among 200 records, 4 CNN epochs, 1 seed, "
            "5 epsilons") in form_text
    assert "about 1–2 minutes" in form_text


def test_every_method_keeps_its_colour_and_legend_place_on_every_chart(monkeypatch):
    at = recompute(monkeypatch)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")[:8]]
    seen = {}
    for chart in charts:
        traces = [t for t in chart["data"] if t.get("legendgroup")]  # the methods (reference lines have none)
        assert traces
        ranks = [t["legendrank"] for t in traces]
        assert ranks == sorted(ranks)
        for trace in traces:
            style = (trace["name"], trace["line"]["color"], trace["marker"]["color"], trace["legendrank"])
            assert seen.setdefault(trace["legendgroup"], style) == style, trace["legendgroup"]
    assert {"laplace", "paper", "gaussian", "metric"} <= set(seen)
    assert len({style[1] for style in seen.values()}) == len(seen)  # no two methods share a colour
    order = sorted(seen, key=lambda name: seen[name][3])
    assert order[:4] == ["laplace", "gaussian", "metric", "paper"]


def test_utility_legends_sit_below_the_plot_and_label_no_line_on_it():
    at = clean(page("utility.py"))
    accuracy, reid = (json.loads(c.proto.spec) for c in at.get("plotly_chart")[:2])
    for chart in (accuracy, reid):
        assert chart["layout"]["legend"]["orientation"] == "h" and chart["layout"]["legend"]["y"] < 0
        assert not chart["layout"].get("annotations")  # a label on the plot sat on the curves
        assert all(len(trace["name"]) <= 60 for trace in chart["data"])
    assert "o/o (real → real)" in [trace["name"] for trace in accuracy["data"]]
    assert "chance among all records (1/N)" in [trace["name"] for trace in reid["data"]]
    methods = next(c.value for c in at.caption if c.value.startswith("Methods:"))
    assert "between two typical records" not in methods  # the fixture has no metric method
    assert methods == r"Methods: Laplace \(ε-LDP\): laplace; paper \(" + PAPER_LABEL + r"\); blur \(not private\)."


def test_a_loaded_model_makes_its_passes_in_the_background(weights):
    import threading

    ui.clear_loaded_models()
    loaded = ui.load_model(str(weights / helpers.IMAGE_MODEL))
    for thread in threading.enumerate():
        if thread.name == "cadp-warm-up":
            thread.join(timeout=TIMEOUT)
    # the image page's first Privatize (one image, its reconstruction) finds its passes made
    assert {key[:3] for key in loaded.model._traced._entries} == {(False, False, True), (True, False, True)}
    ui.clear_loaded_models()


def test_preload_imports_what_the_first_release_would():
    """After compare.preload, a page's first scores import nothing more (the warm-up thread runs it)."""
    import subprocess
    import sys

    script = """
import sys
import numpy as np, pandas as pd, torch
from cadp import compare
frame = pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) % 7, "t": np.arange(40) % 2})
compare.preload()
before = set(sys.modules)
compare.image_quality(torch.zeros(1, 28, 28), torch.full((1, 28, 28), 9.0))
compare.downstream_accuracy(frame, frame, "t")
compare.correlation_difference(frame, frame)
frame.style.format(precision=3).to_html()
print(sorted(set(sys.modules) - before))
"""
    new = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert new.stdout.strip() == "[]", new.stdout


def test_ledger_words_for_each_kind_of_release():
    from cadp.mechanisms import make_mechanism

    laplace, metric, paper = (make_mechanism("laplace", 10, temperature=0.7), make_mechanism("metric", 1),
                              make_mechanism("paper", 10))
    assert ui.cost_text([laplace, laplace], 2.0) == "ε = 24"
    assert ui.cost_text([metric], 2.0) == "1 per unit of latent distance (ε·d) + ε = 2 for conditions"
    # paper has no guarantee, but a randomized condition released with it still costs its ε
    assert ui.cost_text([paper, paper], 2.0) == \
        "2 paper releases (reference reproduction — no formal guarantee) (their randomized conditions: ε = 4)"
    assert ui.cost_text([paper]) == "1 paper release (reference reproduction — no formal guarantee)"
    # after "2 releases:", a paper release is said to be one of them (it read as a third release)
    entry = ui.LedgerEntry("x")
    ui._add(entry, metric, 0.0, 1)
    ui._add(entry, paper, 2.0, 1)
    assert ui._entry_text(entry, among=True) == "1 per unit of latent distance (ε·d); 1 of them a paper release " \
        "(reference reproduction — no formal guarantee) (its randomized conditions: ε = 2)"
    ui._add(entry, paper, 0.0, 2)
    assert "; 3 of them paper releases (reference" in ui._entry_text(entry, among=True)
    assert compare.counted(1, "release") == "1 release" and compare.counted(2000, "row") == "2,000 rows"


def test_the_ledger_counts_a_record_however_it_was_uploaded():
    from PIL import Image

    light = helpers.png(3, dark_on_light=True)  # the same digit as a PNG, as a BMP, and as a dark-on-light PNG
    buffer = io.BytesIO()
    Image.open(io.BytesIO(helpers.png(3))).save(buffer, format="BMP")
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([("digit.png", helpers.png(3), "image/png"),
                                                    ("copy.bmp", buffer.getvalue(), "image/bmp"),
                                                    ("light.png", light, "image/png")]).run()
    at.button(key="image_privatize").click().run()
    lines = ledger(clean(at))
    assert lines == ["**digit.png** (also as copy.bmp, light.png) — 3 releases: ε = 30"], lines


def test_the_ledger_counts_a_table_row_in_every_table_and_encoding_it_came_in():
    from cadp.data import load_table
    from cadp.train import split_table

    at = page("tabular.py")  # the bundled held-out rows, then the same rows as a European spreadsheet's CSV
    at.button(key="table_privatize").click().run()
    _, held_out = split_table(load_table("diabetes").frame, 0)
    european = held_out.to_csv(index=False, sep=";", decimal=",").encode()
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("rows.csv", european, "text/csv")).run()
    # said before the press: these rows were released already (a review found the page silent until after it)
    assert any(w.value.startswith("88 rows here were released before in this session") for w in at.warning), \
        [w.value for w in at.warning]
    at.button(key="table_privatize").click().run()
    lines = ledger(clean(at))
    assert "**each row of diabetes (held-out rows) (88 rows)** — 2 releases: ε = 4" in lines, lines
    assert "**each row of rows.csv (88 rows)** — 2 releases: ε = 4" in lines, lines
    twice = pd.concat([held_out.head(40), held_out.head(40)]).to_csv(index=False).encode()  # each row twice
    at.file_uploader(key="table_upload").set_value(("twice.csv", twice, "text/csv")).run()
    at.button(key="table_privatize").click().run()
    # every row of it: twice here, twice before (as a held-out row)
    assert "**each row of twice.csv (80 rows)** — 4 releases: ε = 8" in ledger(clean(at)), ledger(at)
    reordered = held_out[held_out.columns[::-1]].to_csv(index=False).encode()  # the columns in another order
    at.file_uploader(key="table_upload").set_value(("reordered.csv", reordered, "text/csv")).run()
    at.button(key="table_privatize").click().run()
    assert "**each row of diabetes (held-out rows) (88 rows)** — rows differ (some also in other releases, or " \
           "repeated in the table); at most 5 releases and ε = 10 for a row" in ledger(clean(at)), ledger(at)


def test_a_european_csv_with_a_few_words_in_a_number_column_fits_the_model():
    """A semicolon CSV with decimal commas whose bmi had '?' in a fifth of its rows kept every bmi as text, and the
    page said the table did not fit the model that has bmi as numbers; the same file with points fit it."""
    from cadp.data import load_table
    from cadp.train import split_table

    _, held_out = split_table(load_table("diabetes").frame, 0)
    rows = held_out.head(20).copy()
    rows["bmi"] = [f"{value:g}".replace(".", ",") for value in rows["bmi"]]  # text: written as the sheet has it
    rows.loc[rows.index[::5], "bmi"] = "?"  # 4 of 20
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(
        ("rows.csv", rows.to_csv(index=False, sep=";", decimal=",").encode(), "text/csv")).run()
    clean(at)
    assert any(s.value.startswith("The table fits the model") for s in at.success), [w.value for w in at.warning]
    assert any("column 'bmi' has numbers with a decimal comma" in c.value and "4 cells that are not numbers ('?') "
               "read as empty" in c.value for c in at.caption), [c.value for c in at.caption]
    at.button(key="table_privatize").click().run()
    assert len(downloads(clean(at))) == 2


def test_a_tables_ledger_line_shows_the_most_any_of_its_rows_cost():
    from cadp.mechanisms import make_mechanism

    state = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ui.st, "session_state", state)
        rows = pd.DataFrame({"a": range(10), "b": [1.5] * 10})
        ui.charge_rows("t", "t.csv", rows, make_mechanism("laplace", 0.1, temperature=0.7))
        ui.charge_rows("t", "t.csv", rows, make_mechanism("laplace", 0.1, temperature=0.7))
        ui.charge_rows("u", "u.csv", rows.iloc[3:5], make_mechanism("laplace", 1000, temperature=0.7))
        lines = ui.ledger_lines()
    assert "at most 3 releases and ε = 1000.2 for a row" in lines[0], lines  # not the 0.2 of most of its rows

    # the most of each cost comes from different rows: paper releases are still said to be among the releases
    state = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ui.st, "session_state", state)
        first, second = pd.DataFrame({"x": [1.0]}), pd.DataFrame({"x": [2.0]})
        paper, laplace = make_mechanism("paper", 1), make_mechanism("laplace", 1, temperature=0.7)
        for _ in range(2):
            ui.charge_rows("t", "t.csv", first, paper)
            ui.charge_rows("u", "u.csv", second, laplace)
        ui.charge_rows("w", "w.csv", pd.concat([first, second]), paper)
        lines = ui.ledger_lines()
    (both,) = [line for line in lines if "w.csv" in line]
    assert "(2 rows)" in both and "at most 3 releases and ε = 2; 3 of them paper releases (" in both, lines
    assert any(line.startswith("**each row of t.csv (1 row)** — 3 releases: 3 paper releases (") for line in lines), lines

    state = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ui.st, "session_state", state)
        table = pd.DataFrame({"age": [53.0, 60.0], "sex": [1, 2], "extra": ["a", "b"]})
        ui.charge_rows("K", "t.csv", table[["age", "sex"]], make_mechanism("laplace", 1000, temperature=0.7))
        ui.charge_rows("K", "t.csv", table, make_mechanism("laplace", 1, temperature=0.7))  # another model's columns
        ui.charge_rows("E", "empty.csv", table.iloc[:0], make_mechanism("laplace", 1, temperature=0.7))
        for missing in (np.nan, None, ""):  # a missing cell however it is written: one record
            ui.charge_rows(f"M{missing!r}", "m.csv", pd.DataFrame({"age": [missing], "sex": ["m"]}, dtype=object),
                           make_mechanism("gaussian", 1, delta=1.449e-5, temperature=0.7))
        lines = ui.ledger_lines()
    # released through two models (other columns: other keys), each row twice: the costs add up
    assert "**each row of t.csv (2 rows)** — 2 releases: ε = 1001" in lines[0], lines
    assert len(lines) == 4 and all("3 releases: ε = 3, δ = 4.4e-05" in line for line in lines[1:]), lines


def test_a_release_is_shown_only_with_its_model_and_says_when_the_choices_changed(weights, tmp_path, monkeypatch):
    import shutil

    for name in (helpers.IMAGE_MODEL, helpers.TABLE_MODEL):
        shutil.copytree(weights / name, tmp_path / name)
    shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / "other-image")
    config = json.loads((tmp_path / "other-image" / "config.json").read_text())
    (tmp_path / "other-image" / "config.json").write_text(json.dumps({**config, "name": "other-image"}))
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    changed = "changed since this release: what is shown is the release made before"
    at = page("image.py")
    at.sidebar.selectbox(key="model_choice").set_value(helpers.IMAGE_MODEL).run()
    at.file_uploader(key="image_upload").set_value(("digit.png", helpers.png(), "image/png")).run()
    label_box(at).set_value("3").run()
    at.button(key="image_privatize").click().run()
    assert any(h.value == "4 · Release" for h in clean(at).header) and not any(changed in i.value for i in at.info)
    label_box(at).set_value("5").run()  # another label: the release shown is the one with 3
    assert any(changed in i.value for i in clean(at).info)
    label_box(at).set_value("3").run()
    at.radio(key="image_label_handling").set_value("resampled").run()
    assert any(changed in i.value for i in clean(at).info)
    at.sidebar.selectbox(key="model_choice").set_value("other-image").run()  # the release was not made with it
    assert not any(h.value == "4 · Release" for h in clean(at).header) and not downloads(at)

    at = page("tabular.py")
    at.button(key="table_privatize").click().run()
    assert not any(changed in i.value for i in clean(at).info)
    at.select_slider(key="table_epsilon").set_value(10).run()
    assert any(changed in i.value for i in clean(at).info) and downloads(at)[0].label == "Download privatized CSV"


def test_a_new_image_starts_from_its_own_label_not_the_last_ones():
    at = sample_page()
    at.number_input(key="image_sample_index").set_value(0).run()
    first = label_box(at).value
    other = next(name for name in label_box(at).options if name != first)
    label_box(at).set_value(other).run()  # the user corrects the label of image 0
    at.number_input(key="image_sample_index").set_value(1).run()
    suggested = next(c.value for c in at.caption if "The classifier suggests" in c.value)
    assert f"**{label_box(at).value}**" in suggested  # image 1 shows its own suggestion, not image 0's label


def test_a_confirmed_label_survives_looking_at_another_model(weights, tmp_path, monkeypatch):
    """The label box was keyed by the input only: a model whose classes lack the confirmed label dropped it, and
    back on the first model the classifier's suggestion stood in its place, unsaid."""
    import shutil

    shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / helpers.IMAGE_MODEL)
    shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / "letters")
    config = json.loads((tmp_path / "letters" / "config.json").read_text())
    (tmp_path / "letters" / "config.json").write_text(json.dumps({**config, "name": "letters",
                                                                  "class_names": list("abcdefghij")}))
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    at = page("image.py")
    at.sidebar.selectbox(key="model_choice").set_value(helpers.IMAGE_MODEL).run()
    at.file_uploader(key="image_upload").set_value(("digit.png", helpers.png(), "image/png")).run()
    suggested = label_box(at).value
    confirmed = next(name for name in label_box(at).options if name != suggested)
    label_box(at).set_value(confirmed).run()
    at.sidebar.selectbox(key="model_choice").set_value("letters").run()
    assert label_box(clean(at)).value in list("abcdefghij")
    at.sidebar.selectbox(key="model_choice").set_value(helpers.IMAGE_MODEL).run()
    assert label_box(clean(at)).value == confirmed
    at.button(key="image_privatize").click().run()
    assert any(i.proto.imgs[0].caption == f"privatized ({confirmed})" for i in clean(at).get("image"))


def test_the_chosen_model_stays_chosen_on_other_pages():
    at = whole_app()
    at.switch_page("views/model_card.py").run()
    names = at.selectbox(key="model_choice").options
    chosen = next(name for name in names if name != at.selectbox(key="model_choice").value and "Hub" not in name)
    at.selectbox(key="model_choice").set_value(chosen).run()
    at.switch_page("views/utility.py").run()
    assert at.selectbox(key="model_choice").value == chosen  # it was the first model again on every page
    at.switch_page("views/home.py").run()
    assert not at.selectbox  # the home page uses no model: no picker


def test_a_paper_batch_download_names_its_batch():
    at = page("image.py")
    files = [(f"digit{i}.png", helpers.png(), "image/png") for i in range(3)]
    at.file_uploader(key="image_upload").set_value(files).run()
    at.selectbox(key="image_mechanism").set_value("paper").run()
    at.button(key="image_privatize").click().run()
    clean(at)
    state = at.session_state["image_result"]
    assert all("(ran on one batch of 3 records)" in row["mechanism"] for row in state["manifest"])
    terms = ui.release_terms(state["result"])
    assert "This release ran it on one batch of 3 records.\n\nReleasing the same record again" in terms
    # paper has no formal guarantee: its terms add no epsilon up over repeats (PRIVACY.md)
    assert "paper gives no formal guarantee for the latent, so there is no epsilon to add up for it" in terms
    assert "basic composition" not in terms and "n times the epsilon" not in terms


def test_an_upload_holding_the_models_training_rows_is_flagged():
    from cadp.data import load_table

    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    data = load_table("diabetes").frame.to_csv(index=False).encode()
    at.file_uploader(key="table_upload").set_value(("all.csv", data, "text/csv")).run()
    clean(at)
    assert any("fits the model" in s.value for s in at.success)
    assert any("354 of these 442 rows are rows" in w.value and "does not cover what the model learned" in w.value
               for w in at.warning), [w.value for w in at.warning]


# --------------------------------------------------------------------------- a real-browser review's findings

def _downloaded_rows(at: AppTest) -> list[tuple]:
    data = at.session_state["table_result"]["written"][0]
    frame = pd.read_csv(io.BytesIO(data))
    return [tuple(round(float(v), 3) for v in row) for row in frame.itertuples(index=False)]


def test_a_table_release_with_a_condition_not_kept_is_downloaded_in_an_order_drawn_at_random():
    """With sex resampled, a file sorted by sex told every row's true sex by its position in the download."""
    at = page("tabular.py")
    at.radio(key="table_sex_handling").set_value("resampled").run()
    at.button(key="table_privatize").click().run()
    released = at.session_state["table_result"]["result"].privatized_frame
    shown = [tuple(round(float(v), 3) for v in row) for row in released.itertuples(index=False)]
    downloaded = _downloaded_rows(clean(at))
    assert sorted(downloaded) == sorted(shown) and downloaded != shown  # the same rows, in another order
    note = "Rows are written in an order drawn at random: the input's order would show through"
    assert any(note in c.value for c in at.caption)


def test_a_table_release_with_every_condition_kept_is_downloaded_in_an_order_drawn_at_random_too():
    """With every condition kept the download kept the input's order: a file sorted by a privatized column (age)
    told each row's rank in it by its position."""
    at = page("tabular.py")
    at.button(key="table_privatize").click().run()
    released = at.session_state["table_result"]["result"].privatized_frame
    shown = [tuple(round(float(v), 3) for v in row) for row in released.itertuples(index=False)]
    downloaded = _downloaded_rows(clean(at))
    assert sorted(downloaded) == sorted(shown) and downloaded != shown
    assert any("Rows are written in an order drawn at random" in c.value for c in at.caption)


def test_a_fixed_seed_draws_the_download_order_from_the_seed_and_says_so():
    rows = pd.DataFrame({"a": range(50)})
    first, note = compare.download_rows(rows, 7)
    again, _ = compare.download_rows(rows, 7)
    assert first["a"].tolist() == again["a"].tolist() != list(range(50))
    assert "With the fixed seed 7 the order is drawn from the seed" in note
    assert "not private: reproducible seed" in note


def test_a_table_that_does_not_fit_the_model_gets_no_kept_condition_unasked():
    """The model's condition sex came pre-chosen as kept (released exactly) for an upload a model is fitted on."""
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    rows = "\n".join(f"{20 + i % 50},{'MF'[i % 2]},{i % 3}" for i in range(60))
    at.file_uploader(key="table_upload").set_value(("p.csv", f"age,sex,outcome\n{rows}\n".encode(),
                                                      "text/csv")).run()
    assert any("does not match" in w.value for w in clean(at).warning)
    assert helpers.conditions(at).value == []
    at = page("tabular.py")  # the bundled table fits its model: its condition is offered as the model has it
    assert helpers.conditions(clean(at)).value == ["sex"]


def test_a_fit_that_fails_leaves_its_error_and_no_frozen_progress_bar(monkeypatch):
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value(("one.csv", b"age,weight\n40,70.5\n", "text/csv")).run()
    # a table no fit can take is said before a press (train.check_fittable): no fit is offered
    assert any("1 row" in e for e in errors(clean(at))) and not any(b.label.startswith("Fit") for b in at.button)
    import cadp.train
    from cadp.errors import InputError

    def failing(*args, progress=None, **options):
        progress(0.5, 1.0)  # the bar is drawn, then the fit fails
        raise InputError("the fit failed on purpose")

    monkeypatch.setattr(cadp.train, "fit_tabular", failing)
    at.file_uploader(key="table_upload").set_value(("two.csv", b"age,weight\n40,70.5\n41,71.5\n", "text/csv")).run()
    at.button[0].click().run()  # the form's "Fit a model on this table"
    assert any("the fit failed on purpose" in e for e in errors(clean(at)))
    assert not at.get("progress")


def test_a_large_release_says_both_tables_show_only_its_first_rows():
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    rows = "\n".join(f"{20 + i % 50},{60 + i % 37}.5,{'ab'[i % 2]}" for i in range(250))
    helpers.upload_and_fit(at, f"age,weight,group\n{rows}\n".encode(), name="many.csv", steps=100)
    at.button(key="table_privatize").click().run()
    texts = [m.value for m in clean(at).markdown]
    assert "Original (first 200 rows; the download has all 250)" in texts
    assert "Privatized (first 200 rows; the download has all 250)" in texts  # as long as its neighbour: level
    assert any(c.value.startswith("Changed cells highlighted") for c in at.caption)


def test_the_sample_number_stays_within_the_test_set():
    """Typing 99999 silently showed image 99999 modulo the test set's size."""
    at = sample_page()
    box = at.number_input(key="image_sample_index")
    count = len(ui.test_images("mnist", 28, 1).labels)
    assert box.max == count - 1 and f"0 to {count - 1:,}" in box.label
    from cadp.errors import InputError

    with pytest.raises(InputError, match=f"out of range: mnist's test set has {count:,} images"):
        ui.sample_record(type("Config", (), {"dataset": "mnist", "image_size": 28, "channels": 1})(), count)


def test_every_model_page_names_its_model_on_the_page_itself():
    """On a narrow screen the sidebar (with the model picker) is folded away."""
    at = page("image.py")
    assert any(c.value.startswith(f"Model: **{helpers.IMAGE_MODEL}** (data: mnist)") for c in clean(at).caption)



def test_long_chart_titles_break_into_a_head_and_a_smaller_line():
    """plotly never wraps a title: on a phone-wide page "Downstream accuracy: trained on releases, tested on real
    data" was cut after "tested o"."""
    from cadp.curves import epsilon_figure, frontier_figure, two_line_title

    assert two_line_title("Downstream accuracy: trained on releases") == \
        "Downstream accuracy<br><sup>trained on releases</sup>"
    assert two_line_title("Frontier (up is better)") == "Frontier<br><sup>(up is better)</sup>"
    assert two_line_title("SSIM") == "SSIM"
    figure = epsilon_figure(helpers.UTILITY, "p/o", "Downstream accuracy: trained on releases, tested on real data",
                            "accuracy")
    assert figure.layout.title.text.startswith("Downstream accuracy<br><sup>")
    assert frontier_figure(helpers.UTILITY).layout.title.text.startswith("Privacy–utility frontier<br><sup>(")


def test_a_chart_with_more_legend_entries_is_taller():
    """The legend sits below the plot: at a phone's width each entry takes a row, and in a fixed height the
    re-identification chart's seven entries shrank the plot until its legend ran over the x axis' title."""
    from cadp.curves import epsilon_figure

    few = epsilon_figure(helpers.UTILITY, "p/o", "Accuracy", "accuracy")
    many = epsilon_figure(helpers.UTILITY, "p/o", "Accuracy", "accuracy", reference=0.7, chance=0.1)
    entries = [sum(1 for trace in figure.data if trace.showlegend is not False and trace.name) for figure in (few, many)]
    assert entries[1] > entries[0]
    assert many.layout.height - few.layout.height == 32 * (entries[1] - entries[0])
    assert many.layout.height >= 440 + 32 * entries[1]


def test_reidentification_charts_draw_the_attackers_baseline_beside_one_in_n():
    """The attackers guess among the records with the released label (conditions): that guess, not 1/N, is the
    rate to read their curves against."""
    from cadp.curves import epsilon_figure, kept_task_note

    utility = json.loads(json.dumps(helpers.UTILITY))
    for kind, words in (("image", "label"), ("tabular", "conditions")):
        utility.update(chance=0.002, chance_given_condition=0.02, settings={**utility.get("settings", {}), "kind": kind})
        figure = epsilon_figure(utility, "p/o", "Accuracy", "accuracy", chance=0.002)
        lines = {trace.name: trace for trace in figure.data if trace.name and "chance" in trace.name}
        assert set(lines) == {"chance among all records (1/N)", f"attackers' baseline: chance knowing the {words}"}
        assert [shape.y0 for shape in figure.layout.shapes] == [0.002, 0.02]
        assert f"(the kept {words})" in kept_task_note(utility)
        ceiling = next(trace for trace in figure.data if trace.name == "ε-LDP ceiling on any attacker (laplace)")
        grown = np.exp(np.asarray(ceiling.x))
        assert np.allclose(ceiling.y, grown / (grown + 50 - 1))  # e^ε / (e^ε + n - 1), n = 1 / 0.02
    assert not [trace for trace in epsilon_figure(utility, "p/o", "Accuracy", "accuracy").data
                if trace.name and "ceiling" in trace.name]  # the accuracy chart has no attacker


def test_the_bundled_models_measured_laplace_reidentification_stays_under_the_ldp_ceiling():
    """Any attacker's top-1 rate against an ε-LDP release is at most e^ε / (e^ε + n - 1): a measured rate
    clearly above it (3 standard errors, of the seeds x the records) would mean the mechanism leaks."""
    from cadp.curves import ldp_ceiling, strongest_reidentification
    from tests.conftest import bundled

    for name in ("mnist-cinn", "fashion-mnist-cinn", "diabetes-cinn", "heart-cinn"):
        utility = json.loads((bundled(name) / "eval.json").read_text())["utility"]
        trials = len(utility["settings"]["seeds"]) * utility["settings"]["n_reid"]
        rates = strongest_reidentification(utility["methods"]["laplace"])
        for epsilon, rate in zip(utility["epsilons"], rates):
            bound = float(ldp_ceiling(epsilon, utility["chance_given_condition"]))
            assert rate <= bound + 3 * (bound * (1 - bound) / trials) ** 0.5, (name, epsilon, rate, bound)


def test_the_reidentification_caption_gives_a_rates_sampling_error_where_the_ceiling_is_lowest():
    """A rate measured with few seeds can be drawn above the ε-LDP line by seed noise (diabetes-cinn's laplace rate
    at ε 0.5 was 6.4% against 3.7% with 3 seeds, 2.4 standard errors; 3.3% with 30): the caption must let a reader
    see that instead of a leak."""
    from cadp.curves import ldp_ceiling, reid_sampling_note, strongest_reidentification
    from tests.conftest import bundled, weights_dir

    utility = json.loads((bundled("diabetes-cinn") / "eval.json").read_text())["utility"]
    settings = utility["settings"]
    guesses = settings["n_reid"] * len(settings["seeds"])
    bound = float(ldp_ceiling(min(utility["epsilons"]), utility["chance_given_condition"]))
    error = (bound * (1 - bound) / guesses) ** 0.5
    note = reid_sampling_note(utility)
    assert f"{guesses:,} guesses ({settings['n_reid']} records × {len(settings['seeds'])} seeds)" in note
    assert f"(ε = {min(utility['epsilons']):g}, {100 * bound:.1f}%)" in note and f"about {100 * error:.1f} points" in note
    assert f"(about {200 * error:.1f}–{300 * error:.1f} points)" in note
    rate = strongest_reidentification(utility["methods"]["laplace"])[0]
    assert rate < bound + 3 * error  # within what the sentence says
    for broken in ({"settings": {**settings, "seeds": []}}, {"settings": {**settings, "n_reid": True}},
                   {"chance_given_condition": 1.0}, {"epsilons": [0.0, 1.0]}, {"settings": None}):
        assert reid_sampling_note({**utility, **broken}) == ""
    with weights_dir(bundled("diabetes-cinn").parent):
        at = page("utility.py")
        at.sidebar.selectbox(key="model_choice").set_value("diabetes-cinn").run()
    clean(at)
    assert any(caption.value.endswith("by it. " + note) for caption in at.caption)


def test_a_method_label_from_eval_json_is_shown_as_text_not_as_a_link_in_a_chart():
    """plotly renders <a href> in trace names, and eval.json may come from anyone's Hub repo."""
    from cadp.curves import epsilon_figure

    utility = json.loads(json.dumps(helpers.UTILITY))
    utility["methods"]["blur"]["label"] = "<a href='https://evil.example'>the real results</a>"
    utility["methods"]["paper"]["label"] = 12  # not text at all
    utility["methods"]["evil"] = {"label": "<a href='https://evil.example'>x</a>", "kind": "cadp", "formal": True,
                                  "p/o": {"mean": [0.1, 0.2, 0.3]}}
    names = [trace.name for trace in epsilon_figure(utility, "p/o", "Downstream accuracy", "accuracy").data]
    assert any("evil.example" in name for name in names)
    assert not any("<a" in name for name in names) and any("&lt;a href=" in name for name in names)


def test_the_model_card_page_always_shows_the_apps_limitations_and_no_remote_images(tmp_path):
    """A card with its own "Privacy and limitations" section ("fully DP") replaced the app's limitations, and a
    Markdown image from another host was fetched by every visitor's browser."""
    from cadp.hub import save_model
    from cadp.models import ImageCINN, ImageModelConfig
    from tests.conftest import weights_dir

    config = ImageModelConfig(name="boastful", dataset="mnist", class_names=list("0123456789"), conv_width=4,
                              conv_blocks=[1, 1], fc_blocks=1, fc_width=16)
    card = ("# boastful\n\n## Privacy and limitations\nTrained on public data, fully DP.\n\n"
            "![tracker](https://evil.example/pixel.png?visitor=1)\n")
    save_model(ImageCINN(config), tmp_path / "boastful", card=card)
    with weights_dir(tmp_path):
        at = clean(page("model_card.py"))
    assert "Limitations (this app's)" in [s.value for s in at.subheader]
    texts = "\n".join(m.value for m in at.markdown)
    assert "Trained **without** differential privacy on public data" in texts
    assert "evil.example" not in texts and "[image not shown: tracker]" in texts


def test_the_ledger_says_when_summed_deltas_leave_no_guarantee():
    from cadp.mechanisms import make_mechanism

    state = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ui.st, "session_state", state)
        ui.charge("k", "a.png", make_mechanism("gaussian", 1, delta=0.3, temperature=0.7), releases=4)
        lines = ui.ledger_lines()
    assert lines == ["**a.png** — 4 releases: ε = 4, δ = 1.2 (≥ 1: no guarantee left)"]
    with pytest.MonkeyPatch.context() as patch:  # an upload's name is shown as written, not read as Markdown
        patch.setattr(ui.st, "session_state", {})
        ui.charge("k", "**x** [y](https://e.org) $z$.png", make_mechanism("laplace", 1, temperature=0.7))
        lines = ui.ledger_lines()
    assert lines == [r"**\*\*x\*\* \[y\](https://e.org) \$z\$.png** — 1 release: ε = 1"]


def test_an_upload_holding_one_image_twice_says_what_that_record_cost(media):
    """The ledger added both copies up, but the page and the ZIP's manifest showed one release's cost only."""
    at = page("image.py")
    image = helpers.png()
    at.file_uploader(key="image_upload").set_value([("a.png", image, "image/png"), ("b.png", image, "image/png"),
                                                    ("c.png", helpers.png(seed=3), "image/png")]).run()
    at.button(key="image_privatize").click().run()
    warnings = [w.value for w in clean(at).warning if "copies of" in w.value]
    assert warnings == ["2 images of this upload are copies of 1 record (the same pixels after preprocessing, or "
                        "their negative): each copy was released separately, with its own noise, so such a record "
                        "has cost up to 2 times ε = 10 here (the ledger adds them up; each file's cost in "
                        "manifest.csv is one release's)."]
    state = at.session_state["image_result"]  # cautions.txt says it, beside the ZIP: never in the release
    assert state["zip_terms"] == ui.release_terms(state["result"])
    with zipfile.ZipFile(io.BytesIO(media[downloads(at)[0].proto.url.rsplit("/", 1)[-1].split(".")[0]])) as archive:
        assert "cautions.txt" not in archive.namelist()  # facts about the records: the runner's, as the CLI's are
        assert "copies of" not in archive.read("guarantee.txt").decode()
    assert "cautions.txt" not in downloads(at)[0].label
    cautions = downloads(at)[1]
    assert cautions.label == "Download cautions.txt (for you, not part of the release)"
    assert media[cautions.proto.url.rsplit("/", 1)[-1].split(".")[0]].decode() == \
        f"{compare.CAUTIONS_HEADER}\n\n{warnings[0]}\n\n{compare.release_id_line(state['release_id'])}\n"
    # with the strip and the gallery, the first image's record was released more times than its copies
    at.checkbox(key="image_strip").check().run()
    at.slider(key="image_gallery").set_value(2).run()
    at.button(key="image_privatize").click().run()
    warning = next(w.value for w in clean(at).warning if "copies of" in w.value)
    assert "; the first image's record 2 times ε = 10 and 7 more releases by the strip and the gallery (" in warning
    # a file renamed (to hide a name) hides the release made under the old name: its files carry the names
    at.file_uploader(key="image_upload").set_value([("x.png", image, "image/png"), ("b.png", image, "image/png"),
                                                    ("c.png", helpers.png(seed=3), "image/png")]).run()
    assert not [h for h in clean(at).header if "Release" in h.value]


def test_metric_strip_and_gallery_say_their_epsilon_is_per_unit_of_latent_distance():
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([("a.png", helpers.png(), "image/png")]).run()
    at.selectbox(key="image_mechanism").set_value("metric").run()
    at.checkbox(key="image_strip").check().run()
    at.slider(key="image_gallery").set_value(2).run()
    at.button(key="image_privatize").click().run()
    texts = [m.value for m in clean(at).markdown]
    assert any(text.startswith("**2 draws at ε = ") and "per unit of latent distance**" in text for text in texts)


def test_an_upload_problem_shows_the_file_name_as_written():
    shown = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ui.st, "error", shown.append)
        ui.show_problems([("**Jane** [x](y).png", "the file is empty (0 bytes)")])
    assert shown == [r"Skipped \*\*Jane\*\* \[x\](y).png: the file is empty (0 bytes)"]


def test_the_epsilon_note_says_from_which_epsilon_this_models_typical_latent_passes_the_clip_whole():
    from cadp.hub import load_folder
    from cadp.mechanisms import make_mechanism
    from tests.conftest import bundled

    loaded = load_folder(bundled("diabetes-cinn"))
    norm = loaded.config.latent_distances.latent_l1_norm
    whole = ui.whole_latent_epsilon(loaded.config, 0.7)
    # the mechanism's own radius: the typical latent's norm is reached at that ε, not before
    assert make_mechanism("laplace", whole * 0.99, temperature=0.7).clip_radius < norm
    assert make_mechanism("laplace", whole * 1.01, temperature=0.7).clip_radius > norm
    text = ui.epsilon_meaning(loaded.config, "laplace", 2, 0.7, None, image=False, label_kept=True)
    assert f"leaves it whole from ε ≈ {whole:,.0f}." in text and "fresh sample of its kept conditions" in text
    # below the threshold a release was said to be "mostly a fresh sample": eval.json measured 12% re-identification
    # of diabetes rows at ε = 6 (chance 2.3%); the caption points to the measured rates and the e^ε bound instead
    assert "need not be a fresh sample" in text and "e^ε" in text and "mostly" not in text
    fixed = ui.epsilon_meaning(loaded.config, "laplace", 2, None, 1.0, image=False, label_kept=True)
    assert "whole" not in fixed
    # gaussian clips in L2 at another radius: laplace's threshold is not its own (the note named laplace under it)
    for image in (False, True):
        assert "leaves it whole" not in ui.epsilon_meaning(loaded.config, "gaussian", 2, 0.7, None, image=image,
                                                           label_kept=True)
    assert "laplace" not in ui.epsilon_meaning(loaded.config, "gaussian", 2, 0.7, None, image=False, label_kept=True)
    randomized = ui.epsilon_meaning(loaded.config, "laplace", 2, 0.7, None, image=False, label_kept=False)
    assert "fresh sample of its conditions released with it" in randomized and "kept conditions" not in randomized
    from dataclasses import replace

    # a model fitted on an upload without conditions
    unconditioned = replace(loaded.config, condition_encoder={**loaded.config.condition_encoder, "columns": []})
    text = ui.epsilon_meaning(unconditioned, "laplace", 2, 0.7, None, image=False, label_kept=True)
    assert "fresh sample of its table (the model has no condition)" in text and "kept conditions" not in text
    assert "Utility curves page shows, for an evaluated model" in text
    # fitted here: the Utility curves page has no curves of it (it showed the sidebar model's, of other rows)
    fitted = ui.epsilon_meaning(replace(loaded.config, dataset="upload"), "laplace", 2, 0.7, None, image=False,
                                label_kept=True)
    assert "fitted here and not evaluated, so no attack on its releases was measured" in fitted
    assert "Utility curves" not in fitted and "e^ε" in fitted


def test_a_table_with_repeated_rows_says_each_copy_is_charged_before_and_after_the_release():
    """Ten rows each five times, one press: the guarantee said ε = 2 while the ledger charged each row ε = 10,
    with nothing on the page saying why."""
    from cadp.data import load_table
    from cadp.train import split_table

    _, held_out = split_table(load_table("diabetes").frame, 0)
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    repeated = pd.concat([held_out.head(10)] * 5, ignore_index=True)
    at.file_uploader(key="table_upload").set_value(("t.csv", repeated.to_csv(index=False).encode(), "text/csv"))
    clean(at.run())
    expected = "50 rows of this table are copies of 10 records (the same values in the model's columns)"
    before = [w.value for w in at.warning if w.value.startswith(expected)]
    assert len(before) == 1 and "costs such a record up to 5 times ε = 2" in before[0], [w.value for w in at.warning]
    at.button(key="table_privatize").click().run()
    after = [w.value for w in clean(at).warning if w.value.startswith("50 rows of this table were copies")]
    assert len(after) == 1 and "has cost up to 5 times ε = 2 in this release" in after[0]
    assert any("ε = 10" in line for line in ui_ledger_lines(at))
    single = held_out.head(10)
    at.file_uploader(key="table_upload").set_value(("u.csv", single.to_csv(index=False).encode(), "text/csv"))
    assert not [w.value for w in clean(at.run()).warning if "copies of" in w.value]


def ui_ledger_lines(at: AppTest) -> list[str]:
    return [m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption]


def test_the_downstream_words_say_a_test_rows_weight_and_when_the_majority_class_wins():
    from cadp.compare import downstream_words

    accuracy = {"n_train": 64, "n_test": 16, "p/o": 0.875, "o/o": 0.875, "chance": 0.938}
    words = downstream_words(accuracy)
    assert "With 16 test rows, one row moves an accuracy by 0.062." in words
    assert "Predicting the majority class alone does as well as both classifiers here" in words
    assert "majority class" not in downstream_words({**accuracy, "o/o": 0.95})


def test_a_label_chosen_by_hand_stays_with_its_image_under_either_inversion_and_the_caption_follows_the_input():
    """An image and its negative are one record (the ledger's key): the label chosen by hand is the record's, and a
    change of Inversion silently gave the box the negative's suggestion, which a kept label then released. The
    caption still says what the classifier suggests for the input it sees."""
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([("a.png", helpers.png(), "image/png")]).run()
    at.radio(key="image_invert").set_value("never").run()
    first = suggested_label(clean(at))
    at.radio(key="image_invert").set_value("always").run()  # the same file's negative: another model input
    negative = suggested_label(clean(at))
    assert first and negative
    assert label_box(at).value == negative  # nothing chosen by hand: the input's own suggestion
    other = next(name for name in label_box(at).options if name not in (first, negative))
    at.radio(key="image_invert").set_value("never").run()
    label_box(at).set_value(other).run()
    at.radio(key="image_invert").set_value("always").run()
    assert label_box(clean(at)).value == other and suggested_label(at) == negative
    at.radio(key="image_invert").set_value("never").run()
    assert label_box(clean(at)).value == other


def suggested_label(at: AppTest) -> str | None:
    caption = next((c.value for c in at.caption if c.value.startswith("The classifier suggests **")), None)
    return None if caption is None else caption.split("**")[1]


def test_a_batchs_suggested_labels_carry_the_classifiers_caveat_and_a_stack_is_said_on_screen():
    from PIL import Image

    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([("a.png", helpers.png(), "image/png"),
                                                    ("b.png", helpers.png(seed=2), "image/png")]).run()
    assert any("on other kinds of images its confidence means little" in c.value for c in clean(at).caption)
    frames = [Image.fromarray(np.full((28, 28), value, dtype=np.uint8)) for value in (30, 200, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    at.file_uploader(key="image_upload").set_value([("stack.tif", buffer.getvalue(), "image/tiff"),
                                                    ("b.png", helpers.png(seed=2), "image/png")]).run()
    warnings = [w.value for w in clean(at).warning if "several frames" in w.value]
    assert warnings == ["1 file holds several frames (a series, a stack or an animation): only the first frame of "
                        "it is privatized (stack.tif). Save the other frames as images of their own to privatize "
                        "them."]


def test_the_notes_on_copies_add_up_no_epsilon_for_paper():
    """Under paper the table page said a record 'costs up to 3 times 1 paper release(s): no formal guarantee'."""
    from cadp.mechanisms import make_mechanism

    paper = make_mechanism("paper", 1)
    cost = ui.cost_text([paper])
    for note in (compare.repeated_rows_note(["a", "a", "a", "b"], cost, released=False, formal=paper.formal),
                 compare.repeated_rows_note(["a", "a", "a", "b"], cost, released=True, formal=paper.formal),
                 compare.repeated_images_note(["a", "a", "a", "b"], cost, formal=paper.formal)):
        assert "up to 3 releases (no formal guarantee: there is no epsilon to add up)" in note and "times" not in note
    laplace = ui.cost_text([make_mechanism("laplace", 2, temperature=0.7)])
    assert "up to 3 times ε = 2" in compare.repeated_rows_note(["a", "a", "a"], laplace, released=False)


def test_audit_page_names_papers_batch_and_when_its_nominal_epsilon_is_beyond_the_releases():
    """PRIVACY.md: record the batch size with every paper result; the paper row showed settings "–", and a bound
    at the ceiling read as if paper kept within its nominal ε 10,000."""
    at = clean(page("audit.py"))
    at.select_slider(key="audit_releases").set_value(200)
    at.selectbox(key="audit_mechanism").set_value("paper")
    at.multiselect(key="audit_epsilons").set_value([10000])
    at.button[0].click().run()
    table = clean(at).dataframe[0].value
    assert list(table["settings"]) == ["batch size 1"]
    assert table["verdict"].iloc[0] == (
        f"no claim ({PAPER_LABEL}); released one record per batch (batch size 1); 200 releases can show at most "
        "ε 3.28, below its nominal ε: whether it loses more is not testable here")


def test_audit_page_offers_record_b_among_the_other_records_only():
    """Record B could be record A itself: TPR = FPR = 1, a bound of 0, and "no violation found"."""
    at = clean(page("audit.py"))
    at.radio(key="audit_source").set_value("two test records").run()
    a, b = clean(at).selectbox(key="audit_a"), at.selectbox(key="audit_b")
    assert a.value not in b.options and str(a.value) not in b.options
    assert not errors(at)


def test_a_one_seed_sweep_draws_no_error_bars_and_does_not_explain_any():
    """A Recompute with one seed stores its spread as nulls: the page said "Error bars: the standard deviation
    over 1 seeds" under a chart without bars."""
    from cadp.curves import std_of

    assert std_of({"mean": [0.5, 0.6], "std": [None, None]}) is None
    assert std_of({"mean": [0.5, 0.6], "std": [None, 0.01]}) == [None, 0.01]
    assert std_of([0.5, 0.6]) is None


def test_an_upload_named_like_a_user_models_training_data_is_cautioned_as_the_cli_does(tmp_path):
    """A model trained on one's own ward.csv keeps none of its rows, so the CLI goes by the file's name; the table
    page said nothing when the very file was uploaded."""
    from cadp.data import load_table
    from cadp.hub import save_model
    from cadp.train import fit_tabular
    from tests.conftest import weights_dir

    frame = load_table("diabetes").frame.head(120)
    save_model(fit_tabular(frame, ["sex"], steps=5, name="ward-model", dataset="ward.csv"), tmp_path / "ward-model")
    with weights_dir(tmp_path):
        at = page("tabular.py")
        at.sidebar.selectbox(key="model_choice").set_value("ward-model").run()
        at.radio(key="table_source").set_value("Upload a CSV").run()
        at.file_uploader(key="table_upload").set_value(("ward.csv", frame.to_csv(index=False).encode(),
                                                         "text/csv")).run()
        clean(at)
        assert any("fits the model ward-model" in s.value for s in at.success), [e.value for e in at.error]
        cautions = [w.value for w in at.warning if "has the name of the data ward-model was trained on" in w.value]
        assert cautions == ["ward.csv has the name of the data ward-model was trained on: if these are its training "
                            "rows, the guarantee does not cover what the model learned from them."]
        at.file_uploader(key="table_upload").set_value(("other.csv", frame.to_csv(index=False).encode(),
                                                         "text/csv")).run()
        assert not any("has the name of the data" in w.value for w in clean(at).warning)


def test_an_upload_of_more_files_or_bytes_than_a_session_takes_is_refused_and_not_kept(monkeypatch):
    """Each file was capped (50 MB), their number and sum were not: 8 files of 45 MB were all kept in memory."""
    monkeypatch.setattr(ui, "MAX_UPLOAD_FILES", 2)
    at = page("image.py")
    files = [(f"{digit}.png", helpers.png(digit), "image/png") for digit in (1, 2, 3)]
    at.file_uploader(key="image_upload").set_value(files).run()
    clean(at)
    assert any("this upload holds 3 files" in message and "at most 2 files" in message for message in errors(at))
    assert "image_upload_kept_files" not in at.session_state
    assert "image_privatize" not in [button.key for button in at.button]  # nothing to privatize
    at.file_uploader(key="image_upload").set_value(files[:2]).run()
    assert not errors(clean(at)) and len(at.session_state["image_upload_kept_files"]) == 2


def test_forgetting_an_upload_forgets_what_was_made_of_it_but_not_its_releases_cost():
    """"Forget" dropped the file only: the release (with the upload's rows), the model fitted on them and the
    facts about them stayed in the session; a cache shared by all sessions kept notes on the upload's columns."""
    at = whole_app()
    at.switch_page("views/tabular.py").run()
    helpers.upload_and_fit(at)
    at.button(key="table_privatize").click().run()
    clean(at)
    derived = ["table_result", "table_fitted", "table_fitted_models", "table_row_keys"]
    assert all(name in at.session_state for name in derived)
    ledger = dict(at.session_state["privacy_ledger"])
    assert ledger
    at.switch_page("views/image.py").run()
    at.switch_page("views/tabular.py").run()  # the upload is now the one kept from before
    at.button(key="table_upload_forget").click().run()
    clean(at)
    assert not [name for name in derived + ["memo_input_notes", "memo_rows_seen", "table_upload_kept_files"]
                if name in at.session_state]
    assert at.session_state["privacy_ledger"].keys() == ledger.keys()  # its releases stay counted


def test_latent_difference_maps_run_from_black_at_zero_without_the_apps_theme():
    """By name, Streamlit's chart theme swapped Magma's first colour for a pink of its own: the smallest
    differences looked like the largest, and the fully connected map's padding showed as a pink strip."""
    at = sample_page()
    at.button(key="image_privatize").click().run()
    charts = [chart for chart in clean(at).get("plotly_chart") if "latent_map" in chart.proto.id
              or "|M(z)" in chart.proto.spec]
    assert len(charts) == 2
    for chart in charts:
        assert chart.proto.theme == ""  # theme=None: the figure's own colours
        heatmap = json.loads(chart.proto.spec)["data"][0]
        assert heatmap["colorscale"][0] == [0.0, "#000004"] and heatmap["zmin"] == 0 and heatmap["showscale"]


def test_the_audit_page_explains_metrics_epsilon_only_for_metric():
    at = clean(page("audit.py"))
    note = "For metric, ε is per unit of latent L1 distance"
    assert not any(note in c.value for c in at.caption)  # laplace chosen: a note on another mechanism confused
    at.selectbox(key="audit_mechanism").set_value("metric")
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1])
    at.button[0].click().run()
    assert any(note in c.value for c in clean(at).caption)


def test_the_utility_charts_x_title_fits_a_phone_wide_chart():
    """At 390 px the title "ε (local, per record; metric: per unit of latent L1 distance; DP-Pix: per 1-pixel
    change)" was cut at both ends."""
    from cadp.curves import epsilon_figure

    utility = json.loads(json.dumps(helpers.UTILITY))
    utility["methods"] |= {"metric": utility["methods"]["laplace"], "dp-pix": utility["methods"]["laplace"]}
    title = epsilon_figure(utility, "p/o", "t", "accuracy").layout.xaxis.title.text
    assert len(title) <= 55 and "metric" in title and "DP-Pix" in title  # (each named only where it is drawn)


def test_the_previews_attacker_baseline_is_labelled_above_its_line():
    """Below its line (a few percent), the label lay on the x axis' tick labels and hid 1000 and 10000."""
    utility = {**json.loads(json.dumps(helpers.UTILITY)), "chance_given_condition": 0.02}
    figure = ui.preview_figure(utility, "laplace", 10)
    (label,) = [a for a in figure.layout.annotations if a.text.startswith("chance knowing")]
    assert label.yanchor == "bottom"  # the text's bottom on the line: above it


def test_the_inversion_default_follows_the_chosen_model(weights, tmp_path, monkeypatch):
    """A radio's index is ignored once its key holds a value: a model trained on an image folder, chosen after a
    bundled MNIST one, kept 'auto' and was shown the negatives of what it learned (and the other way round)."""
    import shutil

    shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / helpers.IMAGE_MODEL)
    shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / "xray-folder")
    config = json.loads((tmp_path / "xray-folder" / "config.json").read_text())
    (tmp_path / "xray-folder" / "config.json").write_text(json.dumps({**config, "name": "xray-folder",
                                                                       "dataset": "my-xrays"}))
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    at = page("image.py")
    at.sidebar.selectbox(key="model_choice").set_value(helpers.IMAGE_MODEL).run()
    assert clean(at).radio(key="image_invert").value == "auto"
    at.sidebar.selectbox(key="model_choice").set_value("xray-folder").run()
    assert clean(at).radio(key="image_invert").value == "never"
    at.radio(key="image_invert").set_value("always").run()  # a choice made for this model stays with it
    at.file_uploader(key="image_upload").set_value(("scan.png", helpers.png(), "image/png")).run()
    assert clean(at).radio(key="image_invert").value == "always"
    at.sidebar.selectbox(key="model_choice").set_value(helpers.IMAGE_MODEL).run()
    assert clean(at).radio(key="image_invert").value == "auto" and not at.warning


def test_a_model_folder_trained_again_while_the_app_runs_is_loaded_anew(weights, tmp_path, monkeypatch):
    """The cache was keyed by the folder's path: after `cadp.train --overwrite` the app kept privatizing with the old
    network (old classes) while its card and eval.json, read at each run, were the new model's."""
    import shutil
    import threading

    folder = shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / "retrained")
    before = ui.load_model(str(folder))
    assert ui.load_model(str(folder)) is before  # unchanged files: the cached model
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "class_names": [f"class {i}" for i in range(10)]}))
    after = ui.load_model(str(folder))
    assert after is not before and after.config.class_names[0] == "class 0"
    for thread in threading.enumerate():
        if thread.name == "cadp-warm-up":
            thread.join(timeout=TIMEOUT)
    ui.clear_loaded_models()


def test_the_large_epsilon_caption_says_its_figures_are_the_bundled_models_for_another_image_model(weights):
    """It said 'an image latent has hundreds of dimensions' and quoted the bundled models' ε 1,000–3,000 for any
    image model: a 64x64 colour model has 12,288 dimensions, and a 16x16 one leaves a latent whole from ε ≈ 839."""
    from dataclasses import replace

    from cadp.hub import load_folder

    loaded = load_folder(weights / helpers.IMAGE_MODEL)
    bundled = load_folder(hub.BUNDLED_DIR / "mnist-cinn")
    mnist = ui.epsilon_meaning(bundled.config, "laplace", 10, 0.7, None, image=True, label_kept=True,
                               folder=bundled.folder)
    assert "784 dimensions" in mnist and "may differ" not in mnist
    tiny = ui.epsilon_meaning(loaded.config, "laplace", 10, 0.7, None, image=True, label_kept=True,
                              folder=loaded.folder)  # a network trained on MNIST too, but not the bundled one
    assert tiny.startswith("This model's latent has 784 dimensions; the figures that follow were measured with the "
                           "bundled 28x28 models and may differ for it")
    colour = replace(loaded.config, dataset="my-photos", image_size=64, channels=3)
    for temperature in (0.7, 0.5):
        text = ui.epsilon_meaning(colour, "laplace", 10, temperature, None, image=True, label_kept=True)
        assert text.startswith("This model's latent has 12,288 dimensions; the figures that follow were measured "
                               "with the bundled 28x28 models and may differ for it")


def test_the_model_card_draws_the_samples_of_a_folder_trained_again(weights, tmp_path, monkeypatch, media):
    """The samples were cached by the folder's path: after training again, the card showed the old network's."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / "again")
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    at = page("model_card.py")
    at.sidebar.selectbox(key="model_choice").set_value("again").run()
    before = set(media.values())
    assert len(clean(at).get("image")) == 1
    tensors = load_file(folder / "model.safetensors")
    save_file({name: tensor * 1.5 if tensor.is_floating_point() else tensor for name, tensor in tensors.items()},
              folder / "model.safetensors")
    media.clear()
    at.run()
    assert len(clean(at).get("image")) == 1 and media and not set(media.values()) & before
    ui.clear_loaded_models()


def test_audit_results_belong_to_the_model_audited_and_can_be_cleared_while_shown(weights, tmp_path, monkeypatch):
    """Two models of one name (a fork, a folder trained again): the second showed the first's audit as its own;
    and the Clear button showed only when no result of this model was shown."""
    import shutil

    shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / helpers.IMAGE_MODEL)
    shutil.copytree(weights / helpers.IMAGE_MODEL, tmp_path / "same-name")  # config.json names it tiny-image too
    monkeypatch.setenv("CADP_WEIGHTS_DIR", str(tmp_path))
    at = page("audit.py")
    at.sidebar.selectbox(key="model_choice").set_value(helpers.IMAGE_MODEL).run()
    at.select_slider(key="audit_releases").set_value(200)
    at.multiselect(key="audit_epsilons").set_value([1])
    at.button[0].click().run()
    assert clean(at).dataframe and any(b.key == "audit_clear" for b in at.button)
    at.sidebar.selectbox(key="model_choice").set_value("same-name").run()
    assert not clean(at).dataframe  # not audited: the other folder's results are not its own
    at.sidebar.selectbox(key="model_choice").set_value(helpers.IMAGE_MODEL).run()
    assert clean(at).dataframe
    at.button(key="audit_clear").click().run()
    assert not clean(at).dataframe


def test_papers_strip_and_gallery_say_they_ran_on_the_first_image_alone():
    """paper's output depends on its batch: the extra releases ran on a batch of 1, the release on the batch."""
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([("a.png", helpers.png(), "image/png"),
                                                    ("b.png", helpers.png(seed=2), "image/png")]).run()
    at.selectbox(key="image_mechanism").set_value("paper").run()
    at.checkbox(key="image_strip").check().run()
    at.slider(key="image_gallery").set_value(2).run()
    at.button(key="image_privatize").click().run()
    texts = [m.value for m in clean(at).markdown if "charged to the ledger" in m.value]
    assert len(texts) == 2 and all("paper: each of the first image alone, a batch of 1" in text for text in texts)
    at.selectbox(key="image_mechanism").set_value("laplace").run()
    at.button(key="image_privatize").click().run()
    assert not any("alone" in m.value for m in clean(at).markdown)


def test_the_home_page_says_what_the_guarantee_does_not_cover_for_a_record_of_the_training_data():
    assert "for a record of that training data it does not cover what the model learned from the record" in \
        " ".join(ui.COMMON_PLAIN_WORDS.split())


@pytest.fixture
def download_names(monkeypatch) -> list[str]:
    """The file names the app gives its downloads, in the order they are handed to Streamlit."""
    names: list[str] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        if kind == MediaFileKind.DOWNLOADABLE:
            names.append(filename)
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return names


def test_a_download_that_is_not_private_says_so_in_its_name(download_names):
    """A fixed-seed table release was 'cadp-privatized.csv', named as a private one: a CSV holds no metadata, so
    once apart from its guarantee.txt nothing said so (the images' names said 'not-private'); the batch ZIP too."""
    at = page("tabular.py")
    at.button(key="table_privatize").click().run()
    assert download_names[-2:] == ["cadp-privatized-laplace-eps2.csv", "cadp-privatized-laplace-eps2-guarantee.txt"]
    at.checkbox(key="table_fixed_seed").check().run()
    at.button(key="table_privatize").click().run()
    clean(at)
    assert download_names[-2:] == ["cadp-privatized-not-private.csv", "cadp-privatized-not-private-guarantee.txt"]
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([(f"digit{i}.png", helpers.png(i), "image/png")
                                                    for i in range(2)]).run()
    at.checkbox(key="image_fixed_seed").check().run()
    at.button(key="image_privatize").click().run()
    clean(at)
    assert "cadp-privatized-not-private.zip" in download_names, download_names


def test_upload_names_are_left_out_of_the_downloads_unless_asked_for():
    """'Müller, Hans; DOB=1970.png' was released as '0000-Müller-Hans-DOB-1970-label-...png' by default (a kept
    label): a file name is a common place for a patient's name, and the guarantee does not cover it."""
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([("Müller, Hans; DOB=1970.png", helpers.png(1), "image/png"),
                                                    ("b.png", helpers.png(2), "image/png")]).run()
    at.button(key="image_privatize").click().run()
    names = [name for name, _ in clean(at).session_state["image_result"]["files"]]
    assert not any("Müller" in name or "b-label" in name for name in names), names
    assert any("your file names (which can identify a patient) and the upload's order are left out" in c.value
               for c in at.caption)
    at.checkbox(key="image_keep_names").check().run()
    at.button(key="image_privatize").click().run()
    names = [name for name, _ in clean(at).session_state["image_result"]["files"]]
    assert names[0].startswith("0000-Müller-Hans-DOB-1970-label-") and names[1].startswith("0001-b-label-"), names
    at.radio(key="image_label_handling").set_value("randomized").run()  # names carry the true label: never kept
    assert "image_keep_names" not in [box.key for box in at.checkbox]


def test_a_press_cut_short_before_its_release_is_kept_charges_nothing(monkeypatch):
    """Three quick presses showed one release and charged three: each run charged its records as it computed them,
    and a later press stopped it (Streamlit stops a run at its next element) before the page kept the release. The
    run is cut short here by a failure after every release is computed, where a second press would stop it."""
    def cut_short(*args, **kwargs):
        raise RuntimeError("cut short")

    at = page("image.py")
    at.file_uploader(key="image_upload").set_value([("a.png", helpers.png(1), "image/png")]).run()
    at.slider(key="image_gallery").set_value(2).run()
    monkeypatch.setattr(compare, "release_files", cut_short)
    at.button(key="image_privatize").click().run()
    assert errors(at) and not at.session_state["privacy_ledger"], ledger(at)
    at = page("tabular.py")
    monkeypatch.setattr(compare, "release_tag", cut_short)
    at.button(key="table_privatize").click().run()
    assert errors(at) and not at.session_state["privacy_ledger"], ledger(at)
