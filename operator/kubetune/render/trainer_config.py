"""The document each worker and the evaluator read from the job's ConfigMap.

It holds the user's TRL keys unchanged plus the keys kubetune manages (output, checkpoints,
DeepSpeed or FSDP), and every source resolved to where the pod finds it.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import contract
from ..api.models import DistributedSpec, FineTuneJob
from .sources import OutputLocation, ResolvedSource, job_sources, output_location, resolve_source

CONFIG_KIND = "TrainerConfig"


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


def output_dir(location: OutputLocation) -> str:
    return f"{contract.OUTPUT_DIR}/{location.sub_path}".rstrip("/")


def managed_training_args(job: FineTuneJob) -> dict[str, Any]:
    checkpointing = job.spec.checkpointing
    return {
        "output_dir": f"{output_dir(output_location(job))}/{contract.CHECKPOINTS_SUBDIR}",
        "save_strategy": "steps",
        "save_steps": checkpointing.every_steps,
        "save_total_limit": checkpointing.keep,
        **_distributed_training_args(job.spec.distributed),
    }


def resolved_sources(
    job: FineTuneJob, upstream_outputs: Mapping[str, OutputLocation]
) -> dict[str, ResolvedSource]:
    return {field: resolve_source(source, upstream_outputs) for field, source in job_sources(job).items()}


def trainer_config(job: FineTuneJob, upstream_outputs: Mapping[str, OutputLocation]) -> dict[str, Any]:
    spec = job.spec
    sources = resolved_sources(job, upstream_outputs)
    where = output_dir(output_location(job))
    evaluation = spec.evaluation.wire()
    if spec.evaluation.dataset:
        evaluation["dataset"]["location"] = sources["spec.evaluation.dataset.source"].location
    return {
        "apiVersion": job.api_version,
        "kind": CONFIG_KIND,
        "job": {"name": job.metadata.name, "namespace": job.metadata.namespace, "uid": job.metadata.uid},
        "method": spec.method,
        "model": {**spec.model.wire(), "location": sources["spec.model.source"].location,
                  **({"tokenizerLocation": sources["spec.model.tokenizer"].location} if spec.model.tokenizer else {})},
        "dataset": {**spec.dataset.wire(), "location": sources["spec.dataset.source"].location},
        "training": {**spec.training, **managed_training_args(job)},
        "peft": spec.peft.wire() if spec.peft else None,
        "rewards": [
            {**reward.wire(), **({"location": sources[f"spec.rewards[{i}].model"].location} if reward.model else {})}
            for i, reward in enumerate(spec.rewards or [])
        ],
        "distributed": spec.distributed.wire(),
        "evaluation": evaluation,
        "output": {
            "dir": where,
            "checkpoints": f"{where}/{contract.CHECKPOINTS_SUBDIR}",
            "model": f"{where}/{contract.MODEL_SUBDIR}",
            "completionRecord": f"{where}/{contract.COMPLETION_RECORD}",
            "evaluation": f"{where}/{contract.EVALUATION_SUBDIR}",
        },
    }
