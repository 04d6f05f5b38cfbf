"""A fake Hugging Face Hub on localhost: enough of the Hub's HTTP API for huggingface_hub's ``model_info``,
``snapshot_download`` and ``hf_hub_download`` (point ``HF_ENDPOINT`` at :attr:`FakeHub.url`).

- ``GET /api/models/{repo_id}[/revision/{revision}]``: ``id``, ``sha`` and ``siblings`` (with ``size``, ``blobId``
  and ``lfs`` when ``blobs=true`` asks for them, as the Hub does);
- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: the file, with ``X-Repo-Commit``, ``ETag`` (and for
  weights ``X-Linked-Etag``/``X-Linked-Size``, as the Hub sends for LFS files) and ``Content-Length``; ``Range``.

Errors carry the Hub's ``X-Error-Code`` header, which huggingface_hub turns into its exception classes: an unknown
repo is ``RepoNotFound`` (401 without a token, as the Hub answers anonymous callers, else 404), a gated repo without
a token is ``GatedRepo`` 401 and with a wrong one ``GatedRepo`` 403, an unknown branch or commit
``RevisionNotFound`` 404, a missing file ``EntryNotFound`` 404. Every request is recorded in :attr:`FakeHub.requests`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub", "Seen"]

_LFS = (".safetensors", ".bin", ".h5", ".onnx", ".msgpack", ".ot")


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # unquoted, without the query
    token: str | None  # the bearer token sent, if any


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class FakeHub:
    """``with FakeHub(token="hf_x") as hub: hub.push("org/name", folder)``; ``hub.url`` is the endpoint."""

    def __init__(self, *, token: str) -> None:
        self.token = token
        self.requests: list[Seen] = []
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub._serve(self, body=True)

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the test output is for failures
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def push(self, repo_id: str, files: Path | Mapping[str, bytes], *, gated: bool = False,
             branch: str = "main") -> str:
        """A new commit on ``branch`` holding exactly ``files`` (a folder, or name -> bytes); returns its sha."""
        if isinstance(files, Path):
            content = {p.relative_to(files).as_posix(): p.read_bytes() for p in sorted(files.rglob("*"))
                       if p.is_file()}
        else:
            content = dict(files)
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            repo.gated = repo.gated or gated
            digest = hashlib.sha1((repo.refs.get(branch, "") + repo_id).encode())
            for name in sorted(content):
                digest.update(name.encode() + b"\0" + hashlib.sha256(content[name]).digest())
            sha = digest.hexdigest()
            repo.commits[sha] = content
            repo.refs[branch] = sha
        return sha

    def seen(self, method: str | None = None, contains: str = "") -> list[Seen]:
        """The requests so far, optionally only those of ``method`` whose path contains ``contains``."""
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    # -- the HTTP side ---------------------------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler, *, body: bool) -> None:
        split = urlsplit(h.path)
        auth = h.headers.get("authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        with self._lock:
            self.requests.append(Seen(h.command, unquote(split.path), token))
        try:
            if split.path.startswith("/api/models/"):
                self._api(h, split.path[len("/api/models/"):], parse_qs(split.query), token, body)
            elif "/resolve/" in split.path:
                self._resolve(h, split.path, token, body)
            else:
                raise _Refused(404, "NotFound", "This fake Hub serves /api/models/... and /REPO/resolve/... only.")
        except _Refused as err:
            headers = {"X-Error-Code": err.code, "X-Error-Message": err.message}
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
            self._send(h, err.status, json.dumps({"error": err.message}).encode(), "application/json", headers, body)

    def _lookup(self, repo_id: str, revision: str, token: str | None) -> tuple[_Repo, str]:
        with self._lock:
            repo = self._repos.get(repo_id)
        if repo is None:
            raise _Refused(401 if token is None else 404, "RepoNotFound", "Repository not found")
        if repo.gated and token != self.token:
            raise _Refused(401 if token is None else 403, "GatedRepo",
                           f"Access to model {repo_id} is restricted. You must have access to it and be "
                           "authenticated to access it. Please log in.")
        sha = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if sha is None:
            raise _Refused(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, sha

    def _api(self, h: BaseHTTPRequestHandler, rest: str, query: dict[str, list[str]], token: str | None,
             body: bool) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        repo, sha = self._lookup(unquote(repo_id), unquote(revision) or "main", token)
        blobs = query.get("blobs", [""])[0].lower() in ("1", "true")
        siblings = []
        for name, data in sorted(repo.commits[sha].items()):
            entry: dict[str, Any] = {"rfilename": name}
            if blobs:
                entry.update(size=len(data), blobId=_git_oid(data))
                if name.endswith(_LFS):
                    entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(entry)
        info = {"_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": unquote(repo_id),
                "modelId": unquote(repo_id), "sha": sha, "private": False, "gated": "manual" if repo.gated else False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": [], "library_name": "transformers",
                "lastModified": "2024-01-01T00:00:00.000Z", "siblings": siblings}
        self._send(h, 200, json.dumps(info).encode(), "application/json", {}, body)

    def _resolve(self, h: BaseHTTPRequestHandler, path: str, token: str | None, body: bool) -> None:
        repo_id, _, rest = path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        repo, sha = self._lookup(unquote(repo_id), unquote(revision), token)
        data = repo.commits[sha].get(unquote(filename))
        if data is None:
            raise _Refused(404, "EntryNotFound", f"{unquote(filename)} does not exist at {sha}", commit=sha)
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if unquote(filename).endswith(_LFS):
            etag = hashlib.sha256(data).hexdigest()
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        else:
            etag = _git_oid(data)
        headers["ETag"] = f'"{etag}"'
        status, wanted = 200, h.headers.get("range", "")
        if body and wanted.startswith("bytes=") and wanted.endswith("-"):  # a resumed download
            start = int(wanted[len("bytes="):-1])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            status, data = 206, data[start:]
        self._send(h, status, data, "application/octet-stream", headers, body)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str, headers: dict[str, str],
              body: bool) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        if body:
            h.wfile.write(data)


def _git_oid(data: bytes) -> str:
    """The git blob id the Hub gives a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
