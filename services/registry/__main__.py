from services.registry.worker import Registry, RegistrySettings
from services.runner import main

main("registry", Registry, RegistrySettings, "REGISTRY")
