"""One DNS query in, one answer out: the gateway's rules over the registry view.

- `<service>.service...` (and the RFC 2782, zone and tag forms, names.py): A/AAAA/ANY give
  the addresses, SRV the SRV records with the targets' addresses in the additional
  section, of every instance that may take traffic (healthy, not drained, weight > 0,
  not ejected by the balancers as an outlier), the strategy's pick first (answers.py).
  Other types: NOERROR with no answer (NODATA).
- `<instance>.<service>.instance...`: that instance's address (a CNAME when its host is
  a name), registered instances only, whatever their health.
- Unknown names, and services with no instance taking traffic (in that zone): NXDOMAIN.
  Negative answers carry the zone's SOA. Names outside the domain: REFUSED.
- Panic (the protection threshold, services/view/rules.py): as resolve does, unhealthy
  instances are answered too, so clients spread over all of them; logged `dns.panic`.
  Ejected ones are not, in panic either (nor does resolve pick them); an outlier the
  cap keeps serving is not ejected, so it is answered (services/view/ejections.py).
- Malformed packets: FORMERR when the header can be read, else dropped; counted, logged.
- Before the view has its first snapshot of the registry (the gateway just started):
  SERVFAIL, so resolvers and HAProxy keep what they had rather than act on NXDOMAIN.

Answers are built once per (query bytes, pick) and kept until the view changes, so a
repeated query costs the pick (one request to the balancer) and a dictionary lookup.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from schemas.balancer import STRATEGY_TRAITS
from services.gateway.dns import answers
from services.gateway.dns.answers import TCP_LIMIT, UDP_LIMIT, UDP_MAX, Target
from services.gateway.dns.names import Kind, Parsed, instance_label, parse, target_name

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from schemas.registry import Instance
    from services.view import RegistryView, ServiceState

__all__ = ["TAGS_KEY", "Responder"]

# (service, zone, instance ids to exclude, key) -> the balancer's pick
Picker = Callable[[str, str, tuple[str, ...], str | None], Awaitable[str | None]]
_MAX_EXCLUDE = 1024  # what a ResolveRequest may carry (schemas/fields.py InstanceIds)
# where the Consul API keeps an instance's tags (services/gateway/http/consul_model.py)
TAGS_KEY = "consul.tags"
_ADDRESS_TYPES = frozenset({dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY})
_SERVICE_TYPES = _ADDRESS_TYPES | {dns.rdatatype.SRV}
_OUR_PAYLOAD = 4096  # what our EDNS OPT record advertises
_MAX_PLANS = 4096  # distinct queries remembered between changes
_LOG_EVERY_S = 1.0  # bad packets are logged at most this often (each is counted)


@dataclass(slots=True)
class _Plan:
    """What one query (its bytes but the id) gets, until the view changes."""

    fixed: bytes | None = None  # the whole answer when no pick is involved
    service: str = ""
    zone: str = ""
    exclude: tuple[str, ...] = ()  # so the pick is one of the answer's (a tag filter)
    keyed: bool = False  # the strategy needs a key (STRATEGY_TRAITS): the client's address
    build: Callable[[str | None], bytes] | None = None
    by_pick: dict[str | None, bytes] = field(default_factory=dict)


class Responder:
    def __init__(
        self,
        view: RegistryView,
        pick: Picker,
        log: FilteringBoundLogger,
        *,
        domain: str,
        ttl: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.pick = pick
        self.log = log
        self.domain = dns.name.from_text(domain)
        self.ttl = ttl
        self.clock = clock
        self.counts: collections.Counter[str] = collections.Counter()
        self._plans: dict[tuple[bytes, bool], _Plan] = {}
        self._plans_at = (0, -math.inf)  # (view index, expiry) the plans were made for
        self._lower: dict[str, str] = {}  # lower-case service name -> name, for DNS's case
        self._lower_at = 0
        self._panicked: set[str] = set()
        self._logged_at = -math.inf

    # -- entry ---------------------------------------------------------------------------
    async def respond(self, wire: bytes, *, tcp: bool, client: str = "") -> bytes | None:
        """The answer to one packet; None to send nothing (it could not be read at all).

        `client` (its address) is the key of a `consistent_hash` service's pick, so a
        client keeps getting the same instance first, as a keyed resolve does.
        """
        self.counts["queries"] += 1
        self._expire()
        key = (wire[2:], tcp)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(wire, tcp=tcp)
            if plan is None:
                return None
            if self.view.loaded:  # before the first snapshot answers are not kept
                if len(self._plans) >= _MAX_PLANS:
                    self._plans.clear()
                self._plans[key] = plan
        body = plan.fixed
        if body is None:
            hash_key = (client or "-") if plan.keyed else None
            first = await self.pick(plan.service, plan.zone, plan.exclude, hash_key)
            body = plan.by_pick.get(first)
            if body is None:
                assert plan.build is not None  # noqa: S101  # a plan has one or the other
                body = plan.by_pick[first] = plan.build(first)
        return wire[:2] + body[2:]  # the query's id

    def _expire(self) -> None:
        index, until = self._plans_at
        if index != self.view.index or self.clock() >= until:
            self._plans.clear()
            self._plans_at = (self.view.index, math.inf)

    # -- planning ------------------------------------------------------------------------
    def _plan(self, wire: bytes, *, tcp: bool) -> _Plan | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception as exc:  # noqa: BLE001  # any unreadable packet, never a crash
            return self._malformed(wire, exc)
        if query.flags & dns.flags.QR:
            self._bad("dns.not_a_query", "a response sent to the server")
            return None
        response = self._response(query)
        refusal = self._refusal(query)
        if refusal is not None:
            return self._fixed(response, refusal)
        limit = TCP_LIMIT
        if not tcp:
            limit = min(max(UDP_LIMIT, query.payload), UDP_MAX) if query.edns >= 0 else UDP_LIMIT
        return self._route(query, response, limit)

    def _refusal(self, query: dns.message.Message) -> dns.rcode.Rcode | None:
        """Why a readable message gets no lookup, as its rcode; None for a plain query."""
        if query.opcode() != dns.opcode.QUERY:
            return dns.rcode.NOTIMP
        if query.edns > 0:  # RFC 6891 6.1.3: only EDNS version 0 exists
            return dns.rcode.BADVERS
        if len(query.question) != 1:
            self._bad("dns.bad_question", f"{len(query.question)} questions; ask exactly one")
            return dns.rcode.FORMERR
        if query.question[0].rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            return dns.rcode.REFUSED  # CHAOS and the like: not ours
        return None

    def _route(
        self, query: dns.message.Message, response: dns.message.Message, limit: int
    ) -> _Plan:
        question = query.question[0]
        parsed = parse(question.name, self.domain)
        qtype = question.rdtype
        if parsed.kind is Kind.OUTSIDE:
            self.counts["refused"] += 1
            return self._fixed(response, dns.rcode.REFUSED)
        if parsed.kind in (Kind.SERVICE, Kind.INSTANCE) and not self.view.loaded:
            # no snapshot of the registry yet: not "no such name", which HAProxy would act on
            self.counts["not_loaded"] += 1
            return self._fixed(response, dns.rcode.SERVFAIL)
        if parsed.kind is Kind.SERVICE:
            return self._service(query, parsed, qtype, limit)
        if parsed.kind is Kind.INSTANCE:
            return self._instance(response, parsed, qtype, limit)
        if (
            parsed.kind is Kind.EMPTY
            and qtype == dns.rdatatype.SOA
            and question.name == self.domain
        ):
            response.answer.append(self._soa())
            return _Plan(fixed=answers.render(response, limit))
        # an empty name (the apex, `service.<domain>`): NODATA; any other: NXDOMAIN
        empty = parsed.kind is Kind.EMPTY and (
            not parsed.service or self._state(parsed.service) is not None
        )
        return self._negative(response, dns.rcode.NOERROR if empty else dns.rcode.NXDOMAIN)

    def _service(self, query: dns.message.Message, parsed: Parsed, qtype: int, limit: int) -> _Plan:
        response = self._response(query)
        state = self._state(parsed.service)
        if state is None:
            return self._negative(response, dns.rcode.NXDOMAIN)
        serving, panic = state.serving(parsed.zone)
        exclude: tuple[str, ...] = ()
        if parsed.tag:
            serving, exclude = _tagged(serving, parsed.tag)
        self._panic(state, panic=panic)
        if not serving:
            return self._negative(response, dns.rcode.NXDOMAIN)
        if qtype not in _SERVICE_TYPES:
            return self._negative(response, dns.rcode.NOERROR)
        targets = self._targets(state, serving)
        if qtype != dns.rdatatype.SRV and not answers.with_addresses(
            response, response.question[0].name, qtype, targets, self.ttl
        ):
            return self._negative(response, dns.rcode.NOERROR)  # e.g. AAAA of IPv4 hosts
        build = self._builder(query, qtype, targets, limit)
        traits = STRATEGY_TRAITS.get(state.config.strategy)
        keyed = traits is not None and traits.keyed
        return _Plan(
            service=state.name, zone=parsed.zone, exclude=exclude, keyed=keyed, build=build
        )

    def _builder(
        self, query: dns.message.Message, qtype: int, targets: list[Target], limit: int
    ) -> Callable[[str | None], bytes]:
        """The answer with a given pick first, as a function (called once per pick).

        When the whole answer fits, it is rendered once in instance-id order and each
        pick's answer moves one record of it (answers.first): a 500-record answer costs
        one render per view change, not one per pick. A cut answer (TC) holds a
        different prefix for each pick, so it is rendered per pick.
        """
        owner = query.question[0].name
        ttl = self.ttl
        stable: list[bytes] = []  # the whole answer in instance-id order, once made

        def render(first: str | None) -> bytes:
            order = answers.ordered(targets, first)

            def upto(k: int) -> dns.message.Message:
                msg = self._response(query)
                if qtype == dns.rdatatype.SRV:
                    answers.with_srv(msg, owner, order[:k], ttl)
                else:
                    answers.with_addresses(msg, owner, qtype, order[:k], ttl)
                return msg

            wire = answers.fit(upto, len(order), limit)
            if wire[2] & 0x02:  # the TC bit
                self.counts["truncated"] += 1
            return wire

        def build(first: str | None) -> bytes:
            if not stable:
                stable.append(render(None))
            whole = stable[0]
            pick = next((t for t in targets if t.instance_id == first), None)
            if whole[2] & 0x02 or pick is None:
                return whole if pick is None else render(first)
            records = pick.records(qtype) if qtype != dns.rdatatype.SRV else [pick.srv]
            data = records[0].to_wire() if records else None  # bytes: no file given
            moved = answers.first(whole, data) if data else None
            return moved if moved is not None else render(first)

        return build

    def _instance(
        self, response: dns.message.Message, parsed: Parsed, qtype: int, limit: int
    ) -> _Plan:
        state = self._state(parsed.service)
        found = None
        if state is not None:
            found = next(
                (
                    i
                    for i in sorted(state.instances.values(), key=lambda i: i.instance_id)
                    if instance_label(i.instance_id) == parsed.instance
                ),
                None,
            )
        if state is None or found is None:
            return self._negative(response, dns.rcode.NXDOMAIN)
        (target,) = self._targets(state, [found])
        owner = response.question[0].name
        if qtype == dns.rdatatype.SRV:
            answers.with_srv(response, owner, [target], self.ttl)
        elif qtype not in _ADDRESS_TYPES or not answers.with_addresses(
            response, owner, qtype, [target], self.ttl
        ):
            return self._negative(response, dns.rcode.NOERROR)
        return _Plan(fixed=answers.render(response, limit))

    # -- helpers -------------------------------------------------------------------------
    def _response(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=_OUR_PAYLOAD)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA  # not a recursive resolver
        return response

    def _state(self, service: str) -> ServiceState | None:
        state = self.view.service(service)
        if state is not None:
            return state
        if self._lower_at != self.view.index:  # DNS names are case-insensitive; ours not
            self._lower = {name.lower(): name for name in sorted(self.view.services)}
            self._lower_at = self.view.index
        name = self._lower.get(service.lower())
        return None if name is None else self.view.service(name)

    def _targets(self, state: ServiceState, instances: list[Instance]) -> list[Target]:
        now = time.time()
        if state.config.warmup_s > 0:  # weights ramp with time: answers last one step
            self._plans_at = (self._plans_at[0], min(self._plans_at[1], self.clock() + 1.0))
        return [
            Target.of(
                i.instance_id,
                target_name(i.instance_id, state.name, self.domain),
                i.host,
                i.port,
                state.weight(i, now),
                self.ttl,
            )
            for i in instances
        ]

    def _soa(self) -> dns.rrset.RRset:
        return answers.soa(self.domain, self.view.index, self.ttl)

    def _negative(self, response: dns.message.Message, rcode: dns.rcode.Rcode) -> _Plan:
        response.answer.clear()
        response.set_rcode(rcode)
        response.authority.append(self._soa())
        self.counts["nxdomain" if rcode == dns.rcode.NXDOMAIN else "nodata"] += 1
        return _Plan(fixed=answers.render(response))

    def _fixed(self, response: dns.message.Message, rcode: dns.rcode.Rcode) -> _Plan:
        response.set_rcode(rcode)
        return _Plan(fixed=answers.render(response))

    def _panic(self, state: ServiceState, *, panic: bool) -> None:
        if not panic:
            self._panicked.discard(state.name)
            return
        self.counts["panic"] += 1
        if state.name not in self._panicked:  # once per episode, not per query
            self._panicked.add(state.name)
            healthy = sum(i.healthy for i in state.instances.values())
            self.log.warning(
                "dns.panic",
                service=state.name,
                healthy=healthy,
                registered=len(state.instances),
                threshold=state.config.protect_threshold,
            )

    def _malformed(self, wire: bytes, exc: Exception) -> _Plan | None:
        self._bad("dns.malformed", f"{type(exc).__name__}: {exc}", size=len(wire))
        self.counts["malformed"] += 1
        if len(wire) < 12:  # a DNS header is 12 bytes
            return None  # not even an id to answer to
        # FORMERR with the id and opcode of the header, no question (RFC 1035 4.1.1)
        flags = 0x8000 | (wire[2] & 0x78) << 8 | (wire[2] & 0x01) << 8 | dns.rcode.FORMERR
        return _Plan(fixed=wire[:2] + flags.to_bytes(2, "big") + bytes(8))

    def _bad(self, event: str, error: str, **kw: object) -> None:
        self.counts["bad"] += 1
        now = self.clock()
        if now - self._logged_at >= _LOG_EVERY_S:  # a flood is counted, not logged line by line
            self._logged_at = now
            self.log.warning(event, error=error, total=self.counts["bad"], **kw)


def _tagged(serving: list[Instance], tag: str) -> tuple[list[Instance], tuple[str, ...]]:
    """Those with `tag` (case-blind, as DNS is), and the ids of the rest for the pick to skip.

    The rest are excluded from the balancer's pick so the first record is one of the
    answer's; past what a request may exclude, the answer is in stable order only.
    """
    want = tag.lower()
    tagged: list[str] = []
    others: list[str] = []
    for i in serving:
        joined = i.metadata.get(TAGS_KEY, "")
        tags = {t.lower() for t in joined.split(",")} if joined else set()
        (tagged if want in tags else others).append(i.instance_id)
    keep = set(tagged)
    exclude = tuple(others) if len(others) <= _MAX_EXCLUDE else ()
    return [i for i in serving if i.instance_id in keep], exclude
