"""The initializer Job: before the workers, it downloads every hf:// and s3:// source of the job
once into the cache volume, which the job's other pods then mount read-only."""

from __future__ import annotations

from typing import Any, Optional

from .. import contract
from ..api.models import FineTuneJob
from ..contract.initialization import JOBS_SUBDIR, MANIFEST_FILE, CacheSettings
from . import pods
from .evaluation import batch_job
from .naming import initializer_job_name
from .sources import OutputLocation, ResolvedSource

ROLE = "initializer"


def cache_settings(job: FineTuneJob) -> Optional[CacheSettings]:
    """Where the job's pods find the cache and the job's manifest; None without downloads."""
    if not pods.downloads(job):
        return None
    meta = job.metadata
    # By uid too: a job deleted and created again under its name starts a manifest of its own.
    folder = f"{contract.MODEL_CACHE_DIR}/{JOBS_SUBDIR}/{meta.namespace}/{meta.name}-{meta.uid or 'new'}"
    return CacheSettings(root=contract.MODEL_CACHE_DIR, manifest=f"{folder}/{MANIFEST_FILE}")


def initializer_job(job: FineTuneJob, settings: pods.RenderSettings, output: OutputLocation,
                    sources: list[ResolvedSource]) -> Optional[dict[str, Any]]:
    """On the trainer image, without GPUs; retried per backoffLimit, a permanent error at once."""
    if not pods.downloads(job):
        return None
    training = job.spec.resources
    container = {
        "name": ROLE,
        "image": training.image or settings.trainer_image,
        "imagePullPolicy": training.image_pull_policy or settings.image_pull_policy,
        "command": ["python", "-m", "trainer_entrypoint", "initialize"],
        "env": [{"name": contract.ENV_METRICS_PORT, "value": str(contract.METRICS_PORT)}],
        "ports": [{"name": "progress", "containerPort": contract.METRICS_PORT, "protocol": "TCP"}],
        "resources": pods.container_resources({}, {}, training.gpu_resource_name, 0, {}),
    }
    pod_spec = pods.pod_spec(job, output, sources, container=container, restart_policy="Never",
                             node_selector=settings.node_selector(training.node_selector, 0),
                             tolerations=settings.tolerations(training.tolerations, training.gpu_resource_name, 0),
                             cache=pods.model_cache(job, settings, output, read_only=False),
                             hf_endpoint=settings.hf_endpoint)
    return batch_job(job, initializer_job_name(job.metadata.name), ROLE, job.spec.run_policy.backoff_limit, pod_spec)
