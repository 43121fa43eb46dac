"""Metric arithmetic: the unbiased pass@k estimator, answer matching, means by group, and a
metric's per-row values, from which both its value and its interval are computed."""

from __future__ import annotations

import math
import re
import string
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional

BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
ALL = "all"


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples, drawn without replacement from n with c correct, is correct).

    1 - C(n-c, k) / C(n, k), computed as a product so large n does not overflow (Chen et al. 2021).
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def normalize(text: str) -> str:
    """Lower case, no punctuation at the ends, single spaces."""
    return " ".join(text.lower().split()).strip(string.punctuation + " ")


def final_answer(text: str) -> str:
    """The last \\boxed{...} answer when a model wrote one, else the whole text."""
    boxed = BOXED.findall(text)
    return boxed[-1] if boxed else text


def exact_match(generation: str, reference: str) -> float:
    return float(normalize(final_answer(generation)) == normalize(reference))


def contains(generation: str, reference: str) -> float:
    wanted = normalize(reference)
    return float(bool(wanted) and wanted in normalize(generation))


def means_by_group(values: Iterable[tuple[Optional[str], float]]) -> dict[str, float]:
    """{"all": mean} plus a mean for each group (e.g. difficulty) when rows have one."""
    return weighted_means_by_group((group, value, 1) for group, value in values)


def weighted_means_by_group(values: Iterable[tuple[Optional[str], float, float]]) -> dict[str, float]:
    """sum(value) / sum(weight), over all rows and within each group; value is a row's total."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for group, value, weight in values:
        for key in {ALL, group} - {None}:
            sums[key][0] += value
            sums[key][1] += weight
    return {key: total / weight for key, (total, weight) in sums.items() if weight}


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def pairwise_loss(margin: float) -> float:
    """-log sigmoid(margin), the Bradley-Terry loss of a reward model, without overflow."""
    return max(-margin, 0.0) + math.log1p(math.exp(-abs(margin)))


@dataclass(frozen=True)
class Rows:
    """One model's metric, row by row: {sample index: (group, value, weight)}. The metric is
    sum(value) / sum(weight) over the rows (a mean, or a token-weighted loss), then exp() for
    a perplexity."""

    values: dict[int, tuple[Optional[str], float, float]] = field(default_factory=dict)
    exponentiated: bool = False

    @classmethod
    def of_means(cls, values: Iterable[tuple[int, Optional[str], float]]) -> "Rows":
        return cls({index: (group, value, 1.0) for index, group, value in values})

    def by_group(self) -> dict[str, float]:
        """{"all": value} plus a value per group."""
        means = weighted_means_by_group(self.values.values())
        return {key: perplexity(value) for key, value in means.items()} if self.exponentiated else means
