"""Pure rendering: a validated FineTuneJob in, the Kubernetes manifests it needs out.

No I/O and no Kubernetes client here. The operator applies these objects; `kubetune render`
prints them; `kubetune run` starts their pods as local processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .. import contract
from ..api.models import ClaimTemplateSpec, FineTuneJob
from .evaluation import evaluation_job, publish_job
from .generation import generation_service, generation_stateful_set
from .initializer import initializer_job
from .naming import config_map_name, metadata
from .pods import RenderSettings
from .sources import OutputLocation, output_location, upstream_jobs
from .trainer_config import deepspeed_config, resolved_sources, trainer_config
from .workers import worker_service, worker_stateful_set

__all__ = ["RenderSettings", "RenderedJob", "render_job", "output_location", "upstream_jobs", "OutputLocation"]


@dataclass(frozen=True)
class RenderedJob:
    config_map: dict[str, Any]
    service: dict[str, Any]
    stateful_set: dict[str, Any]
    # None when the job writes to an existing claim.
    output_claim: Optional[dict[str, Any]]
    evaluation_job: Optional[dict[str, Any]]
    # None when the job publishes nowhere.
    publish_job: Optional[dict[str, Any]] = None
    # The generation server (spec.generation), when the job has one.
    generation_service: Optional[dict[str, Any]] = None
    generation_stateful_set: Optional[dict[str, Any]] = None
    # The initializer Job, when the job has hf:// or s3:// sources to download first.
    initializer_job: Optional[dict[str, Any]] = None

    def training_objects(self) -> list[dict[str, Any]]:
        """What the operator creates at once, in creation order."""
        objects = [self.config_map, self.output_claim, self.initializer_job, self.generation_service,
                   self.generation_stateful_set, self.service, self.stateful_set]
        return [obj for obj in objects if obj is not None]

    def all_objects(self) -> list[dict[str, Any]]:
        """Everything the job creates over its life; the evaluation and publish Jobs come after training."""
        return self.training_objects() + [obj for obj in (self.evaluation_job, self.publish_job) if obj]


def render_job(
    job: FineTuneJob,
    settings: RenderSettings = RenderSettings(),
    upstream_outputs: Optional[Mapping[str, OutputLocation]] = None,
) -> RenderedJob:
    upstream_outputs = upstream_outputs or {}
    output = output_location(job)
    resources = job.spec.resources
    node_selector = settings.node_selector(resources.node_selector, resources.gpus_per_node)
    data = {contract.CONFIG_FILE: trainer_config(job, upstream_outputs, node_selector).encode(indent=2)}
    deepspeed = deepspeed_config(job.spec.distributed)
    if deepspeed:
        data[contract.DEEPSPEED_FILE] = json.dumps(deepspeed, indent=2, sort_keys=True)
    sources = list(resolved_sources(job, upstream_outputs).values())
    return RenderedJob(
        config_map={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(job, config_map_name(job.metadata.name), "config"),
            "data": data,
        },
        service=worker_service(job),
        stateful_set=worker_stateful_set(job, settings, output, sources),
        output_claim=_output_claim(job, output),
        evaluation_job=(
            None if job.spec.evaluation_skipped_because() else evaluation_job(job, settings, output, sources)
        ),
        publish_job=publish_job(job, settings, output, sources) if job.spec.output.publish else None,
        generation_service=generation_service(job),
        generation_stateful_set=generation_stateful_set(job, settings, output, sources),
        initializer_job=initializer_job(job, settings, output, sources),
    )


def _output_claim(job: FineTuneJob, output: OutputLocation) -> Optional[dict[str, Any]]:
    if job.spec.output.claim_name:
        return None
    template = job.spec.output.claim_template or ClaimTemplateSpec()
    spec: dict[str, Any] = {
        "accessModes": list(template.access_modes),
        "resources": {"requests": {"storage": template.size}},
    }
    if template.storage_class_name:
        spec["storageClassName"] = template.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(job, output.claim_name, "output"),
        "spec": spec,
    }
