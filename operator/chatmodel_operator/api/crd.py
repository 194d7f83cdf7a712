"""Build the ChatModel CustomResourceDefinition from the pydantic models (pure).

Pydantic's JSON schema is rewritten into a Kubernetes structural schema: references inlined,
no ``title``, no ``anyOf`` with null (optional simply means not required), int-or-string
unions marked as such, nested objects defaulted to ``{}`` so the API server fills in their
own defaults, and the cross-field rules added as CEL ``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
from typing import Any

from chatmodel_operator.api.spec import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    SPEC_RULES,
    VERSION,
    ChatModelSpec,
    ChatModelStatus,
)

CRD_NAME = f"{PLURAL}.{GROUP}"
# Where the generated CRD is committed, relative to the repository (and to the chart).
CRD_PATH = f"crds/{CRD_NAME}.yaml"


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)  # the field's own description and default win
        return _resolve(target, defs)
    return {k: _resolve(v, defs) for k, v in node.items()}


def _int_or_string(node: dict[str, Any], allowed: list[Any]) -> None:
    """Mark an int-or-string field; its allowed values become a CEL rule (structural schemas
    cannot hold a mixed enum). The rule branches on the type: strict CEL has no int == string."""
    node["x-kubernetes-int-or-string"] = True
    if not allowed:
        return
    strings = [v for v in allowed if isinstance(v, str)]
    ints = [v for v in allowed if isinstance(v, int)]
    node.setdefault("x-kubernetes-validations", []).append(
        {
            "rule": f"type(self) == string ? self in {strings!r} : self in {ints!r}",
            "message": f"must be one of {', '.join(map(str, allowed))}",
        }
    )


def _structural(node: dict[str, Any], path: str) -> dict[str, Any]:
    node = dict(node)
    node.pop("title", None)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        types = {b.get("type") for b in branches}
        if len(branches) == 1:
            merged = {**branches[0], **node}
            node = merged
        elif types == {"string", "integer"}:
            allowed: list[Any] = []
            for b in branches:
                allowed += b.get("enum", [b["const"]] if "const" in b else [])
            _int_or_string(node, allowed)
        else:
            raise ValueError(f"{path}: union {branches} has no structural form")
    node.pop("title", None)
    if "enum" in node and "type" not in node:
        values = node.pop("enum")
        kinds = {type(v) for v in values}
        if kinds == {str, int}:
            _int_or_string(node, values)
        else:
            node["enum"] = values
            node["type"] = "string" if kinds == {str} else "integer"
    if "const" in node:
        node["enum"] = [node.pop("const")]
    # Kubernetes' OpenAPI v3 keeps draft-4 bounds: a boolean exclusive flag beside the bound.
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(flag), int | float) and not isinstance(node.get(flag), bool):
            node[bound] = node.pop(flag)
            node[flag] = True
    if node.get("type") == "object" and "properties" in node:
        node["properties"] = {
            k: _structural(v, f"{path}.{k}") for k, v in node["properties"].items()
        }
        for k, v in node["properties"].items():
            if v.get("type") == "object" and "properties" in v and "default" in v:
                v["default"] = {}
            if "description" not in v:
                raise ValueError(f"{path}.{k} has no description: add a docstring to the field")
        node.pop("additionalProperties", None)
    elif node.get("type") == "object":
        add = node.get("additionalProperties")
        if isinstance(add, dict) and add:
            node["additionalProperties"] = _structural(add, path + "[*]")
        else:
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "array" and "items" in node:
        node["items"] = _structural(node["items"], path + "[]")
    if node.get("default", "x") is None:
        node.pop("default")
    if "description" in node:  # docstrings wrap across lines; kubectl explain rewraps them
        node["description"] = " ".join(str(node["description"]).split())
    return node


def _schema_of(model: type, path: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)  # type: ignore[attr-defined]
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs), path)


def _add_rules(spec_schema: dict[str, Any]) -> None:
    for scope, cel, message, field_path in SPEC_RULES:
        target = spec_schema if scope == "spec" else spec_schema["properties"][scope]
        target.setdefault("x-kubernetes-validations", []).append(
            {
                "rule": cel,
                "message": message,
                "fieldPath": "." + field_path.split(".", 2)[-1] if scope == "spec" else None,
            }
        )
        rule = target["x-kubernetes-validations"][-1]
        if rule["fieldPath"] is None:
            rule.pop("fieldPath")
        elif scope == "spec":
            rule["fieldPath"] = "." + ".".join(field_path.split(".")[1:])


def build_crd() -> dict[str, Any]:
    spec = _schema_of(ChatModelSpec, "spec")
    spec["description"] = (
        ChatModelSpec.__doc__.strip() if ChatModelSpec.__doc__ else "Desired state."
    )
    _add_rules(spec)
    # The scale subresource's paths are checked by the API server itself ("should be a
    # non-negative integer"): a schema minimum there would report one bad value twice.
    spec["properties"]["serving"]["properties"]["replicas"].pop("minimum", None)
    status = _schema_of(ChatModelStatus, "status")
    status["description"] = "Observed state, written by the operator once per reconcile."
    status["properties"]["replicas"].pop("minimum", None)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    status.pop("default", None)
    schema = {
        "type": "object",
        "description": (
            "A chat model served by NVIDIA Triton: one resource from checkpoint to autoscaled "
            "endpoint."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "serving.chatmodel.io/v1alpha1."},
            "kind": {"type": "string", "description": "ChatModel."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "chatmodel-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": ["all", "ai"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.serving.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.source"},
                        {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus"},
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def status_schema() -> dict[str, Any]:
    """The status part of the CRD schema (tests validate operator-written status with it)."""
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["status"]
    return schema
