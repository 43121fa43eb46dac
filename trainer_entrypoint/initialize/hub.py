"""hf:// sources with the real huggingface_hub client (HF_ENDPOINT and HF_TOKEN from the env).

The revision the spec asks for (a branch, a tag, a commit; the default branch when none) is
resolved to a commit sha once; the tree at that commit lists every file with its git blob id,
and an LFS file with its sha256; each file is downloaded with hf_hub_download at that commit and
checked against them. What no retry changes becomes a PermanentError that names the source: a
repository or revision that does not exist, or a private or gated one without a token that may
read it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ..errors import PermanentError
from .remote import RemoteFile
from .retry import IntegrityError

DEFAULT_ENDPOINT = "https://huggingface.co"
TOKEN_SETTING = "HF_TOKEN, from spec.credentials.hfToken"
# huggingface_hub raises OSError with this text when a body is shorter or longer than announced.
SIZE_MISMATCH = "Consistency check failed"


class HubSource:
    def __init__(self, source: str, repo_id: str, repo_type: str, revision: Optional[str]):
        from huggingface_hub import HfApi
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # one line per source in the pod's log, not a bar per file
        self.source, self.repo_id, self.repo_type, self.requested = source, repo_id, repo_type, revision
        self.endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        self.token = os.environ.get("HF_TOKEN") or None
        self.api = HfApi(endpoint=self.endpoint, token=self.token or False)
        self.revision: Optional[str] = None

    def resolve(self) -> str:
        """The commit sha of the asked revision."""
        with hub_errors(self):
            info = self.api.repo_info(self.repo_id, repo_type=self.repo_type, revision=self.requested)
        self.revision = info.sha
        return info.sha

    def files(self) -> list[RemoteFile]:
        from huggingface_hub.hf_api import RepoFile

        with hub_errors(self):
            tree = self.api.list_repo_tree(self.repo_id, repo_type=self.repo_type, revision=self.revision,
                                           recursive=True)
            return [RemoteFile(f.path, f.size, sha256=f.lfs.sha256 if f.lfs else None,
                               git_sha1=None if f.lfs else f.blob_id)
                    for f in tree if isinstance(f, RepoFile)]

    def download(self, file: RemoteFile, folder: Path) -> None:
        from huggingface_hub import hf_hub_download

        with hub_errors(self):
            hf_hub_download(self.repo_id, file.path, repo_type=self.repo_type, revision=self.revision,
                            local_dir=folder, endpoint=self.endpoint, token=self.token or False)

    def target(self, folder: Path) -> Path:
        return folder

    def wait_for(self, error: Exception) -> Optional[float]:
        """Seconds to wait before trying again (the server's Retry-After, or 0); None: do not retry."""
        import httpx
        from huggingface_hub.errors import HfHubHTTPError

        error = underlying(error)
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            status = error.response.status_code
            if status == 429:
                return _seconds(error.response.headers.get("Retry-After"))
            return 0.0 if status == 408 or status >= 500 else None
        if isinstance(error, (httpx.TransportError, IntegrityError)):
            return 0.0
        return 0.0 if isinstance(error, OSError) and SIZE_MISMATCH in str(error) else None


def underlying(error: BaseException) -> BaseException:
    """What a file's HEAD met: hf_hub_download raises LocalEntryNotFoundError for a failed HEAD
    (a 5xx, a 403, a lost connection) when no local copy exists, from the error itself."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    cause = error.__cause__
    return cause if isinstance(error, LocalEntryNotFoundError) and isinstance(cause, Exception) else error


def _seconds(value: Optional[str]) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


@contextmanager
def hub_errors(hub: HubSource) -> Iterator[None]:
    """Turns the Hub's answers that no retry changes into a PermanentError naming the source."""
    try:
        yield
    except Exception as error:
        problem = permanent_problem(error, hub)
        if problem:
            raise PermanentError(f"{hub.source}: {problem}") from None
        raise


def permanent_problem(error: BaseException, hub: HubSource) -> Optional[str]:
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RemoteEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    error = underlying(error)
    repository = f"{hub.repo_type} repository {hub.repo_id}"
    missing = f"the token is missing ({TOKEN_SETTING}, is not set)"
    refused = f"the token ({TOKEN_SETTING}) was refused"
    if isinstance(error, RevisionNotFoundError):
        return f"revision {hub.requested or 'main'!r} not found in {repository}"
    if isinstance(error, GatedRepoError):
        return f"gated {repository}: {refused}; request access for its account" if hub.token else \
            f"gated {repository}: {missing}"
    if isinstance(error, RepositoryNotFoundError):
        return f"{repository} not found, or private and {refused}" if hub.token else \
            f"{repository} not found, or private and {missing}"
    status = error.response.status_code if isinstance(error, HfHubHTTPError) and error.response is not None else None
    if status in (401, 403):
        return f"{repository}: {refused} ({status})" if hub.token else f"{repository}: {missing} ({status})"
    if status == 400 or status == 404 and not isinstance(error, RemoteEntryNotFoundError):
        return f"{repository}: {' '.join(str(error).split())[:300]}"
    return None
