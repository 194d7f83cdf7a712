"""Covers the operator's small pure parts: child summaries, desired-state hashes, conditions,
token redaction, retry delays, the declared API uses and the `chatmodel operator` options."""

from __future__ import annotations

import pytest

from chatmodel_operator import rbac
from chatmodel_operator.adapters import kube
from chatmodel_operator.cli import build_parser
from chatmodel_operator.conditions import Conditions, reason_of, redact

JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "name": "chatmodel-build-abc",
        "namespace": "ns",
        "uid": "u1",
        "resourceVersion": "7",
        "labels": {"serving.chatmodel.io/engine-key": "abc"},
        "annotations": {"serving.chatmodel.io/build-attempt": "2"},
    },
    "status": {
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
        ]
    },
}


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        pytest.param(
            JOB,
            {"failed": True, "complete": False, "reason": "BackoffLimitExceeded"},
            id="failed-job",
        ),
        pytest.param(
            {**JOB, "status": {"active": 1}}, {"failed": False, "active": 1}, id="running-job"
        ),
        pytest.param(
            {**JOB, "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
            {"complete": True},
            id="done-job",
        ),
    ],
)
def test_job_summaries(body: dict, expect: dict) -> None:
    obs = kube.summarize(body)
    assert obs.job is not None and obs.engine_key == "abc" and obs.attempt == 2
    for k, v in expect.items():
        assert getattr(obs.job, k) == v


def test_job_progress_is_not_worth_a_pass_but_its_outcome_is() -> None:
    running = kube.summarize({**JOB, "status": {"active": 1}})
    busier = kube.summarize({**JOB, "status": {"active": 2, "startTime": "x"}})
    done = kube.summarize(
        {**JOB, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    )
    assert running.digest == busier.digest != done.digest


def test_deployment_summary() -> None:
    dep = {
        "kind": "Deployment",
        "metadata": {
            "name": "m-triton",
            "namespace": "ns",
            "generation": 3,
            "labels": {"app.kubernetes.io/instance": "m"},
        },
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"labels": {"serving.chatmodel.io/engine-key": "k1"}}},
        },
        "status": {
            "observedGeneration": 3,
            "readyReplicas": 1,
            "updatedReplicas": 2,
            "replicas": 2,
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ],
        },
    }
    d = kube.summarize(dep).deployment
    assert d is not None
    assert (d.spec_replicas, d.ready, d.updated, d.template_key, d.progress_deadline_exceeded) == (
        2,
        1,
        2,
        "k1",
        True,
    )


def test_desired_hash_ignores_key_order_and_is_carried_in_an_annotation() -> None:
    a = {
        "kind": "Service",
        "metadata": {"name": "x", "labels": {"a": "1", "b": "2"}},
        "spec": {"type": "ClusterIP"},
    }
    b = {
        "spec": {"type": "ClusterIP"},
        "metadata": {"labels": {"b": "2", "a": "1"}, "name": "x"},
        "kind": "Service",
    }
    body, digest = kube.with_hash(a)
    assert digest == kube.desired_hash(b)
    assert body["metadata"]["annotations"][kube.APPLIED_HASH] == digest
    assert "annotations" not in a["metadata"]  # the desired object is not modified
    assert kube.summarize(body).applied_hash == digest


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    old = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Serving",
            "message": "",
            "lastTransitionTime": "then",
        }
    ]
    c = Conditions(old, generation=4, now="now")
    c.set("Ready", True, "Serving", "2 of 2")
    c.set("Planned", False, "DoesNotFit", "x")
    ready, planned = c.new["Ready"], c.new["Planned"]
    assert ready["lastTransitionTime"] == "then" and planned["lastTransitionTime"] == "now"
    assert ready["observedGeneration"] == planned["observedGeneration"] == 4
    assert c.changed("Ready") and c.changed("Planned")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("BackoffLimitExceeded", "BackoffLimitExceeded"),
        ("deadline exceeded!", "DeadlineExceeded"),
        ("", "Unknown"),
        ("42", "Unknown"),
    ],
)
def test_reasons_are_camel_case(raw: str, reason: str) -> None:
    assert reason_of(raw) == reason


def test_hub_tokens_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "sekret-value-123")
    text = redact("GET ...?token=sekret-value-123 and hf_abcdefghijklmnopqrstuv failed")
    assert "sekret-value-123" not in text and "hf_abcdefghijklmnopqrstuv" not in text


def test_retry_delays_grow_with_jitter_and_stop() -> None:
    delays = list(kube.RetryPolicy(attempts=5, first_delay=0.2, max_delay=1.0).delays())
    assert len(delays) == 4
    for got, cap in zip(delays, (0.2, 0.4, 0.8, 1.0), strict=True):
        assert cap / 2 <= got <= cap


def test_every_child_kind_and_status_write_has_a_declared_use() -> None:
    for k in kube.CHILD_KINDS:
        assert rbac.allows(k.group, k.plural, "list") and rbac.allows(k.group, k.plural, "watch")
    assert rbac.allows("serving.chatmodel.io", "chatmodels/status", "patch")
    assert not rbac.allows("", "secrets", "get")  # the operator never reads a Secret


def test_operator_command_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["operator", "-n", "a", "--namespace", "b", "--metrics-port", "9090"])
    assert (args.namespaces, args.metrics_port, args.all_namespaces) == (["a", "b"], 9090, False)
    assert parser.parse_args(["operator"]).namespaces is None  # all namespaces by default
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "-n", "a", "--all-namespaces"])


def test_a_replica_stands_by_when_a_live_peer_outranks_it() -> None:
    from datetime import UTC, datetime, timedelta

    from chatmodel_operator.scheduling import outranked

    now = datetime(2026, 1, 1, tzinfo=UTC)
    seen = (now - timedelta(seconds=10)).isoformat()
    old = (now - timedelta(seconds=120)).isoformat()
    peers = {
        "me": {"priority": 5, "lifetime": 60, "lastseen": seen},
        "other": {"priority": 9, "lifetime": 60, "lastseen": seen},
    }
    assert outranked(peers, 5, now) and not outranked(peers, 9, now)
    assert not outranked({**peers, "other": {**peers["other"], "lastseen": old}}, 5, now)  # it died
    assert outranked({"me": peers["me"], "twin": peers["me"]}, 5, now)  # equal priorities all pause


def test_a_child_whose_generation_moved_on_since_our_apply_has_drifted() -> None:
    from chatmodel_operator.context import Context

    ctx = Context(client=None, children=None)  # type: ignore[arg-type]
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m-triton", "namespace": "ns", "uid": "u", "generation": 2},
    }
    ours = kube.summarize(dep)
    ctx.wrote(ours)
    assert not ctx.drifted(ours)
    # A user's `kubectl edit` of the spec: the API server bumps the generation.
    edited = kube.summarize({**dep, "metadata": {**dep["metadata"], "generation": 3}})
    assert ctx.drifted(edited)
    # After a restart nothing is known: the first sight is taken as ours.
    fresh = Context(client=None, children=None)  # type: ignore[arg-type]
    assert not fresh.drifted(edited)
    assert fresh.drifted(kube.summarize({**dep, "metadata": {**dep["metadata"], "generation": 4}}))
    # A child deleted and recreated starts over.
    ctx.gone(edited)
    assert not ctx.drifted(kube.summarize(dep))
