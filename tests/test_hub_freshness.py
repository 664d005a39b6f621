"""What a Hub server can leave behind or slip past a load: a branch that moves between its listing and its files,
error text with Markdown in it, a refused commit name's files in the cache; and how long the app keeps a Hub model
it loaded (a fallback while the Hub was down, a branch that has moved since)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

from cadp import hub, ui
from cadp.errors import ModelError

try:
    import hub_server
    from test_hub import cache  # noqa: F401 - the fixture: an empty Hugging Face cache
    from test_hub_hostile import bundled_files, load, sent_commit, server  # noqa: F401 - fixtures
except ImportError:  # tests/ imported as a package
    from tests import hub_server
    from tests.test_hub import cache  # noqa: F401
    from tests.test_hub_hostile import bundled_files, load, sent_commit, server  # noqa: F401


def test_a_branch_moving_between_its_listing_and_its_files_is_not_loaded_as_listed(server, cache, monkeypatch):
    """The listing (sizes checked against the limits) is of one commit; files of another must not load under it."""
    first = server.add_commit("moving/listing", bundled_files())
    model_info = hub_server._HubHandler._model_info
    moved = []

    def moving(self, repos, repo_id, revision, send_body):
        model_info(self, repos, repo_id, revision, send_body)
        if not moved:
            moved.append(server.add_commit("moving/listing", bundled_files(**{"eval.json": "{}"})))

    monkeypatch.setattr(hub_server._HubHandler, "_model_info", moving)
    with pytest.raises(ModelError, match="moving/listing@main changed while downloading") as caught:
        load(server, "moving/listing", cache)
    assert moved and moved[0] != first and str(cache) not in str(caught.value)
    monkeypatch.setattr(hub_server._HubHandler, "_model_info", model_info)
    assert load(server, "moving/listing", cache).commit == moved[0]  # loaded again: the new commit, listed


def test_a_servers_error_text_carries_no_markdown_into_the_message(server, cache, monkeypatch):
    server.add_commit("refusing/model", bundled_files())

    def refuse(self, repos, repo_id, revision, send_body):
        self._error(403, None, "**Forbidden** [click here](http://evil.example) ![x](http://evil.example/i.png) `$x$`",
                    send_body)

    monkeypatch.setattr(hub_server._HubHandler, "_model_info", refuse)
    with pytest.raises(ModelError, match="the Hub refused refusing/model@main") as caught:
        load(server, "refusing/model", cache)
    text = str(caught.value)
    assert "Forbidden" in text
    assert not any(mark in text for mark in ("**", "[", "](", "`", "$")), text


@pytest.mark.parametrize("commit", ["abc/def", "**x** [y](http://e)", "0123"])
def test_a_refused_commit_name_leaves_nothing_the_cache_scan_cannot_count(server, cache, sent_commit, commit):
    """Left in the cache, a nested snapshot folder makes huggingface_hub's scan skip the repo as corrupt: the app's
    pruning would never count or delete its blobs (a Space's disk filled by repeated hostile repos)."""
    server.add_commit("odd/commit", bundled_files())
    server.add_commit("odd/kept", bundled_files())
    kept = load(server, "odd/kept", cache)  # another repo's good copy stays
    sent_commit["commit"] = commit
    with pytest.raises(ModelError, match="a commit is 40 hex"):
        load(server, "odd/commit", cache)
    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    left = [path for path in (Path(cache) / "models--odd--commit").rglob("*") if path.is_file()]
    assert left == [], left
    assert (kept.folder / hub.WEIGHTS_NAME).is_file()
    sent_commit["commit"] = None
    assert load(server, "odd/commit", cache).commit == server.repos["odd/commit"].resolve("main")


# --------------------------------------------------------------------------- how long the app keeps a Hub model

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def app_loads(monkeypatch, tmp_path):
    """ui.load_model with hub.load_hub_model counted and the clock in the test's hand."""
    calls: list[str] = []
    origins = {"origin": "Hub owner/name at commit 0123456789ab"}

    def fake_load(source, **kwargs):
        calls.append(source)
        loaded = hub.load_folder(hub.BUNDLED_DIR / "diabetes-cinn", origin=origins["origin"])
        loaded.folder = tmp_path / f"snapshot{len(calls)}"
        return loaded

    clock = FakeClock()
    monkeypatch.setattr(hub, "load_hub_model", fake_load)
    monkeypatch.setattr(ui, "_clock", clock)
    monkeypatch.setattr(ui, "_warm_up_quietly", lambda model: None)
    monkeypatch.setattr(ui, "app_hub_cache", lambda: tmp_path / "cache")
    ui.clear_loaded_models()
    yield calls, clock, origins
    ui.clear_loaded_models()


def test_a_fallback_loaded_while_the_hub_was_down_is_tried_again_a_minute_later(app_loads):
    calls, clock, origins = app_loads
    origins["origin"] = "bundled fallback weights/diabetes-cinn (the Hub at https://huggingface.co cannot be reached)"
    ui.load_model("cadp/diabetes-cinn", hub_only=True)
    clock.now += 30
    ui.load_model("cadp/diabetes-cinn", hub_only=True)
    assert len(calls) == 1  # within the minute: the cached one
    clock.now += ui.HUB_RETRY_SECONDS
    origins["origin"] = "Hub cadp/diabetes-cinn at commit 0123456789ab"
    loaded = ui.load_model("cadp/diabetes-cinn", hub_only=True)
    assert len(calls) == 2 and loaded.origin.startswith("Hub ")
    clock.now += ui.HUB_RETRY_SECONDS  # a live load is not retried after a minute
    ui.load_model("cadp/diabetes-cinn", hub_only=True)
    assert len(calls) == 2


def test_a_cached_copy_loaded_while_the_hub_was_down_is_tried_again(app_loads):
    calls, clock, origins = app_loads
    origins["origin"] = "Hub owner/name at commit 0123456789ab (cached copy; the Hub at x cannot be reached)"
    ui.load_model("owner/name", hub_only=True)
    clock.now += ui.HUB_RETRY_SECONDS + 1
    ui.load_model("owner/name", hub_only=True)
    assert len(calls) == 2


def test_a_branch_is_asked_for_its_newest_commit_again_after_a_while_a_commit_never(app_loads):
    calls, clock, _ = app_loads
    commit = "0123456789abcdef0123456789abcdef01234567"
    ui.load_model("owner/name", hub_only=True)
    ui.load_model(f"owner/name@{commit}", hub_only=True)
    clock.now += ui.HUB_RECHECK_SECONDS - 1
    ui.load_model("owner/name", hub_only=True)
    assert calls == ["owner/name", f"owner/name@{commit}"]
    clock.now += 2
    ui.load_model("owner/name", hub_only=True)
    ui.load_model(f"owner/name@{commit}", hub_only=True)
    assert calls == ["owner/name", f"owner/name@{commit}", "owner/name"]


def test_a_pruning_leaves_the_revisions_of_a_repo_downloading_now(server, cache):
    """A repo's new revision may link to its older revision's blobs while it downloads: a pruning that ran beside
    the download (Hub loads of other repos no longer wait for it) must leave that repo alone."""
    server.add_commit("busy/model", bundled_files())
    server.add_commit("idle/model", bundled_files())
    busy, idle = load(server, "busy/model", cache), load(server, "idle/model", cache)
    deleted = hub.prune_hub_cache(cache, 0, set(), keep_repos={"busy/model"})
    assert [name.split("@")[0] for name in deleted] == ["idle/model"]
    assert (busy.folder / hub.WEIGHTS_NAME).exists() and not idle.folder.exists()


def test_a_commit_loaded_from_the_hub_is_never_asked_again_its_files_cannot_change(app_loads):
    calls, clock, origins = app_loads
    commit = "0123456789abcdef0123456789abcdef01234567"
    origins["origin"] = "Hub owner/name at commit 0123456789ab"
    ui.load_model(f"owner/name@{commit}", hub_only=True)
    clock.now += 10 * ui.HUB_RECHECK_SECONDS
    ui.load_model(f"owner/name@{commit}", hub_only=True)
    assert calls == [f"owner/name@{commit}"]


def test_one_repo_written_with_or_without_main_is_one_model_in_memory(app_loads):
    calls, _, _ = app_loads
    for source in ("owner/name", "owner/name@main", " owner/name "):
        ui.load_model(source, hub_only=True)
    assert calls == ["owner/name"]
    bundled = next(iter(hub.BUNDLED_REPOS))  # its bare id loads its pinned revision, not main
    ui.load_model(bundled, hub_only=True)
    ui.load_model(f"{bundled}@main", hub_only=True)
    assert calls[1:] == [bundled, f"{bundled}@main"]


def test_a_session_never_waits_for_another_sessions_asking_the_hub_again(app_loads):
    calls, clock, _ = app_loads
    first = ui.load_model("owner/name", hub_only=True)
    clock.now += ui.HUB_RECHECK_SECONDS + 1
    assert ui._RELOAD_LOCK.acquire(blocking=False)  # another session is asking the Hub again
    try:
        served = []
        waiting = threading.Thread(target=lambda: served.append(ui.load_model("owner/name", hub_only=True)),
                                   daemon=True)
        waiting.start()
        waiting.join(5)
        assert not waiting.is_alive(), "a page run waited for another session's reload"
        assert served == [first] and len(calls) == 1  # served what it had
    finally:
        ui._RELOAD_LOCK.release()
    ui.load_model("owner/name", hub_only=True)
    assert len(calls) == 2


def test_a_reload_under_way_leaves_every_other_session_the_model_it_had(app_loads, monkeypatch):
    """The reload cleared the cached entry first: every other session then waited for the Hub's download."""
    calls, clock, _ = app_loads
    first = ui.load_model("owner/name", hub_only=True)
    clock.now += ui.HUB_RECHECK_SECONDS + 1
    slow = threading.Event()
    load = hub.load_hub_model

    def slow_load(source, **kwargs):
        slow.wait(5)
        return load(source, **kwargs)

    monkeypatch.setattr(hub, "load_hub_model", slow_load)
    reloading = threading.Thread(target=lambda: ui.load_model("owner/name", hub_only=True), daemon=True)
    reloading.start()
    time.sleep(0.3)  # the reload is under way
    served = []
    other = threading.Thread(target=lambda: served.append(ui.load_model("owner/name", hub_only=True)), daemon=True)
    other.start()
    other.join(2)
    assert not other.is_alive() and served == [first], "another session waited for the reload"
    slow.set()
    reloading.join(10)
    assert len(calls) == 2 and ui.load_model("owner/name", hub_only=True) is not first


def test_a_commit_loaded_while_the_hub_was_down_is_asked_again_at_the_slower_pace(app_loads):
    calls, clock, origins = app_loads
    commit = "0123456789abcdef0123456789abcdef01234567"
    origins["origin"] = "bundled fallback weights/diabetes-cinn (the Hub at x cannot be reached)"
    ui.load_model(f"owner/name@{commit}", hub_only=True)
    clock.now += ui.HUB_RETRY_SECONDS + 1
    ui.load_model(f"owner/name@{commit}", hub_only=True)
    assert len(calls) == 1  # not every minute
    clock.now += ui.HUB_RECHECK_SECONDS
    ui.load_model(f"owner/name@{commit}", hub_only=True)
    assert len(calls) == 2  # but not never: where it came from can change
