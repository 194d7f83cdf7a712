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
