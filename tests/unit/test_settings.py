"""Settings from the environment (services/config.py): what a variable may hold, and the
sentence a bad one stops the worker with."""

from __future__ import annotations

import pytest
from msgspec import Struct

from services.bus import reconnect_policy
from services.collector import CollectorSettings
from services.config import BusSettings, SettingsError, load, load_bus
from services.errors import StartupError
from services.registry import RegistrySettings
from services.retry import Backoff


def test_unset_variables_keep_their_defaults_and_others_are_ignored() -> None:
    assert load_bus({}) == BusSettings()
    assert load_bus({"PATH": "/bin", "NATS_OTHER": "1", "REGISTRY_SWEEP_S": "9"}) == BusSettings()


def test_values_are_read_from_their_strings() -> None:
    bus = load_bus(
        {
            "NATS_URL": "nats://u:p@10.0.0.1:4222",
            "NATS_RECONNECT_WAIT_S": "0.25",
            "NATS_RECONNECT_MAX_S": "30",
            "NATS_PENDING_BYTES": "1024",
        }
    )
    assert (bus.url, bus.reconnect_wait_s, bus.reconnect_max_s, bus.pending_bytes) == (
        "nats://u:p@10.0.0.1:4222",
        0.25,
        30.0,
        1024,
    )
    registry = load(
        RegistrySettings, "REGISTRY", {"REGISTRY_SETTLE_S": "0", "REGISTRY_SWEEP_S": "5"}
    )
    assert (registry.settle_s, registry.sweep_s) == (0.0, 5.0)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"NATS_RECONNECT_WAIT_S": "0"}, "NATS_RECONNECT_WAIT_S='0': Expected `float` > 0"),
        ({"NATS_RECONNECT_WAIT_S": "soon"}, "NATS_RECONNECT_WAIT_S='soon': Expected `float`"),
        ({"NATS_MAX_PAYLOAD": "1.5"}, "NATS_MAX_PAYLOAD='1.5': Expected `int`"),
        ({"NATS_PENDING_BYTES": "-1"}, "NATS_PENDING_BYTES='-1': Expected `int` >= 1"),
    ],
)
def test_a_bad_value_names_its_variable_and_the_rule(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_bus(env)
    assert str(err.value).startswith(says)


def test_a_workers_rule_is_named_too() -> None:
    with pytest.raises(SettingsError, match=r"^REGISTRY_SWEEP_S='6': Expected `float` <= 5"):
        load(RegistrySettings, "REGISTRY", {"REGISTRY_SWEEP_S": "6"})
    with pytest.raises(SettingsError, match=r"^INFLUX_WRITES='17': Expected `int` <= 16"):
        load(CollectorSettings, "INFLUX", {"INFLUX_WRITES": "17"})


class Window(Struct, frozen=True, kw_only=True):
    low: int = 0
    high: int = 10

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not be above high")


def test_a_rule_across_fields_names_the_prefix() -> None:
    assert load(Window, "W", {"W_LOW": "3"}) == Window(low=3)
    with pytest.raises(SettingsError, match=r"^W_\* settings: low must not be above high"):
        load(Window, "W", {"W_LOW": "11"})


def test_a_bad_setting_stops_the_worker_at_start() -> None:
    assert issubclass(SettingsError, StartupError)  # the runner exits 2 with the sentence


def test_the_reconnect_policy_comes_from_the_bus_settings() -> None:
    assert reconnect_policy(BusSettings()) == Backoff(base_s=0.5, cap_s=5.0)
    slow = load_bus({"NATS_RECONNECT_WAIT_S": "10"})  # a cap below the base is the base
    assert reconnect_policy(slow) == Backoff(base_s=10.0, cap_s=10.0)
