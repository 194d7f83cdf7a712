"""The ChatModel API: pydantic models (the single source of truth) and the CRD built from them."""

from chatmodel_operator.api.spec import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    VERSION,
    ChatModel,
    ChatModelSpec,
    ChatModelStatus,
    parse_chatmodel,
    parse_spec,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAME",
    "SINGULAR",
    "VERSION",
    "ChatModel",
    "ChatModelSpec",
    "ChatModelStatus",
    "parse_chatmodel",
    "parse_spec",
]
