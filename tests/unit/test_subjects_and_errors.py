"""Name rules and subjects (schemas.subjects), and the sentences of schemas.errors.explain."""

from __future__ import annotations

import msgspec
import pytest

from schemas import subjects
from schemas.balancer import ResolveRequest
from schemas.errors import explain
from schemas.registry import Heartbeat, Registration
from schemas.subjects import NAME_RULE, InvalidNameError, check_name, service_from
from services.errors import BadRequest

# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "Z", "7", "_", "-", "orders", "orders-v2_EU", "x" * 64, "ABCxyz019_-"],
)
def test_valid_names_are_accepted_unchanged(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty"),
        ("x" * 65, "is 65 characters long"),
        ("orders.eu", "contains '.'"),
        ("orders*", "contains '*'"),
        ("orders>", "contains '>'"),
        ("my orders", "contains ' '"),
        ("tab\there", "contains '\\t'"),
        ("web-1\n", "contains '\\n'"),
        ("café", "contains 'é'"),
        ("a/b.c", "contains '.' '/'"),
    ],
)
def test_invalid_names_are_rejected_with_a_sentence(name: str, problem: str) -> None:
    with pytest.raises(InvalidNameError) as err:
        check_name(name)
    message = str(err.value)
    assert message.startswith("service name ")
    assert problem in message
    assert message.endswith(f"; use {NAME_RULE}")
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, BadRequest)  # the workers' tree: answered with code 400
    assert err.value.code == 400


def test_the_sentence_names_what_was_checked_and_shortens_long_input() -> None:
    with pytest.raises(InvalidNameError, match=r"^instance id 'web 1' contains ' '; use 1 to 64"):
        check_name("web 1", "instance id")
    with pytest.raises(InvalidNameError) as err:
        check_name("y" * 500)
    assert "is 500 characters long" in str(err.value)
    assert len(str(err.value)) < 200


# -- subjects ---------------------------------------------------------------------------


def test_subjects_are_the_contracts() -> None:
    assert subjects.register("orders") == "registry.v1.register.orders"
    assert subjects.heartbeat("orders") == "registry.v1.heartbeat.orders"
    assert subjects.deregister("orders") == "registry.v1.deregister.orders"
    assert subjects.instances("orders") == "registry.v1.instances.orders"
    assert subjects.events("orders") == "registry.v1.events.orders"
    assert subjects.resolve("orders") == "balancer.v1.resolve.orders"
    assert subjects.report("orders") == "balancer.v1.report.orders"
    assert subjects.SERVICES == "registry.v1.services"
    assert subjects.every(subjects.REGISTER) == "registry.v1.register.>"


@pytest.mark.parametrize("builder", [subjects.register, subjects.resolve, subjects.events])
@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "a b"])
def test_a_subject_is_never_built_for_a_bad_name(builder: object, bad: str) -> None:
    with pytest.raises(InvalidNameError):
        builder(bad)  # type: ignore[operator]


def test_service_from_reads_the_name_after_the_prefix() -> None:
    assert service_from("registry.v1.register.orders", subjects.REGISTER) == "orders"


@pytest.mark.parametrize(
    "subject",
    [
        "registry.v1.register.orders.eu",  # a dotted name arrives as several tokens
        "registry.v1.register",
        "registry.v1.registerorders",
        "registry.v1.heartbeat.orders",
    ],
)
def test_service_from_rejects_what_is_not_one_valid_token(subject: str) -> None:
    with pytest.raises(InvalidNameError):
        service_from(subject, subjects.REGISTER)


# -- explain ----------------------------------------------------------------------------


def why(payload: bytes, kind: type = Registration) -> str:
    with pytest.raises(msgspec.MsgspecError) as err:
        msgspec.json.decode(payload, type=kind)
    return explain(err.value, payload, kind.__name__)


def registration(**fields: object) -> bytes:
    body: dict[str, object] = {"instance_id": "web-1", "host": "10.0.0.1", "port": 8080}
    body.update(fields)
    return msgspec.json.encode({k: v for k, v in body.items() if v is not ...})


def test_the_contracts_own_example() -> None:
    assert why(registration(port=70000)) == "port must be 1..65535, got 70000"


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"port": 0}, "port must be 1..65535, got 0"),
        ({"port": "80"}, 'port must be 1..65535, got "80"'),
        ({"port": 80.5}, "port must be 1..65535, got 80.5"),
        ({"weight": -1}, "weight must be an integer 0..10000 (0 = no traffic), got -1"),
        ({"weight": 10001}, "weight must be an integer 0..10000 (0 = no traffic), got 10001"),
        ({"ttl_s": 0.5}, "ttl_s must be a number of seconds 1..3600, got 0.5"),
        ({"ttl_s": 7200}, "ttl_s must be a number of seconds 1..3600, got 7200"),
        (
            {"instance_id": "web 1"},
            f'instance_id must be {NAME_RULE}, got "web 1"',
        ),
        (
            {"instance_id": "x" * 65},
            f'instance_id must be {NAME_RULE}, got "{"x" * 56}...',
        ),
        (
            {"service": "a.b"},
            f'service must be {NAME_RULE} and equal the service in the subject, got "a.b"',
        ),
        ({"instance_id": ...}, f"instance_id is required: instance_id must be {NAME_RULE}"),
        ({"port": ...}, "port is required: port must be 1..65535"),
    ],
)
def test_registration_errors_read_as_the_rule_and_the_value(
    fields: dict[str, object], sentence: str
) -> None:
    assert why(registration(**fields)) == sentence


@pytest.mark.parametrize(
    "metadata",
    [{"tier": 5}, [1, 2], {"": "empty key"}, {"k" * 129: "long key"}, {"v": "x" * 1025}],
)
def test_bad_metadata_is_explained_with_the_metadata_rule(metadata: object) -> None:
    sentence = why(registration(metadata=metadata))
    assert sentence.startswith("metadata must be an object of at most 64 string keys"), sentence


def test_a_newline_after_a_valid_name_is_still_a_bad_name() -> None:
    # Regex `$` also matches before a final newline; the contract's rule does not.
    assert why(registration(instance_id="web-1\n")).startswith("instance_id must be")
    assert why(registration(service="orders\n")).startswith("service must be")
    assert why(registration(host="10.0.0.1\n")).startswith("host must be")
    assert why(registration(zone="eu-1\n")).startswith("zone must be")
    assert why(b'{"exclude": ["a\\n"]}', ResolveRequest).startswith("exclude must be")


def test_not_json_and_not_an_object() -> None:
    assert why(b"{port: 1}").startswith("payload is not valid JSON (")
    assert why(b"{port: 1}").endswith("); send a Registration as a JSON object")
    assert why(b"[1, 2]") == "payload must be a Registration as a JSON object, got array"
    assert why(b'"hello"') == "payload must be a Registration as a JSON object, got str"


def test_a_wrong_item_in_a_list_says_where() -> None:
    sentence = why(b'{"exclude": ["ok", "bad id"]}', ResolveRequest)
    assert sentence.startswith("exclude must be a list of at most 1024 instance ids")
    assert sentence.endswith('got "bad id" (at exclude[1])')


def test_heartbeat_load_out_of_range() -> None:
    assert (
        why(b'{"instance_id": "a", "cpu": 1.5}', Heartbeat) == "cpu must be a number 0..1, got 1.5"
    )
    assert (
        why(b'{"instance_id": "a", "inflight": -2}', Heartbeat)
        == "inflight must be an integer >= 0, got -2"
    )


@pytest.mark.parametrize(
    "payload",
    [
        registration(port=70000),
        registration(host=""),
        registration(host="a b"),
        registration(zone="eu/1"),
        registration(metadata={"": "x"}),
        registration(instance_id=...),
        b"nope",
        b"[]",
    ],
)
def test_every_explanation_is_one_plain_sentence(payload: bytes) -> None:
    sentence = why(payload)
    assert "\n" not in sentence
    assert "`" not in sentence  # no msgspec paths or type names in backticks
    assert "$." not in sentence
