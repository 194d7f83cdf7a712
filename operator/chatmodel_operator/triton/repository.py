"""The Triton model repository as data: ``{PurePosixPath: text}``, one function per layout.

Every layout keeps NVIDIA's model names and client tensors (``ensemble`` and
``tensorrt_llm_bls`` taking ``text_input``, ``max_tokens``, ``stream`` ... and returning
``text_output``), so the generate endpoints, genai-perf and Triton's OpenAI frontend work the
same whatever runs underneath:

* ``engine_layout``: TensorRT-LLM engine mode, the C++ ``tensorrtllm`` backend as
  ``tensorrt_llm`` between our ``preprocessing`` and ``postprocessing``;
* ``llmapi_layout``: our Python model driving TensorRT-LLM's LLM API (PyTorch backend) as
  ``tensorrt_llm``, configured by ``model.yaml``;
* ``python_layout``: our transformers engine as ``tensorrt_llm`` (also serves on CPU);
* ``vllm_layout``: Triton's vLLM backend as ``vllm_model`` (``model.json``), which takes text,
  so preprocessing hands it the rendered prompt and postprocessing is not needed.

The first three share one tensor contract (``input_ids`` in, ``output_ids`` out), so one
ensemble and one BLS run over all of them. The Python model sources come in as data
(``ModelSources``; the default is the generated ``_sources`` module), so this stays pure.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from chatmodel_operator.api.spec import ChatModelSpec
from chatmodel_operator.catalog import ModelInfo
from chatmodel_operator.plan import Plan
from chatmodel_operator.triton import tensors as t
from chatmodel_operator.triton.pbtxt import Enum, Rendered, dumps, parameters
from chatmodel_operator.triton.pbtxt import field as rendered_field

Repository = dict[PurePosixPath, str]

TEXTPROC_MODULE = "chatmodel_textproc.py"
HELPERS_MODULE = "chatmodel_helpers.py"
CHAT_FORMAT_FILE = "chat_format.json"
ENGINE_MODEL = "tensorrt_llm"
VLLM_MODEL = "vllm_model"
# Triton loads a model only from a version directory, even an ensemble with no files; a
# ConfigMap cannot hold an empty directory, so such directories get this small file.
VERSION_PLACEHOLDER = "README"
# For Triton's own OpenAI frontend (in pods whose image ships it): its chat template only wraps
# the messages in our envelope, and our preprocessing applies the model's real format, so that
# the frontend, our local front and every other client get the same prompt.
OPENAI_CHAT_TEMPLATE = '{{ {"messages": messages} | tojson }}'
OPENAI_CHAT_TEMPLATE_FILE = "openai_chat_template.jinja"
PLACEHOLDER_TEXT = "Triton needs this version directory; this model has no files of its own.\n"


@dataclass(frozen=True)
class ModelSources:
    """Source text of our Python models and the helper modules shipped next to them."""

    preprocessing: str
    postprocessing: str
    bls: str
    python_engine: str
    llmapi_engine: str
    textproc: str
    helpers: str


@dataclass(frozen=True)
class ChatFormat:
    """What preprocessing needs to turn messages into token ids, and when to stop."""

    template: str
    origin: str  # spec, checkpoint or family
    family: str | None
    stop: tuple[str, ...]  # the first is the end id fed to the engine
    special_tokens: tuple[tuple[str, int], ...]
    bos_token: str | None
    eos_token: str | None
    generation: tuple[tuple[str, Any], ...] = ()  # pairs, so that the format is hashable
    system_prompt: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "chat_template": self.template,
            "template_origin": self.origin,
            "family": self.family,
            "stop": list(self.stop),
            "special_tokens": {text: tid for text, tid in self.special_tokens},
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "generation": dict(self.generation),
            "system_prompt": self.system_prompt,
        }

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(sorted({tid for _, tid in self.special_tokens}))


def chat_format(model: ModelInfo) -> ChatFormat:
    fam = model.family
    return ChatFormat(
        template=model.chat_template,
        origin=model.template_origin,
        family=fam.name if fam else None,
        stop=tuple(fam.stop) if fam else (),
        special_tokens=tuple((s.text, s.id) for s in fam.special_tokens()) if fam else (),
        bos_token=fam.bos.text if fam and fam.bos else None,
        eos_token=fam.eos.text if fam else None,
        generation=tuple(sorted(model.generation.items())),
        system_prompt=fam.system_prompt if fam else None,
    )


@dataclass(frozen=True)
class Settings:
    """The numbers the repository is configured with, from the spec and the plan."""

    max_batch_size: int
    max_input_length: int
    max_output_length: int
    max_sequence_length: int
    max_num_tokens: int
    streaming: bool = True
    tensor_parallelism: int = 1
    kv_cache_free_gpu_mem_fraction: float = 0.9
    kv_cache_tokens: int | None = None
    dtype: str = "auto"
    quantization: str = "none"
    trust_remote_code: bool = False
    engine_key: str = ""
    kv_cache_reuse: bool = True
    preprocessing_instances: int = 1
    cpu_threads: int = 0  # 0: the engine picks (all cores on CPU)
    kv_cache_dtype: str = "auto"
    cuda_graph_batch_sizes: tuple[int, ...] = ()  # llmapi: CUDA graphs for these decode batches
    chunked_prefill: bool = False  # llmapi: prefill long prompts in max_num_tokens chunks
    # Our Python engines under load: at most this many tokens per streamed response, held at
    # most this long, from this many active streams on (spec.serving.streamInterval).
    stream_interval_tokens: int = 1
    stream_interval_ms: float = 0.0
    stream_interval_min_streams: int = 1

    @classmethod
    def from_plan(cls, spec: ChatModelSpec, plan: Plan) -> Settings:
        return cls(
            max_batch_size=plan.max_batch_size,
            max_input_length=plan.max_input_length,
            max_output_length=plan.max_output_length,
            max_sequence_length=plan.max_sequence_length,
            max_num_tokens=plan.max_num_tokens,
            streaming=spec.serving.streaming,
            tensor_parallelism=plan.tensor_parallelism,
            kv_cache_free_gpu_mem_fraction=plan.kv_cache_free_gpu_mem_fraction,
            kv_cache_tokens=plan.kv_cache_tokens or None,
            dtype=plan.dtype,
            quantization=plan.quantization,
            trust_remote_code=plan.trust_remote_code or spec.model.trust_remote_code,
            engine_key=plan.engine_key,
            # Tokenizing is quick; more than a few processes only cost memory.
            preprocessing_instances=max(1, min(4, plan.max_batch_size // 16)),
            kv_cache_dtype=plan.kv_cache_dtype,
            cuda_graph_batch_sizes=plan.cuda_graph_batch_sizes,
            chunked_prefill=plan.chunked_prefill,
            **stream_interval_settings(spec),
        )


def stream_interval_settings(spec: ChatModelSpec) -> dict[str, Any]:
    """The Settings fields of ``spec.serving.streamInterval``."""
    si = spec.serving.stream_interval
    return {
        "stream_interval_tokens": si.max_tokens,
        "stream_interval_ms": si.max_delay_ms,
        "stream_interval_min_streams": si.min_streams,
    }


@functools.cache
def _path(*parts: str) -> PurePosixPath:
    return PurePosixPath(*parts)


def _header(model: str, s: Settings) -> list[str]:
    lines = [f"{model}: rendered by chatmodel-operator; edits are overwritten"]
    if s.engine_key:
        lines.append(f"engine key {s.engine_key}")
    return lines


@functools.cache
def _io(key: str, tensors: tuple[t.Tensor, ...]) -> Rendered:
    """An ``input`` or ``output`` list, rendered once per process (they never change)."""
    return rendered_field(key, [x.config() for x in tensors])


def _maps(pairs: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in pairs.items()]


def _step(model: str, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> dict[str, Any]:
    """One ensemble step: ``model``'s inputs from the ensemble's tensors (model input ->
    tensor), its outputs into them (model output -> tensor)."""
    return {
        "model_name": model,
        "model_version": -1,
        "input_map": _maps(inputs),
        "output_map": _maps(outputs),
    }


def _python_files(
    model: str, source: str, *, helpers: Sequence[tuple[str, str]]
) -> dict[PurePosixPath, str]:
    files = {_path(model, "1", "model.py"): source}
    files.update({_path(model, "1", name): text for name, text in helpers})
    return files


def helper_modules(src: ModelSources) -> list[tuple[str, str]]:
    """The modules our Python models import, by the file name each is shipped under beside
    them."""
    return [(TEXTPROC_MODULE, src.textproc), (HELPERS_MODULE, src.helpers)]


def _batching(batched: bool) -> dict[str, Any] | None:
    return {"max_queue_delay_microseconds": 0} if batched else None


def preprocessing_files(
    s: Settings, fmt: ChatFormat, tokenizer_dir: str, src: ModelSources, *, batched: bool = True
) -> Repository:
    config = {
        "name": "preprocessing",
        "backend": "python",
        "max_batch_size": s.max_batch_size if batched else 0,
        "dynamic_batching": _batching(batched),
        "input": _io("input", t.PRE_INPUTS),
        "output": _io("output", t.PRE_TOKEN_OUTPUTS + t.PRE_TEXT_OUTPUTS),
        "instance_group": [{"count": s.preprocessing_instances, "kind": Enum("KIND_CPU")}],
        "parameters": parameters(
            {
                "tokenizer_dir": tokenizer_dir,
                "chat_format": CHAT_FORMAT_FILE,
                "max_input_length": s.max_input_length,
                "max_output_length": s.max_output_length,
                "add_special_tokens": False,
                "trust_remote_code": s.trust_remote_code,
            }
        ),
    }
    files = {_path("preprocessing/config.pbtxt"): dumps(config, _header("preprocessing", s))}
    files.update(_python_files("preprocessing", src.preprocessing, helpers=helper_modules(src)))
    files[_path("preprocessing/1", CHAT_FORMAT_FILE)] = _chat_format_json(fmt)
    files[_path("preprocessing/1", OPENAI_CHAT_TEMPLATE_FILE)] = OPENAI_CHAT_TEMPLATE + "\n"
    return files


@functools.lru_cache(maxsize=256)
def _chat_format_json(fmt: ChatFormat) -> str:
    return json.dumps(fmt.document(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def _skip_ids(fmt: ChatFormat) -> str:
    return ",".join(str(i) for i in fmt.special_ids)


def _decoding_parameters(s: Settings, fmt: ChatFormat, tokenizer_dir: str) -> dict[str, Any]:
    """What a model that turns token ids into text is given to load its tokenizer with
    (``chatmodel_helpers.decoding_tokenizer``): postprocessing, the BLS, and our Python and
    LLM-API engines, which decode for their ensemble."""
    return {
        "tokenizer_dir": tokenizer_dir,
        "skip_special_tokens": True,
        "special_token_ids": _skip_ids(fmt),
        "trust_remote_code": s.trust_remote_code,
    }


def postprocessing_files(
    s: Settings, fmt: ChatFormat, tokenizer_dir: str, src: ModelSources
) -> Repository:
    config = {
        "name": "postprocessing",
        "backend": "python",
        "max_batch_size": s.max_batch_size,
        "dynamic_batching": _batching(True),
        "input": _io("input", t.POST_INPUTS),
        "output": _io("output", t.POST_OUTPUTS),
        # One instance on purpose: a stream's detokenizer state (the bytes of a character not
        # yet complete) lives in this process, and one instance also keeps the stream's
        # responses in order. Dynamic batching amortizes the per-call cost.
        "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
        "parameters": parameters(_decoding_parameters(s, fmt, tokenizer_dir)),
    }
    files = {_path("postprocessing/config.pbtxt"): dumps(config, _header("postprocessing", s))}
    files.update(_python_files("postprocessing", src.postprocessing, helpers=helper_modules(src)))
    return files


def bls_files(
    s: Settings,
    fmt: ChatFormat,
    tokenizer_dir: str,
    src: ModelSources,
    *,
    engine_model: str = ENGINE_MODEL,
    engine_takes_text: bool = False,
) -> Repository:
    batched = not engine_takes_text
    config = {
        "name": "tensorrt_llm_bls",
        "backend": "python",
        "max_batch_size": s.max_batch_size if batched else 0,
        # Always decoupled: the BLS streams when asked and sends one response otherwise.
        "model_transaction_policy": {"decoupled": True},
        "dynamic_batching": _batching(batched),
        "input": _io("input", t.CLIENT_INPUTS),
        "output": _io("output", t.CLIENT_OUTPUTS + t.USAGE_OUTPUTS),
        # One process serves every request concurrently (a thread per request), instead of
        # NVIDIA's one request per instance that needs as many processes as batch slots.
        "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
        "parameters": parameters(
            {
                **_decoding_parameters(s, fmt, tokenizer_dir),
                "engine_model": engine_model,
                "preprocessing_model": "preprocessing",
                "engine_takes_text": engine_takes_text,
                "max_concurrency": max(s.max_batch_size * 2, 8),
                "tensor_maps": json.dumps(t.bls_tensor_maps(), sort_keys=True),
            }
        ),
    }
    files = {_path("tensorrt_llm_bls/config.pbtxt"): dumps(config, _header("tensorrt_llm_bls", s))}
    files.update(_python_files("tensorrt_llm_bls", src.bls, helpers=helper_modules(src)))
    return files


def _pre_and_engine_steps(engine_out: Mapping[str, str]) -> list[dict[str, Any]]:
    """preprocessing, then the engine, as every ensemble over the token contract starts."""
    pre_out = {name.name: f"_{name.name}" for name in t.PRE_TOKEN_OUTPUTS}
    engine_in = {eng: f"_{pre}" for pre, eng in t.PRE_TO_ENGINE.items()}
    engine_in.update({eng: cli for cli, eng in t.CLIENT_TO_ENGINE.items()})
    return [
        _step("preprocessing", {pre: cli for cli, pre in t.CLIENT_TO_PRE.items()}, pre_out),
        _step(ENGINE_MODEL, engine_in, engine_out),
    ]


@functools.cache
def _token_steps(usage: bool) -> Rendered:
    """The ensemble's wiring for an engine that returns token ids (the C++ engine): with
    ``usage``, the engine returns the prompt's token count, and postprocessing passes it on
    next to the count of each response's tokens (what Triton's OpenAI frontend reads)."""
    engine_out = {"output_ids": "_TOKENS_BATCH", "arrival_time_ns": "_ARRIVAL_TIME_NS"}
    post_in = {"TOKENS_BATCH": "_TOKENS_BATCH", "STREAM_KEY": "_ARRIVAL_TIME_NS"}
    post_out = {"OUTPUT": "text_output"}
    if usage:
        engine_out["num_input_tokens"] = "_NUM_INPUT_TOKENS"
        post_in["ENGINE_NUM_INPUT_TOKENS"] = "_NUM_INPUT_TOKENS"
        post_out.update({"NUM_INPUT_TOKENS": "num_input_tokens"})
        post_out.update({"NUM_OUTPUT_TOKENS": "num_output_tokens"})
    postprocessing = _step("postprocessing", post_in, post_out)
    return rendered_field(
        "ensemble_scheduling", {"step": [*_pre_and_engine_steps(engine_out), postprocessing]}
    )


@functools.cache
def _text_engine_steps() -> Rendered:
    """preprocessing -> tensorrt_llm for our Python engines, which return the text themselves:
    no postprocessing step, so no Python round trip per streamed response besides the
    engine's own."""
    engine_out = {x.name: x.name for x in t.CLIENT_OUTPUTS + t.USAGE_OUTPUTS}
    return rendered_field("ensemble_scheduling", {"step": _pre_and_engine_steps(engine_out)})


def ensemble_files(
    s: Settings,
    steps: Rendered,
    outputs: Sequence[t.Tensor],
    *,
    inputs: Sequence[t.Tensor] = t.CLIENT_INPUTS,
    max_batch_size: int | None = None,
    name: str = "ensemble",
) -> Repository:
    """The ``ensemble`` model (or another ``name``): ``inputs`` in, ``outputs`` out, run by
    ``steps``."""
    config = {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": s.max_batch_size if max_batch_size is None else max_batch_size,
        "input": _io("input", tuple(inputs)),
        "output": _io("output", tuple(outputs)),
        "ensemble_scheduling": steps,
    }
    return {
        _path(name, "config.pbtxt"): dumps(config, _header(name, s)),
        _path(name, "1", VERSION_PLACEHOLDER): PLACEHOLDER_TEXT,
    }


def engine_steps(inputs: Sequence[str], outputs: Sequence[str]) -> Rendered:
    """One step: the engine, its inputs and outputs under their own names."""
    step = _step(ENGINE_MODEL, {x: x for x in inputs}, {x: x for x in outputs})
    return rendered_field("ensemble_scheduling", {"step": [step]})


def text_engine_ensemble(s: Settings) -> Repository:
    """preprocessing -> tensorrt_llm, for our Python engines that return text."""
    return ensemble_files(s, _text_engine_steps(), t.CLIENT_OUTPUTS + t.USAGE_OUTPUTS)


def token_ensemble(s: Settings, *, usage: bool = True) -> Repository:
    """preprocessing -> tensorrt_llm -> postprocessing, for engines that take token ids."""
    outputs = t.CLIENT_OUTPUTS + (t.USAGE_OUTPUTS if usage else ())
    return ensemble_files(s, _token_steps(usage), outputs)


def _token_pipeline(
    s: Settings, fmt: ChatFormat, tokenizer_dir: str, src: ModelSources, *, usage: bool = True
) -> Repository:
    files = token_ensemble(s, usage=usage)
    files.update(preprocessing_files(s, fmt, tokenizer_dir, src))
    files.update(postprocessing_files(s, fmt, tokenizer_dir, src))
    files.update(bls_files(s, fmt, tokenizer_dir, src))
    return files


def _text_engine_pipeline(
    s: Settings, fmt: ChatFormat, tokenizer_dir: str, src: ModelSources
) -> Repository:
    files = text_engine_ensemble(s)
    files.update(preprocessing_files(s, fmt, tokenizer_dir, src))
    files.update(bls_files(s, fmt, tokenizer_dir, src))
    return files


def _cpp_engine_parameters(s: Settings, engine_dir: str) -> dict[str, Any]:
    """Every parameter the C++ backend would otherwise log as "not specified"."""
    values: dict[str, Any] = {
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": engine_dir,
        "max_beam_width": 1,
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        "batch_scheduler_policy": "guaranteed_no_evict",
        "kv_cache_free_gpu_mem_fraction": s.kv_cache_free_gpu_mem_fraction,
        "max_attention_window_size": s.max_sequence_length,
        "enable_kv_cache_reuse": s.kv_cache_reuse,
        "enable_chunked_context": False,
        "exclude_input_in_output": True,
        "cancellation_check_period_ms": 100,
        "stats_check_period_ms": 100,
        "iter_stats_max_iterations": 1000,
        "request_stats_max_iterations": 0,
        "normalize_log_probs": True,
        "decoding_mode": "top_k_top_p",
        "multi_block_mode": True,
        "enable_context_fmha_fp32_acc": False,
        "cuda_graph_mode": False,
        "cuda_graph_cache_size": 0,
        "kv_cache_host_memory_bytes": 0,
        "kv_cache_onboard_blocks": True,
        "gpu_device_ids": ",".join(str(i) for i in range(s.tensor_parallelism)),
        "executor_worker_path": "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker",
    }
    if s.kv_cache_tokens:
        values["max_tokens_in_paged_kv_cache"] = s.kv_cache_tokens
    return values


def engine_layout(
    s: Settings, fmt: ChatFormat, *, tokenizer_dir: str, engine_dir: str, sources: ModelSources
) -> Repository:
    """TensorRT-LLM engine mode: the C++ backend runs the engine built into ``engine_dir``."""
    config = {
        "name": ENGINE_MODEL,
        "backend": "tensorrtllm",
        "max_batch_size": s.max_batch_size,
        "model_transaction_policy": {"decoupled": s.streaming},
        "dynamic_batching": {
            "preferred_batch_size": [s.max_batch_size],
            "max_queue_delay_microseconds": 0,
            "default_queue_policy": {"max_queue_size": 0},
        },
        "input": _io("input", t.CPP_ENGINE_INPUTS),
        "output": _io("output", t.CPP_ENGINE_OUTPUTS),
        "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
        "parameters": parameters(_cpp_engine_parameters(s, engine_dir)),
    }
    # The C++ backend returns no prompt count we can rely on, so its ensemble reports no usage.
    files = _token_pipeline(s, fmt, tokenizer_dir, sources, usage=False)
    files[_path(ENGINE_MODEL, "config.pbtxt")] = dumps(config, _header(ENGINE_MODEL, s))
    files[_path(ENGINE_MODEL, "1", VERSION_PLACEHOLDER)] = PLACEHOLDER_TEXT
    return files


def _python_engine_config(
    s: Settings, fmt: ChatFormat, tokenizer_dir: str, extra: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "name": ENGINE_MODEL,
        "backend": "python",
        "max_batch_size": s.max_batch_size,
        # Always decoupled: streams when a request asks for it, one response otherwise.
        "model_transaction_policy": {"decoupled": True},
        "dynamic_batching": _batching(True),
        "input": _io("input", t.ENGINE_INPUTS),
        "output": _io("output", t.ENGINE_OUTPUTS),
        "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
        "parameters": parameters(
            {
                "max_slots": s.max_batch_size,
                "max_sequence_length": s.max_sequence_length,
                "exclude_input_in_output": True,
                # text_output: decoded as postprocessing would
                **_decoding_parameters(s, fmt, tokenizer_dir),
                "stream_interval_tokens": s.stream_interval_tokens,
                "stream_interval_ms": s.stream_interval_ms,
                "stream_interval_min_streams": s.stream_interval_min_streams,
                **extra,
            }
        ),
    }


def python_layout(
    s: Settings, fmt: ChatFormat, *, tokenizer_dir: str, engine_dir: str, sources: ModelSources
) -> Repository:
    """Our transformers engine (``engine_dir`` is the Hugging Face checkpoint); runs on CPU."""
    config = _python_engine_config(
        s,
        fmt,
        tokenizer_dir,
        {
            "checkpoint_dir": engine_dir,
            "dtype": s.dtype,
            "device": "auto",
            "cpu_threads": s.cpu_threads,
        },
    )
    files = _text_engine_pipeline(s, fmt, tokenizer_dir, sources)
    files[_path(ENGINE_MODEL, "config.pbtxt")] = dumps(config, _header(ENGINE_MODEL, s))
    files.update(
        _python_files(ENGINE_MODEL, sources.python_engine, helpers=helper_modules(sources))
    )
    return files


def llmapi_model_yaml(s: Settings, checkpoint_dir: str) -> dict[str, Any]:
    """Keyword arguments of TensorRT-LLM's ``LLM()`` (PyTorch backend, TensorRT-LLM 1.x), as in
    NVIDIA's ``model.yaml``; ``triton_config`` is read by our model, not passed to ``LLM()``.

    The plan's numbers reach the LLM API as in engine mode: the KV budget
    (``kv_cache_config.max_tokens`` caps what ``free_gpu_memory_fraction`` of the memory left
    after the start-up profiling step would give), the batch and token budget, an FP8 KV cache
    (``kv_cache_config.dtype``), chunked prefill and the CUDA graphs the memory model counted
    (``cuda_graph_config``; keys as in TensorRT-LLM 1.0's runtime configuration example).
    Quantized weights need no key: the LLM API reads the checkpoint's own quantization config
    (AWQ, GPTQ, ModelOpt FP8)."""
    kv: dict[str, Any] = {
        "free_gpu_memory_fraction": s.kv_cache_free_gpu_mem_fraction,
        "enable_block_reuse": s.kv_cache_reuse,
    }
    if s.kv_cache_tokens:
        kv["max_tokens"] = s.kv_cache_tokens
    if s.kv_cache_dtype == "fp8":
        kv["dtype"] = "fp8"
    doc: dict[str, Any] = {
        "model": checkpoint_dir,
        "backend": "pytorch",
        "tensor_parallel_size": s.tensor_parallelism,
        "pipeline_parallel_size": 1,
        "max_batch_size": s.max_batch_size,
        "max_num_tokens": s.max_num_tokens,
        "max_seq_len": s.max_sequence_length,
        "kv_cache_config": kv,
        "enable_chunked_prefill": s.chunked_prefill,
        "trust_remote_code": s.trust_remote_code,
        "triton_config": {"max_batch_size": s.max_batch_size, "decoupled": True},
    }
    if s.cuda_graph_batch_sizes:
        doc["cuda_graph_config"] = {
            "batch_sizes": list(s.cuda_graph_batch_sizes),
            "enable_padding": True,
        }
    if s.dtype in ("bfloat16", "float16"):
        doc["dtype"] = s.dtype
    return doc


def llmapi_layout(
    s: Settings, fmt: ChatFormat, *, tokenizer_dir: str, engine_dir: str, sources: ModelSources
) -> Repository:
    """TensorRT-LLM's LLM API (PyTorch backend, no engine build) behind our token contract."""
    config = _python_engine_config(s, fmt, tokenizer_dir, {"model_yaml": "model.yaml"})
    files = _text_engine_pipeline(s, fmt, tokenizer_dir, sources)
    files[_path(ENGINE_MODEL, "config.pbtxt")] = dumps(config, _header(ENGINE_MODEL, s))
    files.update(
        _python_files(ENGINE_MODEL, sources.llmapi_engine, helpers=helper_modules(sources))
    )
    files[_path(ENGINE_MODEL, "1", "model.yaml")] = yaml.safe_dump(
        llmapi_model_yaml(s, engine_dir), sort_keys=False
    )
    return files


def vllm_model_json(s: Settings, checkpoint_dir: str) -> dict[str, Any]:
    """Engine arguments of vLLM's AsyncLLMEngine (the vLLM backend's ``model.json``)."""
    doc: dict[str, Any] = {
        "model": checkpoint_dir,
        "tokenizer": checkpoint_dir,
        "tensor_parallel_size": s.tensor_parallelism,
        "max_model_len": s.max_sequence_length,
        "max_num_seqs": s.max_batch_size,
        "max_num_batched_tokens": max(s.max_num_tokens, s.max_sequence_length),
        # vLLM's fraction is of the whole GPU, not of what is free after loading the weights.
        "gpu_memory_utilization": s.kv_cache_free_gpu_mem_fraction,
        "enable_prefix_caching": s.kv_cache_reuse,
        "trust_remote_code": s.trust_remote_code,
        "disable_log_stats": False,
    }
    if s.dtype in ("bfloat16", "float16"):
        doc["dtype"] = s.dtype
    quant = {"int4-awq": "awq", "int4-gptq": "gptq", "int8-gptq": "gptq", "fp8": "fp8"}
    if s.quantization in quant:
        doc["quantization"] = quant[s.quantization]
    return doc


@functools.cache
def _vllm_steps() -> Rendered:
    """preprocessing renders the prompt and vLLM's sampling JSON; vLLM returns text."""
    # The frontend's count flags go to vLLM itself, which returns the counts.
    pre_in = {
        pre: cli
        for cli, pre in {**t.CLIENT_TO_PRE, **t.CLIENT_TO_PRE_TEXT}.items()
        if cli not in t.RETURN_COUNT_INPUTS
    }
    return rendered_field(
        "ensemble_scheduling",
        {
            "step": [
                _step(
                    "preprocessing",
                    pre_in,
                    {
                        "PROMPT": "_PROMPT",
                        "SAMPLING_PARAMETERS": "_SAMPLING_PARAMETERS",
                        "EXCLUDE_INPUT": "_EXCLUDE_INPUT",
                    },
                ),
                _step(
                    VLLM_MODEL,
                    {
                        "text_input": "_PROMPT",
                        "sampling_parameters": "_SAMPLING_PARAMETERS",
                        "exclude_input_in_output": "_EXCLUDE_INPUT",
                        "stream": "stream",
                        "return_num_input_tokens": "return_num_input_tokens",
                        "return_num_output_tokens": "return_num_output_tokens",
                    },
                    {x.name: x.name for x in t.VLLM_OUTPUTS},
                ),
            ]
        },
    )


def vllm_layout(
    s: Settings, fmt: ChatFormat, *, tokenizer_dir: str, engine_dir: str, sources: ModelSources
) -> Repository:
    """Triton's vLLM backend; our preprocessing renders the chat and builds its sampling JSON.
    vLLM batches internally, so these models take one request per call (max_batch_size 0)."""
    vllm_config = {
        "name": VLLM_MODEL,
        "backend": "vllm",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": _io("input", t.VLLM_INPUTS),
        "output": _io("output", t.VLLM_OUTPUTS),
        "instance_group": [{"count": 1, "kind": Enum("KIND_MODEL")}],
        "parameters": parameters({"REPORT_CUSTOM_METRICS": True}),
    }
    files: Repository = {
        _path(VLLM_MODEL, "config.pbtxt"): dumps(vllm_config, _header(VLLM_MODEL, s)),
        _path(VLLM_MODEL, "1", "model.json"): json.dumps(vllm_model_json(s, engine_dir), indent=2)
        + "\n",
        # vLLM batches internally: one request per call, and no input vLLM has no use for.
        **ensemble_files(
            s,
            _vllm_steps(),
            t.VLLM_OUTPUTS,
            inputs=[x for x in t.CLIENT_INPUTS if x.name not in t.TEXT_ENGINE_UNUSED],
            max_batch_size=0,
        ),
    }
    files.update(preprocessing_files(s, fmt, tokenizer_dir, sources, batched=False))
    files.update(
        bls_files(s, fmt, tokenizer_dir, sources, engine_model=VLLM_MODEL, engine_takes_text=True)
    )
    return files


LAYOUTS = {
    "tensorrt-llm/engine": engine_layout,
    "tensorrt-llm/llmapi": llmapi_layout,
    "vllm": vllm_layout,
    "python": python_layout,
}


def default_sources() -> ModelSources:
    """The sources embedded in the generated ``_sources`` module."""
    from chatmodel_operator.triton import _sources

    return ModelSources(**_sources.SOURCES)


def build_repository(
    *,
    spec: ChatModelSpec,
    plan: Plan,
    model_info: ModelInfo,
    tokenizer_dir: str,
    engine_dir: str,
    sources: ModelSources | None = None,
    settings: Settings | None = None,
) -> Repository:
    """The model repository for one planned ChatModel.

    ``engine_dir`` is what the engine loads: the TensorRT engine directory in engine mode, the
    Hugging Face checkpoint directory otherwise. ``settings`` overrides what the plan says
    (``chatmodel serve`` uses it for CPU-sized limits).
    """
    s = settings or Settings.from_plan(spec, plan)
    route = f"{plan.backend}/{plan.mode}" if plan.backend == "tensorrt-llm" else plan.backend
    layout = LAYOUTS.get(route)
    if layout is None:
        raise ValueError(f"no repository layout for backend {route!r}")
    return layout(
        s,
        chat_format(model_info),
        tokenizer_dir=tokenizer_dir,
        engine_dir=engine_dir,
        sources=sources or default_sources(),
    )


def triton_openai_frontend_args(
    *,
    repository: str,
    tokenizer_dir: str,
    http_port: int = 8000,
    grpc_port: int = 8001,
    openai_port: int = 9000,
    default_max_tokens: int | None = None,
    frontend: str = "/opt/tritonserver/python/openai/openai_frontend/main.py",
) -> list[str]:
    """Command line of Triton's OpenAI-compatible frontend (images from 24.12 ship it; the
    --chat-template and --default-max-tokens flags came in 2025, see plan.frontend) over this
    repository: it runs Triton in-process, serves /v1 on ``openai_port`` and, with the KServe
    frontends, the usual HTTP and gRPC ports. Clients name ``ensemble`` or
    ``tensorrt_llm_bls`` as the model; every layout takes TensorRT-LLM's request format
    (``--backend=tensorrtllm``). Its Prometheus metrics are served on ``openai_port``
    (``/metrics``), not on a port of their own. ``default_max_tokens`` is what a request that
    leaves max_tokens out gets (the frontend's own default is 16)."""
    argv = [
        "python3",
        frontend,
        f"--model-repository={repository}",
        f"--tokenizer={tokenizer_dir}",
        f"--chat-template={repository}/preprocessing/1/{OPENAI_CHAT_TEMPLATE_FILE}",
        "--backend=tensorrtllm",
        f"--openai-port={openai_port}",
        "--enable-kserve-frontends",
        f"--kserve-http-port={http_port}",
        f"--kserve-grpc-port={grpc_port}",
    ]
    if default_max_tokens is not None:
        argv.append(f"--default-max-tokens={default_max_tokens}")
    return argv


def with_sources(repo: Mapping[PurePosixPath, str], **changes: str) -> Repository:
    """A copy of ``repo`` with some model files replaced (tests and the benchmark swap in a
    stand-in engine this way): ``with_sources(repo, tensorrt_llm="...")``."""
    out = dict(repo)
    for model, text in changes.items():
        out[_path(model, "1", "model.py")] = text
    return out


def configmap_key(path: PurePosixPath) -> str:
    """ConfigMap keys cannot contain '/': nested paths are joined with '__'."""
    key = str(path)
    if "__" in key:
        raise ValueError(f"{key}: '__' in a repository path would be ambiguous as a ConfigMap key")
    return key.replace("/", "__")


__all__ = [
    "LAYOUTS",
    "ChatFormat",
    "ModelSources",
    "Repository",
    "Settings",
    "build_repository",
    "chat_format",
    "configmap_key",
    "engine_layout",
    "llmapi_layout",
    "python_layout",
    "triton_openai_frontend_args",
    "vllm_layout",
    "with_sources",
]
