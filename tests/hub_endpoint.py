"""A local HTTP endpoint answering the Hugging Face Hub calls that `huggingface_hub` makes to
create a repository and commit a folder to it, recording each call and every file committed.
The real client (HfApi) is pointed at it with HF_ENDPOINT. As the Hub does, it tells the client
which files it already holds (their git object ids), so the client leaves unchanged files out
and commits nothing when none changed; a commit's id is derived from the files it leaves."""

import base64
import gzip
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer



def git_object_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


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


def _handler(recorded: Recorded):
    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _body(self) -> bytes:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return gzip.decompress(data) if self.headers.get("Content-Encoding") == "gzip" else data

        def _send(self, answer, code=200):
            payload = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self):
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

        def do_GET(self):
            recorded.calls.append(("GET", self.path))
            if "/revision/" in self.path and recorded.commits:  # the repository's head
                repo = self.path.split("/api/models/")[1].split("/revision/")[0]
                return self._send({"id": repo, "sha": recorded.commits[-1], "private": True})
            return self._send({"error": f"not here: {self.path}"}, 404)

        def _held(self, path):
            return git_object_id(recorded.files[path]) if path in recorded.files else None

    return Hub


class HubEndpoint:
    def __init__(self):
        self.recorded = Recorded()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.recorded))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
