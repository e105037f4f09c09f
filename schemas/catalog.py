"""The wire contract as one table: every subject, its message, its reply, who sends it.

`python -m schemas.contract_gen` turns this table and the Structs it names into
`docs/asyncapi.yaml` (AsyncAPI 3.0) and `docs/schemas/<Message>.json`; `just contract`
regenerates and validates them, and tests/unit/test_contract.py fails when the committed
files drift from this table or from the Structs.

Adding a subject is one entry in CHANNELS (and, for a new `{token}` in an address, one
line in PARAMETERS):

    Channel(
        _each(subjects.RESOLVE),  # the address, balancer.v1.resolve.{service}
        ResolveRequest,           # the message Struct (schemas/)
        Endpoint,                 # the reply Struct, or None for a plain publish
        sender="a client",        # who publishes it; a worker's name first = the workers send
        receivers="balancer",     # who subscribes: name every worker that does
        op=REQUEST,               # PUBLISH, REQUEST or PUBLISH_OR_REQUEST
        queue="balancer",         # the answering worker's queue group, "" for none
        summary="One endpoint of the service, picked by its strategy.",
    ),

Two addresses with the same prefix (`$SRV.PING` and `$SRV.PING.{name}`) need a `key` each,
the channel's id in the AsyncAPI document; a subject that never answers with an error
reply says `error_replies=False`.

The prefix must be a constant of schemas/subjects.py (subjects are built only there), and
tests/integration/test_catalog.py checks `receivers` and `queue` against the
subscriptions the running workers really make, as nats-server's monitoring lists them.

A new field of an existing Struct needs no entry here: the generator reads the Structs.
Its meaning comes from the row for it in docs/contract.md (the field table under the
message's "#### `Message`" heading), and a test fails, naming it, until it has one. A
Struct's docstring is used where the contract has no paragraph for the message. An
example of it may go in schemas/examples.py (the tests check every example there).

So adding a message is: its entry here, its "#### `Message`" paragraph and field table in
docs/contract.md, then `just contract` (regenerate, validate) and commit docs/.
"""

from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Final, Literal

from schemas import subjects
from schemas.balancer import (
    CallReport,
    CallReports,
    Ejections,
    Endpoint,
    OutlierEvent,
    OutlierState,
    PickCounts,
    ResolveRequest,
)
from schemas.checks import CheckResult, ProberPresence
from schemas.governor import (
    ConfigApplied,
    ConfigChange,
    ConfigHistory,
    HistoryQuery,
    Rollback,
    ServiceConfig,
)
from schemas.kv import (
    KvDelete,
    KvEntries,
    KvHistory,
    KvHistoryQuery,
    KvPut,
    KvQuery,
    KvRecord,
    KvRollback,
    KvWritten,
)
from schemas.micro import Info, Ping, Stats
from schemas.registry import (
    Ack,
    Deregistration,
    Empty,
    Heartbeat,
    InstanceEvent,
    InstanceList,
    InstancesQuery,
    Registration,
    ReplicaSnapshot,
    ReplicaStatus,
    ServiceList,
    SnapshotQuery,
)
from schemas.subjects import NAME_RULE

if TYPE_CHECKING:
    from msgspec import Struct

__all__ = [
    "CHANNELS",
    "ERROR_CODES",
    "PARAMETERS",
    "PUBLISH",
    "PUBLISH_OR_REQUEST",
    "REQUEST",
    "WORKERS",
    "Channel",
    "Op",
]

Op = Literal["publish", "request", "publish-or-request"]
PUBLISH: Final[Op] = "publish"  # fire and forget: no reply, an invalid one is counted, dropped
REQUEST: Final[Op] = "request"  # request-reply: always answered, with the reply or an error
# a publish, or a request when the sender wants the reply (an Ack) or the error
PUBLISH_OR_REQUEST: Final[Op] = "publish-or-request"

_TOKEN = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Channel:
    """One subject of the contract (see the module docstring for the fields)."""

    address: str
    message: type[Struct]
    reply: type[Struct] | None
    _: KW_ONLY
    sender: str
    receivers: str
    op: Op
    summary: str
    queue: str = ""
    # the AsyncAPI channel id, when the address without its parameters is not unique
    # (`$SRV.PING`, `$SRV.PING.{name}` and `$SRV.PING.{name}.{id}` are three channels)
    key: str = ""
    # whether a failed request is answered with an ErrorReply ($SRV never answers one)
    error_replies: bool = True

    def __post_init__(self) -> None:
        if (self.reply is None) != (self.op == PUBLISH):
            raise ValueError(f"{self.address}: a reply goes with request ops, none with publish")

    @property
    def parameters(self) -> list[str]:
        """The `{token}` names in the address, in order."""
        return _TOKEN.findall(self.address)

    @property
    def by_worker(self) -> bool:
        """Whether one of Baton's workers sends it (else they receive it)."""
        return self.sender.split()[0] in WORKERS

    @property
    def name(self) -> str:
        """The address up to its parameters: `registry.v1.register`."""
        return self.address.split("{", 1)[0].rstrip(".")

    @property
    def id(self) -> str:
        """The channel's id in the AsyncAPI document: `key`, else `name`."""
        return self.key or self.name


WORKERS: Final = ("registry", "balancer", "governor", "collector", "gateway", "kv", "prober")

# The codes of an error reply (header Nats-Service-Error-Code and the body's `code`), as
# services/errors.py maps them; any other code reads as a plain error with that code.
ERROR_CODES: Final[dict[int, str]] = {
    400: "bad input: the message says what was wrong and how to fix it",
    403: "not allowed (reserved: today NATS itself refuses a subject a user may not use)",
    404: "unknown service or instance",
    409: "revision conflict: the config is not at the expected_revision",
    413: "too large: a value over 512 KiB, or a read whose values do not fit one reply",
    500: "a bug in the worker (logged there)",
    503: "no instance can take the request, or the config store is unreachable",
}

# What each `{token}` of an address stands for.
PARAMETERS: Final[dict[str, str]] = {
    "service": f"The service name: {NAME_RULE}. The subject names the service; a payload "
    "that also carries `service` must name the same one.",
    "name": "A worker's NATS micro name: `baton-<worker>` (baton-registry, baton-balancer, "
    "baton-governor, baton-kv, baton-collector, baton-gateway, baton-prober).",
    "key": "A config center key: its `/`-separated segments, one token each; bytes other "
    "than A-Z a-z 0-9 _ - are written %XX (uppercase hex), an empty segment is `%`: "
    "`config/app.yml` is `config.app%2Eyml`, `traefik/` is `traefik.%`. A permission on "
    "`kv.v1.get.web.>` reads every key under `web/`.",
    "id": "One worker process's NATS micro id: a NUID (22 characters of 0-9 A-Z a-z), "
    "new at every start.",
}


def _each(prefix: str) -> str:
    return prefix + ".{service}"


def _key(prefix: str) -> str:
    return prefix + ".{key}"


CHANNELS: Final[tuple[Channel, ...]] = (
    # -- registry ------------------------------------------------------------------------
    Channel(
        _each(subjects.REGISTER),
        Registration,
        Ack,
        sender="a service instance",
        receivers="registry",
        op=PUBLISH_OR_REQUEST,
        summary="Register an instance, or refresh its registration; registering again "
        "with the same fields is a heartbeat.",
    ),
    Channel(
        _each(subjects.HEARTBEAT),
        Heartbeat,
        Ack,
        sender="a service instance",
        receivers="registry (replies); balancer and collector listen",
        op=PUBLISH_OR_REQUEST,
        summary="Keep the lease and report load; 404 when the registry does not know "
        "the instance (register again).",
    ),
    Channel(
        _each(subjects.DEREGISTER),
        Deregistration,
        Ack,
        sender="a service instance",
        receivers="registry",
        op=PUBLISH_OR_REQUEST,
        summary="Remove an instance at once; deregistering twice is not an error.",
    ),
    Channel(
        _each(subjects.INSTANCES),
        InstancesQuery,
        InstanceList,
        sender="anyone",
        receivers="registry",
        op=REQUEST,
        queue="registry",
        summary="Every instance of the service, healthy and unhealthy, with overrides "
        "applied; paged with limit/after; 404 for a service with none.",
    ),
    Channel(
        subjects.SERVICES,
        Empty,
        ServiceList,
        sender="anyone",
        receivers="registry",
        op=REQUEST,
        queue="registry",
        summary="The names of every service with a registered instance, sorted.",
    ),
    Channel(
        _each(subjects.EVENTS),
        InstanceEvent,
        None,
        sender="registry (the leading replica)",
        receivers="balancer, collector, gateway, prober, registry (its replicas follow them), "
        "anyone",
        op=PUBLISH,
        summary="Every change of an instance's state, numbered per fleet epoch.",
    ),
    Channel(
        subjects.REPLICA_LEADER,
        Empty,
        ReplicaStatus,
        sender="registry (its replicas), an operator",
        receivers="registry (the leader only)",
        op=REQUEST,
        summary="Extension, between registry replicas: the leader answers; no responders "
        "means nobody leads right now.",
    ),
    Channel(
        subjects.REPLICA_SNAPSHOT,
        SnapshotQuery,
        ReplicaSnapshot,
        sender="registry (a replica catching up)",
        receivers="registry (caught-up replicas)",
        op=REQUEST,
        queue="registry",
        summary="Extension, between registry replicas: a page of a caught-up replica's "
        "lease table.",
    ),
    Channel(
        subjects.REPLICA_PRESENCE,
        Empty,
        ReplicaStatus,
        sender="registry (its replicas)",
        receivers="registry (every caught-up follower answers)",
        op=REQUEST,
        summary="Extension, between registry replicas: every caught-up follower answers "
        "(a scatter); the smallest id is the deputy while no leader answers.",
    ),
    # -- balancer ------------------------------------------------------------------------
    Channel(
        _each(subjects.RESOLVE),
        ResolveRequest,
        Endpoint,
        sender="a client (the gateway too, untracked, for DNS answers)",
        receivers="balancer",
        op=REQUEST,
        queue="balancer",
        summary="One endpoint of the service, picked by its strategy (or the request's).",
    ),
    Channel(
        _each(subjects.REPORT),
        CallReport,
        None,
        sender="a client",
        receivers="balancer (every replica), collector",
        op=PUBLISH,
        summary="How a call to a resolved endpoint went: latency, success, the pick.",
    ),
    Channel(
        _each(subjects.REPORTS),
        CallReports,
        None,
        sender="a client (the SDK batches by default)",
        receivers="balancer (every replica), collector",
        op=PUBLISH,
        summary="Extension: many call reports in one message; each means what it would "
        "sent alone on balancer.v1.report.",
    ),
    Channel(
        _each(subjects.BALANCER_EVENTS),
        OutlierEvent,
        None,
        sender="balancer (the stream BATON_OUTLIERS, republishing the stored decision)",
        receivers="collector, anyone",
        op=PUBLISH,
        summary="Extension: an instance ejected as an outlier, or returned; once each.",
    ),
    Channel(
        _each(subjects.EJECTIONS),
        Empty,
        Ejections,
        sender="anyone (baton instances, baton ejections)",
        receivers="balancer",
        op=REQUEST,
        queue="balancer",
        summary="Extension: who is ejected now, the cap, and the outliers it kept serving.",
    ),
    Channel(
        _each(subjects.OUTLIER_LOG) + "." + subjects.OUTLIER_STATE,
        OutlierState,
        None,
        sender="balancer (JetStream stream BATON_OUTLIERS, compare-and-set)",
        receivers="balancer, gateway (ordered consumers)",
        op=PUBLISH,
        summary="Internal: a service's ejection state when a change makes no event (the "
        "cap holding an outlier); the gateway leaves the instances ejected out of DNS and "
        "?passing; read it through balancer.v1.ejections.",
        key=f"{subjects.OUTLIER_LOG}.{subjects.OUTLIER_STATE}",
    ),
    Channel(
        _each(subjects.OUTLIER_LOG) + "." + subjects.OUTLIER_EVENT,
        OutlierEvent,
        None,
        sender="balancer (JetStream stream BATON_OUTLIERS, compare-and-set)",
        receivers="balancer, gateway (ordered consumers)",
        op=PUBLISH,
        summary="Internal: an ejection or a return as stored, the service's OutlierState "
        f"in header {subjects.OUTLIER_STATE_HEADER}; the stream republishes it to "
        "balancer.v1.events.{service}, so storing it is publishing it.",
        key=f"{subjects.OUTLIER_LOG}.{subjects.OUTLIER_EVENT}",
    ),
    Channel(
        _each(subjects.PICKS),
        PickCounts,
        None,
        sender="balancer",
        receivers="collector, anyone",
        op=PUBLISH,
        summary="Extension: what one balancer replica picked per instance in one interval.",
    ),
    # -- governor ------------------------------------------------------------------------
    Channel(
        _each(subjects.CHANGE),
        ConfigChange,
        ConfigApplied,
        sender="an operator",
        receivers="governor",
        op=REQUEST,
        queue="governor",
        summary="Change a service's config; answered once the new revision is stored.",
    ),
    Channel(
        _each(subjects.CONFIG),
        Empty,
        ServiceConfig,
        sender="anyone",
        receivers="governor",
        op=REQUEST,
        queue="governor",
        summary="The service's current config (revision 0 with defaults if never set).",
    ),
    Channel(
        _each(subjects.HISTORY),
        HistoryQuery,
        ConfigHistory,
        sender="anyone",
        receivers="governor",
        op=REQUEST,
        queue="governor",
        summary="The service's stored revisions, oldest first (the newest 512 KiB); "
        "filtered by limit, since_revision, since.",
    ),
    Channel(
        _each(subjects.ROLLBACK),
        Rollback,
        ConfigApplied,
        sender="an operator",
        receivers="governor",
        op=REQUEST,
        queue="governor",
        summary="Apply an earlier revision's config (0: the defaults) as a new revision.",
    ),
    Channel(
        _each(subjects.APPLIED),
        ConfigApplied,
        None,
        sender="governor",
        receivers="collector, anyone",
        op=PUBLISH,
        summary="A revision the governor has stored, published after the store.",
    ),
    Channel(
        _each(subjects.CONFIG_LOG),
        ConfigApplied,
        None,
        sender="governor (JetStream stream BATON_CONFIG)",
        receivers="registry, balancer, gateway (ordered consumers)",
        op=PUBLISH,
        summary="Internal: the durable config log, one subject per service; read it "
        "through governor.v1.config and governor.v1.history.",
    ),
    # -- config center (kv) -------------------------------------------------------------
    Channel(
        _key(subjects.KV_GET),
        KvQuery,
        KvEntries,
        sender="anyone (the gateway's /v1/kv, the SDK, baton kv)",
        receivers="kv",
        op=REQUEST,
        queue="kv",
        summary="Extension: the key's entry (none: absent), or with recurse/keys every "
        "key starting with it; the index a blocking read waits past.",
    ),
    Channel(
        _key(subjects.KV_PUT),
        KvPut,
        KvWritten,
        sender="an operator, a service (the gateway's /v1/kv, the SDK, baton kv)",
        receivers="kv",
        op=REQUEST,
        queue="kv",
        summary="Extension: store a value (at most 512 KiB, else 413), compare-and-set "
        "with cas; answered once JetStream has stored it.",
    ),
    Channel(
        _key(subjects.KV_DELETE),
        KvDelete,
        KvWritten,
        sender="an operator, a service",
        receivers="kv",
        op=REQUEST,
        queue="kv",
        summary="Extension: delete the key, or with recurse every key starting with it; "
        "each delete is a revision of its key.",
    ),
    Channel(
        _key(subjects.KV_HISTORY),
        KvHistoryQuery,
        KvHistory,
        sender="anyone",
        receivers="kv",
        op=REQUEST,
        queue="kv",
        summary="Extension: the key's kept revisions, oldest first, with who, why and when.",
    ),
    Channel(
        _key(subjects.KV_ROLLBACK),
        KvRollback,
        KvWritten,
        sender="an operator",
        receivers="kv",
        op=REQUEST,
        queue="kv",
        summary="Extension: store a kept revision's value and flags again, as a new revision.",
    ),
    Channel(
        _key(subjects.KV_CHANGES),
        KvRecord,
        None,
        sender="kv (the stream BATON_KV, republishing each record it stores)",
        receivers="gateway (Consul's blocking queries), the SDK's and CLI's watches, anyone",
        op=PUBLISH,
        summary="Extension: every stored change of the key, within milliseconds; header "
        "Nats-Sequence is its modify index. Watch a prefix with a wildcard.",
    ),
    Channel(
        _key(subjects.KV_LOG),
        KvRecord,
        None,
        sender="kv (JetStream stream BATON_KV, compare-and-set)",
        receivers="kv (an ordered consumer)",
        op=PUBLISH,
        summary="Internal: the store, one subject per key, its kept revisions; read it "
        "through kv.v1.get and kv.v1.history.",
    ),
    # -- every worker: the NATS services protocol (ADR-32, NATS micro) ---------------------
    *(
        Channel(
            subjects.srv(verb) + suffix,
            Empty,
            reply,
            sender="anyone (baton status, the nats CLI, any ADR-32 client)",
            receivers="every worker: registry, balancer, governor, collector, gateway, kv, "
            "prober "
            "(each replica answers)",
            op=REQUEST,
            key=f"SRV.{verb}{suffix.replace('{', '').replace('}', '')}",
            error_replies=False,
            summary=f"{what}: {scope} answers; the payload is ignored.",
        )
        for verb, reply, what in (
            ("PING", Ping, "Who runs"),
            ("INFO", Info, "What each worker serves"),
            ("STATS", Stats, "Each worker's counts per endpoint"),
        )
        for suffix, scope in (
            ("", "every worker process"),
            (".{name}", "every process of that kind"),
            (".{name}.{id}", "that one process"),
        )
    ),
    # -- prober (extension): active health checks -----------------------------------------
    Channel(
        _each(subjects.PROBER_RESULTS),
        CheckResult,
        None,
        sender="prober (the replica that owns the check)",
        receivers="collector, anyone",
        op=PUBLISH,
        summary="Extension: every run of an active health check, with its status and output.",
    ),
    Channel(
        _each(subjects.PROBER_TRANSITIONS),
        CheckResult,
        None,
        sender="prober (the replica that owns the check)",
        receivers="registry (every replica combines them into health), prober (every "
        "replica follows them), anyone",
        op=PUBLISH,
        summary="Extension: the runs of an active health check that can change an "
        "instance's health: a change of status, the first run after a replica takes the "
        "check, and a refresh every PROBER_REFRESH_S (anti-entropy).",
    ),
    Channel(
        subjects.PROBER_PRESENCE,
        ProberPresence,
        None,
        sender="prober (every replica)",
        receivers="prober (every replica)",
        op=PUBLISH,
        summary="Extension: each prober replica's heartbeat; the live replicas split the "
        "checks among them by consistent hashing.",
    ),
    # -- later extensions go here -----------------------------------------------------------
)
