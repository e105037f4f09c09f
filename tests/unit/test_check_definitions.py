"""Check definitions: every malformed field is refused naming it; good ones normalized."""

from __future__ import annotations

import msgspec
import pytest

from schemas.checks import CheckDefinition, validate_checks, worst
from schemas.errors import explain
from schemas.registry import Registration
from services.errors import BadRequest


def _registration(*checks: dict[str, object]) -> bytes:
    return msgspec.json.encode(
        {"instance_id": "web-1", "host": "10.0.0.5", "port": 8080, "checks": list(checks)}
    )


def _refusal(*checks: dict[str, object]) -> str:
    raw = _registration(*checks)
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(raw, type=Registration)
    return explain(caught.value, raw, "Registration")


@pytest.mark.parametrize(
    ("check", "named"),
    [
        ({"check_id": "c", "kind": "script"}, "kind must be one of http, tcp, grpc, ttl"),
        ({"check_id": "c", "kind": "http", "interval_s": 0}, "interval_s must be"),
        ({"check_id": "c", "kind": "http", "interval_s": 86400}, "interval_s must be"),
        ({"check_id": "c", "kind": "http", "timeout_s": "10s"}, "timeout_s must be"),
        ({"check_id": "c", "kind": "http", "timeout_s": -1}, "timeout_s must be"),
        ({"check_id": "c", "kind": "http", "headers": {"X": [1]}}, "headers must be"),
        ({"check_id": "c", "kind": "http", "headers": {"X": "a"}}, "headers must be"),
        ({"check_id": "a b", "kind": "tcp"}, "check_id must be"),
        ({"check_id": "c", "kind": "tcp", "status": "maybe"}, "status must be"),
    ],
)
def test_a_malformed_field_is_refused_by_name(check: dict[str, object], named: str) -> None:
    message = _refusal(check)
    assert named in message
    assert "checks[0]" in message


def test_script_checks_are_refused_with_the_reason() -> None:
    assert "remote code execution" in _refusal({"check_id": "c", "kind": "script"})


def _check(**fields: object) -> CheckDefinition:
    return msgspec.convert({"check_id": "c", **fields}, CheckDefinition)


@pytest.mark.parametrize(
    ("check", "named"),
    [
        (_check(kind="http"), "checks[0].target is required"),
        (_check(kind="http", target="ftp://10.0.0.5/x"), "checks[0].target"),
        (_check(kind="http", target="http://10.0.0.5:99999/"), "checks[0].target"),
        (_check(kind="http", target="http://10.0.0.5/", method="BREW"), "checks[0].method"),
        (_check(kind="tcp", target="10.0.0.5"), "checks[0].target"),
        (_check(kind="tcp", target="10.0.0.5:0"), "checks[0].target"),
        (_check(kind="grpc", target="10.0.0.5/svc"), "checks[0].target"),
    ],
)
def test_a_bad_target_or_method_is_refused_by_name(check: CheckDefinition, named: str) -> None:
    with pytest.raises(BadRequest, match=named.replace("[", r"\[").replace("]", r"\]")):
        validate_checks([check], "10.0.0.5")


def test_a_timeout_longer_than_the_interval_is_cut_to_it() -> None:
    (check,) = validate_checks(
        [_check(kind="tcp", target="10.0.0.5:5432", interval_s=2, timeout_s=10)], "10.0.0.5"
    )
    assert check.timeout_s == 2


def test_the_method_is_upper_cased_and_defaults_kept() -> None:
    (check,) = validate_checks(
        [_check(kind="http", target="http://10.0.0.5/h", method="post")], "10.0.0.5"
    )
    assert check.method == "POST"
    assert check.status == "critical"  # as Consul: critical until a result says otherwise


def test_a_check_may_only_probe_its_own_host() -> None:
    other = _check(kind="http", target="http://169.254.169.254/latest/meta-data")
    with pytest.raises(BadRequest, match="PROBER_ALLOW_ANY_TARGET") as caught:
        validate_checks([other], "10.0.0.5")
    assert "checks[0].target" in caught.value.message
    assert validate_checks([other], "10.0.0.5", allow_any_target=True)


def test_own_host_allows_any_port_path_and_grpc_service() -> None:
    checks = [
        _check(check_id="h", kind="http", target="https://WEB.example:9443/actuator/health"),
        _check(check_id="t", kind="tcp", target="web.example:5432"),
        _check(check_id="g", kind="grpc", target="web.example:50051/my.Service"),
    ]
    assert len(validate_checks(checks, "web.example")) == 3
    v6 = _check(kind="tcp", target="[::1]:5432")
    assert validate_checks([v6], "0:0::1")


def test_check_ids_must_differ_and_one_ttl_at_most() -> None:
    twice = [_check(kind="ttl"), _check(kind="ttl")]
    with pytest.raises(BadRequest, match=r"checks\[1\].check_id"):
        validate_checks(twice, "h")
    with pytest.raises(BadRequest, match="more than one ttl"):
        validate_checks([_check(kind="ttl"), _check(check_id="d", kind="ttl")], "h")


def test_registrations_without_checks_still_decode() -> None:
    reg = msgspec.json.decode(b'{"instance_id":"a","host":"h","port":1}', type=Registration)
    assert reg.checks == []


def test_worst_status() -> None:
    assert worst([]) == "passing"
    assert worst(["passing", "warning"]) == "warning"
    assert worst(["warning", "critical", "passing"]) == "critical"
