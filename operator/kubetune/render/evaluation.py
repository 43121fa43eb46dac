"""The batch Jobs after training: the evaluation, then the publish Job that uploads the model."""

from __future__ import annotations

from typing import Any

from .. import contract
from ..api.models import FineTuneJob
from ..contract.publish import claim_of
from . import pods
from .naming import evaluation_job_name, labels, metadata, publish_job_name
from .sources import OutputLocation, ResolvedSource

ROLE = "evaluator"
PUBLISHER = "publisher"
# Retries of a failed evaluation pod (a permanent error is not retried).
EVALUATION_BACKOFF_LIMIT = 2


def evaluation_job(
    job: FineTuneJob,
    settings: pods.RenderSettings,
    output: OutputLocation,
    sources: list[ResolvedSource],
) -> dict[str, Any]:
    name = job.metadata.name
    evaluation = job.spec.evaluation.resources
    training = job.spec.resources
    gpus = evaluation.gpus if evaluation.gpus is not None else min(training.gpus_per_node, 1)
    container = {
        "name": "evaluator",
        "image": evaluation.image or settings.evaluator_image,
        "imagePullPolicy": training.image_pull_policy or settings.image_pull_policy,
        "command": ["python", "-m", "trainer_entrypoint", "evaluate"],
        "resources": pods.container_resources(evaluation.requests, evaluation.limits, training.gpu_resource_name, gpus,
                                              settings.evaluator_resources),
    }
    pod_spec = pods.pod_spec(
        job,
        output,
        sources,
        container=container,
        restart_policy="Never",
        node_selector=settings.node_selector(evaluation.node_selector or training.node_selector, gpus),
        tolerations=settings.tolerations(evaluation.tolerations or training.tolerations,
                                         training.gpu_resource_name, gpus),
        cache=pods.model_cache(job, settings, output),
        hf_endpoint=settings.hf_endpoint,
    )
    return batch_job(job, evaluation_job_name(name, job.spec.evaluation.digest()), ROLE, EVALUATION_BACKOFF_LIMIT,
                      pod_spec)


def publish_job(
    job: FineTuneJob,
    settings: pods.RenderSettings,
    output: OutputLocation,
    sources: list[ResolvedSource],
) -> dict[str, Any]:
    """Uploads to spec.output.publish on the trainer image, without GPUs; retried per backoffLimit."""
    training = job.spec.resources
    container = {
        "name": PUBLISHER,
        "image": training.image or settings.trainer_image,
        "imagePullPolicy": training.image_pull_policy or settings.image_pull_policy,
        "command": ["python", "-m", "trainer_entrypoint", "publish"],
        "resources": pods.container_resources({}, {}, training.gpu_resource_name, 0, {}),
    }
    pod_spec = pods.pod_spec(job, output, sources, container=container, restart_policy="Never",
                             node_selector=settings.node_selector(training.node_selector, 0),
                             tolerations=settings.tolerations(training.tolerations, training.gpu_resource_name, 0))
    claims = sorted({on_claim[0] for t in job.spec.output.publish if (on_claim := claim_of(t.target))})
    pod_spec["volumes"] += [{"name": f"publish-{claim}", "persistentVolumeClaim": {"claimName": claim}}
                            for claim in claims]
    pod_spec["containers"][0]["volumeMounts"] += [
        {"name": f"publish-{claim}", "mountPath": f"{contract.PUBLISH_DIR}/{claim}"} for claim in claims]
    return batch_job(job, publish_job_name(job.metadata.name), PUBLISHER, job.spec.run_policy.backoff_limit,
                      pod_spec)


def batch_job(job: FineTuneJob, name: str, role: str, backoff_limit: int, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(job, name, role),
        "spec": {
            "backoffLimit": backoff_limit,
            # A configuration or data error will not go away on retry.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": role,
                            "operator": "In",
                            "values": [contract.EXIT_PERMANENT],
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": labels(job.metadata.name, role)},
                "spec": pod_spec,
            },
        },
    }
