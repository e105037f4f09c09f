"""The governor worker: durable, versioned, audited configuration of every service."""

from services.governor.worker import Governor, GovernorSettings

__all__ = ["Governor", "GovernorSettings"]
