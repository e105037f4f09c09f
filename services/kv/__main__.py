from services.kv.worker import KvSettings, KvWorker
from services.runner import main

main("kv", KvWorker, KvSettings, "KV")
