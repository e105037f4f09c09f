"""Consul's KV API on the gateway, served by the config center: raw HTTP and py-consul."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

import pytest
from httpgateway import Http, stack
from nodescript import node_script
from test_gateway_node_consul import node_consul  # noqa: F401  # a fixture: npm consul
from waiting import until
from workers import run_kv

from schemas.fields import utcnow
from schemas.kv import MAX_VALUE, KvRecord
from services.gateway.http import KV
from services.kv import KvSettings

consul = pytest.importorskip(
    "consul", reason="py-consul is in the dev extra: pip install -e .[dev]"
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from natsserver import NatsServer


@pytest.fixture
async def http(nats_server: NatsServer) -> AsyncIterator[Http]:
    async with (
        run_kv(nats_server.url),
        stack(nats_server.url, balancer=False, governor=False) as client,
    ):
        yield client


async def _put(http: Http, key: str, body: bytes, **params: Any) -> tuple[int, Any, Any]:
    return await http.call("PUT", f"/v1/kv/{key}", data=body, params=params)


async def test_get_put_and_the_consul_shapes(http: Http) -> None:
    status, body, headers = await _put(http, "app/config.yml", b"a: 1\n", flags="7")
    assert (status, body) == (200, True)
    put_index = int(headers["X-Consul-Index"])
    status, body, headers = await http.call("GET", "/v1/kv/app/config.yml")
    assert status == 200
    (pair,) = body
    assert pair == {
        "LockIndex": 0,
        "Key": "app/config.yml",
        "Flags": 7,
        "Value": base64.b64encode(b"a: 1\n").decode(),
        "CreateIndex": put_index,
        "ModifyIndex": put_index,
    }
    assert int(headers["X-Consul-Index"]) == put_index
    status, body, _ = await http.call("GET", "/v1/kv/app/config.yml", params={"raw": ""})
    assert (status, body) == (200, "a: 1\n")


async def test_an_absent_key_is_404_with_an_index(http: Http) -> None:
    await _put(http, "x", b"1")
    status, _, headers = await http.call("GET", "/v1/kv/absent")
    assert status == 404
    assert int(headers["X-Consul-Index"]) >= 1


async def test_recurse_keys_and_separator(http: Http) -> None:
    for key in ("t/http/routers/a/rule", "t/http/routers/b/rule", "t/http/services/s/url"):
        await _put(http, key, b"v")
    status, body, _ = await http.call("GET", "/v1/kv/t/http/", params={"recurse": ""})
    assert [pair["Key"] for pair in body] == [
        "t/http/routers/a/rule",
        "t/http/routers/b/rule",
        "t/http/services/s/url",
    ]
    params = {"keys": "", "separator": "/"}
    status, body, _ = await http.call("GET", "/v1/kv/t/http/", params=params)
    assert (status, body) == (200, ["t/http/routers/", "t/http/services/"])
    status, _, _ = await http.call("GET", "/v1/kv/nothing/", params={"recurse": "true"})
    assert status == 404


async def test_cas_and_delete(http: Http) -> None:
    assert (await _put(http, "c", b"1", cas="0"))[1] is True
    assert (await _put(http, "c", b"2", cas="0"))[1] is False
    index = (await http.call("GET", "/v1/kv/c"))[1][0]["ModifyIndex"]
    assert (await _put(http, "c", b"3", cas=str(index)))[1] is True
    assert (await http.call("DELETE", "/v1/kv/c", params={"cas": str(index)}))[1] is False
    for key in ("d/1", "d/2"):
        await _put(http, key, b"v")
    assert (await http.call("DELETE", "/v1/kv/d/", params={"recurse": ""}))[1] is True
    assert (await http.call("GET", "/v1/kv/d/", params={"recurse": ""}))[0] == 404


async def test_limits_bad_keys_and_what_baton_lacks(http: Http) -> None:
    assert (await _put(http, "big", b"x" * MAX_VALUE))[0] == 200
    status, text, _ = await _put(http, "big", b"x" * (MAX_VALUE + 1))
    assert status == 413
    assert "Value exceeds 524288 byte limit" in text
    status, text, _ = await _put(http, "ctl%01key", b"v")
    assert status == 400
    assert "control character" in text
    status, text, _ = await _put(http, "", b"v")
    assert (status, "is empty" in text) == (400, True)
    status, text, _ = await _put(http, "k", b"v", acquire="some-session")
    assert status == 501
    assert "no sessions or locks" in text
    status, text, _ = await http.call("GET", "/v1/kv/k", params={"dc": "elsewhere"})
    assert (status, "No path to datacenter" in text) == (400, True)
    for accepted in ({"dc": "baton"}, {"consistent": ""}, {"stale": ""}):
        assert (await http.call("GET", "/v1/kv/big", params=accepted))[0] == 200


async def test_a_blocking_query_wakes_on_its_prefix_only(http: Http) -> None:
    await _put(http, "watch/a", b"1")
    _, _, headers = await http.call("GET", "/v1/kv/watch/", params={"recurse": ""})
    index = headers["X-Consul-Index"]
    params = {"recurse": "", "index": index, "wait": "1m"}
    blocked = asyncio.ensure_future(http.call("GET", "/v1/kv/watch/", params=params))
    await _until_parked(http, 1)
    await _put(http, "elsewhere", b"no")  # not under the prefix: still parked
    await _put(http, "watch/b", b"2")
    status, body, headers = await asyncio.wait_for(blocked, 10)
    assert status == 200
    assert [pair["Key"] for pair in body] == ["watch/a", "watch/b"]
    assert int(headers["X-Consul-Index"]) > int(index)


async def test_an_index_ahead_of_the_store_answers_at_once(http: Http) -> None:
    await _put(http, "k", b"v")
    status, _, headers = await http.call("GET", "/v1/kv/k", params={"index": "999999"})
    assert status == 200
    assert int(headers["X-Consul-Index"]) < 999999


async def _until_parked(http: Http, count: int) -> None:
    kv = http.gateway._runner.app[KV]  # the test reads the gateway's state
    await until(lambda: len(kv.waiters) >= count, what="a parked query")


# -- py-consul, a real client ---------------------------------------------------------------
async def test_py_consul_get_put_cas_delete_and_blocking(http: Http) -> None:
    client = consul.Consul(host="127.0.0.1", port=http.gateway.http_port)
    assert await asyncio.to_thread(client.kv.put, "svc/web/timeout", "1s") is True
    index, data = await asyncio.to_thread(client.kv.get, "svc/web/timeout")
    assert data["Value"] == b"1s"
    modify = data["ModifyIndex"]
    assert await asyncio.to_thread(client.kv.put, "svc/web/timeout", "2s", cas=modify - 1) is False
    blocked = asyncio.ensure_future(
        asyncio.to_thread(client.kv.get, "svc/web/timeout", index=index, wait="1m")
    )
    assert await asyncio.to_thread(client.kv.put, "svc/web/timeout", "5s", cas=modify) is True
    new_index, data = await asyncio.wait_for(blocked, 10)
    assert data["Value"] == b"5s"
    assert new_index > index
    index, keys = await asyncio.to_thread(client.kv.get, "svc/", keys=True, separator="/")
    assert keys == ["svc/web/"]
    assert await asyncio.to_thread(client.kv.delete, "svc/", recurse=True) is True
    _, data = await asyncio.to_thread(client.kv.get, "svc/web/timeout")
    assert data is None


# -- node-consul, a real client ---------------------------------------------------------------
async def test_node_consul_watches_a_key(http: Http, node_consul: Path) -> None:  # noqa: F811
    await _put(http, "app/feature", b"off")
    async with node_script(
        "consul_kv_watch.js", node_consul, str(http.gateway.http_port), "app/feature"
    ) as watcher:

        async def value(want: str) -> int:
            """The X-Consul-Index of the first line of the watcher that shows `want`."""
            seen = await watcher.line(lambda seen: seen["value"] == want)
            return int(seen["index"])

        first = await value("off")
        await _until_parked(http, 1)  # its blocking query is waiting
        await _put(http, "app/other", b"not this key")
        await _put(http, "app/feature", b"on")
        second = await value("on")
        assert second > first


async def test_blocking_queries_see_each_change_with_two_kv_replicas(
    nats_server: NatsServer, http: Http
) -> None:
    """A woken query may read from the replica that did not write: it reads again until
    that replica has the change, so no change is answered with the old index."""
    async with run_kv(nats_server.url):  # a second replica, beside the fixture's
        _, _, headers = await _put(http, "two/k", b"0")
        index = headers["X-Consul-Index"]
        for n in range(1, 21):
            params = {"index": index, "wait": "1m"}
            blocked = asyncio.ensure_future(http.call("GET", "/v1/kv/two/k", params=params))
            await _until_parked(http, 1)
            await _put(http, "two/k", str(n).encode())
            status, body, headers = await asyncio.wait_for(blocked, 10)
            assert status == 200
            assert base64.b64decode(body[0]["Value"]) == str(n).encode()
            assert int(headers["X-Consul-Index"]) > int(index)
            index = headers["X-Consul-Index"]


async def test_py_consul_reads_a_prefix_past_one_reply(http: Http) -> None:
    """Five 400 KiB values are more than one NATS reply: the gateway reads every page."""
    client = consul.Consul(host="127.0.0.1", port=http.gateway.http_port)
    values = {f"big/{n}": bytes([n + 65]) * 400 * 1024 for n in range(5)}
    for key, value in values.items():
        assert await asyncio.to_thread(client.kv.put, key, value) is True
    index, data = await asyncio.to_thread(client.kv.get, "big/", recurse=True)
    assert {pair["Key"]: pair["Value"] for pair in data} == values
    assert int(index) == max(pair["ModifyIndex"] for pair in data)
    _, data = await asyncio.to_thread(client.kv.get, "big/", recurse=True, consistency="consistent")
    assert len(data) == len(values)


async def test_a_consistent_read_of_a_lagging_replica_is_503(nats_server: NatsServer) -> None:
    settings = KvSettings(retry_s=0.1, consistent_wait_s=0.2)
    async with (
        run_kv(nats_server.url, settings) as worker,
        stack(nats_server.url, balancer=False, governor=False) as http,
    ):
        await _put(http, "lag/k", b"old")
        status, body, _ = await http.call("GET", "/v1/kv/lag/k", params={"consistent": ""})
        assert (status, base64.b64decode(body[0]["Value"])) == (200, b"old")
        await worker.store.follower.close()  # this replica stops following the stream
        newer = KvRecord(key="lag/k", op="put", value=b"new", actor="other", at=utcnow())
        await worker.store.append(newer, worker.index.last_seq("lag/k"))  # another replica
        status, body, _ = await http.call("GET", "/v1/kv/lag/k", params={"consistent": ""})
        assert status == 503
        assert "followed the store to index" in str(body)
