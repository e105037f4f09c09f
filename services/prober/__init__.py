"""The prober worker: active health checks (python -m services.prober)."""

from services.prober.worker import Prober, ProberSettings

__all__ = ["Prober", "ProberSettings"]
