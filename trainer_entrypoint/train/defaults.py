"""The fast defaults: what a rank sets on a GPU unless the user set the key, and the strategy
`auto` resolves to. The machine comes in as a Hardware value (detect() reads the real one), so
tests can hand in any GPU.

On a CPU nothing changes from the plain TRL config but what a CPU run needs (use_cpu).
GRPO and RLOO on GPUs generate with vLLM colocated in the ranks (generation_defaults), and `auto`
plans on what vLLM leaves of each GPU, by the same rule as `kubetune plan`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Optional

from kubetune.contract.config import TrainerConfig
from kubetune.contract.distributed import AUTO, distributed_training_args
from kubetune.contract.gpus import Gpu, gpu_named
from kubetune.contract.plan import (
    DoesNotFit,
    ModelShape,
    StrategyChoice,
    Workload,
    choose_beside_vllm,
    generation_defaults,
    generation_for,
    on_cpu,
    workload_for,
)

from ..errors import PermanentError

FLASH_ATTENTION = "flash_attention_2"
SDPA = "sdpa"
# Attention implementations that keep packed samples apart by their position_ids.
PADDING_FREE_ATTENTION = (FLASH_ATTENTION, SDPA)


@dataclass(frozen=True)
class Hardware:
    """The machine a rank trains on."""

    gpus: int = 0  # visible CUDA devices
    device_name: Optional[str] = None
    memory_bytes: Optional[int] = None
    bf16: bool = False
    tf32: bool = False  # Ampere or newer
    flash_attn: bool = False  # the flash-attn package is installed
    liger: bool = False  # the liger-kernel package is installed

    @property
    def gpu(self) -> Optional[Gpu]:
        """The plan's row for this device, when the table knows it."""
        return gpu_named(self.device_name) if self.device_name else None


@dataclass(frozen=True)
class ModelTraits:
    """What the model's transformers class (and Liger) support."""

    flash_attention: bool = False
    sdpa: bool = False
    liger: bool = False


@dataclass
class Effective:
    """The TRL config keys to train with, and one note per default chosen."""

    training: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def default(self, key: str, value: Any, why: str, off: str) -> None:
        self.training[key] = value
        self.notes.append(f"default {key}={value!r}: {why} (to turn it off: {off})")


def detect() -> Hardware:
    import torch

    if not torch.cuda.is_available():
        return Hardware()
    properties = torch.cuda.get_device_properties(0)
    return Hardware(gpus=torch.cuda.device_count(), device_name=properties.name,
                    memory_bytes=properties.total_memory, bf16=torch.cuda.is_bf16_supported(),
                    tf32=properties.major >= 8, flash_attn=importlib.util.find_spec("flash_attn") is not None,
                    liger=importlib.util.find_spec("liger_kernel") is not None)


def model_traits(model_config: dict[str, Any], hardware: Hardware) -> ModelTraits:
    """Looked up in the installed transformers (and liger-kernel, when it is installed)."""
    import transformers

    classes = [getattr(transformers, name, None) for name in model_config.get("architectures") or []]
    model_class = next((c for c in classes if c is not None), None)
    liger = False
    if hardware.liger:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

        liger = model_config.get("model_type") in MODEL_TYPE_TO_APPLY_LIGER_FN
    return ModelTraits(flash_attention=bool(getattr(model_class, "_supports_flash_attn", False)),
                       sdpa=bool(getattr(model_class, "_supports_sdpa", False)), liger=liger)


def effective_training(config: TrainerConfig, hardware: Hardware, traits: ModelTraits,
                       method_defaults: dict[str, Any]) -> Effective:
    """The config's TRL keys with the machine's defaults added; a key the user set wins.

    `method_defaults`: the method's TRL config defaults (gradient_checkpointing, ...)."""
    training = dict(config.training)
    effective = Effective(training)
    training["include_num_input_tokens_seen"] = training.get("include_num_input_tokens_seen", True)  # tokens/s
    if not hardware.gpus:
        # Without use_cpu a multi-process CPU run silently trains each rank alone.
        training.update(use_cpu=True)
        for key, value in {"bf16": False, "fp16": False, "dataloader_pin_memory": False}.items():
            training.setdefault(key, value)
        return effective
    _gpu_defaults(config, effective, hardware, traits, method_defaults)
    return effective


def _gpu_defaults(config: TrainerConfig, effective: Effective, hardware: Hardware, traits: ModelTraits,
                  method_defaults: dict[str, Any]) -> None:
    user = config.training
    if hardware.bf16 and "bf16" not in user and not user.get("fp16"):
        effective.default("bf16", True, f"{hardware.device_name} supports bf16", "spec.training.bf16: false")
    if hardware.tf32 and "tf32" not in user:
        effective.default("tf32", True, "TF32 matmuls on Ampere or newer", "spec.training.tf32: false")
    init = dict(user.get("model_init_kwargs") or {})
    attention = config.model.attn_implementation or init.get("attn_implementation")
    if attention is None:
        attention = FLASH_ATTENTION if hardware.flash_attn and traits.flash_attention else SDPA if traits.sdpa else None
        if attention:
            why = "flash-attn is installed and the model supports it" if attention == FLASH_ATTENTION else (
                "the model supports PyTorch SDPA" + ("" if hardware.flash_attn else "; flash-attn is not installed"))
            effective.notes.append(f"default attn_implementation={attention!r}: {why} "
                                   f"(to choose another: spec.model.attnImplementation)")
            effective.training["model_init_kwargs"] = {**init, "attn_implementation": attention}
    if (config.method == "sft" and attention in PADDING_FREE_ATTENTION
            and not {"packing", "padding_free"} & set(user)):
        effective.training["packing_strategy"] = user.get("packing_strategy", "bfd")
        effective.default("packing", True, f"padding-free BFD packing ({attention} keeps packed samples apart)",
                          "spec.training.packing: false")
    if hardware.liger and traits.liger and "use_liger_kernel" not in user:
        effective.default("use_liger_kernel", True, "liger-kernel is installed and supports this architecture",
                          "spec.training.use_liger_kernel: false")
    checkpointing = user.get("gradient_checkpointing", method_defaults.get("gradient_checkpointing", False))
    if checkpointing and "gradient_checkpointing_kwargs" not in user:
        effective.default("gradient_checkpointing_kwargs", {"use_reentrant": False},
                          "non-reentrant checkpointing, as the PyTorch and transformers docs advise",
                          "spec.training.gradient_checkpointing_kwargs")


@dataclass
class RankPlan:
    """What a rank trains with: the TRL keys with the machine's defaults, and the strategy."""

    effective: Effective
    work: Optional[Workload]
    choice: StrategyChoice


def plan_rank(config: TrainerConfig, hardware: Hardware, traits: ModelTraits, method_defaults: dict[str, Any],
              shape: Optional[ModelShape], ranks: int) -> RankPlan:
    """The machine's defaults, vLLM's share of each GPU and the strategy, in that order: the
    workload reads the defaults, and `auto` plans on what vLLM leaves (as `kubetune plan` does)."""
    effective = effective_training(config, hardware, traits, method_defaults)
    peft = config.peft
    work = workload_for(shape, effective.training, ranks, peft.r if peft else None,
                        bool(peft and peft.method == "qlora"), method_defaults) if shape else None
    if shape and work:
        add_generation_defaults(config, effective, hardware, shape, work, method_defaults)
    return RankPlan(effective, work, resolve_strategy(config, hardware, shape, work, effective.training))


def add_generation_defaults(config: TrainerConfig, effective: Effective, hardware: Hardware, shape: ModelShape,
                            work: Workload, method_defaults: dict[str, Any]) -> None:
    """On GPUs, a method that generates while it trains gets vLLM colocated in its ranks, with a
    share of each GPU that leaves training what its strategy needs (contract.plan's rule)."""
    memory = config.distributed.gpu_memory_bytes or hardware.memory_bytes
    if not (hardware.gpus and memory and config.trainer.generates_online):
        return
    peft = config.peft
    generation = generation_for(effective.training, work, bool(peft and peft.method == "qlora"), method_defaults)
    distributed = config.distributed
    defaults, note = generation_defaults(effective.training, shape, work, generation, memory, distributed.strategy,
                                         distributed.offload)
    for default in defaults:
        effective.default(default.key, default.value, default.why, "spec.training.use_vllm: false")
    if note:
        effective.notes.append(note)


def resolve_strategy(config: TrainerConfig, hardware: Hardware, shape: Optional[ModelShape], work: Optional[Workload],
                     training: Optional[dict[str, Any]] = None) -> StrategyChoice:
    """The strategy to train with: the spec's, or for auto the first the plan says fits in what
    colocated vLLM leaves of each GPU (`training`: the TRL keys to train with, defaults in)."""
    distributed = config.distributed
    if distributed.strategy != AUTO:
        return StrategyChoice(strategy=distributed.strategy, offload=distributed.offload,
                              reason="spec.distributed.strategy names it")
    if not hardware.gpus:
        return on_cpu()
    memory = distributed.gpu_memory_bytes or hardware.memory_bytes
    if shape is None or work is None or not memory:
        return StrategyChoice(strategy="zero3", reason="the model's config has no decoder dimensions to plan "
                                                      "with; zero3 shards the most")
    try:
        return choose_beside_vllm(shape, work, memory, config.training if training is None else training)
    except DoesNotFit as error:
        raise PermanentError(f"spec.distributed.strategy: auto: {error}") from None


def with_strategy(training: dict[str, Any], choice: StrategyChoice) -> dict[str, Any]:
    """The TRL keys with what the chosen strategy needs (a DeepSpeed config as a dict)."""
    if "deepspeed" in training or "fsdp" in training:
        return training  # rendered for a strategy the spec names
    return {**training, **distributed_training_args(choice.strategy, choice.offload)}
