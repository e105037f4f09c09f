"""Workers' own views of the registry: the shared sync, the rules, the gateway's catalog."""

from services.view.catalog import RegistryView, ServiceState, eligible
from services.view.sync import Fleet, RegistrySync

__all__ = ["Fleet", "RegistrySync", "RegistryView", "ServiceState", "eligible"]
