"""One instance kept registered in etcd or ZooKeeper by a process of its own, to be
SIGKILLed: what bench_peers.py's failure detection kills (Baton's is slow_backend.py).

    python tests/bench/peer_instance.py etcd --port 2379 --service fail --id v1 --ttl 1
    python tests/bench/peer_instance.py zookeeper --port 2181 --service fail --id v1 --ttl 4

etcd: a lease of --ttl seconds, the key put with it, then a keep-alive every ttl / 3 (what
etcd's Go client, clientv3, does). ZooKeeper: a session of --ttl seconds (kazoo pings
it at a third of that) holding one ephemeral node. Either runs until it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import threading

import aetcd
from kazoo.client import KazooClient
from peer_systems import key, zk_path


async def etcd(args: argparse.Namespace) -> None:
    async with aetcd.Client(host="127.0.0.1", port=args.port) as client:
        lease = await client.lease(int(args.ttl))
        await client.put(key(args.service, args.id), b"127.0.0.1:1", lease=lease)
        while True:
            await asyncio.sleep(args.ttl / 3)
            await lease.refresh()


def zookeeper(args: argparse.Namespace) -> None:
    zk = KazooClient(hosts=f"127.0.0.1:{args.port}", timeout=args.ttl)
    zk.start(30)
    zk.create(zk_path(args.service, args.id), b"", ephemeral=True, makepath=True)
    threading.Event().wait()  # kazoo's own thread keeps the session


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("system", choices=["etcd", "zookeeper"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--ttl", type=float, required=True, help="lease or session, seconds")
    args = parser.parse_args()
    if args.system == "etcd":
        asyncio.run(etcd(args))
    else:
        zookeeper(args)


if __name__ == "__main__":
    main()
