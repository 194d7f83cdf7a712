"""The CRD's CEL rules, evaluated by a CEL interpreter, agree with the pydantic validation."""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from tests.conftest import EXAMPLES, load_example

from chatmodel_operator.api import parse_spec
from chatmodel_operator.api.crd import build_crd
from chatmodel_operator.errors import SpecErrors


def _rules(
    node: dict[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str, str]]:
    out = [(path, r["rule"], r["message"]) for r in node.get("x-kubernetes-validations", [])]
    for key, child in node.get("properties", {}).items():
        out += _rules(child, (*path, key))
    return out


SPEC_SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
RULES = _rules(SPEC_SCHEMA)
ENV = celpy.Environment()
PROGRAMS = [(path, ENV.program(ENV.compile(rule)), message) for path, rule, message in RULES]


def cel_failures(spec: dict[str, Any]) -> list[str]:
    """Messages of the rules that reject ``spec``, as the API server would evaluate them:
    each rule on its own node, only where that node is present."""
    failures = []
    for path, program, message in PROGRAMS:
        node: Any = spec
        for key in path:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            result = program.evaluate({"self": celpy.json_to_cel(node)})
            if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
                failures.append(message)
    return failures


def pydantic_ok(spec: dict[str, Any]) -> bool:
    try:
        parse_spec(spec)
    except SpecErrors:
        return False
    return True


def test_every_rule_compiles_and_there_are_rules() -> None:
    assert len(PROGRAMS) >= 5


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
def test_cel_and_pydantic_agree(spec: dict[str, Any], valid: bool) -> None:
    assert pydantic_ok(spec) is valid
    # CEL sees the enum/range checks too (tp 3 fails a CEL rule, not only the schema).
    assert (not cel_failures(spec)) is valid, cel_failures(spec)
    if valid:  # and again with every default filled in, as the API server applies them first
        defaulted = parse_spec(spec).model_dump(by_alias=True, exclude_none=True)
        assert not cel_failures(defaulted)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_pass_every_rule(path: Any) -> None:
    assert not cel_failures(load_example(path)["spec"])
