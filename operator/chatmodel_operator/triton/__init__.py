"""The Triton model repository as data (pure): layouts per backend, our config.pbtxt emitter
and the text processing our Python models share. See ``repository`` for the layouts."""

from chatmodel_operator.triton.repository import (
    LAYOUTS,
    ChatFormat,
    ModelSources,
    Repository,
    Settings,
    build_repository,
    chat_format,
    configmap_key,
    triton_openai_frontend_args,
    with_sources,
)

__all__ = [
    "LAYOUTS",
    "ChatFormat",
    "ModelSources",
    "Repository",
    "Settings",
    "build_repository",
    "chat_format",
    "configmap_key",
    "triton_openai_frontend_args",
    "with_sources",
]
