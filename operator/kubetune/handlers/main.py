"""`kubetune operator`: run the controller (in a pod from the Helm chart, or locally)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import kopf
import kubernetes
from prometheus_client import start_http_server

from ..render import RenderSettings
from .cache import WATCH_SECONDS
from .cluster import Cluster
from .metrics import OperatorMetrics
from .reconcile import OperatorContext
from .registry import Controller, Leadership, make_registry


@dataclass(frozen=True)
class Pace:
    """How often and how hard the operator works the API server."""

    interval: float = 10.0  # seconds between resyncs of each job
    workers: int = 8  # reconciles at the same time
    qps: float = 100.0  # API requests per second, on average
    burst: int = 200  # requests at once above qps
    watch_seconds: int = WATCH_SECONDS  # each watch ends after this, and its kind is listed again


def api_client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def run_operator(
    namespaces: list[str],
    liveness_port: int,
    metrics_port: int,
    lease: Optional[str],
    settings: RenderSettings,
    pace: Pace = Pace(),
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cluster = Cluster(api_client(), qps=pace.qps, burst=pace.burst)
    context = OperatorContext(cluster, settings, OperatorMetrics())
    start_http_server(metrics_port, registry=context.metrics.registry)
    leadership = Leadership(*lease.split("/", 1)) if lease else None
    controller = Controller(context, namespaces, pace.interval, pace.workers, leadership, pace.watch_seconds)
    kopf.run(
        registry=make_registry(controller),
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz",
        standalone=True,  # one active replica is the Lease's business, not kopf's peering
    )
