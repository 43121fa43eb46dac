"""The operator under API faults and SIGKILLs, end to end (a reduced but real bench/faults.py)."""

import pytest

from fault_trial import Trial, run_trial
from kube_emulator import FaultPlan

pytestmark = pytest.mark.timeout(420)

JOBS, KILLS, FAULTS_OF_EACH_KIND = 30, 5, 10


def test_jobs_converge_under_api_faults_and_operator_kills(tmp_path):
    trial = run_trial(Trial(jobs=JOBS, kills=KILLS, faults=FaultPlan(seed=14)), tmp_path)
    assert trial.phases == trial.expected
    assert trial.starts == KILLS + 1
    # Every kind of fault was injected many times (how many depends on the requests the run made).
    assert all(trial.faults.injected[kind] >= FAULTS_OF_EACH_KIND for kind in ("500", "409", "429", "latency")), \
        trial.faults.injected
    assert trial.duplicates_and_missing() == []
    assert trial.orphans() == []
    assert trial.event_errors() == [], trial.events()
    # Deleted jobs leave nothing behind in the operator: no metric series, no cache entry, no lock.
    assert trial.job_series_left == [] and trial.kept_left == {}, \
        (trial.job_series_left, trial.kept_left, trial.stored_left)
    assert trial.stored_left == []  # the API server collected every child (else the cache was right to keep it)
    # Each retried failure is one warning line; nothing raised a traceback.
    assert "Traceback" not in trial.log, trial.log[-4000:]
    assert "retrying in" in trial.log
