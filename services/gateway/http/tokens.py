"""Who may write over HTTP: the GATEWAY_TOKENS file, and the loopback rule without it.

The file holds one token a line, then its role, then the services it may write, then
(optionally) the token's name, which the console records as the actor of its changes:

    # token                            role     services        name
    9f2c61d0e4b84d6a8f7f3b5e2a1c0d9e   service  web,web-canary
    3b7d5e9a1f2c4e6b8d0a2c4e6f8a0b2c   client   web,api
    7e1a3c5e7f9b1d3f5a7c9e1b3d5f7a9c   admin    *               alice
    5c8e0a2c4e6f8a0b2c3b7d5e9a1f2c4e   reader   *               dashboards

    service   registers, heartbeats, deregisters and reports (Consul agent writes too)
    client    reports calls only (POST /v1/report): a caller of the service
    admin     every write, and the console's config changes; its services must be `*`
    reader    no write at all: a console that sees everything and changes nothing

A token is at least 16 characters of A-Z a-z 0-9 _ - . ~ + / =. Reads need no token: the
gateway serves what NATS already shows every client of the registry.

Without the file, writes are taken only from loopback peers: the HTTP port must not become
a way around the NATS permissions that keep one service from registering another.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import TYPE_CHECKING, Final, Literal, cast, get_args

import msgspec

from schemas.subjects import InvalidNameError, check_name
from services.errors import Forbidden, StartupError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ALL", "Access", "Grant", "Role", "Write", "is_loopback", "parse_tokens"]

Role = Literal["service", "client", "admin", "reader"]
# what a write does: a registry write, a report, or a config change (the console's)
Write = Literal["register", "report", "configure"]
ROLES: Final = get_args(Role)
ALL: Final = "*"
_TOKEN: Final = re.compile(r"[A-Za-z0-9_.~+/=-]{16,256}")
_MAY: Final[dict[str, frozenset[str]]] = {
    "service": frozenset({"register", "report"}),
    "client": frozenset({"report"}),
    "admin": frozenset({"register", "report", "configure"}),
    "reader": frozenset(),
}


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    services: frozenset[str]  # {"*"} = all
    line: int
    name: str = ""  # the 4th field: who the console records as the actor

    @property
    def actor(self) -> str:
        return self.name or f"GATEWAY_TOKENS line {self.line} ({self.role})"

    def allows(self, write: Write, service: str) -> bool:
        return write in _MAY[self.role] and (ALL in self.services or service in self.services)


def _digest(token: str) -> bytes:
    # Looked up by digest: a dict probe's timing then says nothing about the token itself.
    return hashlib.sha256(token.encode()).digest()


def _fields(fields: list[str], where: str) -> tuple[str, Role, frozenset[str]]:
    token, role, services_field = fields[:3]
    if not _TOKEN.fullmatch(token):
        raise StartupError(
            f"{where}: a token must be 16 to 256 characters of A-Z a-z 0-9 _ . ~ + / = - "
            "(make one with `openssl rand -hex 16`)"
        )
    if role not in ROLES:
        raise StartupError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    names = services_field.split(",")
    if names == [ALL]:
        services = frozenset(names)
    else:
        if role == "admin":
            raise StartupError(f"{where}: an admin token writes every service; write `*`")
        try:
            services = frozenset(check_name(n) for n in names)
        except InvalidNameError as exc:
            raise StartupError(f"{where}: {exc} (or `*` for every service)") from None
    return token, cast("Role", role), services


def parse_tokens(text: str, source: str = "GATEWAY_TOKENS") -> dict[bytes, Grant]:
    """The grants of a token file, by token digest; StartupError names the bad line."""
    grants: dict[bytes, Grant] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source} line {number}"
        fields = line.split()
        if len(fields) not in (3, 4):
            raise StartupError(
                f"{where}: expected 3 fields `token role services` (and a name), got "
                f"{len(fields)}; e.g. `9f2c61d0e4b84d6a8f7f3b5e2a1c0d9e service web,web-canary`"
            )
        token, role, services = _fields(fields, where)
        key = _digest(token)
        if key in grants:
            raise StartupError(f"{where}: the token of line {grants[key].line} again")
        name = fields[3] if len(fields) == 4 else ""
        grants[key] = Grant(role=role, services=services, line=number, name=name)
    if not grants:
        raise StartupError(f"{source} holds no token; list at least one, or unset it")
    return grants


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Access:
    """The write rule of one gateway: its tokens, or loopback peers only."""

    def __init__(self, grants: dict[bytes, Grant] | None) -> None:
        self.grants = grants

    @classmethod
    def from_file(cls, path: Path | None) -> Access:
        if path is None:
            return cls(None)
        try:
            text = path.read_text()
        except OSError as exc:
            raise StartupError(f"GATEWAY_TOKENS={path}: cannot read it ({exc.strerror})") from None
        return cls(parse_tokens(text, f"GATEWAY_TOKENS={path}"))

    def check(
        self, token: str | None, peer: str | None, write: Write, service: str
    ) -> Grant | None:
        """Raise Forbidden with the reason, unless this write may go ahead; the token's
        grant (None: a loopback peer of a gateway without tokens)."""
        if self.grants is None:
            if is_loopback(peer):
                return None
            raise Forbidden(
                f"writes over HTTP are taken only from loopback without GATEWAY_TOKENS "
                f"(this request came from {peer}); give the gateway a token file"
            )
        if not token:
            raise Forbidden(
                "this write needs a token: send X-Consul-Token or Authorization: Bearer"
            )
        grant = self.grants.get(_digest(token))
        if grant is None:
            raise Forbidden("the token is not in GATEWAY_TOKENS")
        if not grant.allows(write, service):
            what = _WHAT[write]
            raise Forbidden(
                f"the token of line {grant.line} ({grant.role}) may not {what} service {service!r}"
            )
        return grant


_WHAT: Final[dict[str, str]] = {
    "register": "register or deregister",
    "report": "report on",
    "configure": "change the config of",
}
