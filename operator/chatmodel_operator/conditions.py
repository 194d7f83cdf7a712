"""Status conditions of a ChatModel and the scrubbing of secrets from anything the operator
writes (status, Events, logs)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

# Conditions in the order `kubectl describe` shows them; Ready is the roll-up.
CONDITION_TYPES = (
    "Validated",
    "Planned",
    "EngineBuilding",
    "EngineReady",
    "EngineBuildFailed",
    "Available",
    "InferencePoolReady",
    "Ready",
)
_REASON_OK = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
# Hugging Face user access tokens; scrubbed from anything the operator writes or logs.
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{16,}")
_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def redact(text: str) -> str:
    """Remove hub tokens from a message before it reaches a status, an Event or a log line."""
    for var in _SECRET_ENV:
        value = os.environ.get(var)
        if value and len(value) >= 8:
            text = text.replace(value, "***")
    return _HF_TOKEN.sub("hf_***", text)


def reason_of(text: str) -> str:
    """A CamelCase condition reason from whatever an API or Job reported."""
    if _REASON_OK.match(text):
        return text
    words = re.findall(r"[A-Za-z0-9]+", text)
    out = "".join(w[:1].upper() + w[1:] for w in words)
    return out if out and out[0].isalpha() else "Unknown"


class Conditions:
    """The conditions of one pass, keeping lastTransitionTime when a status does not change."""

    def __init__(self, old: Any, generation: int, now: str) -> None:
        self.old: dict[str, Mapping[str, Any]] = {}
        for c in old if isinstance(old, list) else ():
            if isinstance(c, Mapping) and isinstance(c.get("type"), str):
                self.old[c["type"]] = c
        self.generation = generation
        self.now = now
        self.new: dict[str, dict[str, Any]] = {}

    def set(self, type_: str, status: bool | None, reason: str, message: str = "") -> None:
        value = "Unknown" if status is None else ("True" if status else "False")
        prev = self.old.get(type_)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == value else None
        self.new[type_] = {
            "type": type_,
            "status": value,
            "reason": reason_of(reason),
            "message": redact(message)[:32768],
            "lastTransitionTime": since or self.now,
            "observedGeneration": self.generation,
        }

    def is_true(self, type_: str) -> bool:
        return self.new.get(type_, {}).get("status") == "True"

    def changed(self, type_: str) -> bool:
        prev, cur = self.old.get(type_), self.new.get(type_)
        if cur is None:
            return False
        return prev is None or any(prev.get(k) != cur[k] for k in ("status", "reason", "message"))

    def as_list(self) -> list[dict[str, Any]]:
        return [self.new[t] for t in CONDITION_TYPES if t in self.new]


def prune_status(value: Any) -> Any:
    """Drop None values: absent and null mean the same in a status, and the API server
    stores neither."""
    if isinstance(value, Mapping):
        return {k: prune_status(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_status(v) for v in value]
    return value
