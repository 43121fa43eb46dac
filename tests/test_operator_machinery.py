"""The operator's cache, work queue, rate limiter and retry rules, without an API server."""

import threading
import time

import pytest
from kubernetes.client.exceptions import ApiException

from kubetune.handlers.cache import ClusterCache
from kubetune.handlers.cluster import RateLimiter, already_exists, retry_delay
from kubetune.handlers.queue import WorkQueue, start_workers


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def pod(name, version, job="demo", role="worker"):
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "ml", "resourceVersion": str(version),
                                        "labels": {"kubetune.io/job-name": job, "kubetune.io/role": role}}}


def job(name, version, phase="Pending"):
    return {"metadata": {"name": name, "namespace": "ml", "resourceVersion": str(version)}, "status": {"phase": phase}}


# --- the cache ------------------------------------------------------------------------------

def test_a_watch_event_older_than_the_operators_own_write_is_ignored():
    woken = []
    cache = ClusterCache(on_change=woken.append)
    cache.apply("FineTuneJob", "ADDED", job("demo", 5))
    cache.apply("FineTuneJob", "MODIFIED", job("demo", 9, "Training"))  # the status patch's answer
    cache.apply("FineTuneJob", "MODIFIED", job("demo", 7, "Pending"))  # a watch event still on its way
    assert cache.fine_tune_job("ml", "demo")["status"]["phase"] == "Training"
    assert woken == [("ml", "demo"), ("ml", "demo")]
    cache.apply("FineTuneJob", "DELETED", job("demo", 10))
    assert cache.fine_tune_job("ml", "demo") is None


def test_pods_are_found_by_job_and_role_and_follow_their_labels():
    woken = []
    cache = ClusterCache(on_change=woken.append)
    cache.apply("Pod", "ADDED", pod("demo-worker-1", 2))
    cache.apply("Pod", "ADDED", pod("demo-worker-0", 3))
    cache.apply("Pod", "ADDED", pod("demo-eval-x", 4, role="evaluator"))
    cache.apply("Pod", "ADDED", pod("other-worker-0", 5, job="other"))
    assert [p["metadata"]["name"] for p in cache.pods("ml", "demo", "worker")] == ["demo-worker-0", "demo-worker-1"]
    assert [p["metadata"]["name"] for p in cache.pods("ml", "demo", "evaluator")] == ["demo-eval-x"]
    cache.apply("Pod", "MODIFIED", pod("demo-worker-1", 6, job="other"))  # relabelled
    assert [p["metadata"]["name"] for p in cache.pods("ml", "demo", "worker")] == ["demo-worker-0"]
    assert ("ml", "other") in woken


def test_a_fresh_list_replaces_what_was_held_and_wakes_the_jobs_it_touches():
    woken = []
    cache = ClusterCache(on_change=woken.append)
    cache.apply("Pod", "ADDED", pod("demo-worker-0", 2))
    cache.apply("Pod", "ADDED", pod("kept-worker-0", 3, job="kept"))
    woken.clear()
    # Relisted after a broken watch: demo's pod went while nobody watched; kept's is unchanged.
    cache.replace("Pod", None, [pod("kept-worker-0", 3, job="kept"), pod("new-worker-0", 8, job="new")])
    assert cache.pods("ml", "demo", "worker") == []
    assert sorted(woken) == [("ml", "demo"), ("ml", "new")]
    cache.replace("Pod", "elsewhere", [])  # another namespace's list leaves this one alone
    assert cache.pods("ml", "kept", "worker")


# --- the work queue -------------------------------------------------------------------------

def test_a_key_waits_once_however_often_it_is_added():
    queue = WorkQueue()
    for _ in range(3):
        queue.add(("ml", "a"))
    queue.add(("ml", "b"))
    assert queue.depth() == 2
    assert queue.get() == ("ml", "a") and queue.get() == ("ml", "b")


def test_a_key_added_while_being_worked_on_runs_again_afterwards_never_at_once():
    queue = WorkQueue()
    queue.add("k")
    assert queue.get() == "k"
    queue.add("k")  # a watch event during the reconcile
    assert queue.depth() == 0  # not handed to a second thread meanwhile
    queue.done("k")
    assert queue.get() == "k"


def test_a_failed_key_comes_back_after_a_growing_backoff_and_a_success_resets_it():
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add("k")
    delays = []
    for _ in range(3):
        assert queue.get() == "k"
        delays.append(queue.done("k", failed=True))
        assert queue.depth() == 0
        clock.now += delays[-1]
    assert delays == [0.5, 1.0, 2.0]
    assert queue.get() == "k"
    queue.done("k")
    queue.add("k")
    assert queue.get() == "k"
    assert queue.done("k", failed=True) == 0.5


def test_workers_reconcile_different_jobs_at_the_same_time_and_one_job_never_twice_at_once():
    queue = WorkQueue()
    running, overlap, seen = {}, [], []
    lock = threading.Lock()

    def work(key):
        with lock:
            running[key] = running.get(key, 0) + 1
            overlap.append(sum(running.values()))
            if running[key] > 1:
                raise AssertionError("one job reconciled twice at once")
        time.sleep(0.05)
        with lock:
            running[key] -= 1
            seen.append(key)

    start_workers(queue, work, count=4)
    for _ in range(3):
        for key in "abcd":
            queue.add(key)
    deadline = time.monotonic() + 10
    while len(seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.close()
    assert set(seen) >= set("abcd")
    assert max(overlap) > 1  # concurrent across jobs


def test_a_delayed_key_is_not_handed_out_before_its_time():
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add("later", delay=5)
    queue.add("now")
    assert queue.get() == "now"
    result = []
    thread = threading.Thread(target=lambda: result.append(queue.get()))
    thread.start()
    thread.join(0.2)
    assert not result
    clock.now += 5
    queue.add("poke")  # wakes the waiting get, which now finds both due
    thread.join(5)
    assert {result[0], queue.get()} == {"later", "poke"}


# --- rate limiting and retries --------------------------------------------------------------

def test_the_rate_limiter_allows_a_burst_then_holds_to_its_rate(monkeypatch):
    clock = FakeClock()
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    limiter = RateLimiter(qps=10, burst=5, clock=clock)
    for _ in range(5):
        limiter.wait()
    assert slept == []
    limiter.wait()
    assert slept == [pytest.approx(0.1)]
    clock.now += 1.0  # ten tokens' worth of time, capped at the burst
    for _ in range(4):
        limiter.wait()
    assert len(slept) == 1


def api_error(status, reason="", retry_after=None):
    error = ApiException(status=status, reason=reason)
    error.body = f'{{"kind": "Status", "reason": "{reason}"}}'
    error.headers = {"Retry-After": retry_after} if retry_after else {}
    return error


@pytest.mark.parametrize("error, retried", [
    (api_error(500), True), (api_error(503), True), (api_error(429, "TooManyRequests"), True),
    (api_error(409, "Conflict"), True), (api_error(409, "AlreadyExists"), False),
    (api_error(404, "NotFound"), False), (api_error(422, "Invalid"), False), (api_error(403, "Forbidden"), False),
    (ConnectionResetError(), True), (ValueError("bad JSON"), False),
])
def test_which_failures_are_retried(error, retried):
    assert (retry_delay(error, 0) is not None) == retried


def test_a_429_waits_as_long_as_the_server_asks_within_a_cap():
    assert retry_delay(api_error(429, "TooManyRequests", retry_after="3"), 0) == 3.0
    assert retry_delay(api_error(429, "TooManyRequests", retry_after="600"), 0) == 10.0


def test_a_create_answered_409_conflict_is_not_taken_for_already_exists():
    assert already_exists(api_error(409, "AlreadyExists"))
    assert not already_exists(api_error(409, "Conflict"))


def test_overdue_counts_keys_due_and_not_taken_so_a_stuck_pool_shows():
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add("a")
    queue.add("b", delay=5)
    assert queue.overdue() == 1
    clock.now += 5
    assert queue.overdue() == 2  # nobody took them: the resync timestamp stops moving
    queue.get(), queue.get()
    assert queue.overdue() == 0


def test_children_missing_because_their_job_was_just_deleted_are_not_made_anew():
    """Garbage collection can reach the cache before the job's DELETED event does."""
    import copy

    from conftest import MINIMAL_JOB
    from kubetune.handlers.reconcile import OperatorContext, reconcile

    class Gone:  # the API server: the job is deleted; nothing may be created
        created = []

        def fine_tune_job(self, namespace, name):
            return None

        def create(self, manifest):
            self.created.append(manifest)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    body = copy.deepcopy(MINIMAL_JOB)
    body["metadata"].update(uid="u1", generation=1, resourceVersion="3")
    cache = ClusterCache()
    cache.apply("FineTuneJob", "ADDED", body)  # still cached; its children already collected
    cluster = Gone()
    reconcile(OperatorContext(cluster, cache=cache), "ml", "demo")
    assert cluster.created == []
