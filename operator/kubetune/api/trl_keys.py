"""Which `spec.training` keys each method's TRL config class accepts, and of what type.

The table is generated from TRL's own config dataclasses (`python -m kubetune.api.trl_keys
--write`) and checked in, so validating a spec needs neither torch nor TRL; a test fails when
it drifts from the installed TRL.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import sys
import types
import typing
from typing import Any

from ..contract.methods import METHODS
from . import tables


# Keys kubetune sets itself; each points at the spec field that controls it.
MANAGED_KEYS = {
    "output_dir": "spec.output",
    "deepspeed": "spec.distributed",
    "fsdp": "spec.distributed",
    "fsdp_config": "spec.distributed",
    "use_cpu": "spec.resources.gpusPerNode (CPU is used when it is 0)",
    "local_rank": "the launcher",
    "resume_from_checkpoint": "kubetune (it resumes from the newest complete checkpoint)",
    "save_steps": "spec.checkpointing.everySteps",
    "save_strategy": "spec.checkpointing.everySteps",
    "save_total_limit": "spec.checkpointing.keep",
    "hub_token": "spec.credentials.hfToken (secrets never go in the spec)",
    "reward_weights": "spec.rewards[].weight",
}

TABLE_FILE = "trl_keys.json"


def _json_types(annotation: Any) -> tuple[set[str], list[str] | None]:
    """JSON types a YAML value may take for this annotation, and its choices if closed."""
    if annotation is Any or annotation is typing.Any:
        return {"any"}, None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        found: set[str] = set()
        choices: list[str] | None = []
        for arg in typing.get_args(annotation):
            arg_types, arg_choices = _json_types(arg)
            found |= arg_types
            if arg_choices is not None and choices is not None:
                choices += arg_choices
            elif arg_types - {"null", "boolean"} and arg is not str:
                choices = None
        # `SchedulerType | str` still only takes the enum's values: transformers converts it.
        return found, (choices or None)
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        return {_json_type_of(v) for v in values}, [v for v in values if isinstance(v, str)] or None
    if origin in (list, tuple):
        return {"array"}, None
    if origin is dict or annotation is dict:
        return {"object"}, None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"string"}, [member.value for member in annotation]
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null",
              list: "array", tuple: "array"}
    return ({simple[annotation]} if annotation in simple else {"any"}), None


def _json_type_of(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value), "any")


def generate_table() -> dict[str, Any]:
    """Read the installed TRL's config classes (imports TRL, and so torch)."""
    import trl

    methods = {}
    for method, row in METHODS.items():
        class_name = row.config_class
        fields = {}
        for field in dataclasses.fields(getattr(trl, class_name)):
            if not field.init or field.name.startswith("_"):
                continue
            json_types, choices = _json_types(field.type)
            entry: dict[str, Any] = {"types": sorted(json_types)}
            if choices:
                entry["choices"] = choices
            fields[field.name] = entry
        methods[method] = {"class": class_name, "fields": dict(sorted(fields.items()))}
    return {"trl_version": trl.__version__, "methods": methods}


def load_table() -> dict[str, Any]:
    return tables.load(TABLE_FILE)


def _accepts(value: Any, entry: dict[str, Any]) -> bool:
    allowed = set(entry["types"])
    if "any" in allowed:
        return True
    if value is None:
        return "null" in allowed
    if isinstance(value, bool):
        return "boolean" in allowed
    if isinstance(value, int):
        return bool(allowed & {"integer", "number"})
    if isinstance(value, float):
        return "number" in allowed or ("integer" in allowed and value.is_integer())
    if isinstance(value, str):
        if "string" in allowed:
            return not entry.get("choices") or value in entry["choices"]
        # TRL's YAML loader goes through argparse, which turns "2e-5" into a float.
        return bool(allowed & {"integer", "number"}) and _is_number(value)
    if isinstance(value, list):
        return "array" in allowed
    if isinstance(value, dict):
        return "object" in allowed
    return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_training_keys(method: str, training: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, reason) for every key the method's TRL config would refuse or kubetune manages."""
    table = load_table()
    spec = table["methods"][method]
    fields = spec["fields"]
    where = f"{spec['class']} (TRL {table['trl_version']})"
    problems = []
    for key, value in training.items():
        if key in MANAGED_KEYS:
            problems.append((key, f"set by kubetune; use {MANAGED_KEYS[key]} instead"))
        elif key not in fields:
            hint = difflib.get_close_matches(key, fields, n=1)
            suffix = f"; did you mean '{hint[0]}'?" if hint else ""
            problems.append((key, f"not a field of {where}{suffix}"))
        elif not _accepts(value, fields[key]):
            entry = fields[key]
            expected = f"one of {entry['choices']}" if entry.get("choices") else " or ".join(entry["types"])
            problems.append((key, f"expected {expected}, got {value!r}"))
    return problems


def as_trl_reads(method: str, training: dict[str, Any]) -> dict[str, Any]:
    """The keys as TRL's own loader reads them: a number written as a string ("2e-5") for a field
    that takes no string becomes the number, as argparse makes it; everything else as written."""
    fields = load_table()["methods"][method]["fields"]
    return {key: _number(value) if _numeric_string_for(fields.get(key), value) else value
            for key, value in training.items()}


def _numeric_string_for(entry: dict[str, Any] | None, value: Any) -> bool:
    return (entry is not None and isinstance(value, str) and "string" not in entry["types"]
            and bool(set(entry["types"]) & {"integer", "number"}) and _is_number(value))


def _number(text: str) -> int | float:
    number = float(text)
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


if __name__ == "__main__":
    sys.exit(tables.main(sys.argv, TABLE_FILE, generate_table))
