"""What the initializer asks of a remote source (the Hub, an object store), and how a downloaded
file is checked against what the source lists for it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    path: str  # inside the source, with /
    size: int
    sha256: Optional[str] = None  # the Hub's LFS files
    git_sha1: Optional[str] = None  # the Hub's other files: their git blob id
    md5: Optional[str] = None  # an object store's single-part objects (their ETag)


class Remote(Protocol):
    source: str

    def resolve(self) -> str:
        """The revision the source is at now (a Hub commit sha, a listing digest)."""

    def files(self) -> list[RemoteFile]:
        """Its files at that revision."""

    def download(self, file: RemoteFile, folder: Path) -> None:
        """One file into folder/file.path."""

    def target(self, folder: Path) -> Path:
        """What a pod reads, in an entry folder: the folder, or the one file of a single-object source."""

    def wait_for(self, error: Exception) -> Optional[float]:
        """Seconds to wait before trying again after this error; None when it is not transient."""


def mismatch(path: Path, file: RemoteFile) -> Optional[str]:
    """Why the local file is not the listed one; None when it is (or when nothing can tell)."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != file.size:
        return f"size {size}, listed {file.size}"
    for name, expected, actual in (("sha256", file.sha256, _sha256), ("git blob id", file.git_sha1, _git_sha1),
                                   ("MD5", file.md5, _md5)):
        if expected:
            found = actual(path, size)
            return None if found == expected else f"{name} {found}, listed {expected}"
    return None


def _digest(path: Path, digest) -> str:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path, size: int) -> str:
    return _digest(path, hashlib.sha256())


def _git_sha1(path: Path, size: int) -> str:
    digest = hashlib.sha1(b"blob %d\0" % size)
    return _digest(path, digest)


def _md5(path: Path, size: int) -> str:
    return _digest(path, hashlib.md5(usedforsecurity=False))  # the ETag is an MD5, not a secret
