"""Covers what goes wrong, against the emulated cluster with the real kopf operator: failed
builds and their retries, invalid and infeasible specs (fuzzed too), API errors and timeouts,
an operator restarted mid-build, dropped watches, and secrets that must not leak."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import threading
from typing import Any

import pytest
from emulator import ApiServer, Controllers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lifecycle import names, operator_writes, ready, update_spec

from chatmodel_operator.errors import UnknownModel
from chatmodel_operator.reconcile import Settings
from conftest import (
    CM,
    NS,
    SMALL_SPEC,
    Operator,
    chatmodel,
    condition,
    events_for,
    phase_of,
    status_of,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.asyncio]

PHASES = {"Pending", "Planning", "BuildingEngine", "Deploying", "Ready", "Degraded", "Failed"}


def child_writes(api: ApiServer, since: int = 0) -> list[Any]:
    return [
        c
        for c in operator_writes(api, since)
        if c.plural not in ("events",) and c.resource != "chatmodels/status"
    ]


# --- engine builds -------------------------------------------------------------------------


@pytest.mark.operator_config(
    settings=Settings(
        build_backoff_s=1.0, build_backoff_max_s=1.5, retry_delay_s=0.5, status_settle_s=0.3
    )
)
async def test_failed_build_is_retried_with_backoff_then_fails_and_recovers(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    controllers.job_outcome = "fail"
    controllers.job_failure = (
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))

    await wait_for(lambda: condition(api, "xverse", "EngineBuildFailed").get("status") == "True")
    cond = condition(api, "xverse", "EngineBuildFailed")
    assert cond["reason"] == "BackoffLimitExceeded"
    assert re.search(
        r"attempt 1 of 3 failed: BackoffLimitExceeded: Job has reached the specified backoff limit; "
        r"retrying after 1s",
        cond["message"],
    )
    assert phase_of(api, "xverse") == "BuildingEngine"  # still trying

    await wait_for(lambda: phase_of(api, "xverse") == "Failed", 20)
    key = status_of(api, "xverse")["engine"]["key"]
    job = f"chatmodel-build-{key}"
    creates = [c for c in api.calls if c.plural == "jobs" and c.verb == "create"]
    deletes = [c for c in api.calls if c.plural == "jobs" and c.verb == "delete"]
    assert [c.name for c in creates] == [job] * 3 and len(deletes) == 2
    assert [
        c.body["metadata"]["annotations"]["serving.chatmodel.io/build-attempt"] for c in creates
    ] == ["1", "2", "3"]
    final = condition(api, "xverse", "EngineBuildFailed")
    assert "failed 3 times" in final["message"] and "fix:" in final["message"]
    assert condition(api, "xverse", "Ready")["status"] == "False"
    assert status_of(api, "xverse")["engine"]["attempts"] == 3
    await wait_for(
        lambda: sum(e["reason"] == "BackoffLimitExceeded" for e in events_for(api, "xverse")) >= 3
    )
    assert all(
        e["type"] == "Warning"
        for e in events_for(api, "xverse")
        if e["reason"] == "BackoffLimitExceeded"
    )

    # The cause is fixed and the failed Job deleted, as the message says: it builds again.
    controllers.job_outcome = "complete"
    api.remove("batch", "v1", "jobs", NS, job)
    await ready(api, "xverse")
    assert condition(api, "xverse", "EngineBuildFailed")["status"] == "False"


async def test_operator_restarted_mid_build_picks_up_the_existing_job(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    controllers.job_outcome = "hold"
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await wait_for(lambda: phase_of(api, "xverse") == "BuildingEngine")
    job = f"chatmodel-build-{status_of(api, 'xverse')['engine']['key']}"

    await operator.stop()
    await operator.start(api)
    await asyncio.sleep(0.5)
    assert [c.name for c in api.calls if c.plural == "jobs" and c.verb == "create"] == [job]
    assert phase_of(api, "xverse") == "BuildingEngine"

    controllers.finish_job(NS, job, "complete")  # seen by the new operator's watch
    await ready(api, "xverse")
    assert [c.name for c in api.calls if c.plural == "jobs" and c.verb == "create"] == [job]


# --- invalid and infeasible specs ----------------------------------------------------------

INVALID = [
    pytest.param(
        {**SMALL_SPEC, "serving": {"replicaz": 2}},
        "Validated",
        "spec.serving.replicaz",
        "remove it",
        id="unknown-field",
    ),
    pytest.param(
        {**SMALL_SPEC, "engine": {"backend": "tensorrt"}},
        "Validated",
        "spec.engine.backend",
        "use one of",
        id="bad-enum",
    ),
    pytest.param(
        {**SMALL_SPEC, "serving": {"replicas": -1}},
        "Validated",
        "spec.serving.replicas",
        "raise it",
        id="out-of-range",
    ),
    pytest.param(
        {"resources": SMALL_SPEC["resources"]},
        "Validated",
        "spec.model",
        "add it",
        id="missing-model",
    ),
    pytest.param(
        {
            "model": {"source": "hf://Tele-AI/TeleChat-52B", "trustRemoteCode": True},
            "resources": {"gpu": {"product": "NVIDIA-L4", "count": 1}},
        },
        "Planned",
        "x 24 GiB",
        "would fit",
        id="does-not-fit",
    ),
    pytest.param(
        {
            "model": {"source": "hf://xverse/XVERSE-7B-Chat"},
            "engine": {"backend": "tensorrt-llm", "mode": "llmapi"},
            "resources": SMALL_SPEC["resources"],
        },
        "Planned",
        "spec.engine.backend",
        "fix: set engine.backend to auto",
        id="unsupported-backend",
    ),
]


@pytest.mark.parametrize(("spec", "condition_type", "field", "fix"), INVALID)
async def test_invalid_spec_fails_with_field_and_fix_and_touches_nothing_then_recovers(
    api: ApiServer,
    controllers: Controllers,
    operator: Operator,
    spec: dict[str, Any],
    condition_type: str,
    field: str,
    fix: str,
) -> None:
    api.put(*CM, chatmodel("bad", spec))
    await wait_for(lambda: phase_of(api, "bad") == "Failed")
    cond = condition(api, "bad", condition_type)
    assert cond["status"] == "False"
    assert field in cond["message"] and fix in cond["message"], cond["message"]
    ready_cond = condition(api, "bad", "Ready")
    assert ready_cond["status"] == "False" and ready_cond["message"] == cond["message"]
    assert status_of(api, "bad")["observedGeneration"] == 1
    await wait_for(lambda: events_for(api, "bad"))
    (event,) = events_for(api, "bad")
    assert event["type"] == "Warning" and field in event["message"]
    assert child_writes(api) == []  # creates nothing, deletes nothing

    update_spec(api, "bad", SMALL_SPEC)  # fixed: recovers, no restart
    await ready(api, "bad")
    assert status_of(api, "bad")["observedGeneration"] == 2
    assert condition(api, "bad", condition_type)["status"] == "True"


async def test_a_serving_model_made_invalid_keeps_serving_untouched(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await ready(api, "xverse")
    before = len(api.calls)
    update_spec(api, "xverse", {**SMALL_SPEC, "engine": {"dtype": "float64"}})
    await wait_for(lambda: phase_of(api, "xverse") == "Failed")
    assert child_writes(api, before) == []
    st = status_of(api, "xverse")
    assert condition(api, "xverse", "Available")["status"] == "True"  # old pods still serve
    assert st["readyReplicas"] == 2 and st["endpoint"]
    assert names(api, "deployments") == {"xverse-triton"}


async def test_a_name_too_long_for_its_children_is_refused(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    name = "a" * 60
    api.put(*CM, chatmodel(name, SMALL_SPEC))
    await wait_for(lambda: phase_of(api, name) == "Failed")
    assert "metadata.name" in condition(api, name, "Validated")["message"]
    assert child_writes(api) == []


# A spec is a mapping of the known sections with values drawn from plausible and implausible
# shapes alike: right types, wrong types, unknown keys, nesting where none belongs.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "auto",
            "none",
            "fp8",
            "int4-awq",
            "vllm",
            "tensorrt-llm",
            "python",
            "bfloat16",
            "hf://xverse/XVERSE-7B-Chat",
            "hf://SUSTech/SUS-Chat-34B",
            "NVIDIA-L4",
            "NVIDIA-A100-SXM4-80GB",
            "Delete",
            "keda",
            "",
            "ЖЖ",
        ]
    ),
    st.text(max_size=12),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_section_keys = {
    "model": ["source", "family", "chatTemplate", "credentialsSecret", "trustRemoteCode", "junk"],
    "engine": [
        "backend",
        "mode",
        "dtype",
        "quantization",
        "kvCacheDtype",
        "maxInputLength",
        "maxOutputLength",
        "maxBatchSize",
        "tensorParallelism",
        "image",
    ],
    "resources": ["gpu"],
    "serving": ["replicas", "streaming", "httpPort", "serviceMonitor", "serviceType"],
    "autoscaling": ["enabled", "engine", "minReplicas", "maxReplicas", "metric", "target"],
    "cache": ["size", "deletePolicy", "accessMode", "storageClassName"],
}
_gpu = st.fixed_dictionaries(
    {}, optional={"product": _scalars, "memoryGiB": _scalars, "count": _scalars}
)
SPECS = st.one_of(
    st.fixed_dictionaries(
        {
            "model": st.fixed_dictionaries(
                {
                    "source": st.sampled_from(
                        ["hf://xverse/XVERSE-7B-Chat", "hf://01-ai/Yi-34B-Chat-4bits"]
                    )
                },
                optional={k: _values for k in _section_keys["model"][1:]},
            )
        },
        optional={
            **{
                sec: st.fixed_dictionaries({}, optional={k: _values for k in keys})
                for sec, keys in _section_keys.items()
                if sec not in ("model", "resources")
            },
            "resources": st.fixed_dictionaries({}, optional={"gpu": _gpu | _values}),
            "bogus": _values,
        },
    ),
    _values,
)


async def test_fuzzed_specs_always_get_a_status_never_a_crash(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    counter = iter(range(10_000))

    async def one(spec: Any) -> None:
        name = f"fuzz-{next(counter)}"
        seen.append(name)
        api.put(*CM, chatmodel(name, spec))
        await wait_for(lambda: status_of(api, name).get("observedGeneration") == 1, 10)
        st_ = status_of(api, name)
        assert st_["phase"] in PHASES
        conds = {c["type"]: c for c in st_["conditions"]}
        if st_["phase"] == "Failed":
            bad = [
                c
                for c in conds.values()
                if c["status"] == "False" and c["type"] in ("Validated", "Planned")
            ]
            assert bad and "fix" in bad[0]["message"].lower(), st_
            if conds["Validated"]["status"] == "False":
                assert not [c for c in child_writes(api) if c.name and name in c.name]
        api.remove(*CM, NS, name)

    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(SPECS)
    def check(spec: Any) -> None:
        asyncio.run_coroutine_threadsafe(one(spec), loop).result(30)

    await asyncio.to_thread(check)
    assert len(seen) >= 40
    assert operator.error is None


# --- the API server misbehaves -------------------------------------------------------------


async def test_conflicts_server_errors_and_timeouts_are_retried(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.faults.add("patch", "deployments", status=409, times=2)
    api.faults.add("patch", "chatmodels", subresource="status", status=500, times=2)
    api.faults.add("create", "jobs", status=503, times=1)
    api.faults.add("patch", "services", status=429, times=1)
    timeout = api.faults.add(
        "patch", "configmaps", delay=2.5
    )  # longer than the client's 2 s timeout
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await ready(api, "xverse", 30)
    assert all(f.times == 0 for f in api.faults.items)
    statuses = [
        (c.verb, c.resource, c.status) for c in api.calls if c.status in (409, 429, 500, 503)
    ]
    assert ("patch", "deployments", 409) in statuses and ("create", "jobs", 503) in statuses
    assert timeout.hits == 1 and names(api, "configmaps")  # the client gave up, then tried again
    assert operator.ctx.client.stats.retries >= 6


async def test_an_api_server_down_for_longer_than_the_retries_is_waited_out(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    # The first pass (kopf's create handler) creates the build Job: it outlasts the client's
    # retries, and the TemporaryError hands the pass back to kopf, which retries it later.
    api.faults.add("create", "jobs", status=503, times=12)
    api.put(*CM, chatmodel("xverse", SMALL_SPEC))
    await ready(api, "xverse", 30)
    assert all(f.times == 0 for f in api.faults.items)


@pytest.mark.crds()  # no ServiceMonitor API in this cluster
async def test_a_missing_optional_api_is_reported_not_fatal(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(
        *CM, chatmodel("xverse", {**SMALL_SPEC, "serving": {"replicas": 1, "serviceMonitor": True}})
    )
    await ready(api, "xverse")
    await wait_for(lambda: any(e["reason"] == "MissingCRD" for e in events_for(api, "xverse")))
    assert not [c for c in api.calls if c.plural == "servicemonitors"]


async def test_dropped_watches_are_resumed(
    api: ApiServer, controllers: Controllers, operator: Operator
) -> None:
    api.put(*CM, chatmodel("first", SMALL_SPEC))
    await ready(api, "first")
    watches = sum(1 for c in api.calls if c.verb == "watch" and c.plural == "chatmodels")
    api.drop_watches()
    await wait_for(
        lambda: (
            sum(1 for c in api.calls if c.verb == "watch" and c.plural == "chatmodels") > watches
        ),
        15,
    )
    api.put(*CM, chatmodel("second", {**SMALL_SPEC, "serving": {"replicas": 1}}))
    await ready(api, "second")


# --- secrets -------------------------------------------------------------------------------

TOKEN = "hf_SuperSecretHubToken0123456789abcd"


@pytest.mark.operator_config(
    model_files=lambda source: (_ for _ in ()).throw(
        UnknownModel(
            f"spec.model.source: {source}: 401 for https://huggingface.co/api?token={TOKEN}; fix: check the token"
        )
    )
)
async def test_hub_tokens_never_reach_status_events_configmaps_or_logs(
    api: ApiServer,
    controllers: Controllers,
    operator: Operator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    api.put(
        "",
        "v1",
        "secrets",
        {"metadata": {"name": "hub", "namespace": NS}, "stringData": {"HF_TOKEN": TOKEN}},
    )
    gated = {
        "model": {"source": "hf://acme/gated-chat", "credentialsSecret": "hub", "family": "llama"},
        "resources": SMALL_SPEC["resources"],
    }
    api.put(*CM, chatmodel("gated", gated))
    await wait_for(lambda: phase_of(api, "gated") == "Failed")
    message = condition(api, "gated", "Planned")["message"]
    assert "401" in message and TOKEN not in message and "***" in message

    with_secret = copy.deepcopy(SMALL_SPEC)
    with_secret["model"]["source"] = "hf://xverse/XVERSE-7B-Chat@main"  # the catalog's, no hub read
    with_secret["model"]["credentialsSecret"] = "hub"
    api.put(*CM, chatmodel("xverse", with_secret))
    await ready(api, "xverse")
    await asyncio.sleep(0.2)

    written = [c for c in api.calls if c.user_agent.startswith("chatmodel-operator") and c.is_write]
    assert written
    for c in written:
        assert TOKEN not in json.dumps(c.body) + json.dumps(c.result), (c.verb, c.resource)
    assert not [
        c
        for c in api.calls
        if c.plural == "secrets" and c.user_agent.startswith(("chatmodel", "kopf"))
    ]
    job = next(c.body for c in written if c.plural == "jobs")
    envs = [
        e
        for ct in job["spec"]["template"]["spec"].get("initContainers", [])
        for e in ct.get("env", [])
    ]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hub", "key": "HF_TOKEN"}},
    } in envs
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert threading.current_thread() is threading.main_thread()
