"""The Helm chart with the real helm binaries (v3 and v4): lint, template for several value
sets, every document schema-validated, values refused by values.schema.json, least-privilege
RBAC from the operator's rules file, and Pod Security "restricted" for every pod template."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import REPO, example_documents, with_spec
from kubetune.api.validation import parse_job
from kubetune.render import RenderSettings, render_job

CHART = REPO / "charts" / "kubetune"
HELMS = ["helm3", "helm4"]
KUBERNETES = "1.34"
RULES_FILE = REPO / "operator" / "kubetune" / "handlers" / "rbac-rules.yaml"
VALUE_SETS = {
    "default": [],
    "namespaced": ["--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={ml,research}"],
    "monitoring": ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
                   "--set", "grafanaDashboard.enabled=true"],
    "custom-images": ["--set", "image.repository=registry.local/kubetune/operator", "--set", "image.tag=1.2.3",
                      "--set", "trainer.image=registry.local/trainer:1", "--set", "evaluator.image=registry.local/eval:1",
                      "--set-json", 'jobPods={"imagePullPolicy":"Always","gpuNodeSelector":{"gpu":"h100"},'
                                    '"gpuTolerations":[{"key":"ml","operator":"Exists","effect":"NoSchedule"}],'
                                    '"cacheClaimName":"model-cache","hfEndpoint":"http://hub-mirror.internal"}',
                      "--set-json", 'trainer.resources={"requests":{"cpu":"8","memory":"64Gi"},"limits":{"memory":"128Gi"}}',
                      "--set-json", 'evaluator.resources={"requests":{"memory":"32Gi"}}'],
    "alerts": ["--set", "prometheusRule.enabled=true", "--set", "prometheusRule.pendingFor=1h"],
    "two-replicas": ["--set", "replicaCount=2"],
    "two-replicas-namespaced": ["--set", "replicaCount=2", "--set", "rbac.scope=namespaced",
                                "--set", "rbac.namespaces={ml}"],
}
# Kinds whose schema is a CRD rather than the Kubernetes OpenAPI.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def helm(binary, *args):
    return subprocess.run([str(Path(sys.executable).parent / binary), *args], capture_output=True, text=True,
                          timeout=120)


def template(binary, value_set):
    result = helm(binary, "template", "kt", str(CHART), "-n", "kubetune", "--include-crds", *VALUE_SETS[value_set])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def rendered():
    return {(b, v): template(b, v) for b in HELMS for v in VALUE_SETS}


@pytest.mark.parametrize("binary", HELMS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint(binary, value_set):
    result = helm(binary, "lint", "--strict", str(CHART), *VALUE_SETS[value_set])
    assert result.returncode == 0, result.stdout + result.stderr


def crd_schemas(documents):
    return {(d["spec"]["group"], d["spec"]["names"]["kind"]): d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            for d in documents if d["kind"] == "CustomResourceDefinition"}


@pytest.mark.parametrize("binary", HELMS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_document_is_valid(rendered, binary, value_set):
    documents = rendered[(binary, value_set)]
    schemas = crd_schemas(documents)
    for document in documents:
        if document["kind"] in CUSTOM_KINDS:
            group = document["apiVersion"].split("/")[0]
            if (group, document["kind"]) in schemas:
                jsonschema.validate(document, schemas[(group, document["kind"])])
            continue
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_value_sets_change_what_they_claim(rendered):
    kinds = {v: sorted(d["kind"] for d in rendered[("helm4", v)]) for v in VALUE_SETS}
    assert "ClusterRole" in kinds["default"] and "Role" not in kinds["default"]
    assert kinds["namespaced"].count("Role") == 2 and "ClusterRole" not in kinds["namespaced"]
    assert {"ServiceMonitor", "PodMonitor"} <= set(kinds["monitoring"])
    assert "PrometheusRule" in kinds["alerts"] and "PrometheusRule" not in kinds["default"]
    dashboard = next(d for d in rendered[("helm4", "monitoring")] if d["metadata"]["name"].endswith("-dashboard"))
    assert json.loads(dashboard["data"]["kubetune.json"])["panels"]
    assert kinds["two-replicas"].count("Role") == 1 and kinds["two-replicas-namespaced"].count("Role") == 2
    args = deployment(rendered[("helm4", "custom-images")])["spec"]["template"]["spec"]["containers"][0]
    assert args["image"] == "registry.local/kubetune/operator:1.2.3"
    assert "--trainer-image=registry.local/trainer:1" in args["args"]
    assert "--leader-elect=kubetune/kt-kubetune" in container(rendered[("helm4", "two-replicas")])["args"]
    assert not [a for a in container(rendered[("helm4", "default")])["args"] if a.startswith("--leader-elect")]
    assert "--namespace=ml" in container(rendered[("helm4", "namespaced")])["args"]


def job_pod_defaults(documents):
    config_map = next(d for d in documents if d["metadata"]["name"].endswith("job-pod-defaults"))
    return yaml.safe_load(config_map["data"]["job-pod-defaults.yaml"])


@pytest.mark.parametrize("binary", HELMS)
def test_job_pod_values_reach_the_pods_the_operator_renders(rendered, binary):
    """The job-pod-defaults ConfigMap, read as `kubetune operator --job-pod-defaults` reads it."""
    settings = RenderSettings.from_job_pod_defaults(job_pod_defaults(rendered[(binary, "custom-images")]))
    job = parse_job(with_spec(resources={"gpusPerNode": 8, "requests": {"cpu": "32"}}))
    objects = render_job(job, settings)
    worker = objects.stateful_set["spec"]["template"]["spec"]
    assert worker["nodeSelector"] == {"gpu": "h100"}
    assert worker["containers"][0]["imagePullPolicy"] == "Always"
    # The job's own cpu request wins; memory comes from the values.
    assert worker["containers"][0]["resources"] == {"requests": {"cpu": "32", "memory": "64Gi"},
                                                    "limits": {"memory": "128Gi", "nvidia.com/gpu": 8}}
    evaluator = objects.evaluation_job["spec"]["template"]["spec"]["containers"][0]
    assert evaluator["resources"]["requests"] == {"memory": "32Gi"}
    # A job with a Hub model: its pods read the shared cache claim, through the Hub mirror.
    from_hub = render_job(parse_job(with_spec(model={"source": "hf://Qwen/Qwen2.5-0.5B"})), settings)
    for pod in (from_hub.stateful_set["spec"]["template"]["spec"], from_hub.initializer_job["spec"]["template"]["spec"]):
        assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}} in pod["volumes"]
        assert {"name": "HF_ENDPOINT", "value": "http://hub-mirror.internal"} in pod["containers"][0]["env"]
    default = RenderSettings.from_job_pod_defaults(job_pod_defaults(rendered[(binary, "default")]))
    assert default == RenderSettings()


def deployment(documents):
    return next(d for d in documents if d["kind"] == "Deployment")


def container(documents):
    return deployment(documents)["spec"]["template"]["spec"]["containers"][0]


INVALID_VALUES = [
    ("replicaCount=0", ["--set", "replicaCount=0"], "replicaCount"),
    ("unknown scope", ["--set", "rbac.scope=everywhere"], "scope"),
    ("namespaced without namespaces", ["--set", "rbac.scope=namespaced"], "namespaces"),
    ("bad namespace name", ["--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={ML_Team}"], "namespaces"),
    ("port out of range", ["--set", "operator.metricsPort=70000"], "metricsPort"),
    ("unknown value", ["--set", "replicas=2"], "replicas"),
    ("bad pull policy", ["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
    ("unknown resources key", ["--set-json", 'trainer.resources={"request":{"cpu":"1"}}'], "request"),
    ("empty quantity", ["--set-json", 'evaluator.resources={"limits":{"memory":""}}'], "memory"),
]


@pytest.mark.parametrize("binary", HELMS)
@pytest.mark.parametrize("values,field", [c[1:] for c in INVALID_VALUES], ids=[c[0] for c in INVALID_VALUES])
def test_invalid_values_are_refused_by_the_schema(binary, values, field):
    result = helm(binary, "template", "kt", str(CHART), *values)
    assert result.returncode != 0 and field in result.stderr, result.stderr


def test_chart_files_are_the_generated_ones():
    assert (CHART / "crds" / "kubetune.io_finetunejobs.yaml").read_text() == \
        (REPO / "crds" / "kubetune.io_finetunejobs.yaml").read_text()
    assert (CHART / "files" / "rbac-rules.yaml").read_text() == RULES_FILE.read_text()


LEASE_RULES = yaml.safe_load(RULES_FILE.read_text())["leaderElectionRules"]


def rules_of(documents):
    return [d["rules"] for d in documents if d["kind"] in ("ClusterRole", "Role")]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rbac_is_the_operators_rules_without_wildcards(rendered, value_set):
    expected = yaml.safe_load(RULES_FILE.read_text())["rules"]
    roles = rules_of(rendered[("helm4", value_set)])
    leases = [rules for rules in roles if rules == LEASE_RULES]
    assert len(leases) == (1 if value_set.startswith("two-replicas") else 0)  # leader election, own namespace
    for rules in roles:
        assert rules in (expected, LEASE_RULES)
        for rule in rules:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key]


# --- Pod Security Standard "restricted" ------------------------------------------------------

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}


def restricted_violations(pod):
    """The checks of the "restricted" profile (and "baseline", which it includes) that a pod
    spec can fail, each as a short reason."""
    found = []
    containers = pod.get("initContainers", []) + pod["containers"]
    pod_security = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"host namespaces: {key}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume types: {volume['name']} uses {kinds - ALLOWED_VOLUMES}")
    if pod_security.get("sysctls"):
        found.append("sysctls")
    for c in containers:
        security = c.get("securityContext") or {}
        name = c["name"]
        if security.get("privileged"):
            found.append(f"privileged: {name}")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"privilege escalation: {name}")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"capabilities not dropped: {name}")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"capabilities added: {name}")
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            found.append(f"running as non-root: {name}")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            found.append(f"runAsUser 0: {name}")
        seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"seccomp: {name}")
        if any(port.get("hostPort") for port in c.get("ports", [])):
            found.append(f"host ports: {name}")
        if security.get("procMount", "Default") != "Default":
            found.append(f"procMount: {name}")
        if not security.get("readOnlyRootFilesystem"):
            found.append(f"read-only root filesystem: {name}")  # kubetune's own rule, stricter than PSS
    return found


def operator_pod_templates():
    for path, document in example_documents():
        objects = render_job(parse_job(document))
        yield f"{path.name}:{document['metadata']['name']}:workers", objects.stateful_set["spec"]["template"]["spec"]
        if objects.evaluation_job:
            yield f"{path.name}:{document['metadata']['name']}:evaluator", \
                objects.evaluation_job["spec"]["template"]["spec"]


def test_the_checker_catches_what_restricted_forbids():
    pod = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {"privileged": True, "runAsUser": 0,
                                                            "capabilities": {"add": ["SYS_ADMIN"]}},
                           "ports": [{"containerPort": 80, "hostPort": 80}]}]}
    reasons = " ".join(restricted_violations(pod))
    for words in ("host namespaces", "volume types", "privileged", "privilege escalation", "capabilities added",
                  "non-root", "runAsUser 0", "seccomp", "host ports"):
        assert words in reasons


@pytest.mark.parametrize("name,pod", list(operator_pod_templates()), ids=lambda v: v if isinstance(v, str) else "")
def test_operator_rendered_pods_are_restricted(name, pod):
    assert restricted_violations(pod) == []


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_chart_pods_are_restricted(rendered, value_set):
    assert restricted_violations(deployment(rendered[("helm4", value_set)])["spec"]["template"]["spec"]) == []
