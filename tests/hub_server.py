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

And the part it uses to publish (``create_repo``, ``upload_folder`` through the LFS protocol, which
huggingface_hub uses when ``HF_HUB_DISABLE_XET`` is set, and ``create_tag``), for model repos and Spaces
(``/api/spaces/...``, ``/spaces/{owner}/{name}.git/...``); writes need an ``Authorization`` header:

    POST /api/repos/create                                  {"name", "organization", "type", "sdk"}; 409 if it exists
    POST /api/validate-yaml                                 a README's front matter (a Space's needs a known sdk)
    POST /api/{models|spaces}/{owner}/{name}/preupload/{rev}  per file: "regular" or "lfs", the remote oid
    POST [spaces/]{owner}/{name}.git/info/lfs/objects/batch   basic transfer: a PUT href per missing object
    PUT  /lfs-upload/{sha256}                               the object's bytes (checked against the sha256); no token
    POST /api/{models|spaces}/{owner}/{name}/commit/{rev}     ndjson: header, file, lfsFile, deletedFile
    POST /api/{models|spaces}/{owner}/{name}/tag/{rev}        {"tag"}

As the Hub does, a commit that sends a binary file or one over 10 MiB as a regular (non-LFS) file is
refused with 400.

    with HubServer() as hub:
        commit = hub.add_commit("owner/name", folder, tags=["v1"])
        hf_hub_download("owner/name", "config.json", endpoint=hub.url, cache_dir=...)
"""

from __future__ import annotations

import base64
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


REGULAR_FILE_LIMIT = 10 * 1024 * 1024  # larger files must go through LFS


def needs_lfs(sample: bytes, size: int) -> bool:
    """The Hub's rule: binary files (a NUL byte in the first 512) and files over 10 MiB go through LFS."""
    return size > REGULAR_FILE_LIMIT or b"\0" in sample[:512]


def remote_oid(content: bytes) -> str:
    """What preupload reports for a stored file: its sha256 for LFS files, its git blob id otherwise."""
    return hashlib.sha256(content).hexdigest() if needs_lfs(content, len(content)) else git_blob_sha(content)


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit hash -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit hash

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


SPACE_SDKS = ("gradio", "docker", "static", "streamlit")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")


def front_matter_errors(content: str, repo_type: str) -> list[str]:
    """What the Hub refuses in a README's front matter: invalid YAML; for a Space, an unknown sdk or thumbnail
    color, a short_description over 60 characters, an app_port that is not a port number."""
    import yaml

    if not (content.startswith("---\n") and "\n---" in content[4:]):
        return []
    try:
        meta = yaml.safe_load(content[4:content.index("\n---", 4)]) or {}
    except yaml.YAMLError as error:
        return [f"invalid YAML: {error}"]
    if repo_type != "space":
        return []
    errors = []
    if meta.get("sdk") not in SPACE_SDKS:
        errors.append(f'"sdk" must be one of {", ".join(SPACE_SDKS)}: {meta.get("sdk")!r}')
    for key in ("colorFrom", "colorTo"):
        if key in meta and meta[key] not in SPACE_COLORS:
            errors.append(f'"{key}" must be one of {", ".join(SPACE_COLORS)}: {meta[key]!r}')
    if len(str(meta.get("short_description", ""))) > 60:
        errors.append('"short_description" length must be less than or equal to 60 characters long')
    if "app_port" in meta and not (isinstance(meta["app_port"], int) and 0 < meta["app_port"] < 65536):
        errors.append(f'"app_port" must be a port number: {meta["app_port"]!r}')
    return errors


class HubServer:
    """Serves model repos built in the test; ``url`` is the endpoint to give huggingface_hub."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}  # model repos
        self.spaces: dict[str, Repo] = {}
        self.space_sdks: dict[str, str] = {}  # Space -> the sdk it was created with
        self.private: set[str] = set()  # repos created private (model_info says so)
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, uploaded but perhaps not committed yet
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []  # each read request's Authorization header (None: none sent)
        self.gated: set[str] = set()  # repos whose files (not their listing) need a token, as gated repos do
        self.failing_status: int | None = None  # answer every request with this status (a Hub outage)
        self.refuse_lfs_uploads = False  # answer LFS uploads with 403 (an expired upload URL)
        self.omit_sizes = False  # list files without their sizes (as a mirror may)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ----------------------------------------------------------------- content

    def add_commit(self, repo_id: str, files: Path | str | dict[str, bytes], *, branch: str = "main",
                   tags: tuple[str, ...] | list[str] = (), space: bool = False) -> str:
        """Add a commit holding ``files`` (a folder or {path: bytes}) on ``branch``; return its hash."""
        if not isinstance(files, dict):
            folder = Path(files)
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        repo = (self.spaces if space else self.repos).setdefault(repo_id, Repo())
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
        hub.authorizations.append(self.headers.get("Authorization"))
        if hub.failing_status is not None:
            return self._error(hub.failing_status, None, "Service unavailable", send_body)
        segments = urlsplit(self.path).path.strip("/").split("/")
        if segments[:1] == ["api"] and len(segments) >= 4 and segments[1] in ("models", "spaces"):
            repos = hub.repos if segments[1] == "models" else hub.spaces
            repo_id = "/".join(segments[2:4])
            rest = segments[4:]
            if not rest:
                return self._model_info(repos, repo_id, "main", send_body)
            if rest[0] == "revision" and len(rest) >= 2:
                return self._model_info(repos, repo_id, unquote("/".join(rest[1:])), send_body)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repos, repo_id, unquote(rest[1]), unquote("/".join(rest[2:])), send_body)
        if len(segments) >= 5 and segments[2] == "resolve":
            return self._resolve(f"{segments[0]}/{segments[1]}", unquote(segments[3]),
                                 unquote("/".join(segments[4:])), send_body)
        self._error(404, None, f"no route for {self.path}", send_body)

    def do_POST(self) -> None:
        self._write_route()

    def do_PUT(self) -> None:
        self._write_route()

    def _write_route(self) -> None:
        hub = self.server_state
        hub.requests.append((self.command, self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if hub.failing_status is not None:
            return self._error(hub.failing_status, None, "Service unavailable", True)
        segments = urlsplit(self.path).path.strip("/").split("/")
        if self.command == "PUT" and len(segments) == 2 and segments[0] == "lfs-upload":  # a presigned URL: no token
            return self._lfs_upload(segments[1], body)
        if not self.headers.get("Authorization"):
            return self._error(401, None, "Invalid credentials in Authorization header", True)
        if self.command != "POST":
            return self._error(405, None, f"no {self.command} on {self.path}", True)
        if segments == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if segments == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if segments[-4:-2] == ["info", "lfs"] and segments[-2:] == ["objects", "batch"]:
            return self._lfs_batch(json.loads(body))
        if segments[:1] == ["api"] and len(segments) >= 6 and segments[1] in ("models", "spaces"):
            repos = hub.repos if segments[1] == "models" else hub.spaces
            repo_id, action, revision = "/".join(segments[2:4]), segments[4], unquote("/".join(segments[5:]))
            if action == "preupload":
                return self._preupload(repos, repo_id, revision, json.loads(body))
            if action == "commit":
                return self._commit(repos, repo_id, revision, segments[1], body)
            if action == "tag":
                return self._tag(repos, repo_id, revision, json.loads(body))
        self._error(404, None, f"no route for POST {self.path}", True)

    def _lookup(self, repos: dict[str, Repo], repo_id: str, revision: str,
                send_body: bool) -> tuple[Repo, str] | None:
        repo = repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", send_body)
            return None
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", send_body)
            return None
        return repo, commit

    # ----------------------------------------------------------------- endpoints

    def _model_info(self, repos: dict[str, Repo], repo_id: str, revision: str, send_body: bool) -> None:
        found = self._lookup(repos, repo_id, revision, send_body)
        if found is None:
            return
        repo, commit = found
        files = repo.commits[commit]
        self._json({"id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit,
                    "private": repo_id in self.server_state.private, "disabled": False, "gated": False, "tags": [],
                    "siblings": [{"rfilename": path, **({} if self.server_state.omit_sizes else {"size": len(content)})}
                                 for path, content in sorted(files.items())]}, send_body)

    def _tree(self, repos: dict[str, Repo], repo_id: str, revision: str, prefix: str, send_body: bool) -> None:
        found = self._lookup(repos, repo_id, revision, send_body)
        if found is None:
            return
        repo, commit = found
        files = repo.commits[commit]
        entries = [{"type": "file", "path": path, "size": len(content), "oid": git_blob_sha(content)}
                   for path, content in sorted(files.items()) if not prefix or path.startswith(prefix + "/")]
        self._json(entries, send_body)

    def _resolve(self, repo_id: str, revision: str, filename: str, send_body: bool) -> None:
        if repo_id in self.server_state.gated and not self.headers.get("Authorization"):
            return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted", send_body)
        found = self._lookup(self.server_state.repos, repo_id, revision, send_body)
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

    # ----------------------------------------------------------------- publishing

    def _create_repo(self, payload: dict) -> None:
        hub = self.server_state
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        space = payload.get("type") == "space"
        repos = hub.spaces if space else hub.repos
        url = f"{hub.url}/{'spaces/' if space else ''}{repo_id}"
        if repo_id in repos:
            return self._json({"error": "You already created this repo", "url": url}, True, status=409)
        if space:
            hub.space_sdks[repo_id] = payload.get("sdk")
        if payload.get("private") or payload.get("visibility") == "private":  # (the newer client sends visibility)
            hub.private.add(repo_id)
        # A new repo on the Hub holds a first commit: .gitattributes (and, for a Space, a README).
        initial = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        if space:
            initial["README.md"] = b"---\nsdk: " + str(payload.get("sdk")).encode() + b"\n---\n"
        hub.add_commit(repo_id, initial, space=space)
        self._json({"url": url}, True)

    def _validate_yaml(self, payload: dict) -> None:
        errors = front_matter_errors(payload["content"], payload.get("repoType", "model"))
        self._json({"errors": [{"message": e} for e in errors], "warnings": []}, True, status=400 if errors else 200)

    def _preupload(self, repos: dict[str, Repo], repo_id: str, revision: str, payload: dict) -> None:
        found = self._lookup(repos, repo_id, revision, True)
        if found is None:
            return
        repo, commit = found
        stored = repo.commits[commit]
        files = []
        for entry in payload["files"]:
            sample = base64.b64decode(entry["sample"])
            content = stored.get(entry["path"])
            files.append({"path": entry["path"], "uploadMode": "lfs" if needs_lfs(sample, entry["size"]) else "regular",
                          "shouldIgnore": False, "oid": None if content is None else remote_oid(content)})
        self._json({"files": files}, True)

    def _lfs_batch(self, payload: dict) -> None:
        hub = self.server_state
        objects = []
        for entry in payload["objects"]:
            item = {"oid": entry["oid"], "size": entry["size"]}
            if entry["oid"] not in hub.lfs_objects:  # nothing to send for an object the Hub holds
                item["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{entry['oid']}"}}
            objects.append(item)
        self._json({"transfer": "basic", "objects": objects}, True)

    def _lfs_upload(self, oid: str, body: bytes) -> None:
        if self.server_state.refuse_lfs_uploads:
            return self._error(403, None, "Request has expired", True)
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, None, "sha256 mismatch", True)
        self.server_state.lfs_objects[oid] = body
        self._json({}, True)

    def _commit(self, repos: dict[str, Repo], repo_id: str, revision: str, kind: str, body: bytes) -> None:
        found = self._lookup(repos, repo_id, revision, True)
        if found is None:
            return
        repo, commit = found
        files = dict(repo.commits[commit])
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "file":
                content = base64.b64decode(value["content"])
                if needs_lfs(content, len(content)):
                    return self._error(400, None, "Your push was rejected because it contains binary files or "
                                                  f"files larger than 10 MiB: {value['path']}", True)
                files[value["path"]] = content
            elif item["key"] == "lfsFile":
                content = self.server_state.lfs_objects.get(value["oid"])
                if content is None:
                    return self._error(400, None, f"LFS object {value['oid']} was not uploaded", True)
                files[value["path"]] = content
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif item["key"] != "header":
                return self._error(400, None, f"unsupported commit operation {item['key']}", True)
        new = self.server_state.add_commit(repo_id, files, branch=revision, space=repos is self.server_state.spaces)
        prefix = "spaces/" if kind == "spaces" else ""
        self._json({"commitUrl": f"{self.server_state.url}/{prefix}{repo_id}/commit/{new}", "commitOid": new,
                    "success": True}, True)

    def _tag(self, repos: dict[str, Repo], repo_id: str, revision: str, payload: dict) -> None:
        found = self._lookup(repos, repo_id, revision, True)
        if found is None:
            return
        repo, commit = found
        if payload["tag"] in repo.refs:
            return self._error(409, None, f"tag {payload['tag']} already exists", True)
        repo.refs[payload["tag"]] = commit
        self._json({}, True)

    # ----------------------------------------------------------------- responses

    def _json(self, payload, send_body: bool, status: int = 200) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
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
