"""Hostile Hub repos and servers: what a model repo from anyone (the app's Hub box) or an odd Hub server can make
loading say or do. Served by the local Hub-compatible test server (tests/hub_server.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cadp import hub
from cadp.errors import ModelError

try:
    import hub_server
    from test_hub import cache  # noqa: F401 - the fixture: an empty Hugging Face cache
except ImportError:  # tests/ imported as a package
    from tests import hub_server
    from tests.test_hub import cache  # noqa: F401

BUNDLED = hub.BUNDLED_DIR / "diabetes-cinn"  # a small tabular model (117 kB of weights)
NESTED = '{"a":' * 100_000 + "1" + "}" * 100_000  # deeper than the JSON parser can go


def bundled_files(**changes: str | bytes) -> dict[str, bytes]:
    """The bundled model's files as a repo holds them, with ``changes`` ({"config.json": text}) made."""
    files = {name: (BUNDLED / name).read_bytes() for name in hub.HUB_FILES if (BUNDLED / name).exists()}
    files.update({name: content.encode() if isinstance(content, str) else content
                  for name, content in changes.items()})
    return files


def long_integer_config(digits: int = 5000) -> str:
    config = json.loads((BUNDLED / hub.CONFIG_NAME).read_text())
    return json.dumps(config).replace(f'"blocks": {config["blocks"]}', '"blocks": ' + "9" * digits)


@pytest.fixture()
def server():
    with hub_server.HubServer() as running:
        yield running


def load(server, repo_id: str, cache: Path) -> hub.LoadedModel:
    return hub.load_hub_model(repo_id, cache_dir=cache, endpoint=server.url, token=False)


# --------------------------------------------------------------------------- errors name a Hub file by repo and commit

def test_a_hub_config_error_names_the_repo_and_commit_not_the_servers_cache_path(server, cache, tmp_path):
    commit = server.add_commit("evil/nested", bundled_files(**{"config.json": NESTED}))
    with pytest.raises(ModelError) as caught:
        load(server, "evil/nested", cache)
    message = str(caught.value)
    assert f"config.json of evil/nested at commit {commit[:12]} is nested too deeply" in message
    assert str(cache) not in message and "snapshots" not in message

    local = tmp_path / "nested-model"  # a local folder keeps its path: its user typed it
    shutil.copytree(BUNDLED, local)
    (local / hub.CONFIG_NAME).write_text(NESTED)
    with pytest.raises(ModelError, match="nested-model/config.json is nested too deeply"):
        hub.load_folder(local)


def test_a_hub_models_eval_json_error_names_the_repo_and_commit(server, cache):
    commit = server.add_commit("evil/eval", bundled_files(**{"eval.json": "[1, 2"}))
    loaded = load(server, "evil/eval", cache)
    with pytest.raises(ModelError) as caught:
        loaded.evaluation  # noqa: B018 - the model card page reads it so
    assert f"eval.json of evil/eval at commit {commit[:12]} is not valid JSON" in str(caught.value)
    assert str(cache) not in str(caught.value)


# --------------------------------------------------------------------------- config.json numbers beyond int()'s limit

def test_a_config_integer_of_thousands_of_digits_is_refused_in_plain_words(server, cache, tmp_path, capsys):
    commit = server.add_commit("evil/bigint", bundled_files(**{"config.json": long_integer_config()}))
    with pytest.raises(ModelError, match=f"config.json of evil/bigint at commit {commit[:12]} holds a whole number "
                                         "of 5,000 digits"):
        load(server, "evil/bigint", cache)

    folder = tmp_path / "bigint"
    shutil.copytree(BUNDLED, folder)
    (folder / hub.CONFIG_NAME).write_text(long_integer_config())
    assert hub.main(["load", str(folder)]) == 2  # the CLI says it in one line, no traceback
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "5,000 digits" in error and "set_int_max_str_digits" not in error


# --------------------------------------------------------------------------- permutation buffers of model.safetensors

def folder_with_weights(tmp_path: Path, change) -> Path:
    """A copy of the bundled model whose first permutation's (perm, perm_inv) are changed by ``change``."""
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED, folder)
    state = load_file(str(folder / hub.WEIGHTS_NAME))
    key = next(key for key in sorted(state) if key.endswith(".perm"))
    state[key], state[key + "_inv"] = change(state[key], state[key + "_inv"])
    save_file(state, str(folder / hub.WEIGHTS_NAME))
    return folder


@pytest.mark.parametrize(("change", "tensor"), [
    (lambda perm, inverse: (perm, inverse + 1000), "perm_inv"),  # out of range: IndexError at release
    (lambda perm, inverse: (perm, -inverse - 1), "perm_inv"),
    (lambda perm, inverse: (torch.zeros_like(perm), inverse), "perm"),  # one column copied into all
    (lambda perm, inverse: (perm, torch.roll(inverse, 1)), "perm_inv"),  # a permutation, but not perm's inverse
], ids=["out-of-range", "negative", "constant", "not-the-inverse"])
def test_permutation_buffers_that_cannot_be_inverted_are_refused_naming_the_tensor(tmp_path, change, tensor):
    folder = folder_with_weights(tmp_path, change)
    with pytest.raises(ModelError, match=rf"model\.safetensors: tensor inn\.module_list\.\d+\.{tensor} is not"):
        hub.load_folder(folder)


def test_another_permutation_with_its_inverse_loads_and_inverts(tmp_path):
    def other(perm, inverse):
        shuffled = torch.roll(perm, 1)
        return shuffled, torch.argsort(shuffled)

    loaded = hub.load_folder(folder_with_weights(tmp_path, other))
    rows = torch.randn(5, loaded.model.latent_dim)
    condition = torch.zeros(5, loaded.config.condition_dim)
    with torch.inference_mode():
        again = loaded.model.decode(loaded.model.encode(rows, condition), condition)
    assert torch.allclose(again, rows, atol=1e-4)


# --------------------------------------------------------------------------- what a Hub server sends

@pytest.fixture()
def sent_commit(monkeypatch):
    """Set ["commit"] to the X-Repo-Commit header the server sends instead of the true one."""
    sent = {"commit": None}
    send_header = hub_server._HubHandler.send_header

    def odd_header(self, name, value):
        if name == "X-Repo-Commit" and sent["commit"] is not None:
            value = sent["commit"]
        return send_header(self, name, value)

    monkeypatch.setattr(hub_server._HubHandler, "send_header", odd_header)
    return sent


@pytest.mark.parametrize("commit", ["..", "../../escape", "**x** [y](http://e)", "0123"])
def test_a_commit_header_that_is_not_a_commit_is_refused_saying_what_came(server, cache, sent_commit, commit):
    server.add_commit("odd/commit", bundled_files())
    sent_commit["commit"] = commit
    with pytest.raises(ModelError, match="as the commit of config.json in odd/commit@main: a commit is 40 hex") as caught:
        load(server, "odd/commit", cache)
    assert str(cache) not in str(caught.value) and "](" not in str(caught.value)
    if commit == "0123":
        assert "'0123'" in str(caught.value)


def test_a_branch_moving_during_the_download_is_said_plainly(server, cache, monkeypatch):
    """main moves between a file's HEAD (its size) and its GET: huggingface_hub's "Consistency check failed"."""
    server.add_commit("moving/model", bundled_files())
    resolve = hub_server._HubHandler._resolve
    moved = []

    def moving(self, repo_id, revision, filename, send_body):
        resolve(self, repo_id, revision, filename, send_body)
        if not send_body and filename == hub.CONFIG_NAME and not moved:  # after the HEAD, a new commit on main
            moved.append(server.add_commit("moving/model", bundled_files(**{"config.json": "{}"})))

    monkeypatch.setattr(hub_server._HubHandler, "_resolve", moving)
    with pytest.raises(ModelError, match="Hub repo moving/model@main changed while downloading") as caught:
        load(server, "moving/model", cache)
    assert moved and str(cache) not in str(caught.value)


@pytest.mark.parametrize("address", ["http://[::1", "127.0.0.1:8000", "http://127.0.0.1:port", "ftp://hub.example",
                                     " https://huggingface.co", "http://127.0.0.1:9\n"])
def test_an_endpoint_that_is_no_hub_address_is_refused_not_taken_for_a_hub_that_is_down(address, monkeypatch,
                                                                                         capsys):
    """'http://[::1' raised ValueError inside huggingface_hub's import (a traceback, exit 1); '127.0.0.1:8000' read as
    "the Hub cannot be reached" and a bundled id quietly loaded its folder."""
    import subprocess
    import sys

    monkeypatch.setenv("HF_ENDPOINT", address)
    with pytest.raises(hub.InputError, match="is not a Hub address"):
        hub.load_model("cadp/heart-cinn")
    with monkeypatch.context() as unset:  # (the endpoint given alone: a bad $HF_ENDPOINT is refused first)
        unset.delenv("HF_ENDPOINT")
        with pytest.raises(hub.InputError, match="the endpoint given"):
            hub.load_hub_model("cadp/heart-cinn", endpoint=address)
    # in a fresh process: huggingface_hub not yet imported, as the command line meets it
    done = subprocess.run([sys.executable, "-m", "cadp.hub", "load", "cadp/heart-cinn"], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: $HF_ENDPOINT") and "Traceback" not in done.stderr
    with pytest.raises(hub.InputError, match="is not a Hub address"):  # the app's Hub cache, before its import
        from cadp import ui

        monkeypatch.delenv(ui.APP_HUB_CACHE_ENV, raising=False)
        ui.app_hub_cache()


def test_valid_endpoints_are_taken(monkeypatch):
    for address in ("http://localhost", "https://hf-mirror.com/", "http://[::1]:8080", "http://host/hub",
                    "HTTPS://HUB.EXAMPLE"):
        hub._check_endpoint(address, "x")  # (no error)


def test_push_refuses_an_endpoint_that_is_no_hub_address_in_a_fresh_process(tmp_path):
    """push imported huggingface_hub before checking: 'http://[::1' still raised its ValueError there."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "cadp.hub", "push", "weights/heart-cinn", "me/heart"],
                          capture_output=True, text=True, cwd=root, timeout=120,
                          env={**os.environ, "HF_ENDPOINT": "http://[::1", "HF_TOKEN": "x"})
    assert done.returncode == 2 and "is not a Hub address" in done.stderr and "Traceback" not in done.stderr


def test_a_hugging_face_file_that_cannot_be_read_is_an_error_line(tmp_path, monkeypatch):
    """HF_HOME under a regular file: reading its token file raised NotADirectoryError through cadp.hub load."""
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "a-file" / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "a-file" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelError, match="could not be read or written .*a-file/token.*HF_HOME"):
        hub.load_model("nobody/model", cache_dir=tmp_path / "cache")


def test_a_malformed_hf_endpoint_is_refused_when_an_endpoint_is_given_too(tmp_path):
    """huggingface_hub's import parses $HF_ENDPOINT whatever endpoint is given: it raised there (a traceback)."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cadp.hub", "load", "someone/some-model", "--endpoint",
                           "https://example.invalid"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "HF_ENDPOINT": "http://[::1"})
    assert done.returncode == 2 and "error: $HF_ENDPOINT" in done.stderr and "Traceback" not in done.stderr
