"""`kubetune operator`: run the controller (in a pod from the Helm chart, or locally)."""

from __future__ import annotations

import logging
from typing import Optional

import kopf
import kubernetes
from prometheus_client import start_http_server

from ..render import RenderSettings
from .cluster import Cluster
from .metrics import OperatorMetrics
from .reconcile import OperatorContext
from .registry import make_registry


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
    peering: Optional[str],
    settings: RenderSettings,
    interval: float,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    context = OperatorContext(Cluster(api_client()), settings, OperatorMetrics())
    start_http_server(metrics_port, registry=context.metrics.registry)
    kopf.run(
        registry=make_registry(context, interval, namespaces=namespaces),
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz",
        standalone=peering is None,
        peering_name=peering,
    )
