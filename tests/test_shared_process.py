"""A hosted app's visitors share one process and its CPU: fits on uploads run one at a time."""

from __future__ import annotations

import threading
import time

from cadp import train, ui


def test_fits_of_several_sessions_run_one_at_a_time(monkeypatch):
    running, most = [0], [0]
    lock = threading.Lock()

    def slow_fit(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return object()

    monkeypatch.setattr(train, "fit_tabular", slow_fit)
    stores = threading.local()
    monkeypatch.setattr(ui, "fitted_models", lambda: stores.__dict__.setdefault("store", {}))
    monkeypatch.setattr(ui.st, "empty", lambda: type("Box", (), {"info": lambda self, text: None,
                                                                  "empty": lambda self: None})())
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(ui.fitted_model((n, (), (), 10), None)))
               for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 3 and most[0] == 1


def test_hub_ids_typed_by_anyone_never_push_the_app_s_own_models_out_of_memory(monkeypatch, tmp_path):
    """One cache for both: eight Hub ids (or one repo in eight spellings) reloaded every visitor's bundled model,
    and eight networks of anyone's size could be held at once."""
    from cadp import hub

    loads: list[str] = []

    def fake_hub_load(source, **kwargs):
        loads.append(source)
        loaded = hub.load_folder(hub.BUNDLED_DIR / "diabetes-cinn", origin=f"Hub {source} at commit 0123456789ab")
        loaded.folder = tmp_path / source.replace("/", "--")
        return loaded

    monkeypatch.setattr(hub, "load_hub_model", fake_hub_load)
    monkeypatch.setattr(ui, "_warm_up_quietly", lambda model: None)
    monkeypatch.setattr(ui, "app_hub_cache", lambda: tmp_path / "cache")
    ui.clear_loaded_models()
    try:
        own = ui.load_model("diabetes-cinn")
        for index in range(ui.MODELS_IN_MEMORY + 2):
            ui.load_model(f"someone/model-{index}", hub_only=True)
        assert ui.load_model("diabetes-cinn") is own  # still the same object: not loaded again
        ui.load_model(f"someone/model-{ui.MODELS_IN_MEMORY + 1}", hub_only=True)  # the latest: still held
        ui.load_model("someone/model-0", hub_only=True)  # an early one: loaded again (at most HUB_MODELS_IN_MEMORY Hub models held)
        assert loads.count(f"someone/model-{ui.MODELS_IN_MEMORY + 1}") == 1 and loads.count("someone/model-0") == 2
        # the folders kept on disk whatever the cache's budget: twice the Hub models held (16 kept up to 7 GB)
        assert len(ui.HUB_FOLDERS_IN_USE) == 2 * ui.HUB_MODELS_IN_MEMORY
        assert next(reversed(ui.HUB_FOLDERS_IN_USE)) == tmp_path / "someone--model-0"
    finally:
        ui.clear_loaded_models()


def test_the_server_refuses_uploads_past_a_sessions_and_the_processs_share_of_memory(monkeypatch):
    """Streamlit held every file an uploader took (capped per file, not in number): the page refused 5 files of
    47 MB and the process still held them; tabs of such uploads could take every visitor's memory."""
    import pytest
    from starlette.exceptions import HTTPException
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.uploaded_file_manager import UploadedFileRec

    from cadp import runtime

    monkeypatch.setattr(MemoryUploadedFileManager, "add_file", MemoryUploadedFileManager.add_file)  # undone after
    assert runtime.limit_held_uploads(per_session=100, in_all=250)
    assert runtime.limit_held_uploads(per_session=100, in_all=250)  # twice: one limit, not two wrappers
    manager = MemoryUploadedFileManager("/upload")

    def add(session: str, file_id: str, size: int) -> None:
        manager.add_file(session, UploadedFileRec(file_id, f"{file_id}.png", "image/png", b"x" * size))

    add("a", "1", 60)
    add("a", "1", 90)  # the same file again, larger: replaces it
    with pytest.raises(HTTPException) as refused:
        add("a", "2", 20)  # 110 > 100 for the session
    assert refused.value.status_code == 413
    add("b", "1", 90)
    with pytest.raises(HTTPException) as full:
        add("c", "1", 80)  # 260 > 250 in all
    assert full.value.status_code == 503
    manager.remove_session_files("a")
    add("c", "1", 80)  # room again
    assert manager._total_bytes == 170


def test_one_visitors_slow_hub_download_holds_up_no_other_repo(monkeypatch, tmp_path):
    """One lock for every Hub load: a visitor's large repo held every other visitor's Hub load for minutes."""
    from cadp import hub

    def slow_load(source, **kwargs):
        time.sleep(0.5)
        loaded = hub.load_folder(hub.BUNDLED_DIR / "diabetes-cinn", origin=f"Hub {source} at commit 0123456789ab")
        loaded.folder = tmp_path / source.replace("/", "--")
        return loaded

    monkeypatch.setattr(hub, "load_hub_model", slow_load)
    monkeypatch.setattr(hub, "prune_hub_cache", lambda *args, **kwargs: [])
    monkeypatch.setattr(ui, "_warm_up_quietly", lambda model: None)
    monkeypatch.setattr(ui, "app_hub_cache", lambda: tmp_path / "cache")
    ui.clear_loaded_models()
    try:
        started = time.perf_counter()
        threads = [threading.Thread(target=ui._loaded, args=(f"someone/model-{n}", True, None)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert time.perf_counter() - started < 0.9  # side by side, not one after the other (1.0 s)
        assert ui._REPO_LOCKS == {} and not ui._DOWNLOADING  # nothing left behind per repo
    finally:
        ui.clear_loaded_models()
