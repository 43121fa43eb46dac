"""The FineTuneJob API (kubetune.io/v1alpha1) as typed models.

These models are the one source of truth: the CRD in crds/ is generated from them
(`kubetune crd`), and `kubetune validate`, rendering and the operator all read specs
through them; the lifecycle writes status through the status models. Cross-field rules are
CEL expressions attached with `cel_rules`; they are written once, land in the CRD as
x-kubernetes-validations, and are evaluated by `kubetune.api.validation` for specs that
never met an API server. Names of methods, formats, metrics and source schemes come from the
tables in `kubetune.contract`.

Types are strict, as the API server's schema is: "2" is not a number and "yes" is not a
boolean. Null fields are dropped first, as the API server drops them.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import pydantic_core
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from ..contract.config import (
    DatasetSettings,
    DistributedSettings,
    EvaluationSettings,
    GenerationSettings,
    ModelSettings,
    PeftConfig,
    RewardSettings,
    SamplingConfig,
)
from ..contract.evaluation import GATE_BOUNDS, Gate, GateResult, MetricValue, Verdict
from ..contract.publish import Published, PublishSettings
from ..contract.methods import METHOD_NAMES, METHODS, REWARD_METHODS, SCORING_METHODS
from ..contract.metrics import REWARD_MODEL_JOB_METRICS, REWARD_MODEL_METRICS, Metric
from ..contract.pod import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES
from ..contract.failure import FAILURE_CLASSES, FailureClass
from ..contract.plan import StrategyChoice
from ..contract.initialization import FetchedSource
from ..contract.progress import TrainingNumbers, TrainingPhase
from .kube_schemas import kube_type

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

Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]

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
PassthroughMap = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
# Kubernetes objects that go into pod specs unchanged, checked against the official schemas.
EnvVar = kube_type("EnvVar")
Toleration = kube_type("Toleration")
Affinity = kube_type("Affinity")

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
JOB_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# An extended resource name such as nvidia.com/gpu (a qualified name).
RESOURCE_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{name}'" for name in names) + "]"


def cel_rules(*rules: dict[str, str]) -> ConfigDict:
    """Attach CEL validation rules (Kubernetes x-kubernetes-validations) to a model."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": list(rules)})


RECREATE = "create a new job with the change (a job:// source can start from this one's output)"


def unchanged(field: str, optional: bool = False) -> dict[str, str]:
    """A transition rule: the field keeps its value once the job exists."""
    rule = f"self.{field} == oldSelf.{field}"
    if optional:
        rule = f"has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || {rule})"
    return {"rule": rule, "fieldPath": f".{field}",
            "message": f"{field} cannot change once the job exists: its pods already run with it; {RECREATE}"}


class KubeModel(BaseModel):
    """camelCase on the wire, unknown fields refused, types as strict as the CRD schema's."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        strict=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # The API server drops null fields (none is nullable) before defaulting.
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    def wire(self) -> dict[str, Any]:
        """The object as it is stored in Kubernetes: camelCase, defaults filled, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- spec ------------------------------------------------------------------------------
# A part of the spec that the pods read too takes its fields (defaults, bounds, descriptions)
# from the contract's definition; the spec model adds the API server's strictness and CEL rules.


class ModelSpec(KubeModel, ModelSettings):
    pass


class DatasetSpec(KubeModel, DatasetSettings):
    pass


class PeftSpec(KubeModel, PeftConfig):
    pass


class DistributedSpec(KubeModel, DistributedSettings):
    model_config = cel_rules(
        {"rule": "self.offload == 'none' || !(self.strategy in ['ddp', 'auto'])",
         "message": "offload needs a zero1, zero2, zero3 or fsdp strategy (auto picks offload itself)",
         "fieldPath": ".offload"},
        {"rule": "self.offload != 'all' || self.strategy in ['zero3', 'fsdp']",
         "message": "offloading parameters (offload: all) needs strategy zero3 or fsdp",
         "fieldPath": ".offload"},
    )


class ElasticSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "self.minNodes <= self.maxNodes",
         "message": "minNodes must not exceed maxNodes", "fieldPath": ".minNodes"},
    )

    min_nodes: int = Field(ge=1, description="Fewest worker pods training goes on with.")
    max_nodes: int = Field(ge=1, le=1024, description="Most worker pods the job may be scaled to.")
    max_restarts: int = Field(3, ge=0, description="torchrun --max-restarts for membership changes.")
    keep_global_batch: bool = Field(
        True, description="Keep the global batch size across resizes: gradient_accumulation_steps is recomputed "
                          "for each world size so that per_device_train_batch_size x gradient_accumulation_steps x "
                          "processes x maxNodes stays the same (it must split evenly at every node count in "
                          "minNodes..maxNodes). false keeps the per-device batch and lets the global batch change.")


_RESERVED_ENV = (
    " || ".join(f"e.name.startsWith('{prefix}')" for prefix in RESERVED_ENV_PREFIXES)
    + f" || e.name in {_cel_list(RESERVED_ENV_NAMES)}"
)


class ResourcesSpec(KubeModel):
    model_config = cel_rules(
        {"rule": "has(self.elastic) || self.nodes == oldSelf.nodes",
         "message": "nodes can change while a job runs only when elastic is set", "fieldPath": ".nodes"},
        {"rule": "!has(self.elastic) || (self.nodes >= self.elastic.minNodes && self.nodes <= self.elastic.maxNodes)",
         "message": "nodes must lie within elastic.minNodes..elastic.maxNodes", "fieldPath": ".nodes"},
        {"rule": "self.gpusPerNode == 0 || !has(self.processesPerNode) || self.processesPerNode <= self.gpusPerNode",
         "message": "processesPerNode cannot exceed gpusPerNode", "fieldPath": ".processesPerNode"},
        *(unchanged(field) for field in ("gpusPerNode", "gpuResourceName", "requests", "limits", "shmSize",
                                          "nodeSelector", "tolerations", "env")),
        *(unchanged(field, optional=True) for field in ("elastic", "processesPerNode", "image", "imagePullPolicy",
                                                         "affinity", "priorityClassName", "schedulerName",
                                                         "serviceAccountName")),
        {"rule": f"!self.env.exists(e, {_RESERVED_ENV})",
         "messageExpression": f"'env ' + self.env.filter(e, {_RESERVED_ENV})[0].name + "
                              "' is set by kubetune (rendezvous and runtime env); remove it'",
         "message": "env may not set PET_*, KUBETUNE_*, TORCHELASTIC_* or the rank and world-size variables",
         "fieldPath": ".env"},
    )

    nodes: int = Field(1, ge=1, le=1024, description="Worker pods; may change while training when elastic is set.")
    elastic: Optional[ElasticSpec] = Field(
        None, description="Let nodes change while the job runs, within minNodes..maxNodes (torchrun c10d rendezvous)."
    )
    gpus_per_node: int = Field(0, ge=0, le=64, description="GPUs per worker pod; 0 trains on CPU.")
    processes_per_node: Optional[int] = Field(
        None, ge=1, le=256, description="Training processes per pod; defaults to gpusPerNode, or 1 on CPU."
    )
    gpu_resource_name: str = Field(
        "nvidia.com/gpu", pattern=RESOURCE_NAME_PATTERN, description="The extended resource that counts GPUs."
    )
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Container requests (cpu, memory, ...).")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Container limits (cpu, memory, ...).")
    shm_size: Quantity = Field("2Gi", description="Size of the memory-backed /dev/shm.")
    image: Optional[str] = Field(None, description="Trainer image; defaults to the operator's setting.")
    image_pull_policy: Optional[Literal["Always", "IfNotPresent", "Never"]] = Field(
        None, description="imagePullPolicy of the trainer and evaluator; defaults to the operator's setting."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels worker pods must match (the operator's GPU default otherwise)."
    )
    tolerations: list[Toleration] = Field(default_factory=list, description="Tolerations of the worker pods.")
    affinity: Optional[Affinity] = Field(None, description="Affinity of the worker pods.")
    priority_class_name: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="PriorityClass of the worker pods."
    )
    scheduler_name: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253,
        description="Scheduler of the worker pods (e.g. a gang scheduler).",
    )
    service_account_name: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253,
        description="ServiceAccount of the worker and evaluation pods (e.g. for workload identity).",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=128,
        description="Extra container env (Kubernetes EnvVar); the rendezvous and kubetune's own variables are refused.",
    )

    @property
    def processes(self) -> int:
        return self.processes_per_node or max(self.gpus_per_node, 1)

    @property
    def planned_ranks(self) -> int:
        """The ranks a resource plan counts: an elastic job's fewest, so a resize never changes the strategy."""
        return (self.elastic.min_nodes if self.elastic else self.nodes) * self.processes


class CheckpointingSpec(KubeModel):
    every_steps: int = Field(50, ge=1, description="Save a checkpoint every this many optimizer steps.")
    keep: int = Field(2, ge=1, le=100, description="How many checkpoints to keep.")


class ClaimTemplateSpec(KubeModel):
    storage_class_name: Optional[str] = Field(
        None, description="StorageClass of the claim; the cluster default if unset."
    )
    size: Quantity = Field("50Gi", description="Requested storage.")
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        default_factory=lambda: ["ReadWriteMany"], min_length=1,
        description="ReadWriteMany lets pods on several nodes write checkpoints and read the model.",
    )


class PublishSpec(KubeModel, PublishSettings):
    pass


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
    publish: list[PublishSpec] = Field(
        default_factory=list, max_length=8,
        description="Where to upload the trained model and its card after the verdict; the model stays in the claim.")


class RewardSpec(KubeModel, RewardSettings):
    model_config = cel_rules(
        {"rule": "has(self.function) != has(self.model)",
         "message": "a reward is either a built-in function or a reward model", "fieldPath": ".function"},
    )


class SamplingSpec(KubeModel, SamplingConfig):
    pass


class EvaluationResourcesSpec(KubeModel):
    gpus: Optional[int] = Field(None, ge=0, le=64, description="Defaults to 1 when training uses GPUs, else 0.")
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Container requests (cpu, memory, ...).")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Container limits (cpu, memory, ...).")
    image: Optional[str] = Field(None, description="Evaluator image; defaults to the operator's setting.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels of the evaluation pod; defaults to the workers'."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of the evaluation pod; defaults to the workers'."
    )


class GateSpec(KubeModel, Gate):
    model_config = cel_rules(
        {"rule": " + ".join(f"(has(self.{bound}) ? 1 : 0)" for bound in GATE_BOUNDS.values()) + " == 1",
         "message": "a gate sets exactly one of minDelta, maxDelta, min and max", "fieldPath": ".minDelta"},
    )


class EvaluationSpec(KubeModel, EvaluationSettings):
    model_config = cel_rules(
        {"rule": "self.gates.all(g, g.metric in self.metrics)",
         "message": "a gate's metric must be one of spec.evaluation.metrics", "fieldPath": ".gates"},
        {"rule": "self.compareBase || self.gates.all(g, !has(g.minDelta) && !has(g.maxDelta))",
         "message": "minDelta and maxDelta compare with the base model: set compareBase: true",
         "fieldPath": ".gates"},
    )

    # The contract's field as the spec's stricter model; it keeps its place before metrics, whose
    # validator reads it.
    sampling: SamplingSpec = Field(
        default_factory=SamplingSpec, description=EvaluationSettings.model_fields["sampling"].description)
    enabled: bool = Field(True, description="Evaluate the trained model after training.")
    dataset: Optional[DatasetSpec] = Field(
        None, description="Evaluation data; defaults to the training dataset's evalSplit."
    )
    gates: list[GateSpec] = Field(
        default_factory=list, max_length=16,
        description="What the tuned model must reach; the verdict (status.evaluation.verdict and the GatesPassed "
                    "condition) is Passed when every gate passes.")
    on_regression: Literal["keep", "fail"] = Field(
        "keep", description="keep: a job whose gates fail still succeeds, with verdict Regressed; fail: it ends "
                            "Failed with reason Regressed.")
    resources: EvaluationResourcesSpec = Field(
        default_factory=EvaluationResourcesSpec, description="The evaluation pod's GPUs, resources and placement."
    )

    # What the digest covers, in the order it always read them (the fields' order before the
    # spec shared EvaluationSettings): a job's evaluation Job is named after the digest, so a
    # reordering of the fields must not change it.
    DIGESTED: ClassVar[tuple[str, ...]] = (
        "engine", "dataset", "sampling", "metrics", "compare_base", "gates", "on_regression",
        "timeout_seconds_per_sample")

    def digest(self) -> str:
        """Identifies what is evaluated and how (not where it runs): an edit of it evaluates the
        trained model again."""
        dumped = self.model_dump(mode="json", by_alias=True, include=set(self.DIGESTED))
        aliases = [type(self).model_fields[name].alias for name in self.DIGESTED]
        settings = pydantic_core.to_json({alias: dumped[alias] for alias in aliases})
        return hashlib.sha256(settings).hexdigest()[:8]

    @field_validator("metrics")
    @classmethod
    def _enough_samples(cls, metrics: list[str], info: ValidationInfo) -> list[str]:
        sampling = info.data.get("sampling")
        for metric in metrics:
            needed = Metric.samples_needed(metric)
            if sampling and needed > sampling.n:
                raise ValueError(f"{metric} needs sampling.n >= {needed} (it is {sampling.n})")
        return metrics


class GenerationSpec(KubeModel, GenerationSettings):
    """A vLLM generation server the operator runs for grpo and rloo (TRL's vllm_mode server)."""

    model_config = cel_rules(
        {"rule": "!has(self.dataParallel) || self.gpusPerNode == 0 || "
                 "self.tensorParallel * self.dataParallel == self.nodes * self.gpusPerNode",
         "message": "tensorParallel × dataParallel must equal the pool's GPUs (nodes × gpusPerNode)",
         "fieldPath": ".dataParallel"},
        {"rule": "self.gpusPerNode > 0 || (self.tensorParallel == 1 && (!has(self.dataParallel) || "
                 "self.dataParallel == 1))",
         "message": "without GPUs the server runs one engine: tensorParallel and dataParallel must be 1",
         "fieldPath": ".tensorParallel"},
        {"rule": "self.gpusPerNode == 0 || (self.nodes * self.gpusPerNode) % self.tensorParallel == 0",
         "message": "tensorParallel must divide the pool's GPUs (nodes × gpusPerNode)", "fieldPath": ".tensorParallel"},
    )

    mode: Literal["server"] = Field(
        "server", description="server: a pool of vLLM servers the ranks send prompts to and push new weights to "
                              "(TRL vllm_mode server). Generating inside each rank (TRL's colocate, the default for "
                              "grpo and rloo on GPUs) needs no spec.generation.")
    nodes: int = Field(1, ge=1, le=1, description="Server pods. One for now: a pool across nodes needs vLLM's "
                                                  "multi-node data parallelism, which kubetune does not render yet.")
    gpus_per_node: int = Field(1, ge=0, le=64, description="GPUs per server pod; 0 serves on the CPU (weights "
                                                           "cannot be pushed to it: TRL's sync needs CUDA).")
    image: Optional[str] = Field(None, description="Server image; defaults to the evaluator image (it has vLLM).")
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Container requests (cpu, memory, ...).")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Container limits (cpu, memory, ...).")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels of the server pods; defaults to the workers'.")
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of the server pods; defaults to the workers'.")

    # What the operator sets in spec.training for the ranks to use the server; a user's value may
    # only agree with it.
    TRL_KEYS: ClassVar[dict[str, Any]] = {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": None,
                                          "vllm_server_host": None, "vllm_server_port": None, "vllm_group_port": None}

    def engines(self) -> int:
        """vLLM engines serving in parallel (vLLM's data parallel size)."""
        if self.data_parallel is not None:
            return self.data_parallel
        return max(self.nodes * self.gpus_per_node // self.tensor_parallel, 1)


class RunPolicySpec(KubeModel):
    backoff_limit: int = Field(
        3, ge=0, description="Worker restarts tolerated before the job fails: every container restart of every worker "
        "pod, across recreated pods, and every restart of the stall watchdog. Evictions do not count.")
    active_deadline_seconds: Optional[int] = Field(
        None, ge=1, description="Seconds from start after which the job fails, wherever it is."
    )
    ttl_seconds_after_finished: Optional[int] = Field(
        None, ge=0, description="Delete the job (and what it created) this many seconds after it finishes."
    )
    suspend: bool = Field(False, description="Scale the workers to zero; clearing it resumes from the last checkpoint.")
    scheduling_timeout_seconds: Optional[int] = Field(
        None, ge=1, description="Fail the job when its workers have not all started this long after they were "
        "created (unschedulable, an image that cannot be pulled, a claim that does not bind), with the last reason.")
    progress_deadline_seconds: int = Field(
        1800, ge=0, description="Restart the workers when rank 0's step has not advanced for this long (twice this "
        "while it saves a checkpoint or evaluates), counting against backoffLimit; 0 turns the watchdog off.")
    startup_deadline_seconds: int = Field(
        3600, ge=0, description="Time allowed from the workers starting to the first training step (loading the "
        "model and data) before the watchdog restarts them; 0 allows any time.")
    max_disruptions: int = Field(
        10, ge=0, description="Evictions and preemptions of worker pods tolerated before the job fails; they do not "
        "count against backoffLimit.")


class SecretKeyRef(KubeModel):
    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="The Secret's name.")
    key: str = Field("token", description="The key inside the Secret.")


class CacheSpec(KubeModel):
    claim_name: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253,
        description="A claim (ReadWriteMany) holding the model and data cache, shared with other jobs that name it; "
                    "defaults to the operator's shared cache claim, else a folder of the job's output claim.")


class CredentialsSpec(KubeModel):
    hf_token: Optional[SecretKeyRef] = Field(None, description="Secret key holding a Hugging Face token (HF_TOKEN).")
    s3_secret_name: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=253,
        description="Secret with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and optionally "
        "AWS_SESSION_TOKEN, AWS_ENDPOINT_URL and AWS_DEFAULT_REGION; each reaches the pods as its own secretKeyRef.",
    )


_GENERATING_METRICS_ONLY = f"self.evaluation.metrics.all(m, m in {_cel_list(REWARD_MODEL_JOB_METRICS)})"


class FineTuneJobSpec(KubeModel):
    model_config = cel_rules(
        *(unchanged(field) for field in ("method", "model", "dataset", "training", "distributed", "checkpointing",
                                          "output", "credentials", "cache")),
        *(unchanged(field, optional=True) for field in ("peft", "rewards", "generation")),
        {"rule": "!has(self.peft) || self.peft.method != 'qlora' || self.resources.gpusPerNode > 0",
         "message": "qlora needs GPUs (resources.gpusPerNode > 0)", "fieldPath": ".peft.method"},
        {"rule": f"!(self.method in {_cel_list(REWARD_METHODS)}) || (has(self.rewards) && size(self.rewards) > 0)",
         "message": f"{' and '.join(REWARD_METHODS)} need at least one entry in rewards", "fieldPath": ".rewards"},
        {"rule": f"!has(self.rewards) || size(self.rewards) == 0 || self.method in {_cel_list(REWARD_METHODS)}",
         "message": f"rewards apply only to methods {' and '.join(REWARD_METHODS)}", "fieldPath": ".rewards"},
        {"rule": f"!has(self.generation) || self.method in {_cel_list(REWARD_METHODS)}",
         "message": f"a generation server serves only methods {' and '.join(REWARD_METHODS)}",
         "fieldPath": ".generation"},
        {"rule": f"!self.evaluation.metrics.exists(m, m in {_cel_list(REWARD_MODEL_METRICS)}) || "
                 f"self.method in {_cel_list(SCORING_METHODS)} || "
                 "(has(self.rewards) && self.rewards.exists(r, has(r.model)))",
         "message": f"the {' and '.join(REWARD_MODEL_METRICS)} metric needs a reward model: method "
                    f"{' or '.join(SCORING_METHODS)}, or a rewards entry with a model",
         "fieldPath": ".evaluation.metrics"},
        {"rule": f"!(self.method in {_cel_list(SCORING_METHODS)}) || {_GENERATING_METRICS_ONLY}",
         "message": f"a reward model does not generate: evaluate it with metrics "
                    f"{' and '.join(REWARD_MODEL_JOB_METRICS)}",
         "fieldPath": ".evaluation.metrics"},
    )

    method: Method = Field(
        "sft",
        description="The TRL trainer: " + ", ".join(f"{m.name} ({m.description})" for m in METHODS.values()) + ".",
    )
    model: ModelSpec = Field(description="The model to train.")
    dataset: DatasetSpec = Field(description="The training data.")
    training: PassthroughMap = Field(
        default_factory=dict,
        description="TRL config keys for the method's config class (SFTConfig, DPOConfig, ...), unchanged.",
    )
    peft: Optional[PeftSpec] = Field(None, description="Train a LoRA or QLoRA adapter instead of every weight.")
    rewards: Optional[list[RewardSpec]] = Field(None, description="Reward functions or models for grpo and rloo.")
    generation: Optional[GenerationSpec] = Field(
        None, description="A vLLM generation server for grpo and rloo, run by the operator; the ranks start once "
                          "it is ready.")
    distributed: DistributedSpec = Field(default_factory=DistributedSpec, description="How ranks share the model.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Worker pods: count, GPUs, placement.")
    checkpointing: CheckpointingSpec = Field(
        default_factory=CheckpointingSpec, description="Checkpoints a restarted worker resumes from."
    )
    output: OutputSpec = Field(default_factory=OutputSpec, description="Where checkpoints and the trained model go.")
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="Evaluation of the trained model after training (may be edited)."
    )
    run_policy: RunPolicySpec = Field(
        default_factory=RunPolicySpec, description="Restarts, deadlines, TTL and suspension (may be edited)."
    )
    credentials: CredentialsSpec = Field(
        default_factory=CredentialsSpec, description="Secrets the pods read sources with; never in the ConfigMap."
    )
    cache: CacheSpec = Field(
        default_factory=CacheSpec, description="Where the initializer keeps the hf:// and s3:// sources it downloads "
                                               "once for every pod of the job.")

    def desired_workers(self) -> int:
        """Worker pods the job should run now: none while suspended."""
        return 0 if self.run_policy.suspend else self.resources.nodes

    def evaluation_skipped_because(self) -> str | None:
        """Why no evaluation runs after training, or None when one does."""
        if not self.evaluation.enabled:
            return "evaluation is disabled"
        if self.evaluation.dataset is None and self.dataset.eval_split is None:
            return "no evaluation data (set evaluation.dataset or dataset.evalSplit)"
        return None


# --- status ----------------------------------------------------------------------------

Phase = Literal["Pending", "Initializing", "Training", "Evaluating", "Publishing", "Succeeded", "Failed",
                "Suspended"]
PHASES: tuple[str, ...] = Phase.__args__
TERMINAL_PHASES = ("Succeeded", "Failed")


class StatusModel(KubeModel):
    """Written by the operator; a field this version does not know is kept out, not refused."""

    model_config = ConfigDict(extra="ignore", strict=False)


class ConditionType(StrEnum):
    """The type of each condition in status.conditions, in the order they are listed there.
    All have positive polarity: True means what the name says."""

    CREATED = "Created"  # the worker StatefulSet, Service, ConfigMap and volume exist (False: waits for upstream)
    RUNNING = "Running"  # the workers run (False: with why the others do not)
    RESTARTING = "Restarting"  # a worker is restarting after it exited or crashed
    STALLED = "Stalled"  # the stall watchdog restarted the workers; False once a step moved again
    SUSPENDED = "Suspended"  # spec.runPolicy.suspend scaled the workers to zero
    INITIALIZED = "Initialized"  # the initializer fetched every hf:// and s3:// source into the cache
    GENERATION_READY = "GenerationReady"  # the generation server answers (spec.generation; False: why not)
    TRAINED = "Trained"  # training succeeded and the model is saved; the workers stay at zero
    EVALUATED = "Evaluated"  # the evaluation Job reported its metrics (False: why it does not yet)
    GATES_PASSED = "GatesPassed"  # every gate of spec.evaluation.gates passed (reason: Passed, Regressed, NoGates)
    PUBLISHED = "Published"  # the publish Job uploaded the model (False: why it uploads again)
    SUCCEEDED = "Succeeded"  # the job is done and its result usable (kubectl wait --for=condition=Succeeded)
    FAILED = "Failed"  # the job failed; status.failure says why


class Condition(StatusModel):
    """metav1.Condition."""

    type: str = Field(description=", ".join(ConditionType) + ".")
    status: Literal["True", "False", "Unknown"] = Field(description="Whether the condition holds.")
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                        description="Why, in one CamelCase word.")
    message: str = Field("", description="Why, for people.")
    last_transition_time: str = Field(description="When status last changed.")
    observed_generation: Optional[int] = Field(None, description="The spec generation the condition describes.")


class ProgressStatus(TrainingNumbers, StatusModel):
    phase: Optional[TrainingPhase] = Field(None, description="What rank 0 reported it was doing.")
    display: Optional[str] = Field(None, description="step/total (percent), for kubectl get.")
    last_checkpoint: Optional[str] = Field(None, description="The newest checkpoint saved.")
    last_step_time: Optional[str] = Field(None, description="When the reported step last changed.")


class SourceStatus(FetchedSource, StatusModel):
    """One source the initializer fetched."""


class InitializationStatus(StatusModel):
    sources: list[SourceStatus] = Field(default_factory=list, description="Each hf:// or s3:// source of the job.")
    display: Optional[str] = Field(None, description="Bytes fetched of all sources, for kubectl get.")
    seconds: Optional[float] = Field(None, description="Time the initializer took, once done.")


class SeenPod(StatusModel):
    restarts: int = Field(0, description="The pod's restartCount when last counted.")
    disrupted: bool = Field(False, description="The pod's eviction or preemption was counted.")


class ResizeRecord(StatusModel):
    from_nodes: int = Field(alias="from", description="Worker pods before the resize.")
    to_nodes: int = Field(alias="to", description="Worker pods after it.")
    time: str = Field(description="When the operator saw the new node count.")
    checkpoint: Optional[str] = Field(
        None, description="The newest checkpoint then: training goes on from it at the new size.")
    global_batch_size: Optional[int] = Field(None, description="The global batch size at the new size.")


class WorkersStatus(StatusModel):
    desired: int = Field(0, description="Worker pods the job should run now.")
    ready: int = Field(0, description="Worker pods running.")
    restarts: int = Field(
        0, description="Every worker restart seen so far, across recreated pods, with the stall watchdog's.")
    disruptions: int = Field(0, description="Worker pods evicted or preempted so far.")
    out_of_memory: int = Field(0, description="Worker restarts that followed an out-of-memory failure.")
    restarted_at: Optional[str] = Field(None, description="When the stall watchdog last restarted the workers.")
    seen: dict[str, SeenPod] = Field(
        default_factory=dict, description="Bookkeeping for the counts above: the current worker pods, by uid.")
    resizes: list[ResizeRecord] = Field(
        default_factory=list, description="Each change of the node count while the job ran (the last 20), oldest "
                                          "first.")


class FailureStatus(StatusModel):
    reason: FailureClass = Field(description="The failure class: " + ", ".join(FAILURE_CLASSES) + ".")
    message: str = Field(description="What happened, and for some classes what to change.")
    worker: Optional[str] = Field(None, description="The pod that failed, when one did.")
    exit_code: Optional[int] = Field(None, description="Its container's exit code.")
    last_logs: Optional[str] = Field(None, description="The last lines of its output (at most 50).")


class EvaluationStatus(StatusModel):
    metrics: dict[str, MetricValue] = Field(
        default_factory=dict, description="Per metric (and metric/group): tuned, base, delta and their 95 % intervals."
    )
    report: Optional[str] = Field(None, description="Path of the JSON report inside the output volume.")
    verdict: Optional[Verdict] = Field(
        None, description="Passed: every gate passed; Regressed: one did not; NoGates: the job has none.")
    gates: list[GateResult] = Field(default_factory=list, description="Each gate of spec.evaluation.gates, judged.")
    digest: Optional[str] = Field(
        None, description="Which spec.evaluation these values come from; editing it evaluates again, no retraining.")
    previous_reports: list[str] = Field(
        default_factory=list, description="Reports of earlier evaluations of this model (the last 10), oldest first.")


class OutputStatus(StatusModel):
    claim_name: str = Field(description="The claim holding the output.")
    path: str = Field(description="Folder of the trained model inside the claim.")
    published: Optional[list[Published]] = Field(None, description="Each target the model was uploaded to.")


class FineTuneJobStatus(StatusModel):
    phase: Optional[Phase] = Field(None, description="Where the job is: " + ", ".join(PHASES) + ".")
    failure: Optional[FailureStatus] = Field(None, description="Why the job failed.")
    conditions: list[Condition] = Field(default_factory=list, description="metav1.Conditions, positive polarity.")
    progress: Optional[ProgressStatus] = Field(None, description="Training progress, as rank 0 reports it.")
    distributed: Optional[StrategyChoice] = Field(
        None, description="The distributed strategy training runs with (what auto picked), and why.")
    workers: Optional[WorkersStatus] = Field(None, description="Worker pods.")
    generation: Optional[WorkersStatus] = Field(
        None, description="Generation server pods (spec.generation); ready counts those that answer.")
    initialization: Optional[InitializationStatus] = Field(
        None, description="What the initializer fetched into the cache: per source the revision, entry and bytes.")
    evaluation: Optional[EvaluationStatus] = Field(None, description="Evaluation results.")
    output: Optional[OutputStatus] = Field(None, description="Where the trained model is.")
    start_time: Optional[str] = Field(None, description="When the job started.")
    completion_time: Optional[str] = Field(None, description="When the job finished.")
    observed_generation: Optional[int] = Field(None, description="The spec generation the status describes.")


# --- the resource ----------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The metadata fields kubetune reads; the rest passes through untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=True)

    name: str = Field(max_length=MAX_JOB_NAME_LENGTH, pattern=JOB_NAME_PATTERN)
    namespace: str = Field("default", pattern=DNS_LABEL_PATTERN)
    uid: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class FineTuneJob(KubeModel):
    """A post-training job: TRL training on worker pods, then evaluation of the trained model."""

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
    spec: FineTuneJobSpec = Field(description="What to train, on what, and how to evaluate it.")
    status: Optional[FineTuneJobStatus] = Field(None, description="Written by the operator.")
