"""The stall watchdog on its own: when it stays quiet, and when it fires."""

from datetime import datetime, timedelta, timezone

import pytest

from kubetune.api.models import ProgressStatus, RunPolicySpec
from kubetune.contract.progress import BUSY_PHASES
from kubetune.lifecycle.watchdog import stall

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
PROGRESS_DEADLINE = 600
STARTUP_DEADLINE = 900


def ago(seconds):
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def policy(progress=PROGRESS_DEADLINE, startup=STARTUP_DEADLINE):
    return RunPolicySpec(progress_deadline_seconds=progress, startup_deadline_seconds=startup)


def stepped(seconds_ago, phase="training", step=40):
    """Rank 0's step, last moving `seconds_ago`."""
    return ProgressStatus(step=step, phase=phase, last_step_time=ago(seconds_ago))


def test_a_step_within_the_progress_deadline_is_not_a_stall():
    assert stall(policy(), stepped(PROGRESS_DEADLINE - 1), ago(5000), NOW) is None


def test_a_step_older_than_the_progress_deadline_is_a_stall():
    assert stall(policy(), stepped(PROGRESS_DEADLINE), ago(5000), NOW) == (
        f"step 40 did not advance for {PROGRESS_DEADLINE} s (limit {PROGRESS_DEADLINE} s)")


def test_a_progress_deadline_of_zero_turns_the_watchdog_off():
    assert stall(policy(progress=0), stepped(10 ** 6), ago(10 ** 6), NOW) is None
    assert stall(policy(progress=0), None, ago(10 ** 6), NOW) is None


@pytest.mark.parametrize("phase", BUSY_PHASES)
def test_a_busy_rank_0_gets_twice_the_deadline(phase):
    assert stall(policy(), stepped(2 * PROGRESS_DEADLINE - 1, phase), ago(5000), NOW) is None
    assert stall(policy(), stepped(2 * PROGRESS_DEADLINE, phase), ago(5000), NOW) == (
        f"step 40 did not advance (rank 0: {phase}) for {2 * PROGRESS_DEADLINE} s "
        f"(limit {2 * PROGRESS_DEADLINE} s)")


def test_no_first_step_is_judged_by_the_startup_deadline_from_when_the_workers_started():
    assert stall(policy(), None, ago(STARTUP_DEADLINE - 1), NOW) is None
    assert stall(policy(), None, ago(STARTUP_DEADLINE), NOW) == (
        f"no training step since the workers started for {STARTUP_DEADLINE} s (limit {STARTUP_DEADLINE} s)")


def test_a_startup_deadline_of_zero_allows_any_time_to_the_first_step():
    assert stall(policy(startup=0), None, ago(10 ** 6), NOW) is None


def test_a_step_from_before_the_workers_restarted_does_not_count_as_progress():
    # The step moved before the workers restarted, in the run the watchdog ended.
    before_restart = stepped(STARTUP_DEADLINE + 100)
    assert stall(policy(), before_restart, ago(STARTUP_DEADLINE - 1), NOW) is None  # startup, not progress deadline
    assert stall(policy(), before_restart, ago(STARTUP_DEADLINE), NOW).startswith(
        "no training step since the workers started")


def test_a_step_without_a_time_is_not_yet_a_step():
    unstamped = ProgressStatus(step=40, phase="training")
    assert stall(policy(), unstamped, ago(STARTUP_DEADLINE - 1), NOW) is None
    assert stall(policy(), unstamped, ago(STARTUP_DEADLINE), NOW).startswith("no training step")
