"""Write every generated file from its source of truth: `python -m chatmodel_operator.generate`.

Tests compare the committed files with ``generated_files()``, so a stale file fails CI.
"""

from __future__ import annotations

from pathlib import Path

from chatmodel_operator import chart, docs, observability
from chatmodel_operator.api.crd import CRD_PATH
from chatmodel_operator.cli import crd_yaml
from chatmodel_operator.runtime import sources

REPO = Path(__file__).resolve().parents[2]


def generated_files() -> dict[str, str]:
    """{path relative to the repository: text}: the CRD, the monitoring files (rules,
    dashboards, adapter values), the API reference, the chart's generated pieces and the
    Python model sources embedded for the pure repository builder."""
    return {
        CRD_PATH: crd_yaml(),
        **sources.generated_files(),
        **observability.generated_files(),
        **docs.generated_files(),
        **chart.generated_files(),
    }


def main() -> None:
    for rel, text in generated_files().items():
        path = REPO / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")


if __name__ == "__main__":
    main()
