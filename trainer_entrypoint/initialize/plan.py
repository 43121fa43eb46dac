"""The job's remote sources, each once, and the remote that fetches each."""

from __future__ import annotations

from kubetune.contract.config import TrainerConfig
from kubetune.contract.initialization import FetchedSource

from ..errors import PermanentError
from ..sources import Slot, remote_slots
from .remote import Remote


def wanted(config: TrainerConfig) -> list[Slot]:
    """The remote sources of the config, the first slot naming each (the model before its tokenizer,
    the dataset before the evaluation dataset)."""
    first: dict[tuple, Slot] = {}
    for slot in remote_slots(config):
        first.setdefault(slot.key(), slot)
    return list(first.values())


def pending(slot: Slot) -> FetchedSource:
    """The slot's source, before the initializer fetched it."""
    _, repo_type, revision = slot.key()
    return FetchedSource(source=slot.source, location=slot.location, repo_type=repo_type, requested_revision=revision)


def remote_for(slot: Slot) -> Remote:
    location = slot.location
    if location.kind == "hf":
        from .hub import HubSource

        return HubSource(slot.source, location.ref, slot.repo_type, slot.revision)
    if location.kind == "s3":
        from .s3 import S3Source

        return S3Source(slot.source, location.ref)
    raise PermanentError(f"{slot.source}: this trainer image cannot fetch {location.kind}:// sources")
