"""Write monitoring/ from code: ``python -m chatmodel_operator.observability [--check]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatmodel_operator.observability import generated_files

REPO = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatmodel_operator.observability")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root to write under")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a file is stale"
    )
    args = parser.parse_args(argv)
    stale = []
    for rel, text in generated_files().items():
        path = args.root / rel
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {rel}")
    if args.check and stale:
        print("stale: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
