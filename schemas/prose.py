"""What docs/contract.md says of each message: its paragraph, and its fields' meanings.

The contract's prose is where a field's meaning is written once; the generator copies it
into the JSON Schemas and the AsyncAPI document, so the two never say different things.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Prose", "read_prose"]

_HEADING = re.compile(r"#{3,4} `(\w+)`")
_NAME = re.compile(r"`(\w+)`")
_SECTION = re.compile(r"\bsections? (\d+)")


class Prose(NamedTuple):
    """What docs/contract.md says of each message: its paragraph, and each field's meaning."""

    messages: dict[str, str]
    fields: dict[str, dict[str, str]]


def _plain(text: str) -> str:
    text = text.replace("*ext.* ", "Extension: ").replace("*Ext.* ", "Extension: ")
    return _SECTION.sub(r"docs/contract.md section \1", text)


def _sections(markdown: str) -> Iterator[tuple[str, list[str]]]:
    """(message, the lines under its "#### `Message`" heading, up to the next heading)."""
    message: str | None = None
    body: list[str] = []
    for line in [*markdown.splitlines(), "#"]:
        if line.startswith("#"):
            if message is not None:
                yield message, body
            heading = _HEADING.fullmatch(line)
            message, body = (heading[1] if heading else None), []
        else:
            body.append(line.strip())


def _first_paragraph(body: list[str]) -> str:
    lines: list[str] = []
    for line in body:
        if line.startswith("|") or (not line and lines):
            break
        if line:
            lines.append(line)
    return " ".join(lines)


def _field_table(body: list[str]) -> dict[str, str]:
    """Field -> meaning, from the first table whose columns are `field | ... | meaning`."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in body if line[:1] == "|"]
    fields: dict[str, str] = {}
    if rows and rows[0][0] == "field" and "meaning" in rows[0]:
        column = rows[0].index("meaning")
        for cells in rows[2:]:  # after the header and its --- line
            for name in _NAME.findall(cells[0]):
                fields.setdefault(name, _plain(cells[column]))
    return fields


def read_prose(markdown: str) -> Prose:
    """Under each "#### `Message`" heading of the contract: the first paragraph, and the
    meaning column of its `| field | ... | meaning |` table; so prose and schemas agree."""
    prose = Prose({}, {})
    for message, body in _sections(markdown):
        if paragraph := _first_paragraph(body):
            prose.messages[message] = _plain(paragraph)
        if fields := _field_table(body[: _table_end(body)]):
            prose.fields[message] = fields
    return prose


def _table_end(body: list[str]) -> int:
    """Where the first table of `body` ends (a table ends at its first other line)."""
    start = next((i for i, line in enumerate(body) if line[:1] == "|"), len(body))
    return next((i for i in range(start, len(body)) if body[i][:1] != "|"), len(body))
