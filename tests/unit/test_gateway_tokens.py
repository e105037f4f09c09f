"""GATEWAY_TOKENS: the file format, parsed strictly, and the write rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from services.errors import Forbidden, StartupError
from services.gateway.http.tokens import Access, is_loopback, parse_tokens

if TYPE_CHECKING:
    from pathlib import Path

WEB = "0123456789abcdef0123"
CLIENT = "client-token-0123456789"
ADMIN = "admin-token-0123456789"
FILE = f"""
# token   role     services
{WEB}     service  web,web-canary   # the web team
{CLIENT}  client   web
{ADMIN}   admin    *
"""


def test_grants() -> None:
    access = Access(parse_tokens(FILE))
    access.check(WEB, "10.0.0.1", "register", "web")
    access.check(WEB, "10.0.0.1", "report", "web-canary")
    access.check(CLIENT, "10.0.0.1", "report", "web")
    access.check(ADMIN, "10.0.0.1", "register", "anything")
    with pytest.raises(Forbidden, match=r"line 3 \(service\) may not register .* 'api'"):
        access.check(WEB, "127.0.0.1", "register", "api")
    with pytest.raises(Forbidden, match=r"\(client\) may not register"):
        access.check(CLIENT, "10.0.0.1", "register", "web")
    with pytest.raises(Forbidden, match="needs a token"):
        access.check(None, "127.0.0.1", "register", "web")  # a token file binds loopback too
    with pytest.raises(Forbidden, match="not in GATEWAY_TOKENS"):
        access.check("x" * 20, "10.0.0.1", "register", "web")


def test_readers_write_nothing_and_names_are_the_actors() -> None:
    reader, named = "reader-token-0123456789", "named-admin-0123456789"
    access = Access(parse_tokens(f"{FILE}{reader} reader *\n{named} admin * name=alice\n"))
    for write in ("register", "report", "configure"):
        with pytest.raises(Forbidden, match=r"\(reader\) may not"):
            access.check(reader, "127.0.0.1", write, "web")
    with pytest.raises(Forbidden, match=r"\(service\) may not change the config of service 'web'"):
        access.check(WEB, "10.0.0.1", "configure", "web")
    grant = access.check(named, "10.0.0.1", "configure", "web")
    assert grant is not None
    assert grant.actor == "alice"
    unnamed = access.check(ADMIN, "10.0.0.1", "configure", "web")
    assert unnamed is not None
    assert unnamed.actor == "GATEWAY_TOKENS line 5 (admin)"
    both = f"{named} admin * write:* name=alice"  # kv rights and a name, in either order
    assert parse_tokens(both)[next(iter(parse_tokens(both)))].name == "alice"
    with pytest.raises(StartupError, match="expected 3 fields"):
        parse_tokens(f"{named} admin * name=a name=b")


def test_without_tokens_only_loopback_writes() -> None:
    access = Access(None)
    access.check(None, "127.0.0.1", "register", "web")
    access.check(None, "::1", "register", "web")
    with pytest.raises(Forbidden, match=r"only from loopback .* came from 10\.0\.0\.7"):
        access.check(None, "10.0.0.7", "register", "web")
    assert is_loopback("127.0.0.53")
    assert not is_loopback("0.0.0.0")  # noqa: S104  # binding everything is not loopback
    assert not is_loopback(None)


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        (f"{WEB} service", "line 1: expected 3 fields `token role services`"),
        ("short service web", "16 to 256 characters"),
        (f"\n{WEB} owner web", "line 2: role 'owner' is not one of service, client, admin"),
        (f"{WEB} admin web", "write `\\*`"),
        (f"{WEB} service we.b", "contains '.'"),
        (f"{WEB} service web\n{WEB} client web", "line 2: the token of line 1 again"),
        ("# nothing\n", "holds no token"),
    ],
)
def test_bad_files_stop_the_start_with_the_line(text: str, sentence: str) -> None:
    with pytest.raises(StartupError, match=sentence):
        parse_tokens(text)


def test_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot read it"):
        Access.from_file(tmp_path / "missing")
    path = tmp_path / "tokens"
    path.write_text(FILE)
    assert Access.from_file(path).grants is not None


KV_FILE = f"""
{WEB}     service  web
{CLIENT}  client   web      read:shared/,write:traefik/
{ADMIN}   admin    *
"""


def test_kv_rights_by_prefix() -> None:
    access = Access(parse_tokens(KV_FILE))
    access.check_kv(WEB, "10.0.0.1", "read", "web/db.url", recurse=False)
    access.check_kv(WEB, "10.0.0.1", "read", "web/", recurse=True)
    with pytest.raises(Forbidden, match=r"line 2 \(service\) may not write key 'web/db.url'"):
        access.check_kv(WEB, "10.0.0.1", "write", "web/db.url", recurse=False)
    with pytest.raises(Forbidden, match="may not read keys under 'web'"):
        access.check_kv(WEB, "10.0.0.1", "read", "web", recurse=True)  # would show web2/
    access.check_kv(CLIENT, "10.0.0.1", "read", "shared/x", recurse=False)
    access.check_kv(CLIENT, "10.0.0.1", "read", "traefik/http/", recurse=True)  # write reads
    access.check_kv(CLIENT, "10.0.0.1", "write", "traefik/http/routers/a/rule", recurse=False)
    with pytest.raises(Forbidden, match=r"may not read key .web/db\.url."):
        access.check_kv(CLIENT, "10.0.0.1", "read", "web/db.url", recurse=False)
    access.check_kv(ADMIN, "10.0.0.1", "write", "", recurse=True)
    with pytest.raises(Forbidden, match="needs a token"):
        access.check_kv(None, "127.0.0.1", "read", "web/db.url", recurse=False)


def test_kv_without_a_token_file_reads_open_writes_from_loopback() -> None:
    access = Access(None)
    access.check_kv(None, "10.0.0.1", "read", "any", recurse=False)
    access.check_kv(None, "127.0.0.1", "write", "any", recurse=False)
    with pytest.raises(Forbidden, match="only from loopback"):
        access.check_kv(None, "10.0.0.1", "write", "any", recurse=False)


@pytest.mark.parametrize("field", ["read", "read:", "admin:x/", "write"])
def test_a_bad_kv_right_names_its_line(field: str) -> None:
    with pytest.raises(StartupError, match=r"line 1: kv right .* must be read:<prefix>"):
        parse_tokens(f"{WEB} service web {field}")
