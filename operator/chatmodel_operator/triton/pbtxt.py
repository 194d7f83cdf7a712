"""Our protobuf text emitter for Triton's ``config.pbtxt``: model configs as plain data.

A message is a mapping from field name to value; a repeated field is a list; enum values are
``Enum`` strings (written bare); other strings are quoted and escaped. Unlike protobuf's own
printer, nothing is dropped because it equals the field's default: ``max_batch_size: 0`` or
``decoupled: false`` are written when the data says so, which is what a reader of the file
needs to see. Output is deterministic (fields in the order given).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


class Enum(str):
    """An enum value such as ``TYPE_INT32`` or ``KIND_CPU``: written without quotes."""

    __slots__ = ()


class Rendered(tuple[str, ...]):
    """A field already written as lines (at indent 0): repeated tensor lists are the bulk of
    every config and never change, so the repository renders them once (see ``field``)."""

    __slots__ = ()


Message = Mapping[str, Any]

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PLAIN = re.compile(r'[^\\"\x00-\x1f\x7f]*')


def quote(text: str) -> str:
    """A protobuf text string literal; UTF-8 stays as is, control characters become octal."""
    if _PLAIN.fullmatch(text):
        return f'"{text}"'
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return quote(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is Enum:
        return str(value)
    if kind is int:
        return str(value)
    if kind is float:
        text = repr(value)
        return text if any(c in text for c in ".eEn") else text + ".0"
    raise TypeError(f"cannot write {kind.__name__} {value!r} as protobuf text")


def _is_message(value: Any) -> bool:
    return type(value) is dict or (type(value) is not str and isinstance(value, Mapping))


def _lines(msg: Message, indent: int) -> list[str]:
    # Exact type checks first: this runs for every field of every config the operator renders.
    pad = "  " * indent
    out: list[str] = []
    for key, value in msg.items():
        if value is None:
            continue
        kind = type(value)
        if kind is Rendered:
            out.extend(value if not pad else [pad + line for line in value])
        elif kind is list or kind is tuple:
            if value and all(_is_message(v) for v in value):
                out.append(f"{pad}{key} [")
                last = len(value) - 1
                for i, item in enumerate(value):
                    out.append(f"{pad}  {{")
                    out.extend(_lines(item, indent + 2))
                    out.append(f"{pad}  }}," if i < last else f"{pad}  }}")
                out.append(f"{pad}]")
            elif any(_is_message(v) for v in value):
                raise TypeError(f"field {key}: mixes messages and scalars")
            else:
                inner = ", ".join(_scalar(v) for v in value)
                out.append(f"{pad}{key}: [ {inner} ]" if inner else f"{pad}{key}: [ ]")
        elif _is_message(value):
            out.append(f"{pad}{key} {{")
            out.extend(_lines(value, indent + 1))
            out.append(f"{pad}}}")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


def dumps(msg: Message, header: Sequence[str] = ()) -> str:
    """The text of one message, with ``header`` lines as ``#`` comments on top."""
    lines = [f"# {h}" if h else "#" for h in header]
    lines.extend(_lines(msg, 0))
    return "\n".join(lines) + "\n"


def field(key: str, value: Any) -> Rendered:
    """``key: value`` written once, to be placed in a message as ``{key: field(key, value)}``."""
    return Rendered(_lines({key: value}, 0))


def parameters(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Triton's ``parameters`` map: every value a string (``{string_value: ...}``)."""
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = str(value)
        out.append({"key": key, "value": {"string_value": text}})
    return out
