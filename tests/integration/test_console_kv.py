"""The console's config-center keys page in Debian's Chromium: a real gateway, a real kv
worker; browse, read, store with the token, the history's diff and a rollback, checked
against the gateway's Consul KV routes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser import CONSOLE_MARKS, XSS, browser, token_file
from httpgateway import Http, stack
from waiting import until
from workers import run_kv

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from natsserver import NatsServer

pytestmark = CONSOLE_MARKS

ADMIN = "console-kv-admin-token-01"
READER = "console-kv-reader-token-1"


@pytest.fixture
async def http(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Http]:
    tokens = token_file(tmp_path, ADMIN, READER)
    async with (
        run_kv(nats_server.url),
        stack(nats_server.url, balancer=False, governor=False, tokens=tokens) as client,
    ):
        yield client


async def _put(http: Http, key: str, value: str) -> None:
    status, body, _ = await http.call(
        "PUT", f"/v1/kv/{key}", data=value.encode(), headers={"X-Consul-Token": ADMIN}
    )
    assert (status, body) == (200, True)


async def _raw(http: Http, key: str) -> str:
    status, body, _ = await http.call(
        "GET", f"/v1/kv/{key}", params={"raw": ""}, headers={"X-Consul-Token": ADMIN}
    )
    assert status == 200, body
    return body if isinstance(body, str) else str(body)


async def test_browse_edit_with_the_token_see_the_diff_and_roll_back(
    http: Http, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("BATON_CONSOLE_SHOTS") or tmp_path)
    await _put(http, "app/db.url", "postgres://db-a:5432/app\npool=5\n")
    await _put(http, "app/feature/banner", XSS)
    await _put(http, "top", "1")
    async with browser(http.base) as page:
        await page.open("/#/kv/")
        await page.text("main .error", "the config center needs a token")  # reads too
        await page.type("#token", READER)
        await page.click("#token-form button")
        await page.go("#/workers")
        await page.go("#/kv/")
        await page.text("#keys", "app/")
        await page.text("#keys", "top")
        await page.click("#keys tr[data-key='app/'] a")
        await page.text("#keys", "app/db.url")
        await page.text("#keys", "app/feature/")
        await page.go("#/kv-key/app%2Ffeature%2Fbanner")
        await page.text("#kv-value", XSS)  # as text: no image, no alert
        assert await page.js("return document.querySelectorAll('main img').length") == 0
        assert not await page.alert_open()
        # a reader sees, and may not store
        await page.go("#/kv-key/app%2Fdb.url")
        await page.text("#kv-value", "pool=5")
        await page.type("#kv-edit", "postgres://db-b:5432/app\npool=5\n")
        await page.click("#kv-put")
        await page.text("#message", "Refused (403)")
        await page.text("#message", "may not write key 'app/db.url'")
        assert (await _raw(http, "app/db.url")).startswith("postgres://db-a")
        # an admin stores, under its name; the history shows the line that changed
        await page.type("#token", ADMIN)
        await page.click("#token-form button")
        await page.click("#kv-put")
        await page.text("#message", "Done.")
        await until(lambda: _starts(http, "app/db.url", "postgres://db-b"), timeout=10)
        await page.text("#kv-history", "alice")
        await page.text("#kv-history", "-postgres://db-a:5432/app")
        await page.text("#kv-history", "+postgres://db-b:5432/app")
        await page.screenshot(shots / "kv.png")
        first = await page.js(
            "return document.querySelector('#kv-history tbody tr:last-child').dataset.index"
        )
        await page.click(f"#kv-history tr[data-index='{first}'] button.kv-rollback")
        await page.text("#message", "Done.")
        await until(lambda: _starts(http, "app/db.url", "postgres://db-a"), timeout=10)
        await page.text("#kv-history", f"(rollback to {first})")
        await page.text("#kv-value", "postgres://db-a")


async def _starts(http: Http, key: str, prefix: str) -> bool | None:
    return (await _raw(http, key)).startswith(prefix) or None


async def test_history_and_rollback_refuse_what_the_token_may_not(http: Http) -> None:
    await _put(http, "app/x", "1")
    status, body, _ = await http.call("GET", "/v1/ui/kv/history/app/x")
    assert status == 403
    assert body["message"].startswith("the config center needs a token")
    status, body, _ = await http.call(
        "POST",
        "/v1/ui/kv/rollback/app/x",
        {"to_index": 1},
        headers={"Authorization": f"Bearer {READER}"},
    )
    assert status == 403
    assert "may not write key 'app/x'" in body["message"]
    status, body, _ = await http.call(
        "POST", "/v1/ui/kv/rollback/app/x", {"to": 1}, headers={"X-Consul-Token": ADMIN}
    )
    assert (status, body["message"]) == (
        400,
        "invalid rollback: Object contains unknown field `to`",
    )
    status, body, _ = await http.call(
        "POST", "/v1/ui/kv/rollback/app/x", {}, headers={"X-Consul-Token": ADMIN}
    )
    assert (status, body["message"]) == (400, "to_index is required")
    status, body, _ = await http.call(
        "GET", "/v1/ui/kv/history/app/x", headers={"X-Consul-Token": READER}
    )
    assert status == 200
    assert [(r["op"], r["value"], r["diff"]) for r in body["revisions"]] == [
        ("put", "1", ["@@ -0,0 +1 @@", "+1"])
    ]
