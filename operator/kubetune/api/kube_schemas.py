"""The Kubernetes types a FineTuneJob passes through to its pods (EnvVar, Toleration,
Affinity), as the official OpenAPI schemas define them.

The table is generated from the schemas kubernetes-validate ships (`python -m
kubetune.api.kube_schemas --write`, or `make kube-schemas`) and checked in, so the operator
needs neither that package nor a cluster; a test fails when it drifts. The same schema is used
twice: the CRD embeds it (so the API server checks these fields) and validation checks the
same fields against it (so `kubetune validate` agrees with the API server).
"""

from __future__ import annotations

import functools
import json
import sys
from importlib import resources
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

from . import tables

KUBERNETES_VERSION = "1.34"
TYPES = {
    "EnvVar": "io.k8s.api.core.v1.EnvVar",
    "Toleration": "io.k8s.api.core.v1.Toleration",
    "Affinity": "io.k8s.api.core.v1.Affinity",
}
# Bounds the official schemas leave open, so that the CRD's CEL rules over these fields have
# a bounded cost on the API server.
BOUNDS = {"EnvVar": {"name": {"maxLength": 256}}}
TABLE_FILE = "kube_schemas.json"
_DROPPED = {"$schema", "$id"}


def _single_type(node: dict[str, Any]) -> Any:
    kind = node.get("type")
    return next(t for t in kind if t != "null") if isinstance(kind, list) else kind


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """References inlined, `[type, "null"]` reduced to the type (the API server drops nulls),
    int-or-string unions in the structural form."""
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        return _inline({**target, **{k: v for k, v in node.items() if k != "$ref"}}, definitions)
    if {_single_type(t) for t in node.get("oneOf", [])} in ({"string", "number"}, {"string", "integer"}):
        # Quantity and IntOrString, in the form structural CRD schemas require.
        rest = {k: v for k, v in node.items() if k != "oneOf"}
        return {**rest, "anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    result = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        result[key] = _single_type(node) if key == "type" else _inline(value, definitions)
    return result


def generate_table() -> dict[str, Any]:
    """Read the schemas shipped with kubernetes-validate (a test dependency)."""
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}.0-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())["$defs"]
    types = {}
    for name, reference in TYPES.items():
        schema = _inline(definitions[reference], definitions)
        for field, bounds in BOUNDS.get(name, {}).items():
            schema["properties"][field].update(bounds)
        types[name] = schema
    return {"kubernetesVersion": KUBERNETES_VERSION, "types": types}


def load_table() -> dict[str, Any]:
    return tables.load(TABLE_FILE)


def schema_of(name: str) -> dict[str, Any]:
    return load_table()["types"][name]


@functools.cache
def _validator(name: str):
    import jsonschema

    # Draft 4, as the API server reads OpenAPI v3: 1.0 is not an integer.
    return jsonschema.Draft4Validator(schema_of(name))


def _problem(error) -> str:
    where = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties":
        unexpected = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        reason = f"unknown field {', '.join(unexpected)}"
    else:
        reason = error.message
    return f"{where}: {reason}" if where else reason


def check(name: str, value: Any) -> Any:
    """The value, or ValueError naming the first place the Kubernetes schema refuses."""
    error = next(iter(sorted(_validator(name).iter_errors(value), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        raise ValueError(f"not a valid Kubernetes {name}: {_problem(error)}")
    return value


def kube_type(name: str) -> Any:
    """dict, held to the official schema of the Kubernetes type `name` in validation and in the CRD."""
    return Annotated[dict[str, Any], AfterValidator(lambda value: check(name, value)),
                     WithJsonSchema(schema_of(name))]


if __name__ == "__main__":
    sys.exit(tables.main(sys.argv, TABLE_FILE, generate_table, sort_keys=True))
