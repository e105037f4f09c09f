"""The read model of the fleet every worker reads (docs/readmodel.md), its sync, its rules."""

from services.view.catalog import Change, RegistryView, ServiceState, eligible
from services.view.sync import Fleet, RegistrySync

__all__ = ["Change", "Fleet", "RegistrySync", "RegistryView", "ServiceState", "eligible"]
