"""The routing API on the real API server: the test InferencePool CRD (written from the
published v1 reference) is accepted, so are the InferencePools the operator renders and a
gateway's status on them, and what the v1 rules refuse is refused. The operator's own loop
with a pool (and KEDA) is not run here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from admin import CRDS, Admin, wait_until

from chatmodel_operator.api import parse_spec
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.plan import plan_spec
from chatmodel_operator.render import render_inference_pool

CRD_PATH = Path(__file__).parent / "crds" / "inferencepool.yaml"
POOLS = ("inference.networking.k8s.io", "v1", "inferencepools")
BASE = {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}
PICKERS = [
    pytest.param({}, id="no-picker"),
    pytest.param(
        {"endpointPickerRef": {"name": "epp", "port": {"number": 9002}, "failureMode": "FailOpen"}},
        id="service-picker",
    ),
    pytest.param(
        {"endpointPickerRef": {"name": "epp", "kind": "Picker", "group": "example.com"}},
        id="other-kind",
    ),
]


@pytest.fixture(scope="module")
def pool_api(admin: Admin) -> Iterator[None]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    admin.create(CRDS, None, crd)
    wait_until(lambda: _established(admin), 60, what="the InferencePool CRD")
    try:
        yield
    finally:
        admin.delete(CRDS, None, crd["metadata"]["name"])


def _established(admin: Admin) -> bool:
    crd = admin.get(CRDS, None, "inferencepools.inference.networking.k8s.io") or {}
    return any(
        c.get("type") == "Established" and c.get("status") == "True"
        for c in (crd.get("status") or {}).get("conditions") or ()
    )


def rendered(pool: dict[str, Any], ns: str) -> dict[str, Any]:
    spec = parse_spec({**BASE, "routing": {"inferencePool": pool}})
    assert plan_spec(spec, resolve_model(spec.model)).openai_frontend
    return render_inference_pool(name="chat", namespace=ns, spec=spec, owner=None)


@pytest.mark.parametrize("pool", PICKERS)
def test_rendered_pools_are_accepted_as_rendered(
    admin: Admin, ns: str, pool_api: None, pool: dict[str, Any]
) -> None:
    body = rendered(pool, ns)
    stored = admin.create(POOLS, ns, body)
    # Nothing of ours is pruned or rewritten; the API server adds only its defaults.
    for key, value in body["spec"].items():
        if key == "endpointPickerRef":
            assert stored["spec"][key].items() >= value.items()
            assert stored["spec"][key]["kind"] == value.get("kind", "Service")
        else:
            assert stored["spec"][key] == value
    status = {
        "status": {
            "parents": [
                {
                    "parentRef": {
                        "group": "gateway.networking.k8s.io",
                        "kind": "Gateway",
                        "name": "gw",
                    },
                    "conditions": [
                        {
                            "type": t,
                            "status": "True",
                            "reason": r,
                            "message": "",
                            "lastTransitionTime": "2026-12-07T00:00:00Z",
                        }
                        for t, r in (
                            ("Accepted", "SupportedByParent"),
                            ("ResolvedRefs", "ResolvedRefs"),
                        )
                    ],
                }
            ]
        }
    }
    patched = admin.merge_patch(POOLS, ns, "chat", status, sub="status")
    assert [c["type"] for c in patched["status"]["parents"][0]["conditions"]] == [
        "Accepted",
        "ResolvedRefs",
    ]


def test_what_v1_refuses_is_refused(admin: Admin, ns: str, pool_api: None) -> None:
    body = rendered({}, ns)
    for spec, message in (
        ({**body["spec"], "endpointPickerRef": {"name": "epp"}}, "port is required"),
        ({**body["spec"], "targetPorts": [{"number": 9000}, {"number": 9000}]}, "unique"),
        ({**body["spec"], "appProtocol": "grpc"}, "appProtocol"),
    ):
        proc = admin.kubectl(
            "create", "-f", "-", input=json.dumps({**body, "spec": spec}), check=False
        )
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
