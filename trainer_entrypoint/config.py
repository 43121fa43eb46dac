"""The trainer config rendered into the job's ConfigMap (kubetune.contract.config.TrainerConfig).

When the job has a cache (config.cache), its initializer has fetched the job's remote sources
into it and listed them in the job's manifest: every hf:// or s3:// location the manifest holds
becomes the path of its cache entry, and the hub is not asked again (HF_HUB_OFFLINE), so a pod
reads exactly the revision the initializer resolved. The sources' names stay as the spec wrote
them, for messages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from kubetune import contract
from kubetune.contract.config import TrainerConfig
from kubetune.contract.initialization import CacheSettings, InitializationReport
from kubetune.contract.sources import PATH, Location

from .errors import PermanentError
from .sources import fetched_key, remote_slots


def config_path() -> Path:
    return Path(os.environ.get(contract.ENV_CONFIG, f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE}"))


def load_config(path: Path | None = None, use_cache: bool = True) -> TrainerConfig:
    """The trainer config; with use_cache, its remote sources read from the cache (see above)."""
    path = path or config_path()
    try:
        config = TrainerConfig.decode(path.read_text())
    except FileNotFoundError:
        raise PermanentError(f"{path}: trainer config not found (is the job's ConfigMap mounted?)") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise PermanentError(f"{path}: not a TrainerConfig this trainer image reads: {problems}") from None
    if use_cache and config.cache:
        read_from_cache(config)
    return config


def read_from_cache(config: TrainerConfig) -> None:
    """Each remote location the manifest holds becomes its entry's path (see above)."""
    slots = remote_slots(config)
    report = manifest_of(config.cache) if slots else None
    if report is None:
        return
    fetched = {fetched_key(s): s for s in report.sources if s.path}
    missing = []
    for slot in slots:
        entry = fetched.get(slot.key())
        if entry is None:
            missing.append(slot.source)
            continue
        slot.move_to(Location(kind=PATH, ref=entry.path))
        if slot.owner is config.model and slot.field == "location":
            config.model.revision = None  # the entry is that revision; a folder has no other
    if missing:
        print(f"kubetune: not in the initializer's manifest, read directly: {', '.join(missing)}", flush=True)
    else:
        os.environ["HF_HUB_OFFLINE"] = "1"


def manifest_of(cache: CacheSettings) -> Optional[InitializationReport]:
    manifest = Path(cache.manifest)
    if not manifest.exists():
        # A run folder from before the initializer: each pod reads its sources itself, as before.
        print(f"kubetune: no initializer manifest at {manifest}; reading the sources directly", flush=True)
        return None
    try:
        return InitializationReport.decode(manifest.read_text())
    except ValueError as error:
        raise PermanentError(f"{manifest}: not an initializer manifest this trainer image reads: {error}") from None
