"""Turn a FineTuneJob document into a typed job, or a list of problems that name fields.

Three passes, each reporting every problem it finds: the typed models (shape, types,
ranges), the CEL rules attached to the models (the same ones the API server enforces from
the CRD), and the `spec.training` keys against the method's TRL config class; then, on a
job with none of those, how an elastic job's batch splits.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import celpy
from pydantic import BaseModel, ValidationError

from ..contract.metrics import METRICS, METRIC_PATTERN
from ..contract.publish import PUBLISH_PATTERN, PUBLISH_SCHEMES
from ..contract.sources import SCHEMES, SOURCE_PATTERN
from .batch import uneven_split
from .models import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, JOB_NAME_PATTERN, RESOURCE_NAME_PATTERN, FineTuneJob
from .trl_keys import check_training_keys


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class InvalidJob(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def format_location(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _one_of(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


PATTERN_MEANINGS = {
    SOURCE_PATTERN: "expected " + _one_of([s.description.split(" (")[0] for s in SCHEMES.values()]),
    METRIC_PATTERN: "unknown metric; expected " + _one_of([m.name for m in METRICS]),
    PUBLISH_PATTERN: "expected " + _one_of([s.description.split(" (")[0] for s in PUBLISH_SCHEMES.values()]),
    DNS_LABEL_PATTERN: "must be a DNS label: lowercase letters, digits and '-'",
    DNS_SUBDOMAIN_PATTERN: "must be a DNS subdomain: lowercase letters, digits, '-' and '.'",
    JOB_NAME_PATTERN: "must start with a letter and hold only lowercase letters, digits and '-'",
    RESOURCE_NAME_PATTERN: "must be a resource name such as nvidia.com/gpu",
}


TYPE_NAMES = {"int_type": "an integer", "float_type": "a number", "bool_type": "a boolean", "string_type": "a string",
              "dict_type": "a mapping", "list_type": "a list", "model_type": "a mapping"}


def _json_type(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return kinds.get(type(value), type(value).__name__)


def _pydantic_problems(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "string_pattern_mismatch":
            pattern = item.get("ctx", {}).get("pattern")
            message = f"{item['input']!r}: {PATTERN_MEANINGS.get(pattern, message)}"
        elif item["type"] in TYPE_NAMES:
            # Strict types, as the API server's: say what came instead.
            message = f"expected {TYPE_NAMES[item['type']]}, got {_json_type(item['input'])} {item['input']!r}"
        problems.append(Problem(format_location(tuple(item["loc"])), message))
    return list(dict.fromkeys(problems))


@functools.cache
def _compiled(rule: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def cel_rules_of(model_class: type[BaseModel]) -> list[dict[str, str]]:
    extra = model_class.model_config.get("json_schema_extra") or {}
    return list(extra.get("x-kubernetes-validations", [])) if isinstance(extra, dict) else []


# cel-python is not safe for concurrent use (its parser and evaluator share state), and the
# operator reconciles jobs in several threads.
_CEL_LOCK = threading.Lock()


def _evaluate(expression: str, value: dict[str, Any], old_value: Optional[dict[str, Any]]) -> Any:
    with _CEL_LOCK:
        activation = {"self": celpy.json_to_cel(value)}
        if old_value is not None:
            activation["oldSelf"] = celpy.json_to_cel(old_value)
        return _compiled(expression).evaluate(activation)


def evaluate_rule(rule: str, value: dict[str, Any], old_value: Optional[dict[str, Any]] = None) -> bool:
    result = _evaluate(rule, value, old_value)
    if isinstance(result, celpy.celtypes.BoolType):
        return bool(result)
    raise ValueError(f"CEL rule {rule!r} did not give a boolean: {result!r}")


def rule_message(rule: dict[str, str], value: dict[str, Any], old_value: Optional[dict[str, Any]] = None) -> str:
    """The message of a broken rule: its messageExpression when it has one, as the API server does."""
    if "messageExpression" in rule:
        return str(_evaluate(rule["messageExpression"], value, old_value))
    return rule["message"]


def _models_with_paths(model: BaseModel, path: str) -> Iterator[tuple[str, BaseModel]]:
    yield path, model
    for name, field in type(model).model_fields.items():
        wire_name = field.alias or name
        child_path = f"{path}.{wire_name}" if path else wire_name
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _models_with_paths(value, child_path)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _models_with_paths(item, f"{child_path}[{index}]")


def cel_problems(job: FineTuneJob, old_job: Optional[FineTuneJob] = None) -> list[Problem]:
    """Evaluate every CEL rule; transition rules (oldSelf) only when the old job is given."""
    old_models = dict(_models_with_paths(old_job, "")) if old_job is not None else {}
    problems = []
    for path, model in _models_with_paths(job, ""):
        rules = cel_rules_of(type(model))
        if not rules:
            continue
        # Dumped once per model, not once per rule: a spec carries a few dozen rules.
        value = model.model_dump(mode="json", by_alias=True, exclude_none=True)
        old_model = old_models.get(path)
        old_dump = old_model.model_dump(mode="json", by_alias=True, exclude_none=True) if old_model else None
        for rule in rules:
            transition = "oldSelf" in rule["rule"]
            if transition and old_dump is None:
                continue
            old_value = old_dump if transition else None
            if not evaluate_rule(rule["rule"], value, old_value):
                message = rule_message(rule, value, old_value)
                problems.append(Problem((path + rule.get("fieldPath", "")).lstrip("."), message))
    return problems


def training_problems(job: FineTuneJob) -> list[Problem]:
    return [
        Problem(f"spec.training.{key}", reason)
        for key, reason in check_training_keys(job.spec.method, job.spec.training)
    ]


def generation_problems(job: FineTuneJob) -> list[Problem]:
    """TRL keys that contradict spec.generation: the operator points the ranks at its server."""
    generation = job.spec.generation
    if generation is None:
        return []
    return [Problem(f"spec.training.{key}", f"set by spec.generation (the ranks use the server the operator runs)"
                                            f"; remove it" + (f" or set it to {agreed!r}" if agreed is not None else ""))
            for key, agreed in generation.TRL_KEYS.items()
            if key in job.spec.training and job.spec.training[key] != agreed]


def batch_problems(job: FineTuneJob) -> list[Problem]:
    uneven = uneven_split(job.spec)
    return [Problem("spec.training.gradient_accumulation_steps", uneven)] if uneven else []


INT64 = 2**63


def out_of_range(value: Any, path: str = "") -> Iterator[Problem]:
    """Integers the API server cannot hold (JSON numbers are int64 there)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from out_of_range(child, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from out_of_range(child, f"{path}[{index}]")
    elif isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        yield Problem(path, f"{value} does not fit in a 64-bit integer")


def parse_job(document: Any, old_document: Any = None) -> FineTuneJob:
    """A validated FineTuneJob, or InvalidJob listing every problem by field path."""
    if not isinstance(document, dict):
        raise InvalidJob([Problem("", f"expected a FineTuneJob mapping, got {type(document).__name__}")])
    body = {key: value for key, value in document.items() if key != "status"}
    too_large = list(out_of_range(body))
    if too_large:
        raise InvalidJob(too_large)
    try:
        job = FineTuneJob.model_validate(body)
    except ValidationError as error:
        raise InvalidJob(_pydantic_problems(error)) from None
    old_job = None
    if old_document is not None:
        old_job = FineTuneJob.model_validate({k: v for k, v in old_document.items() if k != "status"})
    problems = cel_problems(job, old_job) + training_problems(job) + generation_problems(job)
    problems += [] if problems else batch_problems(job)
    if problems:
        raise InvalidJob(problems)
    return job
