"""One error tree (services/errors.py), and the bus's mapping between it and the wire.

Each direction of the mapping is a pure function of services/bus.py: what a handler's
exception is answered with (`rejection`), what an error reply raises (`error_reply`),
and what a failed nats-py request raises (`request_failure`); `refused` alone tells a
refusal of the credentials.
"""

from __future__ import annotations

import msgspec
import nats.errors
import pytest

from schemas.errors import ERROR_CODE_HEADER, ERROR_HEADER, ErrorReply
from schemas.subjects import InvalidNameError, check_name
from services import errors
from services.bus import error_reply, refused, rejection, request_failure
from services.collector.writer import RetryableWriteError, SetupError, WriteError
from services.config import SettingsError
from services.gateway.http.bodies import UnsupportedEncoding
from services.gateway.http.params import DurationError
from services.governor.store import StaleWriteError
from services.registry.leases import UnknownInstanceError
from services.stack import supervisor

SUBJECT = "registry.v1.instances.api"


# -- the tree ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "parent", "code"),
    [
        (errors.BadRequest, errors.BatonError, 400),
        (InvalidNameError, errors.BadRequest, 400),
        (DurationError, errors.BadRequest, 400),
        (UnsupportedEncoding, errors.BadRequest, 415),
        (errors.Forbidden, errors.BatonError, 403),
        (errors.NotFound, errors.BatonError, 404),
        (UnknownInstanceError, errors.NotFound, 404),
        (errors.Conflict, errors.BatonError, 409),
        (StaleWriteError, errors.Conflict, 409),
        (errors.TooLarge, errors.BatonError, 413),
        (errors.Unavailable, errors.BatonError, 503),
        (errors.NoResponders, errors.Unavailable, 503),
        (WriteError, errors.Unavailable, 503),
        (RetryableWriteError, WriteError, 503),
        (SetupError, WriteError, 503),
        (errors.RequestTimeout, errors.BatonError, 504),
        (errors.StartupError, errors.BatonError, 500),
        (SettingsError, errors.StartupError, 500),
        (errors.NotAuthorized, errors.StartupError, 403),
        (errors.StopRequested, errors.BatonError, 500),
    ],
)
def test_every_error_descends_from_the_documented_root(
    cls: type[errors.BatonError], parent: type[Exception], code: int
) -> None:
    assert issubclass(cls, parent)
    assert cls.code == code
    assert cls.__name__ in (errors.__doc__ or "")  # drawn in the tree


def test_builtin_parents_are_kept_where_callers_expect_them() -> None:
    assert issubclass(InvalidNameError, ValueError)
    assert issubclass(SettingsError, ValueError)
    assert issubclass(UnknownInstanceError, KeyError)


def test_there_is_one_startup_error() -> None:
    assert supervisor.StartupError is errors.StartupError
    assert supervisor.StopRequested is errors.StopRequested


# -- a handler's exception -> the reply ----------------------------------------------------
def test_an_error_of_the_tree_is_answered_as_itself() -> None:
    err = errors.Conflict("service 'api' is at revision 3, not 2")
    assert rejection(err) is err


def test_a_bad_name_is_a_400_with_its_sentence() -> None:
    with pytest.raises(InvalidNameError) as bad:
        check_name("my orders")
    err = rejection(bad.value)
    assert err.code == 400
    assert err.message.startswith("service name 'my orders' contains ' '")


def test_anything_else_is_a_500_that_names_it() -> None:
    err = rejection(ZeroDivisionError("division by zero"))
    assert (type(err), err.code) == (errors.BatonError, 500)
    assert err.message == "internal error: ZeroDivisionError('division by zero')"


# -- an error reply -> the exception -------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, errors.BadRequest),
        (403, errors.Forbidden),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (413, errors.TooLarge),
        (503, errors.Unavailable),
    ],
)
def test_a_reply_code_raises_its_class(code: int, cls: type[errors.BatonError]) -> None:
    headers = {ERROR_CODE_HEADER: str(code), ERROR_HEADER: "why"}
    err = error_reply(headers, b"", SUBJECT)
    assert type(err) is cls
    assert err.message == "why"


def test_an_unknown_code_keeps_the_code_the_worker_sent() -> None:
    err = error_reply({ERROR_CODE_HEADER: "418"}, b"", SUBJECT)
    assert err is not None
    assert (type(err), err.code) == (errors.BatonError, 418)


def test_the_sentence_comes_from_the_header_else_the_body_else_a_default() -> None:
    body = msgspec.json.encode(ErrorReply(code=404, message="from the body"))
    found = error_reply({ERROR_CODE_HEADER: "404"}, body, SUBJECT)
    assert isinstance(found, errors.NotFound)
    assert found.message == "from the body"
    bare = error_reply({ERROR_CODE_HEADER: "404"}, b"not json", SUBJECT)
    assert bare is not None
    assert bare.message == f"error 404 on {SUBJECT}"


def test_a_reply_without_the_code_header_is_no_error() -> None:
    assert error_reply(None, b"{}", SUBJECT) is None
    assert error_reply({"Other": "1"}, b"{}", SUBJECT) is None


def test_a_bad_code_header_is_an_error_that_says_so() -> None:
    err = error_reply({ERROR_CODE_HEADER: "teapot"}, b"", SUBJECT)
    assert err is not None
    assert err.code == 500
    assert "bad Nats-Service-Error-Code: 'teapot'" in err.message


# -- a failed request -> the exception -----------------------------------------------------
def test_no_responders_timeouts_and_the_rest() -> None:
    nobody = request_failure(nats.errors.NoRespondersError(), SUBJECT, 2.0)
    assert type(nobody) is errors.NoResponders
    assert nobody.message == f"nothing serves {SUBJECT}; is the worker running?"
    late = request_failure(nats.errors.TimeoutError(), SUBJECT, 0.5)
    assert (type(late), late.message) == (
        errors.RequestTimeout,
        f"no reply on {SUBJECT} within 0.5 s",
    )
    closed = request_failure(nats.errors.ConnectionClosedError(), SUBJECT, 2.0)
    assert type(closed) is errors.Unavailable


def test_a_refusal_of_the_credentials_is_told_apart() -> None:
    # nats-py's two shapes: a typed error on a live connection, the server's text at connect
    assert refused(nats.errors.AuthorizationError())
    assert refused(nats.errors.Error("nats: 'Authorization Violation'"))
    assert not refused(nats.errors.Error('nats: permissions violation for publish to "x"'))
    assert not refused(OSError("connection refused"))
    failed = request_failure(nats.errors.AuthorizationError(), SUBJECT, 2.0)
    assert type(failed) is errors.NotAuthorized
