"""The ChatModel CRD on the real API server agrees with the pydantic validation: each spec is
accepted by both or refused by both (schema and CEL rules, a server-side dry run), valid specs
are still accepted with every default filled in, and the cross-field mistakes of routing and
scale to zero are refused by the server with the same fix the operator gives."""

from __future__ import annotations

from typing import Any

import pytest
from tests.cluster.admin import CM, Admin
from tests.unit.test_routing import BAD, TO_ZERO, spec_of

from chatmodel_operator.api import parse_spec
from chatmodel_operator.api.spec import API_VERSION, KIND
from chatmodel_operator.errors import SpecErrors


def refusal(admin: Admin, spec: dict[str, Any]) -> str | None:
    """None when the API server would store a ChatModel with this spec, else its message."""
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "m"}, "spec": spec}
    refused = admin.dry_run_create(CM, "default", body)
    if refused is None:
        return None
    status, message = refused
    assert status in (400, 422), message  # 400: strict decoding, 422: the schema
    return message


def pydantic_ok(spec: dict[str, Any]) -> bool:
    try:
        parse_spec(spec)
    except SpecErrors:
        return False
    return True


BASE = {"model": {"source": "hf://01-ai/Yi-34B-Chat"}}
CASES = [
    pytest.param({**BASE}, True, id="minimal"),
    pytest.param({**BASE, "engine": {"tensorParallelism": 4}}, True, id="tp-4"),
    pytest.param({**BASE, "engine": {"tensorParallelism": "auto"}}, True, id="tp-auto"),
    pytest.param({**BASE, "engine": {"tensorParallelism": 3}}, False, id="tp-3"),
    pytest.param({**BASE, "engine": {"tensorParallelism": "max"}}, False, id="tp-max"),
    pytest.param(
        {**BASE, "resources": {"gpu": {"count": 2}}, "engine": {"tensorParallelism": 2}},
        True,
        id="count-eq-tp",
    ),
    pytest.param(
        {**BASE, "resources": {"gpu": {"count": 2}}, "engine": {"tensorParallelism": 4}},
        False,
        id="count-ne-tp",
    ),
    pytest.param(
        {**BASE, "resources": {"gpu": {"count": "auto"}}, "engine": {"tensorParallelism": 4}},
        True,
        id="count-auto",
    ),
    pytest.param(
        {**BASE, "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, False, id="min-gt-max"
    ),
    pytest.param(
        {**BASE, "autoscaling": {"minReplicas": 2, "maxReplicas": 2}}, True, id="min-eq-max"
    ),
    pytest.param(
        {"model": {"source": "s3://bucket/m", "credentialsSecret": "x"}}, False, id="secret-s3"
    ),
    pytest.param({"model": {"source": "hf://a/b", "credentialsSecret": "x"}}, True, id="secret-hf"),
    pytest.param(
        {**BASE, "engine": {"backend": "vllm", "mode": "llmapi"}}, False, id="llmapi-vllm"
    ),
    pytest.param(
        {**BASE, "engine": {"backend": "tensorrt-llm", "mode": "llmapi"}}, True, id="llmapi-trt"
    ),
    pytest.param({**BASE, "serving": {"openaiPort": 8000}}, False, id="openai-on-http-default"),
    pytest.param({**BASE, "serving": {"httpPort": 9000}}, False, id="http-on-openai-default"),
    pytest.param(
        {**BASE, "serving": {"openaiPort": 8002, "metricsPort": 8003}}, True, id="ports-moved"
    ),
    pytest.param({**BASE, "serving": {"grpcPort": 8002}}, False, id="grpc-on-metrics-default"),
    pytest.param({**BASE, "serving": {"openai": "Disabled"}}, True, id="openai-disabled"),
    pytest.param(
        {**BASE, "serving": {"securityContext": {"runAsUser": 0}}}, False, id="root-restricted"
    ),
    pytest.param(
        {**BASE, "serving": {"securityContext": {"runAsUser": 0, "podSecurityLevel": "baseline"}}},
        True,
        id="root-baseline",
    ),
    pytest.param(
        {**BASE, "serving": {"securityContext": {"runAsUser": 1001, "runAsGroup": 0}}},
        True,
        id="custom-uid",
    ),
    pytest.param({"model": {"source": "file:///m"}}, True, id="file-no-level"),
]
CASES += [
    pytest.param(
        {
            "model": {"source": "file:///m"},
            "serving": {"securityContext": {"podSecurityLevel": lvl}},
        },
        lvl == "privileged",
        id=f"file-{lvl}",
    )
    for lvl in ("restricted", "baseline", "privileged")
]


@pytest.mark.parametrize(("spec", "valid"), CASES)
def test_the_api_server_and_pydantic_agree(admin: Admin, spec: dict[str, Any], valid: bool) -> None:
    assert pydantic_ok(spec) is valid
    # The server sees the enum and range checks as well as the CEL rules.
    assert (refusal(admin, spec) is None) is valid, refusal(admin, spec)
    if valid:  # and again with every default filled in
        defaulted = parse_spec(spec).model_dump(by_alias=True, exclude_none=True)
        assert refusal(admin, defaulted) is None


@pytest.mark.parametrize(("spec", "field", "fix"), BAD[:4])
def test_the_api_server_refuses_the_same_cross_field_mistakes(
    admin: Admin, spec: dict[str, Any], field: str, fix: str
) -> None:
    message = refusal(admin, spec)
    assert message is not None and fix in message, message


def test_scale_to_zero_with_keda_and_a_pool_is_accepted(admin: Admin) -> None:
    assert refusal(admin, spec_of(autoscaling=TO_ZERO, routing={"inferencePool": {}})) is None
    picker = {"name": "e", "kind": "Picker", "group": "example.com"}
    assert refusal(admin, spec_of(routing={"inferencePool": {"endpointPickerRef": picker}})) is None


def test_an_unknown_field_is_refused_with_its_path(admin: Admin) -> None:
    # kubectl and the operator's own dry runs ask for strict field validation.
    message = refusal(admin, {"model": {"source": "hf://a/b"}, "engine": {"bogus": 1}})
    assert message is not None and 'unknown field "spec.engine.bogus"' in message, message
