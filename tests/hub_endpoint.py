"""A local HTTP endpoint answering the Hugging Face Hub calls that `huggingface_hub` makes, for the
real client pointed at it with HF_ENDPOINT.

Uploads: it creates a repository and commits a folder to it, recording each call and every file
committed. As the Hub does, it tells the client which files it already holds (their git object
ids), so the client leaves unchanged files out and commits nothing when none changed; a commit's
id is derived from the files it leaves.

Downloads: it serves model and dataset repositories from local folders (`add_repo`) as the Hub
does: repo info with the commit sha and siblings, the tree and paths-info listings (LFS files with
their sha256), and /resolve with X-Repo-Commit, ETag, X-Linked-Etag and X-Linked-Size. An LFS file
(above LFS_THRESHOLD bytes, or a weights or parquet file) redirects to a "CDN" on another host
name (localhost instead of 127.0.0.1), which the client reaches without the Authorization header,
as it reaches the Hub's signed CDN URLs. Range requests are answered with 206. It counts requests
per path and bytes served per file, and injects faults per file (`inject`): a 429 with
Retry-After, a 500, a connection cut mid-file, a corrupted byte, a slow body. A private repository
needs `Authorization: Bearer <token>` (401 without it or with another token); a gated one answers
401 without a token and 403 with another one; unknown repositories and revisions are 404, with the
X-Error-Code headers the client reads."""

import base64
import gzip
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_THRESHOLD = 100_000
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".parquet", ".gguf", ".arrow")
FAULTS = ("429", "500", "cut", "corrupt", "slow")
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def git_object_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return len(data) > LFS_THRESHOLD or path.endswith(LFS_SUFFIXES)


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


@dataclass
class Recorded:
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    created: list[dict] = field(default_factory=list)  # bodies of repository creations
    files: dict[str, bytes] = field(default_factory=dict)  # committed path -> content
    tokens: set = field(default_factory=set)  # the Authorization headers seen
    commits: list[str] = field(default_factory=list)  # commit ids, oldest first

    def commit(self) -> str:
        tree = "".join(f"{path} {git_object_id(data)}\n" for path, data in sorted(self.files.items()))
        self.commits.append(hashlib.sha1(((self.commits or [""])[-1] + tree).encode()).hexdigest())
        return self.commits[-1]


@dataclass
class ServedRepo:
    """A repository served for downloads: its commits (sha -> {path: content}), newest is main."""

    repo_id: str
    repo_type: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    main: str = ""
    token: Optional[str] = None  # private: only this token may read it
    gated: bool = False  # gated: without the token, 401 (no token) or 403 (another token)

    def files(self, revision: str) -> Optional[dict[str, bytes]]:
        return self.commits.get(self.main if revision == "main" else revision)

    def sha(self, revision: str) -> str:
        return self.main if revision == "main" else revision

    def entry(self, path: str, data: bytes) -> dict:
        if not is_lfs(path, data):
            return {"type": "file", "oid": git_object_id(data), "size": len(data), "path": path}
        pointer = lfs_pointer(data)
        return {"type": "file", "oid": git_object_id(pointer), "size": len(data), "path": path,
                "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}}

    def tree(self, revision: str, under: str, recursive: bool) -> list[dict]:
        prefix = f"{under.strip('/')}/" if under.strip("/") else ""
        entries, folders = [], set()
        for path, data in sorted(self.files(revision).items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            for depth in range(1, len(rest) if recursive else min(2, len(rest))):
                folders.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                entries.append(self.entry(path, data))
        return [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                for f in sorted(folders)] + entries


@dataclass
class Fault:
    kind: str  # one of FAULTS
    times: int = 1
    retry_after: int = 1  # seconds, for 429
    seconds: float = 2.0  # for slow: the body takes this long


def _split_api(rest: str) -> tuple[str, str, str]:
    """(repo_id, action, remainder) of what follows /api/<type>s/: action is '', 'revision',
    'tree' or 'paths-info'."""
    for action in ("revision", "tree", "paths-info"):
        repo_id, found, remainder = rest.partition(f"/{action}/")
        if found:
            return repo_id, action, remainder
    return rest.rstrip("/"), "", ""


def _handler(hub: "HubEndpoint"):
    recorded = hub.recorded

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _body(self) -> bytes:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return gzip.decompress(data) if self.headers.get("Content-Encoding") == "gzip" else data

        def _send(self, answer, code=200, headers=None):
            payload = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _error(self, code, error_code=None, message=None):
            headers = {"X-Error-Code": error_code} if error_code else {}
            if message:
                headers["X-Error-Message"] = message
            self._send({"error": message or error_code or "error"}, code, headers)

        def _count(self):
            split = urlsplit(self.path)
            hub.requests[(self.command, unquote(split.path))] += 1
            hub.log.append((time.monotonic(), self.command, unquote(split.path), self.headers.get("Range")))
            return split

        # --- uploads (tests/test_publish.py) ------------------------------------------

        def do_POST(self):
            split = self._count()
            if split.path.startswith(("/api/models/", "/api/datasets/")) and "/paths-info/" in split.path:
                return self._paths_info(split)
            body, base = self._body(), f"http://{self.headers['Host']}"
            recorded.calls.append(("POST", self.path))
            recorded.tokens.add(self.headers.get("Authorization"))
            if self.path == "/api/repos/create":
                request = json.loads(body)
                recorded.created.append(request)
                return self._send({"url": f"{base}/{request['organization']}/{request['name']}"})
            if self.path == "/api/validate-yaml":
                return self._send({"errors": [], "warnings": []})
            if "/preupload/" in self.path:  # every file inline in the commit, none through LFS
                files = json.loads(body)["files"]
                return self._send({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                              "oid": self._held(f["path"])} for f in files]})
            if "/commit/" in self.path:
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        recorded.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                repo, oid = self.path.split("/api/models/")[1].split("/commit/")[0], recorded.commit()
                return self._send({"commitUrl": f"{base}/{repo}/commit/{oid}", "commitOid": oid})
            return self._send({"error": f"not here: {self.path}"}, 404)

        def _held(self, path):
            return git_object_id(recorded.files[path]) if path in recorded.files else None

        # --- downloads ------------------------------------------------------------------

        def do_GET(self):
            split = self._count()
            path = unquote(split.path)
            if path.startswith("/cdn/"):
                return self._cdn(split)
            served = self._served_api(path) or self._served_file(path)
            if served is not None:
                return served(split)
            recorded.calls.append(("GET", self.path))
            if "/revision/" in self.path and recorded.commits:  # the uploaded repository's head
                repo = self.path.split("/api/models/")[1].split("/revision/")[0]
                return self._send({"id": repo, "sha": recorded.commits[-1], "private": True})
            return self._send({"error": f"not here: {self.path}"}, 404)

        def do_HEAD(self):
            split = self._count()
            path = unquote(split.path)
            if path.startswith("/cdn/"):
                return self._cdn(split)
            served = self._served_file(path)
            if served is not None:
                return served(split)
            return self._error(404, "RepoNotFound", "Repository not found")

        def _served_api(self, path):
            for repo_type in ("model", "dataset"):
                prefix = f"/api/{repo_type}s/"
                if path.startswith(prefix):
                    repo_id, action, remainder = _split_api(path[len(prefix):])
                    if hub.repo(repo_type, repo_id) is None and hub.uploaded(repo_id):
                        return None  # a repository the upload side created: it answers
                    return lambda split: self._api(repo_type, repo_id, action, remainder, split)
            return None

        def _served_file(self, path):
            dataset = path.startswith("/datasets/")
            repo_type, rest = ("dataset", path[len("/datasets/"):]) if dataset else ("model", path[1:])
            repo_id, found, remainder = rest.partition("/resolve/")
            if not found:
                return None
            revision, _, filename = remainder.partition("/")
            return lambda split: self._resolve(repo_type, repo_id, revision, filename)

        def _repo_or_error(self, repo_type, repo_id, revision) -> Optional[ServedRepo]:
            """The repository, once the caller may read it at this revision; else answers the error."""
            repo = hub.repo(repo_type, repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            if not self._allowed(repo):
                return None
            if self._answered(hub.take_fault(repo_id, None)):
                return None
            if repo.files(revision) is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return repo

        def _answered(self, fault: Optional[Fault]) -> bool:
            """Whether the fault is an error answer, now sent (the others change the body)."""
            if fault is not None and fault.kind == "429":
                self._send({"error": "rate limited"}, 429, {"Retry-After": str(fault.retry_after)})
                return True
            if fault is not None and fault.kind == "500":
                self._send({"error": "internal error"}, 500)
                return True
            return False

        def _allowed(self, repo: ServedRepo) -> bool:
            if repo.token is None:
                return True
            given = self.headers.get("Authorization")
            if given == f"Bearer {repo.token}":
                return True
            if repo.gated:
                self._error(401 if given is None else 403, "GatedRepo",
                            f"Access to {repo.repo_type} {repo.repo_id} is restricted.")
            elif given is None:
                self._error(401, "RepoNotFound", "Repository not found")
            else:
                self._error(401, None, INVALID_CREDENTIALS)
            return False

        def _api(self, repo_type, repo_id, action, remainder, split):
            revision = unquote(remainder.split("/", 1)[0]) if action in ("revision", "tree") else "main"
            repo = self._repo_or_error(repo_type, repo_id, revision)
            if repo is None:
                return None
            if action in ("", "revision"):
                return self._send(hub.info(repo, revision))
            under = remainder.split("/", 1)[1] if "/" in remainder else ""
            recursive = parse_qs(split.query).get("recursive", ["False"])[0].lower() == "true"
            return self._send(repo.tree(revision, under, recursive))

        def _paths_info(self, split):
            path = unquote(split.path)
            repo_type = "dataset" if path.startswith("/api/datasets/") else "model"
            repo_id, _, revision = _split_api(path[len(f"/api/{repo_type}s/"):])
            form = parse_qs(self._body().decode())
            repo = self._repo_or_error(repo_type, repo_id, revision)
            if repo is None:
                return None
            files, wanted = repo.files(revision), set(form.get("paths", []))
            entries = [repo.entry(p, d) for p, d in sorted(files.items()) if p in wanted]
            folders = [{"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
                       for p in sorted(wanted) if any(f.startswith(p.rstrip("/") + "/") for f in files)]
            return self._send(folders + entries)

        def _resolve(self, repo_type, repo_id, revision, filename):
            revision = unquote(revision)
            repo = self._repo_or_error(repo_type, repo_id, revision)
            if repo is None:
                return None
            data = repo.files(revision).get(filename)
            commit = {"X-Repo-Commit": repo.sha(revision)}
            if data is None:
                return self._send({"error": "Entry not found"}, 404, {"X-Error-Code": "EntryNotFound", **commit})
            if is_lfs(filename, data):
                sha256 = hashlib.sha256(data).hexdigest()
                cdn = (f"http://localhost:{hub.port}/cdn/{sha256}?repo={quote(repo_id)}&file={quote(filename)}"
                       f"&type={repo_type}")
                self.send_response(302)
                for name, value in {**commit, "Location": cdn, "X-Linked-Etag": f'"{sha256}"',
                                    "X-Linked-Size": str(len(data)), "ETag": f'"{git_object_id(lfs_pointer(data))}"',
                                    "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()
                return None
            return self._content(repo_id, filename, data, {**commit, "ETag": f'"{git_object_id(data)}"'})

        def _cdn(self, split):
            query = parse_qs(split.query)
            repo_id, filename = query["repo"][0], query["file"][0]
            repo = hub.repo(query.get("type", ["model"])[0], repo_id)
            sha256 = unquote(split.path).rsplit("/", 1)[1]
            data = next((d for files in repo.commits.values() for p, d in files.items()
                         if p == filename and hashlib.sha256(d).hexdigest() == sha256), None) if repo else None
            if data is None:
                return self._send({"error": "no such object"}, 404)
            return self._content(repo_id, filename, data, {"ETag": f'"{sha256}"'})

        def _content(self, repo_id, filename, data, headers):
            """The file's bytes (or the asked range of them), with the fault due for it, if any."""
            fault = hub.take_fault(repo_id, filename) if self.command == "GET" else None
            if self.command == "GET":
                hub.fetches.append((time.monotonic(), repo_id, filename, self.headers.get("Range"),
                                    fault.kind if fault else None))
            if self._answered(fault):
                return None
            start, status = 0, 200
            wanted = self.headers.get("Range", "")
            if wanted.startswith("bytes="):
                start = int(wanted[len("bytes="):].split("-")[0] or 0)
                status = 206
            body = data[start:]
            if fault and fault.kind == "corrupt" and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "GET":
                return None
            hub.downloads[(repo_id, filename)] += 1
            self._write(repo_id, filename, body, fault)
            return None

        def _write(self, repo_id, filename, body, fault):
            if fault and fault.kind == "cut":
                half = body[: max(1, len(body) // 2)]
                self.wfile.write(half)
                self.wfile.flush()
                hub.served[(repo_id, filename)] += len(half)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            chunks = 20 if fault and fault.kind == "slow" else 1
            size = max(1, -(-len(body) // chunks))
            for offset in range(0, len(body), size):
                self.wfile.write(body[offset: offset + size])
                self.wfile.flush()
                hub.served[(repo_id, filename)] += len(body[offset: offset + size])
                if chunks > 1:
                    time.sleep(fault.seconds / chunks)

    return Hub


class HubEndpoint:
    def __init__(self):
        self.recorded = Recorded()
        self.repositories: dict[tuple[str, str], ServedRepo] = {}
        self.requests: Counter = Counter()  # (method, path) -> requests
        self.downloads: Counter = Counter()  # (repo_id, filename) -> content responses (200 or 206)
        self.served: Counter = Counter()  # (repo_id, filename) -> body bytes sent
        self.log: list[tuple[float, str, str, Optional[str]]] = []  # (time, method, path, Range)
        # (time, repo_id, filename, Range, fault kind) of each GET of a file's content
        self.fetches: list[tuple[float, str, str, Optional[str], Optional[str]]] = []
        self.faults: dict[tuple[str, Optional[str]], list[Fault]] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def add_repo(self, repo_id: str, folder: Path, repo_type: str = "model", token: Optional[str] = None,
                 gated: bool = False) -> str:
        """Serve every file under folder as a new commit on main of repo_id; its commit sha. A repo
        with a token is private (gated: a gated one) and needs `Authorization: Bearer <token>`."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
                 if p.is_file()}
        repo = self.repositories.setdefault((repo_type, repo_id), ServedRepo(repo_id, repo_type))
        repo.token, repo.gated = token, gated
        tree = "".join(f"{path} {git_object_id(data)}\n" for path, data in files.items())
        sha = hashlib.sha1((repo.main + tree).encode()).hexdigest()
        repo.commits[sha], repo.main = files, sha
        return sha

    def repo(self, repo_type: str, repo_id: str) -> Optional[ServedRepo]:
        return self.repositories.get((repo_type, repo_id))

    def uploaded(self, repo_id: str) -> bool:
        return any(f"{c.get('organization')}/{c.get('name')}" == repo_id for c in self.recorded.created)

    def inject(self, repo_id: str, filename: Optional[str], kind: str, times: int = 1, **settings) -> None:
        """The next `times` GETs of the file's content answer with this fault: 429 (Retry-After
        retry_after), 500, cut (half the body, then the connection closes), corrupt (one byte
        flipped), slow (the body over `seconds`). filename None: the repository's API calls."""
        assert kind in FAULTS, kind
        self.faults.setdefault((repo_id, filename), []).append(Fault(kind, times, **settings))

    def take_fault(self, repo_id: str, filename: Optional[str]) -> Optional[Fault]:
        """The fault due for this request, counted as used; None."""
        with self._lock:
            queue = self.faults.get((repo_id, filename)) or []
            if not queue:
                return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0:
                queue.pop(0)
            return fault

    def content_gets(self, repo_id: str, filename: str) -> list[tuple[float, Optional[str], Optional[str]]]:
        """(time, Range, fault) of each GET of a file's content (at /resolve, or at the CDN)."""
        return [(at, wanted, fault) for at, repo, name, wanted, fault in self.fetches
                if (repo, name) == (repo_id, filename)]

    def info(self, repo: ServedRepo, revision: str) -> dict:
        sha = repo.sha(revision)
        return {"_id": sha[:24], "id": repo.repo_id, "sha": sha, "private": repo.token is not None,
                "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": p} for p in sorted(repo.files(revision))]}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
