"""The trainer config (contract.config.TrainerConfig) each worker and the evaluator read from
the job's ConfigMap: the user's TRL keys unchanged plus the keys kubetune manages (output,
checkpoints, DeepSpeed or FSDP), and every source resolved to where the pod finds it.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import contract
from ..api.batch import kept_global_batch
from ..api.models import DatasetSpec, DistributedSpec, FineTuneJob
from ..contract.config import (
    DatasetConfig,
    DistributedConfig,
    ElasticConfig,
    EvaluationConfig,
    JobRef,
    ModelConfig,
    OutputPaths,
    PeftConfig,
    RewardConfig,
    TrainerConfig,
)
from ..contract.publish import PublishTarget, claim_of
from ..contract.sources import Location
from .sources import OutputLocation, ResolvedSource, job_sources, output_location, resolve_source


def deepspeed_config(distributed: DistributedSpec) -> dict[str, Any] | None:
    """A DeepSpeed JSON for the HF integration; "auto" lets the Trainer fill batch sizes."""
    if not distributed.strategy.startswith("zero"):
        return None
    stage = int(distributed.strategy[-1])
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                # Consolidated 16-bit weights on save, so the output loads without DeepSpeed.
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    if distributed.offload in ("optimizer", "all"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if distributed.offload == "all":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "zero_optimization": zero,
    }


def _distributed_training_args(distributed: DistributedSpec) -> dict[str, Any]:
    if distributed.strategy.startswith("zero"):
        return {"deepspeed": f"{contract.CONFIG_DIR}/{contract.DEEPSPEED_FILE}"}
    if distributed.strategy == "fsdp":
        options = "full_shard auto_wrap" + (" offload" if distributed.offload != "none" else "")
        return {
            "fsdp": options,
            "fsdp_config": {"use_orig_params": True, "sync_module_states": True, "cpu_ram_efficient_loading": True},
        }
    return {}


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
    }


def resolved_sources(
    job: FineTuneJob, upstream_outputs: Mapping[str, OutputLocation]
) -> dict[str, ResolvedSource]:
    return {field: resolve_source(source, upstream_outputs) for field, source in job_sources(job).items()}


def _dataset(spec: DatasetSpec, location: Location) -> DatasetConfig:
    return DatasetConfig(**spec.model_dump(), location=location)


def trainer_config(job: FineTuneJob, upstream_outputs: Mapping[str, OutputLocation]) -> TrainerConfig:
    spec = job.spec
    sources = resolved_sources(job, upstream_outputs)

    def location(field: str) -> Location | None:
        return sources[field].location if field in sources else None

    paths = output_paths(output_location(job)).model_copy(update={"publish": [
        PublishTarget(**target.model_dump(), path=published_path(target.target)) for target in spec.output.publish]})
    evaluation = spec.evaluation
    return TrainerConfig(
        api_version=job.api_version,
        job=JobRef(name=job.metadata.name, namespace=job.metadata.namespace, uid=job.metadata.uid),
        method=spec.method,
        model=ModelConfig(**spec.model.model_dump(), location=location("spec.model.source"),
                          tokenizer_location=location("spec.model.tokenizer")),
        dataset=_dataset(spec.dataset, location("spec.dataset.source")),
        training={**spec.training, **managed_training_args(job, paths)},
        peft=PeftConfig(**spec.peft.model_dump()) if spec.peft else None,
        rewards=[RewardConfig(**reward.model_dump(), location=location(f"spec.rewards[{index}].model"))
                 for index, reward in enumerate(spec.rewards or [])],
        distributed=DistributedConfig(**spec.distributed.model_dump()),
        elastic=ElasticConfig(global_batch_size=kept_global_batch(spec)) if spec.resources.elastic else None,
        evaluation=EvaluationConfig(
            **evaluation.model_dump(exclude={"enabled", "resources", "dataset", "gates", "on_regression"}),
            dataset=_dataset(evaluation.dataset, location("spec.evaluation.dataset.source"))
            if evaluation.dataset else None, gates=evaluation.contract_gates(), digest=evaluation.digest()),
        output=paths,
    )
