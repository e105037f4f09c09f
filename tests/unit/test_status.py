"""`baton status`'s table, from stats replies of Baton and of other ADR-32 services."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from schemas.micro import Stats
from services.cli.status import render

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def stats(**fields: object) -> Stats:
    reply = {"name": "svc", "id": "X1", "version": "1.0.0", "endpoints": [], **fields}
    return msgspec.json.decode(msgspec.json.encode(reply), type=Stats)


def uptime(reply: Stats) -> str:
    return render([reply], NOW).splitlines()[1].split()[3]


def test_started_as_every_implementation_writes_it() -> None:
    assert uptime(stats(started="2026-12-01T09:59:55.123456Z")) == "4.9s"  # Baton, nats-py
    assert uptime(stats(started="2026-12-01T09:57:00.123Z")) == "2m59s"  # nats.js
    assert uptime(stats(started="2026-12-01T07:59:59.123456789Z")) == "2h00m"  # nats.go
    assert uptime(stats(started="yesterday")) == "-"


def test_what_other_services_leave_out_reads_as_empty() -> None:
    reply = stats(
        started="2026-12-01T09:59:00.000Z",
        metadata=None,
        endpoints=[{"name": "echo", "subject": "js.echo", "queue_group": "q", "num_requests": 2}],
    )
    head, body = render([reply], NOW).split("\n\n")
    assert head.splitlines()[1].split()[4:] == ["-", "-", "2", "0"]  # pid, host, counts
    row = body.splitlines()[1].split()
    assert row[2:8] == ["echo", "js.echo", "q", "2", "0", "0us"]
    assert row[8] == "-"  # no last error
