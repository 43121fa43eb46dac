"""The trainer config: the document each worker and the evaluator read from the job's
ConfigMap. Rendering builds it from the spec with every source resolved to where the pod
finds it; the pod runtime decodes it. A key this runtime does not know is refused, so a
trainer image older than the operator says so instead of ignoring a setting."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from .document import Document
from .evaluation import Gate
from .publish import PublishTarget
from .methods import METHOD_NAMES, METHODS, Method
from .sources import Location

KIND = "TrainerConfig"


class JobRef(Document):
    name: str
    namespace: str
    uid: Optional[str] = None


class ModelConfig(Document):
    source: str
    location: Location
    revision: Optional[str] = None
    tokenizer: Optional[str] = None
    tokenizer_location: Optional[Location] = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    attn_implementation: Optional[str] = None


class DatasetConfig(Document):
    source: str
    location: Location
    name: Optional[str] = None
    split: str = "train"
    eval_split: Optional[str] = None
    format: str = "auto"
    max_samples: Optional[int] = None


class PeftConfig(Document):
    method: str = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"])
    merge_for_evaluation: bool = False


class RewardConfig(Document):
    function: Optional[str] = None
    model: Optional[str] = None
    location: Optional[Location] = None  # of the model
    weight: float = 1.0


class DistributedConfig(Document):
    strategy: str = "ddp"  # auto: each rank picks from the plan (contract.plan) once it knows its GPU
    offload: str = "none"
    gpu: Optional[str] = None  # the GPU the pods' placement names (contract.gpus), when it does
    gpu_memory_bytes: Optional[int] = None
    planned_world_size: Optional[int] = None  # ranks auto plans for (an elastic job's fewest)


class ElasticConfig(Document):
    """A job whose world size may change while it trains."""

    global_batch_size: Optional[int] = Field(
        None, description="Samples per optimizer step at every world size (gradient_accumulation_steps is "
                          "recomputed); None keeps the per-device batch instead.")


class SamplingConfig(Document):
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0


class EvaluationConfig(Document):
    engine: str = "vllm"
    dataset: Optional[DatasetConfig] = None  # None: the training dataset's evalSplit
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    metrics: list[str] = Field(default_factory=lambda: ["loss"])
    compare_base: bool = False
    timeout_seconds_per_sample: float = 10
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
