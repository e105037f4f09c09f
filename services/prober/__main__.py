from services.prober.worker import Prober, ProberSettings
from services.runner import main

main("prober", Prober, ProberSettings, "PROBER")
