"""The trainer config rendered into the job's ConfigMap (kubetune.render.trainer_config)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubetune import contract

from .errors import PermanentError


def config_path() -> Path:
    return Path(os.environ.get(contract.ENV_CONFIG, f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE}"))


def load_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise PermanentError(f"{path}: trainer config not found (is the job's ConfigMap mounted?)") from None
    except json.JSONDecodeError as error:
        raise PermanentError(f"{path}: not valid JSON: {error}") from None
    if config.get("kind") != "TrainerConfig":
        raise PermanentError(f"{path}: kind is {config.get('kind')!r}, expected TrainerConfig")
    return config
