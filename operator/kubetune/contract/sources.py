"""The table of source schemes (where models, tokenizers and datasets are read from), and the
location a source becomes inside a pod.

A scheme that names a claim is mounted into the pod and read as a path; any other is passed
to the pod as a Location of its own kind, which the runtime opens (the hub, an object store,
the built-in tiny model). Adding a remote scheme is a row here plus its fetcher in the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pydantic import Field

from .document import Document


@dataclass(frozen=True)
class Scheme:
    name: str
    pattern: str  # the whole source, scheme included
    description: str
    # The source names a PersistentVolumeClaim that is mounted read-only.
    mounts_claim: bool = False
    # Secret keys a pod needs to read it (each reaches the pod as its own secretKeyRef), and
    # whether each is optional; the Secret is named by spec.credentials.<name>SecretName.
    secret_keys: dict[str, bool] = field(default_factory=dict)
    # Downloaded once per job by its initializer into the cache, which every pod then reads.
    downloaded: bool = False


PATH = "path"  # an absolute path inside the image: no scheme

SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("hf", r"hf://[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)?", "hf://<org>/<name> (Hugging Face Hub)",
           downloaded=True),
    Scheme("pvc", r"pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?", "pvc://<claim>/<path>", mounts_claim=True),
    Scheme("s3", r"s3://[a-z0-9][a-z0-9.-]*[a-z0-9](/[^\s]*)?", "s3://<bucket>/<prefix>",
           secret_keys={"AWS_ACCESS_KEY_ID": False, "AWS_SECRET_ACCESS_KEY": False, "AWS_SESSION_TOKEN": True,
                        "AWS_ENDPOINT_URL": True, "AWS_DEFAULT_REGION": True}, downloaded=True),
    Scheme("job", r"job://[a-z]([-a-z0-9]*[a-z0-9])?",
           "job://<FineTuneJob in the same namespace> (its trained output)", mounts_claim=True),
    Scheme("builtin", r"builtin://tiny", "builtin://tiny (a tiny local model and dataset for smoke tests)"),
    Scheme(PATH, r"/[^\s]*", "an absolute path inside the image"),
)}
SOURCE_PATTERN = "^(" + "|".join(s.pattern for s in SCHEMES.values()) + ")$"
_DESCRIPTIONS = [s.description for s in SCHEMES.values()]
SOURCE_DESCRIPTION = f"Where to read from: {', '.join(_DESCRIPTIONS[:-1])}, or {_DESCRIPTIONS[-1]}."


def split_source(source: str) -> tuple[str, str]:
    """(scheme, the rest) of a source; an absolute path has the scheme `path`."""
    scheme, separator, rest = source.partition("://")
    return (scheme, rest) if separator else (PATH, source)


class Location(Document):
    """Where a pod finds a source: kind is a scheme the pod opens itself (hf, s3, builtin) or
    `path` (an absolute path in the pod, a mounted claim's folder among them)."""

    kind: str = Field(description="The scheme the pod opens (hf, s3, builtin), or path.")
    ref: str = Field(description="The path, or what follows <kind>:// in the source.")
    job: Optional[str] = Field(None, description="The job:// upstream a path belongs to, for messages.")
