"""The verdict on a trained model: each gate of spec.evaluation.gates judged against the
evaluation's values and their 95 % intervals."""

from __future__ import annotations

from typing import Optional

from ..api.models import GateSpec, GateStatus
from ..contract.evaluation import MetricValue


def judge(gate: GateSpec, value: Optional[MetricValue]) -> GateStatus:
    """A lower bound passes when the value (confident: the interval's low end) clears it; an
    upper bound when the value (confident: the high end) stays under it. A confident gate needs
    all of the interval beyond the bound."""
    delta = gate.min_delta is not None or gate.max_delta is not None
    bound_name, bound = next((name, number) for name, number in (
        ("minDelta", gate.min_delta), ("maxDelta", gate.max_delta), ("min", gate.min), ("max", gate.max))
        if number is not None)
    judged = (value.delta if delta else value.tuned) if value else None
    interval = (value.delta_interval if delta else value.tuned_interval) if value else None
    lower = bound_name in ("minDelta", "min")
    if gate.confident:
        passed = interval is not None and (interval[0] > bound if lower else interval[1] < bound)
    else:
        passed = judged is not None and (judged >= bound if lower else judged <= bound)
    return GateStatus(metric=gate.metric, bound=f"{bound_name} {bound:g}", value=judged, interval=interval,
                      confident=gate.confident, passed=passed)


def describe(result: GateStatus) -> str:
    """pass@1 delta +0.031 [0.004, 0.058] vs minDelta 0 (confident): passed"""
    what = "delta" if "Delta" in result.bound else "value"
    value = "none" if result.value is None else f"{result.value:+.4g}" if what == "delta" else f"{result.value:.4g}"
    interval = f" [{result.interval[0]:.4g}, {result.interval[1]:.4g}]" if result.interval else ""
    confident = " (confident)" if result.confident else ""
    return f"{result.metric} {what} {value}{interval} vs {result.bound}{confident}: " + (
        "passed" if result.passed else "failed")


def verdict(gates: list[GateSpec], metrics: dict[str, MetricValue]) -> tuple[str, list[GateStatus], str]:
    """(Passed | Regressed | NoGates, each gate judged, the GatesPassed condition's message)."""
    if not gates:
        return "NoGates", [], "no gates in spec.evaluation.gates"
    results = [judge(gate, metrics.get(gate.metric)) for gate in gates]
    outcome = "Passed" if all(result.passed for result in results) else "Regressed"
    return outcome, results, "; ".join(describe(result) for result in results)
