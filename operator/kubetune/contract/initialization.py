"""The initializer's documents: what it fetched for a job, source by source.

The initializer Job fetches each remote source of a job (model, tokenizer, dataset, reward
models, evaluation dataset) once into the cache volume; then every pod of the job reads them
from there, offline, at the revision the initializer resolved. Its report is the manifest the
pods read (CacheSettings.manifest), the progress it serves while it works, and its
termination message, from which the operator fills status.initialization.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from .document import Document
from .sources import Location

# Inside the cache volume: the entries (shared by jobs), and one folder per job for its manifest.
ENTRIES_SUBDIR = "entries"
JOBS_SUBDIR = "jobs"
MANIFEST_FILE = "sources.json"
# Written last into an entry: an entry without it is incomplete and never read.
COMPLETE_MARKER = ".kubetune-complete.json"


def human_bytes(count: Optional[int]) -> str:
    """Bytes as people read them, in SI units: `386.5 kB`, `1.2 GB`."""
    value = float(count or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


class CacheSettings(Document):
    """Where a job's pods find the cache (the trainer config's `cache`)."""

    root: str = Field(description="The cache volume's mount path.")
    manifest: str = Field(description="The job's manifest (an InitializationReport) inside the cache.")


class FetchedSource(Document):
    """One source as the initializer left it."""

    source: str = Field(description="The source as the spec names it (hf://..., s3://...).")
    location: Location = Field(description="Where the spec's source is (as rendered).")
    repo_type: Optional[str] = Field(None, description="How the Hub reads an hf:// source: model or dataset.")
    requested_revision: Optional[str] = Field(
        None, description="The Hub revision the spec asks for (a branch, tag or commit; None: the default branch).")
    revision: Optional[str] = Field(None, description="The resolved revision: a Hub commit sha, an S3 listing digest.")
    path: Optional[str] = Field(None, description="The cache entry holding it, once complete.")
    bytes_done: int = Field(0, description="Bytes in the entry so far.")
    bytes_total: Optional[int] = Field(None, description="Bytes of the whole source, once known.")
    cached: bool = Field(False, description="The entry was complete already: nothing was downloaded.")
    downloaded_bytes: int = Field(0, description="Bytes this initializer downloaded (retries included).")


class InitializationReport(Document):
    """Every remote source of a job and how far it got."""

    sources: list[FetchedSource] = Field(default_factory=list)
    seconds: Optional[float] = Field(None, description="Time the initializer took, once done.")

    def entry_for(self, location: Location) -> Optional[FetchedSource]:
        """The complete entry of a rendered location, if the initializer fetched it."""
        return next((s for s in self.sources if s.location == location and s.path), None)
