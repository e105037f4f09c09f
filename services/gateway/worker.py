"""The gateway worker: DNS and HTTP discovery for clients without a NATS library.

It talks to the other workers only over their subjects: it keeps its own view of the
registry, the config log and the balancers' ejections (services/view/, the code the
balancer's sync and ejection watch run too), and asks the balancer for picks.
Listeners: DNS on UDP and TCP (services/gateway/dns/), HTTP (services/gateway/http/, an
aiohttp application); a port of 0 leaves that one off. Several gateways may run at once:
each has its own view, and they share nothing.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from aiohttp import web

from schemas import subjects
from schemas.balancer import Endpoint, ResolveRequest
from services.errors import BatonError, StartupError
from services.gateway.dns import DnsServer, Responder
from services.gateway.http import make_app
from services.gateway.http.agent import Agent
from services.gateway.http.asker import Asker
from services.gateway.http.consul_kv import KvWaiters
from services.gateway.http.runner import AppRunner
from services.gateway.settings import GatewaySettings
from services.lifecycle import Lifecycle
from services.view import RegistryView

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from services.bus import Bus

__all__ = ["Gateway", "GatewaySettings"]


class Gateway(Lifecycle):
    def __init__(self, bus: Bus, settings: GatewaySettings, log: FilteringBoundLogger) -> None:
        self.bus = bus
        self.settings = settings
        self.log = log
        self.view = RegistryView.for_worker(bus, log, settings, name="gateway")
        # picks the balancer could not give (DNS then answers in stable order), by reason
        self.pick_failures: collections.Counter[str] = collections.Counter()
        self.responder = Responder(
            self.view, self._pick, log, domain=settings.domain, ttl=settings.dns_ttl_s
        )
        self.dns: DnsServer | None = None
        self.dns_port = 0  # the bound ports (useful when the settings asked for any)
        self.http_port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        await self.enter(self.view)
        if self.settings.dns_port:
            dns = DnsServer(
                self.responder,
                self.log,
                host=self.settings.bind,
                port=max(self.settings.dns_port, 0),
            )
            await self.enter(dns)
            self.dns, self.dns_port = dns, dns.port
        if self.settings.http_port:
            await self._start_http()
        self.log.info(
            "gateway.ready",
            dns_port=self.dns_port,
            http_port=self.http_port,
            domain=self.settings.domain,
        )

    async def _pick(
        self, service: str, zone: str, exclude: tuple[str, ...], key: str | None
    ) -> str | None:
        """The balancer's pick for a DNS answer: untracked (no one will report it)."""
        req = ResolveRequest(key=key, zone=zone or None, exclude=list(exclude), track=False)
        try:
            endpoint = await self.bus.request(
                subjects.resolve(service),
                req,
                Endpoint,
                timeout=self.settings.pick_timeout_s,
            )
        except BatonError as exc:
            reason = type(exc).__name__
            self.pick_failures[reason] += 1
            if self.pick_failures[reason] == 1:  # the first of each kind; then only counted
                self.log.warning("dns.pick_failed", service=service, error=exc.message)
            return None
        return endpoint.instance_id

    async def _start_http(self) -> None:
        # children of this worker: left after the HTTP listener (newest first) has drained
        timeout_s = self.settings.http_timeout_s
        agent = await self.enter(Agent(self.bus, self.view, self.log, timeout_s=timeout_s))
        asker = await self.enter(Asker(self.bus))
        kv_waiters = await self.enter(KvWaiters(self.bus))
        app = make_app(
            self.bus,
            self.view,
            self.settings,
            self.log,
            agent=agent,
            asker=asker,
            kv_waiters=kv_waiters,
        )
        runner = AppRunner(app)
        await runner.setup()
        self._runner = runner
        self.on_close(self._stop_http)
        site = web.TCPSite(runner, self.settings.bind, max(self.settings.http_port, 0))
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for HTTP on {self.settings.bind}:{self.settings.http_port}: "
                f"{exc.strerror}; free the port or set GATEWAY_HTTP_PORT (0 turns HTTP off)"
            ) from exc
        sockets = runner.addresses
        self.http_port = sockets[0][1] if sockets else self.settings.http_port

    async def _stop_http(self) -> None:
        """aiohttp's cleanup: the listener closed, handlers drained (the agent and the
        asker are left next, by the exit stack)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
