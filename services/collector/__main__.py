from services.collector.worker import Collector, CollectorSettings
from services.runner import main

main("collector", Collector, CollectorSettings, "INFLUX")
