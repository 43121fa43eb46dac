"""The running operator: informers fill the cache, changes wake a job's reconcile, a bounded
pool of threads reconciles, and a resync spread over its interval follows clocks and progress.

kopf is the process host: it logs in, serves /healthz, and runs the operator's startup and
cleanup. It handles no FineTuneJob event, and the reconcile does not run on kopf handlers,
for reasons measured on kopf 1.45:
- kopf's daemons and timers always put a finalizer on the object (there is no option to turn
  it off), so a job could no longer be deleted while the operator is down;
- kopf spends 0.5-0.9 ms of CPU on each watch event, against about 6 us in the cache here
  (a 4,000-pod measurement): about 100 times more;
- after a 410, kopf's re-list keeps objects that were deleted in the gap;
- any kopf handler on the jobs writes its own annotations, and with them updates, to every job.
So the reconcile runs on the cache and work queue here, and /healthz reports on them: it fails
when a resync round has not completed for STALE_ROUNDS intervals, or when an informer has
stopped or has not listed or watched for longer than its watch timeout allows.
With several replicas, only the one holding the Lease runs any of this (election.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import kopf

from .cache import WATCH_SECONDS, ClusterCache, Informer, start_informers
from .election import elect
from .queue import WorkQueue, start_workers
from .reconcile import OperatorContext, reconcile

log = logging.getLogger("kubetune.controller")


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


STALE_ROUNDS = 6  # resync intervals without a completed round before liveness fails


class Controller:
    """What runs beside kopf, started and stopped with it."""

    def __init__(self, context: OperatorContext, namespaces: Optional[list[str]] = None, interval: float = 10.0,
                 workers: int = 8, leadership: Optional[Leadership] = None, watch_seconds: int = WATCH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.context, self.namespaces, self.interval, self.workers = context, list(namespaces or []), interval, workers
        self.leadership, self.watch_seconds, self.clock = leadership, watch_seconds, clock
        self.queue = WorkQueue()
        self.stopping = threading.Event()
        self.leading = threading.Event()
        self.informers: list[Informer] = []
        self.round_done = clock()  # when the last resync round completed (or leading began)
        context.cache = ClusterCache(on_change=self.queue.add)

    def start(self) -> None:
        if self.leadership is None:
            self._lead()
            return
        lease = self.leadership
        elect(self.context.cluster.core.api_client, lease.namespace, lease.name, lease.identity, self._lead,
              lease.on_lost, self.stopping, lease.lease_seconds, lease.renew_seconds, lease.retry_seconds)

    def _lead(self) -> None:
        self.round_done = self.clock()
        self.leading.set()
        self.informers = start_informers(self.context.cluster, self.context.cache, self.namespaces, self.stopping,
                                         self.watch_seconds)
        threading.Thread(target=self._run, daemon=True, name="resync").start()

    def stop(self) -> None:
        self.stopping.set()
        self.queue.close()

    def liveness_problems(self) -> list[str]:
        """Why the reconcile machinery is not working, if it is not; a replica waiting for the
        Lease has none."""
        if not self.leading.is_set():
            return []
        problems = [problem for informer in self.informers if (problem := informer.problem())]
        late = self.clock() - self.round_done
        if late > STALE_ROUNDS * self.interval:
            problems.append(f"no resync round has completed for {late:.0f} s (the interval is {self.interval:g} s)")
        return problems

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
            try:
                self.resync()
            except Exception:  # a round that fails is no round: liveness notices if they keep failing
                log.exception("resync round failed")
            self.stopping.wait(self.interval)

    def resync(self) -> None:
        """Every job once over the next interval, evenly spread, not in one burst: pods' clocks,
        deadlines and rank 0's progress change without any watch event."""
        jobs = self.context.cache.jobs()
        for index, key in enumerate(jobs):
            self.queue.add(key, delay=index * self.interval / len(jobs))
        metrics = self.context.metrics
        if self.queue.overdue() == 0:  # the last round is done: an alert fires when this stops moving
            self.round_done = self.clock()
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

    @kopf.on.probe(registry=registry, id="reconcile")
    def reconcile_machinery(**_: Any) -> str:
        """Served by kopf at /healthz: a failing probe answers 500, and the kubelet restarts the pod."""
        problems = controller.liveness_problems()
        if problems:
            raise kopf.PermanentError("; ".join(problems))
        return "ok" if controller.leading.is_set() else "standby"

    if login:
        # A registry of our own gets none of kopf's default login handlers.
        @kopf.on.login(registry=registry)
        def log_in(**kwargs: Any) -> Any:
            return kopf.login_via_client(**kwargs)

    return registry
