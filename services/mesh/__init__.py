"""The mesh worker: Baton as an xDS control plane for Envoy and proxyless gRPC.

Nothing is imported here: the pure parts (protocol.py, resources.py) load without the
worker's server.
"""
