"""NATS_URL: one server or a cluster's comma-separated list, checked when settings load."""

from __future__ import annotations

import pytest

from services.config import SettingsError, load_bus, parse_servers
from services.sdk import connect as sdk_connect


def test_a_list_of_servers_is_split_and_trimmed() -> None:
    assert parse_servers("nats://a:4222, nats://b:4223 ,tls://c:4224") == [
        "nats://a:4222",
        "nats://b:4223",
        "tls://c:4224",
    ]


def test_the_forms_nats_py_accepts_pass() -> None:
    for url in ("nats://127.0.0.1:4222", "localhost:4222", "localhost", "nats://u:p@h:1"):
        assert parse_servers(url) == [url]


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("nats://127.0.0.1:42x2", "the port '42x2'"),
        ("nats://a:4222,nats://b:99999", "'nats://b:99999' has the port '99999'"),
        ("nats://a:4222,,nats://b:4222", "an empty entry between commas"),
        ("http://a:4222", "the scheme http://"),
        ("nats://:4222", "names no host"),
        ("nats://a:4222/path", "not a server URL"),
        (" , ", "NATS_URL is empty"),
        ("nats://a:1,ws://b:2", "mixes ws:// and nats://"),
    ],
)
def test_a_malformed_url_is_named_in_one_sentence(url: str, named: str) -> None:
    with pytest.raises(SettingsError, match="NATS_URL") as err:
        parse_servers(url)
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_settings_load_refuses_a_bad_url_and_takes_the_ping_settings() -> None:
    with pytest.raises(SettingsError, match="'nats://b:x'"):
        load_bus({"NATS_URL": "nats://a:4222,nats://b:x"})
    settings = load_bus(
        {
            "NATS_URL": "nats://a:4222,nats://b:4222",
            "NATS_PING_INTERVAL_S": "0.5",
            "NATS_MAX_OUTSTANDING_PINGS": "3",
        }
    )
    assert settings.servers == ["nats://a:4222", "nats://b:4222"]
    assert (settings.ping_interval_s, settings.max_outstanding_pings) == (0.5, 3)
    with pytest.raises(SettingsError, match="NATS_PING_INTERVAL_S"):
        load_bus({"NATS_PING_INTERVAL_S": "0"})


async def test_the_sdk_refuses_a_malformed_url_before_connecting() -> None:
    with pytest.raises(SettingsError, match="'nats://b:70000' has the port '70000'"):
        await sdk_connect("nats://a:4222,nats://b:70000")
