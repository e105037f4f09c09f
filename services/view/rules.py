"""The rules every view of a service applies the same way: slow start and panic.

Pure functions, shared by the balancer's pools and the gateway's catalog, so a DNS answer
and a resolve agree on who may take traffic and with what weight.

Slow start (Dubbo): an instance registered `age` seconds ago, with `warmup_s` > 0, has

    effective weight = max(1, round(weight x step / WARMUP_STEPS)),
    step = min(WARMUP_STEPS, floor(WARMUP_STEPS x age / warmup_s) + 1)

so it ramps in WARMUP_STEPS steps (pickers are rebuilt only that often).

Panic (Nacos' protection threshold): when the healthy share of the registered instances
is at or below the threshold, unhealthy ones take traffic too, so the healthy few are not
flooded; a threshold of 0 never panics.
"""

from __future__ import annotations

import math

__all__ = ["WARMUP_STEPS", "in_panic", "warm_weight"]

WARMUP_STEPS = 10


def warm_weight(weight: int, age_s: float, warmup_s: float) -> tuple[int, float]:
    """(effective weight, age at which it next steps up; inf once warm)."""
    if warmup_s <= 0 or age_s >= warmup_s:
        return weight, math.inf
    # floor + 1: the next step's age is always strictly ahead
    step = min(WARMUP_STEPS, math.floor(WARMUP_STEPS * max(age_s, 0) / warmup_s) + 1)
    return max(1, round(weight * step / WARMUP_STEPS)), warmup_s * step / WARMUP_STEPS


def in_panic(healthy: int, registered: int, threshold: float) -> bool:
    """The healthy share is at or below the protection threshold (0 = never)."""
    if threshold <= 0 or registered == 0:
        return False
    return healthy / registered <= threshold
