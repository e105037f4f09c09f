"""The demo's settings, from DEMO_* variables (flags of `python -m services.demo` override)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from schemas.balancer import STRATEGIES
from schemas.fields import ServiceName

__all__ = ["SERVICE_DEFAULT", "DemoSettings"]

SERVICE_DEFAULT = "default"  # the same as unset: no per-request strategy, the service's


class DemoSettings(Struct, frozen=True, kw_only=True):
    """Environment: DEMO_<FIELD>, e.g. DEMO_INSTANCES=5 DEMO_STRATEGY=least_response_time."""

    service: ServiceName = "demo-api"
    instances: Annotated[int, Meta(ge=1, le=100)] = 5
    clients: Annotated[int, Meta(ge=1, le=500)] = 8
    # unset ("" or "default"): the clients follow the service's configured strategy, and
    # the demo's operator rotates it through the governor every cycle_s, as `baton set
    # SERVICE strategy=NAME` would (it stops once someone else sets it); a strategy name:
    # the clients ask for that one in every request, and nothing rotates
    strategy: str = ""
    cycle_s: Annotated[float, Meta(ge=0)] = 10.0  # 0: no rotation
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
        if self.strategy not in ("", SERVICE_DEFAULT, *STRATEGIES):
            names = ", ".join(STRATEGIES)
            raise ValueError(
                f"strategy must be empty or {SERVICE_DEFAULT!r} (the service's configured "
                f"one) or one of {names}; got {self.strategy!r}"
            )

    @property
    def per_request(self) -> str | None:
        """The strategy every request asks for; None: the service's configured one."""
        return self.strategy if self.strategy in STRATEGIES else None

    @property
    def rotates(self) -> bool:
        """Whether the demo's operator rotates the service's strategy."""
        return self.per_request is None and self.cycle_s > 0
