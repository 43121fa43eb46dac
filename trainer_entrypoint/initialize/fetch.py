"""One source into its cache entry: resolve its revision; use the entry as it is when complete;
else, holding the entry's lock, download every file not already there (in parallel, each retried
and checked against the source's listing: a file that does not match is deleted and fetched
again), then complete the entry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubetune.contract.initialization import FetchedSource

from ..errors import PermanentError
from .cache import Entry, entry_folder
from .progress import ProgressState
from .remote import Remote, RemoteFile, mismatch
from .retry import IntegrityError, retrying

PARALLEL_FILES = 4


class FetchError(RuntimeError):
    """A source that could not be fetched this time (a retry of the Job may): names the source."""

    def __init__(self, label: str, error: Exception):
        super().__init__(f"{label}: {type(error).__name__}: {' '.join(str(error).split())[:500]}")


def fetch(remote: Remote, label: str, root: Path, state: ProgressState, index: int) -> FetchedSource:
    try:
        return _fetch(remote, label, root, state, index)
    except PermanentError:
        raise
    except Exception as error:
        raise FetchError(label, error) from error
    finally:
        state.working_in(index, None)


def _fetch(remote: Remote, label: str, root: Path, state: ProgressState, index: int) -> FetchedSource:
    revision = retrying(f"{label}: resolving the revision", remote.resolve, remote.wait_for)
    fetched = state.update(index, revision=revision)
    entry = Entry(entry_folder(root, fetched.location.kind, fetched.repo_type, fetched.location.ref, revision))
    if entry.marker():
        return _cached(remote, entry, state, index)
    files = retrying(f"{label}: listing its files", remote.files, remote.wait_for)
    total = sum(f.size for f in files)
    state.update(index, bytes_total=total)
    state.working_in(index, entry.partial)  # also while another initializer fills it
    with entry.claimed(on_wait=lambda: print(f"kubetune: {label}: another initializer is fetching it; "
                                             f"waiting for it", flush=True)):
        if entry.marker():
            return _cached(remote, entry, state, index)
        downloaded = download_all(remote, label, files, entry.working_folder())
        entry.complete({f.path: f.size for f in files}, revision, remote.source)
    state.working_in(index, None)
    return state.update(index, path=str(remote.target(entry.folder)), bytes_done=total, cached=False,
                        downloaded_bytes=downloaded)


def _cached(remote: Remote, entry: Entry, state: ProgressState, index: int) -> FetchedSource:
    total = sum(entry.marker().get("files", {}).values())
    return state.update(index, path=str(remote.target(entry.folder)), bytes_done=total, bytes_total=total,
                        cached=True)


def download_all(remote: Remote, label: str, files: list[RemoteFile], folder: Path) -> int:
    """Bytes downloaded (a file fetched again counts again); files already whole are kept."""
    with ThreadPoolExecutor(PARALLEL_FILES) as pool:
        futures = [pool.submit(download_one, remote, label, file, folder) for file in files]
        try:
            return sum(future.result() for future in futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def download_one(remote: Remote, label: str, file: RemoteFile, folder: Path) -> int:
    path = folder / file.path
    if path.is_file() and mismatch(path, file) is None:
        return 0  # left whole by an earlier initializer that died before completing the entry
    downloaded = 0

    def attempt() -> None:
        nonlocal downloaded
        path.unlink(missing_ok=True)
        remote.download(file, folder)
        downloaded += path.stat().st_size if path.is_file() else 0
        problem = mismatch(path, file)
        if problem:
            path.unlink(missing_ok=True)
            raise IntegrityError(f"{file.path}: {problem}")

    retrying(f"{label}: {file.path}", attempt, remote.wait_for)
    return downloaded
