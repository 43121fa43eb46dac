"""The worker StatefulSet, its headless Service, and the torchrun rendezvous env."""

from __future__ import annotations

from typing import Any

from .. import contract
from ..api.models import FineTuneJob
from . import pods
from .naming import (
    POD_INDEX_LABEL,
    labels,
    metadata,
    selector_labels,
    worker_host,
    worker_service_name,
    worker_set_name,
)
from .sources import OutputLocation, ResolvedSource

ROLE = "worker"
ELASTIC_JOIN_TIMEOUT_SECONDS = 7 * 24 * 3600
PORTS = [
    {"name": "master", "containerPort": contract.MASTER_PORT, "protocol": "TCP"},
    {"name": "rendezvous", "containerPort": contract.RENDEZVOUS_PORT, "protocol": "TCP"},
    {"name": "metrics", "containerPort": contract.METRICS_PORT, "protocol": "TCP"},
]


def rendezvous_env(job: FineTuneJob) -> list[dict[str, Any]]:
    """Kubeflow-compatible env: torchrun reads PET_* as its arguments, other launchers the rest."""
    resources = job.spec.resources
    name, namespace = job.metadata.name, job.metadata.namespace
    master = worker_host(name, namespace, 0)
    node_rank = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}}
    elastic = resources.elastic
    nnodes = f"{elastic.min_nodes}:{elastic.max_nodes}" if elastic else str(resources.nodes)
    env = [
        {"name": "PET_NNODES", "value": nnodes},
        {"name": "PET_NPROC_PER_NODE", "value": str(resources.processes)},
        {"name": "PET_NODE_RANK", **node_rank},
        {"name": "PET_MASTER_ADDR", "value": master},
        {"name": "PET_MASTER_PORT", "value": str(contract.MASTER_PORT)},
    ]
    if elastic:
        env += [
            {"name": "PET_RDZV_BACKEND", "value": "c10d"},
            {"name": "PET_RDZV_ENDPOINT", "value": f"{master}:{contract.RENDEZVOUS_PORT}"},
            {"name": "PET_RDZV_ID", "value": job.metadata.uid or name},
            {"name": "PET_MAX_RESTARTS", "value": str(elastic.max_restarts)},
            # torchrun gives up a rendezvous after 600 s by default and the pod restarts; how long an
            # elastic job may wait for minNodes is the operator's to decide (activeDeadlineSeconds).
            {"name": "PET_RDZV_CONF", "value": f"join_timeout={ELASTIC_JOIN_TIMEOUT_SECONDS}"},
            # With the rendezvous store shared with the process group, a node that joins a running
            # job waits for a MASTER_ADDR that rank 0 wrote only in the first round (pytorch#135712).
            {"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"},
            # The rendezvous ranks nodes by this address: worker 0's sorts first, so it holds rank 0,
            # whose /progress the operator reads. POD_NAME comes before, from the downward API.
            {"name": "PET_LOCAL_ADDR", "value": f"$(POD_NAME).{worker_service_name(name)}.{namespace}.svc"},
        ]
    env += [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(contract.MASTER_PORT)},
        {"name": "NODE_RANK", **node_rank},
        {"name": contract.ENV_METRICS_PORT, "value": str(contract.METRICS_PORT)},
    ]
    if not elastic:
        # An elastic job's world size changes with every resize; torchrun gives each rank the current one.
        env.append({"name": "WORLD_SIZE", "value": str(resources.nodes * resources.processes)})
    return env


def initial_replicas(job: FineTuneJob) -> int:
    """Workers at creation: none when they wait for something first (the initializer's downloads,
    the generation server); the lifecycle scales them up then."""
    return 0 if pods.downloads(job) or job.spec.generation else job.spec.desired_workers()


def worker_service(job: FineTuneJob) -> dict[str, Any]:
    # Headless, and peers must resolve each other before any pod is Ready.
    return service(job, worker_service_name(job.metadata.name), ROLE, PORTS,
                   clusterIP="None", publishNotReadyAddresses=True)


def service(job: FineTuneJob, name: str, role: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A Service for the pods of one role of the job, on their named container ports."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(job, name, role),
        "spec": {
            **spec,
            "selector": selector_labels(job.metadata.name, role),
            "ports": [{"name": p["name"], "port": p["containerPort"], "targetPort": p["name"]} for p in ports],
        },
    }


def worker_stateful_set(
    job: FineTuneJob,
    settings: pods.RenderSettings,
    output: OutputLocation,
    sources: list[ResolvedSource],
) -> dict[str, Any]:
    name = job.metadata.name
    resources = job.spec.resources
    container = {
        "name": "trainer",
        "image": resources.image or settings.trainer_image,
        "imagePullPolicy": resources.image_pull_policy or settings.image_pull_policy,
        "command": ["python", "-m", "trainer_entrypoint", "train"],
        "env": rendezvous_env(job),
        "ports": PORTS,
        "resources": pods.container_resources(
            resources.requests, resources.limits, resources.gpu_resource_name, resources.gpus_per_node,
            settings.trainer_resources,
        ),
    }
    pod_spec = pods.pod_spec(
        job,
        output,
        sources,
        container=container,
        restart_policy="Always",
        node_selector=settings.node_selector(resources.node_selector, resources.gpus_per_node),
        tolerations=settings.tolerations(resources.tolerations, resources.gpu_resource_name, resources.gpus_per_node),
        affinity=resources.affinity,
        cache=pods.model_cache(job, settings, output),
        hf_endpoint=settings.hf_endpoint,
        terminationGracePeriodSeconds=60,
    )
    return stateful_set(job, worker_set_name(name), worker_service_name(name), ROLE, initial_replicas(job), pod_spec)


def stateful_set(job: FineTuneJob, name: str, service_name: str, role: str, replicas: int,
                 pod_spec: dict[str, Any]) -> dict[str, Any]:
    """A StatefulSet of the job's pods of one role, started in parallel."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(job, name, role),
        "spec": {
            "serviceName": service_name,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector_labels(job.metadata.name, role)},
            "template": {
                "metadata": {"labels": labels(job.metadata.name, role)},
                "spec": pod_spec,
            },
        },
    }
