"""The trainer config: the document each worker and the evaluator read from the job's
ConfigMap. Rendering builds it from the spec with every source resolved to where the pod
finds it; the pod runtime decodes it. A key this runtime does not know is refused, so a
trainer image older than the operator says so instead of ignoring a setting."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import Field

from .distributed import STRATEGIES
from .document import Document
from .evaluation import Gate
from .formats import FORMAT_NAMES
from .initialization import CacheSettings
from .publish import PublishTarget
from .methods import METHOD_NAMES, METHODS, Method
from .metrics import METRIC_PATTERN, METRICS
from .plan import Offload
from .sources import SOURCE_DESCRIPTION, SOURCE_PATTERN, Location

KIND = "TrainerConfig"

# The settings below are written once, here, with their defaults and descriptions: the spec
# models (kubetune.api.models) derive from them, and the CRD documents them.
DataFormat = Literal[("auto",) + FORMAT_NAMES]  # type: ignore[valid-type]
Strategy = Literal[STRATEGIES]  # type: ignore[valid-type]


class JobRef(Document):
    name: str
    namespace: str
    uid: Optional[str] = None


class ModelSettings(Document):
    source: str = Field(pattern=SOURCE_PATTERN, description=f"The model to train. {SOURCE_DESCRIPTION}")
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit) of an hf:// model.")
    tokenizer: Optional[str] = Field(
        None, pattern=SOURCE_PATTERN, description="Tokenizer source when it differs from the model."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype; auto picks bfloat16 on GPUs that support it, else float32."
    )
    trust_remote_code: bool = Field(False, description="Run the model repository's own code (transformers).")
    attn_implementation: Optional[str] = Field(
        None, description="transformers attn_implementation, e.g. sdpa or flash_attention_2."
    )


class ModelConfig(ModelSettings):
    location: Location
    tokenizer_location: Optional[Location] = None


class DatasetSettings(Document):
    source: str = Field(pattern=SOURCE_PATTERN, description=f"The data. {SOURCE_DESCRIPTION}")
    name: Optional[str] = Field(None, description="Dataset configuration (subset) name.")
    split: str = Field("train", description="Split to train on (or, for evaluation.dataset, to evaluate on).")
    eval_split: Optional[str] = Field(
        None, description="Split for evaluation during training, and after it when evaluation.dataset is not set."
    )
    format: DataFormat = Field(
        "auto",
        description=(
            "Row format. auto detects TRL's conversational and standard formats by their columns; "
            "prompt_answer, apps and humaneval rows are converted to what the method reads."
        ),
    )
    max_samples: Optional[int] = Field(None, ge=1, description="Use at most this many rows.")


class DatasetConfig(DatasetSettings):
    location: Location


class PeftConfig(Document):
    method: Literal["lora", "qlora"] = Field("lora", description="lora, or qlora (4-bit base weights; needs GPUs).")
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (the update is scaled by alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA layers.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"], min_length=1,
        description="Module names to adapt; all-linear adapts every linear layer.",
    )
    merge_for_evaluation: bool = Field(
        False, description="Merge the adapter into the base weights before evaluation."
    )


class RewardSettings(Document):
    function: Optional[str] = Field(
        None, pattern=r"^[a-z_][a-z0-9_]*$", description="A built-in reward function, e.g. accuracy_reward."
    )
    model: Optional[str] = Field(None, pattern=SOURCE_PATTERN, description=f"A reward model. {SOURCE_DESCRIPTION}")
    weight: float = Field(1.0, description="Weight of this reward in the sum (TRL reward_weights).")


class RewardConfig(RewardSettings):
    location: Optional[Location] = None  # of the model


class DistributedSettings(Document):
    strategy: Strategy = Field(
        "auto", description="auto picks from the resource plan (`kubetune plan`): ddp when everything fits one GPU, "
                            "else DeepSpeed ZeRO-2, then ZeRO-3, then ZeRO-3 with optimizer and then parameter "
                            "offload; the choice is in status.distributed. Or ddp (data parallel), DeepSpeed ZeRO "
                            "stage 1, 2 or 3, or PyTorch FSDP."
    )
    offload: Offload = Field(
        "none", description="Offload optimizer state, or optimizer state and parameters, to CPU memory."
    )


class DistributedConfig(DistributedSettings):
    """auto: each rank picks from the plan (contract.plan) once it knows its GPU."""

    gpu: Optional[str] = None  # the GPU the pods' placement names (contract.gpus), when it does
    gpu_memory_bytes: Optional[int] = None
    planned_world_size: Optional[int] = None  # ranks auto plans for (an elastic job's fewest)


class ElasticConfig(Document):
    """A job whose world size may change while it trains."""

    global_batch_size: Optional[int] = Field(
        None, description="Samples per optimizer step at every world size (gradient_accumulation_steps is "
                          "recomputed); None keeps the per-device batch instead.")


class GenerationSettings(Document):
    """How the generation server runs vLLM (TRL's `vllm serve` settings)."""

    tensor_parallel: int = Field(1, ge=1, le=64, description="GPUs each vLLM engine shards the model over.")
    data_parallel: Optional[int] = Field(
        None, ge=1, le=1024, description="vLLM engines serving in parallel; defaults to the pool's GPUs / "
                                         "tensorParallel (and 1 without GPUs).")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of each GPU's memory vLLM may take (weights and KV cache).")
    max_model_len: Optional[int] = Field(
        None, ge=1, description="Longest prompt plus completion vLLM plans for; defaults to the model's.")
    args: list[str] = Field(default_factory=list, description="More `vllm serve` arguments, passed as they are.")


class GenerationConfig(GenerationSettings):
    """The server's settings with data_parallel resolved."""

    data_parallel: int = 1
    gpus: int = 0


class SamplingConfig(Document):
    n: int = Field(1, ge=1, le=1024, description="Samples per prompt.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling probability mass.")
    max_tokens: int = Field(256, ge=1, description="Most tokens generated per sample.")
    seed: int = Field(0, description="Sampling seed.")


class EvaluationSettings(Document):
    engine: Literal["vllm", "transformers"] = Field("vllm", description="Generation engine.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="How completions are sampled.")
    metrics: list[Annotated[str, Field(pattern=METRIC_PATTERN, max_length=32)]] = Field(
        default_factory=lambda: ["loss"], max_length=32,
        description=", ".join(m.name for m in METRICS) + " (a pass@k needs sampling.n >= k).",
    )
    compare_base: bool = Field(False, description="Also evaluate the base model and report the difference.")
    timeout_seconds_per_sample: float = Field(10, gt=0, description="Time limit for each executed code sample.")


class EvaluationConfig(EvaluationSettings):
    dataset: Optional[DatasetConfig] = None  # None: the training dataset's evalSplit
    gates: list[Gate] = Field(default_factory=list)  # judged by the evaluator for the model card
    digest: Optional[str] = None  # which spec.evaluation this is: a report of another one is kept aside


class OutputPaths(Document):
    dir: str
    checkpoints: str
    model: str
    completion_record: str
    evaluation: str
    publish: list[PublishTarget] = Field(default_factory=list)


class TrainerConfig(Document):
    api_version: str
    kind: Literal["TrainerConfig"] = KIND
    job: JobRef
    method: Literal[METHOD_NAMES]  # type: ignore[valid-type]
    model: ModelConfig
    dataset: DatasetConfig
    training: dict[str, Any] = Field(description="The method's TRL config keys, the managed ones included.")
    peft: Optional[PeftConfig] = None
    rewards: list[RewardConfig] = Field(default_factory=list)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    elastic: Optional[ElasticConfig] = None
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    # The generation server's settings, when spec.generation runs one (the ranks' TRL keys in
    # `training` point at it).
    generation: Optional[GenerationConfig] = None
    # Where the initializer put the job's remote sources; None: each pod reads them itself.
    cache: Optional[CacheSettings] = None
    output: OutputPaths

    @property
    def trainer(self) -> Method:
        return METHODS[self.method]

    def evaluation_data(self) -> Optional[tuple[DatasetConfig, str]]:
        """The evaluation dataset and the split to read, or None when there is none."""
        if self.evaluation.dataset:
            return self.evaluation.dataset, self.evaluation.dataset.split
        if self.dataset.eval_split:
            return self.dataset, self.dataset.eval_split
        return None
