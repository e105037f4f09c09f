"""The local stack: nats-server plus the workers (and the demo fleet), under one supervisor."""
