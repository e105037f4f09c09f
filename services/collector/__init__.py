"""The collector worker: heartbeats, calls, picks, registry and config events to InfluxDB."""

from services.collector.worker import Collector, CollectorSettings

__all__ = ["Collector", "CollectorSettings"]
