"""The operator's informers against the emulated API server: a watch that goes silent, and a
view that a watch left wrong, are both corrected by the next list, within one watch timeout."""

import logging
import threading
import time

import kubernetes.client
import pytest

from kubetune.handlers.cache import ClusterCache, Informer
from kubetune.handlers.cluster import Cluster, watch_read_timeout
from operator_harness import Harness, eventually

pytestmark = pytest.mark.timeout(120)

NS = "ml"
WATCH_SECONDS = 2


def config_map(name, job):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS, "labels": {"kubetune.io/job-name": job}}, "data": {}}


class Watched:
    """One ConfigMap informer of the operator's own, with a short watch timeout."""

    def __init__(self, harness: Harness):
        self.woken: list = []
        self.cache = ClusterCache(on_change=self.woken.append)
        self.cluster = Cluster(kubernetes.client.ApiClient(kubernetes.client.Configuration(host=harness.url)),
                               request_timeout=3)
        self.stopping = threading.Event()
        self.informer = Informer(self.cluster, self.cache, "ConfigMap", NS, self.stopping, WATCH_SECONDS)

    def __enter__(self):
        self.informer.start()
        assert self.informer.synced.wait(10)
        return self

    def __exit__(self, *exc):
        self.stopping.set()

    def names(self) -> set[str]:
        return {name for (namespace, name) in self.cache._objects["ConfigMap"] if namespace == NS}


def test_a_watch_that_went_silent_is_given_up_and_the_list_drops_what_was_deleted_meanwhile(caplog):
    caplog.set_level(logging.WARNING, logger="kubetune.cache")
    with Harness() as harness, Watched(harness) as watched:
        for index in range(3):
            harness.cluster.create(config_map(f"c{index}", f"job-{index}"))
        eventually(lambda: watched.names() == {"c0", "c1", "c2"}, what="the watch delivers the creates")
        harness.api_server.silence_watches()
        watched.woken.clear()
        for index in range(3):
            harness.cluster.core.delete_namespaced_config_map(f"c{index}", NS)
        started = time.monotonic()
        eventually(lambda: watched.names() == set(), timeout=watch_read_timeout(WATCH_SECONDS) + 5,
                   what="the cache drops the claims deleted while its watch was silent")
        assert time.monotonic() - started <= watch_read_timeout(WATCH_SECONDS) + 5
        assert "delivered nothing" in caplog.text  # given up by the client's read timeout, not ended
        assert set(watched.woken) == {("ml", f"job-{index}") for index in range(3)}  # each job woken by its delete


def test_every_watch_is_followed_by_a_list_that_replaces_the_whole_view_and_wakes_the_jobs():
    with Harness() as harness, Watched(harness) as watched:
        harness.cluster.create(config_map("real", "job-a"))
        eventually(lambda: watched.names() == {"real"}, what="the watch delivers the create")
        # An object the watch never said was deleted (what a missed event leaves behind).
        watched.cache.apply("ConfigMap", "ADDED", config_map("stale", "job-b") | {"metadata": {
            **config_map("stale", "job-b")["metadata"], "resourceVersion": "1"}})
        watched.woken.clear()
        eventually(lambda: watched.names() == {"real"}, timeout=WATCH_SECONDS + 5,
                   what="the next list drops the stale object")
        assert ("ml", "job-b") in watched.woken
        assert watched.informer.problem() is None


def test_an_informer_that_stopped_is_a_liveness_problem():
    with Harness() as harness, Watched(harness) as watched:
        assert watched.informer.problem() is None
        watched.informer.stop()
        watched.informer.join(watch_read_timeout(WATCH_SECONDS) + 5)
        assert "not running" in watched.informer.problem()
