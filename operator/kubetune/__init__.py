"""kubetune: post-train LLMs with TRL on Kubernetes.

`from kubetune import Client, FineTuneJob, JobFailed` imports the client on first use only:
the pods import `kubetune.contract`, and this package must stay light for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api.models import FineTuneJob
    from .client import ApiError, Client, InvalidJob, Job, JobFailed, JobNotFound, Phase

_LAZY = {"FineTuneJob": "kubetune.api.models", **{name: "kubetune.client" for name in (
    "ApiError", "Client", "InvalidJob", "Job", "JobFailed", "JobNotFound", "Phase")}}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kubetune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
