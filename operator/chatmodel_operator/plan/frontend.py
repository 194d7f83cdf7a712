"""Whether the pods serve OpenAI's chat API through Triton's own OpenAI frontend (pure).

The frontend (``/opt/tritonserver/python/openai/openai_frontend/main.py``) runs Triton in its own
process and serves /v1 next to the KServe HTTP and gRPC ports. The operator passes it
``--chat-template`` (our envelope template, so that ``preprocessing`` applies the family's chat
format) and ``--default-max-tokens``; an image whose frontend lacks either flag would not start.
Where the frontend cannot run correctly the pods run plain tritonserver, which serves everything
but /v1.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatmodel_operator.catalog.triton_releases import RELEASES, find_release
from chatmodel_operator.catalog.triton_releases import release_text as _release
from chatmodel_operator.errors import Unsupported
from chatmodel_operator.plan.image import image_facts

__all__ = [
    "FRONTEND_FLAGS",
    "FRONTEND_SHIPPED",
    "REQUIRED_FLAGS",
    "OpenAIDecision",
    "decide_openai_frontend",
    "triton_release",
]

# NGC tritonserver images ship the frontend from 24.12 (server v2.53: build.py installs
# python/openai and its requirements into every image it builds).
FRONTEND_SHIPPED = (24, 12)
# The flags the operator passes. Which release's frontend takes them is in the table of
# releases (catalog.triton_releases): --chat-template from 25.05, --default-max-tokens from 25.08.
REQUIRED_FLAGS = ("--chat-template", "--default-max-tokens")
# The first release whose frontend takes both (25.08).
FRONTEND_FLAGS = next(r.release for r in RELEASES if r.takes_flags(*REQUIRED_FLAGS))


@dataclass(frozen=True)
class OpenAIDecision:
    enabled: bool
    reason: str
    warning: str | None = None


def triton_release(image: str) -> tuple[int, int] | None:
    """(year, month) of a tritonserver image tagged like NGC's (``.../tritonserver:25.08-...``,
    from any registry or mirror, digest allowed); None for anything else, which could be any
    build."""
    return image_facts(image).release


def decide_openai_frontend(
    *, mode: str, image: str, tokenizer_remote_code: bool | None
) -> OpenAIDecision:
    """spec.serving.openai (Auto, Enabled, Disabled) applied to the serving image and tokenizer.

    Raises Unsupported when Enabled asks for what cannot start: an NGC image older than the
    frontend, or a tokenizer that is the checkpoint's own code (the frontend loads tokenizers
    with ``trust_remote_code`` off, and would exit)."""
    if mode == "Disabled":
        return OpenAIDecision(False, "spec.serving.openai is Disabled: plain tritonserver")
    release = triton_release(image)
    row = find_release(release) if release else None
    flags = ", ".join(REQUIRED_FLAGS)
    if mode == "Enabled":
        if release is not None and release < FRONTEND_SHIPPED:
            raise Unsupported(
                "spec.serving.openai",
                f"{image} ships no OpenAI frontend (NGC images have it from "
                f"{_release(FRONTEND_SHIPPED)})",
                f"use an image from {_release(FRONTEND_FLAGS)} (spec.engine.image), or set "
                "spec.serving.openai to Auto or Disabled",
            )
        if tokenizer_remote_code:
            raise Unsupported(
                "spec.serving.openai",
                "Triton's OpenAI frontend loads tokenizers without trust_remote_code, and this "
                "checkpoint's tokenizer is its own code",
                "set spec.serving.openai to Auto or Disabled (the KServe generate endpoints "
                "serve this model)",
            )
        warning = None
        if row is not None and row.takes_flags(*REQUIRED_FLAGS) is False:
            warning = (
                f"spec.serving.openai is Enabled on {image}: the frontend of "
                f"{_release(row.release)} does not take {flags}, which the pods pass"
            )
        return OpenAIDecision(True, "spec.serving.openai is Enabled", warning)
    if release is None:
        return OpenAIDecision(
            False,
            f"{image} is not an NGC tritonserver release tag, so whether it ships Triton's "
            "OpenAI frontend cannot be told: plain tritonserver (spec.serving.openai: Enabled "
            "runs the frontend)",
        )
    if release < FRONTEND_SHIPPED:
        return OpenAIDecision(
            False,
            f"{image} is older than {_release(FRONTEND_SHIPPED)}, the first release that ships "
            "Triton's OpenAI frontend: plain tritonserver",
        )
    takes = row.takes_flags(*REQUIRED_FLAGS) if row is not None else None
    if takes is None:
        return OpenAIDecision(
            False,
            f"the flags of {_release(release)}'s OpenAI frontend are not documented, so whether "
            f"it takes {flags} cannot be told: plain tritonserver (spec.serving.openai: "
            "Enabled runs the frontend)",
        )
    if not takes:
        return OpenAIDecision(
            False,
            f"the OpenAI frontend of {_release(release)} does not take {flags} ("
            f"{_release(FRONTEND_FLAGS)} is the first that does): plain tritonserver",
        )
    if tokenizer_remote_code is None:
        return OpenAIDecision(
            False,
            "the checkpoint ships its own code and its tokenizer_config.json was not read, so "
            "whether Triton's OpenAI frontend can load the tokenizer (it never runs checkpoint "
            "code) cannot be told: plain tritonserver (spec.serving.openai: Enabled runs it)",
        )
    if tokenizer_remote_code:
        return OpenAIDecision(
            False,
            "the tokenizer is the checkpoint's own code, which Triton's OpenAI frontend never "
            "runs: plain tritonserver",
        )
    return OpenAIDecision(
        True, f"NGC release {_release(release)} ships Triton's OpenAI frontend, taking {flags}"
    )
