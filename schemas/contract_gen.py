"""Write the machine-readable contract from `schemas.catalog` and the Structs it names.

    python -m schemas.contract_gen           # write docs/asyncapi.yaml, docs/schemas/*.json
    python -m schemas.contract_gen --check   # exit 1, naming the files, if they drifted

The AsyncAPI document sees Baton's workers as one application: a `receive` operation is a
subject they subscribe to, a `send` operation one they publish on. A client does the
opposite. JSON Schemas come from msgspec, so they say exactly what the workers decode;
descriptions come from docs/contract.md (schemas.prose) and examples from schemas.examples.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from schemas.catalog import CHANNELS, ERROR_CODES, PARAMETERS, PUBLISH, REQUEST, Channel
from schemas.errors import ERROR_CODE_HEADER, ERROR_HEADER, ErrorReply
from schemas.examples import EXAMPLES
from schemas.prose import Prose, read_prose
from schemas.yaml_out import to_yaml

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "asyncapi",
    "documents",
    "drift",
    "json_schemas",
    "main",
    "messages",
    "prose_in",
    "write",
]

ASYNCAPI_PATH: Final = "docs/asyncapi.yaml"
CONTRACT_PATH: Final = "docs/contract.md"  # its field tables give the fields' descriptions
SCHEMAS_DIR: Final = "docs/schemas"
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
REPLY_CHANNEL: Final = "reply"
_SCHEMA_REF: Final = "#/components/schemas/{name}"

_DESCRIPTION: Final = f"""\
Baton's public wire contract (v1 and its extensions), generated from `schemas/` by
`just contract`; docs/contract.md says the same in prose, with the behaviour behind it.

Every payload is a JSON object (UTF-8). Unknown fields are ignored and missing optional
fields take their defaults, so newer senders work with older workers. An empty payload
reads as `{{}}`. Payloads over 64 KiB (NATS_MAX_PAYLOAD) are answered 400.

The document describes Baton's workers (registry, balancer, governor, collector, gateway)
as one application: `receive` operations are subjects they subscribe to, `send` operations are
subjects they publish on. A service or client does the opposite.

A request that fails is answered at once with an ErrorReply: headers
`{ERROR_CODE_HEADER}` and `{ERROR_HEADER}`, body {{"code", "message"}}. An invalid
message published without a reply subject is counted, logged and dropped."""


def _array_like(types: Iterable[type[Any]]) -> dict[str, list[str]]:
    """Struct name -> its field names, for the Structs encoded as JSON arrays (array_like):
    their schemas hold `prefixItems` in field order, with no names of their own."""
    found: dict[str, list[str]] = {}
    infos = msgspec.inspect.multi_type_info(list(types))  # kept alive: `seen` holds ids
    seen: set[int] = set()
    todo: list[Any] = list(infos)
    while todo:
        node = todo.pop()
        if id(node) in seen or not isinstance(node, msgspec.inspect.Type):
            continue
        seen.add(id(node))
        if isinstance(node, msgspec.inspect.StructType):
            if node.array_like:
                found[node.cls.__name__] = [f.encode_name for f in node.fields]
            todo.extend(f.type for f in node.fields)
            continue
        for slot in getattr(type(node), "__struct_fields__", ()):
            value = getattr(node, slot)
            todo.extend(value if isinstance(value, tuple) else [value])
    return found


def _describe(
    components: dict[str, Any], prose: Prose, arrays: dict[str, list[str]] | None = None
) -> None:
    for name in list(components):
        schema: dict[str, Any] = components[name]
        if name in prose.messages:  # after the title, where a reader looks
            rest = {k: v for k, v in schema.items() if k not in {"title", "description"}}
            head = {"title": schema.get("title", name), "description": prose.messages[name]}
            components[name] = schema = {**head, **rest}
        known = prose.fields.get(name, {})
        props: dict[str, Any] = schema.get("properties", {})
        for field, prop in props.items():
            if field in known:
                props[field] = {"description": known[field], **prop}
        items: list[Any] = schema.get("prefixItems", [])
        for n, field in enumerate((arrays or {}).get(name, [])[: len(items)]):
            # an array's items have no names: the title says which field each one is
            head = {"title": field} | ({"description": known[field]} if field in known else {})
            items[n] = {**head, **items[n]}


# -- JSON Schema -------------------------------------------------------------------------
def messages() -> list[type[msgspec.Struct]]:
    """Every message and reply Struct of the catalog, once, in catalog order."""
    seen: dict[type[msgspec.Struct], None] = {}
    for channel in CHANNELS:
        seen.setdefault(channel.message)
        if channel.reply is not None:
            seen.setdefault(channel.reply)
    seen.setdefault(ErrorReply)
    return list(seen)


def _example(kind: type[msgspec.Struct]) -> Any:
    """The message's example from schemas.examples as JSON data, or None."""
    found = next((e for e in EXAMPLES if type(e) is kind), None)
    return None if found is None else msgspec.to_builtins(found)


def _paragraphs(text: str) -> str:
    """A docstring as the description reads it: lines joined, paragraphs kept."""
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()))


def _portable(node: Any) -> Any:
    """msgspec's schema made portable: ECMA-262 patterns, one-paragraph descriptions.

    The Structs' patterns end in Python's `\\Z` (see schemas/fields.py). ECMA-262 has no
    such anchor: ajv refuses the pattern ("Invalid escape", with the `u` flag it uses),
    and without that flag it matches a literal "Z". `$` already means the end there.
    """
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str) and value.endswith("\\Z"):
                out[key] = value[:-2] + "$"
            elif key == "description" and isinstance(value, str):
                out[key] = _paragraphs(value)
            else:
                out[key] = _portable(value)
        return out
    if isinstance(node, list):
        return [_portable(item) for item in node]
    return node


def _components(types: Iterable[type[Any]], ref_template: str, prose: Prose) -> dict[str, Any]:
    kinds = list(types)
    _, components = msgspec.json.schema_components(kinds, ref_template=ref_template)
    portable: dict[str, Any] = _portable(components)
    _describe(portable, prose, _array_like(kinds))
    return portable


def json_schemas(prose: Prose) -> dict[str, str]:
    """`docs/schemas/<Message>.json` for every message: one standalone schema each."""
    out: dict[str, str] = {}
    for kind in messages():
        defs = _components([kind], "#/$defs/{name}", prose)
        root = defs.pop(kind.__name__)
        doc: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, **root}
        if (example := _example(kind)) is not None:
            doc["examples"] = [example]
        if defs:
            doc["$defs"] = defs
        text = json.dumps(doc, indent=2, ensure_ascii=False)
        out[f"{SCHEMAS_DIR}/{kind.__name__}.json"] = text + "\n"
    return out


# -- AsyncAPI ----------------------------------------------------------------------------
def _ref(*path: str) -> dict[str, str]:
    # JSON pointer escapes: `~` then `/` (channel ids hold neither today)
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)}


def _channel_description(ch: Channel) -> str:
    reply = ch.reply.__name__ if ch.reply else ""
    if ch.op == PUBLISH:
        kind = "a publish: no reply"
    elif ch.op == REQUEST and not ch.error_replies:
        kind = f"a request, answered with {reply} (never with an error)"
    elif ch.op == REQUEST:
        kind = f"a request, answered with {reply} or an ErrorReply"
    else:
        kind = f"a publish, or a request for the {reply} (or the ErrorReply)"
    queue = f" Served in the queue group `{ch.queue}`." if ch.queue else ""
    return f"Sent by {ch.sender}; received by {ch.receivers}; {kind}.{queue}"


def _message(kind: type[msgspec.Struct], prose: Prose) -> dict[str, Any]:
    msg: dict[str, Any] = {"name": kind.__name__, "title": kind.__name__}
    if kind.__name__ in prose.messages:
        msg["description"] = prose.messages[kind.__name__]
    elif kind.__doc__:
        msg["description"] = _paragraphs(kind.__doc__)
    msg["contentType"] = "application/json"
    if kind is ErrorReply:
        msg["headers"] = {
            "type": "object",
            "properties": {
                ERROR_CODE_HEADER: {
                    "type": "string",
                    "description": "The error code, as in the body: "
                    + "; ".join(f"{code} {why}" for code, why in ERROR_CODES.items()),
                    "examples": ["400"],
                },
                ERROR_HEADER: {
                    "type": "string",
                    "description": "One sentence (no line breaks) saying what was wrong and "
                    "how to fix it; the same as the body's message.",
                    "examples": ["port must be 1..65535, got 70000"],
                },
            },
            "required": [ERROR_CODE_HEADER, ERROR_HEADER],
        }
    msg["payload"] = _ref("components", "schemas", kind.__name__)
    if (example := _example(kind)) is not None:
        shown: dict[str, Any] = {"name": kind.__name__}
        if kind is ErrorReply:  # the headers say what the body says
            shown["headers"] = {
                ERROR_CODE_HEADER: str(example["code"]),
                ERROR_HEADER: example["message"],
            }
        shown["payload"] = example
        msg["examples"] = [shown]
    return msg


def _operation(ch: Channel) -> dict[str, Any]:
    op: dict[str, Any] = {
        "action": "send" if ch.by_worker else "receive",
        "channel": _ref("channels", ch.id),
        "summary": ch.summary,
        "description": _channel_description(ch),
        "messages": [_ref("channels", ch.id, "messages", ch.message.__name__)],
    }
    if ch.reply is not None:
        replies = [ch.reply.__name__] + ([ErrorReply.__name__] if ch.error_replies else [])
        op["reply"] = {
            "channel": _ref("channels", REPLY_CHANNEL),
            "messages": [_ref("channels", REPLY_CHANNEL, "messages", r) for r in replies],
        }
    if ch.queue:
        op["bindings"] = {"nats": {"queue": ch.queue, "bindingVersion": "0.1.0"}}
    return op


def asyncapi(prose: Prose) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the catalog, as a plain mapping."""
    channels: dict[str, Any] = {}
    for ch in CHANNELS:
        if ch.id in channels:
            raise ValueError(f"two catalog entries share the channel {ch.id}: give one a key")
        unknown = [p for p in ch.parameters if p not in PARAMETERS]
        if unknown:
            raise ValueError(f"{ch.address}: describe {unknown} in schemas.catalog.PARAMETERS")
        channel: dict[str, Any] = {"address": ch.address, "summary": ch.summary}
        channel["description"] = _channel_description(ch)
        name = ch.message.__name__
        channel["messages"] = {name: _ref("components", "messages", name)}
        if ch.parameters:
            channel["parameters"] = {p: _ref("components", "parameters", p) for p in ch.parameters}
        channels[ch.id] = channel
    replies = [ch.reply.__name__ for ch in CHANNELS if ch.reply is not None]
    replies.append(ErrorReply.__name__)
    channels[REPLY_CHANNEL] = {
        "address": None,
        "summary": "The reply subject of a request (the requester's NATS inbox).",
        "messages": {n: _ref("components", "messages", n) for n in dict.fromkeys(replies)},
    }
    kinds = messages()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Baton",
            "version": "1.0.0",
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "The local stack (`just up`); workers read NATS_URL.",
            }
        },
        "channels": channels,
        "operations": {ch.id: _operation(ch) for ch in CHANNELS},
        "components": {
            "schemas": _components(kinds, _SCHEMA_REF, prose),
            "messages": {kind.__name__: _message(kind, prose) for kind in kinds},
            "parameters": {
                name: {"description": text}
                for name, text in PARAMETERS.items()
                if any(name in ch.parameters for ch in CHANNELS)
            },
        },
    }


# -- files -------------------------------------------------------------------------------
_HEADER: Final = "# Generated by `just contract` (python -m schemas.contract_gen); do not edit.\n"


def prose_in(root: Path) -> Prose:
    """What `root`'s docs/contract.md says of the messages."""
    return read_prose((root / CONTRACT_PATH).read_text(encoding="utf-8"))


def documents(root: Path) -> dict[str, str]:
    """Every generated file: repository-relative path -> text."""
    prose = prose_in(root)
    return {ASYNCAPI_PATH: _HEADER + to_yaml(asyncapi(prose)), **json_schemas(prose)}


def drift(root: Path) -> list[str]:
    """The generated files that differ from what is in `root`, or should not be there."""
    wanted = documents(root)
    stale = [
        path
        for path, text in wanted.items()
        if not (root / path).exists() or (root / path).read_text(encoding="utf-8") != text
    ]
    extra = sorted(
        str(p.relative_to(root))
        for p in (root / SCHEMAS_DIR).glob("*.json")
        if str(p.relative_to(root)) not in wanted
    )
    return stale + extra


def write(root: Path) -> list[str]:
    """Write every generated file under `root` (and drop stale schemas); what changed."""
    changed = drift(root)
    wanted = documents(root)
    for path, text in wanted.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    for p in (root / SCHEMAS_DIR).glob("*.json"):
        if str(p.relative_to(root)) not in wanted:
            p.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.contract_gen", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path(), help="the repository (default .)")
    parser.add_argument("--check", action="store_true", help="only report drift (exit 1)")
    args = parser.parse_args(argv)
    root: Path = args.root
    if args.check:
        stale = drift(root)
        for path in stale:
            sys.stderr.write(f"{path} differs from schemas/: run `just contract`\n")
        return 1 if stale else 0
    for path in write(root):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
