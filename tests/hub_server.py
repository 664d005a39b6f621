"""A Hugging Face Hub-compatible file server for tests (http.server in a thread, 127.0.0.1, free port).

It speaks the part of the Hub protocol huggingface_hub 2.x uses to download
(the ground truth is huggingface_hub's file_download.py, _snapshot_download.py, hf_api.py):

    GET  /api/models/{owner}/{name}[/revision/{rev}]      model_info: JSON with "sha" and "siblings"
    GET  /api/models/{owner}/{name}/tree/{rev}[/{path}]   list_repo_tree (one page): [{"type", "path", "size", "oid"}]
    HEAD /{owner}/{name}/resolve/{rev}/{filename}         hf_hub_download metadata: X-Repo-Commit, ETag, Content-Length
    GET  /{owner}/{name}/resolve/{rev}/{filename}         the file, same headers

Errors are 404s with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`` (and
``X-Repo-Commit`` on EntryNotFound, which the client caches as "file does not exist").
Revisions in URLs are percent-encoded (``refs%2Fpr%2F1``). Every request is logged in ``requests``.

    with HubServer() as hub:
        commit = hub.add_commit("owner/name", folder, tags=["v1"])
        hf_hub_download("owner/name", "config.json", endpoint=hub.url, cache_dir=...)
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def git_blob_sha(content: bytes) -> str:
    """The git object id of a file: what the Hub sends as ETag for files not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit hash -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit hash

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


class HubServer:
    """Serves model repos built in the test; ``url`` is the endpoint to give huggingface_hub."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.failing_status: int | None = None  # answer every request with this status (a Hub outage)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ----------------------------------------------------------------- content

    def add_commit(self, repo_id: str, files: Path | str | dict[str, bytes], *, branch: str = "main",
                   tags: tuple[str, ...] | list[str] = ()) -> str:
        """Add a commit holding ``files`` (a folder or {path: bytes}) on ``branch``; return its hash."""
        if not isinstance(files, dict):
            folder = Path(files)
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        repo = self.repos.setdefault(repo_id, Repo())
        digest = hashlib.sha1(f"{repo_id}\n{repo.refs.get(branch, '')}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\n{git_blob_sha(files[path])}\n".encode())
        commit = digest.hexdigest()
        repo.commits[commit] = dict(files)
        repo.refs[branch] = commit
        for tag in tags:
            repo.refs[tag] = commit
        return commit

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        hub = self

        class Handler(_HubHandler):
            server_state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        """Stop serving; the port then refuses connections (an unreachable Hub)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> HubServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _HubHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped server has no live keep-alive connections.
    protocol_version = "HTTP/1.0"
    server_state: HubServer

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(send_body=False)

    def do_GET(self) -> None:
        self._route(send_body=True)

    # ----------------------------------------------------------------- routing

    def _route(self, send_body: bool) -> None:
        hub = self.server_state
        hub.requests.append((self.command, self.path))
        if hub.failing_status is not None:
            return self._error(hub.failing_status, None, "Service unavailable", send_body)
        segments = urlsplit(self.path).path.strip("/").split("/")
        if segments[:2] == ["api", "models"] and len(segments) >= 4:
            repo_id = "/".join(segments[2:4])
            rest = segments[4:]
            if not rest:
                return self._model_info(repo_id, "main", send_body)
            if rest[0] == "revision" and len(rest) >= 2:
                return self._model_info(repo_id, unquote("/".join(rest[1:])), send_body)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, unquote(rest[1]), unquote("/".join(rest[2:])), send_body)
        if len(segments) >= 5 and segments[2] == "resolve":
            return self._resolve(f"{segments[0]}/{segments[1]}", unquote(segments[3]),
                                 unquote("/".join(segments[4:])), send_body)
        self._error(404, None, f"no route for {self.path}", send_body)

    def _lookup(self, repo_id: str, revision: str, send_body: bool) -> tuple[Repo, str] | None:
        repo = self.server_state.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", send_body)
            return None
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", send_body)
            return None
        return repo, commit

    # ----------------------------------------------------------------- endpoints

    def _model_info(self, repo_id: str, revision: str, send_body: bool) -> None:
        found = self._lookup(repo_id, revision, send_body)
        if found is None:
            return
        repo, commit = found
        files = repo.commits[commit]
        self._json({"id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit,
                    "private": False, "disabled": False, "gated": False, "tags": [],
                    "siblings": [{"rfilename": path} for path in sorted(files)]}, send_body)

    def _tree(self, repo_id: str, revision: str, prefix: str, send_body: bool) -> None:
        found = self._lookup(repo_id, revision, send_body)
        if found is None:
            return
        repo, commit = found
        files = repo.commits[commit]
        entries = [{"type": "file", "path": path, "size": len(content), "oid": git_blob_sha(content)}
                   for path, content in sorted(files.items()) if not prefix or path.startswith(prefix + "/")]
        self._json(entries, send_body)

    def _resolve(self, repo_id: str, revision: str, filename: str, send_body: bool) -> None:
        found = self._lookup(repo_id, revision, send_body)
        if found is None:
            return
        repo, commit = found
        content = repo.commits[commit].get(filename)
        if content is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}", send_body,
                        extra={"X-Repo-Commit": commit})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(content)))
        self.send_header("ETag", f'"{git_blob_sha(content)}"')
        self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if send_body:
            self.wfile.write(content)

    # ----------------------------------------------------------------- responses

    def _json(self, payload, send_body: bool) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, send_body: bool,
               extra: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)
