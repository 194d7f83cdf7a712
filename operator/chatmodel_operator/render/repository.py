"""The Triton model repository with the pod's paths: ``triton.build_repository`` pointed at the
checkpoint and engine where the serving Deployment mounts them on the cache volume. Here, above
both ``triton`` (the repository as data) and ``render.paths`` (the cache layout), so that
neither imports the other."""

from __future__ import annotations

from chatmodel_operator.api.spec import ChatModelSpec
from chatmodel_operator.catalog import ModelInfo
from chatmodel_operator.plan import Plan
from chatmodel_operator.render.paths import cache_paths
from chatmodel_operator.triton import Repository, build_repository


def build_repository_for(*, spec: ChatModelSpec, plan: Plan, model: ModelInfo) -> Repository:
    """``build_repository`` with the pod's paths: the checkpoint and engine on the cache volume
    (``render.paths``), as the serving Deployment mounts them."""
    paths = cache_paths(model.source, spec.model.source, plan.engine_key)
    if plan.route == "tensorrt-llm/engine":
        engine_dir = paths.engine
    elif (
        plan.route == "tensorrt-llm/llmapi" and plan.quantization == "fp8" and not plan.prequantized
    ):
        engine_dir = paths.quantized
    else:
        engine_dir = paths.checkpoint
    return build_repository(
        spec=spec,
        plan=plan,
        model_info=model,
        tokenizer_dir=paths.checkpoint,
        engine_dir=engine_dir,
    )
