"""The data-plane subcommands of ``chatmodel``: serve, chat and tiny-checkpoint."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_tiny_checkpoint(args: argparse.Namespace) -> int:
    from chatmodel_operator.cli_args import CliError
    from chatmodel_operator.runtime.tiny_checkpoint import write_tiny_checkpoint

    try:
        path = write_tiny_checkpoint(args.out, args.family, train_steps=args.train_steps)
    except OSError as exc:
        where = exc.filename or args.out
        raise CliError(
            f"{where}: cannot write: {exc.strerror or exc}; fix: give OUT a directory you can write"
        ) from None
    print(f"wrote a tiny {args.family} checkpoint to {path}")
    return 0


def register_commands(sub: Any) -> None:
    """Add serve, chat and tiny-checkpoint to the ``chatmodel`` subparsers."""
    from chatmodel_operator.cli_args import bounded
    from chatmodel_operator.runtime import chat, serve
    from chatmodel_operator.runtime.tiny_checkpoint import SEED_FAMILIES

    serve.add_parser(sub)
    chat.add_parser(sub)
    p = sub.add_parser(
        "tiny-checkpoint", help="write a tiny trained Hugging Face checkpoint of a seed family"
    )
    p.add_argument("out", help="directory to write (created)")
    p.add_argument("--family", required=True, choices=SEED_FAMILIES)
    p.add_argument("--train-steps", type=bounded(int, 0), default=300)
    p.set_defaults(func=cmd_tiny_checkpoint)
