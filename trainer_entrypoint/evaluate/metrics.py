"""Each metric of kubetune.contract.metrics scored for one model, and the check, before any
model loads, that the evaluation data can give the metrics asked for.

SCORERS has one entry per row of the contract's metric table (a test ties the two).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Optional

from kubetune.contract.metrics import NEEDS_DESCRIPTION, Metric, metric

from ..errors import PermanentError
from . import scoring
from .code_checks import HumanEvalTask, apps_passes, humaneval_passes
from .report import ModelRun
from .scoring import Rows
from .samples import Sample


def needs_generation(metrics: list[str]) -> bool:
    return any(metric(name).computed_from == "generations" for name in metrics)


def needs_logprobs(metrics: list[str]) -> bool:
    return any(metric(name).computed_from == "logprobs" for name in metrics)


def _passes(sample: Sample, completion: str, timeout: float) -> bool:
    if isinstance(sample.code, HumanEvalTask):
        return humaneval_passes(sample.code, completion, timeout)
    return apps_passes(sample.code, completion, timeout)


def execute_code(samples: list[Sample], run: ModelRun, timeout: float) -> dict[int, list[bool]]:
    """Whether each completion of each code sample passes its tests (in parallel sandboxes)."""
    jobs = [(s, i, c) for s in samples if s.code for i, c in enumerate(run.completions.get(s.index, []))]
    verdicts = {s.index: [False] * len(run.completions[s.index]) for s in samples
                if s.code and s.index in run.completions}
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        results = pool.map(lambda job: _passes(job[0], job[2], timeout), jobs)
        for (sample, position, _), passed in zip(jobs, results):
            verdicts[sample.index][position] = passed
    for index, passed in verdicts.items():
        run.scores.setdefault(index, {})["passed"] = passed
    return verdicts


@dataclass
class ModelScoring:
    """One model's run over the samples; what several metrics share is computed once."""

    samples: list[Sample]
    run: ModelRun
    timeout: float
    reward: Any = None  # a RewardScorer, for the reward metric

    @cached_property
    def loss(self) -> Rows:
        """Token-weighted mean negative log-likelihood of the reference completions."""
        return Rows({s.index: (s.group, -self.run.logprobs[s.index], len(s.completion_ids or []))
                     for s in self.samples if s.index in self.run.logprobs})

    @cached_property
    def verdicts(self) -> dict[int, list[bool]]:
        return execute_code(self.samples, self.run, self.timeout)

    def per_sample(self, name: str, value: Callable[[Sample, list[str]], Optional[float]]) -> Rows:
        """A per-sample value over the generated samples, kept with each sample's scores."""
        values = []
        for sample in self.samples:
            completions = self.run.completions.get(sample.index)
            result = value(sample, completions) if completions else None
            if result is not None:
                self.run.scores.setdefault(sample.index, {})[name] = result
                values.append((sample.index, sample.group, result))
        return Rows.of_means(values)


def _matching(compare: Callable[[str, str], float]) -> Callable[[ModelScoring, str], Rows]:
    def score(model: ModelScoring, name: str) -> Rows:
        return model.per_sample(name, lambda sample, completions: None if sample.reference is None else
                                sum(compare(c, sample.reference) for c in completions) / len(completions))
    return score


def _pass_at_k(model: ModelScoring, name: str) -> Rows:
    """Each row's unbiased pass@k estimate: their mean is pass@k, and the bootstrap resamples them."""
    k = Metric.samples_needed(name)
    verdicts = model.verdicts
    return Rows.of_means((s.index, s.group, scoring.pass_at_k(len(verdicts[s.index]), sum(verdicts[s.index]), k))
                         for s in model.samples if s.index in verdicts)


SCORERS: dict[str, Callable[[ModelScoring, str], Rows]] = {
    "exact_match": _matching(scoring.exact_match),
    "contains": _matching(scoring.contains),
    "loss": lambda model, name: model.loss,
    "perplexity": lambda model, name: Rows(model.loss.values, exponentiated=True),
    "reward": lambda model, name: model.per_sample(name, lambda s, completions: model.reward.mean_score(s.prompt,
                                                                                                        completions)),
    "pass@k": _pass_at_k,
}


def score_rows(samples: list[Sample], run: ModelRun, metrics: list[str], timeout: float,
               reward=None) -> dict[str, Rows]:
    """Each metric's per-row values for one model."""
    model = ModelScoring(samples, run, timeout, reward)
    return {name: SCORERS[metric(name).name](model, name) for name in metrics}


def score_model(samples: list[Sample], run: ModelRun, metrics: list[str], timeout: float,
                reward=None) -> dict[str, dict[str, float]]:
    """{metric: {"all": value, group: value, ...}} for one model."""
    return {name: rows.by_group() for name, rows in score_rows(samples, run, metrics, timeout, reward).items()}


# Whether a sample gives what a metric needs (contract.metrics.Needs).
PROVIDES: dict[str, Callable[[Sample], bool]] = {
    "reference_completion": lambda s: bool(s.completion_ids),
    "reference_answer": lambda s: s.reference is not None,
    "code_tests": lambda s: s.code is not None,
    "nothing": lambda s: True,
}


def check_applicable(metrics: list[str], samples: list[Sample], fmt: str, where: str, reward) -> None:
    """Fail before any model loads when the data cannot give a requested metric."""
    for name in metrics:
        row = metric(name)
        if row.reward_model and reward is None:
            raise PermanentError(f"spec.evaluation.metrics: {name} needs a reward model in spec.rewards")
        if not any(PROVIDES[row.needs](s) for s in samples):
            raise PermanentError(f"spec.evaluation.metrics: {name} needs {NEEDS_DESCRIPTION[row.needs]}; the "
                                 f"evaluation data {where} (format {fmt}) has none")
