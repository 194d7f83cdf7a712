"""Validation of everything the operator writes: built-in kinds with kubernetes-validate
(the Kubernetes 1.37 OpenAPI schemas, strict: unknown fields are errors), ChatModel status
against the CRD's own schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.37.0"
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "chatmodels.serving.chatmodel.io.yaml"
# CRDs kubernetes-validate has no schema for; their shape is covered by the renderer's tests.
NO_SCHEMA = {"ServiceMonitor", "ScaledObject"}


class Validator:
    def __init__(self) -> None:
        crd = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
        version = crd["spec"]["versions"][0]
        status_schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        # Kubernetes' structural schemas use draft-4 keywords (boolean exclusiveMinimum).
        self.status = jsonschema.Draft4Validator(status_schema)
        self.checked: dict[str, int] = {}

    def object(self, obj: dict[str, Any]) -> None:
        kind = obj.get("kind", "?")
        self.checked[kind] = self.checked.get(kind, 0) + 1
        if kind in NO_SCHEMA:
            assert obj.get("apiVersion") and obj.get("metadata", {}).get("name"), obj
            return
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{kind} {obj.get('metadata', {}).get('name')}: {exc.message}"
            ) from None

    def chatmodel_status(self, status: dict[str, Any]) -> None:
        self.checked["ChatModel/status"] = self.checked.get("ChatModel/status", 0) + 1
        errors = sorted(self.status.iter_errors(status), key=lambda e: list(e.path))
        assert not errors, "; ".join(
            f"status.{'.'.join(map(str, e.path))}: {e.message}" for e in errors
        )
