"""The FineTuneJob API (kubetune.io/v1alpha1) as typed models.

These models are the one source of truth: the CRD in crds/ is generated from them
(`kubetune crd`), and `kubetune validate`, rendering and the operator all read specs
through them. Cross-field rules are CEL expressions attached with `cel_rules`; they are
written once, land in the CRD as x-kubernetes-validations, and are evaluated by
`kubetune.api.validation` for specs that never met an API server.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic.alias_generators import to_camel

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ["ftj"]
CATEGORIES = ["kubetune", "ml"]

# `<name>-worker` must stay short enough for the StatefulSet's controller-revision-hash
# label (63 characters with an 11-character suffix), so job names are capped here.
MAX_JOB_NAME_LENGTH = 45

Method = Literal["sft", "dpo", "grpo", "rloo", "reward", "kto"]
METHODS: tuple[str, ...] = Method.__args__

SOURCE_PATTERN = (
    r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?"
    r"|s3://[a-z0-9][a-z0-9.-]*[a-z0-9](/[^\s]*)?"
    r"|job://[a-z]([-a-z0-9]*[a-z0-9])?"
    r"|builtin://tiny"
    r"|/[^\s]*)$"
)
SOURCE_DESCRIPTION = (
    "Where to read from: hf://<org>/<name> (Hugging Face Hub), pvc://<claim>/<path>, "
    "s3://<bucket>/<prefix>, job://<FineTuneJob in the same namespace> (its trained output), "
    "builtin://tiny (a tiny local model and dataset for smoke tests), or an absolute path "
    "inside the image."
)

# Kubernetes resource.Quantity: an integer or a quantity string such as "16Gi" or "500m".
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"


def _check_quantity(value: Union[int, str]) -> Union[int, str]:
    if isinstance(value, str) and not re.match(QUANTITY_PATTERN, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (such as 16Gi, 500m or 4)")
    return value


Quantity = Annotated[
    Union[int, str],
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
# Kubernetes objects we pass through to pod specs unchanged; the rendered manifests are
# checked against the Kubernetes schemas, so their shape is validated there.
KubeObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
PassthroughMap = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
METRIC_PATTERN = r"^(exact_match|contains|loss|perplexity|reward|pass@[1-9][0-9]*)$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
JOB_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def cel_rules(*rules: dict[str, str]) -> ConfigDict:
    """Attach CEL validation rules (Kubernetes x-kubernetes-validations) to a model."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


class KubeModel(BaseModel):
    """camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it is stored in Kubernetes: camelCase, defaults filled, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- spec ------------------------------------------------------------------------------


class ModelSpec(KubeModel):
    source: str = Field(pattern=SOURCE_PATTERN, description=SOURCE_DESCRIPTION)
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit).")
    tokenizer: Optional[str] = Field(
        None, pattern=SOURCE_PATTERN, description="Tokenizer source when it differs from the model."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weights dtype; auto picks bfloat16 on GPUs that support it, else float32."
    )
    trust_remote_code: bool = False
    attn_implementation: Optional[str] = Field(
        None, description="transformers attn_implementation, e.g. sdpa or flash_attention_2."
    )


class DatasetSpec(KubeModel):
    source: str = Field(pattern=SOURCE_PATTERN, description=SOURCE_DESCRIPTION)
    name: Optional[str] = Field(None, description="Dataset configuration (subset) name.")
    split: str = "train"
    eval_split: Optional[str] = Field(None, description="Split used for evaluation during training.")
    format: Literal[
        "auto",
        "messages",
        "prompt_completion",
        "text",
        "preference",
        "prompt_only",
        "unpaired_preference",
        "prompt_answer",
        "apps",
        "humaneval",
    ] = Field(
        "auto",
        description=(
            "Row format. auto detects TRL's conversational and standard formats; prompt_answer, "
            "apps and humaneval convert common inputs."
        ),
    )
    max_samples: Optional[int] = Field(None, ge=1, description="Use at most this many rows.")


class PeftSpec(KubeModel):
    method: Literal["lora", "qlora"] = "lora"
    r: int = Field(16, ge=1, le=1024)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["all-linear"], min_length=1,
        description="Module names to adapt; all-linear adapts every linear layer.",
    )
    merge_for_evaluation: bool = Field(
        False, description="Merge the adapter into the base weights before evaluation."
    )


class DistributedSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "self.offload == 'none' || self.strategy != 'ddp'",
         "message": "offload needs a zero1, zero2, zero3 or fsdp strategy", "fieldPath": ".offload"},
        {"rule": "self.offload != 'all' || self.strategy in ['zero3', 'fsdp']",
         "message": "offloading parameters (offload: all) needs strategy zero3 or fsdp",
         "fieldPath": ".offload"},
    )

    strategy: Literal["ddp", "zero1", "zero2", "zero3", "fsdp"] = "ddp"
    offload: Literal["none", "optimizer", "all"] = Field(
        "none", description="Offload optimizer state, or optimizer state and parameters, to CPU memory."
    )


class ElasticSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "self.minNodes <= self.maxNodes",
         "message": "minNodes must not exceed maxNodes", "fieldPath": ".minNodes"},
    )

    min_nodes: int = Field(ge=1)
    max_nodes: int = Field(ge=1, le=1024)
    max_restarts: int = Field(3, ge=0, description="torchrun --max-restarts for membership changes.")


class ResourcesSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "has(self.elastic) || self.nodes == oldSelf.nodes",
         "message": "nodes can change while a job runs only when elastic is set", "fieldPath": ".nodes"},
        {"rule": "!has(self.elastic) || (self.nodes >= self.elastic.minNodes && self.nodes <= self.elastic.maxNodes)",
         "message": "nodes must lie within elastic.minNodes..elastic.maxNodes", "fieldPath": ".nodes"},
        {"rule": "self.gpusPerNode == 0 || !has(self.processesPerNode) || self.processesPerNode <= self.gpusPerNode",
         "message": "processesPerNode cannot exceed gpusPerNode", "fieldPath": ".processesPerNode"},
    )

    nodes: int = Field(1, ge=1, le=1024, description="Worker pods; may change while training when elastic is set.")
    elastic: Optional[ElasticSpec] = None
    gpus_per_node: int = Field(0, ge=0, le=64, description="GPUs per worker pod; 0 trains on CPU.")
    processes_per_node: Optional[int] = Field(
        None, ge=1, le=256, description="Training processes per pod; defaults to gpusPerNode, or 1 on CPU."
    )
    gpu_resource_name: str = "nvidia.com/gpu"
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)
    shm_size: Quantity = Field("2Gi", description="Size of the memory-backed /dev/shm.")
    image: Optional[str] = Field(None, description="Trainer image; defaults to the operator's setting.")
    image_pull_policy: Optional[Literal["Always", "IfNotPresent", "Never"]] = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[KubeObject] = Field(default_factory=list)
    affinity: Optional[KubeObject] = None
    priority_class_name: Optional[str] = None
    scheduler_name: Optional[str] = None
    service_account_name: Optional[str] = None
    env: list[KubeObject] = Field(default_factory=list, description="Extra container env (Kubernetes EnvVar).")

    @property
    def processes(self) -> int:
        return self.processes_per_node or max(self.gpus_per_node, 1)


class CheckpointingSpec(KubeModel):
    every_steps: int = Field(50, ge=1, description="Save a checkpoint every this many optimizer steps.")
    keep: int = Field(2, ge=1, le=100, description="How many checkpoints to keep.")


class ClaimTemplateSpec(KubeModel):
    storage_class_name: Optional[str] = None
    size: Quantity = "50Gi"
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        default_factory=lambda: ["ReadWriteMany"], min_length=1
    )


class OutputSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "!(has(self.claimName) && has(self.claimTemplate))",
         "message": "set either claimName (an existing PVC) or claimTemplate, not both",
         "fieldPath": ".claimName"},
    )

    claim_name: Optional[str] = Field(
        None, pattern=DNS_LABEL_PATTERN, description="An existing PVC for checkpoints and the trained model."
    )
    sub_path: Optional[str] = Field(None, description="Folder inside the claim; defaults to the job name.")
    claim_template: Optional[ClaimTemplateSpec] = Field(
        None, description="A PVC created for this job (the default when claimName is not set)."
    )


class RewardSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "has(self.function) != has(self.model)",
         "message": "a reward is either a built-in function or a reward model", "fieldPath": ".function"},
    )

    function: Optional[str] = Field(
        None, pattern=r"^[a-z_][a-z0-9_]*$", description="A built-in reward function, e.g. accuracy_reward."
    )
    model: Optional[str] = Field(None, pattern=SOURCE_PATTERN, description="A reward model source.")
    weight: float = 1.0


class SamplingSpec(KubeModel):
    n: int = Field(1, ge=1, le=1024, description="Samples per prompt.")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    seed: int = 0


class EvaluationResourcesSpec(KubeModel):
    gpus: Optional[int] = Field(None, ge=0, le=64, description="Defaults to 1 when training uses GPUs, else 0.")
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)
    image: Optional[str] = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[KubeObject] = Field(default_factory=list)


class EvaluationSpec(KubeModel):
    enabled: bool = True
    engine: Literal["vllm", "transformers"] = "vllm"
    dataset: Optional[DatasetSpec] = Field(
        None, description="Evaluation data; defaults to the training dataset's evalSplit."
    )
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    metrics: list[Annotated[str, Field(pattern=METRIC_PATTERN)]] = Field(
        default_factory=lambda: ["loss"],
        description="exact_match, contains, loss, perplexity, reward, or pass@k (k <= sampling.n).",
    )
    compare_base: bool = Field(False, description="Also evaluate the base model and report the difference.")
    timeout_seconds_per_sample: float = Field(10, gt=0, description="Time limit for each executed code sample.")
    resources: EvaluationResourcesSpec = Field(default_factory=EvaluationResourcesSpec)

    @field_validator("metrics")
    @classmethod
    def _pass_at_k_within_samples(cls, metrics: list[str], info: ValidationInfo) -> list[str]:
        sampling = info.data.get("sampling")
        for metric in metrics:
            if sampling and metric.startswith("pass@") and int(metric[5:]) > sampling.n:
                raise ValueError(f"{metric} needs sampling.n >= {metric[5:]} (it is {sampling.n})")
        return metrics


class RunPolicySpec(KubeModel):
    backoff_limit: int = Field(3, ge=0, description="Worker restarts tolerated before the job fails.")
    active_deadline_seconds: Optional[int] = Field(None, ge=1)
    ttl_seconds_after_finished: Optional[int] = Field(None, ge=0)
    suspend: bool = False


class SecretKeyRef(KubeModel):
    name: str = Field(pattern=DNS_LABEL_PATTERN)
    key: str = "token"


class CredentialsSpec(KubeModel):
    hf_token: Optional[SecretKeyRef] = Field(None, description="Secret key holding a Hugging Face token (HF_TOKEN).")
    s3_secret_name: Optional[str] = Field(
        None, pattern=DNS_LABEL_PATTERN,
        description="Secret with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and optionally "
        "AWS_SESSION_TOKEN, AWS_ENDPOINT_URL and AWS_DEFAULT_REGION; each reaches the pods as its own secretKeyRef.",
    )


class FineTuneJobSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "self.method == oldSelf.method", "message": "method is immutable", "fieldPath": ".method"},
        {"rule": "!has(self.peft) || self.peft.method != 'qlora' || self.resources.gpusPerNode > 0",
         "message": "qlora needs GPUs (resources.gpusPerNode > 0)", "fieldPath": ".peft.method"},
        {"rule": "!(self.method in ['grpo', 'rloo']) || (has(self.rewards) && size(self.rewards) > 0)",
         "message": "grpo and rloo need at least one entry in rewards", "fieldPath": ".rewards"},
        {"rule": "!has(self.rewards) || size(self.rewards) == 0 || self.method in ['grpo', 'rloo']",
         "message": "rewards apply only to methods grpo and rloo", "fieldPath": ".rewards"},
        {"rule": "!('reward' in self.evaluation.metrics) || self.method == 'reward' || "
                 "(has(self.rewards) && self.rewards.exists(r, has(r.model)))",
         "message": "the reward metric needs a reward model: method reward, or a rewards entry with a model",
         "fieldPath": ".evaluation.metrics"},
        {"rule": "self.method != 'reward' || self.evaluation.metrics.all(m, m in ['loss', 'reward'])",
         "message": "a reward model does not generate: evaluate it with metrics loss and reward",
         "fieldPath": ".evaluation.metrics"},
    )

    method: Method = Field("sft", description="TRL trainer: sft, dpo, grpo, rloo, reward or kto.")
    model: ModelSpec
    dataset: DatasetSpec
    training: PassthroughMap = Field(
        default_factory=dict,
        description="TRL config keys for the method's config class (SFTConfig, DPOConfig, ...), unchanged.",
    )
    peft: Optional[PeftSpec] = None
    rewards: Optional[list[RewardSpec]] = Field(None, description="Reward functions or models for grpo and rloo.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    run_policy: RunPolicySpec = Field(default_factory=RunPolicySpec)
    credentials: CredentialsSpec = Field(default_factory=CredentialsSpec)

    def evaluation_skipped_because(self) -> str | None:
        """Why no evaluation runs after training, or None when one does."""
        if not self.evaluation.enabled:
            return "evaluation is disabled"
        if self.evaluation.dataset is None and self.dataset.eval_split is None:
            return "no evaluation data (set evaluation.dataset or dataset.evalSplit)"
        return None


# --- status ----------------------------------------------------------------------------

Phase = Literal["Pending", "Initializing", "Training", "Evaluating", "Succeeded", "Failed", "Suspended"]


class Condition(KubeModel):
    """metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: Optional[int] = None


class ProgressStatus(KubeModel):
    model_config = ConfigDict(extra="ignore")

    step: int = 0
    total_steps: Optional[int] = None
    epoch: Optional[float] = None
    loss: Optional[float] = None
    learning_rate: Optional[float] = None
    tokens_per_second: Optional[float] = None
    eta_seconds: Optional[float] = None
    display: Optional[str] = Field(None, description="step/total (percent), for kubectl get.")
    last_checkpoint: Optional[str] = None


class WorkersStatus(KubeModel):
    model_config = ConfigDict(extra="ignore")

    desired: int = 0
    ready: int = 0
    restarts: int = 0


class MetricResult(KubeModel):
    model_config = ConfigDict(extra="ignore")

    tuned: float
    base: Optional[float] = None
    delta: Optional[float] = None


class EvaluationStatus(KubeModel):
    model_config = ConfigDict(extra="ignore")

    metrics: dict[str, MetricResult] = Field(default_factory=dict)
    report: Optional[str] = Field(None, description="Path of the JSON report inside the output volume.")


class OutputStatus(KubeModel):
    model_config = ConfigDict(extra="ignore")

    claim_name: str
    path: str = Field(description="Folder of the trained model inside the claim.")


class FineTuneJobStatus(KubeModel):
    model_config = ConfigDict(extra="ignore")

    phase: Optional[Phase] = None
    conditions: list[Condition] = Field(default_factory=list)
    progress: Optional[ProgressStatus] = None
    workers: Optional[WorkersStatus] = None
    evaluation: Optional[EvaluationStatus] = None
    output: Optional[OutputStatus] = None
    start_time: Optional[str] = None
    completion_time: Optional[str] = None
    observed_generation: Optional[int] = None


# --- the resource ----------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The metadata fields kubetune reads; the rest passes through untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(max_length=MAX_JOB_NAME_LENGTH, pattern=JOB_NAME_PATTERN)
    namespace: str = Field("default", pattern=DNS_LABEL_PATTERN)
    uid: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class FineTuneJob(KubeModel):
    model_config = cel_rules(
        {"rule": "self.metadata.name.size() <= %d" % MAX_JOB_NAME_LENGTH,
         "message": "metadata.name must be at most %d characters (worker pod names derive from it)"
         % MAX_JOB_NAME_LENGTH,
         "fieldPath": ".metadata.name"},
        {"rule": "self.spec.model.source != 'job://' + self.metadata.name",
         "message": "a job cannot read its model from its own output", "fieldPath": ".spec.model.source"},
    )
    crd_root: ClassVar[bool] = True

    api_version: Literal["kubetune.io/v1alpha1"] = API_VERSION
    kind: Literal["FineTuneJob"] = KIND
    metadata: ObjectMeta
    spec: FineTuneJobSpec
    status: Optional[FineTuneJobStatus] = None
