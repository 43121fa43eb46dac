"""kubetune.contract: the one package both sides import, its tables tied to what uses them,
and its documents read back as they were written."""

import ast
import json
from pathlib import Path

import pytest
import trl
from pydantic import ValidationError

from conftest import REPO, with_spec
from kubetune.api import kube_schemas, models, reference
from kubetune.api.crd import open_api_schema
from kubetune.api.validation import parse_job
from kubetune.contract.config import DataFormat, TrainerConfig
from kubetune.contract.evaluation import EvaluationSummary, MetricValue
from kubetune.contract.formats import FORMAT_NAMES
from kubetune.contract.methods import METHODS
from kubetune.contract.metrics import METRIC_PATTERN, METRICS, metric
from kubetune.contract.progress import Progress
from kubetune.contract.sources import PATH, SCHEMES
from kubetune.render.sources import resolve_source
from trainer_entrypoint import sources
from trainer_entrypoint.evaluate.metrics import PROVIDES, SCORERS

OPERATOR_SIDE = REPO / "operator" / "kubetune"
RUNTIME = REPO / "trainer_entrypoint"


def imported_modules(folder: Path):
    """(file, module) for every import in the Python files of a folder, relative ones resolved."""
    root = REPO / "operator" if folder.is_relative_to(OPERATOR_SIDE) else REPO
    for path in folder.rglob("*.py"):
        package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                yield from ((path, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names]
                yield from ((path, name) for name in [base] + names)


def test_the_pod_runtime_imports_only_the_contract_of_the_operator_side():
    reaching = sorted({f"{path.relative_to(REPO)}: {module}" for path, module in imported_modules(RUNTIME)
                       if module.startswith("kubetune") and not module.startswith(("kubetune.contract",))
                       and module not in ("kubetune", "kubetune.contract")})
    assert reaching == []
    assert any(module.startswith("kubetune.contract") for _, module in imported_modules(RUNTIME))


def test_the_operator_side_imports_nothing_of_the_pod_runtime():
    assert [(str(path), m) for path, m in imported_modules(OPERATOR_SIDE) if m.startswith("trainer_entrypoint")] == []


def test_the_contract_needs_nothing_but_pydantic_and_the_standard_library():
    import sys

    allowed = set(sys.stdlib_module_names) | {"pydantic", "kubetune"}
    outside = {m for _, m in imported_modules(OPERATOR_SIDE / "contract") if m.split(".")[0] not in allowed}
    assert outside == set()
    assert not [m for _, m in imported_modules(OPERATOR_SIDE / "contract")
                if m.startswith("kubetune.") and not m.startswith("kubetune.contract")]


# --- the tables, tied to what reads them -------------------------------------------------------


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_names_real_trl_classes_and_data_kubetune_has(name):
    method = METHODS[name]
    assert hasattr(trl, method.config_class) and hasattr(trl, method.trainer_class)
    assert set(method.reads) | {method.builtin_format} <= set(FORMAT_NAMES)
    assert method.builtin_format in method.reads


def test_the_methods_that_generate_while_they_train_are_those_with_trls_vllm_keys():
    import dataclasses

    online = {name for name, method in METHODS.items() if method.generates_online}
    with_vllm = {name for name, method in METHODS.items()
                 if "use_vllm" in {f.name for f in dataclasses.fields(getattr(trl, method.config_class))}}
    assert online == with_vllm == {"grpo", "rloo"}


def test_the_api_takes_its_names_from_the_tables():
    assert models.Method.__args__ == tuple(METHODS)
    assert DataFormat.__args__ == ("auto", *FORMAT_NAMES)
    for name in ("loss", "pass@3", "pass@10", "exact_match"):
        parse_job(with_spec(evaluation={"metrics": [name], "sampling": {"n": 10}}))
    for row in METRICS:
        assert metric(row.name if row.pattern is None else row.name.replace("k", "7")) is row


def test_every_metric_has_a_scorer_and_every_need_a_check():
    assert set(SCORERS) == {row.name for row in METRICS}
    assert {row.needs for row in METRICS} <= set(PROVIDES)
    import re

    assert not re.match(METRIC_PATTERN, "pass@0") and not re.match(METRIC_PATTERN, "bleu")


@pytest.mark.parametrize("name", list(SCHEMES))
def test_each_source_scheme_is_mounted_or_opened_by_the_pods(name):
    scheme = SCHEMES[name]
    examples = {"hf": "hf://org/model", "pvc": "pvc://claim/models/x", "s3": "s3://bucket/prefix",
                "job": "job://sft", "builtin": "builtin://tiny", PATH: "/models/x"}
    resolved = resolve_source(examples[name], {})
    if scheme.mounts_claim:
        assert resolved.volume is not None and resolved.location.kind == PATH
    else:
        assert resolved.volume is None and resolved.location.kind == name
        assert name in ("hf", "builtin", PATH) or name in sources.FETCHERS
    for key in scheme.secret_keys:
        assert f"{name}_secret_name" in models.CredentialsSpec.model_fields, key


def test_builtin_data_has_every_format(builtin_tiny):
    for fmt in FORMAT_NAMES:
        assert (builtin_tiny / "data" / fmt / "train.jsonl").stat().st_size > 0, fmt


# --- the documents ---------------------------------------------------------------------------


def test_trainer_config_refuses_a_key_this_runtime_does_not_know():
    from local_pods import rendered_config

    _, config = rendered_config(with_spec())
    wire = config.wire()
    assert TrainerConfig.decode(json.dumps(wire)) == config
    with pytest.raises(ValidationError, match="newSetting"):
        TrainerConfig.model_validate({**wire, "model": {**wire["model"], "newSetting": 1}})


def test_progress_is_read_by_name_and_a_newer_field_is_ignored():
    text = Progress(step=5, total_steps=10, tokens_per_second=2.5).encode()
    assert json.loads(text) == {"phase": "starting", "step": 5, "totalSteps": 10, "tokensPerSecond": 2.5}
    assert Progress.decode(text.replace("}", ', "mfu": 0.4}')).step == 5


def test_the_delta_is_computed_once_from_tuned_and_base():
    read = EvaluationSummary.read('{"metrics": {"loss": {"tuned": 1.0, "base": 1.5, "delta": 99}}}')
    assert read.metrics["loss"] == MetricValue(tuned=1.0, base=1.5) and read.metrics["loss"].delta == -0.5
    assert MetricValue(tuned=1.0).delta is None
    assert EvaluationSummary.read("Traceback: not a summary").metrics == {}


# --- the API documents itself ----------------------------------------------------------------


def undocumented(node, path=""):
    for name, child in node.get("properties", {}).items():
        if not child.get("description"):
            yield f"{path}.{name}"
        yield from undocumented(child.get("items", child), f"{path}.{name}")


def test_every_spec_and_status_field_has_a_description():
    schema = open_api_schema()
    assert list(undocumented(schema["properties"]["spec"], ".spec")) == []
    assert list(undocumented(schema["properties"]["status"], ".status")) == []


def test_the_readme_field_reference_is_generated_from_the_models():
    readme = (REPO / "README.md").read_text()
    assert reference.readme_with_reference(readme) == readme, "run `make crd` to refresh the README's field reference"
    assert "`spec.resources.nodes`" in reference.field_reference()


def test_the_kubernetes_schema_table_matches_kubernetes_validate():
    assert kube_schemas.load_table() == kube_schemas.generate_table(), (
        "kubetune/api/kube_schemas.json is stale: run `make kube-schemas`")


def test_every_field_that_cannot_change_on_a_running_job_has_a_transition_rule():
    def guarded(model_class):
        rules = model_class.model_config["json_schema_extra"]["x-kubernetes-validations"]
        return {rule["fieldPath"][1:] for rule in rules if "oldSelf" in rule["rule"]}

    def wire_names(model_class, leave_out):
        return {field.alias for name, field in model_class.model_fields.items() if name not in leave_out}

    assert guarded(models.FineTuneJobSpec) == wire_names(models.FineTuneJobSpec, {"evaluation", "run_policy",
                                                                                   "resources"})
    assert guarded(models.ResourcesSpec) == wire_names(models.ResourcesSpec, set())  # nodes: only when elastic
