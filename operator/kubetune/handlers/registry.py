"""The running operator: informers fill the cache, changes wake a job's reconcile, a bounded
pool of threads reconciles, and a resync spread over its interval follows clocks and progress.

kopf logs in, serves liveness and runs the operator's startup and cleanup; it watches nothing
itself (a kopf handler on the jobs would put its annotations, and with them writes, on every
job). With several replicas, only the one holding the Lease runs any of this (election.py).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import kopf

from .cache import ClusterCache, Informer, start_informers
from .election import elect
from .queue import WorkQueue, start_workers
from .reconcile import OperatorContext, reconcile

@dataclass(frozen=True)
class Leadership:
    """Where replicas elect their leader: the Lease namespace/name."""

    namespace: str
    name: str
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    on_lost: Callable[[], None] = lambda: os._exit(1)  # the pod restarts, a candidate again
    lease_seconds: int = 15  # a Lease not renewed for this long may be taken over
    renew_seconds: int = 10  # a leader that cannot renew within this stops leading
    retry_seconds: int = 2


class Controller:
    """What runs beside kopf, started and stopped with it."""

    def __init__(self, context: OperatorContext, namespaces: Optional[list[str]] = None, interval: float = 10.0,
                 workers: int = 8, leadership: Optional[Leadership] = None):
        self.context, self.namespaces, self.interval, self.workers = context, list(namespaces or []), interval, workers
        self.leadership = leadership
        self.queue = WorkQueue()
        self.stopping = threading.Event()
        self.leading = threading.Event()
        self.informers: list[Informer] = []
        context.cache = ClusterCache(on_change=self.queue.add)

    def start(self) -> None:
        if self.leadership is None:
            self._lead()
            return
        lease = self.leadership
        elect(self.context.cluster.core.api_client, lease.namespace, lease.name, lease.identity, self._lead,
              lease.on_lost, self.stopping, lease.lease_seconds, lease.renew_seconds, lease.retry_seconds)

    def _lead(self) -> None:
        self.leading.set()
        self.informers = start_informers(self.context.cluster, self.context.cache, self.namespaces, self.stopping)
        threading.Thread(target=self._run, daemon=True, name="resync").start()

    def stop(self) -> None:
        self.stopping.set()
        self.queue.close()

    def _reconcile(self, key: tuple[str, str]) -> None:
        if reconcile(self.context, *key) is None:
            self.queue.forget(key)

    def _run(self) -> None:
        # No reconcile before every kind is listed: a child not yet seen would look missing.
        while not all(informer.synced.wait(1) for informer in self.informers):
            if self.stopping.is_set():
                return
        start_workers(self.queue, self._reconcile, self.workers)
        while not self.stopping.is_set():
            self.resync()
            self.stopping.wait(self.interval)

    def resync(self) -> None:
        """Every job once over the next interval, evenly spread, not in one burst: pods' clocks,
        deadlines and rank 0's progress change without any watch event."""
        jobs = self.context.cache.jobs()
        for index, key in enumerate(jobs):
            self.queue.add(key, delay=index * self.interval / len(jobs))
        metrics = self.context.metrics
        if self.queue.overdue() == 0:  # the last round is done: an alert fires when this stops moving
            metrics.resync_time.set_to_current_time()
        kept = {**{f"cached {kind}": count for kind, count in self.context.cache.size().items()},
                **self.context.kept(), "backoffs": self.queue.backing_off()}
        for what, count in kept.items():
            metrics.kept.labels(what).set(count)
        metrics.queue_depth.set(self.queue.depth())


def make_registry(controller: Controller, login: bool = True) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # No runtime scanning of CRDs and namespaces: the chart installs the CRD before the
        # operator starts and names its namespaces, so the operator needs no RBAC for those.
        settings.scanning.disabled = True
        controller.start()

    @kopf.on.cleanup(registry=registry)
    def stop(**_: Any) -> None:
        controller.stop()

    if login:
        # A registry of our own gets none of kopf's default login handlers.
        @kopf.on.login(registry=registry)
        def log_in(**kwargs: Any) -> Any:
            return kopf.login_via_client(**kwargs)

    return registry
