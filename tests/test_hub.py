"""Loading models from folders and Hub repos (served by a local Hub-compatible server), and publishing them."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file

from cadp import hub
from cadp.errors import InputError, ModelError
from cadp.train import fit_tabular

try:
    from hub_server import HubServer, git_blob_sha
except ImportError:  # tests/ imported as a package
    from tests.hub_server import HubServer, git_blob_sha

REPO = "tester/table-cinn"
CARD = "# table-cinn\n\nA tiny test model.\n"


def small_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.normal(50, 10, 32), "bmi": rng.normal(25, 4, 32),
                         "smoker": rng.choice(["yes", "no"], 32), "outcome": rng.choice(["ill", "healthy"], 32)})


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> tuple[Path, Path]:
    """Two versions of one small tabular model, saved as model folders (v1 and v2 differ in weights)."""
    root = tmp_path_factory.mktemp("models")
    folders = []
    for version, seed in (("v1", 0), ("v2", 1)):
        model = fit_tabular(small_frame(0), ["outcome"], name="table-cinn", dataset="test", steps=5, seed=seed)
        folder = hub.save_model(model, root / version, card=CARD)
        hub.update_eval(folder, "training", {"steps": 5, "seed": seed})
        folders.append(folder)
    return folders[0], folders[1]


@pytest.fixture()
def served(model_folders):
    """A running Hub with REPO: commit v1 (tag "v1"), then commit v2 on main."""
    v1, v2 = model_folders
    with HubServer() as server:
        server.commits = {"v1": server.add_commit(REPO, v1, tags=["v1"]), "v2": server.add_commit(REPO, v2)}
        yield server


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache; HF_HOME points into tmp_path so nothing touches the user's cache."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hf-cache"


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / hub.WEIGHTS_NAME))


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


def refused_model_error(source: str, **kwargs) -> str:
    with pytest.raises(ModelError) as caught:
        hub.load_model(source, **kwargs)
    return str(caught.value)


# --------------------------------------------------------------------------- loading from the Hub

def test_repo_id_downloads_main_and_reports_the_commit(served, cache, model_folders):
    loaded = hub.load_model(REPO, cache_dir=cache, endpoint=served.url)

    commit = served.commits["v2"]
    assert loaded.commit == commit
    assert loaded.origin == f"Hub {REPO} at commit {commit[:12]}"
    assert_same_weights(loaded.model, weights(model_folders[1]))
    assert loaded.folder.is_relative_to(cache) and loaded.folder.name == commit
    assert loaded.card == CARD
    assert loaded.evaluation["training"]["seed"] == 1
    assert ("GET", f"/api/models/{REPO}/revision/main?blobs=true") in served.requests  # with the files' sizes


def test_pinned_revision_loads_that_commit(served, cache, model_folders):
    by_tag = hub.load_model(f"{REPO}@v1", cache_dir=cache, endpoint=served.url)
    by_hash = hub.load_model(REPO, revision=served.commits["v1"], cache_dir=cache, endpoint=served.url)

    assert by_tag.commit == by_hash.commit == served.commits["v1"]
    assert by_tag.origin == f"Hub {REPO}@v1 at commit {served.commits['v1'][:12]}"
    assert_same_weights(by_tag.model, weights(model_folders[0]))
    assert_same_weights(by_hash.model, weights(model_folders[0]))
    assert not torch.equal(weights(model_folders[0])["inn.module_list.0.subnet1.0.weight"],
                           weights(model_folders[1])["inn.module_list.0.subnet1.0.weight"])


def test_two_different_revisions_are_refused(served, cache):
    message = refused_model_error(f"{REPO}@v1", revision="main", cache_dir=cache, endpoint=served.url)
    assert "two revisions" in message and "'v1'" in message and "'main'" in message


def test_hf_endpoint_environment_variable_is_honoured(served, cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    loaded = hub.load_model(REPO, cache_dir=cache)
    assert loaded.commit == served.commits["v2"]
    assert served.requests, "the server named by HF_ENDPOINT was not asked"


def test_offline_loads_from_the_cache_without_requests(served, cache, monkeypatch, model_folders):
    hub.load_model(f"{REPO}@v1", cache_dir=cache, endpoint=served.url)
    served.requests.clear()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    loaded = hub.load_model(f"{REPO}@v1", cache_dir=cache, endpoint=served.url)

    assert served.requests == []
    assert loaded.commit == served.commits["v1"]
    assert loaded.origin == (f"Hub {REPO}@v1 at commit {served.commits['v1'][:12]} "
                             "(cached copy; Hub offline: HF_HUB_OFFLINE is set)")
    assert_same_weights(loaded.model, weights(model_folders[0]))
    assert loaded.card == CARD


def test_unreachable_hub_uses_the_cache(served, cache, model_folders):
    hub.load_model(REPO, cache_dir=cache, endpoint=served.url)
    served.stop()

    loaded = hub.load_model(REPO, cache_dir=cache, endpoint=served.url)

    assert loaded.commit == served.commits["v2"]
    assert "(cached copy; the Hub at " in loaded.origin and "cannot be reached (no network connection" in loaded.origin
    assert_same_weights(loaded.model, weights(model_folders[1]))


def test_hub_server_error_uses_the_cache(served, cache, model_folders):
    hub.load_model(REPO, cache_dir=cache, endpoint=served.url)
    served.failing_status = 503

    loaded = hub.load_model(REPO, cache_dir=cache, endpoint=served.url)

    assert loaded.origin == (f"Hub {REPO} at commit {served.commits['v2'][:12]} "
                             f"(cached copy; the Hub at {served.url} cannot serve it now (it answered HTTP 503: "
                             "try again later))")


# --------------------------------------------------------------------------- bundled fallback

@pytest.fixture()
def bundled(tmp_path, monkeypatch, model_folders) -> Path:
    """A fake weights/ with one bundled model, known as Hub repo cadp/table-cinn pinned to tag v1."""
    weights_dir = tmp_path / "weights"
    hub.save_model(hub.load_folder(model_folders[0]).model, weights_dir / "table-cinn", card=CARD)
    monkeypatch.setattr(hub, "BUNDLED_DIR", weights_dir)
    monkeypatch.setattr(hub, "BUNDLED_REPOS", {"cadp/table-cinn": "table-cinn"})
    monkeypatch.setattr(hub, "BUNDLED_REVISIONS", {"cadp/table-cinn": "v1"})
    return weights_dir / "table-cinn"


def test_hub_down_falls_back_to_the_bundled_copy(served, cache, bundled, model_folders):
    served.stop()

    loaded = hub.load_model("cadp/table-cinn", cache_dir=cache, endpoint=served.url)

    assert loaded.origin.startswith("bundled fallback weights/table-cinn (the Hub at ")
    assert served.url in loaded.origin
    assert loaded.folder == bundled and loaded.commit is None
    assert_same_weights(loaded.model, weights(model_folders[0]))


def test_offline_falls_back_to_the_bundled_copy(cache, bundled, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = hub.load_model("cadp/table-cinn", cache_dir=cache, endpoint="http://127.0.0.1:9")
    assert loaded.origin == ("bundled fallback weights/table-cinn (Hub offline: HF_HUB_OFFLINE is set, "
                             "and the Hugging Face cache has no copy of cadp/table-cinn@v1)")


def test_bundled_repo_loads_its_pinned_revision_from_the_hub(served, cache, bundled, model_folders):
    served.add_commit("cadp/table-cinn", model_folders[0], tags=["v1"])
    served.add_commit("cadp/table-cinn", model_folders[1])

    loaded = hub.load_model("cadp/table-cinn", cache_dir=cache, endpoint=served.url)

    assert loaded.origin.startswith("Hub cadp/table-cinn@v1 at commit ")
    assert_same_weights(loaded.model, weights(model_folders[0]))


def test_no_fallback_for_another_revision_of_a_bundled_repo(served, cache, bundled):
    served.stop()
    message = refused_model_error("cadp/table-cinn@v2", cache_dir=cache, endpoint=served.url)
    assert message.startswith("cannot load Hub repo cadp/table-cinn@v2: the Hub at ")
    assert "cannot be reached (no network connection, or the server is down; details: " in message


def test_bundled_name_loads_the_bundled_folder(bundled):
    loaded = hub.load_model("table-cinn")
    assert loaded.origin == "bundled weights/table-cinn" and loaded.folder == bundled


# --------------------------------------------------------------------------- errors

def test_unknown_repo_is_named(served, cache):
    message = refused_model_error("tester/no-such-model", cache_dir=cache, endpoint=served.url)
    assert message.startswith(f"Hub repo tester/no-such-model not found at {served.url}")


def test_unknown_revision_is_named(served, cache):
    message = refused_model_error(f"{REPO}@v9", cache_dir=cache, endpoint=served.url)
    assert message == f"revision 'v9' not found in Hub repo {REPO} ({served.url})"


def test_offline_without_cache_names_repo_and_reason(served, cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = refused_model_error(REPO, cache_dir=cache, endpoint=served.url)
    assert message == (f"cannot load Hub repo {REPO}@main: Hub offline: HF_HUB_OFFLINE is set, "
                       f"and the Hugging Face cache has no copy of {REPO}@main")
    assert served.requests == []


def test_unreachable_hub_without_cache_names_repo_and_reason(served, cache):
    served.stop()
    message = refused_model_error(REPO, cache_dir=cache, endpoint=served.url)
    assert message.startswith(f"cannot load Hub repo {REPO}@main: the Hub at {served.url} cannot be reached")
    assert "no copy" in message


@pytest.mark.parametrize(("source", "rule"), [
    ("tester/table cinn", "must not contain spaces"),
    ("tester/../table-cinn", "must not contain '..'"),
    ("tester/table..cinn", "must not contain '..'"),
    ("https://huggingface.co/tester/table-cinn", "not a URL"),
    ("huggingface.co/tester/table-cinn", "not a URL"),
    ("tester/table-cinn/extra", "owner/name"),
    ("tester/-table", "start and end with a letter or digit"),
    ("tester/table$cinn", "only letters, digits"),
    ("tester/" + "x" * 100, "at most 96 characters"),
    ("tester/table-cinn.git", "must not end with '.git'"),
    ("tester/table-cinn@bad rev", "not a valid revision"),
    ("tester/table-cinn@../main", "not a valid revision"),
])
def test_invalid_repo_ids_are_refused_before_any_request(source, rule, served, cache):
    message = refused_model_error(source, cache_dir=cache, endpoint=served.url)
    assert rule in message
    assert repr(source.partition("@")[0]) in message or repr(source.partition("@")[2]) in message
    assert served.requests == []


def test_saving_over_a_model_is_refused_unasked_and_leaves_nothing_of_the_old_one(tmp_path, model_folders):
    from cadp.errors import InputError
    from cadp.models import SmallCNN

    old, new = hub.load_folder(model_folders[0]), hub.load_folder(model_folders[1])
    folder = hub.save_model(old.model, tmp_path / "m", card=CARD, classifier=SmallCNN(2))
    hub.update_eval(folder, "utility", {"note": "measured on the old weights"})
    (folder / "report.html").write_text("<html>old curves</html>")
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "training.safetensors").write_bytes(b"a run's state")
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    with pytest.raises(InputError, match=f"{folder} already holds a model: .* overwrite=True"):
        hub.save_model(new.model, folder)
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()} == before

    hub.save_model(new.model, folder, overwrite=True)
    # nothing that described the old weights is left to be read as the new model's
    assert sorted(path.name for path in folder.iterdir() if path.is_file()) == \
        ["config.json", "eval.json", "model.safetensors"]
    assert hub.read_eval(folder) == {}
    assert (folder / "checkpoint" / "training.safetensors").read_bytes() == b"a run's state"
    assert_same_weights(hub.load_folder(folder).model, weights(model_folders[1]))
    # a new card and classifier given with overwrite=True are the ones kept
    hub.save_model(old.model, folder, card="# new card\n", classifier=SmallCNN(2), overwrite=True)
    assert hub.load_folder(folder).card == "# new card\n" and (folder / "classifier.safetensors").exists()


def test_missing_local_folder_is_named(tmp_path):
    message = refused_model_error(str(tmp_path / "nothing-here"))
    assert message == f"model folder {tmp_path / 'nothing-here'} does not exist"


def test_pickle_weights_are_never_downloaded_or_loaded(served, cache, model_folders):
    buffer = io.BytesIO()
    torch.save(hub.load_folder(model_folders[0]).model.state_dict(), buffer)
    files = {"config.json": (model_folders[0] / "config.json").read_bytes(), "pytorch_model.bin": buffer.getvalue()}
    served.add_commit("tester/pickled", files)

    message = refused_model_error("tester/pickled", cache_dir=cache, endpoint=served.url)

    assert message.startswith("Hub repo tester/pickled@main has no model.safetensors "
                              "(it has pytorch_model.bin: pickle files are never loaded)")
    assert not any("pytorch_model.bin" in path for _, path in served.requests)


def tampered(folder: Path, change) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    config = json.loads(files["config.json"])
    change(config)
    files["config.json"] = json.dumps(config).encode()
    return files


def test_config_with_unknown_field_is_refused(served, cache, model_folders):
    served.add_commit("tester/tampered", tampered(model_folders[0], lambda c: c.update(run_code="import os")))
    message = refused_model_error("tester/tampered", cache_dir=cache, endpoint=served.url)
    assert message == "invalid model config: unknown field(s) ['run_code']"


def test_config_that_does_not_match_the_weights_is_refused(served, cache, model_folders):
    width = json.loads((model_folders[0] / "config.json").read_text())["width"]
    served.add_commit("tester/tampered", tampered(model_folders[0], lambda c: c.update(width=width * 2)))
    message = refused_model_error("tester/tampered", cache_dir=cache, endpoint=served.url)
    assert message == (f"model.safetensors: tensor inn.module_list.0.subnet1.0.bias has shape ({width},), "
                       f"config.json implies ({width * 2},)")


def test_invalid_config_value_is_refused(served, cache, model_folders):
    served.add_commit("tester/tampered", tampered(model_folders[0], lambda c: c.update(blocks=0)))
    message = refused_model_error("tester/tampered", cache_dir=cache, endpoint=served.url)
    assert message == "invalid model config: blocks must be a whole number in 1..64"


def test_a_config_asking_for_a_huge_network_is_refused_before_anything_is_allocated(tmp_path, model_folders,
                                                                                    monkeypatch):
    folder = tmp_path / "huge"
    folder.mkdir()
    for name, content in tampered(model_folders[0], lambda c: c.update(width=4096, blocks=64)).items():
        (folder / name).write_bytes(content)
    build_model = hub.build_model

    def on_meta_only(config):
        assert torch.get_default_device().type == "meta", "built for real"
        return build_model(config)

    monkeypatch.setattr(hub, "build_model", on_meta_only)
    with pytest.raises(ModelError, match=r"config.json asks for a network of [\d,]+ parameters; this app loads at "
                                         r"most 100,000,000"):
        hub.load_folder(folder)


def test_weights_far_larger_than_the_config_implies_are_not_read(tmp_path, model_folders, monkeypatch):
    folder = tmp_path / "padded"
    shutil.copytree(model_folders[0], folder)
    monkeypatch.setattr(hub, "MAX_FILE_BYTES", 1000)
    with open(folder / hub.WEIGHTS_NAME, "ab") as weights:
        weights.write(b"\0" * 2000)
    monkeypatch.setattr(hub, "load_file", lambda path: pytest.fail("read"))
    with pytest.raises(ModelError, match="far more than the .* its config.json implies: not loaded"):
        hub.load_folder(folder)


def test_a_hub_file_larger_than_the_limit_is_never_downloaded(served, cache, monkeypatch):
    monkeypatch.setattr(hub, "MAX_PARAMETERS", 10)  # the test model's weights are far larger than 4 x 10 bytes
    monkeypatch.setattr(hub, "MAX_FILE_BYTES", 10_000)
    with pytest.raises(ModelError, match=f"Hub repo {REPO}@main: model.safetensors has [\\d,]+ bytes, more than "
                                         "the 10,040 this app downloads for a model file"):
        hub.load_model(REPO, cache_dir=cache, endpoint=served.url)
    assert not [path for _, path in served.requests if "/resolve/" in path]


def test_a_hub_file_over_the_limit_is_refused_before_it_is_read_when_the_listing_has_no_sizes(served, cache,
                                                                                               monkeypatch):
    served.omit_sizes = True
    monkeypatch.setattr(hub, "MAX_FILE_BYTES", 1000)  # config.json is larger
    monkeypatch.setattr(hub, "read_config", lambda folder: pytest.fail("config.json was read"))
    with pytest.raises(ModelError, match=f"Hub repo {REPO}@main: config.json has [\\d,]+ bytes, more than the "
                                         "1,000 this app reads for a model file"):
        hub.load_model(REPO, cache_dir=cache, endpoint=served.url)


# --------------------------------------------------------------------------- folders, push, CLI

def test_local_folder_loads_with_folder_origin(model_folders):
    loaded = hub.load_model(str(model_folders[0]))
    assert loaded.origin == f"folder {model_folders[0]}" and loaded.commit is None
    assert_same_weights(loaded.model, weights(model_folders[0]))
    with pytest.raises(ModelError, match="a revision applies only to Hub repos"):
        hub.load_model(str(model_folders[0]), revision="v1")


@pytest.fixture()
def folder_with_extras(tmp_path, model_folders) -> Path:
    folder = tmp_path / "to-push"
    hub.save_model(hub.load_folder(model_folders[0]).model, folder, card=CARD)
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "state.safetensors").write_bytes(b"training state")
    (folder / "old.pt").write_bytes(b"pickle")
    (folder / ".DS_Store").write_bytes(b"")
    return folder


def test_push_dry_run_lists_files_and_sends_nothing(folder_with_extras, served):
    result = hub.push_model(folder_with_extras, "tester/new-model", dry_run=True, endpoint=served.url, private=True)

    assert result.dry_run and result.commit is None
    assert result.files == ["README.md", "config.json", "eval.json", "model.safetensors"]
    assert result.skipped == [".DS_Store", "checkpoint/state.safetensors", "old.pt"]
    assert served.requests == []


def test_push_refuses_a_broken_folder_or_bad_id(tmp_path, folder_with_extras):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        hub.push_model(tmp_path / "empty", "tester/new-model", dry_run=True)
    with pytest.raises(ModelError, match="not a URL"):
        hub.push_model(folder_with_extras, "https://huggingface.co/tester/x", dry_run=True)


def test_cli_push_dry_run_and_load(folder_with_extras, served, cache, capsys):
    assert hub.main(["push", str(folder_with_extras), "tester/new-model", "--dry-run", "--private"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:5] == ["would upload to tester/new-model:", "  README.md", "  config.json",
                                    "  eval.json", "  model.safetensors"]
    assert "checkpoint/state.safetensors" in out.splitlines()[5]

    assert hub.main(["load", REPO, "--endpoint", served.url, "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"origin: Hub {REPO} at commit {served.commits['v2'][:12]}"
    assert "model: table-cinn (tabular cINN, dataset test)" in out
    assert "condition columns: outcome" in out
    assert hub.main(["load", REPO, "--revision", "v1", "--endpoint", served.url, "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"origin: Hub {REPO}@v1 at commit {served.commits['v1'][:12]}"
    assert hub.main(["push", str(folder_with_extras), "tester/new-model", "--dry-run", "--tag", "v3",
                     "--publish-own-data"]) == 0
    pushed = capsys.readouterr()
    assert "would tag the new commit v3" in pushed.out
    assert "was trained without DP on test, not on a public dataset" in pushed.err  # said before anything is sent
    requests = len(served.requests)
    assert hub.main(["push", str(folder_with_extras), "tester/new-model", "--endpoint", served.url]) == 2
    assert "error: not pushed: " in (err := capsys.readouterr().err) and "--publish-own-data" in err
    assert len(served.requests) == requests
    # a dry run predicts the real run: the same refusal, the same exit code, no list of files
    assert hub.main(["push", str(folder_with_extras), "tester/new-model", "--dry-run"]) == 2
    refused = capsys.readouterr()
    assert "error: not pushed: " in refused.err and "would upload" not in refused.out

    assert hub.main(["load", "tester/bad id"]) == 2
    assert "must not contain spaces" in capsys.readouterr().err


@pytest.fixture()
def lfs_uploads(monkeypatch):
    """Publish through the LFS protocol the test server speaks (huggingface_hub otherwise uses Xet)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)


def test_push_publishes_the_listed_files_tags_them_and_they_load_back(folder_with_extras, served, cache,
                                                                      lfs_uploads):
    result = hub.push_model(folder_with_extras, "tester/new-model", endpoint=served.url, tag="v3", token="hf_test",
                            private=True)  # a model of data that is not public (dataset "test")
    assert "tester/new-model" in served.private

    stored = served.repos["tester/new-model"]
    assert stored.refs["v3"] == stored.refs["main"] == result.commit
    files = stored.commits[result.commit]
    assert sorted(files) == [".gitattributes", *result.files]  # no checkpoint, pickle or hidden file
    for name in result.files:
        assert files[name] == (folder_with_extras / name).read_bytes(), name
    assert hashlib.sha256(files["model.safetensors"]).hexdigest() in served.lfs_objects  # binary: through LFS
    loaded = hub.load_model("tester/new-model@v3", cache_dir=cache, endpoint=served.url)
    assert_same_weights(loaded.model, weights(folder_with_extras))


def test_a_push_whose_tag_exists_is_refused_before_anything_is_uploaded(folder_with_extras, served, lfs_uploads,
                                                                        capsys):
    """The folder was committed to main, then the tag was refused (409): main held the new files, the tag the old
    commit, and the error said only "409 Conflict"."""
    first = hub.push_model(folder_with_extras, "tester/new-model", endpoint=served.url, tag="v1", token="hf_test",
                           private=True)
    stored = served.repos["tester/new-model"]
    before = dict(stored.refs)
    with pytest.raises(InputError, match=r"not pushed: 'v1' already names a revision of tester/new-model \(commit "
                                         f"{first.commit[:12]}\\); a tag is not moved.*nothing was uploaded"):
        hub.push_model(folder_with_extras, "tester/new-model", endpoint=served.url, tag="v1", token="hf_test",
                       private=True)
    assert stored.refs == before and stored.refs["main"] == first.commit
    pushed = hub.push_model(folder_with_extras, "tester/new-model", endpoint=served.url, tag="v2", token="hf_test",
                            private=True)  # a new tag: pushed and tagged
    assert stored.refs["v2"] == stored.refs["main"] == pushed.commit


def test_push_without_a_token_is_refused_by_the_hub_and_says_so(folder_with_extras, served, cache, lfs_uploads):
    with pytest.raises(ModelError, match="could not push .* to Hub repo tester/new-model: .*401"):
        hub.push_model(folder_with_extras, "tester/new-model", endpoint=served.url, private=True)
    assert "tester/new-model" not in served.repos


def test_a_failed_file_upload_is_one_error_line_and_commits_nothing(folder_with_extras, served, lfs_uploads):
    served.refuse_lfs_uploads = True  # an upload URL that expired
    with pytest.raises(ModelError) as raised:
        hub.push_model(folder_with_extras, "tester/new-model", endpoint=served.url, token="hf_test",
                       publish_own_data=True)
    assert str(raised.value).startswith(f"could not push {folder_with_extras} to Hub repo tester/new-model: Error "
                                        "while uploading 'model.safetensors' to the Hub. (HfHubHTTPError: ")
    assert "403" in str(raised.value)
    assert list(served.repos["tester/new-model"].commits.values())[-1].keys() == {".gitattributes"}


def test_the_library_refuses_to_publish_a_model_of_own_data_as_the_cli_does(folder_with_extras, served,
                                                                          lfs_uploads):
    """push_model itself (not only the CLI) keeps a model of data that is not public out of public repos:
    refused without private (also in a dry run, before any request), and refused into an existing public
    repo even with private (which only applies to a repo created now); publish_own_data publishes it."""
    requests = len(served.requests)
    for dry_run in (True, False):
        with pytest.raises(InputError, match="not pushed: .* not on a public dataset"):
            hub.push_model(folder_with_extras, "tester/own", endpoint=served.url, token="hf_test", dry_run=dry_run)
    assert len(served.requests) == requests and "tester/own" not in served.repos
    served.add_commit("tester/public-one", {"README.md": b"hello"})
    with pytest.raises(InputError, match="tester/public-one exists and is public"):
        hub.push_model(folder_with_extras, "tester/public-one", endpoint=served.url, token="hf_test", private=True)
    assert list(served.repos["tester/public-one"].commits.values())[-1].keys() == {"README.md"}
    result = hub.push_model(folder_with_extras, "tester/own", endpoint=served.url, token="hf_test",
                            publish_own_data=True)
    assert "tester/own" not in served.private and result.commit in served.repos["tester/own"].commits


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": os.environ["PATH"], "HOME": str(root)}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture()
def app_checkout(tmp_path, model_folders) -> Path:
    """A git checkout shaped like this app: README, Dockerfile, app.py, one model, and an untracked CSV."""
    root = tmp_path / "app"
    root.mkdir()
    (root / "README.md").write_text("---\nsdk: docker\napp_port: 8501\n---\n# app\n")
    (root / "Dockerfile").write_text("FROM python:3.11-slim\n")
    (root / "app.py").write_text("print('app')\n")
    hub.save_model(hub.load_folder(model_folders[0]).model, root / "weights" / "table-cinn", card=CARD)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "app")
    (root / "patients.csv").write_text("name,diagnosis\nAda,flu\n")  # untracked: never uploaded
    return root


def test_space_deploy_uploads_the_committed_files_as_a_docker_space(app_checkout, served, cache, lfs_uploads):
    committed = ["Dockerfile", "README.md", "app.py", "weights/table-cinn/README.md", "weights/table-cinn/config.json",
                 "weights/table-cinn/eval.json", "weights/table-cinn/model.safetensors"]
    dry = hub.push_space("tester/app", root=app_checkout, dry_run=True, endpoint=served.url)
    assert dry.files == committed and served.requests == []

    result = hub.push_space("tester/app", root=app_checkout, endpoint=served.url, token="hf_test")
    space = served.spaces["tester/app"]
    assert served.space_sdks["tester/app"] == "docker" and "tester/app" not in served.repos
    files = space.commits[result.commit]
    assert sorted(files) == [".gitattributes", *committed]  # the new README replaced the Space's first one
    for name in committed:
        assert files[name] == (app_checkout / name).read_bytes(), name
    assert result.url.endswith(f"/spaces/tester/app/commit/{result.commit}")

    git(app_checkout, "rm", "-q", "app.py")  # a file the next commit drops leaves the Space too
    (app_checkout / "main.py").write_text("print('main')\n")
    git(app_checkout, "add", "main.py")
    git(app_checkout, "commit", "-q", "-m", "rename")
    again = hub.push_space("tester/app", root=app_checkout, endpoint=served.url, token="hf_test")
    files = space.commits[again.commit]
    assert "app.py" not in files and files["main.py"] == b"print('main')\n"
    assert sorted(files) == sorted([".gitattributes", "main.py", *committed[:2], *committed[3:]])


def test_space_deploy_refuses_uncommitted_changes_a_broken_model_and_a_non_checkout(app_checkout, served, tmp_path):
    (app_checkout / "app.py").write_text("print('changed')\n")
    with pytest.raises(ModelError, match=r"1 tracked file has uncommitted changes \(app.py\): commit or stash it"):
        hub.push_space("tester/app", root=app_checkout, endpoint=served.url, token="hf_test")
    git(app_checkout, "checkout", "--", "app.py")
    (app_checkout / "weights" / "table-cinn" / "config.json").write_text("{}")
    git(app_checkout, "commit", "-q", "-am", "broken model")
    with pytest.raises(ModelError, match="config"):
        hub.push_space("tester/app", root=app_checkout, endpoint=served.url, token="hf_test")
    with pytest.raises(ModelError, match="is not a git checkout of this app"):
        hub.push_space("tester/app", root=tmp_path / "elsewhere", dry_run=True)
    assert served.requests == []


@pytest.mark.parametrize("add", ["link", "glob"])
def test_space_deploy_refuses_a_tracked_link_or_a_name_that_is_a_pattern(app_checkout, tmp_path, add):
    """upload_folder reads the working tree by pattern: a link would upload its target, sample[1].csv an
    untracked sample1.csv."""
    if add == "link":
        (tmp_path / "outside.txt").write_text("not part of the app\n")
        (app_checkout / "notes.txt").symlink_to(tmp_path / "outside.txt")
        git(app_checkout, "add", "notes.txt")
    else:
        (app_checkout / "sample[1].csv").write_text("a\n1\n")
        git(app_checkout, "add", "sample[1].csv")
    git(app_checkout, "commit", "-q", "-m", add)
    with pytest.raises(ModelError, match=r"tracked path \[.*\] is a link, a submodule or holds \* \? \[ \]"):
        hub.push_space("tester/app", root=app_checkout, dry_run=True)


def test_cli_space_dry_run_lists_the_files(app_checkout, monkeypatch, capsys):
    monkeypatch.setattr(hub, "REPO_ROOT", app_checkout)
    assert hub.main(["space", "tester/app", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "would upload 7 files to the Space tester/app:"
    assert "  weights/table-cinn/model.safetensors" in out and "  patients.csv" not in out


# --------------------------------------------------------------------------- the test server itself

def test_server_speaks_the_snapshot_download_protocol(served, cache, model_folders):
    snapshot = Path(snapshot_download(REPO, revision="v1", cache_dir=cache, endpoint=served.url))
    assert snapshot.name == served.commits["v1"]
    expected = sorted(p.name for p in model_folders[0].iterdir())
    assert sorted(p.name for p in snapshot.iterdir()) == expected
    for name in expected:
        assert git_blob_sha((snapshot / name).read_bytes()) == git_blob_sha((model_folders[0] / name).read_bytes())


def test_eval_json_is_strict_json_even_with_missing_numbers(tmp_path):
    import math

    from cadp.hub import read_eval, update_eval

    update_eval(tmp_path, "training", {"epochs": math.nan, "loss": [1.0, math.inf], "steps": 3})
    text = (tmp_path / "eval.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert read_eval(tmp_path)["training"] == {"epochs": None, "loss": [1.0, None], "steps": 3}


@pytest.mark.parametrize("name", ["mnist-cinn", "fashion-mnist-cinn", "diabetes-cinn", "heart-cinn"])
def test_bundled_json_files_are_strict_json(name):
    for file in ("config.json", "eval.json"):
        text = (Path(__file__).parent.parent / "weights" / name / file).read_text()
        constants = []
        json.loads(text, parse_constant=constants.append)
        assert constants == [], f"{name}/{file} holds {constants}"


def test_a_file_given_as_the_model_folder_is_named_as_such(tmp_path):
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ModelError, match="rows.csv is a file; a model is a folder holding config.json"):
        hub.load_folder(tmp_path / "rows.csv")


def test_a_mistyped_local_folder_is_named_as_such(monkeypatch, tmp_path):
    from cadp.errors import ModelError
    from cadp.hub import BUNDLED_DIR, load_model

    monkeypatch.chdir(BUNDLED_DIR.parent)
    with pytest.raises(ModelError, match="there is no local folder weights/no-such-model here"):
        load_model("weights/no-such-model", endpoint="http://127.0.0.1:9")  # nothing listens there
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="there is no local folder models/no-such-model either"):
        load_model("models/no-such-model", endpoint="http://127.0.0.1:9")


def test_a_bundled_folders_path_typed_elsewhere_is_never_asked_of_the_hub(served, cache, tmp_path, monkeypatch):
    """From another folder, "weights/mnist-cinn" (the README's path) was asked of the Hub as the repo of an owner
    named "weights": whoever holds that account would have had their model loaded in its place."""
    from cadp.errors import ModelError

    served.add_commit("weights/heart-cinn", hub.BUNDLED_DIR / "heart-cinn")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="not looked for on the Hub as a repo of an owner named 'weights'"):
        hub.load_model("weights/heart-cinn", cache_dir=cache, endpoint=served.url)
    assert not list(Path(cache).rglob("*.safetensors"))
    assert hub.load_hub_model("weights/heart-cinn", cache_dir=cache, endpoint=served.url).repo_id == \
        "weights/heart-cinn"  # asked for as a Hub repo by name, it is one


def test_a_hub_models_claim_of_public_training_data_is_said_as_its_publishers_word(served, cache, tmp_path):
    """A publisher's config.json saying dataset "diabetes" made every guarantee say "trained on public data", and
    its latent distances were quoted as measured: the app cannot check either."""
    from cadp.mechanisms import PUBLIC_MODEL_TERMS, ConditionHandling, make_mechanism
    from cadp.privatize import privatize

    model = fit_tabular(small_frame(0), ["outcome"], name="claims-public", dataset="diabetes", steps=5)
    served.add_commit("tester/claims-public", hub.save_model(model, tmp_path / "claims-public", card=CARD))
    loaded = hub.load_model("tester/claims-public", cache_dir=cache, endpoint=served.url)
    from cadp.privatize import public_training_data

    assert not public_training_data(loaded.model)  # (the table page offers no "held-out rows" of diabetes for it)
    rows = small_frame(1).head(3)
    laplace = privatize(loaded.model, rows, None, make_mechanism("laplace", 1.0),
                        condition_handling={"outcome": ConditionHandling("resampled")}).guarantee
    assert PUBLIC_MODEL_TERMS not in laplace
    assert ("The model's publisher states that it was trained without DP on public data (diabetes); this app "
            "cannot check that.") in laplace
    assert "outcome resampled from a uniform prior" in laplace  # not the publisher's "public frequencies"
    # the reason given is the publisher's unchecked word, not "the model's own training data" (which contradicted it)
    assert ("outcome resampled from a uniform prior (its frequencies in the diabetes data that the publisher of the "
            "Hub repo tester/claims-public states the model was trained on are not checked by this app)") in laplace
    assert "model's own training data" not in laplace
    metric = privatize(loaded.model, rows, None, make_mechanism("metric", 1.0)).guarantee
    assert "according to the publisher of the Hub repo tester/claims-public (not checked by this app)." in metric
    local = privatize(hub.load_model(str(tmp_path / "claims-public")).model, rows, None,
                      make_mechanism("laplace", 1.0)).guarantee
    # a folder outside weights/ (here a copy of the repo's files) says it in its config.json only: whose word it is
    from cadp.mechanisms import stated_public_terms

    assert PUBLIC_MODEL_TERMS not in local and stated_public_terms("diabetes", "config") in local
    from cadp.data import load_table

    bundled = privatize(hub.load_model("diabetes-cinn").model, load_table("diabetes").frame.head(3), None,
                        make_mechanism("laplace", 1.0)).guarantee
    assert PUBLIC_MODEL_TERMS in bundled  # a model bundled with CADP: its training data is known


@pytest.mark.parametrize("content, refused", [
    ('{"utility": {"epsilons": [NaN]}}', "NaN is not a JSON number"),
    ("[1, 2, 3]", "it must hold a JSON object"),
    ("[" * 100_000 + "]" * 100_000, "is nested too deeply to be a model's evaluation"),
    ('{"bpd": ' + "9" * 5000 + "}", "holds a whole number of 5,000 digits; a model's evaluation's numbers have at most"),
])
def test_an_eval_json_that_is_not_an_object_of_numbers_is_refused_with_its_reason(tmp_path, content, refused):
    """From a Hub repo: NaN drew as a number, a list or a deep nesting broke the pages with a generic error."""
    (tmp_path / hub.EVAL_NAME).write_text(content)
    with pytest.raises(ModelError, match=refused):
        hub.read_eval(tmp_path)


def test_loading_a_model_leaves_the_callers_random_state_as_it_was():
    """The network is built with random weights before the saved ones replace them: from torch's global RNG,
    which a caller's seeded experiment relies on."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    hub.load_folder(hub.REPO_ROOT / "weights" / "mnist-cinn")  # a network and its classifier
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- the app's Hub cache

def test_pruning_a_hub_cache_deletes_the_least_recently_used_revisions_not_in_use(served, cache):
    older = hub.load_hub_model(f"{REPO}@v1", cache_dir=cache, endpoint=served.url)
    newer = hub.load_hub_model(REPO, cache_dir=cache, endpoint=served.url)
    assert older.folder != newer.folder
    assert hub.prune_hub_cache(cache, 10**12, set()) == []  # within the budget: nothing goes
    assert hub.prune_hub_cache(cache, 0, {older.folder}) == [f"{REPO}@{served.commits['v2'][:12]}"]
    assert (older.folder / hub.CONFIG_NAME).exists() and not newer.folder.exists()  # in use: kept over budget
    assert hub.prune_hub_cache(cache, 0, {older.folder}) == []
    assert hub.prune_hub_cache(cache / "none", 0, set()) == [] and not (cache / "none").exists()


def test_the_app_downloads_hub_models_into_a_cache_of_its_own_and_prunes_it(served, cache, tmp_path, monkeypatch):
    """Every owner/name@revision a Space's visitor typed stayed on its disk: the app's own cache is pruned to a
    budget after each download, keeping the models its memory cache may still hold; the Hugging Face cache of
    other programs is never touched."""
    from cadp import ui

    monkeypatch.setenv("HF_ENDPOINT", served.url)
    monkeypatch.setenv(ui.APP_HUB_CACHE_ENV, str(tmp_path / "app-hub"))
    monkeypatch.setattr(ui, "APP_HUB_CACHE_BYTES", 0)
    monkeypatch.setattr(ui, "HUB_FOLDERS_IN_USE", collections.OrderedDict())
    ui.clear_loaded_models()
    try:
        first = ui.load_model(f"{REPO}@v1", hub_only=True)
        assert first.folder.is_relative_to(tmp_path / "app-hub")
        second = ui.load_model(REPO, hub_only=True)
        assert first.folder.exists() and second.folder.exists()  # both in use: over the budget, kept
        assert list(ui.HUB_FOLDERS_IN_USE) == [first.folder, second.folder]
        ui.HUB_FOLDERS_IN_USE.pop(first.folder)  # as if it had left the memory cache long ago
        ui.clear_loaded_models()
        ui.load_model(REPO, hub_only=True)  # a download (the memory cache was cleared): the cache is pruned
        assert not first.folder.exists() and second.folder.exists()
        assert not (tmp_path / "hf-home" / "hub").exists()  # the user's Hugging Face cache: untouched
        # a repo that is no CADP model is refused after its files were downloaded: pruned all the same
        weights_file = second.folder / hub.WEIGHTS_NAME
        served.add_commit("visitor/not-cadp", {"config.json": b'{"model_type": "bert"}',
                                               "model.safetensors": weights_file.read_bytes()})
        with pytest.raises(ModelError):
            ui.load_model("visitor/not-cadp", hub_only=True)
        assert not list((tmp_path / "app-hub").glob("models--visitor--not-cadp/snapshots/*/*"))
        assert second.folder.exists()  # in use
    finally:
        ui.clear_loaded_models()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_saved_weights_get_the_permissions_of_the_folders_other_files(tiny_image_model, tmp_path, umask):
    """safetensors writes its files owner-only (0600): an app running as another user (the Docker image's, on a
    mounted folder) could read config.json and the card but not the weights."""
    import stat

    from cadp.models import SmallCNN

    previous = os.umask(umask)
    try:
        folder = hub.save_model(tiny_image_model, tmp_path / "m", card="# card\n", classifier=SmallCNN(10))
        (tmp_path / "plain.txt").write_text("written as any file is")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert modes == dict.fromkeys(["config.json", "model.safetensors", "classifier.safetensors", "README.md",
                                   "eval.json"], expected)


@pytest.mark.parametrize("status", [429, 408])
def test_a_hub_that_rate_limits_is_a_hub_that_cannot_serve_now_the_cache_is_used(served, cache, status):
    """429 and 408 were a refusal: a complete cached copy (and a bundled model's fallback) became a hard failure."""
    hub.load_model(REPO, cache_dir=cache, endpoint=served.url)
    served.failing_status = status
    loaded = hub.load_model(REPO, cache_dir=cache, endpoint=served.url)
    assert f"(cached copy; the Hub at {served.url} cannot serve it now (it answered HTTP {status}" in loaded.origin


def test_the_apps_hub_box_sends_no_token_whatever_the_server_holds(served, cache, tmp_path, monkeypatch,
                                                                   model_folders):
    """With HF_TOKEN set (a Space owner's), every visitor's Hub id was fetched with it: private and gated repos of
    the owner opened to anyone."""
    from cadp import ui

    monkeypatch.setenv("HF_TOKEN", "hf_OWNER_SECRET")
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    monkeypatch.setenv("CADP_APP_HUB_CACHE", str(tmp_path / "app-cache"))
    hub.load_hub_model(REPO, cache_dir=cache, endpoint=served.url)  # the library's own call: the token is sent
    assert "Bearer hf_OWNER_SECRET" in served.authorizations
    served.authorizations.clear()
    ui.clear_loaded_models()
    try:
        loaded = ui.load_model(REPO, hub_only=True)
    finally:
        ui.clear_loaded_models()
    assert loaded.commit == served.commits["v2"] and served.authorizations
    assert not any(served.authorizations), set(served.authorizations)
    with pytest.raises(ModelError, match="not found at .*this loads public repos only, without a token"):
        hub.load_hub_model("tester/private", cache_dir=cache, endpoint=served.url, token=False)
    # a gated repo lists its files to anyone and answers 401 for them: it was "changed while downloading"
    served.add_commit("tester/gated", model_folders[0])
    served.gated.add("tester/gated")
    with pytest.raises(ModelError, match=r"Hub repo tester/gated is gated: its files need its conditions accepted on "
                                         r"the Hub and a token \(this loads public repos only, without a token\)"):
        hub.load_hub_model("tester/gated", cache_dir=cache, endpoint=served.url, token=False)


@pytest.mark.parametrize("change, named", [
    ({"fc_width": 16.5}, "fc_width must be a whole number in 1..8192"),
    ({"conv_width": 4.5}, "conv_width must be a whole number in 1..1024"),
    ({"fc_blocks": 1.5}, "fc_blocks must be a whole number in 1..64"),
    ({"conv_blocks": [1, 1.5]}, "conv_blocks must be two whole numbers in 0..64"),
    ({"image_size": 28.0}, "image_size must be 16, 28, 32 or 64"),
])
def test_a_config_with_a_size_that_is_not_a_whole_number_is_refused_in_words(tiny_weights, tmp_path, change, named):
    """16.5 passed the range check and crashed building the network (TypeError; a traceback in the CLI, only the
    exception's name in the app)."""
    from tests.app_helpers import IMAGE_MODEL

    folder = shutil.copytree(tiny_weights / IMAGE_MODEL, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelError, match=named):
        hub.load_folder(folder)


def test_a_config_nested_too_deeply_or_too_wide_to_build_is_refused_in_words(tiny_weights, tmp_path):
    import time

    from tests.app_helpers import TABLE_MODEL

    folder = shutil.copytree(tiny_weights / TABLE_MODEL, tmp_path / "t")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelError, match="nested too deeply to be a model config"):
        hub.load_folder(folder)
    wide = dict(config, data_encoder={**config["data_encoder"], "columns": [
        *config["data_encoder"]["columns"],
        {"name": "code", "kind": "categorical", "categories": [f"c{i}" for i in range(60_000)]}]})
    (folder / "config.json").write_text(json.dumps(wide))
    start = time.monotonic()
    with pytest.raises(ModelError, match="data_encoder must be 2 to 50,000 encoded dimensions"):
        hub.load_folder(folder)
    assert time.monotonic() - start < 5  # refused before the network is built (a million categories took 20 s)


def test_the_evaluate_command_shown_for_a_hub_model_evaluates_a_download_not_the_cache(served, cache):
    """The pages showed `--model <the server's Hub cache snapshot>`: results written there pass for the repo's own
    files (and the path of the server's cache is no visitor's business)."""
    from cadp import ui

    loaded = hub.load_hub_model(REPO, cache_dir=cache, endpoint=served.url)
    command = ui.evaluate_command(loaded, "utility")
    assert command == (f"hf download {REPO} --revision {served.commits['v2']} --include config.json --include "
                       "model.safetensors --include classifier.safetensors --local-dir tester--table-cinn && "
                       "python -m cadp.evaluate utility --model tester--table-cinn --data THE-DATA-IT-WAS-TRAINED-ON")
    assert str(cache) not in command and "snapshots" not in command


def test_an_error_line_keeps_its_brackets_readable_and_no_markdown():
    """A refused connection read "ConnectError: ?Errno 111? Connection refused" in a terminal."""
    assert hub._short(ConnectionRefusedError(111, "Connection refused")) == \
        "ConnectionRefusedError: (Errno 111) Connection refused"
    shown = hub._short(RuntimeError("see [this](http://x.example) ![i](http://x.example/i.png) `$x$` <b>"))
    assert not set("[]`$<>!") & set(shown), shown
