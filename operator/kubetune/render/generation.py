"""The generation server of spec.generation: a StatefulSet running vLLM's OpenAI-compatible
server (what `trl vllm-serve` starts) on the evaluator image, its Service, and the TRL keys that
point the ranks at it."""

from __future__ import annotations

from typing import Any, Optional

from .. import contract
from ..api.models import FineTuneJob, GenerationSpec
from . import pods
from .naming import generation_host, generation_service_name, generation_set_name
from .sources import OutputLocation, ResolvedSource
from .workers import service, stateful_set

ROLE = "generation"
CONTAINER = "server"
HEALTH_PATH = "/health"  # vLLM answers 200 once the engine serves
PORTS = [{"name": "http", "containerPort": contract.GENERATION_PORT, "protocol": "TCP"}]


def server_training_args(job: FineTuneJob) -> dict[str, Any]:
    """TRL's server-mode keys, pointing at the job's generation Service (GenerationSpec.TRL_KEYS)."""
    if job.spec.generation is None:
        return {}
    return {"use_vllm": True, "vllm_mode": "server",
            "vllm_server_host": generation_host(job.metadata.name, job.metadata.namespace),
            "vllm_server_port": contract.GENERATION_PORT, "vllm_group_port": contract.GENERATION_GROUP_PORT}


def generation_service(job: FineTuneJob) -> Optional[dict[str, Any]]:
    if job.spec.generation is None:
        return None
    return service(job, generation_service_name(job.metadata.name), ROLE, PORTS)


def generation_stateful_set(job: FineTuneJob, settings: pods.RenderSettings, output: OutputLocation,
                            sources: list[ResolvedSource]) -> Optional[dict[str, Any]]:
    generation = job.spec.generation
    if generation is None:
        return None
    name = job.metadata.name
    # At zero: the lifecycle scales it up before the workers, and to zero with them after training.
    return stateful_set(job, generation_set_name(name), generation_service_name(name), ROLE, 0,
                        _pod_spec(job, generation, settings, output, sources))


def _pod_spec(job: FineTuneJob, generation: GenerationSpec, settings: pods.RenderSettings, output: OutputLocation,
              sources: list[ResolvedSource]) -> dict[str, Any]:
    training = job.spec.resources
    gpus = generation.gpus_per_node
    container = {
        "name": CONTAINER,
        "image": generation.image or settings.evaluator_image,
        "imagePullPolicy": training.image_pull_policy or settings.image_pull_policy,
        "command": ["python", "-m", "trainer_entrypoint", "generation-server"],
        "env": [{"name": contract.ENV_GENERATION_PORT, "value": str(contract.GENERATION_PORT)}],
        "ports": PORTS,
        # No liveness probe: loading a large model takes minutes, and a restart only starts that over.
        "readinessProbe": {"httpGet": {"path": HEALTH_PATH, "port": "http"}, "periodSeconds": 5,
                           "failureThreshold": 3},
        "resources": pods.container_resources(generation.requests, generation.limits, training.gpu_resource_name,
                                              gpus, settings.evaluator_resources),
    }
    return pods.pod_spec(
        job, output, sources, container=container, restart_policy="Always",
        node_selector=settings.node_selector(generation.node_selector or training.node_selector, gpus),
        tolerations=settings.tolerations(generation.tolerations or training.tolerations,
                                         training.gpu_resource_name, gpus),
        cache=pods.model_cache(job, settings, output),
        hf_endpoint=settings.hf_endpoint,
        terminationGracePeriodSeconds=30,
    )
