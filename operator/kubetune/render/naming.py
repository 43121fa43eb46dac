"""Names, labels and owner references of the objects a FineTuneJob creates."""

from __future__ import annotations

from typing import Any

from ..api.models import API_VERSION, KIND, FineTuneJob

JOB_NAME_LABEL = "kubetune.io/job-name"
ROLE_LABEL = "kubetune.io/role"
# Set by the StatefulSet controller on every pod (Kubernetes 1.28+).
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def worker_set_name(job_name: str) -> str:
    return f"{job_name}-worker"


def worker_service_name(job_name: str) -> str:
    return f"{job_name}-workers"


def generation_set_name(job_name: str) -> str:
    return f"{job_name}-generation"


def generation_service_name(job_name: str) -> str:
    return f"{job_name}-generation"


def generation_host(job_name: str, namespace: str) -> str:
    """The generation server's DNS name, through its Service."""
    return f"{generation_service_name(job_name)}.{namespace}.svc"


def config_map_name(job_name: str) -> str:
    return f"{job_name}-config"


def output_claim_name(job_name: str) -> str:
    return f"{job_name}-output"


def evaluation_job_name(job_name: str, digest: str) -> str:
    """One evaluation Job per evaluation spec: an edit gets a new one, the old one stays."""
    return f"{job_name}-eval-{digest}"


def initializer_job_name(job_name: str) -> str:
    return f"{job_name}-init"


def publish_job_name(job_name: str) -> str:
    return f"{job_name}-publish"


def worker_host(job_name: str, namespace: str, ordinal: int) -> str:
    """Stable DNS name of a worker pod through the headless Service."""
    return f"{worker_set_name(job_name)}-{ordinal}.{worker_service_name(job_name)}.{namespace}.svc"


def selector_labels(job_name: str, role: str) -> dict[str, str]:
    return {JOB_NAME_LABEL: job_name, ROLE_LABEL: role}


def labels(job_name: str, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "kubetune",
        "app.kubernetes.io/instance": job_name,
        "app.kubernetes.io/component": role,
        "app.kubernetes.io/managed-by": "kubetune",
        **selector_labels(job_name, role),
    }


def metadata(job: FineTuneJob, name: str, role: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": job.metadata.namespace,
        "labels": labels(job.metadata.name, role),
    }
    if job.metadata.uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": job.metadata.name,
                "uid": job.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta
