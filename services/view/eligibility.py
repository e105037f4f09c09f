"""Who may take traffic: the one rule every reader of the fleet applies.

The balancer's candidate sets (services/balancer/pool.py), its members
(services/balancer/members.py) and the gateway's DNS and HTTP answers (the read model,
services/view/catalog.py) all ask this function, so a resolve and a DNS answer never
disagree on who is in. An instance may take traffic when

    (healthy or the service is in panic) and not drained and not ejected and weight > 0

- Panic (services/view/rules.py `in_panic`): the healthy share is at or below the
  service's protection threshold, so unhealthy instances take traffic too and the few
  healthy ones are not flooded.
- Ejected: the balancers' outlier ejection in force now (services/view/ejections.py).
  Panic does not bring an ejected instance back. The cap (max_ejected_percent) is already
  applied by then: an outlier the cap keeps serving is only `held`, never ejected, so it
  takes traffic like any other.
- Weight 0 is the operators' other way of taking an instance out without draining it.

Pure and cheap: called once per instance when a candidate set is built, never per pick.
"""

from __future__ import annotations

__all__ = ["may_take_traffic"]


def may_take_traffic(
    *, healthy: bool, drained: bool, weight: int, ejected: bool = False, panic: bool = False
) -> bool:
    """May an instance with these marks take traffic now? See the module doc."""
    return (healthy or panic) and not drained and not ejected and weight > 0
