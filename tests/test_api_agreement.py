"""`kubetune validate` (the models) and the API server (the CRD's openAPIV3Schema) give the same
verdict on the same documents.

The API server is played by its documented steps on the generated CRD, independently of the
models: null fields dropped, unknown fields refused (kubectl's default strict field validation),
defaults filled, the OpenAPI schema checked (JSON Schema draft 4), then every CEL rule evaluated
where the schema places it, with oldSelf on updates. `spec.training` is the one place the models
check more (the method's TRL config keys), so every document here uses valid TRL keys.
"""

import copy

import jsonschema
import pytest

from conftest import example_documents, with_spec
from kubetune.api.crd import open_api_schema
from kubetune.api.validation import InvalidJob, evaluate_rule, parse_job

# Elastic 1..4 with the per-device batch kept: the default global batch does not split at 3.
ELASTIC = {"minNodes": 1, "maxNodes": 4, "keepGlobalBatch": False}

SCHEMA = open_api_schema()


def _pruned(value, schema):
    """Nulls dropped and unknown fields found, as the API server does for a structural schema."""
    unknown = []
    if isinstance(value, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        value = {k: v for k, v in value.items() if v is not None}
        properties = schema.get("properties")
        if properties is not None:
            unknown = [key for key in value if key not in properties]
            for key in list(value):
                if key in properties:
                    value[key], deeper = _pruned(value[key], properties[key])
                    unknown += [f"{key}.{u}" for u in deeper]
        elif isinstance(schema.get("additionalProperties"), dict):
            for key in list(value):
                value[key], deeper = _pruned(value[key], schema["additionalProperties"])
                unknown += deeper
    elif isinstance(value, list) and "items" in schema:
        results = [_pruned(item, schema["items"]) for item in value]
        value, unknown = [v for v, _ in results], [u for _, deeper in results for u in deeper]
    return value, unknown


def _defaulted(value, schema):
    if isinstance(value, dict) and "properties" in schema:
        for key, child in schema["properties"].items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                value[key] = _defaulted(value[key], child)
    elif isinstance(value, list) and "items" in schema:
        value = [_defaulted(item, schema["items"]) for item in value]
    return value


def _broken_rules(value, old, schema):
    broken = []
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        if not evaluate_rule(rule["rule"], value, old if transition else None):
            broken.append(rule["message"])
    if isinstance(value, dict):
        for key, child in schema.get("properties", {}).items():
            if key in value:
                old_child = old.get(key) if isinstance(old, dict) else None
                broken += _broken_rules(value[key], old_child, child)
    elif isinstance(value, list) and "items" in schema:
        broken += [message for item in value for message in _broken_rules(item, None, schema["items"])]
    return broken


def stored(document):
    """The object as the API server keeps it: pruned and defaulted."""
    return _defaulted(_pruned(document, SCHEMA)[0], SCHEMA)


def api_server_refusals(document, old_document=None):
    body, unknown = _pruned(copy.deepcopy(document), SCHEMA)
    if unknown:
        return [f"unknown field {u}" for u in unknown]
    body = _defaulted(body, SCHEMA)
    errors = [error.message for error in jsonschema.Draft4Validator(SCHEMA).iter_errors(body)]
    if errors:
        return errors
    return _broken_rules(body, stored(old_document) if old_document else None, SCHEMA)


def models_refusals(document, old_document=None):
    try:
        parse_job(document, old_document=old_document)
    except InvalidJob as error:
        return [str(problem) for problem in error.problems]
    return []


def resources(**fields):
    return with_spec(resources={"nodes": 1, **fields})


REFUSED = [
    # documents the API server refuses: the models must refuse them too
    ("nodes as a string", resources(nodes="2")),
    ("nodes as a boolean", resources(nodes=True)),
    ("nodes as a float", resources(nodes=2.0)),
    ("a boolean written yes", with_spec(evaluation={"compareBase": "yes"})),
    ("a number as a string", with_spec(evaluation={"sampling": {"temperature": "0.7"}})),
    ("LoRA rank as a string", with_spec(peft={"r": "8"})),
    ("an unknown spec field", with_spec(modle={"source": "hf://a/b"})),
    ("an unknown nested field", with_spec(checkpointing={"everySteps": 5, "kept": 2})),
    ("an unknown method", with_spec(method="ppo")),
    ("an unknown metric", with_spec(evaluation={"metrics": ["bleu"]})),
    ("too many metrics", with_spec(evaluation={"metrics": ["loss"] * 33})),
    ("a quantity that is not one", resources(limits={"memory": "lots"})),
    ("a node selector value that is not a string", resources(nodeSelector={"gpu": True})),
    ("a priority class that is not a DNS name", resources(priorityClassName="High_Priority")),
    ("a service account that is not a DNS name", resources(serviceAccountName="my account")),
    ("a GPU resource name with two slashes", resources(gpuResourceName="nvidia.com/gpu/x")),
    ("env without a name", resources(env=[{"value": "1"}])),
    ("env with a misspelt field", resources(env=[{"name": "A", "vaule": "1"}])),
    ("env whose fieldRef is not an object", resources(env=[{"name": "A", "valueFrom": {"fieldRef": "x"}}])),
    ("env of the rendezvous", resources(env=[{"name": "WORLD_SIZE", "value": "8"}])),
    ("env of kubetune", resources(env=[{"name": "KUBETUNE_CONFIG", "value": "/x"}])),
    ("a toleration with seconds as a string", resources(tolerations=[{"key": "gpu", "tolerationSeconds": "60"}])),
    ("a toleration with a misspelt field", resources(tolerations=[{"kye": "gpu"}])),
    ("affinity of the wrong shape", resources(affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": "gpu"}}})),
    ("evaluation tolerations of the wrong shape", with_spec(evaluation={"resources": {"tolerations": ["gpu"]}})),
    ("a negative progress deadline", with_spec(runPolicy={"progressDeadlineSeconds": -1})),
    ("a scheduling timeout of zero", with_spec(runPolicy={"schedulingTimeoutSeconds": 0})),
    ("a CEL rule: grpo without rewards", with_spec(method="grpo")),
    ("a CEL rule: offload with ddp", with_spec(distributed={"offload": "optimizer"})),
]
ACCEPTED = [
    # documents the models accept: the API server must accept them too
    *((f"example {path.name}", document) for path, document in example_documents()),
    ("nulls are dropped, then defaulted", with_spec(peft=None, resources={"nodes": None, "image": None})),
    ("an integer where a number is expected", with_spec(evaluation={"sampling": {"temperature": 1, "topP": 1}})),
    ("env from a secret and the downward API", resources(env=[
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": True}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "NCCL_DEBUG", "value": "INFO"}])),
    ("tolerations and affinity", resources(
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}],
        affinity={"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
                  "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                      "labelSelector": {"matchLabels": {"app": "x"}}}}]}})),
    ("names that are DNS subdomains", resources(priorityClassName="gpu.high", schedulerName="volcano",
                                                serviceAccountName="trainer", gpuResourceName="amd.com/gpu")),
]
UPDATES = [
    # (what, old spec fields, new spec fields, refused)
    ("the model changed", {}, {"model": {"source": "hf://org/other"}}, True),
    ("LoRA added", {}, {"peft": {"r": 8}}, True),
    ("a fixed job resized", {"resources": {"nodes": 2}}, {"resources": {"nodes": 3}}, True),
    ("an elastic job resized", {"resources": {"nodes": 2, "elastic": ELASTIC}},
     {"resources": {"nodes": 4, "elastic": ELASTIC}}, False),
    ("suspended", {}, {"runPolicy": {"suspend": True}}, False),
    ("the watchdog's deadlines changed", {}, {"runPolicy": {"progressDeadlineSeconds": 600, "maxDisruptions": 2}},
     False),
    ("evaluation changed", {}, {"evaluation": {"metrics": ["loss", "perplexity"]}}, False),
]


@pytest.mark.parametrize("what,document", REFUSED, ids=[case[0] for case in REFUSED])
def test_what_the_api_server_refuses_the_models_refuse(what, document):
    assert api_server_refusals(document), "the emulated API server should refuse this"
    assert models_refusals(document)


@pytest.mark.parametrize("what,document", ACCEPTED, ids=[case[0] for case in ACCEPTED])
def test_what_the_models_accept_the_api_server_accepts(what, document):
    assert models_refusals(document) == []
    assert api_server_refusals(document) == []


@pytest.mark.parametrize("what,old,new,refused", UPDATES, ids=[case[0] for case in UPDATES])
def test_updates_get_the_same_verdict(what, old, new, refused):
    old_document, new_document = with_spec(**old), with_spec(**new)
    assert bool(api_server_refusals(new_document, old_document)) == refused
    assert bool(models_refusals(new_document, old_document)) == refused


def test_the_models_store_what_the_api_server_stores():
    for _, document in example_documents():
        job = parse_job(document).wire()
        assert job["spec"] == stored(document)["spec"]
