"""A local HTTP endpoint answering the Hugging Face Hub calls that `huggingface_hub` makes to
create a repository and commit a folder to it, recording each call and every file committed.
The real client (HfApi) is pointed at it with HF_ENDPOINT."""

import base64
import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT_OID = "5f2b7c0e" * 5


@dataclass
class Recorded:
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    created: list[dict] = field(default_factory=list)  # bodies of repository creations
    files: dict[str, bytes] = field(default_factory=dict)  # committed path -> content
    tokens: set = field(default_factory=set)  # the Authorization headers seen


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
                return self._send({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                             for f in files]})
            if "/commit/" in self.path:
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        recorded.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                repo = self.path.split("/api/models/")[1].split("/commit/")[0]
                return self._send({"commitUrl": f"{base}/{repo}/commit/{COMMIT_OID}", "commitOid": COMMIT_OID})
            return self._send({"error": f"not here: {self.path}"}, 404)

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
