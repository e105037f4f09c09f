"""A request's body, checked before any handler reads it: its encoding, then its shape.

    Content-Encoding    identity, gzip or deflate (aiohttp decodes these); any other is a
                        415 (aiohttp's own parser refuses br and zstd with a 400 before
                        the gateway sees the request); a body that does not decode under
                        the encoding it claims is a 400
    size                at most MAX_BODY bytes once decoded (413)
    depth               JSON nested at most MAX_DEPTH deep (400): every body the gateway
                        takes is a few levels deep, and a deeper one would only exhaust
                        the decoder's (and a handler's) recursion

`decode_json` is the one JSON reader of handlers that take any JSON (the Consul agent's
writes); Baton's own routes decode into their contract's Struct.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp.web_protocol import RequestPayloadError

from services.errors import BadRequest

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "ENCODINGS",
    "MAX_BODY",
    "MAX_DEPTH",
    "UnsupportedEncoding",
    "check_body",
    "decode_json",
    "depth",
]

MAX_BODY: Final = 64 * 1024  # as the bus's payload limit: nothing larger reaches a worker
MAX_DEPTH: Final = 32
ENCODINGS: Final = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})

# a JSON string (an unterminated one runs to the end: one pass, never a rescan)
_STRING: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.DOTALL)
# brackets to +1 / -1 (as signed bytes), everything else deleted
_OPEN_CLOSE: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_OTHERS: Final = bytes(set(range(256)) - set(b"[{]}"))


class UnsupportedEncoding(BadRequest):
    """A body in a Content-Encoding the gateway does not decode (415)."""

    code = 415


def depth(raw: bytes) -> int:
    """How deep the brackets of `raw` nest, outside JSON strings (C-speed passes)."""
    brackets = _STRING.sub(b"", raw).translate(_OPEN_CLOSE, _OTHERS)
    return max(accumulate(array("b", brackets)), default=0)


async def check_body(request: web.Request) -> None:
    """Raise UnsupportedEncoding or BadRequest for a body no handler should see; read
    it (aiohttp keeps it for the handler) otherwise. HTTPRequestEntityTooLarge passes."""
    if not request.body_exists:
        return
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ENCODINGS:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding[:40]!r} is not accepted; send the body as it is, "
            "or compressed with gzip or deflate"
        )
    try:
        raw = await request.read()
    except RequestPayloadError:
        raise BadRequest(
            f"the body does not decode as {encoding} although Content-Encoding says so; "
            "send it compressed as claimed, or without Content-Encoding"
        ) from None
    if raw and depth(raw) > MAX_DEPTH:
        raise BadRequest(
            f"the body nests deeper than {MAX_DEPTH} levels of JSON; "
            "no request of this API needs more than a few"
        )


def decode_json(raw: bytes) -> Any:
    """Any JSON value (None for an empty body); BadRequest with Consul's sentence."""
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.MsgspecError as exc:  # not JSON, or a number beyond a double's range
        raise BadRequest(f"Request decode failed: the body is not JSON ({exc})") from None
