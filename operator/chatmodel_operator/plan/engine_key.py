"""The engine key: a hash of everything that changes the engine (or the prepared checkpoint).

The same key names the build Job, the cache directory and a label, so an engine built once is
found again by any ChatModel that asks for the same thing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_LENGTH = 16


def engine_key(inputs: Mapping[str, Any]) -> str:
    canonical = json.dumps(dict(inputs), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]
