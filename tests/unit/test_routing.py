"""Covers routing and scale-to-zero: the InferencePool renderer (the real API server takes what
it renders: tests/cluster/test_routing_api.py), the llm-d engine-type label, the router-queue KEDA
trigger, their validation, and the InferencePoolReady condition and Idle phase of a pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatmodel_operator.adapters import kube
from chatmodel_operator.api import parse_spec
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.context import Context
from chatmodel_operator.errors import SpecErrors
from chatmodel_operator.plan import plan_spec
from chatmodel_operator.reconcile import _Pass, _Serving
from chatmodel_operator.render import render_children
from chatmodel_operator.render.routing import (
    ENGINE_TYPE_LABEL,
    ParentState,
    parent_states,
    pool_readiness,
    render_inference_pool,
)
from chatmodel_operator.signals import ROUTER_QUEUE_METRIC, router_queue_query

REPO = Path(__file__).resolve().parents[2]
REPOSITORY: dict[Any, str] = {}
YI = "hf://01-ai/Yi-34B-Chat"


def spec_of(**sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"source": YI}, "resources": {"gpu": {"memoryGiB": 80}}}
    spec.update(sections)
    return spec


def serving_objects(spec_dict: dict[str, Any], name: str = "m") -> dict[str, dict[str, Any]]:
    spec = parse_spec(spec_dict)
    plan = plan_spec(spec, resolve_model(spec.model))
    children = render_children(
        name=name, namespace="ns", uid="u", spec=spec, plan=plan, repository=REPOSITORY
    )
    return {o["kind"]: o for o in children.serving}


# --- the InferencePool ----------------------------------------------------------------------


def test_pool_selects_exactly_this_chatmodels_serving_pods_on_the_openai_port() -> None:
    objs = serving_objects(spec_of(routing={"inferencePool": {}}))
    pool, dep = objs["InferencePool"], objs["Deployment"]
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["metadata"]["name"] == "m" and pool["metadata"]["namespace"] == "ns"
    assert pool["metadata"]["ownerReferences"][0]["uid"] == "u"
    selector = pool["spec"]["selector"]["matchLabels"]
    # The Deployment's own selector: every serving pod, across engine switches.
    assert selector == dep["spec"]["selector"]["matchLabels"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    # Never the build pods, nor another ChatModel's pods.
    build_labels = render_children(
        name="m",
        namespace="ns",
        uid="u",
        spec=parse_spec(spec_of(routing={"inferencePool": {}})),
        plan=plan_spec(parse_spec(spec_of()), resolve_model(parse_spec(spec_of()).model)),
        repository=REPOSITORY,
    ).build_job["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= build_labels.items()
    other = serving_objects(spec_of(routing={"inferencePool": {}}), name="other")["Deployment"]
    assert not selector.items() <= other["spec"]["template"]["metadata"]["labels"].items()
    # The OpenAI port, over HTTP/1.1; the container listens there.
    assert pool["spec"]["targetPorts"] == [{"number": 9000}]
    assert pool["spec"]["appProtocol"] == "http"
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "openai", "containerPort": 9000, "protocol": "TCP"} in ports
    assert "endpointPickerRef" not in pool["spec"]


def test_pool_follows_the_openai_port_and_names_the_picker() -> None:
    picker = {"name": "llm-d-router-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}
    objs = serving_objects(
        spec_of(
            serving={"openaiPort": 9100},
            routing={"inferencePool": {"endpointPickerRef": picker}},
        )
    )
    pool = objs["InferencePool"]
    assert pool["spec"]["targetPorts"] == [{"number": 9100}]
    assert pool["spec"]["endpointPickerRef"] == {
        "group": "",
        "kind": "Service",
        "name": "llm-d-router-epp",
        "port": {"number": 9002},
        "failureMode": "FailOpen",
    }
    custom = spec_of(
        routing={"inferencePool": {"endpointPickerRef": {"name": "p", "kind": "Picker"}}}
    )
    pool = serving_objects(custom)["InferencePool"]
    assert pool["spec"]["endpointPickerRef"]["failureMode"] == "FailClose"  # the v1 default
    assert "port" not in pool["spec"]["endpointPickerRef"]


def test_no_pool_unless_asked() -> None:
    assert "InferencePool" not in serving_objects(spec_of())
    with pytest.raises(ValueError, match="inferencePool"):
        render_inference_pool(name="m", namespace="ns", spec=parse_spec(spec_of()), owner=None)


# --- what the pods promise the router -------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "route", "engine_type"),
    [
        pytest.param({"mode": "engine"}, "tensorrt-llm/engine", "triton-tensorrt-llm", id="trt"),
        pytest.param({"mode": "llmapi"}, "tensorrt-llm/llmapi", "triton-tensorrt-llm", id="llmapi"),
        pytest.param({"backend": "python"}, "python", "triton-tensorrt-llm", id="python"),
        pytest.param({"backend": "vllm"}, "vllm", "vllm", id="vllm"),
    ],
)
def test_every_serving_pod_carries_the_routers_engine_type(
    engine: dict[str, Any], route: str, engine_type: str
) -> None:
    spec = parse_spec(spec_of(engine=engine))
    plan = plan_spec(spec, resolve_model(spec.model))
    assert plan.route == route
    dep = serving_objects(spec_of(engine=engine))["Deployment"]
    assert dep["spec"]["template"]["metadata"]["labels"][ENGINE_TYPE_LABEL] == engine_type
    # Not in the selector: the Deployment's selector is immutable and stays as it was.
    assert ENGINE_TYPE_LABEL not in dep["spec"]["selector"]["matchLabels"]


# --- autoscaling through the router, down to zero -------------------------------------------

TO_ZERO = {
    "enabled": True,
    "engine": "keda",
    "minReplicas": 0,
    "maxReplicas": 3,
    "cooldownSeconds": 120,
}


def test_scale_to_zero_wakes_on_the_routers_queue_and_never_reads_an_absent_series() -> None:
    objs = serving_objects(spec_of(autoscaling=TO_ZERO, routing={"inferencePool": {}}))
    so = objs["ScaledObject"]["spec"]
    assert so["minReplicaCount"] == 0 and so["maxReplicaCount"] == 3
    assert so["cooldownPeriod"] == 120
    triton, router = so["triggers"]
    assert triton["metadata"]["query"].endswith(" or vector(0)")
    assert router["type"] == "prometheus" and router["metricType"] == "AverageValue"
    query = router["metadata"]["query"]
    assert query == f'sum({ROUTER_QUEUE_METRIC}{{inference_pool="m"}}) or vector(0)'
    assert query == router_queue_query(objs["InferencePool"]["metadata"]["name"])
    assert router["metadata"]["activationThreshold"] == "0"
    assert router["metadata"]["threshold"] == "1"
    assert router["metadata"]["serverAddress"] == triton["metadata"]["serverAddress"]
    assert "replicas" not in objs["Deployment"]["spec"]  # KEDA owns them, zero included


def test_router_trigger_without_scale_to_zero_keeps_the_old_query() -> None:
    scaling = {"enabled": True, "engine": "keda"}
    with_pool = serving_objects(spec_of(autoscaling=scaling, routing={"inferencePool": {}}))
    so = with_pool["ScaledObject"]["spec"]
    assert so["minReplicaCount"] == 1 and "cooldownPeriod" not in so
    assert not so["triggers"][0]["metadata"]["query"].endswith("vector(0)")
    assert len(so["triggers"]) == 2
    plain = serving_objects(spec_of(autoscaling=scaling))["ScaledObject"]["spec"]
    assert len(plain["triggers"]) == 1


BAD = [
    pytest.param(
        spec_of(autoscaling={**TO_ZERO, "engine": "hpa"}, routing={"inferencePool": {}}),
        "spec.autoscaling.minReplicas",
        "set engine to keda",
        id="zero-with-hpa",
    ),
    pytest.param(
        spec_of(autoscaling=TO_ZERO),
        "spec.autoscaling.minReplicas",
        "add routing.inferencePool",
        id="zero-without-router",
    ),
    pytest.param(
        spec_of(routing={"inferencePool": {"endpointPickerRef": {"name": "epp"}}}),
        "spec.routing.inferencePool.endpointPickerRef.port",
        "set port.number",
        id="service-picker-without-port",
    ),
    pytest.param(
        spec_of(serving={"openai": "Disabled"}, routing={"inferencePool": {}}),
        "spec.routing.inferencePool",
        "set serving.openai to Auto or Enabled",
        id="pool-without-openai",
    ),
    pytest.param(
        spec_of(
            routing={"inferencePool": {"endpointPickerRef": {"name": "e", "failureMode": "Open"}}}
        ),
        "spec.routing.inferencePool.endpointPickerRef.failureMode",
        "FailOpen",
        id="failure-mode",
    ),
    pytest.param(
        spec_of(autoscaling={**TO_ZERO, "cooldownSeconds": -1}, routing={"inferencePool": {}}),
        "spec.autoscaling.cooldownSeconds",
        "raise it",
        id="negative-cooldown",
    ),
]


@pytest.mark.parametrize(("spec", "field", "fix"), BAD)
def test_bad_routing_and_scaling_name_the_field_and_the_fix(
    spec: dict[str, Any], field: str, fix: str
) -> None:
    with pytest.raises(SpecErrors) as info:
        parse_spec(spec)
    errors = {e.field: e for e in info.value.errors}
    assert field in errors, errors
    assert fix in str(errors[field])


def test_scale_to_zero_with_keda_and_a_pool_is_valid_everywhere() -> None:
    spec = spec_of(autoscaling=TO_ZERO, routing={"inferencePool": {}})
    # The API server's side: tests/cluster/test_crd_validation.py.
    assert parse_spec(spec).autoscaling.min_replicas == 0


# --- the pool's status, summarised ----------------------------------------------------------


def parent(name: str, *conds: tuple[str, str, str, str]) -> dict[str, Any]:
    return {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name},
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": "x"}
            for t, s, r, m in conds
        ],
    }


OK = ("Accepted", "True", "SupportedByParent", ""), ("ResolvedRefs", "True", "ResolvedRefs", "")


@pytest.mark.parametrize(
    ("parents", "status", "reason", "says"),
    [
        pytest.param([], "Unknown", "NoGateway", "HTTPRoute backendRef", id="no-gateway"),
        pytest.param([parent("gw", *OK)], "True", "Accepted", "by gw", id="accepted"),
        pytest.param(
            [parent("gw", *OK), parent("gw2", OK[0])],
            "Unknown",
            "Pending",
            "gw2: ResolvedRefs not reported",
            id="one-gateway-pending",
        ),
        pytest.param(
            [parent("gw", ("Accepted", "False", "NotSupportedByParent", "no pools here"), OK[1])],
            "False",
            "NotSupportedByParent",
            "no pools here",
            id="not-supported",
        ),
        pytest.param(
            [
                parent("gw", *OK),
                parent("gw2", OK[0], ("ResolvedRefs", "False", "InvalidExtensionRef", "")),
            ],
            "False",
            "InvalidExtensionRef",
            "endpointPickerRef",
            id="bad-picker",
        ),
    ],
)
def test_pool_readiness(parents: list[Any], status: str, reason: str, says: str) -> None:
    body = {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {"name": "m", "namespace": "ns", "uid": "p1", "resourceVersion": "3"},
        "status": {"parents": parents},
    }
    obs = kube.summarize(body)
    assert obs.pool == parent_states(body["status"])
    r = pool_readiness("m", obs.pool or ())
    assert (r.status, r.reason) == (status, reason)
    assert says in r.message


def test_a_gateways_verdict_is_worth_a_pass() -> None:
    body = {"kind": "InferencePool", "metadata": {"name": "m", "namespace": "ns", "uid": "p"}}
    before = kube.summarize(body)
    after = kube.summarize({**body, "status": {"parents": [parent("gw", *OK)]}})
    assert before.digest != after.digest
    assert after.pool == (ParentState("gw", tuple((*c,) for c in OK)),)


# --- a pass: InferencePoolReady and the Idle phase ------------------------------------------


def a_pass(spec_dict: dict[str, Any], served: set[kube.Kind]) -> _Pass:
    ctx = Context(client=None, children=None, served=served)  # type: ignore[arg-type]
    body = {
        "apiVersion": "serving.chatmodel.io/v1alpha1",
        "kind": "ChatModel",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 2},
        "spec": spec_dict,
    }
    p = _Pass(body, ctx, "timer")
    p.spec = parse_spec(spec_dict)
    return p


def test_pool_condition_says_why_there_is_no_pool_or_what_the_gateways_say() -> None:
    spec_dict = spec_of(routing={"inferencePool": {}})
    spec = parse_spec(spec_dict)
    plan = plan_spec(spec, resolve_model(spec.model))
    assert plan.openai_frontend

    missing = a_pass(spec_dict, served=set())
    missing._inference_pool(spec, plan, {})
    cond = missing.conds.new["InferencePoolReady"]
    assert (cond["status"], cond["reason"]) == ("False", "InferencePoolAPIMissing")
    assert "rbac.inferencePools" in cond["message"] and "CRDs" in cond["message"]
    # Told once as a Warning Event, when it first says so (the condition's own reason).
    assert [e["reason"] for e in missing._new_errors()] == ["InferencePoolAPIMissing"]

    served = a_pass(spec_dict, served={kube.INFERENCE_POOL})
    pool = kube.summarize(
        {
            "kind": "InferencePool",
            "metadata": {"name": "m", "namespace": "ns", "uid": "p"},
            "status": {"parents": [parent("gw", *OK)]},
        }
    )
    served._inference_pool(spec, plan, {"InferencePool": pool})
    cond = served.conds.new["InferencePoolReady"]
    assert (cond["status"], cond["reason"]) == ("True", "Accepted")
    assert [c["type"] for c in served.conds.as_list()] == ["InferencePoolReady"]

    old_image = spec_of(
        routing={"inferencePool": {}},
        engine={"image": "nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3"},
    )
    spec = parse_spec(old_image)
    plan = plan_spec(spec, resolve_model(spec.model))
    plain = a_pass(old_image, served={kube.INFERENCE_POOL})
    plain._inference_pool(spec, plan, {})
    cond = plain.conds.new["InferencePoolReady"]
    assert (cond["status"], cond["reason"]) == ("False", "NoOpenAIFrontend")

    without = a_pass(spec_of(), served={kube.INFERENCE_POOL})
    without._inference_pool(parse_spec(spec_of()), plan, {})
    assert "InferencePoolReady" not in without.conds.new


def test_zero_replicas_by_the_autoscaler_is_idle_and_ready_to_wake() -> None:
    p = a_pass(spec_of(autoscaling=TO_ZERO, routing={"inferencePool": {}}), set())
    zero = _Serving(exists=True, desired=0)
    assert p._phase(zero, engine_ready=True, build_error=None) == "Idle"
    p._available(zero)
    available = p.conds.new["Available"]
    assert (available["status"], available["reason"]) == ("True", "ScaledToZero")
    # Scaling down to zero, with pods still leaving, is not idle yet.
    leaving = _Serving(exists=True, desired=0, replicas=1, rolling=True)
    assert p._phase(leaving, engine_ready=True, build_error=None) == "Deploying"
    # One replica of one wanted is Ready as before.
    one = _Serving(exists=True, desired=1, replicas=1, ready=1, available=1)
    assert p._phase(one, engine_ready=True, build_error=None) == "Ready"
    # Zero replicas asked by hand (no scale to zero) is not Idle.
    manual = a_pass(spec_of(serving={"replicas": 0}), set())
    assert manual._phase(zero, engine_ready=True, build_error=None) == "Ready"
