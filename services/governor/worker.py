"""The governor worker: validates, versions, stores and announces config changes.

A change is checked (400 with what to fix), merged into the service's latest config as
the next revision, and appended to the config log with compare-and-set; only once
JetStream has stored it is it acknowledged and published on `governor.v1.applied`.
Concurrent changes built on the same revision: one is stored, the others are rebuilt on
the new revision and tried again, or answered 409 when they named `expected_revision`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec
from msgspec import Meta, Struct

from schemas import subjects
from schemas.fields import utcnow
from schemas.governor import (
    ChangeKind,
    ConfigApplied,
    ConfigChange,
    ConfigHistory,
    HistoryQuery,
    Rollback,
    ServiceConfig,
)
from schemas.registry import Empty
from services.configlog import ensure_stream
from services.errors import BadRequest, Conflict, Unavailable
from services.governor.rules import apply_change, check_change
from services.governor.store import ConfigStore, StaleWriteError
from services.lifecycle import Lifecycle
from services.retry import Backoff
from services.stream import cluster_replicas

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

__all__ = ["Governor", "GovernorSettings"]

HISTORY_BYTES = 512 * 1024  # a history reply keeps the newest entries that fit
CAS_RETRY = Backoff(base_s=0.002, cap_s=0.1)  # between rebuilds of a change that lost a race


class GovernorSettings(Struct, frozen=True, kw_only=True):
    """Environment: GOVERNOR_<FIELD>, e.g. GOVERNOR_HISTORY=1000."""

    # revisions kept per service in the config log (older ones are dropped)
    history: Annotated[int, Meta(ge=1)] = 10_000
    # JetStream replicas of the config log; 0: 3 on a cluster of 3+ nodes, else 1
    replicas: Annotated[int, Meta(ge=0, le=5)] = 0
    # deadline of each config-log operation
    store_timeout_s: Annotated[float, Meta(gt=0)] = 5.0
    # rebuilds of a change that lost a race with a concurrent one before giving up (503)
    retries: Annotated[int, Meta(ge=1)] = 20
    # the first wait between attempts to reach JetStream at start, growing with jitter
    # up to 10 s (services/retry.py)
    retry_s: Annotated[float, Meta(gt=0)] = 1.0


class Governor(Lifecycle):
    def __init__(self, bus: Bus, settings: GovernorSettings, log: FilteringBoundLogger) -> None:
        self.bus = bus
        self.settings = settings
        self.log = log
        self.store = ConfigStore(bus, timeout_s=settings.store_timeout_s)

    async def start(self) -> None:
        base = self.settings.retry_s
        retry = Backoff(base_s=base, cap_s=max(base, 10.0)).retry()
        while True:  # without JetStream nothing can be stored: wait for it
            try:
                replicas = self.settings.replicas or cluster_replicas(self.bus)
                await ensure_stream(
                    self.bus,
                    history=self.settings.history,
                    replicas=replicas,
                    timeout_s=self.settings.store_timeout_s,
                )
                break
            except Exception as exc:  # noqa: BLE001  # any failure here means "not yet"
                self.log.warning(
                    "governor.store_unavailable", error=repr(exc), attempt=retry.attempts + 1
                )
                await retry.wait()
        serve = self.owned(self.bus.serve)
        q = "governor"
        await serve(subjects.CHANGE, ConfigChange, self._on_change, queue=q, per_service=True)
        await serve(subjects.CONFIG, Empty, self._on_config, queue=q, per_service=True)
        await serve(subjects.HISTORY, HistoryQuery, self._on_history, queue=q, per_service=True)
        await serve(subjects.ROLLBACK, Rollback, self._on_rollback, queue=q, per_service=True)
        self.log.info("governor.ready")

    # -- handlers ------------------------------------------------------------------------
    async def _on_change(self, service: str, change: ConfigChange) -> ConfigApplied:
        check_change(change)
        return await self._commit(
            service,
            actor=change.actor,
            reason=change.reason,
            expected=change.expected_revision,
            kind="delete" if change.delete else "change",
            make=lambda current, revision: apply_change(current, change, revision),
        )

    async def _on_rollback(self, service: str, rollback: Rollback) -> ConfigApplied:
        entries = await self.store.history(service)
        if not entries:
            raise BadRequest(
                f"service {service!r} has no configuration to roll back; "
                "governor.v1.history lists a service's revisions"
            )
        target = ServiceConfig(service=service)  # revision 0: the defaults
        if rollback.to_revision:
            found = [e for e in entries if e.revision == rollback.to_revision]
            if not found:
                raise BadRequest(
                    f"service {service!r} has no revision {rollback.to_revision}; kept "
                    f"revisions are {entries[0].revision}..{entries[-1].revision} (and 0)"
                )
            target = found[0].config
        return await self._commit(
            service,
            actor=rollback.actor,
            reason=rollback.reason,
            expected=rollback.expected_revision,
            kind="rollback",
            make=lambda _, revision: msgspec.structs.replace(target, revision=revision),
            restored=rollback.to_revision,
        )

    async def _on_config(self, service: str, _: Empty) -> ServiceConfig:
        latest, _seq = await self.store.latest(service)
        return latest.config if latest else ServiceConfig(service=service)

    async def _on_history(self, service: str, query: HistoryQuery) -> ConfigHistory:
        entries = await self.store.history(
            service, limit=query.limit, since_revision=query.since_revision, since=query.since
        )
        size, keep = 0, len(entries)
        while keep and size + len(msgspec.json.encode(entries[keep - 1])) <= HISTORY_BYTES:
            size += len(msgspec.json.encode(entries[keep - 1]))
            keep -= 1
        return ConfigHistory(service=service, entries=entries[keep:])

    # -- the one way a config changes ----------------------------------------------------
    async def _commit(
        self,
        service: str,
        *,
        actor: str,
        reason: str,
        expected: int | None,
        kind: ChangeKind,
        make: Callable[[ServiceConfig, int], ServiceConfig],
        restored: int | None = None,
    ) -> ConfigApplied:
        # Lost races are rebuilt at once, then after a short jittered pause, so replicas
        # that collide on every try spread out (services/retry.py).
        retry = CAS_RETRY.retry()
        for attempt in range(self.settings.retries):
            if attempt > 1:
                await retry.wait()
            latest, seq = await self.store.latest(service)
            current = latest.config if latest else ServiceConfig(service=service)
            if expected is not None and expected != current.revision:
                raise Conflict(
                    f"service {service!r} is at revision {current.revision}, not "
                    f"{expected}; read its config again and retry"
                )
            revision = current.revision + 1
            entry = ConfigApplied(
                service=service,
                revision=revision,
                config=make(current, revision),
                actor=actor,
                reason=reason,
                at=utcnow(),
                kind=kind,
                restored=restored,
            )
            try:
                await self.store.append(entry, seq)
            except StaleWriteError:
                if expected is not None:
                    raise Conflict(
                        f"service {service!r} changed while this change was being applied "
                        f"(it is past revision {expected}); read its config again and retry"
                    ) from None
                continue  # rebuild on the newer revision
            await self.bus.publish(subjects.applied(service), entry)
            self.log.info(
                "config.applied", service=service, revision=revision, actor=actor, kind=kind
            )
            return entry
        raise Unavailable(
            f"service {service!r} is being changed by many operators at once; retry shortly"
        )
