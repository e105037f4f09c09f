"""The gateway worker: Baton's registry over DNS and HTTP, for clients without NATS."""

from services.gateway.settings import GatewaySettings
from services.gateway.worker import Gateway

__all__ = ["Gateway", "GatewaySettings"]
