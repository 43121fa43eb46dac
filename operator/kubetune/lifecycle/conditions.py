"""metav1.Condition bookkeeping: positive polarity, transition times kept while status holds."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Optional

from ..api.models import Condition


class ConditionType(StrEnum):
    """The type of each condition in status.conditions, in the order they are listed there.
    All have positive polarity: True means what the name says."""

    CREATED = "Created"  # the worker StatefulSet, Service, ConfigMap and volume exist (False: waits for upstream)
    RUNNING = "Running"  # the workers run (False: with why the others do not)
    RESTARTING = "Restarting"  # a worker is restarting after it exited or crashed
    STALLED = "Stalled"  # the stall watchdog restarted the workers; False once a step moved again
    SUSPENDED = "Suspended"  # spec.runPolicy.suspend scaled the workers to zero
    TRAINED = "Trained"  # training succeeded and the model is saved; the workers stay at zero
    EVALUATED = "Evaluated"  # the evaluation Job reported its metrics (False: why it does not yet)
    GATES_PASSED = "GatesPassed"  # every gate of spec.evaluation.gates passed (reason: Passed, Regressed, NoGates)
    PUBLISHED = "Published"  # the publish Job uploaded the model (False: why it uploads again)
    SUCCEEDED = "Succeeded"  # the job is done and its result usable (kubectl wait --for=condition=Succeeded)
    FAILED = "Failed"  # the job failed; status.failure says why


CONDITION_TYPES = tuple(ConditionType)
MAX_MESSAGE = 32768  # metav1.Condition's limit

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def timestamp(now: datetime) -> str:
    return now.strftime(TIME_FORMAT)


def seconds_since(since: str, now: datetime) -> float:
    """Seconds from a timestamp (RFC 3339, as status and the API server write them) to now."""
    then = datetime.fromisoformat(since)
    return (now - (then if then.tzinfo else then.replace(tzinfo=now.tzinfo))).total_seconds()


def find(conditions: list[Condition], kind: str) -> Optional[Condition]:
    return next((c for c in conditions if c.type == kind), None)


def is_true(conditions: list[Condition], kind: str) -> bool:
    condition = find(conditions, kind)
    return bool(condition and condition.status == "True")


def set_condition(
    conditions: list[Condition], kind: str, status: bool, reason: str, message: str, now: datetime,
    generation: Optional[int] = None,
) -> list[Condition]:
    """A new list with the condition set; lastTransitionTime moves only when status flips."""
    value = "True" if status else "False"
    old = find(conditions, kind)
    condition = Condition(
        type=kind, status=value, reason=reason, message=message[:MAX_MESSAGE],
        last_transition_time=old.last_transition_time if old and old.status == value else timestamp(now),
        observed_generation=generation,
    )
    ordered = [c for c in conditions if c.type != kind] + [condition]
    return sorted(ordered, key=lambda c: CONDITION_TYPES.index(c.type) if c.type in CONDITION_TYPES else 99)
