"""The Triton model repository as data: golden config.pbtxt (and model.yaml, model.json) per
layout, every config parsed by Triton's own protobuf schema, ensemble wiring, no unfilled
placeholders, ConfigMap flattening, the pbtxt emitter, and the embedded model sources."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tests.conftest import EXAMPLES, REPO, load_example
from tritonclient.grpc import model_config_pb2

from chatmodel_operator.api import parse_chatmodel, parse_spec
from chatmodel_operator.api.spec import ModelSource
from chatmodel_operator.catalog import resolve_model
from chatmodel_operator.plan import plan_model
from chatmodel_operator.render import render_children
from chatmodel_operator.render.repository import build_repository_for
from chatmodel_operator.runtime import sources
from chatmodel_operator.triton import (
    LAYOUTS,
    Settings,
    chat_format,
    configmap_key,
    triton_openai_frontend_args,
    with_sources,
)
from chatmodel_operator.triton.pbtxt import Enum, dumps, quote
from chatmodel_operator.triton.repository import default_sources

GOLDEN = REPO / "tests" / "golden" / "repository"
UPDATE = os.environ.get("CHATMODEL_UPDATE_GOLDEN") == "1"
SETTINGS = Settings(
    max_batch_size=64,
    max_input_length=3072,
    max_output_length=1024,
    max_sequence_length=4096,
    max_num_tokens=8192,
    tensor_parallelism=2,
    kv_cache_free_gpu_mem_fraction=0.85,
    kv_cache_tokens=20480,
    dtype="bfloat16",
    engine_key="0123abcd",
    preprocessing_instances=4,
    kv_cache_dtype="fp8",
    cuda_graph_batch_sizes=(1, 2, 4, 8, 16, 32, 64),
    chunked_prefill=True,
)


def _repo(route: str) -> dict[PurePosixPath, str]:
    model = resolve_model(ModelSource(source="hf://01-ai/Yi-34B-Chat"))
    return LAYOUTS[route](
        SETTINGS,
        chat_format(model),
        tokenizer_dir="/cache/checkpoints/yi",
        engine_dir="/cache/engines/0123abcd/engine",
        sources=default_sources(),
    )


def _configs(repo: dict[PurePosixPath, str]) -> dict[str, Any]:
    out = {}
    for path, text in repo.items():
        if path.name == "config.pbtxt":
            out[path.parts[0]] = text_format.Parse(text, model_config_pb2.ModelConfig())
    return out


@pytest.mark.parametrize("route", sorted(LAYOUTS))
def test_layout_matches_golden(route: str) -> None:
    repo = _repo(route)
    folder = GOLDEN / route.replace("/", "-")
    data = {p: t for p, t in repo.items() if p.suffix != ".py"}
    if UPDATE:
        for path, text in data.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
    on_disk = {
        PurePosixPath(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file()
    }
    assert on_disk == set(data), "files differ; CHATMODEL_UPDATE_GOLDEN=1 rewrites the golden"
    for path, text in data.items():
        assert (folder / path).read_text(encoding="utf-8") == text, path


@pytest.mark.parametrize("route", sorted(LAYOUTS))
def test_every_config_parses_with_tritons_schema_and_names_itself(route: str) -> None:
    repo = _repo(route)
    configs = _configs(repo)
    assert {"ensemble", "tensorrt_llm_bls", "preprocessing"} <= set(configs)
    for folder, config in configs.items():
        assert config.name == folder
        assert PurePosixPath(folder) / "1" in {p.parent for p in repo}, f"{folder}: no 1/"
    assert "${" not in "".join(repo.values())


@pytest.mark.parametrize("route", sorted(LAYOUTS))
def test_ensemble_wiring_is_complete(route: str) -> None:
    configs = _configs(_repo(route))
    ensemble = configs["ensemble"]
    available = {t.name for t in ensemble.input}
    optional = {t.name for t in ensemble.input if t.optional}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs = {t.name: t for t in model.input}
        for key, value in step.input_map.items():
            assert key in inputs, f"{step.model_name} has no input {key}"
            assert value in available, f"{value} is not produced before {step.model_name}"
            if value in optional:
                assert inputs[key].optional, f"optional {value} feeds required {key}"
        required = {n for n, t in inputs.items() if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses {required}"
        outputs = {t.name for t in model.output}
        for key, value in step.output_map.items():
            assert key in outputs, f"{step.model_name} has no output {key}"
            available.add(value)
    assert {t.name for t in ensemble.output} <= available
    used = {v for step in ensemble.ensemble_scheduling.step for v in step.input_map.values()}
    assert {t.name for t in ensemble.input} <= used, "Triton refuses unused ensemble inputs"


def test_clients_keep_nvidias_tensor_names() -> None:
    for route in LAYOUTS:
        configs = _configs(_repo(route))
        for model in ("ensemble", "tensorrt_llm_bls"):
            names = {t.name for t in configs[model].input}
            assert {"text_input", "max_tokens", "stream", "temperature", "top_k", "top_p"} <= names
            assert {"stop_words", "bad_words"} <= names
            outputs = [t.name for t in configs[model].output]
            assert outputs[0] == "text_output"


# What Triton's OpenAI frontend (server 2.64 and later) sends to and reads from a TensorRT-LLM
# model for ``usage``: the flags as inputs (a model that lacks them refuses every request), the
# counts as INT32 or UINT32 outputs of the same response.
FRONTEND_FLAGS = {"return_num_input_tokens", "return_num_output_tokens"}
COUNTS = ["num_input_tokens", "num_output_tokens"]


@pytest.mark.parametrize("route", sorted(LAYOUTS))
def test_every_client_model_takes_the_openai_frontends_count_flags(route: str) -> None:
    configs = _configs(_repo(route))
    for model in ("ensemble", "tensorrt_llm_bls"):
        flags = {t.name: t for t in configs[model].input if t.name in FRONTEND_FLAGS}
        assert set(flags) == FRONTEND_FLAGS, (route, model)
        assert all(t.optional and t.data_type == model_config_pb2.TYPE_BOOL for t in flags.values())


@pytest.mark.parametrize("route", sorted(LAYOUTS))
def test_client_models_return_the_counts_the_openai_frontend_reads(route: str) -> None:
    configs = _configs(_repo(route))
    counted = {model_config_pb2.TYPE_INT32, model_config_pb2.TYPE_UINT32}
    for model in ("ensemble", "tensorrt_llm_bls"):
        outputs = {t.name: t for t in configs[model].output}
        if route == "tensorrt-llm/engine" and model == "ensemble":
            # The C++ backend returns no prompt count to rely on: the BLS reports usage there.
            assert not set(COUNTS) & set(outputs)
            continue
        assert [outputs[n].data_type in counted for n in COUNTS] == [True, True], (route, model)
    if route in ("python", "tensorrt-llm/llmapi"):
        # Our Python engines decode: the ensemble takes the text and both counts from the
        # engine, with no postprocessing step between.
        steps = configs["ensemble"].ensemble_scheduling.step
        assert [s.model_name for s in steps] == ["preprocessing", "tensorrt_llm"]
        assert dict(steps[1].output_map) == {n: n for n in ["text_output", *COUNTS]}
        engine_outputs = {t.name for t in configs["tensorrt_llm"].output}
        assert {"text_output", *COUNTS} <= engine_outputs
        assert "postprocessing" not in configs


def test_engine_mode_sets_every_parameter_the_backend_would_default() -> None:
    config = _configs(_repo("tensorrt-llm/engine"))["tensorrt_llm"]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert config.backend == "tensorrtllm"
    assert config.model_transaction_policy.decoupled is True
    assert params["gpt_model_path"] == "/cache/engines/0123abcd/engine"
    assert params["max_tokens_in_paged_kv_cache"] == "20480"
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.85"
    assert params["exclude_input_in_output"] == "true"
    assert params["enable_kv_cache_reuse"] == "true"
    assert params["gpu_device_ids"] == "0,1"
    for logged in (
        "max_beam_width",
        "cancellation_check_period_ms",
        "iter_stats_max_iterations",
        "batch_scheduler_policy",
        "gpt_model_type",
    ):
        assert params[logged], logged


def test_llmapi_yaml_and_vllm_json_come_from_the_plan() -> None:
    llm = yaml.safe_load(_repo("tensorrt-llm/llmapi")[PurePosixPath("tensorrt_llm/1/model.yaml")])
    assert llm["tensor_parallel_size"] == 2 and llm["max_seq_len"] == 4096
    assert llm["kv_cache_config"] == {
        "free_gpu_memory_fraction": 0.85,
        "enable_block_reuse": True,
        "max_tokens": 20480,
        "dtype": "fp8",
    }
    assert llm["enable_chunked_prefill"] is True
    assert llm["cuda_graph_config"] == {
        "batch_sizes": [1, 2, 4, 8, 16, 32, 64],
        "enable_padding": True,
    }
    assert llm["triton_config"] == {"max_batch_size": 64, "decoupled": True}
    vllm = json.loads(_repo("vllm")[PurePosixPath("vllm_model/1/model.json")])
    assert vllm["model"] == "/cache/engines/0123abcd/engine"
    assert (vllm["tensor_parallel_size"], vllm["max_model_len"], vllm["max_num_seqs"]) == (
        2,
        4096,
        64,
    )


def test_chat_format_travels_with_preprocessing() -> None:
    doc = json.loads(_repo("python")[PurePosixPath("preprocessing/1/chat_format.json")])
    assert doc["family"] == "yi-chat" and doc["stop"] == ["<|im_end|>", "<|endoftext|>"]
    assert doc["special_tokens"]["<|im_end|>"] == 7
    assert doc["generation"] == {"temperature": 0.6, "top_p": 0.8}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_gets_a_repository_with_pod_paths(example: Path) -> None:
    cm = parse_chatmodel(load_example(example))
    model, plan = plan_model(cm.spec)
    repo = build_repository_for(spec=cm.spec, plan=plan, model=model)
    configs = _configs(repo)
    assert configs["ensemble"].max_batch_size in (0, plan.max_batch_size)
    text = "".join(repo.values())
    assert "${" not in text and plan.engine_key in text
    assert "/cache/" in text or "/source/" in text


def test_configmap_flattening_round_trips() -> None:
    # Through the renderer, which builds the ConfigMap's data and the pods' volume items.
    repo = _repo("python")
    spec = parse_spec(
        {"model": {"source": "hf://01-ai/Yi-34B-Chat"}, "resources": {"gpu": {"memoryGiB": 80}}}
    )
    _, plan = plan_model(spec)
    children = render_children(
        name="m", namespace="ns", uid="u", spec=spec, plan=plan, repository=repo
    )
    data = next(o for o in children.serving if o["kind"] == "ConfigMap")["data"]
    dep = next(o for o in children.serving if o["kind"] == "Deployment")
    volumes = dep["spec"]["template"]["spec"]["volumes"]
    items = next(v for v in volumes if v["name"] == "model-repository")["configMap"]["items"]
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", k) and len(k) <= 253 for k in data)
    assert {PurePosixPath(i["path"]): data[i["key"]] for i in items} == repo
    assert sum(len(v.encode()) for v in data.values()) < 1_000_000  # a ConfigMap's limit
    with pytest.raises(ValueError, match="ambiguous"):
        configmap_key(PurePosixPath("my__model/config.pbtxt"))


def test_with_sources_swaps_one_model() -> None:
    repo = with_sources(_repo("python"), tensorrt_llm="# stand-in\n")
    assert repo[PurePosixPath("tensorrt_llm/1/model.py")] == "# stand-in\n"


def test_pbtxt_writes_zero_values_and_escapes_strings() -> None:
    text = dumps(
        {
            "max_batch_size": 0,
            "model_transaction_policy": {"decoupled": False},
            "input": [{"name": "x", "data_type": Enum("TYPE_INT32"), "dims": [-1]}],
            "parameters": [{"key": "t", "value": {"string_value": 'a "b"\n\\ 中'}}],
            "reshape": {"shape": []},
        },
        header=["hello"],
    )
    assert "max_batch_size: 0" in text and "decoupled: false" in text and "shape: [ ]" in text
    assert text.startswith("# hello\n")
    assert quote('a "b"\n\\ 中\x01') == '"a \\"b\\"\\n\\\\ 中\\001"'
    parsed = text_format.Parse(
        text.replace("reshape {\n  shape: [ ]\n}\n", ""), model_config_pb2.ModelConfig()
    )
    assert parsed.parameters["t"].string_value == 'a "b"\n\\ 中'


def test_embedded_model_sources_are_fresh() -> None:
    """triton/_sources.py is generated from model_repository/: rerun
    ``python -m chatmodel_operator.runtime.sources`` after editing a model."""
    for rel, text in sources.generated_files().items():
        assert (REPO / rel).read_text(encoding="utf-8") == text, rel


def test_python_models_import_only_what_the_repository_ships() -> None:
    repo = _repo("python")
    for path, text in repo.items():
        if path.name != "model.py":
            continue
        shipped = {p.stem for p in repo if p.parent == path.parent and p.suffix == ".py"}
        for mod in re.findall(r"^import (chatmodel_\w+)", text, re.MULTILINE):
            assert mod in shipped, f"{path} imports {mod}, which is not next to it"
        assert "chatmodel_operator" not in text, f"{path} needs the operator package"


def test_tritons_openai_frontend_template_wraps_messages_for_preprocessing() -> None:
    """Triton's frontend renders this template (Hugging Face semantics, as ChatRenderer); the
    result must be the envelope our preprocessing turns back into the same messages."""
    from chatmodel_operator.triton.repository import OPENAI_CHAT_TEMPLATE, OPENAI_CHAT_TEMPLATE_FILE
    from chatmodel_operator.triton.textproc import ChatRenderer, parse_conversation

    repo = _repo("vllm")
    assert repo[PurePosixPath("preprocessing/1") / OPENAI_CHAT_TEMPLATE_FILE].strip() == (
        OPENAI_CHAT_TEMPLATE
    )
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": '你好 "quoted"\n'}]},
    ]
    prompt = ChatRenderer(OPENAI_CHAT_TEMPLATE).render(messages)
    assert parse_conversation(prompt) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": '你好 "quoted"\n'},
    ]
    args = triton_openai_frontend_args(repository="/models", tokenizer_dir="/ckpt")
    assert f"--chat-template=/models/preprocessing/1/{OPENAI_CHAT_TEMPLATE_FILE}" in args


@pytest.mark.parametrize("route", sorted(LAYOUTS))
def test_every_model_that_decodes_loads_its_tokenizer_the_same_way(route: str) -> None:
    """Each model given a tokenizer to decode with (postprocessing, the BLS, our engines) gets
    the same parameters for it, trust_remote_code included: a checkpoint whose tokenizer is
    remote code (TeleChat) decodes in every model or in none."""
    model = resolve_model(ModelSource(source="hf://01-ai/Yi-34B-Chat"))
    remote = dataclasses.replace(SETTINGS, trust_remote_code=True)
    repo = LAYOUTS[route](
        remote,
        chat_format(model),
        tokenizer_dir="/cache/checkpoints/yi",
        engine_dir="/cache/engines/0123abcd/engine",
        sources=default_sources(),
    )
    decoding = {}
    for name, config in _configs(repo).items():
        params = {k: v.string_value for k, v in config.parameters.items()}
        if "special_token_ids" in params:
            keys = (
                "tokenizer_dir",
                "skip_special_tokens",
                "special_token_ids",
                "trust_remote_code",
            )
            decoding[name] = {k: params.get(k) for k in keys}
    assert "tensorrt_llm_bls" in decoding
    first = next(iter(decoding.values()))
    assert first["trust_remote_code"] == "true"
    assert all(d == first for d in decoding.values()), decoding
