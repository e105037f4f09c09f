"""`just demo --cluster --chaos`: the local stack on a 3-node cluster, two replicas of
every worker (the gateway's on ports of their own), each ready once it answers
$SRV.PING, a node or replica killed (SIGKILL) and restarted every second while the
demo's calls keep succeeding; Ctrl-C stops it all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from natscluster import free_port

REPO = Path(__file__).resolve().parents[2]
FREE = ("--port", "-1", "--route-port", "-1", "--http-port", "-1")
GATEWAY = ("--dns-port", "-1", "--gateway-port", "-1")  # each replica its own free ports


@pytest.mark.timeout(120)
def test_the_demo_on_a_cluster_survives_chaos(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env |= {
        "DEMO_DURATION_S": "8",
        "DEMO_INSTANCES": "3",
        "DEMO_CLIENTS": "3",
        "DEMO_PRINT_S": "1",
        "DEMO_OPERATOR_S": "0",
    }
    ports = (*FREE, *GATEWAY, "--influx-port", str(free_port()))
    chaos = ("--chaos", "--chaos-every", "1", "--chaos-down", "1", "--root", str(tmp_path))
    done = subprocess.run(  # noqa: S603  # our own module
        [sys.executable, "-m", "services.stack", "demo", "--cluster", *ports, *chaos],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out  # no child died except those chaos killed
    assert "stack: demo finished" in out, out
    for name in ("registry", "balancer", "governor", "kv", "gateway", "prober"):
        for replica in (1, 2):  # ready by its own ping: the reply named its id
            assert re.search(rf"stack: {name}-{replica} ready \(pid \d+, id \w+", out), out
    kills = re.findall(r"chaos: killed (\S+) \(SIGKILL\)", out)
    assert len(kills) >= 2, out
    # the table kept counting calls after the first kill: calls still succeed
    after = out[out.index("chaos: killed") :]
    counts = [int(n) for n in re.findall(r"calls (\d+), resolve errors", after)]
    assert len(counts) >= 2, out
    assert counts[-1] > counts[0], out
