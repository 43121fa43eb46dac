"""A small HTTP server in a daemon thread for what a pod serves the operator and Prometheus
(/progress, /metrics, /healthz): each path answers with what its function returns."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# A path's answer: (body, content type).
Route = Callable[[], tuple[bytes, str]]


def serve_routes(routes: dict[str, Route], port: int, host: str = "0.0.0.0",
                 name: str = "kubetune-serving") -> ThreadingHTTPServer:
    """Start serving; port 0 picks a free port. /healthz always answers ok."""
    routes = {**routes, "/healthz": lambda: (b"ok", "text/plain")}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            route = next((answer for path, answer in routes.items() if self.path.startswith(path)), None)
            if route is None:
                self.send_error(404)
                return
            body, kind = route()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep the pod's log to what it does
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name=name).start()
    return server
