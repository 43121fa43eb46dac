"""The initializer's report so far, served as JSON on /progress (port contract.METRICS_PORT, as rank
0 serves its progress) for the operator to show in status.initialization while it downloads.
The bytes of a source being downloaded are those on disk in its working folder, counted when asked."""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

from kubetune.contract.initialization import FetchedSource, InitializationReport
from kubetune.contract.progress import PROGRESS_PATH

from ..serving import serve_routes


def disk_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass  # renamed or removed while counting
    return total


class ProgressState:
    def __init__(self, report: InitializationReport):
        self._lock = threading.Lock()
        self._sources = list(report.sources)
        self._working: dict[int, Path] = {}
        self._started = time.monotonic()

    def update(self, index: int, **changes: Any) -> FetchedSource:
        with self._lock:
            self._sources[index] = self._sources[index].model_copy(update=changes)
            return self._sources[index]

    def working_in(self, index: int, folder: Optional[Path]) -> None:
        """Count the bytes of this folder as the source's, while it downloads (None: no more)."""
        with self._lock:
            if folder is None:
                self._working.pop(index, None)
            else:
                self._working[index] = folder

    def snapshot(self) -> InitializationReport:
        with self._lock:
            sources, working = list(self._sources), dict(self._working)
        for index, folder in working.items():
            done = disk_bytes(folder) if folder.exists() else 0
            total = sources[index].bytes_total
            sources[index] = sources[index].model_copy(update={"bytes_done": min(done, total) if total else done})
        return InitializationReport(sources=sources)

    def finished(self) -> InitializationReport:
        report = self.snapshot()
        report.seconds = round(time.monotonic() - self._started, 3)
        return report


def serve(state: ProgressState, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start the progress server in a daemon thread; port 0 picks a free port."""
    return serve_routes({PROGRESS_PATH: lambda: (state.snapshot().encode().encode(), "application/json")}, port,
                        host, "kubetune-initializer-progress")
