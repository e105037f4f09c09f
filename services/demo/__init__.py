"""A demo fleet: HTTP servers of different speeds registered through the SDK, clients that
call them through the balancer, and a live table of where the calls go.

Run it with the stack: `just demo`. On its own, against a running stack:
`python -m services.demo` (settings: `DemoSettings` in services/demo/settings.py).
"""
