"""The ChatModel API models: defaults, validation errors naming field and fix, fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatmodel_operator.api import parse_chatmodel, parse_spec
from chatmodel_operator.errors import SpecError, SpecErrors

BASE: dict[str, Any] = {"model": {"source": "hf://01-ai/Yi-34B-Chat"}}


def test_defaults_fill_every_section() -> None:
    spec = parse_spec(BASE)
    assert spec.engine.backend == "auto"
    assert spec.engine.mode == "auto"
    assert spec.engine.tensor_parallelism == "auto"
    assert spec.serving.replicas == 1 and spec.serving.streaming is True
    assert spec.autoscaling.metric == "pending-requests"
    assert spec.autoscaling.effective_target() == 4.0
    assert spec.cache.delete_policy == "Retain"


def test_camel_case_on_the_wire() -> None:
    spec = parse_spec(
        {**BASE, "resources": {"gpu": {"memoryGiB": 40, "count": 4}}, "engine": {"maxBatchSize": 8}}
    )
    assert spec.resources.gpu.memory_gi_b == 40
    assert spec.engine.max_batch_size == 8
    assert spec.model_dump(by_alias=True)["resources"]["gpu"]["memoryGiB"] == 40


@pytest.mark.parametrize(
    ("spec", "field", "fix_words"),
    [
        pytest.param({**BASE, "engin": {}}, "spec.engin", "remove it", id="unknown-top-field"),
        pytest.param(
            {**BASE, "engine": {"backend": "tensorrt"}},
            "spec.engine.backend",
            "'tensorrt-llm'",
            id="bad-enum",
        ),
        pytest.param(
            {**BASE, "engine": {"maxBatchSize": "lots"}},
            "spec.engine.maxBatchSize",
            "correct",
            id="wrong-type",
        ),
        pytest.param(
            {"model": {"source": "http://x"}}, "spec.model.source", "hf://org/name", id="bad-source"
        ),
        pytest.param({}, "spec.model", "add it", id="missing-model"),
        pytest.param(
            {**BASE, "engine": {"tensorParallelism": 3}},
            "spec.engine.tensorParallelism",
            "one of",
            id="tp-3",
        ),
        pytest.param(
            {**BASE, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            "spec.autoscaling.minReplicas",
            "maxReplicas",
            id="min-gt-max",
        ),
        pytest.param(
            {"model": {"source": "s3://b/m", "credentialsSecret": "tok"}},
            "spec.model.credentialsSecret",
            "hf://",
            id="secret-non-hf",
        ),
        pytest.param(
            {**BASE, "engine": {"backend": "vllm", "mode": "llmapi"}},
            "spec.engine.mode",
            "tensorrt-llm",
            id="llmapi-vllm",
        ),
        pytest.param(
            {**BASE, "resources": {"gpu": {"count": 2}}, "engine": {"tensorParallelism": 4}},
            "spec.resources.gpu.count",
            "agree",
            id="count-vs-tp",
        ),
    ],
)
def test_errors_name_the_field_and_the_fix(
    spec: dict[str, Any], field: str, fix_words: str
) -> None:
    with pytest.raises(SpecErrors) as info:
        parse_spec(spec)
    fields = [e.field for e in info.value.errors]
    assert field in fields, fields
    err = next(e for e in info.value.errors if e.field == field)
    assert fix_words in err.message
    assert "fix:" in err.message


def test_whole_object_checks_kind_and_name() -> None:
    with pytest.raises(SpecErrors, match=r"apiVersion"):
        parse_chatmodel({"apiVersion": "v1", "kind": "Pod", "spec": BASE})
    with pytest.raises(SpecErrors, match=r"metadata.name"):
        parse_chatmodel(
            {
                "apiVersion": "serving.chatmodel.io/v1alpha1",
                "kind": "ChatModel",
                "metadata": {"name": "Bad_Name"},
                "spec": BASE,
            }
        )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
spec_keys = st.sampled_from(
    ["model", "engine", "resources", "serving", "autoscaling", "cache", "extra"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(spec_keys, json_values, max_size=6))
def test_fuzzed_specs_raise_only_spec_errors(spec: dict[str, Any]) -> None:
    try:
        parse_spec(spec)
    except SpecErrors as exc:
        assert exc.errors
        assert all(isinstance(e, SpecError) and e.field.startswith("spec") for e in exc.errors)
