"""What a strategy means to the Hugging Face Trainer: the DeepSpeed JSON or the FSDP options.

The operator renders them for a strategy the spec names; a training rank builds them itself
once it has resolved `auto` (a Trainer takes the DeepSpeed config as a dict as well as a file).
"""

from __future__ import annotations

from typing import Any, Optional

AUTO = "auto"
STRATEGIES = (AUTO, "ddp", "zero1", "zero2", "zero3", "fsdp")


def deepspeed_config(strategy: str, offload: str) -> Optional[dict[str, Any]]:
    """A DeepSpeed JSON for the HF integration; "auto" lets the Trainer fill batch sizes."""
    if not strategy.startswith("zero"):
        return None
    stage = int(strategy[-1])
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
    if offload in ("optimizer", "all"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload == "all":
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


def distributed_training_args(strategy: str, offload: str, deepspeed: Any = None) -> dict[str, Any]:
    """TrainingArguments keys of a strategy; `deepspeed` is the config's path, or the dict itself."""
    if strategy.startswith("zero"):
        return {"deepspeed": deepspeed if deepspeed is not None else deepspeed_config(strategy, offload)}
    if strategy == "fsdp":
        options = "full_shard auto_wrap" + (" offload" if offload != "none" else "")
        return {
            "fsdp": options,
            "fsdp_config": {"use_orig_params": True, "sync_module_states": True, "cpu_ram_efficient_loading": True},
        }
    return {}
