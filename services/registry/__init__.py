"""The registry worker: leases, health and the instance events of every service."""

from services.registry.worker import Registry, RegistrySettings

__all__ = ["Registry", "RegistrySettings"]
