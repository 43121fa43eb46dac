"""A resource plan: per-GPU memory of each distributed strategy for a model and a batch, the
strategy `distributed.strategy: auto` picks, and the model FLOPs per token that MFU divides by.

Pure arithmetic on a model's config (its config.json as a dict), so `kubetune plan`, the
operator and every training rank compute the same numbers. GRPO and RLOO may run vLLM inside
each training rank (TRL's colocate mode): then vLLM takes a share of each GPU and the strategy
is planned on what it leaves. Model states follow DeepSpeed's own
estimators (mixed precision with Adam: 2 bytes of 16-bit weights plus 18 bytes of gradients,
fp32 master weights and optimizer states per trained parameter), so the plan agrees with
`estimate_zero2_model_states_mem_needs` and `estimate_zero3_model_states_mem_needs` (a test
holds it to 5 %). Activations follow Korthikanti et al. (2022) for a gated-MLP decoder with a
fused attention kernel; TRL's trainers compute log-probabilities in chunks (a fused LM head),
so full logits are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic import ConfigDict, Field

from .document import Document
from .gpus import GIB

Offload = Literal["none", "optimizer", "all"]

# What `auto` tries, in order: ZeRO-2 before ZeRO-3, offload only when nothing else fits.
AUTO_CHAIN: tuple[tuple[str, Offload], ...] = (
    ("ddp", "none"), ("zero2", "none"), ("zero3", "none"), ("zero3", "optimizer"), ("zero3", "all"))
# Every row `kubetune plan` prints.
PLANNED: tuple[tuple[str, Offload], ...] = (
    ("ddp", "none"), ("zero1", "none"), ("zero2", "none"), ("zero3", "none"),
    ("zero2", "optimizer"), ("zero3", "optimizer"), ("zero3", "all"))
# Kept free on each GPU: the CUDA context, NCCL buffers and the allocator's fragmentation.
RESERVED_BYTES = GIB
RESERVED_FRACTION = 0.05
# Bytes per trained parameter besides its 16-bit weight: 16- and 32-bit gradients (2 + 4),
# fp32 master weight (4) and Adam's two moments (8), as DeepSpeed counts them.
GRADIENT_BYTES = 6
OPTIMIZER_BYTES = 12

UNTIED_BY_DEFAULT = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3")
QKV_BIAS = ("qwen2", "qwen2_moe")
UNGATED_MLP = ("gpt2", "gpt_neox", "opt", "bloom", "falcon", "starcoder2", "phi")


def _get(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's dimensions, read from its config.json."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    attention_bias: bool = False
    gated_mlp: bool = True
    experts: int = 1
    active_experts: int = 1  # experts each token goes through

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelShape":
        """From a transformers config dict; a multimodal config's text_config is the model trained."""
        config = {**config, **(config.get("text_config") or {})}
        hidden = int(_get(config, "hidden_size", "n_embd", "d_model"))
        heads = int(_get(config, "num_attention_heads", "n_head"))
        model_type = config.get("model_type", "")
        return cls(
            layers=int(_get(config, "num_hidden_layers", "n_layer")),
            hidden=hidden,
            intermediate=int(_get(config, "moe_intermediate_size", "intermediate_size", "n_inner",
                                  default=4 * hidden)),
            heads=heads,
            kv_heads=int(_get(config, "num_key_value_heads", default=heads)),
            head_dim=int(_get(config, "head_dim", default=hidden // heads)),
            vocab=int(config["vocab_size"]),
            # transformers' own default is True; the Llama family's config classes default to False.
            tied_embeddings=bool(config.get("tie_word_embeddings", model_type not in UNTIED_BY_DEFAULT)),
            attention_bias=bool(config.get("attention_bias", model_type in QKV_BIAS)),
            gated_mlp=model_type not in UNGATED_MLP,
            experts=int(_get(config, "num_local_experts", "num_experts", default=1)),
            active_experts=int(_get(config, "num_experts_per_tok", default=1)),
        )

    @property
    def embedding(self) -> int:
        return self.vocab * self.hidden

    @property
    def attention(self) -> int:
        """Parameters of one layer's attention: q, k, v, o (and q, k, v biases)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.hidden * (2 * q + 2 * kv) + ((q + 2 * kv) if self.attention_bias else 0)

    @property
    def expert_mlp(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden * self.intermediate

    @property
    def layer(self) -> int:
        return self.attention + self.expert_mlp * self.experts + 2 * self.hidden  # and two norms

    @property
    def parameters(self) -> int:
        return self.embedding * (1 if self.tied_embeddings else 2) + self.layers * self.layer + self.hidden

    @property
    def largest_module(self) -> int:
        """Parameters of the biggest single module (DeepSpeed's largest_layer_params)."""
        return max(self.embedding, self.hidden * self.intermediate, self.hidden * self.heads * self.head_dim)

    def lora_parameters(self, rank: int) -> int:
        """Trainable parameters of LoRA (rank r) on every linear layer of every decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = rank * (2 * (self.hidden + q) + 2 * (self.hidden + kv))
        mlp = rank * (self.hidden + self.intermediate) * (3 if self.gated_mlp else 2) * self.experts
        return self.layers * (attention + mlp)

    def flops_per_token(self, sequence: int) -> float:
        """Training FLOPs per token: 6 per weight that does a matmul (forward and backward: every
        linear layer, the active experts only, and the LM head) plus attention scores and values
        (12 x layers x attention width x sequence; PaLM, appendix B)."""
        matmul_weights = self.layers * (self.attention + self.expert_mlp * self.active_experts) + self.embedding
        return 6.0 * matmul_weights + 12.0 * self.layers * self.heads * self.head_dim * sequence


@dataclass(frozen=True)
class Workload:
    """What a job asks of each GPU."""

    micro_batch: int  # per_device_train_batch_size
    sequence: int  # tokens per sequence (max_length)
    gpus: int  # data-parallel ranks, all nodes
    gradient_checkpointing: bool = True
    trainable: Optional[int] = None  # None: every parameter (full fine-tuning)
    frozen_weight_bytes: float = 2.0  # per frozen parameter: 2 in bf16, about 0.56 in 4 bits (QLoRA)
    eager_attention: bool = False  # the attention matrix is materialised


# The TRL config defaults a plan reads, as every method's config has them (a test checks them
# against the installed TRL); a rank passes the installed TRL's own instead.
TRL_PLAN_DEFAULTS: dict[str, Any] = {"per_device_train_batch_size": 8, "max_length": 1024,
                                     "gradient_checkpointing": True, "max_completion_length": 512}
ASSUMED_PROMPT_TOKENS = 512  # GRPO and RLOO bound only the completion


def plan_defaults(generates_online: bool) -> dict[str, Any]:
    """TRL_PLAN_DEFAULTS for a method: GRPO's and RLOO's configs have no max_length (a sequence is
    a prompt and up to max_completion_length), as a rank reading the installed TRL finds."""
    return {key: value for key, value in TRL_PLAN_DEFAULTS.items() if not (generates_online and key == "max_length")}
QLORA_WEIGHT_BYTES = 0.5625  # 4-bit weights plus double-quantised scales


def workload_for(shape: ModelShape, training: dict[str, Any], gpus: int, lora_rank: Optional[int] = None,
                 qlora: bool = False, defaults: Optional[dict[str, Any]] = None) -> Workload:
    """What a job asks of each GPU, from its TRL keys (`defaults` for those it leaves out)."""
    defaults = TRL_PLAN_DEFAULTS if defaults is None else defaults

    def value(key: str) -> Any:
        return training[key] if training.get(key) is not None else defaults.get(key)

    sequence = value("max_length") or ASSUMED_PROMPT_TOKENS + int(value("max_completion_length") or 256)
    attention = (training.get("model_init_kwargs") or {}).get("attn_implementation")
    return Workload(micro_batch=int(value("per_device_train_batch_size") or 8), sequence=int(sequence), gpus=gpus,
                    gradient_checkpointing=bool(value("gradient_checkpointing")),
                    trainable=shape.lora_parameters(lora_rank) if lora_rank else None,
                    frozen_weight_bytes=QLORA_WEIGHT_BYTES if qlora else 2.0, eager_attention=attention == "eager")


class StrategyMemory(Document):
    """Bytes per GPU under one strategy."""

    strategy: str
    offload: str
    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int
    activations_full: int
    total: int
    fits: Optional[bool] = None

    @property
    def model_states(self) -> int:
        return self.weights + self.gradients + self.optimizer


def _model_states(shape: ModelShape, work: Workload, strategy: str, offload: str) -> tuple[int, int, int]:
    """(weights, gradients, optimizer states) in bytes per GPU."""
    total = shape.parameters
    trained = total if work.trainable is None else work.trainable
    frozen = (total - trained) * work.frozen_weight_bytes
    g = work.gpus
    if strategy == "zero3":
        gather = 4 * shape.largest_module  # a gathered module (DeepSpeed's 4 x largest layer)
        if offload == "all":
            return gather, 0, 0
        if offload == "optimizer":
            return gather + int((frozen + 2 * trained) / g), 0, 0
        return gather + int(frozen / g), GRADIENT_BYTES * trained // g, OPTIMIZER_BYTES * trained // g
    weights = int(frozen + 2 * trained)
    if offload != "none":
        return weights, 0, 0
    if strategy == "zero2":
        return weights, GRADIENT_BYTES * trained // g, OPTIMIZER_BYTES * trained // g
    if strategy == "zero1":
        return weights, 2 * trained + 4 * trained // g, OPTIMIZER_BYTES * trained // g
    return weights, GRADIENT_BYTES * trained, OPTIMIZER_BYTES * trained


def activations(shape: ModelShape, work: Workload) -> tuple[int, int]:
    """(with gradient checkpointing, without) in bytes per GPU, for bf16 activations."""
    tokens = work.micro_batch * work.sequence
    # Per layer: norms, q/k/v, attention output and residuals (16 x hidden) and the gated MLP's
    # four intermediate tensors (8 x intermediate), 2 bytes each.
    layer = tokens * (16 * shape.hidden + 8 * shape.intermediate * shape.active_experts)
    if work.eager_attention:
        layer += 5 * work.micro_batch * shape.heads * work.sequence**2
    checkpointed = shape.layers * 2 * tokens * shape.hidden + layer  # layer inputs, then one layer again
    return checkpointed, shape.layers * layer


def usable_bytes(gpu_memory: int) -> int:
    return int(gpu_memory * (1 - RESERVED_FRACTION)) - RESERVED_BYTES


def strategy_memory(shape: ModelShape, work: Workload, strategy: str, offload: str,
                    gpu_memory: Optional[int] = None) -> StrategyMemory:
    weights, gradients, optimizer = _model_states(shape, work, strategy, offload)
    checkpointed, full = activations(shape, work)
    chosen = checkpointed if work.gradient_checkpointing else full
    total = weights + gradients + optimizer + chosen
    return StrategyMemory(strategy=strategy, offload=offload, weights=weights, gradients=gradients,
                          optimizer=optimizer, activations=chosen, activations_checkpointed=checkpointed,
                          activations_full=full, total=total,
                          fits=None if gpu_memory is None else total <= usable_bytes(gpu_memory))


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def label(strategy: str, offload: str) -> str:
    return strategy if offload == "none" else f"{strategy} + {offload} offload"


class StrategyChoice(Document):
    """What a job trains with (from `auto`, or as the spec says), and why."""

    # In /progress and status: a newer trainer image may say more than this operator reads.
    model_config = ConfigDict(extra="ignore")

    strategy: str = Field(description="ddp, zero1, zero2, zero3 or fsdp.")
    offload: str = Field("none", description="none, optimizer or all.")
    reason: str = Field(description="Why: the plan's numbers for auto, or that the spec names it.")
    per_gpu_bytes: Optional[int] = Field(None, description="The plan's memory per GPU with this strategy.")
    gpu_memory_bytes: Optional[int] = Field(None, description="Memory of each GPU the plan counted with.")


def on_cpu() -> StrategyChoice:
    """What auto is without GPUs: there is nothing to shard."""
    return StrategyChoice(strategy="ddp", reason="no GPUs: data parallel across CPU processes")


class DoesNotFit(ValueError):
    """Even the most frugal strategy needs more than the GPU has."""


def choose(shape: ModelShape, work: Workload, gpu_memory: int) -> StrategyChoice:
    """The first strategy of AUTO_CHAIN that fits, and why; DoesNotFit names the numbers."""
    usable = usable_bytes(gpu_memory)
    tried: list[str] = []
    for strategy, offload in AUTO_CHAIN:
        memory = strategy_memory(shape, work, strategy, offload, gpu_memory)
        if memory.fits:
            before = f"; {', '.join(tried)}" if tried else ""
            return StrategyChoice(
                strategy=strategy, offload=offload, per_gpu_bytes=memory.total, gpu_memory_bytes=gpu_memory,
                reason=f"{label(strategy, offload)} needs {gib(memory.total)} per GPU of {gib(usable)} usable"
                       f"{before}")
        tried.append(f"{label(strategy, offload)} would need {gib(memory.total)}")
    raise DoesNotFit(
        f"a {shape.parameters / 1e9:.2f}B-parameter model does not fit {work.gpus} GPU(s) of {gib(gpu_memory)} "
        f"({gib(usable)} usable) with any strategy: {', '.join(tried)}. Add GPUs or nodes, lower "
        f"per_device_train_batch_size or max_length, turn gradient_checkpointing on, or train LoRA (spec.peft)")


# --- vLLM colocated in the training ranks (GRPO and RLOO) ---------------------------------------

COLOCATE = "colocate"
# TRL's defaults of the vLLM keys a plan reads (a test checks them against the installed TRL).
TRL_VLLM_DEFAULTS: dict[str, Any] = {"vllm_mode": COLOCATE, "vllm_gpu_memory_utilization": 0.3,
                                     "vllm_tensor_parallel_size": 1}
# vLLM's share of each GPU when kubetune chooses it: what vLLM needs, at least VLLM_MIN_SHARE (room
# for completions longer than planned) and at most VLLM_MAX_SHARE. More than it needs buys vLLM
# nothing, since TRL caps its concurrent sequences at the rank's generation batch, while training
# keeps the rest as headroom. A job whose vLLM would need more than half of each GPU is not
# colocated by default: it generates with transformers, or with `vllm_mode: server` on GPUs of its own.
VLLM_MIN_SHARE = 0.2
VLLM_MAX_SHARE = 0.5
# vLLM's memory besides weights and KV cache: its profiling run (TRL caps a batch at 4,096
# tokens), the sampler's logits and CUDA graphs.
GENERATION_OVERHEAD_BYTES = 2 * GIB


def colocates(training: dict[str, Any]) -> bool:
    """The TRL keys run vLLM inside each training rank: use_vllm, in colocate mode (TRL's default)."""
    return bool(training.get("use_vllm")) and training.get("vllm_mode", TRL_VLLM_DEFAULTS["vllm_mode"]) == COLOCATE


def vllm_share(training: dict[str, Any]) -> float:
    """The fraction of each GPU's memory colocated vLLM takes (vllm_gpu_memory_utilization); 0 without it."""
    if not colocates(training):
        return 0.0
    return float(training.get("vllm_gpu_memory_utilization", TRL_VLLM_DEFAULTS["vllm_gpu_memory_utilization"]))


def training_memory(gpu_memory: int, training: dict[str, Any]) -> int:
    """Each GPU's memory left to training by colocated vLLM."""
    return int(gpu_memory * (1 - vllm_share(training)))


@dataclass(frozen=True)
class Generation:
    """What colocated vLLM holds on each GPU: the policy's weights and the KV cache of the rank's
    whole generation batch at full length."""

    sequences: int  # completions a rank generates at once (TRL's max_num_seqs)
    sequence: int  # prompt and completion tokens
    weight_bytes: float = 2.0  # per parameter: 16-bit, or 4-bit with QLoRA (vLLM loads it with bitsandbytes)
    tensor_parallel: int = 1  # vllm_tensor_parallel_size: ranks one vLLM instance spans

    def kv_bytes(self, shape: ModelShape) -> int:
        per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * 2  # K and V, 16-bit
        return per_token * self.sequences * self.sequence // self.tensor_parallel

    def weights(self, shape: ModelShape) -> int:
        return int(shape.parameters * self.weight_bytes / self.tensor_parallel)

    def bytes(self, shape: ModelShape) -> int:
        """What vLLM needs per GPU."""
        return self.weights(shape) + self.kv_bytes(shape) + GENERATION_OVERHEAD_BYTES

    def describe(self, shape: ModelShape) -> str:
        return (f"{gib(self.weights(shape))} weights, {gib(self.kv_bytes(shape))} KV cache for {self.sequences} "
                f"sequences of {self.sequence:,} tokens, {gib(GENERATION_OVERHEAD_BYTES)} overhead")


def generation_for(training: dict[str, Any], work: Workload, qlora: bool = False,
                   defaults: Optional[dict[str, Any]] = None) -> Generation:
    """What colocated vLLM holds for a job's TRL keys (`defaults` for those it leaves out)."""
    defaults = TRL_PLAN_DEFAULTS if defaults is None else defaults

    def value(key: str) -> Any:
        return training[key] if training.get(key) is not None else defaults.get(key)

    tensor_parallel = int(value("vllm_tensor_parallel_size") or 1)
    if value("generation_batch_size"):
        sequences = int(value("generation_batch_size")) // work.gpus
    else:
        sequences = work.micro_batch * int(value("steps_per_generation") or value("gradient_accumulation_steps") or 1)
    return Generation(sequences=sequences * tensor_parallel, sequence=work.sequence,
                      weight_bytes=QLORA_WEIGHT_BYTES if qlora else 2.0, tensor_parallel=tensor_parallel)


def server_generation(per_rank: Generation, ranks: int, engines: int, tensor_parallel: int) -> Generation:
    """What each GPU of a generation server holds: every rank's prompts go to the server, spread
    over its engines (vLLM's data parallel), each sharded over tensor_parallel GPUs."""
    sequences = -(-per_rank.sequences * ranks // engines)
    return Generation(sequences=sequences, sequence=per_rank.sequence, weight_bytes=per_rank.weight_bytes,
                      tensor_parallel=tensor_parallel)


def server_refusal(shape: ModelShape, generation: Generation, gpu_memory: int, utilization: float
                   ) -> Optional[str]:
    """Why a generation server cannot hold the model: its weights per GPU (and vLLM's overhead)
    exceed the share of each GPU it may take."""
    capacity = int(gpu_memory * utilization)
    held = generation.weights(shape) + GENERATION_OVERHEAD_BYTES
    if held <= capacity:
        return None
    return (f"the generation server needs {gib(held)} of each GPU for the weights alone at tensorParallel "
            f"{generation.tensor_parallel} ({gib(generation.weights(shape))} weights, "
            f"{gib(GENERATION_OVERHEAD_BYTES)} overhead), more than gpuMemoryUtilization {utilization:g} of a "
            f"{gib(gpu_memory)} GPU ({gib(capacity)}); raise spec.generation.tensorParallel")


def generation_share(shape: ModelShape, generation: Generation, gpu_memory: int) -> float:
    """vLLM's share of each GPU for what it needs, in hundredths rounded up, within the bounds."""
    needed = math.ceil(generation.bytes(shape) / gpu_memory * 100) / 100
    return min(max(VLLM_MIN_SHARE, needed), VLLM_MAX_SHARE)


@dataclass(frozen=True)
class KeyDefault:
    """A TRL key kubetune sets, and why."""

    key: str
    value: Any
    why: str


def generation_defaults(training: dict[str, Any], shape: ModelShape, work: Workload, generation: Generation,
                        gpu_memory: int, strategy: str = "auto", offload: str = "none"
                        ) -> tuple[list[KeyDefault], Optional[str]]:
    """For a method that generates while it trains, on GPUs: the vLLM keys kubetune sets where
    `training` leaves them out (a key the job sets wins: `use_vllm: false` generates with
    transformers, `vllm_mode: server` uses the job's server), and why vLLM stays off when
    kubetune would turn it on but vLLM and training do not both fit a GPU."""
    needed, share = generation.bytes(shape), generation_share(shape, generation, gpu_memory)
    left = int(gpu_memory * (1 - share))
    defaults: list[KeyDefault] = []
    if "use_vllm" not in training:
        if training.get("vllm_mode", TRL_VLLM_DEFAULTS["vllm_mode"]) == COLOCATE:
            refused = _colocation_refused(shape, work, generation, gpu_memory, left, strategy, offload)
            if refused:
                return [], f"use_vllm stays off: {refused} (to colocate anyway: spec.training.use_vllm: true)"
        defaults.append(KeyDefault("use_vllm", True, "GRPO and RLOO generate with vLLM, much faster than with "
                                                     "transformers' generate()"))
    elif not training["use_vllm"]:
        return [], None
    if "vllm_mode" not in training:
        defaults.append(KeyDefault("vllm_mode", COLOCATE, "vLLM runs inside each training process, on its GPU"))
    if colocates({**training, "use_vllm": True}) and "vllm_gpu_memory_utilization" not in training:
        defaults.append(KeyDefault(
            "vllm_gpu_memory_utilization", share,
            f"vLLM needs about {gib(needed)} of each {gib(gpu_memory)} GPU ({generation.describe(shape)}), given "
            f"at least {VLLM_MIN_SHARE:g} and at most {VLLM_MAX_SHARE:g} of it; training plans on the other "
            f"{gib(left)}"))
    return defaults, None


def _colocation_refused(shape: ModelShape, work: Workload, generation: Generation, gpu_memory: int, left: int,
                        strategy: str, offload: str) -> Optional[str]:
    needed = generation.bytes(shape)
    if needed > gpu_memory * VLLM_MAX_SHARE:
        return (f"colocated vLLM would need {gib(needed)} of each {gib(gpu_memory)} GPU "
                f"({generation.describe(shape)}), more than {VLLM_MAX_SHARE:g} of it")
    if not _strategy_fits(shape, work, left, strategy, offload):
        return (f"training does not fit the {gib(left)} of each GPU left beside colocated vLLM (which needs "
                f"{gib(needed)})")
    return None


def _strategy_fits(shape: ModelShape, work: Workload, memory: int, strategy: str, offload: str) -> bool:
    if strategy == "auto":
        try:
            choose(shape, work, memory)
        except DoesNotFit:
            return False
        return True
    # FSDP's full shard holds what ZeRO-3 holds.
    return bool(strategy_memory(shape, work, "zero3" if strategy == "fsdp" else strategy, offload, memory).fits)


def with_generation_defaults(training: dict[str, Any], defaults: list[KeyDefault]) -> dict[str, Any]:
    return {**training, **{default.key: default.value for default in defaults}}


def choose_beside_vllm(shape: ModelShape, work: Workload, gpu_memory: int, training: dict[str, Any]
                       ) -> StrategyChoice:
    """choose() on what colocated vLLM leaves of each GPU (all of it without colocated vLLM)."""
    share = vllm_share(training)
    if not share:
        return choose(shape, work, gpu_memory)
    beside = f"vLLM (colocate) takes {share:g} of each {gib(gpu_memory)} GPU"
    try:
        choice = choose(shape, work, training_memory(gpu_memory, training))
    except DoesNotFit as error:
        raise DoesNotFit(f"{error}; {beside} (spec.training.use_vllm: false leaves training all of it)") from None
    return choice.model_copy(update={"reason": f"{choice.reason}; {beside}"})


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the model's FLOPs done per second over the GPUs' peak."""
    return tokens_per_second * flops_per_token / peak_flops
