"""The generated CRD: fresh, structural, described, and accepting the examples and plan status."""

from __future__ import annotations

from typing import Any

import jsonschema
import yaml
from tests.conftest import REPO
from tests.unit.test_plan import plan_for

from chatmodel_operator.api.crd import build_crd, status_schema
from chatmodel_operator.generate import generated_files


def test_committed_generated_files_are_current() -> None:
    stale = [
        rel
        for rel, text in generated_files().items()
        if not (REPO / rel).exists() or (REPO / rel).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run `make generate`: stale {stale}"


def _walk(node: Any, path: str, out: list[tuple[str, dict[str, Any]]]) -> None:
    if isinstance(node, dict):
        out.append((path, node))
        for key, child in node.get("properties", {}).items():
            _walk(child, f"{path}.{key}", out)
        if "items" in node:
            _walk(node["items"], f"{path}[]", out)
        if isinstance(node.get("additionalProperties"), dict):
            _walk(node["additionalProperties"], f"{path}{{}}", out)


def crd_validator(s: dict[str, Any]) -> jsonschema.Draft4Validator:
    """Kubernetes' OpenAPI v3 schemas use draft-4 keywords (boolean exclusiveMinimum)."""
    return jsonschema.Draft4Validator(s)


def schema() -> dict[str, Any]:
    return dict(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_schema_is_structural_and_every_field_is_described() -> None:
    nodes: list[tuple[str, dict[str, Any]]] = []
    _walk(schema(), "", nodes)
    for path, node in nodes:
        for forbidden in ("$ref", "anyOf", "oneOf", "title", "$defs", "const"):
            assert forbidden not in node, (path, forbidden)
        if path.count(".") >= 2 and not path.endswith("[]"):  # every field below spec/status
            assert node.get("description"), path
        assert "type" in node or node.get("x-kubernetes-int-or-string") or path == "", path


def test_subresources_and_printer_columns() -> None:
    version = build_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.serving.replicas"
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Model",
        "GPUs",
        "Replicas",
        "Ready",
        "Age",
    ]
    assert build_crd()["spec"]["names"]["shortNames"] == ["chm"]


def test_cross_field_rules_are_cel_with_messages() -> None:
    spec = schema()["properties"]["spec"]
    rules = (
        spec["x-kubernetes-validations"]
        + spec["properties"]["autoscaling"]["x-kubernetes-validations"]
    )
    assert any("minReplicas <= self.maxReplicas" in r["rule"] for r in rules)
    assert all(r["message"] for r in rules)


def test_plan_status_validates_against_the_status_schema() -> None:
    status = {
        "phase": "Ready",
        "observedGeneration": 3,
        "plan": plan_for("01-ai/Yi-34B-Chat").to_status(),
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "",
                "lastTransitionTime": "2026-11-21T00:00:00Z",
            }
        ],
    }
    crd_validator(status_schema()).validate(status)
    assert yaml.safe_load(yaml.safe_dump(status)) == status
