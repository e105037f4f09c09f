"""The only place subject strings are built or parsed.

Every `{service}` token is checked against the contract's name rule, so a bad name
fails where it is made, with a sentence that says how to fix it.
"""

from __future__ import annotations

import re
from typing import Final

from schemas.error_root import BadRequest

__all__ = [
    "NAME_RULE",
    "SRV_VERBS",
    "InvalidNameError",
    "check_name",
    "endpoint_name",
    "service_from",
    "srv",
    "srv_levels",
]

NAME_RULE: Final = "1 to 64 characters of A-Z a-z 0-9 _ -"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidNameError(BadRequest, ValueError):
    """A service name or instance id that breaks the contract's name rule."""


def check_name(name: str, what: str = "service name") -> str:
    """Return `name` if it is a valid service name or instance id, else raise."""
    if _NAME.fullmatch(name):
        return name
    shown = name if len(name) <= 80 else name[:77] + "..."
    if not name:
        problem = "is empty"
    elif len(name) > 64:
        problem = f"is {len(name)} characters long"
    else:
        bad = sorted({c for c in name if not _NAME.fullmatch(c)})
        problem = "contains " + " ".join(repr(c) for c in bad)
    raise InvalidNameError(f"{what} {shown!r} {problem}; use {NAME_RULE}")


def service_from(subject: str, prefix: str) -> str:
    """The service named by the tokens of `subject` after `prefix` (a `*.>` subscription).

    Several tokens mean the name held dots; that is answered as a bad name, not ignored.
    """
    rest = subject[len(prefix) + 1 :] if subject.startswith(prefix + ".") else ""
    return check_name(rest)


# -- the NATS services protocol (ADR-32): every worker answers these --------------------
SRV: Final = "$SRV"
SRV_VERBS: Final = ("PING", "INFO", "STATS")


def srv(verb: str, name: str | None = None, worker_id: str | None = None) -> str:
    """`$SRV.<verb>`, `$SRV.<verb>.<name>` or `$SRV.<verb>.<name>.<id>`: all, a kind, one."""
    if verb not in SRV_VERBS:
        msg = f"verb {verb!r} is not one of {', '.join(SRV_VERBS)}"
        raise ValueError(msg)
    if name is None:
        if worker_id is not None:
            msg = "a worker id needs its name: $SRV.<verb>.<name>.<id>"
            raise ValueError(msg)
        return f"{SRV}.{verb}"
    subject = f"{SRV}.{verb}.{check_name(name, 'worker name')}"
    return subject if worker_id is None else f"{subject}.{check_name(worker_id, 'worker id')}"


def srv_levels(verb: str, name: str, worker_id: str) -> tuple[str, str, str]:
    """The three subjects one worker answers `verb` on."""
    return srv(verb), srv(verb, name), srv(verb, name, worker_id)


def endpoint_name(subject: str) -> str:
    """An endpoint's name for ADR-32: the last fixed token (`balancer.v1.resolve` -> resolve)."""
    fixed = [token for token in subject.split(".") if token not in {"*", ">"}]
    return fixed[-1] if fixed else subject


# -- registry ----------------------------------------------------------------------------
REGISTER: Final = "registry.v1.register"
HEARTBEAT: Final = "registry.v1.heartbeat"
DEREGISTER: Final = "registry.v1.deregister"
INSTANCES: Final = "registry.v1.instances"
SERVICES: Final = "registry.v1.services"
EVENTS: Final = "registry.v1.events"
# extension, between registry replicas: the current leader answers a ping (no responders:
# nobody leads right now); any caught-up replica serves its lease table, a page at a time
REPLICA_LEADER: Final = "registry.v1.replica.leader"
REPLICA_SNAPSHOT: Final = "registry.v1.replica.snapshot"
# ... and every caught-up follower answers a presence call (a deputy answers for a dead leader)
REPLICA_PRESENCE: Final = "registry.v1.replica.presence"
# JetStream KV: the leader lease (key `leader`) and each replica's presence (`replica.{id}`)
REGISTRY_BUCKET: Final = "BATON_REGISTRY"
LEADER_KEY: Final = "leader"


def replica_key(replica: str) -> str:
    return f"replica.{replica}"


# -- balancer ----------------------------------------------------------------------------
RESOLVE: Final = "balancer.v1.resolve"
REPORT: Final = "balancer.v1.report"
PICKS: Final = "balancer.v1.picks"  # extension: per-interval pick counts
REPORTS: Final = "balancer.v1.reports"  # extension: batched call reports
BALANCER_EVENTS: Final = "balancer.v1.events"  # extension: ejections and returns
EJECTIONS: Final = "balancer.v1.ejections"  # extension: who is ejected now
# JetStream: each service's ejection state, stored on `.state` when a change makes no
# event and on `.event` (the event, the state in a header) when it does; the stream
# republishes what it stored on `.event` to balancer.v1.events.{service} (internal)
OUTLIER_STREAM: Final = "BATON_OUTLIERS"
OUTLIER_LOG: Final = "baton.outliers.v1"
OUTLIER_STATE: Final = "state"
OUTLIER_EVENT: Final = "event"
OUTLIER_STATE_HEADER: Final = "Baton-Outlier-State"


# -- prober (extension): active health checks ------------------------------------------
# every run of a check, per service; what of it the registry needs (transitions and
# periodic refreshes: services/prober/relay.py); and each prober replica's presence (the
# live set the checks are split over)
PROBER_RESULTS: Final = "prober.v1.results"
PROBER_TRANSITIONS: Final = "prober.v1.transitions"
PROBER_PRESENCE: Final = "prober.v1.presence"


# -- governor ----------------------------------------------------------------------------
CHANGE: Final = "governor.v1.change"
CONFIG: Final = "governor.v1.config"
HISTORY: Final = "governor.v1.history"
ROLLBACK: Final = "governor.v1.rollback"
APPLIED: Final = "governor.v1.applied"
# JetStream: where accepted changes are stored, one subject per service (internal)
CONFIG_STREAM: Final = "BATON_CONFIG"
CONFIG_LOG: Final = "baton.config.v1"


def _of(prefix: str, service: str) -> str:
    return f"{prefix}.{check_name(service)}"


def every(prefix: str) -> str:
    """Subscription subject for all services under `prefix`; `>` so dotted names are seen."""
    return f"{prefix}.>"


def register(service: str) -> str:
    return _of(REGISTER, service)


def heartbeat(service: str) -> str:
    return _of(HEARTBEAT, service)


def deregister(service: str) -> str:
    return _of(DEREGISTER, service)


def instances(service: str) -> str:
    return _of(INSTANCES, service)


def events(service: str) -> str:
    return _of(EVENTS, service)


def resolve(service: str) -> str:
    return _of(RESOLVE, service)


def report(service: str) -> str:
    return _of(REPORT, service)


def change(service: str) -> str:
    return _of(CHANGE, service)


def config(service: str) -> str:
    return _of(CONFIG, service)


def history(service: str) -> str:
    return _of(HISTORY, service)


def rollback(service: str) -> str:
    return _of(ROLLBACK, service)


def applied(service: str) -> str:
    return _of(APPLIED, service)


def config_log(service: str) -> str:
    return _of(CONFIG_LOG, service)


def picks(service: str) -> str:
    return _of(PICKS, service)


def reports(service: str) -> str:
    return _of(REPORTS, service)


def balancer_events(service: str) -> str:
    return _of(BALANCER_EVENTS, service)


def ejections(service: str) -> str:
    return _of(EJECTIONS, service)


def outlier_state(service: str) -> str:
    return f"{_of(OUTLIER_LOG, service)}.{OUTLIER_STATE}"


def outlier_event(service: str) -> str:
    return f"{_of(OUTLIER_LOG, service)}.{OUTLIER_EVENT}"


def outlier_records(service: str) -> str:
    """Both of a service's subjects: what its compare-and-set is checked against."""
    return f"{_of(OUTLIER_LOG, service)}.*"


def outlier_republish() -> tuple[str, str]:
    """The stream's republish: every stored event to balancer.v1.events.{service}."""
    return f"{OUTLIER_LOG}.*.{OUTLIER_EVENT}", f"{BALANCER_EVENTS}.{{{{wildcard(1)}}}}"


def outlier_record_of(subject: str) -> tuple[str, str]:
    """(service, `state` or `event`) of a subject of the outlier stream."""
    head, _, kind = subject.rpartition(".")
    if kind not in (OUTLIER_STATE, OUTLIER_EVENT):
        raise InvalidNameError(f"not an outlier record subject: {subject!r}")
    return service_from(head, OUTLIER_LOG), kind


def check_results(service: str) -> str:
    return _of(PROBER_RESULTS, service)


def check_transitions(service: str) -> str:
    return _of(PROBER_TRANSITIONS, service)


# -- config center (kv) ------------------------------------------------------------------
# Requests carry the key in the subject, one token per `/`-separated segment (kv_tokens),
# so that NATS permissions can grant a prefix: `kv.v1.get.web.>` reads every key under
# `web/`. Each request subject is followed by the key's tokens.
KV_GET: Final = "kv.v1.get"
KV_PUT: Final = "kv.v1.put"
KV_DELETE: Final = "kv.v1.delete"
KV_HISTORY: Final = "kv.v1.history"
KV_ROLLBACK: Final = "kv.v1.rollback"
# every stored change, republished by JetStream as it stores it (a watch subscribes here)
KV_CHANGES: Final = "kv.v1.changes"
# JetStream: one subject per key, `baton.kv.v1.<key tokens>` (internal)
KV_STREAM: Final = "BATON_KV"
KV_LOG: Final = "baton.kv.v1"
KV_KEY_RULE: Final = (
    "a key is 1 to 512 bytes of UTF-8 without control characters, and does not start with /"
)
_KV_LITERAL: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_KV_EMPTY: Final = "%"  # the token of an empty segment (`a//b`, or the `/` ending `a/`)
_KV_ESCAPE: Final = re.compile(r"%([0-9A-F]{2})")


def _kv_token(segment: str) -> str:
    if not segment:
        return _KV_EMPTY
    return "".join(
        chr(b) if b in _KV_LITERAL else f"%{b:02X}"
        for b in segment.encode("utf-8", "surrogatepass")
    )


def kv_tokens(key: str) -> str:
    """The subject tokens of a key (or of a prefix, "" included): each `/`-separated
    segment is one token; bytes other than A-Z a-z 0-9 _ - are written %XX, an empty
    segment is `%`. `config/app.yml` -> `config.app%2Eyml`, `traefik/` -> `traefik.%`."""
    return ".".join(_kv_token(segment) for segment in key.split("/"))


def kv_key(tokens: str) -> str:
    """The key of `kv_tokens(key)`; InvalidNameError for tokens no key encodes to."""
    segments = []
    for token in tokens.split("."):
        raw = b"" if token == _KV_EMPTY else _kv_bytes(token, tokens)
        try:
            segments.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidNameError(f"not a key's subject tokens: {tokens!r}") from None
    key = "/".join(segments)
    if kv_tokens(key) != tokens:  # one spelling per key, so a permission cannot be dodged
        raise InvalidNameError(f"not a key's subject tokens: {tokens!r}")
    return key


def _kv_bytes(token: str, tokens: str) -> bytes:
    parts = _KV_ESCAPE.split(token)  # literal, hex, literal, hex, ..., literal
    out = bytearray()
    for i, part in enumerate(parts):
        if i % 2:
            out.append(int(part, 16))
        elif "%" in part:
            raise InvalidNameError(f"not a key's subject tokens: {tokens!r}")
        else:
            out += part.encode("utf-8", "surrogatepass")
    return bytes(out)


def kv_subject(prefix: str, key: str) -> str:
    """`prefix` followed by the key's tokens: kv_subject(KV_GET, "web/db") = kv.v1.get.web.db"""
    return f"{prefix}.{kv_tokens(key)}"


def kv_key_from(subject: str, prefix: str) -> str:
    """The key of a subject made by kv_subject(prefix, key)."""
    if not subject.startswith(prefix + "."):
        raise InvalidNameError(f"{subject!r} is not under {prefix}")
    return kv_key(subject[len(prefix) + 1 :])


def kv_watch(prefix: str) -> str:
    """What a watch of every key starting with `prefix` subscribes to: the changes under
    its whole segments (a partial last segment is filtered by the watcher)."""
    head, slash, _ = prefix.rpartition("/")
    if not slash:
        return every(KV_CHANGES)
    return every(kv_subject(KV_CHANGES, head))
