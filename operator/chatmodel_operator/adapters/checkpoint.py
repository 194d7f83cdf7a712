"""Reading a checkpoint's config.json and tokenizer_config.json (I/O).

The catalog answers for the seed models without any I/O; for other checkpoints the planner
needs their config. file:// is read from disk, hf:// from the hub (with the token from the
environment, never logged); s3://, gs:// and pvc:// cannot be read by the operator itself,
so such a checkpoint must be in the catalog or the spec must name its family.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chatmodel_operator.catalog import find_known, parse_source
from chatmodel_operator.errors import UnknownModel

ModelFiles = tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]


def _read_json(path: Path) -> Mapping[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UnknownModel(
            f"spec.model.source: cannot read {path}: {exc}; fix: make it valid JSON"
        ) from None
    return data if isinstance(data, dict) else None


def read_model_files(uri: str, *, hub_timeout_s: float = 10.0) -> ModelFiles:
    """(config, tokenizer_config) of the checkpoint, or (None, None) when the catalog knows it
    or it cannot be read from here."""
    source = parse_source(uri)
    if source.scheme == "file":
        root = Path(source.location)
        if not root.is_dir():
            raise UnknownModel(
                f"spec.model.source: {root} is not a directory; fix: point file:// at a "
                "Hugging Face checkpoint directory"
            )
        config = _read_json(root / "config.json")
        if config is None:
            raise UnknownModel(
                f"spec.model.source: {root} has no config.json; fix: point file:// at a "
                "Hugging Face checkpoint directory"
            )
        return config, _read_json(root / "tokenizer_config.json")
    if source.scheme == "hf" and find_known(source.repo_id) is None:
        return _hub_files(source.location, source.revision, hub_timeout_s)
    return None, None


def _hub_files(repo: str, revision: str | None, timeout_s: float) -> ModelFiles:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - a dependency of the package
        return None, None
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout_s)))
    out: list[Mapping[str, Any] | None] = []
    for name in ("config.json", "tokenizer_config.json"):
        try:
            path = hf_hub_download(
                repo, name, revision=revision, token=os.environ.get("HF_TOKEN") or None
            )
        except Exception:  # offline, missing or gated all mean: not readable from here
            out.append(None)
            continue
        out.append(_read_json(Path(path)))
    return out[0], out[1]
