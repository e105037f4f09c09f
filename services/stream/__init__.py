"""JetStream, the way Baton's workers use it: the one package that owns its patterns.

    Follower      an ordered consumer as a lifecycle child: from a start, then as stored,
                  each record once and in order; retries by services/retry.py; restarts
                  after a reconnect; `caught_up` once what existed at start is delivered
    Writer        append-if-last-sequence (compare-and-set on a subject's last record),
                  and the last record of a subject
    LostRace      every "another writer stored first" answer, mapped in one place
    replay        a bounded read of a subject's stored records, oldest first
    StreamSpec    a stream as a worker needs it; `ensure_stream` creates or updates it
    Lease         a lease on one key of a KV bucket (max_age = the lease): claim, renew,
                  release, presence keys beside it; every answer mapped to written,
                  refused (another writer won) or unreachable

With services/bus.py, this package is the only worker code that touches the NATS
client: the bus hands it a JetStream context (`Bus.jetstream`), and workers hold a Bus.
"""

from services.stream.follower import Follower
from services.stream.lease import Lease, Renewal
from services.stream.record import Record
from services.stream.replay import replay
from services.stream.spec import StreamSpec, cluster_replicas, ensure_stream, never
from services.stream.writer import LostRace, Writer, lost_race

__all__ = [
    "Follower",
    "Lease",
    "LostRace",
    "Record",
    "Renewal",
    "StreamSpec",
    "Writer",
    "cluster_replicas",
    "ensure_stream",
    "lost_race",
    "never",
    "replay",
]
