"""GPU memory model: weights by precision, KV cache per token, runtime reserve and workspace.

All functions are pure and return bytes; ``gib`` converts for display. The constants are the
planner's policy, stated once here so that tests and `chatmodel plan` show the same numbers.
"""

from __future__ import annotations

from chatmodel_operator.catalog.architecture import Architecture

GIB = 1024**3

DTYPE_BYTES = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0, "fp8": 1.0, "int8": 1.0}

# CUDA context, cuBLAS/NCCL workspaces and the runtime's own buffers on each GPU.
RUNTIME_RESERVE_BYTES = int(0.75 * GIB)
# Fraction of the memory left after weights and reserve that the KV cache may take
# (TensorRT-LLM's kv_cache_free_gpu_mem_fraction default; vLLM uses a similar headroom).
KV_CACHE_FRACTION = 0.9
# Batched tokens per forward step when the spec does not say (TensorRT-LLM's default).
DEFAULT_MAX_NUM_TOKENS = 8192


def linear_bytes_per_param(quantization: str, group_size: int = 128) -> float:
    """Storage of one weight of the transformer blocks' matrices."""
    if quantization == "none":
        return 2.0
    if quantization in ("int8-weight-only", "fp8", "smoothquant"):
        return 1.0
    if quantization == "int4-weight-only":
        return 0.5
    # Grouped quantization stores an fp16 scale and a packed zero point per group.
    if quantization in ("int4-awq", "int4-gptq"):
        return 0.5 + (2 + 0.5) / group_size
    if quantization == "int8-gptq":
        return 1.0 + (2 + 1) / group_size
    raise ValueError(f"unknown quantization {quantization}")


def weights_bytes(arch: Architecture, quantization: str, dtype: str, group_size: int = 128) -> int:
    """All weights of the model. Embeddings, lm_head and norms stay in the 16-bit dtype."""
    act = DTYPE_BYTES[dtype]
    linear = arch.linear_params * linear_bytes_per_param(quantization, group_size)
    unquantized = (arch.embedding_params + arch.lm_head_params + arch.norm_params) * act
    return int(linear + unquantized)


def weights_per_gpu_bytes(
    arch: Architecture,
    quantization: str,
    dtype: str,
    tp: int,
    *,
    replicated_embedding: bool,
    group_size: int = 128,
) -> int:
    """Weights on one GPU under tensor parallelism.

    TensorRT-LLM engines keep the input embedding on every rank unless built with
    --use_parallel_embedding; vLLM and the PyTorch backend split it by vocabulary.
    """
    total = weights_bytes(arch, quantization, dtype, group_size)
    if not replicated_embedding or tp == 1:
        return total // tp
    emb = int(arch.embedding_params * DTYPE_BYTES[dtype])
    return (total - emb) // tp + emb


def kv_bytes_per_token(arch: Architecture, kv_dtype: str) -> int:
    """K and V of every layer for one token (grouped-query attention counts KV heads)."""
    return int(2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * DTYPE_BYTES[kv_dtype])


def kv_bytes_per_token_per_gpu(arch: Architecture, kv_dtype: str, tp: int) -> int:
    """KV heads are split across ranks; with fewer KV heads than ranks they are replicated."""
    heads_per_gpu = max(1, arch.num_kv_heads // tp)
    return int(2 * arch.num_layers * heads_per_gpu * arch.head_dim * DTYPE_BYTES[kv_dtype])


def workspace_bytes(
    arch: Architecture, dtype: str, tp: int, max_num_tokens: int, max_batch_size: int
) -> int:
    """Activation workspace of one forward step over max_num_tokens, and fp32 logits."""
    per_token = 3 * arch.hidden_size + 2 * arch.intermediate_size // tp
    activations = max_num_tokens * per_token * DTYPE_BYTES[dtype]
    logits = max_batch_size * (arch.vocab_size // tp) * 4
    return int(activations + logits)


def reserve_per_gpu_bytes(
    arch: Architecture, dtype: str, tp: int, max_num_tokens: int, max_batch_size: int
) -> int:
    return RUNTIME_RESERVE_BYTES + workspace_bytes(arch, dtype, tp, max_num_tokens, max_batch_size)


def cuda_graph_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Decode batch sizes llmapi mode captures CUDA graphs for: powers of two up to the plan's
    batch, and the batch itself (with padding on, a batch rounds up to the next size)."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch_size:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    return tuple(sizes)


def cuda_graph_pool_bytes(arch: Architecture, dtype: str, tp: int, max_graph_batch: int) -> int:
    """GPU memory the PyTorch backend's decode CUDA graphs hold, on one GPU.

    TensorRT-LLM's CUDA graph runner captures every graph into one memory pool, handing the
    pool of each capture to the next (``torch.cuda.graph(graph, pool=self.memory_pool)``, then
    ``self.memory_pool = graph.pool()``, tensorrt_llm/_torch/pyexecutor/cuda_graph_runner.py),
    so the pool is as large as the largest capture: one decode step of ``max_graph_batch``
    tokens, its activations and its fp32 logits. The backend's start-up profiling counts it
    as memory "used outside torch (e.g., NCCL and CUDA graphs)" before it sizes the KV cache
    (KvCacheCreator.estimate_max_tokens, tensorrt_llm/_torch/pyexecutor/_util.py).
    """
    return workspace_bytes(arch, dtype, tp, max_graph_batch, max_graph_batch)


def pytorch_backend_reserve_bytes(
    arch: Architecture, dtype: str, tp: int, max_num_tokens: int, max_batch_size: int
) -> int:
    """llmapi mode's reserve on one GPU: the runtime reserve, the activations of the backend's
    profiling step (max_num_tokens of context at once, which is what it measures as its
    activation peak before sizing the KV cache: KvCacheCreator.estimate_max_tokens) and the
    CUDA graph pool."""
    graphs = cuda_graph_pool_bytes(arch, dtype, tp, max(cuda_graph_batch_sizes(max_batch_size)))
    return reserve_per_gpu_bytes(arch, dtype, tp, max_num_tokens, max_batch_size) + graphs


def estimate_total_bytes(
    arch: Architecture,
    *,
    quantization: str,
    dtype: str,
    kv_dtype: str,
    batch: int,
    sequence_length: int,
    tp: int = 1,
    max_num_tokens: int | None = None,
    group_size: int = 128,
) -> int:
    """Memory in use on all GPUs of one replica holding ``batch`` sequences of a length."""
    tokens = (
        max_num_tokens
        if max_num_tokens is not None
        else min(DEFAULT_MAX_NUM_TOKENS, batch * sequence_length)
    )
    weights = weights_bytes(arch, quantization, dtype, group_size)
    reserve = tp * reserve_per_gpu_bytes(arch, dtype, tp, tokens, batch)
    kv = batch * sequence_length * kv_bytes_per_token(arch, kv_dtype)
    return weights + reserve + kv


def gib(n: float) -> float:
    return round(n / GIB, 1)
