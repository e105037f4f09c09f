from services.gateway.worker import Gateway, GatewaySettings
from services.runner import main

main("gateway", Gateway, GatewaySettings, "GATEWAY")
