"""The config center worker: `python -m services.kv`."""

from services.kv.worker import KvSettings, KvWorker

__all__ = ["KvSettings", "KvWorker"]
