"""One classification of InfluxDB's error statuses for both writers (v1 and v2 APIs)."""

from __future__ import annotations

import pytest

from services.collector.writer import (
    Hints,
    RetryableWriteError,
    SetupError,
    V1Writer,
    V2Writer,
    failure,
)

V1 = V1Writer("http://influx:8086", "baton")._hints
V2 = V2Writer("http://influx:8086", "t", "acme", "calls")._hints


@pytest.mark.parametrize("hints", [V1, V2])
@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_overload_and_server_errors_are_sent_again_later(hints: Hints, status: int) -> None:
    error = failure(status, "busy", what="refused a write", hints=hints, retry_after="3")
    assert isinstance(error, RetryableWriteError)
    assert error.retry_after_s == 3.0
    assert f"({status}: busy)" in error.message


def test_refused_credentials_say_what_each_api_needs_checked() -> None:
    v1 = failure(401, "no", what="refused a write", hints=V1, retry_after=None)
    v2 = failure(403, "no", what="refused a write", hints=V2, retry_after=None)
    assert isinstance(v1, SetupError)
    assert "user and password" in v1.message
    assert isinstance(v2, SetupError)
    assert "the collector's token" in v2.message


def test_a_missing_database_or_bucket_says_how_to_create_it() -> None:
    v1 = failure(404, "database not found", what="refused a write", hints=V1, retry_after=None)
    v2 = failure(404, "bucket not found", what="refused a write", hints=V2, retry_after=None)
    assert isinstance(v1, SetupError)
    assert "refused a write (404: database not found): the collector creates" in v1.message
    assert 'CREATE DATABASE "baton"' in v1.message
    assert isinstance(v2, SetupError)
    assert "has no bucket 'calls' in org 'acme' (404: bucket not found)" in v2.message


def test_a_batch_too_large_is_dropped_not_an_error_and_an_odd_status_needs_an_operator() -> None:
    assert failure(413, "too large", what="w", hints=V2, retry_after=None) is None
    odd = failure(418, "teapot", what="refused a write", hints=V1, retry_after=None)
    assert isinstance(odd, SetupError)
    assert odd.message == "InfluxDB at http://influx:8086 refused a write (418: teapot)"
