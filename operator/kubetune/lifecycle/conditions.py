"""metav1.Condition bookkeeping: positive polarity, transition times kept while status holds."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from ..api.models import Condition, ConditionType


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
