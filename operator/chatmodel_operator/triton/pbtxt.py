"""Our protobuf text emitter for Triton's ``config.pbtxt``: model configs as plain data.

A message is a mapping from field name to value; a repeated field is a list; enum values are
``Enum`` strings (written bare); other strings are quoted and escaped. Unlike protobuf's own
printer, nothing is dropped because it equals the field's default: ``max_batch_size: 0`` or
``decoupled: false`` are written when the data says so, which is what a reader of the file
needs to see. Output is deterministic (fields in the order given).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class Enum(str):
    """An enum value such as ``TYPE_INT32`` or ``KIND_CPU``: written without quotes."""

    __slots__ = ()


Message = Mapping[str, Any]

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(text: str) -> str:
    """A protobuf text string literal; UTF-8 stays as is, control characters become octal."""
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
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eEn") else text + ".0"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as protobuf text")


def _is_message(value: Any) -> bool:
    return isinstance(value, Mapping)


def _lines(msg: Message, indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    for key, value in msg.items():
        if value is None:
            continue
        if _is_message(value):
            out.append(f"{pad}{key} {{")
            out.extend(_lines(value, indent + 1))
            out.append(f"{pad}}}")
        elif isinstance(value, Sequence) and not isinstance(value, str):
            items = list(value)
            if items and all(_is_message(v) for v in items):
                out.append(f"{pad}{key} [")
                for i, item in enumerate(items):
                    out.append(f"{pad}  {{")
                    out.extend(_lines(item, indent + 2))
                    out.append(f"{pad}  }}" + ("," if i < len(items) - 1 else ""))
                out.append(f"{pad}]")
            elif any(_is_message(v) for v in items):
                raise TypeError(f"field {key}: mixes messages and scalars")
            else:
                inner = ", ".join(_scalar(v) for v in items)
                out.append(f"{pad}{key}: [ {inner} ]" if inner else f"{pad}{key}: [ ]")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


def dumps(msg: Message, header: Sequence[str] = ()) -> str:
    """The text of one message, with ``header`` lines as ``#`` comments on top."""
    lines = [f"# {h}" if h else "#" for h in header]
    lines.extend(_lines(msg, 0))
    return "\n".join(lines) + "\n"


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
