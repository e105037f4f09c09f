"""DNS queries/s and latency: dnsperf (Debian) against the gateway vs a bare responder.

Registry, balancer and gateway run as their own processes on one nats-server; three
instances of `web` are registered. dnsperf asks `web.service.baton A` for a fixed time
with a fixed number of queries outstanding, first against the gateway (every answer
carries the balancer's pick first, so each query is also a NATS request to the balancer),
then against tests/bench/dns_responder.py (dnspython, one fixed record) in the same run.
p99 comes from dnsperf's per-query latencies (-v).

    python tests/bench/bench_dns.py [--quick] [--seconds 10] [--rounds 5] [--outstanding 20]

Rounds alternate which server goes first; the figures are medians over rounds, and each
ratio the median of the ratios within a round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.asyncquery
import dns.message
import nats
from harness import ROOT, Row, emit, pct, processes, wait_for_responder, worker
from ports import free_port

from schemas import subjects
from schemas.registry import Registration

NAME = "web.service.baton"
_LATENCY = re.compile(rb"^> NOERROR \S+ A ([0-9.]+)$", re.MULTILINE)
_QPS = re.compile(rb"Queries per second:\s+([0-9.]+)")


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
        rounds: list[tuple[float, float, float, float]] = []
        for n in range(args.rounds):
            # the order reversed each round: a burst of load elsewhere moves one round only
            order = [port, base_port] if n % 2 == 0 else [base_port, port]
            got = {p: await asyncio.to_thread(dnsperf, p, *run) for p in order}
            rounds.append((*got[port], *got[base_port]))
            print(
                f"  round {n + 1}: gateway {got[port][0]:,.0f} q/s p99 {got[port][1]:.2f} ms, "
                f"bare {got[base_port][0]:,.0f} q/s p99 {got[base_port][1]:.2f} ms"
            )
        await nc.close()
    # each figure is the median over rounds; each ratio the median of same-round ratios
    g_qps, g_p99, b_qps, b_p99 = (statistics.median(r[i] for r in rounds) for i in range(4))
    qps_ratio = statistics.median(r[0] / r[2] for r in rounds)
    p99_ratio = statistics.median(r[1] / r[3] for r in rounds)
    print(
        f"dnsperf {args.rounds} x {args.seconds:g} s each, {args.outstanding} outstanding, "
        f"{NAME} A (3 instances; the gateway asks the balancer for each answer's first record):"
    )
    rows = [
        Row(
            area="dns",
            measure=f"queries/s, dnsperf, {args.outstanding} outstanding",
            baseline="bare dnspython UDP responder",
            value=g_qps,
            base=b_qps,
            unit="q/s",
            ratio=qps_ratio,
            target=">= 0.5x",
            met=qps_ratio >= 0.5,
        ),
        Row(
            area="dns",
            measure="p99 latency, dnsperf",
            baseline="bare dnspython UDP responder",
            value=g_p99,
            base=b_p99,
            unit="ms",
            ratio=p99_ratio,
        ),
    ]
    emit("dns", rows, {"rounds": [list(r) for r in rounds]})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--outstanding", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    ns = parser.parse_args()
    if ns.quick:
        ns.seconds, ns.rounds = min(ns.seconds, 2.0), min(ns.rounds, 3)
    base = free_port()
    bare = subprocess.Popen(  # noqa: S603  # our own baseline
        [sys.executable, str(ROOT / "tests" / "bench" / "dns_responder.py"), str(base)]
    )
    try:
        asyncio.run(main(ns, base))
    finally:
        bare.terminate()
        bare.wait()
