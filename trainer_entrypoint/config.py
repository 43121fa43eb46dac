"""The trainer config rendered into the job's ConfigMap (kubetune.contract.config.TrainerConfig)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from kubetune import contract
from kubetune.contract.config import TrainerConfig

from .errors import PermanentError


def config_path() -> Path:
    return Path(os.environ.get(contract.ENV_CONFIG, f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE}"))


def load_config(path: Path | None = None) -> TrainerConfig:
    path = path or config_path()
    try:
        return TrainerConfig.decode(path.read_text())
    except FileNotFoundError:
        raise PermanentError(f"{path}: trainer config not found (is the job's ConfigMap mounted?)") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise PermanentError(f"{path}: not a TrainerConfig this trainer image reads: {problems}") from None
