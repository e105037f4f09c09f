"""The error body of the contract, and the sentence a person reads for a bad payload."""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from schemas.fields import RULES

__all__ = ["ERROR_CODE_HEADER", "ERROR_HEADER", "ErrorReply", "explain"]

ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"
ERROR_HEADER: Final = "Nats-Service-Error"


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    code: int
    message: str


# "... - at `$.port`", or for a bad object key "... - at `key` in `$.metadata`"
_AT = re.compile(r" - at (?:`key` in )?`\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")
_MISSING_VALUE = object()


def _value_at(raw: bytes, path: str) -> Any:
    try:
        value: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return _MISSING_VALUE
    for step in _STEP.finditer(path):
        name, index = step.group(1), step.group(2)
        if name is not None and isinstance(value, dict) and name in value:
            value = value[name]
        elif index is not None and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        elif step.group(0) == "[...]" and isinstance(value, dict) and len(value) == 1:
            value = next(iter(value.values()))  # "some value": unambiguous when only one
        else:
            return _MISSING_VALUE
    return value


def _readable(raw: bytes, path: str) -> str:
    """The path with msgspec's `[...]` (some value of an object) replaced by its key when
    the object has just one: `instances[...].port` -> `instances.web-1.port`."""
    try:
        value: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return path.lstrip(".")
    out = []
    for step in _STEP.finditer(path):
        name, index = step.group(1), step.group(2)
        if name is not None:
            out.append(f".{name}")
            value = value.get(name) if isinstance(value, dict) else None
        elif index is not None:
            out.append(f"[{index}]")
            value = (
                value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
            )
        elif isinstance(value, dict) and len(value) == 1:
            key, value = next(iter(value.items()))
            out.append(f".{key}")
        else:
            out.append("[...]")
            value = None
    return "".join(out).lstrip(".")


def _show(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def explain(exc: msgspec.MsgspecError, raw: bytes, what: str) -> str:
    """One sentence for why `raw` is not a valid `what`, and how to fix it."""
    detail = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        return f"payload is not valid JSON ({detail}); send a {what} as a JSON object"
    if missing := _MISSING.match(detail):
        name = missing["name"]
        rule = RULES.get(name, "")
        return f"{name} is required" + (f": {rule}" if rule else "")
    at = _AT.search(detail)
    if at is None or at["path"] == "":
        if detail.startswith("Expected `object`"):
            got = detail.removeprefix("Expected `object`, got ").strip("`")
            return f"payload must be a {what} as a JSON object, got {got}"
        return f"invalid {what}: {detail}"
    path = at["path"]
    names = [s.group(1) for s in _STEP.finditer(path) if s.group(1)]
    rule = RULES.get(names[-1], "") if names else ""  # the innermost field says most
    value = _value_at(raw, path)
    got = "" if value is _MISSING_VALUE else f", got {_show(value)}"
    if rule:
        where = "" if path == f".{names[-1]}" else f" (at {_readable(raw, path)})"
        return f"{rule}{got}{where}"
    return f"invalid {what}: {detail}{got}"
