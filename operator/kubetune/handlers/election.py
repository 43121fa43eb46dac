"""One active operator among several replicas: leader election on a coordination.k8s.io Lease
(the Kubernetes client's own implementation, as kube-controller-manager elects its leader).

The replica holding the Lease reconciles; the others wait to take it over once it stops being
renewed. A leader that fails to renew stops at once (as client-go's do), so two never act
together; its pod restarts and becomes a candidate again.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import kubernetes.client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from .cluster import describe

log = logging.getLogger("kubetune.election")
logging.getLogger("leaderelection").setLevel(logging.WARNING)  # it logs every renewal at INFO


class _Stopped(Exception):
    """The operator stops: leave the election without taking or renewing the Lease."""


class _Election(leaderelection.LeaderElection):
    def __init__(self, config: electionconfig.Config, stopping: threading.Event):
        super().__init__(config)
        self.stopping = stopping

    def try_acquire_or_renew(self) -> bool:
        if self.stopping.is_set():
            raise _Stopped
        try:
            return super().try_acquire_or_renew()
        except Exception as error:  # the API server away: a failed try, not the end of the election
            log.warning(f"Lease {self.election_config.lock.namespace}/{self.election_config.lock.name}: "
                        f"{describe(error)}")
            return False


def elect(api_client: kubernetes.client.ApiClient, namespace: str, name: str, identity: str,
          on_leading: Callable[[], None], on_lost: Callable[[], None], stopping: threading.Event,
          lease_seconds: int = 15, renew_seconds: int = 10, retry_seconds: int = 2) -> threading.Thread:
    """Campaign for the Lease namespace/name in a thread; on_leading once it is held, on_lost
    if it could not be renewed."""
    lock = LeaseLock(name, namespace, identity)
    lock.api_instance = kubernetes.client.CoordinationV1Api(api_client)

    def lost() -> None:
        log.error(f"lost the Lease {namespace}/{name}: stopping, so that only the new leader acts")
        on_lost()

    def leading() -> None:
        log.info(f"{identity} holds the Lease {namespace}/{name}: reconciling")
        on_leading()
        stopping.wait()  # the library counts a return as the end of leading

    config = electionconfig.Config(lock, lease_seconds, renew_seconds, retry_seconds, leading, lost)

    def campaign() -> None:
        try:
            _Election(config, stopping).run()
        except _Stopped:
            pass

    thread = threading.Thread(target=campaign, daemon=True, name="leader-election")
    thread.start()
    return thread
