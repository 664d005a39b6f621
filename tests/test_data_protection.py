"""Data protection: uploads never reach the disk or the logs, no network but the Hub, no unpickling, pinned Hub ids."""

from __future__ import annotations

import io
import logging
import os
import pickle
import socket
import tempfile
import time
import tomllib
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, PngImagePlugin
from streamlit.testing.v1 import AppTest

from cadp import archive, hub
from cadp.data import load_table
from cadp.errors import InputError, ModelError
from cadp.mechanisms import DEFAULT_TEMPERATURE, make_mechanism
from cadp.privatize import privatize
from tests import app_helpers as helpers

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 90
SKIPPED_FOLDERS = {".git", ".venv"}
HUB_HOST = "hub.cadp-test.invalid"


pytestmark = pytest.mark.usefixtures("weights")  # the app reads the tiny models (conftest)


def download_bytes(at: AppTest, media: dict[str, bytes]) -> bytes:
    """The privatized file's bytes (the table page also offers its terms, guarantee.txt)."""
    buttons = [b for b in at.get("download_button") if b.label.startswith("Download privatized")]
    assert len(buttons) == 1
    return media[buttons[0].proto.url.rsplit("/", 1)[-1].split(".")[0]]


def clean(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error], [e.value for e in at.error]
    return at


def page(name: str) -> AppTest:
    return clean(AppTest.from_file(str(ROOT / "views" / name), default_timeout=TIMEOUT).run())


# --------------------------------------------------------------------------- nothing on disk, nothing logged

class Sandbox:
    """A fresh working directory and temp directory, and every log record and printed line meanwhile."""

    def __init__(self, root: Path):
        self.cwd, self.temp = root / "cwd", root / "tmp"
        self.cwd.mkdir()
        self.temp.mkdir()
        self.records: list[logging.LogRecord] = []
        self.started = time.time() - 1

    def log_text(self) -> str:
        lines = []
        for record in self.records:
            lines.append(record.getMessage())
            if record.exc_info and record.exc_info[1] is not None:
                lines.append(repr(record.exc_info[1]))
        return "\n".join(lines)


class _Collect(logging.Handler):
    def __init__(self, records: list):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def sandbox(tmp_path, monkeypatch, caplog):
    box = Sandbox(tmp_path)
    monkeypatch.chdir(box.cwd)
    monkeypatch.setenv("TMPDIR", str(box.temp))
    monkeypatch.setattr(tempfile, "tempdir", str(box.temp))
    caplog.set_level(logging.DEBUG)
    handler = _Collect(box.records)
    # streamlit's loggers do not propagate: listen on each of them, at DEBUG, as well as on the root
    names = [""] + [name for name in logging.root.manager.loggerDict if name.split(".")[0] == "streamlit"]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield box
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)
    box.records.extend(caplog.records)


def files_under(folder: Path, *, since: float | None = None):
    for directory, subfolders, names in os.walk(folder):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS]
        for name in names:
            path = Path(directory) / name
            try:
                if not path.is_file() or path.is_symlink():
                    continue
                stat = path.stat()
            except OSError:
                continue
            if since is not None and stat.st_mtime < since:
                continue
            if stat.st_size <= 256 * 2**20:
                yield path


def assert_nowhere(sandbox: Sandbox, weights: Path, secrets: list[bytes], output: str) -> None:
    """None of ``secrets`` in any file of the project, the cwd, the temp folder, or new in /tmp; nor in logs."""
    searched = 0
    places = [(ROOT, None), (sandbox.cwd, None), (sandbox.temp, None), (weights, None),
              (Path("/tmp"), sandbox.started)]
    for folder, since in places:
        for path in files_under(folder, since=since):
            try:
                content = path.read_bytes()
            except OSError:
                continue
            searched += 1
            for secret in secrets:
                assert secret not in content, f"upload data found in {path}"
    assert searched > 50  # the search did look at the project
    logs = sandbox.log_text() + "\n" + output
    for secret in secrets:
        assert secret.decode("latin-1") not in logs, "upload data found in the log or console output"


def marked_png(marker: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", marker)
    buffer = io.BytesIO()
    Image.open(io.BytesIO(helpers.png(5))).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def marked_csv(marker: str) -> bytes:
    text = helpers.small_csv().decode().splitlines()
    text[0] += ",note"
    text[1:] = [f"{line},{marker if i % 5 == 0 else 'plain'}" for i, line in enumerate(text[1:])]
    return ("\n".join(text) + "\n").encode()


def test_image_round_trip_leaves_no_trace_on_disk_or_in_logs(sandbox, weights, media, capsys):
    marker = f"cadp-secret-{uuid.uuid4().hex}"
    upload = marked_png(marker)
    name = f"{marker}.png"
    at = page("image.py")
    at.file_uploader(key="image_upload").set_value((name, upload, "image/png")).run()
    at.button(key="image_privatize").click().run()
    clean(at)
    released = Image.open(io.BytesIO(download_bytes(at, media)))
    assert released.size == (28, 28) and marker not in str(released.info)
    assert any(marker in m.value for m in at.sidebar.markdown)  # the ledger names the file, in memory
    output = capsys.readouterr()
    assert_nowhere(sandbox, weights, [marker.encode(), upload], output.out + output.err)


def test_table_round_trip_leaves_no_trace_on_disk_or_in_logs(sandbox, weights, media, capsys):
    marker = f"cadp-secret-{uuid.uuid4().hex}"
    upload = marked_csv(marker)
    at = page("tabular.py")
    at.radio(key="table_source").set_value("Upload a CSV").run()
    at.file_uploader(key="table_upload").set_value((f"{marker}.csv", upload, "text/csv")).run()
    helpers.conditions(at).set_value(["group", "note"]).run()
    at.slider(key="table_steps").set_value(100)
    at.button[0].click().run()  # the form's "Fit a model on this table"
    at.button(key="table_privatize").click().run()
    clean(at)
    released = pd.read_csv(io.BytesIO(download_bytes(at, media)))
    assert len(released) == 60 and marker in set(released["note"])  # a kept column is released exactly
    output = capsys.readouterr()
    assert_nowhere(sandbox, weights, [marker.encode(), upload], output.out + output.err)


def test_archive_cli_writes_only_into_its_output_folder(sandbox, weights, tmp_path, capsys):
    marker = f"cadp-secret-{uuid.uuid4().hex}"
    inputs = tmp_path / "inputs"
    (inputs / "3").mkdir(parents=True)
    (inputs / "3" / "a.png").write_bytes(marked_png(marker))
    (inputs / "7" / "deeper").mkdir(parents=True)
    (inputs / "7" / "deeper" / "b.png").write_bytes(helpers.png(9))
    (inputs / "7" / "notes.txt").write_text(marker)
    table = tmp_path / "rows.csv"
    table.write_bytes(load_table("diabetes").frame.head(20).to_csv(index=False).encode())

    def snapshot() -> dict[Path, tuple[float, int]]:
        state = {}
        for folder in (tmp_path, weights, sandbox.cwd, sandbox.temp):
            for path in files_under(folder):
                stat = path.stat()
                state[path] = (stat.st_mtime_ns, stat.st_size)
        return state

    before = snapshot()
    image_output, table_output = tmp_path / "out-images", tmp_path / "out-table"
    assert archive.main(["--model", str(weights / helpers.IMAGE_MODEL), "--mechanism", "laplace", "--epsilon", "1",
                         str(inputs), str(image_output)]) == 0
    assert archive.main(["--model", str(weights / helpers.TABLE_MODEL), "--mechanism", "laplace", "--epsilon", "1",
                         str(table), str(table_output)]) == 0
    after = snapshot()
    changed = sorted(path for path, state in after.items() if before.get(path) != state)
    assert changed and all(path.is_relative_to(image_output) or path.is_relative_to(table_output)
                           for path in changed), changed
    assert set(before) <= set(after)  # nothing removed either
    for path in files_under(ROOT, since=sandbox.started):
        assert marker.encode() not in path.read_bytes(), path
    logs = sandbox.log_text() + capsys.readouterr().err
    assert marker not in logs


# --------------------------------------------------------------------------- usage statistics

def test_streamlit_usage_statistics_are_off():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["browser"]["gatherUsageStats"] is False
    from streamlit import config

    previous = Path.cwd()
    os.chdir(ROOT)  # streamlit reads ./.streamlit/config.toml of the working directory, as `streamlit run` does
    try:
        config.get_config_options(force_reparse=True)
        assert config.get_option("browser.gatherUsageStats") is False
        assert "config.toml" in config.get_where_defined("browser.gatherUsageStats")
        # a shown table's own CSV export would write the released rows in the input's order (compare.download_rows)
        assert config.get_option("client.disableDataExport") is True
        # unset, a headless start asked checkip.amazonaws.com for the machine's public address (an "External URL")
        assert config.is_manually_set("browser.serverAddress")
    finally:
        os.chdir(previous)
        config.get_config_options(force_reparse=True)


# --------------------------------------------------------------------------- no network but the Hub

class NetworkLog:
    """Every name lookup and connection attempt; each is refused except on AF_UNIX sockets."""

    def __init__(self):
        self.attempts: list[tuple[str, object]] = []


@pytest.fixture
def network(monkeypatch) -> NetworkLog:
    log = NetworkLog()
    original_connect = socket.socket.connect

    def getaddrinfo(host, port, *args, **kwargs):
        log.attempts.append(("lookup", host))
        raise socket.gaierror(socket.EAI_NONAME, "name lookups are refused in this test")

    def connect(self, address):
        if self.family == socket.AF_UNIX:
            return original_connect(self, address)
        log.attempts.append(("connect", address))
        raise ConnectionRefusedError("connections are refused in this test")

    def connect_ex(self, address):
        try:
            connect(self, address)
        except ConnectionRefusedError:
            return 111
        return 0

    def create_connection(address, *args, **kwargs):
        log.attempts.append(("connect", address))
        raise ConnectionRefusedError("connections are refused in this test")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return log


def test_every_page_runs_without_a_network_request(network, media):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    clean(at)
    for file in ("views/image.py", "views/tabular.py", "views/utility.py", "views/audit.py", "views/model_card.py"):
        at.switch_page(file).run()
        clean(at)
    image = page("image.py")
    image.file_uploader(key="image_upload").set_value(("digit.png", helpers.png(2), "image/png")).run()
    image.button(key="image_privatize").click().run()
    image.radio(key="image_source").set_value("Sample from the bundled test set").run()
    image.button(key="image_privatize").click().run()
    clean(image)
    table = page("tabular.py")
    table.button(key="table_privatize").click().run()
    clean(table)
    audit = page("audit.py")
    audit.select_slider(key="audit_releases").set_value(200)
    audit.multiselect(key="audit_epsilons").set_value([1])
    audit.button[0].click().run()
    clean(audit)
    utility = page("utility.py")
    utility.button[0].click().run()  # recompute
    clean(utility)
    assert network.attempts == []


def test_a_hub_id_contacts_only_the_configured_endpoint(network, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", f"https://{HUB_HOST}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)  # as in a fresh process
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(_detect_agent, "_registry", None, raising=False)  # forget what earlier tests fetched
    at = page("model_card.py")
    at.sidebar.selectbox(key="model_choice").set_value("Hub repository…").run()
    at.sidebar.text_input(key="model_hub").input("someone/some-model").run()
    assert not at.exception
    shown = [e.value for e in at.sidebar.error]
    assert shown and "someone/some-model" in shown[0] and "cannot be reached" in shown[0], shown
    assert network.attempts, "the Hub was not asked"
    hosts = {target if kind == "lookup" else target[0] for kind, target in network.attempts}
    assert hosts == {HUB_HOST}, network.attempts


# --------------------------------------------------------------------------- no unpickling

class UnpicklingRefused(AssertionError):
    pass


class Unpickling:
    """Once ``refuse()`` is called, pickle.load/loads/Unpickler and torch.load raise and are recorded."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.calls: list[str] = []

    def refuse(self) -> None:
        import _pickle

        for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (_pickle, "load"),
                             (_pickle, "loads"), (_pickle, "Unpickler"), (torch, "load")):
            self.monkeypatch.setattr(module, name, self._refused(f"{module.__name__}.{name}"))

    def _refused(self, name: str):
        def refused(*args, **kwargs):
            self.calls.append(name)
            raise UnpicklingRefused(f"{name} was called while loading a model")
        return refused


@pytest.fixture
def unpickling(monkeypatch) -> Unpickling:
    return Unpickling(monkeypatch)


def model_folders(weights: Path) -> list[Path]:
    folders = [weights / helpers.IMAGE_MODEL, weights / helpers.TABLE_MODEL]
    bundled = ROOT / "weights"
    if bundled.is_dir():
        folders += sorted(d for d in bundled.iterdir() if (d / hub.WEIGHTS_NAME).exists())
    return folders


def one_release(loaded: hub.LoadedModel, tables: dict[str, pd.DataFrame]):
    config = loaded.config
    laplace = make_mechanism("laplace", 10, temperature=DEFAULT_TEMPERATURE)
    if config.kind == "image":
        pixels = torch.zeros(2, config.channels, config.image_size, config.image_size)
        pixels[:, :, 8:20, 12:16] = 255
        result = privatize(loaded.model, pixels, torch.tensor([0, 1]), laplace, seed=0)
        assert torch.isfinite(result.privatized).all()
        if loaded.classifier is not None:
            assert loaded.classifier.predict_proba(pixels).shape == (2, config.num_classes)
    else:
        columns = list(config.data_columns) + list(config.condition_columns)
        result = privatize(loaded.model, tables[config.dataset][columns].head(8), None, laplace, seed=0)
        assert result.privatized_frame.shape == (8, len(columns))


def test_models_load_and_privatize_without_unpickling(weights, unpickling):
    folders = model_folders(weights)
    tables = {}
    for folder in folders:  # the public tables come from scikit-learn and friends, not from the model folders
        config = hub.read_config(folder)
        if config.kind == "tabular" and config.dataset not in tables:
            tables[config.dataset] = load_table(config.dataset).frame
    unpickling.refuse()
    loaded_names = []
    for folder in folders:
        loaded = hub.load_folder(folder)
        one_release(loaded, tables)
        loaded_names.append(folder.name)
        assert hub.load_model(str(folder)).config.name == loaded.config.name
    assert unpickling.calls == [] and {helpers.IMAGE_MODEL, helpers.TABLE_MODEL} <= set(loaded_names)
    with pytest.raises(UnpicklingRefused):  # the patch is live: an unpickling would have been caught
        torch.load(io.BytesIO(b""))


def test_a_folder_with_only_a_pickle_is_refused_without_unpickling(weights, tmp_path, unpickling):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / hub.CONFIG_NAME).write_bytes((weights / helpers.IMAGE_MODEL / hub.CONFIG_NAME).read_bytes())
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": np.zeros(3)}))
    unpickling.refuse()
    for load in (hub.load_folder, hub.load_model):
        with pytest.raises(ModelError, match="pytorch_model.bin: pickle files are never loaded"):
            load(str(folder))
    assert unpickling.calls == []


# --------------------------------------------------------------------------- pinned Hub revisions

class Asked(Exception):
    pass


def test_bundled_hub_ids_load_their_pinned_revision(monkeypatch):
    asked: list[tuple[str, str]] = []

    def download(repo_id, revision, **kwargs):
        asked.append((repo_id, revision))
        raise Asked

    monkeypatch.setattr(hub, "_download", download)
    assert hub.BUNDLED_REPOS
    for repo_id in hub.BUNDLED_REPOS:
        pinned = hub.BUNDLED_REVISIONS.get(repo_id)
        assert pinned and pinned not in ("main", "master") and hub.validate_revision(pinned, repo_id)
        with pytest.raises(Asked):
            hub.load_model(repo_id)
        assert asked[-1] == (repo_id, pinned)
        with pytest.raises(Asked):
            hub.load_model(f"{repo_id}@v9.9.9")  # an explicit revision is the user's choice
        assert asked[-1] == (repo_id, "v9.9.9")
    with pytest.raises(Asked):
        hub.load_model("someone/not-bundled")
    assert asked[-1] == ("someone/not-bundled", "main")


def test_a_headless_start_asks_no_one_for_this_machines_address(network, capsys):
    """Without browser.serverAddress, Streamlit's start banner looked up checkip.amazonaws.com (the public IP,
    sent to AWS) and opened a socket towards 8.8.8.8 (the internal IP)."""
    from streamlit import config
    from streamlit.web import bootstrap

    previous = Path.cwd()
    os.chdir(ROOT)
    try:
        config.get_config_options(force_reparse=True)
        assert config.get_option("server.headless") is True
        bootstrap._print_url(False)
    finally:
        os.chdir(previous)
        config.get_config_options(force_reparse=True)
    assert network.attempts == []
    assert "http://localhost:8501" in capsys.readouterr().out


def malformed_dicom(marker: str) -> bytes:
    """A valid 28 x 28 DICOM whose NumberOfFrames holds ``marker`` (10 characters) instead of a number."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.Rows = dataset.Columns = 28
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.NumberOfFrames = "1234567890"
    dataset.PixelData = (np.arange(784) % 256).astype(np.uint8).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    assert len(marker) == 10
    return buffer.getvalue().replace(b"1234567890", marker.encode())


def test_a_malformed_dicom_value_is_its_files_problem_and_quoted_nowhere(sandbox, weights, media, capsys):
    """pydicom reads a header value when it is first used and warns of a malformed one quoting it: the value of
    NumberOfFrames went to the server's stderr, and its ValueError stopped the whole upload (a PNG beside it was
    never offered)."""
    marker = f"SECRET{uuid.uuid4().hex[:4]}"
    upload = malformed_dicom(marker)
    at = page("image.py")
    with warnings.catch_warnings(record=True) as shown:  # what the process's filters let through (no "always")
        at.file_uploader(key="image_upload").set_value([("scan.dcm", upload, "application/dicom"),
                                                       ("plain.png", helpers.png(5), "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]
    problems = " ".join(e.value for e in at.error)
    assert "the DICOM header's NumberOfFrames is not a whole number" in problems and marker not in problems
    at.button(key="image_privatize").click().run()  # the PNG is released
    assert not at.exception and Image.open(io.BytesIO(download_bytes(at, media))).size == (28, 28)
    assert not [w for w in shown if marker in str(w.message)]
    output = capsys.readouterr()
    assert_nowhere(sandbox, weights, [marker.encode()], output.out + output.err)


def test_a_cross_origin_handshake_makes_the_server_ask_no_one_once_the_app_ran(network, monkeypatch):
    """For a websocket handshake from another origin, Streamlit looked up this machine's public address
    (checkip.amazonaws.com) in the event loop every visitor shares, again after every failure: any web page
    could make the server send requests."""
    from streamlit import net_util
    from streamlit.web.server import server_util

    monkeypatch.setattr(net_util, "_external_ip", None)
    monkeypatch.setattr(net_util, "_internal_ip", None)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not server_util.is_url_from_allowed_origins("http://evil.example")
    assert server_util.is_url_from_allowed_origins("http://localhost:3000")  # what Streamlit allows stays allowed
    assert network.attempts == []


def test_a_malformed_dicom_value_stays_quiet_while_another_thread_changes_the_warning_filters(monkeypatch):
    """Each decode set "ignore" with warnings.catch_warnings, which changes the whole process's filters: another
    thread leaving its own catch_warnings while a decode ran put the filters back without it, and the decode's
    pydicom warning quoted the header value on the server's stderr."""
    import threading

    from cadp import uploads

    marker = f"SECRET{uuid.uuid4().hex[:4]}"
    real, inside, left = uploads._dicom_image, threading.Event(), threading.Event()

    def staged(dataset, steps):  # the decode waits, inside, until the other thread has left its filters
        inside.set()
        left.wait(10)
        return real(dataset, steps)

    def other_thread():  # e.g. a model's warm-up that silences a warning of its own
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inside.wait(10)
        left.set()

    monkeypatch.setattr(uploads, "_dicom_image", staged)
    with warnings.catch_warnings(record=True) as shown:  # what the process's filters let through (no "always")
        other = threading.Thread(target=other_thread)
        other.start()
        with pytest.raises(InputError, match="NumberOfFrames is not a whole number"):
            uploads._decode_dicom(malformed_dicom(marker), [])
        other.join()
    assert not [w for w in shown if marker in str(w.message)]
