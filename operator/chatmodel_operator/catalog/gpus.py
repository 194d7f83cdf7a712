"""Known GPU products by their ``nvidia.com/gpu.product`` label: memory and compute capability."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPUProduct:
    label: str
    memory_gib: float
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


_PRODUCTS = [
    GPUProduct("NVIDIA-A100-SXM4-40GB", 40, (8, 0)),
    GPUProduct("NVIDIA-A100-PCIE-40GB", 40, (8, 0)),
    GPUProduct("NVIDIA-A100-SXM4-80GB", 80, (8, 0)),
    GPUProduct("NVIDIA-A100-80GB-PCIe", 80, (8, 0)),
    GPUProduct("NVIDIA-A800-SXM4-80GB", 80, (8, 0)),
    GPUProduct("NVIDIA-A800-SXM4-40GB", 40, (8, 0)),
    GPUProduct("NVIDIA-A30", 24, (8, 0)),
    GPUProduct("NVIDIA-A10", 24, (8, 6)),
    GPUProduct("NVIDIA-A10G", 24, (8, 6)),
    GPUProduct("NVIDIA-GeForce-RTX-3090", 24, (8, 6)),
    GPUProduct("NVIDIA-GeForce-RTX-4090", 24, (8, 9)),
    GPUProduct("NVIDIA-L4", 24, (8, 9)),
    GPUProduct("NVIDIA-L40", 48, (8, 9)),
    GPUProduct("NVIDIA-L40S", 48, (8, 9)),
    GPUProduct("NVIDIA-H100-80GB-HBM3", 80, (9, 0)),
    GPUProduct("NVIDIA-H100-PCIe", 80, (9, 0)),
    GPUProduct("NVIDIA-H100-NVL", 94, (9, 0)),
    GPUProduct("NVIDIA-H200", 141, (9, 0)),
    GPUProduct("NVIDIA-B200", 180, (10, 0)),
    GPUProduct("Tesla-T4", 16, (7, 5)),
    GPUProduct("Tesla-V100-SXM2-32GB", 32, (7, 0)),
]
PRODUCTS: dict[str, GPUProduct] = {p.label: p for p in _PRODUCTS}


def find_product(label: str | None) -> GPUProduct | None:
    """Exact label, else a case-insensitive match ignoring the NVIDIA-/Tesla- prefix."""
    if not label:
        return None
    if label in PRODUCTS:
        return PRODUCTS[label]

    def norm(s: str) -> str:
        return s.lower().removeprefix("nvidia-").removeprefix("tesla-")

    for p in _PRODUCTS:
        if norm(p.label) == norm(label):
            return p
    return None
