"""The evaluation Job started after training succeeds."""

from __future__ import annotations

from typing import Any

from .. import contract
from ..api.models import FineTuneJob
from . import pods
from .naming import evaluation_job_name, labels, metadata
from .sources import OutputLocation, ResolvedSource

ROLE = "evaluator"
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
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(job, evaluation_job_name(name), ROLE),
        "spec": {
            "backoffLimit": EVALUATION_BACKOFF_LIMIT,
            # A configuration or data error will not go away on retry.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "evaluator",
                            "operator": "In",
                            "values": [contract.EXIT_PERMANENT],
                        },
                    }
                ]
            },
            "template": {
                "metadata": {"labels": labels(name, ROLE)},
                "spec": pod_spec,
            },
        },
    }
