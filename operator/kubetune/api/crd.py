"""Generate the FineTuneJob CustomResourceDefinition from the typed models.

`kubetune crd` prints it; crds/ holds the checked-in copy, and a test fails when the two
differ. The JSON schema pydantic produces is rewritten into the structural OpenAPI v3
subset Kubernetes accepts: references inlined, nullable unions collapsed, exclusive bounds
in OpenAPI 3.0 form, object defaults (from default factories too) reduced to {} so the API
server fills nested defaults.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from .models import (
    API_VERSION,
    CATEGORIES,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    FineTuneJob,
)

CRD_FILE_NAME = f"{GROUP}_{PLURAL}.yaml"

PRINTER_COLUMNS = [
    {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.display"},
    # What the initializer has fetched: it moves while a job is Initializing.
    {"name": "Fetched", "type": "string", "jsonPath": ".status.initialization.display"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    # Why workers do not run (image pull, scheduling, claim), or why the job failed.
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Running")].reason'},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.evaluation.verdict"},
    {"name": "Gate", "type": "number", "jsonPath": ".status.evaluation.gates[0].value",
     "description": "The value the first gate judged."},
    {"name": "Nodes", "type": "integer", "jsonPath": ".spec.resources.nodes", "priority": 1},
    {"name": "Strategy", "type": "string", "jsonPath": ".status.distributed.strategy", "priority": 1},
    {"name": "Tokens/s", "type": "number", "jsonPath": ".status.progress.tokensPerSecond", "priority": 1},
    {"name": "Samples/s", "type": "number", "jsonPath": ".status.progress.samplesPerSecond", "priority": 1},
    {"name": "Reward", "type": "number", "jsonPath": ".status.progress.reward", "priority": 1},
    {"name": "MFU", "type": "number", "jsonPath": ".status.progress.mfu", "priority": 1,
     "description": "Model FLOPs utilisation, 0-1."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROPPED_KEYS = {"title", "$defs"}


class _WithFactoryDefaults(GenerateJsonSchema):
    """Defaults made by a default_factory land in the schema too: the API server must fill
    `evaluation: {}` (and then its nested defaults) before the CEL rules read it."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()
        return schema.get("default", NoDefault)


def _structural(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(definitions[node["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, definitions)
    node = dict(node)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        members = [m for m in node["anyOf"] if m != {"type": "null"}]
        if len(members) == 1:
            del node["anyOf"]
            node = {**members[0], **node}
            return _structural(node, definitions)
    if node.get("default", 0) is None:
        del node["default"]
    if isinstance(node.get("default"), dict):
        node["default"] = {}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound in ("Minimum", "Maximum"):
        if f"exclusive{bound}" in node and not isinstance(node[f"exclusive{bound}"], bool):
            node[bound.lower()] = node.pop(f"exclusive{bound}")
            node[f"exclusive{bound}"] = True
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    result = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            result[key] = {name: _structural(schema, definitions) for name, schema in value.items()}
        else:
            result[key] = _structural(value, definitions)
    return result


def open_api_schema() -> dict[str, Any]:
    raw = FineTuneJob.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    schema = _structural(raw, raw.get("$defs", {}))
    schema.pop("description", None)
    properties = schema["properties"]
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"type": "object"}
    schema["required"] = ["spec"]
    return schema


def generate_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "kubetune", "app.kubernetes.io/part-of": "kubetune"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                    "subresources": {
                        "status": {},
                        # `kubectl scale ftj/NAME --replicas=N` resizes an elastic job.
                        "scale": {
                            "specReplicasPath": ".spec.resources.nodes",
                            "statusReplicasPath": ".status.workers.ready",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    from ..yamlio import dump

    header = f"# Generated from kubetune.api.models ({API_VERSION}) by `kubetune crd`. Do not edit.\n"
    return header + dump(generate_crd())
