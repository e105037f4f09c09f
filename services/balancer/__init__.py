"""The balancer worker: picks an endpoint of a service with the service's strategy."""

from services.balancer.worker import Balancer, BalancerSettings

__all__ = ["Balancer", "BalancerSettings"]
