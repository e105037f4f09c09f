"""The demo's settings, from DEMO_* variables (flags of `python -m services.demo` override)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from schemas.balancer import STRATEGIES
from schemas.fields import ServiceName

__all__ = ["CYCLE", "SERVICE_DEFAULT", "DemoSettings"]

CYCLE = ""  # DEMO_STRATEGY unset: every ~cycle_s, the next strategy (the service's first)
SERVICE_DEFAULT = "default"  # no per-request strategy: the service's configured one


class DemoSettings(Struct, frozen=True, kw_only=True):
    """Environment: DEMO_<FIELD>, e.g. DEMO_INSTANCES=5 DEMO_STRATEGY=least_response_time."""

    service: ServiceName = "demo-api"
    instances: Annotated[int, Meta(ge=1, le=100)] = 5
    clients: Annotated[int, Meta(ge=1, le=500)] = 8
    # "" cycles through the service default and every strategy; "default" keeps the
    # service's own; a strategy name keeps that one for every request
    strategy: str = CYCLE
    cycle_s: Annotated[float, Meta(gt=0)] = 10.0
    duration_s: Annotated[float, Meta(ge=0)] = 0.0  # 0: until Ctrl-C
    think_ms: Annotated[float, Meta(ge=0)] = 20.0  # a client's mean pause between calls
    timeout_s: Annotated[float, Meta(gt=0)] = 2.0  # of one HTTP call
    ttl_s: Annotated[float, Meta(ge=1, le=3600)] = 5.0
    max_inflight: Annotated[int, Meta(ge=1)] = 4  # each instance's capacity (metadata)
    error_rate: Annotated[float, Meta(ge=0, le=1)] = 0.02  # of the one failing instance
    window_s: Annotated[float, Meta(gt=0)] = 5.0  # the table's statistics window
    print_s: Annotated[float, Meta(ge=0)] = 0.0  # 0: 1 s on a terminal, else 5 s
    # every operator_s, an operator steers the fleet through the governor (drain, undrain,
    # weight), so the dashboards show config changes; 0 = never
    operator_s: Annotated[float, Meta(ge=0)] = 15.0

    def __post_init__(self) -> None:
        if self.strategy not in (CYCLE, SERVICE_DEFAULT, *STRATEGIES):
            names = ", ".join(STRATEGIES)
            raise ValueError(
                f"strategy must be empty (cycle), {SERVICE_DEFAULT!r} or one of {names}; "
                f"got {self.strategy!r}"
            )

    def schedule(self) -> tuple[str | None, ...]:
        """The per-request strategies the clients cycle through (None: the service's)."""
        if self.strategy == CYCLE:
            return (None, *STRATEGIES)
        if self.strategy == SERVICE_DEFAULT:
            return (None,)
        return (self.strategy,)
