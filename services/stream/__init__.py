"""JetStream patterns every worker shares: here, the lease on a KV key (lease.py)."""
