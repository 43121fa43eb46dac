"""How sure a metric is: a paired bootstrap over the evaluation rows.

Rows are resampled with replacement, the same draw for the tuned and the base model, and the
metric is computed again on each resample, exactly as on the whole set (a token-weighted loss
stays a ratio of sums; pass@k is the mean of each row's unbiased estimate). The 2.5th and
97.5th percentiles of the resampled values bound the 95 % interval of each model and of their
difference. The draw is seeded, so a report can be reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .scoring import Rows

RESAMPLES = 1000
LEVEL = 0.95
CHUNK = 100  # resamples drawn at once: memory stays rows x CHUNK


@dataclass(frozen=True)
class Intervals:
    rows: int
    tuned: Optional[tuple[float, float]] = None
    base: Optional[tuple[float, float]] = None
    delta: Optional[tuple[float, float]] = None


def _statistic(rows: Rows, indices: list[int]):
    import numpy as np

    values = np.array([rows.values[i][1] for i in indices], dtype=float)
    weights = np.array([rows.values[i][2] for i in indices], dtype=float)

    def on(draws):
        with np.errstate(invalid="ignore", divide="ignore"):
            result = values[draws].sum(axis=1) / weights[draws].sum(axis=1)
        return np.exp(np.minimum(result, 700.0)) if rows.exponentiated else result
    return on


def paired_bootstrap(tuned: Rows, base: Optional[Rows] = None, seed: int = 0, resamples: int = RESAMPLES,
                     level: float = LEVEL) -> Intervals:
    """95 % intervals of the tuned and base metric and of tuned - base, over the rows both have."""
    import numpy as np

    indices = sorted(set(tuned.values) & set(base.values) if base is not None else tuned.values)
    if not indices:
        return Intervals(rows=0)
    rng = np.random.default_rng(seed)
    tuned_on = _statistic(tuned, indices)
    base_on = _statistic(base, indices) if base is not None else None
    tuned_values, base_values = [], []
    for start in range(0, resamples, CHUNK):
        draws = rng.integers(0, len(indices), size=(min(CHUNK, resamples - start), len(indices)))
        tuned_values.append(tuned_on(draws))
        if base_on is not None:
            base_values.append(base_on(draws))

    def bounds(samples) -> tuple[float, float]:
        tail = 100 * (1 - level) / 2
        low, high = np.nanpercentile(np.concatenate(samples) if isinstance(samples, list) else samples,
                                     [tail, 100 - tail])
        return float(low), float(high)

    if base_on is None:
        return Intervals(rows=len(indices), tuned=bounds(tuned_values))
    tuned_all, base_all = np.concatenate(tuned_values), np.concatenate(base_values)
    return Intervals(rows=len(indices), tuned=bounds(tuned_all), base=bounds(base_all),
                     delta=bounds(tuned_all - base_all))
