"""The status of every instance's active health checks, as the prober reports them.

The prober publishes each change of a check's status, and a refresh of it now and then
(anti-entropy), on `prober.v1.transitions.{service}`; every registry replica keeps the
latest status and output per check here, so any of them can lead with the same
view. An instance's health is the worst of its lease (silent for ttl_s: critical) and its
checks (schemas/checks.py `worst`); critical takes it out of every answer, warning keeps
it at its warning weight. A check critical for its `deregister_critical_after_s` removes
its instance. Pure: clocks are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from schemas.checks import CheckState, worst

if TYPE_CHECKING:
    from datetime import datetime

    from schemas.checks import CheckDefinition, CheckResult, CheckStatus

__all__ = ["OUTPUT_KEPT", "CheckTable", "needs_heartbeats"]

# Characters of a result's output the registry keeps (the result itself carries 4 KiB):
# a page of 500 instances must stay well under NATS's 1 MiB payload.
OUTPUT_KEPT = 512


def needs_heartbeats(checks: list[CheckDefinition]) -> bool:
    """An instance keeps a TTL lease unless it has checks and none of them is a ttl check:
    then the prober's checks keep it, and it need not heartbeat at all."""
    return not checks or any(c.kind == "ttl" for c in checks)


@dataclass(slots=True)
class _Check:
    definition: CheckDefinition
    status: CheckStatus
    output: str = ""
    updated_at: datetime | None = None
    critical_since: float | None = None  # monotonic


@dataclass(slots=True)
class _Instance:
    checks: dict[str, _Check] = field(default_factory=dict)


class CheckTable:
    def __init__(self) -> None:
        self._instances: dict[tuple[str, str], _Instance] = {}

    def define(
        self, service: str, instance_id: str, checks: list[CheckDefinition], mono: float
    ) -> None:
        """The checks an instance registered: new ones start at their initial status,
        changed ones keep theirs, dropped ones go."""
        probed = [c for c in checks if c.kind != "ttl"]  # a ttl check is the lease itself
        key = (service, instance_id)
        if not probed:
            self._instances.pop(key, None)
            return
        entry = self._instances.setdefault(key, _Instance())
        old = entry.checks
        entry.checks = {}
        for check in probed:
            known = old.get(check.check_id)
            if known is not None:
                known.definition = check
                entry.checks[check.check_id] = known
            else:
                since = mono if check.status == "critical" else None
                entry.checks[check.check_id] = _Check(check, check.status, critical_since=since)

    def knows(self, service: str, instance_id: str) -> bool:
        return (service, instance_id) in self._instances

    def forget(self, service: str, instance_id: str) -> None:
        self._instances.pop((service, instance_id), None)

    def record(self, service: str, result: CheckResult, mono: float) -> bool:
        """Take a result; True when the check's status changed."""
        entry = self._instances.get((service, result.instance_id))
        check = entry.checks.get(result.check_id) if entry is not None else None
        if check is None:
            return False  # an instance or check this registry does not hold (any more)
        changed = check.status != result.status
        check.output = result.output[:OUTPUT_KEPT]
        check.updated_at = result.at
        if changed:
            check.status = result.status
            check.critical_since = mono if result.status == "critical" else None
        return changed

    def health(self, service: str, instance_id: str) -> CheckStatus:
        """The worst of the instance's checks (passing when it has none)."""
        entry = self._instances.get((service, instance_id))
        if entry is None:
            return "passing"
        return worst([c.status for c in entry.checks.values()])

    def states(self, service: str, instance_id: str) -> list[CheckState]:
        entry = self._instances.get((service, instance_id))
        if entry is None:
            return []
        return [
            CheckState(check_id=check_id, status=c.status, output=c.output, updated_at=c.updated_at)
            for check_id, c in entry.checks.items()
        ]

    def overdue(self, mono: float) -> list[tuple[str, str]]:
        """Instances with a check critical for longer than its deregister_critical_after_s."""
        out: list[tuple[str, str]] = []
        for key, entry in self._instances.items():
            for c in entry.checks.values():
                after = c.definition.deregister_critical_after_s
                if after and c.critical_since is not None and mono - c.critical_since >= after:
                    out.append(key)
                    break
        return out
