"""Write every generated file from its source of truth: `python -m chatmodel_operator.generate`.

Tests compare the committed files with ``generated_files()``, so a stale file fails CI.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from chatmodel_operator.cli import crd_yaml

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = "crds/chatmodels.serving.chatmodel.io.yaml"

# Other modules contribute files through a generated_files() -> {relative path: text}.
CONTRIBUTORS = ("chatmodel_operator.observability", "chatmodel_operator.docs", "chatmodel_operator.chart")


def generated_files() -> dict[str, str]:
    files: dict[str, str] = {CRD_PATH: crd_yaml()}
    for name in CONTRIBUTORS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        fn: Callable[[], dict[str, str]] | None = getattr(mod, "generated_files", None)
        if fn is not None:
            files.update(fn())
    return files


def main() -> None:
    for rel, text in generated_files().items():
        path = REPO / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")


if __name__ == "__main__":
    main()
