"""A request's body, checked before any handler reads it: its encoding, then its shape.

    Content-Encoding    identity, gzip or deflate, decoded here (the HTTP server runs with
                        aiohttp's own decoding off, whose failures would be answered
                        before the gateway sees the request, without a sentence); any
                        other is a 415; a body that does not decode under the encoding it
                        claims (or has bytes after its end) is a 400
    size                at most MAX_BODY bytes as sent and once decoded (413)
    depth               JSON nested at most MAX_DEPTH deep (400): every body the gateway
                        takes is a few levels deep, and a deeper one would only exhaust
                        the decoder's (and a handler's) recursion

Handlers read the checked body with `body_of(request)`. `decode_json` is the one JSON
reader of handlers that take any JSON (the Consul agent's writes); Baton's own routes
decode into their contract's Struct.
"""

from __future__ import annotations

import re
import zlib
from array import array
from itertools import accumulate
from typing import Any, Final

import msgspec
from aiohttp import web

from services.errors import BadRequest

__all__ = [
    "ENCODINGS",
    "MAX_BODY",
    "MAX_DEPTH",
    "UnsupportedEncoding",
    "body_of",
    "check_body",
    "decode_json",
    "depth",
]

MAX_BODY: Final = 64 * 1024  # as the bus's payload limit: nothing larger reaches a worker
MAX_DEPTH: Final = 32
_WBITS: Final = {  # zlib's window bits by encoding: gzip's header, or zlib's (deflate)
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}
ENCODINGS: Final = frozenset({"", "identity", *_WBITS})
_BODY: Final = web.RequestKey("body", bytes)

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


def _decoded(raw: bytes, encoding: str) -> bytes:
    """`raw` decompressed, at most MAX_BODY bytes of it (a small bomb stays small)."""
    decoder = zlib.decompressobj(_WBITS[encoding])
    try:
        out = decoder.decompress(raw, MAX_BODY + 1)
    except zlib.error:
        out, whole = b"", False
    else:
        whole = decoder.eof and not decoder.unused_data and not decoder.unconsumed_tail
    if len(out) > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=len(out))
    if not whole:
        raise BadRequest(
            f"the body does not decode as {encoding} although Content-Encoding says so; "
            "send it compressed as claimed, or without Content-Encoding"
        )
    return out


async def check_body(request: web.Request) -> None:
    """Raise UnsupportedEncoding or BadRequest for a body no handler should see, else
    keep it decoded for `body_of`. HTTPRequestEntityTooLarge passes (a 413)."""
    if not request.body_exists:
        return
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ENCODINGS:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding[:40]!r} is not accepted; send the body as it is, "
            "or compressed with gzip or deflate"
        )
    raw = await request.read()  # at most client_max_size (MAX_BODY), else a 413
    if encoding in _WBITS:
        raw = _decoded(raw, encoding)
    request[_BODY] = raw
    if raw and depth(raw) > MAX_DEPTH:
        raise BadRequest(
            f"the body nests deeper than {MAX_DEPTH} levels of JSON; "
            "no request of this API needs more than a few"
        )


def body_of(request: web.Request) -> bytes:
    """The request's body as `check_body` decoded it (b"" for none)."""
    body: bytes = request.get(_BODY, b"")
    return body


def decode_json(raw: bytes) -> Any:
    """Any JSON value (None for an empty body); BadRequest with Consul's sentence."""
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.MsgspecError as exc:  # not JSON, or a number beyond a double's range
        raise BadRequest(f"Request decode failed: the body is not JSON ({exc})") from None
