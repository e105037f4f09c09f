from services.governor.worker import Governor, GovernorSettings
from services.runner import main

main("governor", Governor, GovernorSettings, "GOVERNOR")
