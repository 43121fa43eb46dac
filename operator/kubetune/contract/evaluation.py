"""The evaluation summary: what the evaluator leaves in its termination message and the
operator copies into status.evaluation. The tuned − base difference is computed here, once;
the intervals come from the evaluator's paired bootstrap over the rows."""

from __future__ import annotations

from typing import Optional

from pydantic import ConfigDict, Field, model_validator

from .document import Document
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

    @classmethod
    def read(cls, message: str) -> "EvaluationSummary":
        """The summary in a termination message; an empty one when it holds none."""
        try:
            return cls.decode(message)
        except ValueError:
            return cls()
