"""The gateway's DNS: the names (names.py), the answers and their size rules (answers.py),
the rules over the registry view (responder.py), and the UDP and TCP servers (server.py)."""

from services.gateway.dns.responder import Responder
from services.gateway.dns.server import DnsServer

__all__ = ["DnsServer", "Responder"]
