"""Entries of the cache volume: `<root>/entries/<scheme>/[<repo type>/]<ref>/<revision>/`, one per
source and resolved revision, shared by every job that reads it.

An entry is complete only once its marker (contract COMPLETE_MARKER) is written, last; a folder
without it is never read. One initializer at a time writes an entry: it holds an exclusive flock
on `<revision>.lock` beside the entry, which the kernel releases if its holder dies, so a crashed
initializer never blocks another one. The holder downloads into `.<revision>.partial` beside the
entry (resuming whatever a crashed holder left there, file by file), renames it into place
(atomic on one filesystem), then writes the marker.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from kubetune.contract.initialization import COMPLETE_MARKER, ENTRIES_SUBDIR

SAFE_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# What huggingface_hub keeps inside a local_dir download (metadata and locks): not the source's.
CLIENT_METADATA = ".cache"


def safe_segment(segment: str) -> str:
    """A path segment as it is when harmless; else its safe characters and a digest of it, so no
    name climbs out (`..`), hides (`.x`) or collides with another source's."""
    if SAFE_SEGMENT.fullmatch(segment) and segment not in (".", ".."):
        return segment
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", segment).lstrip("._")[:60]
    return f"{cleaned or 'x'}-{hashlib.sha256(segment.encode()).hexdigest()[:12]}"


def entry_folder(root: Path, kind: str, repo_type: Optional[str], ref: str, revision: str) -> Path:
    segments = [kind] + ([repo_type] if repo_type else []) + [s for s in ref.split("/") if s] + [revision]
    return Path(root, ENTRIES_SUBDIR, *map(safe_segment, segments))


class Entry:
    def __init__(self, folder: Path):
        self.folder = folder
        self.lock_file = folder.parent / f"{folder.name}.lock"
        self.partial = folder.parent / f".{folder.name}.partial"

    def marker(self) -> Optional[dict]:
        """The complete entry's marker; None while it is incomplete."""
        try:
            return json.loads((self.folder / COMPLETE_MARKER).read_text())
        except (FileNotFoundError, ValueError):
            return None

    @contextmanager
    def claimed(self, on_wait=None) -> Iterator[None]:
        """Hold the entry's lock; on_wait() is called first when another process holds it."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def working_folder(self) -> Path:
        """The folder to download into (with the lock held): what an earlier holder left, if any."""
        if self.folder.exists():  # renamed into place, but its holder died before the marker
            if self.partial.exists():
                shutil.rmtree(self.folder)
            else:
                os.rename(self.folder, self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def complete(self, files: dict[str, int], revision: str, source: str) -> dict:
        """Move the downloaded folder into place and write its marker, last."""
        shutil.rmtree(self.partial / CLIENT_METADATA, ignore_errors=True)
        os.rename(self.partial, self.folder)
        marker = {"source": source, "revision": revision, "files": files, "bytes": sum(files.values()),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        written = self.folder / f".{COMPLETE_MARKER}.tmp"
        written.write_text(json.dumps(marker, indent=1))
        os.replace(written, self.folder / COMPLETE_MARKER)
        return marker
