"""The seven strategies of the contract, one class each, beside its formula.

A picker is built for one candidate set (the service's healthy, undrained, weighted
instances, maybe narrowed to a zone) and thrown away when that set changes, which resets
its state: a new candidate set starts a new rotation. Load changes do not rebuild it: the
load indexes follow members as they move. Every pick is O(1) or O(log n) except where noted.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Protocol

from schemas.balancer import STRATEGY_TRAITS
from services.balancer.members import LoadIndex, Member

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from services.balancer.ring import HashRing

__all__ = ["EXACT_LIMIT", "Picker", "make_picker"]

# least_response_time scans every candidate up to this many, then uses two random choices
EXACT_LIMIT = 64


class Picker(Protocol):
    def pick(self, key: str | None, exclude: frozenset[str], now: float) -> Member | None: ...

    def close(self) -> None: ...


class _Base:
    def __init__(self, members: list[Member], rng: random.Random) -> None:
        self.members = members
        self.rng = rng

    def close(self) -> None:
        """Stop following members' load (only the load-indexed strategies do)."""

    def _any_but(self, exclude: frozenset[str]) -> list[Member]:
        return [m for m in self.members if m.id not in exclude]


class Random(_Base):
    """Uniform: a few draws skip excluded ids cheaply, then the survivors are drawn from."""

    def pick(self, key: str | None, exclude: frozenset[str], now: float) -> Member | None:
        ms = self.members
        for _ in range(4):
            m = ms[self.rng.randrange(len(ms))]
            if m.id not in exclude:
                return m
        rest = self._any_but(exclude)
        return self.rng.choice(rest) if rest else None


class RoundRobin(_Base):
    """Strict rotation over the candidates in instance-id order."""

    def __init__(self, members: list[Member], rng: random.Random) -> None:
        super().__init__(members, rng)
        self.next = 0

    def pick(self, key: str | None, exclude: frozenset[str], now: float) -> Member | None:
        ms = self.members
        for _ in range(len(ms)):
            m = ms[self.next % len(ms)]
            self.next += 1
            if m.id not in exclude:
                return m
        return None


class SmoothWeighted(_Base):
    """Nginx's smooth weighted round-robin, exactly, in O(#distinct weights + log n).

    Nginx adds w_i to every cur_i, takes the largest, subtracts the total W from it. After
    k picks cur_i = k*w_i - debt_i, where debt_i is what i has been charged (W each time
    it was taken); so within one weight class the order never changes but for the member
    just taken, and a heap per class keyed by (debt_i, position) gives the class's best.
    Ties go to the earlier position, as in nginx. Weights 5,1,1 give a a b a c a a.

    Excluded (already tried) members are skipped as nginx skips tried peers: they gain no
    weight on that pick (debt_i += w_i undoes the k*w_i share) and the one taken is
    charged only the total of those that took part, so retries follow the weights of the
    rest, and the excluded members get no burst of credit afterwards.
    """

    def __init__(self, members: list[Member], rng: random.Random) -> None:
        super().__init__(members, rng)
        # eff_weight: the weight after slow start, which ramps a new instance up
        self.total = sum(m.eff_weight for m in members)
        self.k = 0
        by_weight: dict[int, list[tuple[int, int, Member]]] = {}
        for pos, m in enumerate(members):
            by_weight.setdefault(m.eff_weight, []).append((0, pos, m))
        self.classes = list(by_weight.items())  # each list is a heap already: debts all 0
        # One weight for all (the common case): nginx's order is then plain rotation in
        # position order, so the heap is left alone until a retry needs the debts.
        self.rotating = len(self.classes) == 1

    def pick(self, key: str | None, exclude: frozenset[str], now: float) -> Member | None:
        if self.rotating:
            if not exclude:
                ms = self.members
                m = ms[self.k % len(ms)]
                self.k += 1
                return m
            self._settle_debts()
        if exclude:
            return self._pick_excluding(exclude)
        self.k += 1
        best: list[tuple[int, int, Member]] | None = None
        best_d = best_pos = 0
        for weight, heap in self.classes:
            debt, pos, _ = heap[0]
            d = self.k * weight - debt
            if best is None or d > best_d or (d == best_d and pos < best_pos):
                best, best_d, best_pos = heap, d, pos
        assert best is not None  # noqa: S101  # a picker is never built for an empty set
        debt, pos, m = best[0]
        heapq.heapreplace(best, (debt + self.total, pos, m))
        return m

    def _settle_debts(self) -> None:
        """Leave rotation: after k picks in turn, position p was taken k // n times, once
        more if p < k % n, and charged the total each time; the heap gets those debts."""
        self.rotating = False
        _, heap = self.classes[0]
        rounds, extra = divmod(self.k, len(heap))
        heap[:] = [
            ((rounds + (pos < extra)) * self.total, pos, m)
            for _, pos, m in sorted(heap, key=lambda entry: entry[1])
        ]
        heapq.heapify(heap)

    def _pick_excluding(self, exclude: frozenset[str]) -> Member | None:
        # Retries are rare: a full scan, taking the best member that is not excluded.
        k = self.k + 1
        found: tuple[int, int, list[tuple[int, int, Member]], int] | None = None
        taking_part = 0
        for weight, heap in self.classes:
            for i, (debt, pos, m) in enumerate(heap):
                if m.id in exclude:
                    continue
                taking_part += weight
                d = k * weight - debt
                if found is None or (d, -pos) > (found[0], -found[1]):
                    found = (d, pos, heap, i)
        if found is None:
            return None
        self.k = k
        _, _, best, i = found
        debt, pos, m = best[i]
        best[i] = (debt + taking_part, pos, m)
        for weight, heap in self.classes:
            for j, (debt_j, pos_j, m_j) in enumerate(heap):
                if m_j.id in exclude:
                    heap[j] = (debt_j + weight, pos_j, m_j)
            heapq.heapify(heap)
        return m


class LeastConnections(_Base):
    """The true minimum of in-flight requests (see members.py), ties in rotation."""

    def __init__(self, members: list[Member], rng: random.Random) -> None:
        super().__init__(members, rng)
        self.index = LoadIndex(members)

    def pick(self, key: str | None, exclude: frozenset[str], now: float) -> Member | None:
        return self.index.lowest(exclude)

    def close(self) -> None:
        self.index.close()


class MostConnections(_Base):
    """The busiest instance still below its capacity (metadata max_inflight): packing."""

    def __init__(self, members: list[Member], rng: random.Random) -> None:
        super().__init__(members, rng)
        self.index = LoadIndex(members, room_only=True)

    def pick(self, key: str | None, exclude: frozenset[str], now: float) -> Member | None:
        return self.index.highest(exclude)

    def close(self) -> None:
        self.index.close()


class LeastResponseTime(_Base):
    """Lowest peak-EWMA latency x (in flight + 1).

    Exact up to EXACT_LIMIT candidates; beyond, the better of two random choices, as
    Finagle and Linkerd do, so a pick stays O(1) in a fleet of thousands.
    """

    def pick(self, key: str | None, exclude: frozenset[str], now: float) -> Member | None:
        ms = self.members
        if len(ms) <= EXACT_LIMIT:
            best: Member | None = None
            best_score = float("inf")
            for m in ms:
                if m.id in exclude:
                    continue
                s = m.score(now)
                if s < best_score:
                    best, best_score = m, s
            return best
        a = self._draw(exclude)
        b = self._draw(exclude)
        if a is None or b is None:
            return a or b
        return a if a.score(now) <= b.score(now) else b

    def _draw(self, exclude: frozenset[str]) -> Member | None:
        for _ in range(8):
            m = self.members[self.rng.randrange(len(self.members))]
            if m.id not in exclude:
                return m
        rest = self._any_but(exclude)
        return self.rng.choice(rest) if rest else None


class ConsistentHash(_Base):
    """The same instance for the same key; the ring is the service's, shared by zones."""

    def __init__(self, members: list[Member], rng: random.Random, ring: HashRing) -> None:
        super().__init__(members, rng)
        self.ring = ring
        self.by_id = {m.id: m for m in members}

    def pick(self, key: str | None, exclude: frozenset[str], now: float) -> Member | None:
        by_id = self.by_id

        def accept(owner: str) -> bool:
            return owner in by_id and owner not in exclude

        owner = self.ring.lookup(key or "", accept)
        return by_id[owner] if owner is not None else None


# The strategies that need no ring, by name; the keyed one (STRATEGY_TRAITS) is ConsistentHash.
_SIMPLE: dict[str, Callable[[list[Member], random.Random], Picker]] = {
    "random": Random,
    "round_robin": RoundRobin,
    "weighted": SmoothWeighted,
    "least_connections": LeastConnections,
    "most_connections": MostConnections,
    "least_response_time": LeastResponseTime,
}


def make_picker(name: str, members: list[Member], rng: random.Random, ring: HashRing) -> Picker:
    """A picker of strategy `name` over a non-empty candidate list (name already checked)."""
    if STRATEGY_TRAITS[name].keyed:
        return ConsistentHash(members, rng, ring)
    return _SIMPLE[name](members, rng)
