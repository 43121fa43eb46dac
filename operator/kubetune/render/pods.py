"""Pod pieces shared by the workers and the evaluator: security, volumes, env, scheduling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from .. import contract
from ..api.models import FineTuneJob
from ..contract.sources import SCHEMES, split_source
from .naming import config_map_name
from .sources import InputVolume, OutputLocation, ResolvedSource, job_sources

NON_ROOT_UID = 1000


@dataclass(frozen=True)
class RenderSettings:
    """Operator-wide defaults (Helm values) that a job's spec may override."""

    trainer_image: str = "ghcr.io/kubetune/trainer:0.1.0"
    evaluator_image: str = "ghcr.io/kubetune/evaluator:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    # Where pods that request GPUs go when their job names no nodeSelector / tolerations.
    gpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_tolerations: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    # {"requests": {...}, "limits": {...}} for the resources a job's spec leaves out.
    trainer_resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    evaluator_resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # A ReadWriteMany claim holding the model and data cache every job shares (else each job's own).
    cache_claim: Optional[str] = None
    # A Hub mirror or proxy every pod downloads through (HF_ENDPOINT); a job's env may set its own.
    hf_endpoint: Optional[str] = None

    @classmethod
    def from_job_pod_defaults(cls, defaults: Mapping[str, Any], **images: str) -> "RenderSettings":
        """From the chart's job-pod-defaults ConfigMap (its jobPods values and the images' resources)."""
        return cls(
            **images,
            image_pull_policy=defaults.get("imagePullPolicy") or cls.image_pull_policy,
            gpu_node_selector=defaults.get("gpuNodeSelector") or {},
            gpu_tolerations=tuple(defaults.get("gpuTolerations") or ()),
            trainer_resources=defaults.get("trainerResources") or {},
            evaluator_resources=defaults.get("evaluatorResources") or {},
            cache_claim=defaults.get("cacheClaimName") or None,
            hf_endpoint=defaults.get("hfEndpoint") or None,
        )

    def node_selector(self, own: Mapping[str, str], gpus: int) -> dict[str, str]:
        return dict(own or (self.gpu_node_selector if gpus else {}))

    def tolerations(self, own: Sequence[Any], gpu_resource_name: str, gpus: int) -> list[dict[str, Any]]:
        chosen = own or (self.gpu_tolerations if gpus else ())
        return [dict(t) for t in chosen] + gpu_tolerations(gpu_resource_name, gpus)


def pod_security_context() -> dict[str, Any]:
    # Pod Security Standard "restricted": non-root, RuntimeDefault seccomp.
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def volumes(
    job: FineTuneJob, output: OutputLocation, inputs: Iterable[InputVolume], shm_size: Any
) -> list[dict[str, Any]]:
    result = [
        {"name": "config", "configMap": {"name": config_map_name(job.metadata.name)}},
        {"name": "output", "persistentVolumeClaim": {"claimName": output.claim_name}},
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
    ]
    result += [
        {"name": v.volume_name, "persistentVolumeClaim": {"claimName": v.claim_name, "readOnly": True}}
        for v in inputs
        if v.claim_name != output.claim_name
    ]
    return result


def volume_mounts(output: OutputLocation, inputs: Iterable[InputVolume]) -> list[dict[str, Any]]:
    mounts = [
        {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
        {"name": "output", "mountPath": contract.OUTPUT_DIR},
        {"name": "cache", "mountPath": contract.CACHE_DIR},
        {"name": "tmp", "mountPath": contract.TMP_DIR},
        {"name": "shm", "mountPath": contract.SHM_DIR},
    ]
    for volume in inputs:
        # A job:// source on the job's own claim is read through the output mount.
        name = "output" if volume.claim_name == output.claim_name else volume.volume_name
        mounts.append({"name": name, "mountPath": volume.mount_path, "readOnly": True})
    return mounts


def input_volumes(sources: Iterable[ResolvedSource]) -> list[InputVolume]:
    return sorted({s.volume for s in sources if s.volume}, key=lambda v: v.claim_name)


def common_env(job: FineTuneJob) -> list[dict[str, Any]]:
    env = [
        {"name": contract.ENV_CONFIG, "value": f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE}"},
        {"name": "HOME", "value": contract.TMP_DIR},
        {"name": "HF_HOME", "value": f"{contract.CACHE_DIR}/huggingface"},
        {"name": "TORCH_EXTENSIONS_DIR", "value": f"{contract.CACHE_DIR}/torch_extensions"},
        {"name": "TRITON_CACHE_DIR", "value": f"{contract.CACHE_DIR}/triton"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    return env + secret_env(job)


def secret_env(job: FineTuneJob) -> list[dict[str, Any]]:
    """Credentials, each by its own secretKeyRef: never in the ConfigMap, and no other key of the
    Secret reaches the pod."""
    credentials = job.spec.credentials
    env = []
    if credentials.hf_token:
        env.append(secret_key_env("HF_TOKEN", credentials.hf_token.name, credentials.hf_token.key))
    for scheme in SCHEMES.values():
        secret = getattr(credentials, f"{scheme.name}_secret_name", None)
        if secret:
            env += [secret_key_env(key, secret, key, optional) for key, optional in scheme.secret_keys.items()]
    return env


def secret_key_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    reference: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        reference["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": reference}}


def gpu_tolerations(gpu_resource_name: str, gpus: int) -> list[dict[str, Any]]:
    # GPU node pools are commonly tainted with the device resource name.
    if not gpus:
        return []
    return [{"key": gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}]


def container_resources(
    requests: Mapping[str, Any], limits: Mapping[str, Any], gpu_resource_name: str, gpus: int,
    defaults: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    # Like a LimitRange: a default applies to a resource the job neither requests nor limits,
    # so a default limit never falls below a request of the job's own.
    own = set(requests) | set(limits)
    requests = {**without(defaults.get("requests", {}), own), **requests}
    limits = {**without(defaults.get("limits", {}), own), **limits}
    resources: dict[str, Any] = {}
    if gpus:
        limits[gpu_resource_name] = gpus
    if requests:
        resources["requests"] = dict(requests)
    if limits:
        resources["limits"] = limits
    return resources


def without(mapping: Mapping[str, Any], keys: set[str]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in keys}


def drop_empty(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value not in (None, [], {})}


@dataclass(frozen=True)
class ModelCache:
    """The cache volume the initializer fills: a claim, and the folder of it that is the cache."""

    claim_name: str
    sub_path: str
    read_only: bool = True

    def mount(self, volume: str) -> dict[str, Any]:
        mount = {"name": volume, "mountPath": contract.MODEL_CACHE_DIR, "readOnly": self.read_only}
        return {**mount, "subPath": self.sub_path} if self.sub_path else mount


# Inside the job's output claim, when no shared cache claim is named.
OWN_CACHE_SUBDIR = ".kubetune-cache"


def model_cache(job: FineTuneJob, settings: RenderSettings, output: OutputLocation,
                read_only: bool = True) -> Optional[ModelCache]:
    """The job's cache volume, when it has sources to download (None: each pod reads its own)."""
    if not downloads(job):
        return None
    shared = job.spec.cache.claim_name or settings.cache_claim
    if shared:
        return ModelCache(shared, "", read_only)
    return ModelCache(output.claim_name, OWN_CACHE_SUBDIR, read_only)


def downloads(job: FineTuneJob) -> bool:
    """Whether the job reads a source its initializer downloads (hf://, s3://)."""
    return any(SCHEMES[split_source(source)[0]].downloaded for source in job_sources(job).values())


def _with_model_cache(spec: dict[str, Any], cache: Optional[ModelCache], output: OutputLocation) -> None:
    if cache is None:
        return
    own = cache.claim_name == output.claim_name
    if not own:
        spec["volumes"].append({"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.claim_name}})
    spec["containers"][0]["volumeMounts"].append(cache.mount("output" if own else "model-cache"))


def pod_spec(
    job: FineTuneJob,
    output: OutputLocation,
    sources: Iterable[ResolvedSource],
    *,
    container: dict[str, Any],
    restart_policy: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, Any]],
    cache: Optional[ModelCache] = None,
    hf_endpoint: Optional[str] = None,
    **pod_fields: Any,
) -> dict[str, Any]:
    """A restricted pod running one kubetune container with the job's volumes, cache and secrets."""
    resources = job.spec.resources
    inputs = input_volumes(sources)
    endpoint = [{"name": "HF_ENDPOINT", "value": hf_endpoint}] if hf_endpoint else []
    container = drop_empty(
        {
            **container,
            "env": common_env(job) + endpoint + container.get("env", []) + list(resources.env),
            "volumeMounts": volume_mounts(output, inputs),
            "securityContext": container_security_context(),
            # Without a termination message file, the last log lines become the message.
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
    )
    spec = drop_empty(
        {
            "restartPolicy": restart_policy,
            "serviceAccountName": resources.service_account_name,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": pod_security_context(),
            "containers": [container],
            "volumes": volumes(job, output, inputs, resources.shm_size),
            "nodeSelector": node_selector,
            "tolerations": tolerations,
            "priorityClassName": resources.priority_class_name,
            "schedulerName": resources.scheduler_name,
            **pod_fields,
        }
    )
    _with_model_cache(spec, cache, output)
    return spec
