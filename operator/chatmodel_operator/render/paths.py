"""Where things live on the cache volume and in the pods."""

from __future__ import annotations

from dataclasses import dataclass

from chatmodel_operator.catalog.source import Source
from chatmodel_operator.render.labels import source_dir_name

CACHE_MOUNT = "/cache"
SOURCE_MOUNT = "/source"  # a pvc:// checkpoint, mounted read-only
MODEL_REPOSITORY_MOUNT = "/models"
# The writable emptyDir of every container (the root filesystem is read-only): HOME, TMPDIR
# and the caches (render.security.WRITABLE_PATHS).
SCRATCH_MOUNT = "/tmp"
# llmapi mode: what TensorRT-LLM's PyTorch backend compiles and tunes at start-up, persisted on
# the cache volume under the plan's runtime cache key (cache/runtime/<key>), so that a restart
# or a second replica reads it instead of redoing it.
RUNTIME_CACHE_MOUNT = "/runtime-cache"
RUNTIME_CACHE_ENV = (
    # The autotuner's choices of GEMM tactics: read and written by the model engine's warm-up
    # (autotune(cache_path=os.environ.get("TLLM_AUTOTUNER_CACHE_PATH")), tensorrt_llm/_torch/
    # pyexecutor/model_engine.py) where the installed TensorRT-LLM has it; older ones ignore it.
    ("TLLM_AUTOTUNER_CACHE_PATH", f"{RUNTIME_CACHE_MOUNT}/autotuner.cache"),
    # torch.compile / Inductor and OpenAI Triton kernels (PyTorch's and Triton's own variables).
    ("TORCHINDUCTOR_CACHE_DIR", f"{RUNTIME_CACHE_MOUNT}/inductor"),
    ("TRITON_CACHE_DIR", f"{RUNTIME_CACHE_MOUNT}/triton"),
    # JIT-compiled torch extensions and FlashInfer kernels.
    ("TORCH_EXTENSIONS_DIR", f"{RUNTIME_CACHE_MOUNT}/torch-extensions"),
    ("FLASHINFER_WORKSPACE_BASE", f"{RUNTIME_CACHE_MOUNT}/flashinfer"),
    # The CUDA driver's PTX JIT cache.
    ("CUDA_CACHE_PATH", f"{RUNTIME_CACHE_MOUNT}/cuda"),
)


def runtime_cache_subpath(key: str) -> str:
    """Directory on the cache volume for one runtime cache key."""
    return f"runtime/{key}"


@dataclass(frozen=True)
class CachePaths:
    checkpoint: str  # Hugging Face checkpoint directory (weights, config, tokenizer)
    engine_root: str  # everything built for one engine key
    downloaded: bool  # whether the Job downloads the checkpoint into the cache

    @property
    def engine(self) -> str:
        return f"{self.engine_root}/engine"

    @property
    def trtllm_checkpoint(self) -> str:
        return f"{self.engine_root}/trtllm-checkpoint"

    @property
    def quantized(self) -> str:
        """A re-quantized Hugging Face checkpoint (llmapi mode with quantization)."""
        return f"{self.engine_root}/quantized"


def cache_paths(source: Source, uri: str, engine_key: str) -> CachePaths:
    if source.scheme == "pvc":
        ckpt = f"{SOURCE_MOUNT}/{source.claim_path}".rstrip("/")
        downloaded = False
    elif source.scheme == "file":
        ckpt, downloaded = source.location, False
    else:
        ckpt, downloaded = f"{CACHE_MOUNT}/checkpoints/{source_dir_name(uri)}", True
    return CachePaths(
        checkpoint=ckpt, engine_root=f"{CACHE_MOUNT}/engines/{engine_key}", downloaded=downloaded
    )
