"""Load and isolation: one model shared by many threads, a long run of releases, sessions that never mix."""

from __future__ import annotations

import gc
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from cadp.data import load_table
from cadp.hub import load_folder
from cadp.mechanisms import DEFAULT_TEMPERATURE, make_mechanism
from cadp.privatize import privatize

try:
    from tests import app_helpers as helpers
    from tests.conftest import perturbed, weights_dir
except ImportError:  # pytest run without the repository root on sys.path
    import app_helpers as helpers
    from conftest import perturbed, weights_dir

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90
THREADS = 8


@pytest.fixture(scope="module")
def weights(tiny_weights):
    with weights_dir(tiny_weights):
        yield tiny_weights


@pytest.fixture(scope="module")
def shared(weights):
    """One loaded image model and one table model, as st.cache_resource hands them to every session."""
    image = load_folder(weights / helpers.IMAGE_MODEL)
    perturbed(image.model, seed=1)  # far from the identity, so that a mixed-up draw would show
    table = load_folder(weights / helpers.TABLE_MODEL)
    perturbed(table.model, seed=2)
    return image.model, table.model


# --------------------------------------------------------------------------- threads

def mechanism(name: str, epsilon: float):
    clipped = name in ("laplace", "gaussian")
    return make_mechanism(name, epsilon, delta=1e-5 if name == "gaussian" else None,
                          temperature=DEFAULT_TEMPERATURE if clipped else None)


def image_task(model, index: int):
    generator = torch.Generator().manual_seed(1000 + index)
    pixels = torch.randint(0, 256, (1 + index % 3, 1, 28, 28), generator=generator).float()
    labels = torch.randint(0, 10, (pixels.shape[0],), generator=generator)
    chosen = mechanism(["laplace", "gaussian", "metric", "paper"][index % 4], [1, 10, 100][index % 3])
    result = privatize(model, pixels, labels, chosen, seed=index)
    return result.privatized, result.noisy_latent


def table_task(model, frame, index: int):
    rows = frame.sample(n=5 + index % 7, random_state=index).reset_index(drop=True)
    result = privatize(model, rows, None, mechanism("laplace", [0.5, 2, 10][index % 3]), seed=index)
    return result.privatized, result.privatized_frame


def test_threads_sharing_one_model_give_the_serial_outputs(shared):
    image_model, table_model = shared
    frame = load_table("diabetes").frame
    tasks = [("image", i) for i in range(24)] + [("table", i) for i in range(16)]

    def run(task):
        kind, index = task
        return image_task(image_model, index) if kind == "image" else table_task(table_model, frame, index)

    serial = [run(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for _ in range(2):  # twice, in a different order of completion each time
            concurrent = list(pool.map(run, tasks))
            for task, (expected, expected_extra), (got, got_extra) in zip(tasks, serial, concurrent):
                assert torch.equal(expected, got), task
                if task[0] == "image":
                    assert torch.equal(expected_extra, got_extra), task
                else:
                    assert expected_extra.equals(got_extra), task
    # equal outputs are not the model ignoring its noise: another seed gives another release
    pixels = torch.full((1, 1, 28, 28), 100.0)
    label = torch.tensor([1])
    draws = [privatize(image_model, pixels, label, mechanism("laplace", 10), seed=s).privatized for s in (0, 1)]
    assert not torch.equal(*draws)

# --------------------------------------------------------------------------- soak

def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_thousand_releases_do_not_grow_memory(shared):
    model = shared[0]
    laplace = mechanism("laplace", 10)
    pixels = torch.randint(0, 256, (1, 1, 28, 28), generator=torch.Generator().manual_seed(0)).float()
    label = torch.tensor([3])

    def release(count: int) -> None:
        for _ in range(count):
            result = privatize(model, pixels, label, laplace)
            assert result.privatized.shape == pixels.shape and result.private

    release(100)  # warm-up: allocator pools, lazily built modules
    gc.collect()
    before = resident_bytes()
    release(1000)
    gc.collect()
    growth = resident_bytes() - before
    assert growth < 50 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MB over 1,000 releases"


# --------------------------------------------------------------------------- sessions

def page(name: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "views" / name), default_timeout=TIMEOUT).run()
    return clean(at)


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def ledger_names(at: AppTest) -> list[str]:
    return sorted(m.value.split("**")[1] for m in at.sidebar.markdown if m.value.startswith("**"))


def shown_names(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
                     + [m.value for m in at.sidebar.markdown])


def test_two_image_sessions_never_see_each_others_uploads_results_or_ledger(weights):
    alice, bob = page("image.py"), page("image.py")
    alice.file_uploader(key="image_upload").set_value(("alice-scan.png", helpers.png(11), "image/png")).run()
    alice.button(key="image_privatize").click().run()
    clean(alice)
    alice_result = alice.session_state["image_result"]
    bob.run()
    clean(bob)
    assert not bob.file_uploader(key="image_upload").value
    assert "image_result" not in bob.session_state and "privacy_ledger" not in bob.session_state or not \
        bob.session_state["privacy_ledger"]
    assert not bob.get("download_button") and "alice" not in shown_names(bob)
    bob.file_uploader(key="image_upload").set_value(("bob-scan.png", helpers.png(12), "image/png")).run()
    bob.button(key="image_privatize").click().run()
    clean(bob)
    alice.button(key="image_privatize").click().run()
    clean(alice)
    assert ledger_names(alice) == ["alice-scan.png"] and ledger_names(bob) == ["bob-scan.png"]
    assert any("— 2 releases:" in m.value for m in alice.sidebar.markdown)
    assert any("— 1 release:" in m.value for m in bob.sidebar.markdown)
    assert alice.session_state["image_result"]["names"] == ["alice-scan.png"]
    assert bob.session_state["image_result"]["names"] == ["bob-scan.png"]
    assert bob.session_state["image_result"]["made_of"] != alice_result["made_of"]
    assert "bob" not in shown_names(alice) and "alice" not in shown_names(bob)


def test_two_table_sessions_never_see_each_others_uploads_fits_or_ledger(weights):
    alice, bob = page("tabular.py"), page("tabular.py")
    helpers.upload_and_fit(alice, name="alice-patients.csv")
    alice.button(key="table_privatize").click().run()
    clean(alice)
    assert alice.get("download_button")
    bob.radio(key="table_source").set_value("Upload a CSV").run()
    clean(bob)
    assert not bob.file_uploader(key="table_upload").value
    assert any(i.value == "Upload a CSV to start." for i in bob.info)
    for key in ("table_fitted", "table_result", "privacy_ledger"):
        assert key not in bob.session_state or not bob.session_state[key], key
    assert not bob.get("download_button") and "alice" not in shown_names(bob)
    bob.radio(key="table_source").set_value(bob.radio(key="table_source").options[0]).run()
    bob.button(key="table_privatize").click().run()
    clean(bob)
    alice.run()
    clean(alice)
    assert ledger_names(alice) == ["each row of alice-patients.csv (60 rows)"]
    assert ledger_names(bob) == ["each row of diabetes (held-out rows) (88 rows)"]
    assert alice.session_state["table_result"]["made_of"] != bob.session_state["table_result"]["made_of"]
