"""Block-style YAML of plain data (dicts, lists, strings, numbers, booleans, None).

No YAML library is needed: a string that could be misread (a number, `yes`, a colon, a
leading `#`) is written as a JSON string, which YAML reads as the same string, and a
multi-line text as a `|-` block kept exactly.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["to_yaml"]

_PLAIN = re.compile(r"[A-Za-z_$][A-Za-z0-9_.$/ ()-]*")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and not value.endswith(" ") and value.lower() not in _RESERVED:
            return value
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML string
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _yaml_lines(node: Any, indent: str) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            head = f"{indent}{_scalar(key)}:"
            if isinstance(value, dict | list) and value:
                yield head
                yield from _yaml_lines(value, indent + "  ")
            elif _literal(value):
                yield f"{head} |-"
                yield from (f"{indent}  {line}" if line else "" for line in value.split("\n"))
            else:
                yield f"{head} {_flow(value)}"
    else:
        for item in node:
            if isinstance(item, dict | list) and item:
                lines = list(_yaml_lines(item, indent + "  "))
                yield f"{indent}- {lines[0].lstrip()}"
                yield from lines[1:]
            else:
                yield f"{indent}- {_flow(item)}"


def _literal(value: Any) -> bool:
    """A multi-line string that a `|-` block keeps exactly as it is."""
    if not isinstance(value, str) or "\n" not in value:
        return False
    lines = value.split("\n")
    return bool(lines[0]) and all(
        line == line.strip() and "\t" not in line and line.isprintable() for line in lines
    )


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def to_yaml(doc: dict[str, Any]) -> str:
    """Block-style YAML of plain data; any string that could be misread is JSON-quoted."""
    return "\n".join(_yaml_lines(doc, "")) + "\n"
