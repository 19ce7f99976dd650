"""A small in-memory Hugging Face Hub for tests: the real `huggingface_hub` client talks to it over HTTP.

Implemented (model repos only; repo ids are always `namespace/name`):
  POST     /api/repos/create                          create a repo with an initial `.gitattributes` commit;
                                                      409 if it exists, 403 outside the user's namespaces
  GET      /api/whoami-v2                             the token's user and orgs
  POST     /api/validate-yaml                         accepts any README metadata
  GET      /api/models/{repo}[/revision/{rev}]        model_info / repo_info: sha, siblings (+ size, blobId, lfs
                                                      with ?blobs=1)
  GET      /api/models/{repo}/tree/{rev}[/{path}]     list_repo_tree (?recursive=1), a single page
  POST     /api/models/{repo}/preupload/{rev}         upload mode per file: "lfs" when `.gitattributes` says so,
                                                      for files of 10 MB or more and for binary samples
  POST     /{repo}.git/info/lfs/objects/batch         LFS batch API (basic transfer): a signed upload href and a
                                                      verify href per object not yet stored in the repo
  PUT      /lfs-upload/{repo}/{oid}?sig=              the "storage bucket" (another host): checks sha256 and size
  POST     /{repo}.git/info/lfs/objects/verify        LFS verify
  POST     /api/models/{repo}/commit/{branch}         ndjson commit: header (parentCommit), file, lfsFile,
                                                      deletedFile, deletedFolder; rejects binary regular files
  HEAD/GET /{repo}/resolve/{rev}/{path}               regular files: 200 with X-Repo-Commit and ETag (git blob sha1);
                                                      LFS files: 302 to the "CDN" host with X-Linked-Etag (sha256)
                                                      and X-Linked-Size, as the Hub does without Xet
  HEAD/GET /lfs-cdn/{repo}/{oid}?sig=                 the "CDN" (another host, no auth needed)
Errors as on the Hub: X-Error-Code RepoNotFound (401 without a token, 404 with one; private repos of others look
missing), RevisionNotFound, EntryNotFound (with X-Repo-Commit); 401 for an unknown token or a write without one;
403 for a write to a namespace that is neither the user nor one of its orgs. Revisions are `main` or a commit sha.

Not implemented: datasets/spaces, branches other than `main` (create_branch, refs), tags, pull requests
(create_pr), multipart LFS, Xet, pagination, `.gitignore`, cardData parsing, repo deletion, gated repos.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores any file of 10 MB or more with LFS
LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs *.mlmodel *.model *.msgpack *.npy *.npz *.onnx"
    " *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar *.tflite"
    " *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
# What the Hub commits to a new model repo.
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub uses as ETag of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    lfs: frozenset[str]  # paths stored through LFS
    date: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")

    def oid(self, path: str) -> str:
        """The oid the client compares against to skip unchanged files: sha256 for LFS, git sha1 otherwise."""
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if path in self.lfs else git_blob_sha1(data)


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit sha
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content, filled by LFS uploads

    def add_commit(self, branch: str, message: str, files: dict[str, bytes], lfs: set[str]) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(f"{parent}\n{message}\n{time.time_ns()}".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_sha1(files[path])}\n".encode())
        commit = Commit(digest.hexdigest(), parent, message, dict(files), frozenset(lfs))
        self.commits[commit.sha] = commit
        self.branches[branch] = commit.sha
        return commit


class HubError(Exception):
    """An error response, with the headers the client uses to pick its exception class."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, **body):
        super().__init__(message)
        self.status, self.body = status, {"error": message, **body}
        self.headers = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}


class HubServer:
    """An in-memory Hub on `host`: `tokens` maps a token to its user, `orgs` a user to the orgs it can write to."""

    def __init__(self, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None, host: str = "127.0.0.1"):
        self.tokens, self.orgs = tokens, orgs or {}
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), for tests to inspect
        self.errors: list[str] = []  # tracebacks of server bugs (answered with 500)
        self.lock = threading.Lock()
        self._secret = secrets.token_bytes(16)
        self._httpd = ThreadingHTTPServer((host, 0), _Handler)
        self._httpd.hub = self
        port = self._httpd.server_address[1]
        self.url = f"http://{host}:{port}"
        # LFS uploads and downloads go to another host, as they go to S3 / a CDN from the Hub (no auth header sent).
        self.storage_url = f"http://localhost:{port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, []))

    def sign(self, repo_id: str, oid: str) -> str:
        return hmac.new(self._secret, f"{repo_id}/{oid}".encode(), "sha256").hexdigest()

    def is_lfs(self, path: str, size: int, sample: bytes, gitattributes: bytes) -> bool:
        """Whether the Hub would store this file with LFS: `.gitattributes` filter, size, or binary content."""
        patterns = [line.split()[0] for line in gitattributes.decode().splitlines() if "filter=lfs" in line]
        # As in git, a pattern without a slash matches the file name in any folder.
        matched = any(fnmatch(path if "/" in p else path.rsplit("/", 1)[-1], p) for p in patterns)
        return size > 0 and (matched or size >= LFS_THRESHOLD or b"\0" in sample[:512])


class _Handler(BaseHTTPRequestHandler):
    server_version = "LocalHub/0.1"
    hub: HubServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_request(self, code="-", size="-") -> None:
        self.server.hub.requests.append((self.command, self.path, int(code)))

    def log_message(self, format, *args) -> None:
        pass  # keep pytest output clean; requests are recorded in `hub.requests`

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self.hub = self.server.hub
        path, _, query = self.path.partition("?")
        self.query = {k: v[0] for k, v in parse_qs(query).items()}
        if self.headers.get("Transfer-Encoding"):  # as S3 does; huggingface_hub always sends a Content-Length
            self.close_connection = True
            return self._send(411, {"error": "Content-Length required: chunked uploads are not supported"})
        # Read the body first, so that an early error response doesn't reset the connection under the client.
        self.body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        for methods, pattern, handler in ROUTES:
            match = re.fullmatch(pattern, path)
            if method in methods and match:
                try:
                    with self.hub.lock:
                        handler(self, **{k: unquote(v) if v else v for k, v in match.groupdict().items()})
                except HubError as e:
                    self._send(e.status, e.body, e.headers)
                except Exception:
                    self.hub.errors.append(traceback.format_exc())
                    self._send(500, {"error": "Internal Error"})
                return
        self._send(404, {"error": "Sorry, we can't find the page you are looking for."})

    def _send(self, status: int, body: dict | list | bytes | None, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        user = self.hub.tokens.get(auth.removeprefix("Bearer ").strip())
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _check_write(self, namespace: str) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid username or password.")
        if not self.hub.can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to write to the namespace {namespace!r}")
        return user

    def _repo(self, repo_id: str, write: bool = False) -> Repo:
        user = self._check_write(repo_id.split("/")[0]) if write else self._user()
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self.hub.can_write(user, repo_id.split("/")[0])):
            raise HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit:
        commit = repo.commits.get(repo.branches.get(rev, rev))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _json(self) -> dict:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from None

    # --- endpoints --------------------------------------------------------------------------------------------

    def create_repo(self) -> None:
        payload = self._json()
        if payload.get("type", "model") != "model":
            raise HubError(400, "This test Hub only hosts model repos")
        user = self._check_write(payload.get("organization") or self._user() or "")
        name = payload.get("name", "")
        if not re.fullmatch(r"[\w][\w.-]{0,95}", name) or ".." in name or "--" in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        repo_id = f"{payload.get('organization') or user}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            raise HubError(409, "You already created this model repo", url=url)  # the client reads the url
        private = payload.get("visibility") == "private" or payload.get("private") is True
        repo = self.hub.repos[repo_id] = Repo(repo_id, private)
        repo.add_commit("main", "initial commit", {".gitattributes": GITATTRIBUTES}, set())
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def whoami(self) -> None:
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [{"type": "org", "name": org} for org in self.hub.orgs.get(user, [])]
        token_info = {"displayName": "local-hub", "role": "write"}
        self._send(200, {"type": "user", "name": user, "orgs": orgs, "auth": {"accessToken": token_info}})

    def validate_yaml(self) -> None:
        self._send(200, {"errors": [], "warnings": []})

    def info(self, repo: str, rev: str | None = None) -> None:
        r = self._repo(repo)
        commit = self._commit(r, rev or "main")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict = {"rfilename": path}
            if self.query.get("blobs") in ("1", "true", "True"):
                sibling.update(self._file_entry(commit, path))
                sibling["blobId"] = sibling.pop("oid")
                if "lfs" in sibling:
                    sibling["lfs"]["sha256"] = sibling["lfs"].pop("oid")
            siblings.append(sibling)
        first = next(iter(r.commits.values()))
        namespace = repo.split("/")[0]
        self._send(200, {
            "id": repo, "modelId": repo, "author": namespace, "sha": commit.sha, "private": r.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            "createdAt": first.date, "lastModified": commit.date,
        })  # fmt: skip

    def _file_entry(self, commit: Commit, path: str) -> dict:
        data = commit.files[path]
        if path not in commit.lfs:
            return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        pointer = lfs_pointer(data)
        lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
        return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(pointer), "lfs": lfs}

    def tree(self, repo: str, rev: str, path: str | None = None) -> None:
        commit = self._commit(self._repo(repo), rev)
        prefix = f"{path.strip('/')}/" if path else ""
        recursive = self.query.get("recursive") in ("1", "true", "True")
        entries: dict[str, dict] = {}
        for file in sorted(f for f in commit.files if f.startswith(prefix)):
            parts = file[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = prefix + "/".join(parts[:depth])
                tree_id = hashlib.sha1(folder.encode()).hexdigest()
                entries[folder] = {"type": "directory", "path": folder, "oid": tree_id}
            if recursive or len(parts) == 1:
                entries[file] = self._file_entry(commit, file)
        if prefix and not entries:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        self._send(200, list(entries.values()))

    def preupload(self, repo: str, rev: str) -> None:
        commit = self._commit(self._repo(repo, write=True), rev)
        gitattributes = commit.files.get(".gitattributes", b"")
        files = []
        for f in self._json()["files"]:
            lfs = self.hub.is_lfs(f["path"], f["size"], base64.b64decode(f["sample"]), gitattributes)
            oid = commit.oid(f["path"]) if f["path"] in commit.files else None
            mode = "lfs" if lfs else "regular"
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": files, "commitOid": commit.sha})

    def lfs_batch(self, repo: str) -> None:
        r = self._repo(repo, write=True)
        payload = self._json()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported")
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], obj["size"]
            if oid in r.lfs:  # already stored: no actions, the client skips the upload
                objects.append({"oid": oid, "size": size})
                continue
            upload = f"{self.hub.storage_url}/lfs-upload/{repo}/{oid}?sig={self.hub.sign(repo, oid)}&size={size}"
            verify = f"{self.hub.url}/{repo}.git/info/lfs/objects/verify"
            actions = {"upload": {"href": upload}, "verify": {"href": verify}}
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, repo: str, oid: str) -> None:
        if not hmac.compare_digest(self.query.get("sig", ""), self.hub.sign(repo, oid)):
            raise HubError(403, "Invalid signature")
        if hashlib.sha256(self.body).hexdigest() != oid or len(self.body) != int(self.query.get("size", -1)):
            raise HubError(400, "The uploaded content does not match the announced oid and size")
        self.hub.repos[repo].lfs[oid] = self.body
        self._send(200, None, {"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'})

    def lfs_verify(self, repo: str) -> None:
        payload = self._json()
        data = self._repo(repo, write=True).lfs.get(payload["oid"])
        if data is None or len(data) != payload["size"]:
            raise HubError(404, f"LFS object {payload['oid']} was not uploaded")
        self._send(200, {"success": True})

    def commit(self, repo: str, rev: str) -> None:
        r = self._repo(repo, write=True)
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by this test Hub")
        if rev not in r.branches:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header, head = lines[0]["value"], r.commits[r.branches[rev]]
        if header.get("parentCommit") not in (None, head.sha):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files, lfs = dict(head.files), set(head.lfs)
        gitattributes = files.get(".gitattributes", b"")
        for op in lines[1:]:
            key, value = op["key"], op["value"]
            path = value["path"].strip("/")
            if key == "file":
                data = base64.b64decode(value["content"])
                if self.hub.is_lfs(path, len(data), data, gitattributes):
                    raise HubError(400, f"Your push was rejected: {path} must be stored with LFS")
                files[path] = data
                lfs.discard(path)
            elif key == "lfsFile":
                data = r.lfs.get(value["oid"])
                if data is None or len(data) != value.get("size", len(data)):
                    raise HubError(422, f"Your push was rejected: the LFS object of {path} was not uploaded")
                files[path] = data
                lfs.add(path)
            elif key in ("deletedFile", "deletedFolder"):
                gone = [f for f in files if f == path or (key == "deletedFolder" and f.startswith(path + "/"))]
                if not gone:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for f in gone:
                    del files[f]
                    lfs.discard(f)
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        commit = r.add_commit(rev, header.get("summary", ""), files, lfs)
        url = f"{self.hub.url}/{repo}/commit/{commit.sha}"
        self._send(200, {"success": True, "commitOid": commit.sha, "commitUrl": url, "hookOutput": ""})

    def resolve(self, repo: str, rev: str, path: str) -> None:
        commit = self._commit(self._repo(repo), rev)
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        data, headers = commit.files[path], {"X-Repo-Commit": commit.sha, "Content-Type": "application/octet-stream"}
        if path not in commit.lfs:
            return self._send(200, data, {**headers, "ETag": f'"{git_blob_sha1(data)}"'})
        oid = hashlib.sha256(data).hexdigest()
        headers["Location"] = f"{self.hub.storage_url}/lfs-cdn/{repo}/{oid}?sig={self.hub.sign(repo, oid)}"
        headers.update({"ETag": f'"{git_blob_sha1(lfs_pointer(data))}"', "X-Linked-Etag": f'"{oid}"'})
        self._send(302, None, {**headers, "X-Linked-Size": str(len(data))})

    def cdn(self, repo: str, oid: str) -> None:
        data = self.hub.repos[repo].lfs.get(oid) if repo in self.hub.repos else None
        if data is None or not hmac.compare_digest(self.query.get("sig", ""), self.hub.sign(repo, oid)):
            raise HubError(403, "Access denied")
        self._send(200, data, {"ETag": f'"{oid}"', "Content-Type": "application/octet-stream"})


ROUTES = [
    ({"POST"}, r"/api/repos/create", _Handler.create_repo),
    ({"GET"}, r"/api/whoami-v2", _Handler.whoami),
    ({"POST"}, r"/api/validate-yaml", _Handler.validate_yaml),
    ({"GET"}, rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?", _Handler.info),
    ({"GET"}, rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", _Handler.tree),
    ({"POST"}, rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ({"POST"}, rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", _Handler.commit),
    ({"POST"}, rf"/{REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch),
    ({"POST"}, rf"/{REPO}\.git/info/lfs/objects/verify", _Handler.lfs_verify),
    ({"PUT"}, rf"/lfs-upload/{REPO}/(?P<oid>[0-9a-f]{{64}})", _Handler.lfs_upload),
    ({"GET", "HEAD"}, rf"/lfs-cdn/{REPO}/(?P<oid>[0-9a-f]{{64}})", _Handler.cdn),
    ({"GET", "HEAD"}, rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]
