"""The planner (pure): from spec and model facts to backend, precision, GPUs and KV budget.

Policy: the fewest GPUs (a power of two that divides the attention and KV heads) whose memory
holds the weights, a runtime reserve and workspace, and the KV cache of at least one
full-length sequence. Every decision carries its reason, so the same text feeds the log, the
status condition and `chatmodel plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chatmodel_operator.api.spec import ChatModelSpec
from chatmodel_operator.catalog import GPUProduct, ModelInfo, find_product, resolve_model
from chatmodel_operator.catalog.support import (
    KV_DTYPE_BY_BACKEND,
    NEEDS_PREQUANTIZED,
    QUANT_BY_BACKEND,
    architecture_support,
)
from chatmodel_operator.catalog.triton_releases import RELEASES, TritonRelease
from chatmodel_operator.errors import SpecError, Unsupported
from chatmodel_operator.plan import memory as mem
from chatmodel_operator.plan.engine_key import engine_key
from chatmodel_operator.plan.frontend import decide_openai_frontend
from chatmodel_operator.plan.image import (
    RouteCheck,
    check_route,
    default_image,
    default_release,
    image_facts,
)

__all__ = ["DEFAULT_IMAGES", "GPUTarget", "Plan", "gpu_target", "plan_model", "plan_spec"]

# Triton images per route when spec.engine.image is unset: the newest release of the table
# (catalog.triton_releases) whose TensorRT-LLM is documented and that runs the route.
DEFAULT_IMAGES = {
    route: default_image(route)
    for route in ("tensorrt-llm/engine", "tensorrt-llm/llmapi", "vllm", "python")
}
TP_CHOICES = (1, 2, 4, 8)
FP8_MIN_CC = (8, 9)
BF16_MIN_CC = (8, 0)


@dataclass(frozen=True)
class GPUTarget:
    memory_gib: float
    product: str | None
    compute_capability: tuple[int, int] | None

    @property
    def arch_tag(self) -> str:
        """What an engine is specific to: the SM version when known, else the product/memory."""
        if self.compute_capability:
            return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"
        return self.product or f"{self.memory_gib:g}GiB"


@dataclass(frozen=True)
class Plan:
    fits: bool
    reasons: tuple[str, ...]
    backend: str
    mode: str | None
    mode_reason: str | None
    backend_reason: str | None
    family: str | None
    architecture: str
    dtype: str
    quantization: str
    kv_cache_dtype: str
    gpus_per_replica: int
    tensor_parallelism: int
    gpu_memory_gib: float
    gpu_product: str | None
    weights_gib: float
    weights_per_gpu_gib: float
    reserve_per_gpu_gib: float
    kv_cache_bytes_per_token: int
    kv_cache_tokens: int
    max_input_length: int
    max_output_length: int
    max_sequence_length: int
    max_batch_size: int
    max_num_tokens: int
    max_concurrent_sequences: int
    kv_cache_free_gpu_mem_fraction: float
    engine_key: str
    image: str
    trust_remote_code: bool
    prequantized: bool = False
    cuda_graph_batch_sizes: tuple[int, ...] = ()
    """llmapi mode: decode batch sizes captured as CUDA graphs (empty: none)."""
    chunked_prefill: bool = False
    """llmapi mode: long prompts are prefilled in chunks of max_num_tokens."""
    runtime_cache_key: str | None = None
    """llmapi mode: hash of what the LLM API compiles and tunes at start-up; names the cache
    directory those caches persist in."""
    openai_frontend: bool = False
    """The pods run Triton's OpenAI frontend (/v1 next to KServe); else plain tritonserver."""
    openai_frontend_reason: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def route(self) -> str:
        return f"{self.backend}/{self.mode}" if self.backend == "tensorrt-llm" else self.backend

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_status(self) -> dict[str, Any]:
        """The shape of status.plan (camelCase), also what `chatmodel plan -o json` prints.
        Unset values are left out, as Kubernetes status fields are optional, not null."""
        out = {
            "fits": self.fits,
            "reason": self.reason,
            "backend": self.backend,
            "mode": self.mode,
            "modeReason": self.mode_reason,
            "image": self.image,
            "backendReason": self.backend_reason,
            "family": self.family,
            "architecture": self.architecture,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "kvCacheDtype": self.kv_cache_dtype,
            "gpusPerReplica": self.gpus_per_replica,
            "tensorParallelism": self.tensor_parallelism,
            "gpuMemoryGiB": self.gpu_memory_gib,
            "weightsGiB": self.weights_gib,
            "weightsPerGpuGiB": self.weights_per_gpu_gib,
            "reservePerGpuGiB": self.reserve_per_gpu_gib,
            "kvCacheBytesPerToken": self.kv_cache_bytes_per_token,
            "kvCacheTokens": self.kv_cache_tokens,
            "maxSequenceLength": self.max_sequence_length,
            "maxInputLength": self.max_input_length,
            "maxOutputLength": self.max_output_length,
            "maxConcurrentSequences": self.max_concurrent_sequences,
            "engineKey": self.engine_key,
            "openaiFrontend": self.openai_frontend,
            "openaiFrontendReason": self.openai_frontend_reason or None,
            "warnings": list(self.warnings),
        }
        return {k: v for k, v in out.items() if v is not None}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gpu_target(
    spec: ChatModelSpec, *, memory_gib: float | None = None, product: str | None = None
) -> GPUTarget:
    """GPU memory and compute capability from the spec, overridable (CLI flags)."""
    label = product or spec.resources.gpu.product
    known: GPUProduct | None = find_product(label)
    mem_gib = memory_gib or spec.resources.gpu.memory_gi_b or (known.memory_gib if known else None)
    if mem_gib is None:
        if label:
            raise SpecError(
                "spec.resources.gpu.memoryGiB",
                f"GPU product {label!r} is not in the catalog, so its memory is unknown",
                "set resources.gpu.memoryGiB to the memory of one GPU in GiB",
            )
        raise SpecError(
            "spec.resources.gpu",
            "neither product nor memoryGiB is set, so the planner cannot size the deployment",
            "set resources.gpu.product (the nvidia.com/gpu.product label, e.g. "
            "NVIDIA-A100-SXM4-80GB) or resources.gpu.memoryGiB",
        )
    return GPUTarget(
        memory_gib=float(mem_gib),
        product=known.label if known else label,
        compute_capability=known.compute_capability if known else None,
    )


def _cc_text(gpu: GPUTarget) -> str:
    assert gpu.compute_capability
    return f"{gpu.product} is {gpu.compute_capability[0]}.{gpu.compute_capability[1]}"


def _resolve_quantization(spec: ChatModelSpec, model: ModelInfo, gpu: GPUTarget) -> str:
    pre = model.arch.pre_quantization
    asked = spec.engine.quantization
    if asked == "auto":
        return pre.name if pre else "none"
    if pre and asked != pre.name:
        raise Unsupported(
            "spec.engine.quantization",
            f"the checkpoint is already quantized ({pre.name}) and cannot be re-quantized "
            f"to {asked}",
            f"set engine.quantization to auto or {pre.name}, or use the unquantized checkpoint",
        )
    if asked == "fp8" and gpu.compute_capability and gpu.compute_capability < FP8_MIN_CC:
        raise Unsupported(
            "spec.engine.quantization",
            f"fp8 needs compute capability 8.9 or newer (Ada, Hopper, Blackwell); {_cc_text(gpu)}",
            "use int8-weight-only, int4-awq or smoothquant, or GPUs such as H100 or L40S",
        )
    return asked


def _resolve_kv_dtype(spec: ChatModelSpec, dtype: str, gpu: GPUTarget) -> str:
    kv = spec.engine.kv_cache_dtype
    if kv == "fp8" and gpu.compute_capability and gpu.compute_capability < FP8_MIN_CC:
        raise Unsupported(
            "spec.engine.kvCacheDtype",
            f"an fp8 KV cache needs compute capability 8.9 or newer; {_cc_text(gpu)}",
            "use auto or int8 (TensorRT-LLM engine mode)",
        )
    return dtype if kv == "auto" else kv


def _resolve_dtype(spec: ChatModelSpec, model: ModelInfo, gpu: GPUTarget, quant: str) -> str:
    asked = spec.engine.dtype
    old_gpu = gpu.compute_capability is not None and gpu.compute_capability < BF16_MIN_CC
    if asked == "auto":
        ckpt = (model.arch.torch_dtype or "").replace("torch.", "")
        if quant in ("int4-awq", "int4-gptq", "int8-gptq") or old_gpu:
            return "float16"  # AWQ/GPTQ kernels run in fp16; pre-Ampere GPUs lack bf16
        return ckpt if ckpt in ("bfloat16", "float16") else "float16"
    if asked == "bfloat16" and old_gpu:
        raise Unsupported(
            "spec.engine.dtype",
            f"bfloat16 needs compute capability 8.0 or newer; {_cc_text(gpu)}",
            "set engine.dtype to float16",
        )
    return asked


def _route_problem(route: str, model: ModelInfo, quant: str, kv_dtype: str) -> str | None:
    """Why ``route`` cannot serve this model with this precision, or None if it can."""
    support = architecture_support(model.arch, route)
    if not support.ok:
        return support.reason
    name = {
        "tensorrt-llm/engine": "TensorRT-LLM engine mode",
        "tensorrt-llm/llmapi": "TensorRT-LLM llmapi mode",
        "vllm": "vLLM",
        "python": "the Python backend",
    }[route]
    if quant not in QUANT_BY_BACKEND[route]:
        allowed = ", ".join(sorted(QUANT_BY_BACKEND[route]))
        return f"{name} does not serve {quant} weights (it serves {allowed})"
    if quant in NEEDS_PREQUANTIZED[route] and model.arch.pre_quantization is None:
        return f"{name} loads {quant} only from a pre-quantized checkpoint"
    if kv_dtype not in KV_DTYPE_BY_BACKEND[route] and kv_dtype not in ("bfloat16", "float16"):
        return f"{name} has no {kv_dtype} KV cache"
    return None


@dataclass(frozen=True)
class _Route:
    route: str
    image: str
    mode_reason: str | None  # why this TensorRT-LLM mode, for tensorrt-llm routes
    note: str | None = None  # why the default image is not the newest release


def _mode_reason(route: str, check: RouteCheck, explicit: bool) -> str:
    mode = route.split("/")[1]
    if explicit:
        trusted = "" if check.ok else " (trusted: " + check.reason + ")"
        return f"spec.engine.mode is {mode}{trusted}"
    return f"{check.reason}: {mode} mode"


def _explicit_mode_check(spec: ChatModelSpec, releases: Sequence[TritonRelease]) -> None:
    """An explicit mode the image is documented (or known) not to run fails here."""
    e = spec.engine
    if e.mode == "auto" or e.backend not in ("auto", "tensorrt-llm"):
        return
    route = f"tensorrt-llm/{e.mode}"
    image = e.image or default_image(route, releases)
    check = check_route(route, image_facts(image, releases))
    if check.ok is False:
        other = "llmapi" if e.mode == "engine" else "engine"
        best = default_image(route, releases)
        raise Unsupported(
            "spec.engine.mode",
            f"{e.mode} mode cannot run on spec.engine.image {image}: {check.reason}",
            f"set engine.mode to auto or {other}, or engine.image to {best} (the newest "
            f"release documented to run {e.mode} mode)",
        )


def _candidates(spec: ChatModelSpec, releases: Sequence[TritonRelease]) -> list[_Route]:
    """Routes to try in order, each with the image it would run and why that mode."""
    e = spec.engine
    trt: list[_Route] = []
    skipped: str | None = None  # why auto passed over engine mode on this image
    if e.backend in ("auto", "tensorrt-llm"):
        modes = ["engine", "llmapi"] if e.mode == "auto" else [e.mode]
        if e.mode == "auto" and e.image is None:
            newest = default_release("tensorrt-llm/llmapi", releases)
            engine_rel = default_release("tensorrt-llm/engine", releases)
            if engine_rel.release != newest.release:
                # The newest release lost the engine path: llmapi there first, engine mode on
                # the older release only for what llmapi cannot serve.
                modes = ["llmapi", "engine"]
        for mode in modes:
            route = f"tensorrt-llm/{mode}"
            image = e.image or default_image(route, releases)
            facts = image_facts(image, releases)
            check = check_route(route, facts)
            explicit = e.mode != "auto"
            if not facts.ngc and not explicit:
                # A custom build: auto cannot tell whether it has trtllm-build; the LLM API is
                # TensorRT-LLM's surviving path.
                if mode == "engine":
                    continue
                reason = (
                    f"{image} is not an NGC release tag, so auto cannot tell whether it has "
                    "the engine tools: llmapi mode (set spec.engine.mode to engine if it has)"
                )
                trt.append(_Route(route, image, reason))
                continue
            if check.ok is False and not explicit:
                skipped = skipped or check.reason
                continue
            note = None
            if e.image is None and mode == "engine" and modes[0] == "llmapi":
                newest_image = default_image("tensorrt-llm/llmapi", releases)
                note = (
                    f"kept {image} for engine mode, which {newest_image} does not carry and "
                    "this model needs"
                )
            reason = _mode_reason(route, check, explicit)
            if skipped and mode == "llmapi":
                reason = f"{skipped}: llmapi mode"
            trt.append(_Route(route, image, reason, note))
    others: list[str] = []
    if e.backend == "auto":
        others = ["vllm", "python"]
    elif e.backend in ("vllm", "python"):
        others = [e.backend]
    for route in others:
        image = e.image or default_image(route, releases)
        check = check_route(route, image_facts(image, releases))
        if check.ok is False:
            if e.backend == "auto":
                continue
            raise Unsupported(
                "spec.engine.image",
                f"engine.backend {route} cannot run on {image}: {check.reason}",
                f"set engine.image to {default_image(route, releases)} or leave it unset",
            )
        trt.append(_Route(route, image, None))
    return trt


def _choose_route(
    spec: ChatModelSpec,
    model: ModelInfo,
    quant: str,
    kv_dtype: str,
    releases: Sequence[TritonRelease] = RELEASES,
) -> tuple[_Route, str | None]:
    e = spec.engine
    _explicit_mode_check(spec, releases)
    candidates = _candidates(spec, releases)
    if not candidates:
        image = e.image or "the default image"
        raise Unsupported(
            "spec.engine.image",
            f"no backend this operator drives runs on {image}",
            "use an NGC -trtllm-python-py3 or -vllm-python-py3 image, or leave engine.image unset",
        )
    rejected: list[str] = []
    for cand in candidates:
        problem = _route_problem(cand.route, model, quant, kv_dtype)
        if problem is None:
            note = None
            if rejected:
                backend = cand.route.split("/")[0]
                mode = f" ({cand.route.split('/')[1]})" if "/" in cand.route else ""
                note = "; ".join(rejected) + f"; serving with {backend}{mode} instead"
            return cand, note
        rejected.append(problem)
    if e.backend == "auto":
        raise Unsupported(
            "spec.engine.quantization",
            "no backend serves this model with these settings: " + "; ".join(rejected),
            "use engine.quantization auto or none",
        )
    # Explicit choice: say why, and what auto would pick.
    tried = {c.route for c in candidates}
    alternative = None
    for route in ("tensorrt-llm/engine", "tensorrt-llm/llmapi", "vllm", "python"):
        if route not in tried and _route_problem(route, model, quant, kv_dtype) is None:
            alternative = route
            break
    fix = (
        f"set engine.backend to auto (it would pick {alternative})"
        if alternative
        else "change engine.quantization or engine.kvCacheDtype"
    )
    field_name = (
        "spec.engine.mode"
        if e.backend == "tensorrt-llm" and alternative == "tensorrt-llm/llmapi"
        else "spec.engine.backend"
    )
    raise Unsupported(field_name, rejected[0], fix)


def _tp_candidates(spec: ChatModelSpec, model: ModelInfo) -> list[int]:
    a = model.arch
    fixed = spec.engine.tensor_parallelism
    if fixed == "auto":
        fixed = spec.resources.gpu.count
    valid = [tp for tp in TP_CHOICES if a.num_heads % tp == 0 and a.num_kv_heads % tp == 0]
    if fixed != "auto":
        if fixed not in valid:
            raise Unsupported(
                "spec.engine.tensorParallelism",
                f"{fixed} does not divide the model's {a.num_heads} attention heads and "
                f"{a.num_kv_heads} KV heads",
                f"use one of {', '.join(map(str, valid))} or auto",
            )
        return [fixed]
    return valid


@dataclass(frozen=True)
class _Sizing:
    tp: int
    weights_per_gpu: int
    reserve_per_gpu: int
    kv_per_token_per_gpu: int
    kv_tokens: int

    def fits(self, seq: int) -> bool:
        return self.kv_tokens >= seq


def _size(
    model: ModelInfo,
    quant: str,
    dtype: str,
    kv_dtype: str,
    tp: int,
    gpu: GPUTarget,
    max_num_tokens: int,
    max_batch: int,
    route: str,
) -> _Sizing:
    a = model.arch
    group = (
        a.pre_quantization.group_size
        if a.pre_quantization and a.pre_quantization.group_size
        else 128
    )
    w = mem.weights_per_gpu_bytes(
        a, quant, dtype, tp, replicated_embedding=route == "tensorrt-llm/engine", group_size=group
    )
    if route == "tensorrt-llm/llmapi":
        r = mem.pytorch_backend_reserve_bytes(a, dtype, tp, max_num_tokens, max_batch)
    else:
        r = mem.reserve_per_gpu_bytes(a, dtype, tp, max_num_tokens, max_batch)
    kv_tok = mem.kv_bytes_per_token_per_gpu(a, kv_dtype, tp)
    free = gpu.memory_gib * mem.GIB - w - r
    tokens = int(max(0.0, free) * mem.KV_CACHE_FRACTION // kv_tok)
    return _Sizing(tp, w, r, kv_tok, tokens)


def _lengths(spec: ChatModelSpec, model: ModelInfo) -> tuple[int, int]:
    ctx = model.arch.context_length
    out = spec.engine.max_output_length
    inp = spec.engine.max_input_length
    if out is None:
        out = min(2048, max(1, ctx // 4)) if inp is None else max(1, min(2048, ctx - inp))
    if inp is None:
        inp = max(16, ctx - out)
    if inp + out > ctx:
        raise SpecError(
            "spec.engine.maxInputLength",
            f"maxInputLength {inp} + maxOutputLength {out} = {inp + out} exceeds the model's "
            f"context of {ctx} tokens",
            f"lower them so that their sum is at most {ctx}",
        )
    return inp, out


def plan_spec(
    spec: ChatModelSpec,
    model: ModelInfo,
    *,
    gpu_memory_gib: float | None = None,
    gpu_product: str | None = None,
    releases: Sequence[TritonRelease] = RELEASES,
) -> Plan:
    """Plan one ChatModel. Raises SpecError/Unsupported for impossible explicit choices;
    returns a Plan with fits=False (and the numbers) when nothing fits. ``releases`` is the
    table of NGC releases the image is judged by (tests pass their own)."""
    gpu = gpu_target(spec, memory_gib=gpu_memory_gib, product=gpu_product)
    quant = _resolve_quantization(spec, model, gpu)
    dtype = _resolve_dtype(spec, model, gpu, quant)
    kv_dtype = _resolve_kv_dtype(spec, dtype, gpu)
    chosen_route, backend_note = _choose_route(spec, model, quant, kv_dtype, releases)
    route, image = chosen_route.route, chosen_route.image
    max_in, max_out = _lengths(spec, model)
    seq = max_in + max_out
    max_batch = spec.engine.max_batch_size
    max_num_tokens = max(mem.DEFAULT_MAX_NUM_TOKENS, max_in)
    a = model.arch

    weights_total = mem.weights_bytes(
        a,
        quant,
        dtype,
        a.pre_quantization.group_size
        if a.pre_quantization and a.pre_quantization.group_size
        else 128,
    )
    kv_token_total = mem.kv_bytes_per_token(a, kv_dtype)
    sizes = [
        _size(model, quant, dtype, kv_dtype, tp, gpu, max_num_tokens, max_batch, route)
        for tp in _tp_candidates(spec, model)
    ]
    chosen = next((s for s in sizes if s.fits(seq)), None)
    best = chosen or sizes[-1]
    need_line = (
        f"{mem.gib(weights_total)} GiB of weights ({quant if quant != 'none' else dtype}) + "
        f"{mem.gib(seq * kv_token_total)} GiB KV per {seq}-token sequence"
    )
    reasons: list[str] = []
    warnings: list[str] = []
    if chosen:
        per_gpu = (
            f"{mem.gib(chosen.weights_per_gpu)} GiB weights + "
            f"{mem.gib(chosen.reserve_per_gpu)} GiB reserve + "
            f"{mem.gib(seq * chosen.kv_per_token_per_gpu)} GiB KV per GPU"
        )
        reasons.append(f"{need_line}; {per_gpu} fits {chosen.tp} x {gpu.memory_gib:g} GiB")
        smaller = [s for s in sizes if s.tp < chosen.tp]
        if smaller:
            reasons.append(_short_of(smaller[-1], gpu, seq))
    else:
        reasons.append(f"needs {need_line}; {_short_of(best, gpu, seq)}")
        reasons.extend(
            _suggestions(
                spec, model, gpu, route, dtype, kv_dtype, seq, max_num_tokens, max_batch, quant
            )
        )
    if backend_note:
        warnings.append(backend_note)
    # vLLM maps XverseForCausalLM onto its own Llama code; everything else with an auto_map
    # needs the checkpoint's Python code, which we never run without the user's consent.
    needs_code = model.trust_remote_code and not (
        route == "vllm" and a.architecture in ("XverseForCausalLM",)
    )
    if needs_code and not spec.model.trust_remote_code:
        raise Unsupported(
            "spec.model.trustRemoteCode",
            f"{model.source.display_name} needs its own modelling code to load on "
            f"{route.split('/')[0]}",
            "set spec.model.trustRemoteCode: true if you trust the checkpoint's code",
        )
    concurrent = min(max_batch, best.kv_tokens // seq) if seq else 0
    key_inputs: dict[str, Any] = {
        "source": spec.model.source,
        "route": route,
        "quantization": quant,
    }
    if route == "tensorrt-llm/engine":
        key_inputs |= {
            "dtype": dtype,
            "kvCacheDtype": kv_dtype,
            "tp": best.tp,
            "maxInputLength": max_in,
            "maxOutputLength": max_out,
            "maxBatchSize": max_batch,
            "maxNumTokens": max_num_tokens,
            "image": image,
            "gpu": gpu.arch_tag,
        }
    fraction = round(mem.KV_CACHE_FRACTION, 2)
    graphs: tuple[int, ...] = ()
    runtime_key = None
    if route == "tensorrt-llm/llmapi":
        graphs = mem.cuda_graph_batch_sizes(max_batch)
        runtime_key = engine_key(
            {
                "route": route,
                "image": image,
                "gpu": gpu.arch_tag,
                "tp": best.tp,
                "dtype": dtype,
                "quantization": quant,
                "kvCacheDtype": kv_dtype,
                "maxBatchSize": max_batch,
                "maxNumTokens": max_num_tokens,
                "maxSequenceLength": seq,
                "cudaGraphBatchSizes": list(graphs),
                "source": spec.model.source,
            }
        )
    if chosen_route.note:
        warnings.append(chosen_route.note)
    openai = decide_openai_frontend(
        mode=spec.serving.openai, image=image, tokenizer_remote_code=model.tokenizer_remote_code
    )
    if openai.warning:
        warnings.append(openai.warning)
    return Plan(
        fits=chosen is not None,
        reasons=tuple(reasons),
        backend=route.split("/")[0],
        mode=route.split("/")[1] if "/" in route else None,
        mode_reason=chosen_route.mode_reason,
        backend_reason=backend_note,
        family=model.family.name if model.family else None,
        architecture=a.architecture,
        dtype=dtype,
        quantization=quant,
        kv_cache_dtype=kv_dtype,
        gpus_per_replica=best.tp,
        tensor_parallelism=best.tp,
        gpu_memory_gib=gpu.memory_gib,
        gpu_product=gpu.product,
        weights_gib=mem.gib(weights_total),
        weights_per_gpu_gib=mem.gib(best.weights_per_gpu),
        reserve_per_gpu_gib=mem.gib(best.reserve_per_gpu),
        kv_cache_bytes_per_token=kv_token_total,
        kv_cache_tokens=best.kv_tokens,
        max_input_length=max_in,
        max_output_length=max_out,
        max_sequence_length=seq,
        max_batch_size=max_batch,
        max_num_tokens=max_num_tokens,
        max_concurrent_sequences=max(0, concurrent),
        kv_cache_free_gpu_mem_fraction=fraction,
        engine_key=engine_key(key_inputs),
        image=image,
        trust_remote_code=spec.model.trust_remote_code,
        prequantized=a.pre_quantization is not None,
        cuda_graph_batch_sizes=graphs,
        chunked_prefill=route == "tensorrt-llm/llmapi",
        runtime_cache_key=runtime_key,
        openai_frontend=openai.enabled,
        openai_frontend_reason=openai.reason,
        warnings=tuple(warnings),
    )


def _short_of(s: _Sizing, gpu: GPUTarget, seq: int) -> str:
    head = f"{s.tp} x {gpu.memory_gib:g} GiB"
    if s.kv_tokens == 0:
        return (
            f"{head} is too small: {mem.gib(s.weights_per_gpu)} GiB weights + "
            f"{mem.gib(s.reserve_per_gpu)} GiB reserve per GPU leave no room for the KV cache"
        )
    return f"{head} holds {s.kv_tokens} KV tokens, fewer than one {seq}-token sequence"


def _suggestions(
    spec: ChatModelSpec,
    model: ModelInfo,
    gpu: GPUTarget,
    route: str,
    dtype: str,
    kv_dtype: str,
    seq: int,
    max_num_tokens: int,
    max_batch: int,
    quant: str,
) -> list[str]:
    """What would fit: more GPUs, or a lighter quantization on as few GPUs as possible."""
    out: list[str] = []
    valid = [
        tp
        for tp in TP_CHOICES
        if model.arch.num_heads % tp == 0 and model.arch.num_kv_heads % tp == 0
    ]
    for tp in valid:
        s = _size(model, quant, dtype, kv_dtype, tp, gpu, max_num_tokens, max_batch, route)
        if s.fits(seq):
            if spec.resources.gpu.count != "auto" or spec.engine.tensor_parallelism != "auto":
                out.append(f"{tp} x {gpu.memory_gib:g} GiB GPUs would fit")
            break
    else:
        out.append(f"even {valid[-1]} x {gpu.memory_gib:g} GiB GPUs do not hold it")
    if model.arch.pre_quantization is None:
        options = ["int8-weight-only", "int4-awq", "fp8"]
        for q in options:
            if q == quant or (
                q == "fp8" and gpu.compute_capability and gpu.compute_capability < FP8_MIN_CC
            ):
                continue
            # Suggest only what some backend can really serve for this architecture.
            routes = [
                r
                for r in ("tensorrt-llm/engine", "tensorrt-llm/llmapi", "vllm", "python")
                if _route_problem(r, model, q, kv_dtype) is None
            ]
            if not routes:
                continue
            for tp in valid:
                s = _size(
                    model,
                    q,
                    "float16" if q.startswith("int4") else dtype,
                    kv_dtype,
                    tp,
                    gpu,
                    max_num_tokens,
                    max_batch,
                    routes[0],
                )
                if s.fits(seq):
                    out.append(f"or {q} on {tp} x {gpu.memory_gib:g} GiB")
                    break
            if len(out) >= 3:
                break
    if seq > 2048:
        out.append("or a shorter engine.maxInputLength")
    return out


def plan_model(
    spec: ChatModelSpec,
    *,
    config: Any = None,
    tokenizer_config: Any = None,
    gpu_memory_gib: float | None = None,
    gpu_product: str | None = None,
) -> tuple[ModelInfo, Plan]:
    """Resolve the model (catalog or the checkpoint's own config) and plan it."""
    model = resolve_model(spec.model, config=config, tokenizer_config=tokenizer_config)
    return model, plan_spec(spec, model, gpu_memory_gib=gpu_memory_gib, gpu_product=gpu_product)
