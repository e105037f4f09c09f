"""DNS queries/s and latency: dnsperf (Debian) against the gateway vs a bare responder.

Registry, balancer and gateway run as their own processes on one nats-server; three
instances of `web` are registered. dnsperf asks `web.service.baton A` for a fixed time
with a fixed number of queries outstanding, first against the gateway (every answer
carries the balancer's pick first, so each query is also a NATS request to the balancer),
then against tests/bench/dns_responder.py (dnspython, one fixed record) in the same run.
p99 comes from dnsperf's per-query latencies (-v).

    python tests/bench/bench_dns.py [--quick] [--seconds 10] [--outstanding 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.asyncquery
import dns.message
import nats
from harness import ROOT, Row, emit, pct, processes, wait_for_responder, worker

from schemas import subjects
from schemas.registry import Registration

NAME = "web.service.baton"
_LATENCY = re.compile(rb"^> NOERROR \S+ A ([0-9.]+)$", re.MULTILINE)
_QPS = re.compile(rb"Queries per second:\s+([0-9.]+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def answers(port: int) -> None:
    """Wait until the server at `port` answers NAME with records."""
    deadline = time.monotonic() + 20
    while True:
        q = dns.message.make_query(NAME, "A")
        try:
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=0.5)
            if r.answer:
                return
        except (TimeoutError, OSError, dns.exception.DNSException):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answers {NAME} on port {port}")
        await asyncio.sleep(0.1)


def dnsperf(port: int, seconds: float, outstanding: int, queries: Path) -> tuple[float, float]:
    """(queries/s, p99 ms) of one dnsperf run."""
    dnsperf_bin = shutil.which("dnsperf")
    if dnsperf_bin is None:
        raise RuntimeError("dnsperf missing: `just dns-tools` installs it")
    argv = ["-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds)]
    out = subprocess.run(  # noqa: S603
        [dnsperf_bin, *argv, "-q", str(outstanding), "-t", "2", "-v"],
        capture_output=True,
        check=True,
    ).stdout
    qps = _QPS.search(out)
    if qps is None:
        raise RuntimeError(f"dnsperf said no queries/s:\n{out[-2000:].decode()}")
    latencies = [float(m) for m in _LATENCY.findall(out)]  # seconds; pct gives ms
    return float(qps[1]), pct(latencies, 0.99)


async def main(args: argparse.Namespace, base_port: int) -> None:
    port = free_port()
    os.environ.update(GATEWAY_DNS_PORT=str(port), GATEWAY_HTTP_PORT="0")
    work = Path(tempfile.mkdtemp(prefix="baton-bench-dns-"))
    queries = work / "queries.txt"
    queries.write_text(f"{NAME} A\n")
    with processes(*(worker(n) for n in ("registry", "balancer", "gateway"))) as server:
        nc = await nats.connect(server.url)
        for i in range(3):
            reg = Registration(instance_id=f"web-{i}", host="127.0.0.1", port=8000 + i, ttl_s=3600)
            await wait_for_responder(nc, subjects.register("web"), reg)
        await answers(port)
        await answers(base_port)
        run = (args.seconds, args.outstanding, queries)
        g_qps, g_p99 = await asyncio.to_thread(dnsperf, port, *run)
        b_qps, b_p99 = await asyncio.to_thread(dnsperf, base_port, *run)
        await nc.close()
    print(
        f"dnsperf {args.seconds:g} s, {args.outstanding} outstanding, {NAME} A "
        "(3 instances; the gateway asks the balancer for each answer's first record):"
    )
    rows = [
        Row(
            area="dns",
            measure=f"queries/s, dnsperf, {args.outstanding} outstanding",
            baseline="bare dnspython UDP responder",
            value=g_qps,
            base=b_qps,
            unit="q/s",
            ratio=g_qps / b_qps,
            target=">= 0.5x",
            met=g_qps / b_qps >= 0.5,
        ),
        Row(
            area="dns",
            measure="p99 latency, dnsperf",
            baseline="bare dnspython UDP responder",
            value=g_p99,
            base=b_p99,
            unit="ms",
            ratio=g_p99 / b_p99,
        ),
    ]
    emit("dns", rows, {"gateway_qps": g_qps, "bare_qps": b_qps, "gateway_p99_ms": g_p99})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--outstanding", type=int, default=20)
    ns = parser.parse_args()
    if ns.quick:
        ns.seconds = min(ns.seconds, 3.0)
    base = free_port()
    bare = subprocess.Popen(  # noqa: S603  # our own baseline
        [sys.executable, str(ROOT / "tests" / "bench" / "dns_responder.py"), str(base)]
    )
    try:
        asyncio.run(main(ns, base))
    finally:
        bare.terminate()
        bare.wait()
