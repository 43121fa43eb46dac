"""The evaluation summary: what the evaluator leaves in its termination message and the
operator copies into status.evaluation. The tuned − base difference is computed here, once;
the intervals come from the evaluator's paired bootstrap over the rows."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from .document import Document
from .metrics import METRIC_PATTERN
from .pod import TERMINATION_MESSAGE_LIMIT


class MetricValue(Document):
    model_config = ConfigDict(extra="ignore")

    tuned: float = Field(description="The trained model's value.")
    base: Optional[float] = Field(None, description="The base model's value (with evaluation.compareBase).")
    delta: Optional[float] = Field(None, description="tuned - base.")
    tuned_interval: Optional[list[float]] = Field(
        None, min_length=2, max_length=2, description="95 % interval of tuned [low, high], by paired bootstrap.")
    base_interval: Optional[list[float]] = Field(
        None, min_length=2, max_length=2, description="95 % interval of base [low, high], on the same resamples.")
    delta_interval: Optional[list[float]] = Field(
        None, min_length=2, max_length=2, description="95 % interval of tuned - base [low, high], paired.")
    rows: Optional[int] = Field(None, description="Evaluation rows the value and its intervals come from.")

    @model_validator(mode="after")
    def _delta(self) -> "MetricValue":
        # Always derived: a delta that came with the document is recomputed, never trusted.
        object.__setattr__(self, "delta", None if self.base is None else self.tuned - self.base)
        return self


class EvaluationSummary(Document):
    model_config = ConfigDict(extra="ignore")

    metrics: dict[str, MetricValue] = Field(
        default_factory=dict, description="Per metric; a per-group value is named metric/group (e.g. pass@1/easy).")
    report: Optional[str] = Field(None, description="Path of the JSON report inside the output volume.")

    def fitted(self) -> str:
        """The encoded summary, dropping per-group values, then all values, until it fits a
        termination message."""
        overall = {name: value for name, value in self.metrics.items() if "/" not in name}
        for metrics in (self.metrics, overall, {}):
            text = EvaluationSummary(metrics=metrics, report=self.report).encode()
            if len(text) <= TERMINATION_MESSAGE_LIMIT:
                return text
        return EvaluationSummary().encode()



# Each bound of a gate, as its field and as the spec writes it.
GATE_BOUNDS = {"min_delta": "minDelta", "max_delta": "maxDelta", "min": "min", "max": "max"}


class Gate(Document):
    """A bound on a metric (min, max) or on its difference from the base model (minDelta, maxDelta)."""

    metric: str = Field(pattern=METRIC_PATTERN, max_length=32, description="One of spec.evaluation.metrics.")
    min_delta: Optional[float] = Field(None, description="Passes when tuned - base is at least this.")
    max_delta: Optional[float] = Field(None, description="Passes when tuned - base is at most this (for a loss).")
    min: Optional[float] = Field(None, description="Passes when the tuned value is at least this.")
    max: Optional[float] = Field(None, description="Passes when the tuned value is at most this.")
    confident: bool = Field(
        False, description="Judge the 95 % interval instead of the value: all of it must lie beyond the bound "
                           "(for minDelta 0, its lower end above 0), so noise does not pass.")

    @property
    def bound(self) -> tuple[str, float]:
        return next((wire, getattr(self, field)) for field, wire in GATE_BOUNDS.items()
                    if getattr(self, field) is not None)


class GateResult(Document):
    model_config = ConfigDict(extra="ignore")

    metric: str = Field(description="The metric judged.")
    bound: str = Field(description="The gate's bound, e.g. minDelta 0.")
    value: Optional[float] = Field(None, description="The value judged: tuned, or tuned - base for a delta bound.")
    interval: Optional[list[float]] = Field(None, description="Its 95 % interval [low, high].")
    confident: bool = Field(False, description="Whether the interval, not the value, was judged.")
    passed: bool = Field(description="Whether the gate passed.")

    def describe(self) -> str:
        """pass@1 delta +0.031 [0.004, 0.058] vs minDelta 0 (confident): passed"""
        what = "delta" if "Delta" in self.bound else "value"
        value = "none" if self.value is None else f"{self.value:+.4g}" if what == "delta" else f"{self.value:.4g}"
        interval = f" [{self.interval[0]:.4g}, {self.interval[1]:.4g}]" if self.interval else ""
        confident = " (confident)" if self.confident else ""
        return f"{self.metric} {what} {value}{interval} vs {self.bound}{confident}: " + (
            "passed" if self.passed else "failed")


Verdict = Literal["Passed", "Regressed", "NoGates"]


def judge(gate: Gate, value: Optional[MetricValue]) -> GateResult:
    """A lower bound passes when the value (confident: the interval's low end) clears it; an
    upper bound when the value (confident: the high end) stays under it. A confident gate needs
    all of the interval beyond the bound, so a difference within the noise does not pass."""
    name, bound = gate.bound
    delta = name.endswith("Delta")
    judged = (value.delta if delta else value.tuned) if value else None
    interval = (value.delta_interval if delta else value.tuned_interval) if value else None
    lower = name in ("minDelta", "min")
    if gate.confident:
        passed = interval is not None and (interval[0] > bound if lower else interval[1] < bound)
    else:
        passed = judged is not None and (judged >= bound if lower else judged <= bound)
    return GateResult(metric=gate.metric, bound=f"{name} {bound:g}", value=judged, interval=interval,
                      confident=gate.confident, passed=passed)


def verdict(gates: list[Gate], metrics: dict[str, MetricValue]) -> tuple[Verdict, list[GateResult], str]:
    """(Passed | Regressed | NoGates, each gate judged, what the GatesPassed condition says)."""
    if not gates:
        return "NoGates", [], "no gates in spec.evaluation.gates"
    results = [judge(gate, metrics.get(gate.metric)) for gate in gates]
    outcome: Verdict = "Passed" if all(result.passed for result in results) else "Regressed"
    return outcome, results, "; ".join(result.describe() for result in results)
