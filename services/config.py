"""Settings as frozen Structs, read from the environment once, in main().

Each field `x` of a settings Struct is read from `{PREFIX}_{X}` (upper case); NATS_URL and
LOG_LEVEL are shared by every worker. A bad value stops the worker at start with the
variable's name and what it must be, never later.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import TYPE_CHECKING, Annotated, TypeVar

import msgspec
from msgspec import Meta, Struct

from services.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["BusSettings", "SettingsError", "load", "parse_servers"]

S = TypeVar("S", bound=Struct)


class SettingsError(StartupError, ValueError):
    """An environment variable holds a value its setting cannot take."""


_SCHEMES = ("nats", "tls", "ws", "wss")


def parse_servers(url: str) -> list[str]:
    """NATS_URL's servers: `nats://a:4222,nats://b:4222` (a list fails over by itself).

    Each entry is `[scheme://][user:pass@]host[:port]`, as nats-py reads it (no scheme is
    nats://, no port is 4222). A bad entry raises SettingsError naming it; nats-py would
    otherwise retry it forever as `invalid connect url option`.
    """
    servers = [part.strip() for part in url.split(",")]
    if not any(servers):
        raise SettingsError("NATS_URL is empty; give nats://host:port[,nats://host2:port,...]")
    for server in servers:
        _check_server(server, url)
    if len({s.split("://", 1)[0] in {"ws", "wss"} for s in servers if "://" in s}) > 1:
        raise SettingsError(f"NATS_URL={url!r} mixes ws:// and nats:// servers; use one kind")
    return servers


def _check_server(server: str, url: str) -> None:
    where = f"NATS_URL={url!r}: {server!r}" if server != url else f"NATS_URL={url!r}"
    hint = "give nats://host:port[,nats://host2:port,...]"
    if not server:
        raise SettingsError(f"NATS_URL={url!r} has an empty entry between commas; {hint}")
    scheme = server.split("://", 1)[0] if "://" in server else "nats"
    if scheme not in _SCHEMES:
        raise SettingsError(f"{where} has the scheme {scheme}://, not one of nats, tls, ws, wss")
    parsed = urllib.parse.urlsplit(server if "://" in server else f"nats://{server}")
    try:
        port = parsed.port
    except ValueError:
        port_text = parsed.netloc.rpartition("@")[2].rpartition(":")[2]
        raise SettingsError(
            f"{where} has the port {port_text!r}, not a number 1-65535; {hint}"
        ) from None
    if not parsed.hostname:
        raise SettingsError(f"{where} names no host; {hint}")
    if port == 0 or parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise SettingsError(f"{where} is not a server URL (host and port only); {hint}")


class BusSettings(Struct, frozen=True, kw_only=True):
    # one server or a comma-separated list of a cluster's servers (see parse_servers)
    url: str = "nats://127.0.0.1:4222"
    # the shortest wait between reconnect attempts, growing with jitter up to
    # reconnect_max_s (services/retry.py); attempts never stop (a worker outlives any outage)
    reconnect_wait_s: Annotated[float, Meta(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Meta(gt=0)] = 5.0  # if lower: reconnect_wait_s
    connect_timeout_s: Annotated[float, Meta(gt=0)] = 2.0
    # bytes of publishes buffered while disconnected
    pending_bytes: Annotated[int, Meta(gt=0)] = 8 * 1024 * 1024
    # the largest payload a worker decodes; larger ones are answered 400
    max_payload: Annotated[int, Meta(gt=0)] = 64 * 1024
    # a client PINGs its server this often and drops the link after `max_outstanding_pings`
    # unanswered: how fast a cut-off (not crashed) node is left for another (nats-py: 120 s)
    ping_interval_s: Annotated[float, Meta(gt=0)] = 2.0
    max_outstanding_pings: Annotated[int, Meta(ge=1)] = 2
    # how long a stopping worker waits for its handlers to finish what they received before
    # it closes anyway (nats-py: 30 s, as long as a whole Kubernetes grace period)
    drain_timeout_s: Annotated[float, Meta(gt=0)] = 5.0

    @property
    def servers(self) -> list[str]:
        return parse_servers(self.url)


def load(cls: type[S], prefix: str, env: Mapping[str, str] | None = None) -> S:
    """Build `cls` from `{prefix}_{FIELD}` variables; unset ones keep their defaults."""
    env = os.environ if env is None else env
    names = {f"{prefix}_{name.upper()}": name for name in cls.__struct_fields__}
    values = {names[k]: v for k, v in env.items() if k in names}
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        field = re.search(r"`\$\.(\w+)`", str(exc))
        if field is None:  # a rule across fields (a __post_init__): no one variable to name
            raise SettingsError(f"{prefix}_* settings: {exc}") from None
        var = f"{prefix}_{field[1].upper()}"
        raise SettingsError(f"{var}={values.get(field[1])!r}: {exc}") from None


def load_bus(env: Mapping[str, str] | None = None) -> BusSettings:
    """NATS_URL plus the NATS_* connection settings; a bad server URL is named here."""
    settings = load(BusSettings, "NATS", env)
    parse_servers(settings.url)
    return settings
