"""The checked-in CRD is what the models generate, is structural, and its CEL rules hold."""

import copy
import re

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import REPO, example_documents, with_spec
from kubetune.api.crd import CRD_FILE_NAME, PRINTER_COLUMNS, generate_crd, render_crd_yaml
from kubetune.api.validation import evaluate_rule, parse_job

CRD_PATH = REPO / "crds" / CRD_FILE_NAME
KUBERNETES_VERSIONS = ["1.29", "1.34"]


def crd_schema():
    return generate_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(schema, path=""):
    """(path, node) for every schema node; array items get the path suffix []."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")


def test_checked_in_crd_matches_the_models():
    assert CRD_PATH.read_text() == render_crd_yaml(), (
        f"{CRD_PATH} is stale: run `kubetune crd > crds/{CRD_FILE_NAME}`"
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_crd_is_a_valid_custom_resource_definition(version):
    kubernetes_validate.validate(yaml.safe_load(CRD_PATH.read_text()), version, strict=True)


def test_crd_schema_is_structural():
    for path, node in walk(crd_schema()):
        assert "$ref" not in node and "$defs" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "type" in node, f"{path or '<root>'} has no type"
        assert "anyOf" not in node and "oneOf" not in node, path
        if node["type"] == "object" and "properties" in node:
            assert "additionalProperties" not in node, path


def test_crd_defaults_satisfy_their_own_schema():
    # The API server refuses a CRD whose defaults fail validation.
    count = 0
    for path, node in walk(crd_schema()):
        if "default" in node:
            jsonschema.Draft4Validator(node).validate(node["default"])
            count += 1
    assert count > 20


def test_printer_columns_and_scale_paths_exist_in_the_schema():
    paths = {path for path, _ in walk(crd_schema())}
    for column in PRINTER_COLUMNS:
        if not column["jsonPath"].startswith(".metadata"):
            assert re.sub(r"\[(\?\(@\.\w+==\"\w+\"\)|\d+)\]", "[]", column["jsonPath"]) in paths, column
    scale = generate_crd()["spec"]["versions"][0]["subresources"]["scale"]
    assert scale["specReplicasPath"] in paths and scale["statusReplicasPath"] in paths
    names = {column["name"] for column in PRINTER_COLUMNS}
    assert {"Phase", "Progress", "Loss", "Reason", "Age"} <= names


@pytest.mark.parametrize("path,document", list(example_documents()), ids=lambda v: getattr(v, "name", ""))
def test_examples_satisfy_the_crd_schema(path, document):
    jsonschema.Draft4Validator(crd_schema()).validate(document)


def test_crd_schema_refuses_what_the_models_refuse():
    validator = jsonschema.Draft4Validator(crd_schema())
    for bad in [
        with_spec(resources={"nodes": 0}),
        with_spec(method="ppo"),
        with_spec(model={"source": "http://example.com"}),
        with_spec(evaluation={"metrics": ["bleu"]}),
        with_spec(resources={"limits": {"memory": "lots"}}),
    ]:
        assert list(validator.iter_errors(bad)), bad["spec"]


# --- CEL rules ------------------------------------------------------------------------------


def cel_rules():
    """(schema path, rule) for every x-kubernetes-validations entry in the CRD."""
    for path, node in walk(crd_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule


def test_every_cel_rule_compiles_and_has_a_message():
    environment = celpy.Environment()
    rules = list(cel_rules())
    assert len(rules) >= 10
    for path, rule in rules:
        environment.compile(rule["rule"])
        assert rule["message"] and rule["fieldPath"].startswith("."), (path, rule)


def objects_at(document, path):
    """The values at a schema path (arrays fan out) in a defaulted document."""
    nodes = [document]
    for part in [p for p in path.replace("[]", ".[]").split(".") if p]:
        next_nodes = []
        for node in nodes:
            if part == "[]" and isinstance(node, list):
                next_nodes += node
            elif isinstance(node, dict) and part in node:
                next_nodes.append(node[part])
        nodes = next_nodes
    return nodes


@pytest.mark.parametrize("path,document", list(example_documents()), ids=lambda v: getattr(v, "name", ""))
def test_every_cel_rule_holds_for_the_examples(path, document):
    # Evaluate on the defaulted object, as the API server does after structural defaulting.
    defaulted = parse_job(document).wire()
    for rule_path, rule in cel_rules():
        if "oldSelf" in rule["rule"]:
            continue
        for value in objects_at(defaulted, rule_path):
            assert evaluate_rule(rule["rule"], value), (rule_path, rule["rule"])


LOSS = {"evaluation": {"metrics": ["loss"]}}
CEL_CASES = [
    # (schema path of the rule's object, a value that breaks it, words of the rule's message)
    (".spec.distributed", {"strategy": "ddp", "offload": "optimizer"}, "offload needs"),
    (".spec.distributed", {"strategy": "zero2", "offload": "all"}, "offload: all"),
    (".spec.resources.elastic", {"minNodes": 4, "maxNodes": 2, "maxRestarts": 3}, "minNodes must not exceed"),
    (".spec.resources", {"nodes": 9, "gpusPerNode": 0, "elastic": {"minNodes": 1, "maxNodes": 4}, "env": []},
     "within elastic"),
    (".spec.resources", {"nodes": 1, "gpusPerNode": 2, "processesPerNode": 3, "env": []}, "processesPerNode"),
    (".spec.resources", {"nodes": 1, "gpusPerNode": 0, "env": [{"name": "A", "value": "1"},
                                                             {"name": "WORLD_SIZE", "value": "8"}]}, "env may not"),
    (".spec.output", {"claimName": "models", "claimTemplate": {"size": "1Gi"}}, "not both"),
    (".spec.rewards[]", {"function": "accuracy_reward", "model": "job://rm", "weight": 1.0}, "either"),
    (".spec.rewards[]", {"weight": 1.0}, "either"),
    (".spec", {"method": "sft", "resources": {"gpusPerNode": 0}, "peft": {"method": "qlora"}, **LOSS}, "qlora"),
    (".spec", {"method": "grpo", "resources": {"gpusPerNode": 0}, **LOSS}, "at least one"),
    (".spec", {"method": "dpo", "resources": {"gpusPerNode": 0}, "rewards": [{"function": "f"}], **LOSS}, "only to"),
    (".spec", {"method": "grpo", "resources": {"gpusPerNode": 0}, "rewards": [{"function": "f"}],
               "evaluation": {"metrics": ["reward"]}}, "needs a reward model"),
    (".spec", {"method": "reward", "resources": {"gpusPerNode": 0}, "evaluation": {"metrics": ["loss", "pass@1"]}},
     "does not generate"),
    (".spec", {"method": "sft", "resources": {"gpusPerNode": 0}, "generation": {"gpusPerNode": 1}, **LOSS},
     "serves only"),
    (".spec.generation", {"nodes": 1, "gpusPerNode": 4, "tensorParallel": 2, "dataParallel": 3}, "must equal"),
    (".spec.generation", {"nodes": 1, "gpusPerNode": 4, "tensorParallel": 3}, "must divide"),
    (".spec.generation", {"nodes": 1, "gpusPerNode": 0, "tensorParallel": 2}, "without GPUs"),
    (".spec.evaluation.gates[]", {"metric": "loss", "minDelta": -1.0, "maxDelta": 0.0, "confident": False},
     "exactly one of"),
    (".spec.evaluation", {"metrics": ["loss"], "compareBase": True, "gates": [{"metric": "pass@1", "min": 0.5}]},
     "one of spec.evaluation.metrics"),
    (".spec.evaluation", {"metrics": ["loss"], "compareBase": False, "gates": [{"metric": "loss", "maxDelta": 0.0}]},
     "set compareBase"),
    ("", {"metadata": {"name": "x" * 46}, "spec": {"model": {"source": "hf://a/b"}}}, "at most 45"),
    ("", {"metadata": {"name": "loop"}, "spec": {"model": {"source": "job://loop"}}}, "its own output"),
]


@pytest.mark.parametrize("path,value,message", CEL_CASES, ids=[c[2] for c in CEL_CASES])
def test_cel_rule_refuses(path, value, message):
    rules = [rule for rule_path, rule in cel_rules() if rule_path == path and "oldSelf" not in rule["rule"]]
    broken = [rule for rule in rules if not evaluate_rule(rule["rule"], value)]
    assert [rule for rule in broken if message in rule["message"]], (path, value, [r["message"] for r in broken])


def test_every_cel_rule_is_exercised_by_a_refusing_case():
    covered = set()
    for path, value, _ in CEL_CASES:
        for rule_path, rule in cel_rules():
            if rule_path == path and "oldSelf" not in rule["rule"] and not evaluate_rule(rule["rule"], value):
                covered.add(rule["rule"])
    every = {rule["rule"] for _, rule in cel_rules() if "oldSelf" not in rule["rule"]}
    assert covered == every, every - covered


def transition_rule(path, field_path):
    (rule,) = [rule for rule_path, rule in cel_rules()
               if rule_path == path and "oldSelf" in rule["rule"] and rule["fieldPath"] == field_path]
    return rule["rule"]


def test_transition_rule_keeps_method_immutable():
    rule = transition_rule(".spec", ".method")
    spec = {"method": "sft", "resources": {"gpusPerNode": 0}}
    assert evaluate_rule(rule, spec, copy.deepcopy(spec))
    assert not evaluate_rule(rule, {**spec, "method": "dpo"}, spec)


def test_transition_rule_lets_only_elastic_jobs_change_nodes():
    rule = transition_rule(".spec.resources", ".nodes")
    fixed = {"nodes": 2, "gpusPerNode": 0}
    assert not evaluate_rule(rule, {**fixed, "nodes": 3}, fixed)
    elastic = {**fixed, "elastic": {"minNodes": 1, "maxNodes": 4}}
    assert evaluate_rule(rule, {**elastic, "nodes": 3}, elastic)


def test_an_optional_field_can_be_neither_added_nor_removed_nor_changed():
    rule = transition_rule(".spec", ".peft")
    without, lora = {"method": "sft"}, {"method": "sft", "peft": {"r": 8}}
    assert evaluate_rule(rule, without, without) and evaluate_rule(rule, lora, copy.deepcopy(lora))
    assert not evaluate_rule(rule, lora, without)
    assert not evaluate_rule(rule, without, lora)
    assert not evaluate_rule(rule, {"method": "sft", "peft": {"r": 16}}, lora)
