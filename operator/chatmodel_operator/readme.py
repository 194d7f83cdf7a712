"""The shell commands of README.md, so that what runs them runs what the README says (pure).

Every command in a ``sh`` block of the README is run by ``make demo`` or by a test. Each runner
asks for its command here by its text, ``readme.command("kubectl get chm -w")``, and runs the
words it gets back: a README edit that changes or drops the command fails the runner. The other
way round, tests/unit/test_docs.py fails when a README command is asked for by no runner.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README_PATH = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def commands(text: str) -> list[list[str]]:
    """Each command of the text's ``sh`` blocks as the shell splits it: continued lines joined,
    comments dropped, ``a && b`` as two commands."""
    out: list[list[str]] = []
    for block in _blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                out.append(words[:cut])
                words = words[cut + 1 :]
    return out


def command(text: str, readme: str | None = None) -> list[str]:
    """The README's command ``text`` (whitespace and line breaks as you like), split as the shell
    splits it; ``LookupError`` when the README has no such command."""
    words = shlex.split(text)
    source = README_PATH.read_text(encoding="utf-8") if readme is None else readme
    if words not in commands(source):
        raise LookupError(f"README.md has no command `{text}` in its sh blocks")
    return words
