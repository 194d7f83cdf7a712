"""What every ``chatmodel`` command shares: its input errors, bounded numeric flags and the
reading of ChatModel documents. Below the commands (cli, runner, runtime), so that none of them
imports another to get these."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from chatmodel_operator.errors import ChatModelError

EXIT_BAD_INPUT = 2


class CliError(ChatModelError):
    """Bad input: printed as one line, exit status 2. A ChatModelError, so that ``main`` catches
    it also when this module runs as ``__main__`` and another module raised it."""


def bounded(
    kind: Callable[[str], Any], low: float | None = None, high: float | None = None
) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind`` (int or float) within [low, high], or argparse's usage
    error naming the flag."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"at least {low}" if high is None else f"within [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{value} must be {span}")
        return value

    return parse


PORT = bounded(int, 1, 65535)
PORT_OR_OFF = bounded(int, 0, 65535)


def load_documents(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not docs:
        raise CliError(f"{path}: no ChatModel in the file; fix: write one (see examples/)")
    return docs
