"""What evaluation leaves behind: each model's run, the report's metrics (tuned, base, delta and
per group), the generations file, and the summary for the termination message."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.contract.evaluation import EvaluationSummary, MetricValue
from kubetune.contract.report import MetricReport, ReportedValue

from . import scoring
from .intervals import paired_bootstrap
from .samples import Sample
from .scoring import Rows

@dataclass
class ModelRun:
    """What one model produced: completions per sample and summed completion log-probabilities."""

    completions: dict[int, list[str]] = field(default_factory=dict)
    logprobs: dict[int, float] = field(default_factory=dict)
    scores: dict[int, dict[str, Any]] = field(default_factory=dict)  # per sample, per metric


def combine(per_model: dict[str, dict[str, Rows]], seed: int = 0) -> dict[str, MetricReport]:
    """Each metric's tuned, base and delta, overall and by group, from each model's rows; the
    overall values with their 95 % intervals (paired bootstrap, seeded)."""
    combined = {}
    for metric, tuned_rows in per_model["tuned"].items():
        base_rows = per_model.get("base", {}).get(metric)
        tuned, base = tuned_rows.by_group(), base_rows.by_group() if base_rows else {}
        values = {key: ReportedValue(tuned=value, base=base.get(key)) for key, value in tuned.items()}
        overall = values.pop(scoring.ALL, ReportedValue(tuned=math.nan))
        intervals = paired_bootstrap(tuned_rows, base_rows, seed)
        combined[metric] = MetricReport(
            **overall.model_dump(exclude={"tuned_interval", "base_interval", "delta_interval", "rows"}),
            tuned_interval=_listed(intervals.tuned), base_interval=_listed(intervals.base),
            delta_interval=_listed(intervals.delta), rows=intervals.rows, by_group=dict(sorted(values.items())))
    return combined


def _listed(bounds):
    return list(bounds) if bounds is not None and not any(map(math.isnan, bounds)) else None


def summary(metrics: dict[str, MetricReport], report_path: str) -> str:
    """The termination message: metrics (and per-group values while they fit) plus the report path."""
    flat: dict[str, MetricValue] = {}
    for name, value in metrics.items():
        if not math.isnan(value.tuned):  # a metric no row could give has no value to report
            flat[name] = MetricValue(**value.model_dump(exclude={"by_group", "delta"}))
        flat.update({f"{name}/{group}": MetricValue(**entry.model_dump(exclude={"delta"}))
                     for group, entry in value.by_group.items()})
    return EvaluationSummary(metrics=flat, report=report_path).fitted()


def write_generations(path: Path, samples: list[Sample], runs: dict[str, ModelRun]) -> None:
    with open(path, "w") as handle:
        for sample in samples:
            record: dict[str, Any] = {"index": sample.index, "group": sample.group, "prompt": sample.prompt,
                                      "reference": sample.reference}
            for label, run in runs.items():
                record[label] = {"completions": run.completions.get(sample.index, []),
                                 **run.scores.get(sample.index, {})}
                if sample.index in run.logprobs:
                    record[label]["completionLogprob"] = run.logprobs[sample.index]
            handle.write(json.dumps(record) + "\n")
