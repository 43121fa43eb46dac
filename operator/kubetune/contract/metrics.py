"""The table of evaluation metrics: what each is computed from and what the data must hold.

Adding a metric is a row here plus its scorer in the evaluator (a test ties the two): the
API's metric pattern, the CEL rules about reward models and the evaluator's checks come from
this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional

# What the evaluation rows must give a metric; the evaluator checks it before loading a model.
Needs = Literal["reference_completion", "reference_answer", "code_tests", "nothing"]
NEEDS_DESCRIPTION: dict[str, str] = {
    "reference_completion": "reference completions",
    "reference_answer": "reference answers",
    "code_tests": "code tests (humaneval or apps format)",
    "nothing": "nothing",
}


@dataclass(frozen=True)
class Metric:
    name: str  # a family such as pass@k is named with its parameter
    description: str
    # logprobs: teacher-forced log-probabilities of the reference (transformers);
    # generations: completions sampled by the job's engine.
    computed_from: Literal["logprobs", "generations"]
    needs: Needs
    pattern: Optional[str] = None  # the names it covers, when not just its name
    # Needs a reward model: a spec.rewards entry with a model (or a job that trains one).
    reward_model: bool = False
    # Also given for a job that trains a reward model (scored on preference pairs).
    for_reward_models: bool = False

    @property
    def names(self) -> str:
        return self.pattern or re.escape(self.name)

    @staticmethod
    def samples_needed(name: str) -> int:
        """Samples per prompt a metric name asks for: k of pass@k, else 1."""
        return int(name.rpartition("@")[2]) if "@" in name else 1


METRICS: tuple[Metric, ...] = (
    Metric("exact_match", "the normalised completion (or its last \\boxed{}) equals the reference",
           "generations", "reference_answer"),
    Metric("contains", "the normalised completion contains the reference", "generations", "reference_answer"),
    Metric("loss", "token-weighted mean negative log-likelihood of the reference completion", "logprobs",
           "reference_completion", for_reward_models=True),
    Metric("perplexity", "exp(loss)", "logprobs", "reference_completion"),
    Metric("reward", "mean score of the completions by the job's reward model", "generations", "nothing",
           reward_model=True, for_reward_models=True),
    Metric("pass@k", "unbiased pass@k over sampling.n executed samples", "generations", "code_tests",
           pattern=r"pass@[1-9][0-9]*"),
)
METRIC_PATTERN = "^(" + "|".join(m.names for m in METRICS) + ")$"
REWARD_MODEL_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.reward_model)
REWARD_MODEL_JOB_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.for_reward_models)


def metric(name: str) -> Metric:
    """The table row of a metric name such as `loss` or `pass@5`."""
    for row in METRICS:
        if re.fullmatch(row.names, name):
            return row
    raise KeyError(f"unknown metric {name!r}")
