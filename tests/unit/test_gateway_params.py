"""The gateway's one parser per kind of query value, and its body checks (pure).

Each hostile value here was found by the fuzz suite (tests/integration/
test_gateway_fuzz.py) answered with a 500 or taken for something it is not.
"""

from __future__ import annotations

import gzip
import zlib

import pytest
from aiohttp import web
from builders import instance

from services.errors import BadRequest
from services.gateway.http.bodies import MAX_BODY, _decoded, decode_json, depth
from services.gateway.http.consul_model import WEIGHTS_KEY
from services.gateway.http.consul_render import catalog_entry, from_instance
from services.gateway.http.params import (
    MAX_INDEX,
    DurationError,
    flag,
    parse_duration,
    parse_index,
    parse_size,
)


def test_numbers_are_ascii_digits_within_their_bound() -> None:
    assert parse_index("0") == 0
    assert parse_index(str(MAX_INDEX)) == MAX_INDEX
    assert parse_size("100000", "limit", maximum=100_000) == 100_000


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        " 1",
        "1_000",
        "0x10",
        "1e3",
        "\u00b2",  # str.isdigit() says yes; int() raised ValueError: a 500
        "\u0661\u0662",  # int() reads 12; Consul does not
        "\uff11\uff10",
        str(MAX_INDEX + 1),
        "9" * 5000,  # past int()'s digit limit: a ValueError, a 500
    ],
)
def test_anything_else_is_a_400_naming_the_parameter(text: str) -> None:
    with pytest.raises(BadRequest, match=r"^index must be an integer 0\.\.18446744073709551615"):
        parse_index(text)


def test_a_size_has_its_own_bound() -> None:
    with pytest.raises(BadRequest, match=r"limit must be an integer 0\.\.10, got '11'"):
        parse_size("11", "limit", maximum=10)


@pytest.mark.parametrize(
    "text",
    [
        "\u0661s",  # Python's \d took Arabic-Indic digits: read as 1s
        "\uff11s",
        " 10s",  # Go does not trim
        "1e3s",
        "99999999999999999999h",  # past Go's ~292 years
        "9" * 400 + "s",  # a float of inf seconds before
    ],
)
def test_durations_are_gos(text: str) -> None:
    with pytest.raises(DurationError, match=r"^wait "):
        parse_duration(text, "wait")


def test_a_duration_error_is_a_bad_request() -> None:
    assert issubclass(DurationError, BadRequest)
    assert parse_duration("1m30s") == 90
    assert parse_duration("-1.5s") == -1.5


def test_flags_are_present_and_not_false() -> None:
    assert flag({"passing": ""}, "passing")
    assert flag({"passing": "1"}, "passing")
    assert not flag({"passing": "FALSE"}, "passing")
    assert not flag({}, "passing")


def test_depth_counts_brackets_outside_strings() -> None:
    assert depth(b"") == 0
    assert depth(b'{"a": [1, {"b": []}]}') == 4
    assert depth(b'{"a": "[[[[[[", "b": "\\"[[["}') == 1
    assert depth(b"[" * 20_000) == 20_000
    assert depth(b'"unterminated [[[[') == 0


def test_depth_is_linear_on_many_unterminated_strings() -> None:
    # each quote starting a string that never ends would rescan to the end: n squared
    assert depth(b'\\"' * 30_000) == 0


def test_bodies_decode_under_the_encoding_they_claim() -> None:
    assert _decoded(gzip.compress(b"{}"), "gzip") == b"{}"
    assert _decoded(zlib.compress(b"{}"), "deflate") == b"{}"
    for raw, encoding in (
        (b"not gzip", "gzip"),
        (b"a" * 60_000, "deflate"),  # aiohttp answered this with a bare "deflate"
        (gzip.compress(b"{}") + b"junk", "gzip"),
        (gzip.compress(b"{}")[:-4], "gzip"),
    ):
        with pytest.raises(BadRequest, match=f"does not decode as {encoding}"):
            _decoded(raw, encoding)


def test_a_small_bomb_stays_small() -> None:
    with pytest.raises(web.HTTPRequestEntityTooLarge):
        _decoded(gzip.compress(b"0" * (10 * MAX_BODY)), "gzip")


def test_any_json_is_read_or_refused_with_consuls_sentence() -> None:
    assert decode_json(b"") is None
    assert decode_json(b'{"a": 1}') == {"a": 1}
    for raw in (b"{", b"\xff", b'{"Port": 1e400}'):  # the last was a ValidationError: 500
        with pytest.raises(BadRequest, match=r"^Request decode failed"):
            decode_json(raw)


def test_weights_another_writer_left_in_metadata_fall_back_to_the_instances() -> None:
    # any NATS client may set `consul.weights`; "²" passed str.isdigit() and broke int():
    # every Consul read of the service was a 500
    inst = instance(weight=7, metadata={WEIGHTS_KEY: "\u00b2,99999"})
    svc = from_instance("web", inst)
    assert (svc.weight_passing, svc.weight_warning) == (7, 7)
    entry = catalog_entry(inst, "web", "dc1", 1)
    assert entry["ServiceWeights"] == {"Passing": 7, "Warning": 7}
