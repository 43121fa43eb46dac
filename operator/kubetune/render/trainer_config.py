"""The trainer config (contract.config.TrainerConfig) each worker and the evaluator read from
the job's ConfigMap: the user's TRL keys unchanged plus the keys kubetune manages (output,
checkpoints, DeepSpeed or FSDP), and every source resolved to where the pod finds it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from .. import contract
from ..api.batch import kept_global_batch
from ..api.models import DatasetSpec, DistributedSpec, FineTuneJob
from ..api.trl_keys import as_trl_reads
from ..contract.config import (
    DatasetConfig,
    DistributedConfig,
    ElasticConfig,
    EvaluationConfig,
    GenerationConfig,
    JobRef,
    ModelConfig,
    OutputPaths,
    PeftConfig,
    RewardConfig,
    TrainerConfig,
)
from ..contract.distributed import AUTO, distributed_training_args
from ..contract.distributed import deepspeed_config as contract_deepspeed_config
from ..contract.gpus import gpu_for_pods
from ..contract.publish import PublishTarget, claim_of
from ..contract.sources import Location
from .generation import server_training_args
from .initializer import cache_settings
from .sources import OutputLocation, ResolvedSource, job_sources, output_location, resolve_source


def deepspeed_config(distributed: DistributedSpec) -> dict[str, Any] | None:
    """The DeepSpeed JSON of a ZeRO strategy the spec names (with auto, the ranks build their own)."""
    return contract_deepspeed_config(distributed.strategy, distributed.offload)


def _distributed_training_args(distributed: DistributedSpec) -> dict[str, Any]:
    if distributed.strategy == AUTO:
        return {}
    return distributed_training_args(distributed.strategy, distributed.offload,
                                     f"{contract.CONFIG_DIR}/{contract.DEEPSPEED_FILE}")


def output_paths(location: OutputLocation) -> OutputPaths:
    where = f"{contract.OUTPUT_DIR}/{location.sub_path}".rstrip("/")
    return OutputPaths(
        dir=where,
        checkpoints=f"{where}/{contract.CHECKPOINTS_SUBDIR}",
        model=f"{where}/{contract.MODEL_SUBDIR}",
        completion_record=f"{where}/{contract.COMPLETION_RECORD}",
        evaluation=f"{where}/{contract.EVALUATION_SUBDIR}",
    )


def published_path(target: str) -> str | None:
    """Where the publish pod writes a target on a claim (the claim mounted at PUBLISH_DIR/<claim>)."""
    on_claim = claim_of(target)
    return "/".join(filter(None, (contract.PUBLISH_DIR, *on_claim))) if on_claim else None


def managed_training_args(job: FineTuneJob, paths: OutputPaths) -> dict[str, Any]:
    checkpointing = job.spec.checkpointing
    return {
        "output_dir": paths.checkpoints,
        "save_strategy": "steps",
        "save_steps": checkpointing.every_steps,
        "save_total_limit": checkpointing.keep,
        **_distributed_training_args(job.spec.distributed),
        **server_training_args(job),
    }


def resolved_sources(
    job: FineTuneJob, upstream_outputs: Mapping[str, OutputLocation]
) -> dict[str, ResolvedSource]:
    return {field: resolve_source(source, upstream_outputs) for field, source in job_sources(job).items()}


def _dataset(spec: DatasetSpec, location: Location) -> DatasetConfig:
    return DatasetConfig.of(spec, location=location)


def distributed_config(job: FineTuneJob, node_selector: Mapping[str, str]) -> DistributedConfig:
    """The strategy to train with, and the GPU the pods' node selector or GPU resource names (for
    `auto`: a rank that cannot tell reads its own device)."""
    resources = job.spec.resources
    gpu = gpu_for_pods(node_selector, resources.gpu_resource_name) if resources.gpus_per_node else None
    return DistributedConfig.of(job.spec.distributed, gpu=gpu.name if gpu else None,
                                gpu_memory_bytes=gpu.memory_bytes if gpu else None,
                                planned_world_size=resources.planned_ranks)


def trainer_config(job: FineTuneJob, upstream_outputs: Mapping[str, OutputLocation],
                   node_selector: Optional[Mapping[str, str]] = None) -> TrainerConfig:
    """`node_selector`: the worker pods' own, the operator's GPU default included."""
    spec = job.spec
    sources = resolved_sources(job, upstream_outputs)

    def location(field: str) -> Location | None:
        return sources[field].location if field in sources else None

    paths = output_paths(output_location(job)).model_copy(update={"publish": [
        PublishTarget.of(target, path=published_path(target.target)) for target in spec.output.publish]})
    evaluation = spec.evaluation
    return TrainerConfig(
        api_version=job.api_version,
        job=JobRef(name=job.metadata.name, namespace=job.metadata.namespace, uid=job.metadata.uid),
        method=spec.method,
        model=ModelConfig.of(spec.model, location=location("spec.model.source"),
                             tokenizer_location=location("spec.model.tokenizer")),
        dataset=_dataset(spec.dataset, location("spec.dataset.source")),
        training={**as_trl_reads(spec.method, spec.training), **managed_training_args(job, paths)},
        peft=PeftConfig.of(spec.peft) if spec.peft else None,
        rewards=[RewardConfig.of(reward, location=location(f"spec.rewards[{index}].model"))
                 for index, reward in enumerate(spec.rewards or [])],
        distributed=distributed_config(job, node_selector or {}),
        elastic=ElasticConfig(global_batch_size=kept_global_batch(spec)) if spec.resources.elastic else None,
        evaluation=EvaluationConfig.of(
            evaluation, dataset=_dataset(evaluation.dataset, location("spec.evaluation.dataset.source"))
            if evaluation.dataset else None, digest=evaluation.digest()),
        generation=GenerationConfig.of(spec.generation, data_parallel=spec.generation.engines(),
                                       gpus=spec.generation.nodes * spec.generation.gpus_per_node)
        if spec.generation else None,
        cache=cache_settings(job),
        output=paths,
    )
