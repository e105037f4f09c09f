"""Who may write over HTTP: the GATEWAY_TOKENS file, and the loopback rule without it.

The file holds one token a line, then its role, then the services it may write, then
(optionally) its rights on the config center's keys (`/v1/kv`) and (optionally)
`name=<who>`, the name the console records as the actor of this token's changes:

    # token                            role     services      kv                     name
    9f2c61d0e4b84d6a8f7f3b5e2a1c0d9e   service  web,web-canary
    3b7d5e9a1f2c4e6b8d0a2c4e6f8a0b2c   client   web,api       read:shared/
    5d2e8f1a3c6b9e0d4f7a2c5e8b1d3f6a   client   api           read:*,write:traefik/
    7e1a3c5e7f9b1d3f5a7c9e1b3d5f7a9c   admin    *                                    name=alice
    5c8e0a2c4e6f8a0b2c3b7d5e9a1f2c4e   reader   *                                    name=dashboards

    service   registers, heartbeats, deregisters and reports (Consul agent writes too)
    client    reports calls only (POST /v1/report): a caller of the service
    admin     every write, and the console's config changes; its services must be `*`
    reader    no write at all: a console that sees everything and changes nothing

A token is at least 16 characters of A-Z a-z 0-9 _ - . ~ + / =. Reads need no token: the
gateway serves what NATS already shows every client of the registry; except the config
center's keys, which a token file guards for reads too. The kv field lists `read:<prefix>`
and `write:<prefix>` (write includes read; `*` is every key). Without it: a service token
reads its services' own prefixes (`web/` for web), an admin token writes every key, a
reader token reads every key, a client token has no key.

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

__all__ = [
    "ALL",
    "Access",
    "Grant",
    "KvRight",
    "Role",
    "Write",
    "is_loopback",
    "parse_kv_rights",
    "parse_tokens",
]

Role = Literal["service", "client", "admin", "reader"]
# what a write does: a registry write, a report, or a config change (the console's)
Write = Literal["register", "report", "configure"]
KvRight = Literal["read", "write"]
ROLES: Final = get_args(Role)
ALL: Final = "*"
_TOKEN: Final = re.compile(r"[A-Za-z0-9_.~+/=-]{16,256}")
_MAY: Final[dict[str, frozenset[str]]] = {
    "service": frozenset({"register", "report"}),
    "client": frozenset({"report"}),
    "admin": frozenset({"register", "report", "configure"}),
    "reader": frozenset(),
}
_NAME: Final = "name="
_WHAT: Final[dict[str, str]] = {
    "register": "register or deregister",
    "report": "report on",
    "configure": "change the config of",
}


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    role: Role
    services: frozenset[str]  # {"*"} = all
    line: int
    kv_read: tuple[str, ...] = ()  # key prefixes ("" = every key)
    kv_write: tuple[str, ...] = ()
    name: str = ""  # `name=`: who the console records as the actor

    @property
    def actor(self) -> str:
        return self.name or f"GATEWAY_TOKENS line {self.line} ({self.role})"

    def allows(self, write: Write, service: str) -> bool:
        return write in _MAY[self.role] and (ALL in self.services or service in self.services)

    def allows_kv(self, right: KvRight, key: str, *, recurse: bool = False) -> bool:
        """Whether `key` (with `recurse`, every key starting with it) may be read or
        written: it must start with a granted prefix."""
        del recurse  # a prefix under a granted one holds only granted keys
        prefixes = self.kv_write if right == "write" else (*self.kv_read, *self.kv_write)
        return any(key.startswith(prefix) for prefix in prefixes)


def parse_kv_rights(field: str, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(read prefixes, write prefixes) of a kv field: `read:web/,write:web/flags/`."""
    read: list[str] = []
    write: list[str] = []
    for item in field.split(","):
        right, sep, prefix = item.partition(":")
        if not sep or right not in ("read", "write") or not prefix:
            raise StartupError(
                f"{where}: kv right {item!r} must be read:<prefix> or write:<prefix> "
                "(`*` for every key), e.g. read:web/,write:web/flags/"
            )
        (read if right == "read" else write).append("" if prefix == ALL else prefix)
    return tuple(read), tuple(write)


def _default_kv(role: Role, services: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if role == "admin":
        return (), ("",)
    if role == "reader":
        return ("",), ()
    if role == "service":
        return ("",) if ALL in services else tuple(sorted(f"{s}/" for s in services)), ()
    return (), ()


def _digest(token: str) -> bytes:
    # Looked up by digest: a dict probe's timing then says nothing about the token itself.
    return hashlib.sha256(token.encode()).digest()


def _fields(fields: list[str], where: str) -> tuple[str, Role, frozenset[str]]:
    token, role, services_field = fields
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
        names = [f.removeprefix(_NAME) for f in fields[3:] if f.startswith(_NAME)]
        rights = [f for f in fields[3:] if not f.startswith(_NAME)]
        if len(fields) < 3 or len(names) > 1 or len(rights) > 1 or names == [""]:
            raise StartupError(
                f"{where}: expected 3 fields `token role services` (and optionally kv "
                f"rights and name=<who>), got {len(fields)}; "
                "e.g. `9f2c61d0e4b84d6a8f7f3b5e2a1c0d9e service web,web-canary`"
            )
        token, role, services = _fields(fields[:3], where)
        if rights:
            kv_read, kv_write = parse_kv_rights(rights[0], where)
        else:
            kv_read, kv_write = _default_kv(role, services)
        key = _digest(token)
        if key in grants:
            raise StartupError(f"{where}: the token of line {grants[key].line} again")
        grants[key] = Grant(
            role=role,
            services=services,
            line=number,
            kv_read=kv_read,
            kv_write=kv_write,
            name=names[0] if names else "",
        )
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

    def check_kv(
        self, token: str | None, peer: str | None, right: KvRight, key: str, *, recurse: bool
    ) -> None:
        """Raise Forbidden with the reason, unless `key` (a prefix with `recurse`) may be
        read or written. Without a token file: reads open, writes from loopback only."""
        if self.grants is None:
            if right == "read":
                return
            self.check(token, peer, "register", "")
            return
        if not token:
            raise Forbidden(
                "the config center needs a token: send X-Consul-Token or Authorization: Bearer"
            )
        grant = self.grants.get(_digest(token))
        if grant is None:
            raise Forbidden("the token is not in GATEWAY_TOKENS")
        if not grant.allows_kv(right, key, recurse=recurse):
            what = f"keys under {key!r}" if recurse else f"key {key!r}"
            raise Forbidden(
                f"the token of line {grant.line} ({grant.role}) may not {right} {what}; "
                "give it a kv right on a prefix of it (read:<prefix> or write:<prefix>)"
            )

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
            raise Forbidden(
                f"the token of line {grant.line} ({grant.role}) may not {_WHAT[write]} "
                f"service {service!r}"
            )
        return grant
