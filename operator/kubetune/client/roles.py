"""The pods a job has, by role (the kubetune.io/role label), and the names of its stateful ones."""

from __future__ import annotations

from typing import Optional

from ..lifecycle.phases import TERMINAL, Phase
from ..render import evaluation, generation, initializer, workers
from ..render.naming import generation_set_name, worker_set_name

ROLES = (workers.ROLE, generation.ROLE, evaluation.ROLE, initializer.ROLE, evaluation.PUBLISHER)
# Roles whose pods a StatefulSet names by ordinal; the others' pods belong to a batch Job.
STATEFUL_ROLES = {workers.ROLE: worker_set_name, generation.ROLE: generation_set_name}
# Phases after training, when the worker and generation pods are gone for good.
TRAINED = frozenset({Phase.EVALUATING, Phase.PUBLISHING, *TERMINAL})


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")


def pod_name(job: str, role: str, ordinal: int) -> str:
    """<job>-worker-<n>, <job>-generation-<n>."""
    return f"{STATEFUL_ROLES[role](job)}-{ordinal}"


def done_with_pods(role: str, phase: Optional[str]) -> bool:
    """Whether a job in this phase runs no more pods of the role: it is over, or trained (its
    workers and generation server are scaled to zero)."""
    return phase in TERMINAL or (role in STATEFUL_ROLES and phase in TRAINED)
