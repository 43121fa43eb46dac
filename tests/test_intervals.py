"""The paired bootstrap behind every metric's interval: it covers a known difference, it does
not call a difference that is not there, and a seed reproduces it exactly."""

import numpy as np

from kubetune.contract.evaluation import Gate, MetricValue, judge
from trainer_entrypoint.evaluate.intervals import paired_bootstrap
from trainer_entrypoint.evaluate.scoring import Rows


def bernoulli_rows(outcomes) -> Rows:
    return Rows.of_means((index, None, float(value)) for index, value in enumerate(outcomes))


def test_the_interval_of_the_delta_covers_a_known_difference_about_95_times_in_100():
    rng = np.random.default_rng(7)
    covered, trials = 0, 200
    for _ in range(trials):
        # Paired rows: the tuned model solves what the base solves, and 10 % more of the rest.
        base = rng.random(300) < 0.5
        tuned = base | (rng.random(300) < 0.2)  # P(tuned) = 0.5 + 0.5 * 0.2 = 0.6
        delta = paired_bootstrap(bernoulli_rows(tuned), bernoulli_rows(base), seed=int(rng.integers(1 << 30))).delta
        covered += delta[0] <= 0.1 <= delta[1]
    assert 0.88 <= covered / trials <= 0.99, covered


def test_each_model_and_the_delta_get_intervals_around_their_values_over_the_rows_both_have():
    base = np.tile([1.0, 0.0], 100)
    tuned = base.copy()
    tuned[1:41:2] = 1.0  # 20 of the base's failures fixed: delta exactly 0.1
    intervals = paired_bootstrap(bernoulli_rows(tuned), bernoulli_rows(base), seed=0)
    assert intervals.rows == 200
    assert intervals.tuned[0] < 0.6 < intervals.tuned[1] and intervals.base[0] < 0.5 < intervals.base[1]
    assert 0 < intervals.delta[0] < 0.1 < intervals.delta[1]  # paired: tighter than either model's own
    assert intervals.delta[1] - intervals.delta[0] < intervals.tuned[1] - intervals.tuned[0]


def test_no_difference_gives_an_interval_around_zero():
    rng = np.random.default_rng(0)
    same = rng.random(200) < 0.4
    identical = paired_bootstrap(bernoulli_rows(same), bernoulli_rows(same), seed=1).delta
    assert identical == (0.0, 0.0)
    # Two draws of the same model: the interval spans zero, so a confident gate does not pass
    # even where the measured difference is above zero.
    other = rng.random(200) < 0.4
    noisy = paired_bootstrap(bernoulli_rows(other), bernoulli_rows(same), seed=1).delta
    assert noisy[0] < 0 < noisy[1]
    measured = MetricValue(tuned=float(other.mean()), base=float(same.mean()), delta_interval=list(noisy))
    assert measured.delta > 0  # this draw happens to measure a gain
    gate = Gate(metric="exact_match", min_delta=0.0, confident=True)
    assert judge(gate, measured).passed is False
    assert judge(gate.model_copy(update={"confident": False}), measured).passed is True


def test_a_seed_reproduces_the_intervals_exactly():
    rng = np.random.default_rng(11)
    tuned, base = bernoulli_rows(rng.random(150) < 0.6), bernoulli_rows(rng.random(150) < 0.5)
    assert paired_bootstrap(tuned, base, seed=42) == paired_bootstrap(tuned, base, seed=42)
    assert paired_bootstrap(tuned, base, seed=42) != paired_bootstrap(tuned, base, seed=43)


def test_a_token_weighted_loss_is_resampled_as_a_ratio_and_perplexity_as_its_exponential():
    # Row 0: 1 token at loss 4; row 1: 99 tokens at loss 1 each. The loss is 103 / 100 = 1.03.
    loss = Rows({0: (None, 4.0, 1.0), 1: (None, 99.0, 99.0)})
    low, high = paired_bootstrap(loss, seed=0).tuned
    assert low >= 1.0 and high <= 4.0 and low <= 1.03 <= high
    plow, phigh = paired_bootstrap(Rows(loss.values, exponentiated=True), seed=0).tuned
    assert np.exp(1.0) <= plow <= np.exp(1.03) <= phigh <= np.exp(4.0)
    assert paired_bootstrap(Rows(), seed=0).rows == 0
