"""Who may speak for the fleet: the leader lease on a JetStream KV key. Pure logic.

Replicas campaign with `create()` on one key of a bucket whose `max_age` is the lease
(`lease_s`); the winner renews with `update(last=revision)`. The server drops the key
`lease_s` after its last write, and only then can another replica create it. A write is
stamped by the server after it was sent, so the leader, counting from the send, stops in
time without any clock shared between machines:

    speaking while  revision held  and  now < sent + lease_s x (1 - margin)

where `sent` is when the last successful write left this replica (monotonic clock).

Every replica writes every `interval` (the leader its renewal, a follower its own
presence key), and a successful write also proves the replica reached the stream's quorum
at `sent`. A replica whose last proof is older than the same window is *cut off*: it
neither speaks nor answers. While cut off nothing it hears is the fleet's whole truth, so
leases are swept only up to the last proof (`horizon`): silence after it may be the
network's, so no replica turns an instance unhealthy because its own link was cut. When
a write succeeds again the replica was away for `gap` (credited to every lease, as a
stall is) and must catch up from a peer before it serves again.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LeaderLease", "Proof"]


class Proof(NamedTuple):
    """What a successful write means: `resumed` after a cut of `gap` seconds, or not."""

    resumed: bool
    gap: float


# A lease write this often, whatever the lease: sweeps trail the last proof by no more
# than that, so a silent instance is judged at most this much after its ttl_s. The period
# is the protocol itself (each write is one round of proof), not a retry: no jitter.
PROOF_INTERVAL_S = 0.2


class LeaderLease:
    __slots__ = ("_cut", "_proved", "interval", "lease_s", "margin", "revision", "won_at")

    def __init__(
        self, lease_s: float, *, interval: float = PROOF_INTERVAL_S, margin: float = 0.2
    ) -> None:
        if not 0 < interval <= lease_s * (1 - margin) / 4:
            msg = f"a write every {interval} s leaves fewer than 4 chances per lease"
            raise ValueError(msg)
        self.lease_s = lease_s
        # a write every `interval`, whatever the lease: sweeps trail the last proof by no
        # more than that, and a long lease (a busy machine) gives many chances to renew
        self.interval = interval
        self.margin = margin
        self.revision: int | None = None  # of the key, while this replica holds it
        self.won_at: float | None = None
        self._proved: float | None = None  # send time of the last successful write
        self._cut = False  # the connection dropped since that write

    @property
    def window(self) -> float:
        return self.lease_s * (1 - self.margin)

    @property
    def proved(self) -> float | None:
        return self._proved

    # -- what the writes said ------------------------------------------------------------
    def proof(self, sent: float) -> Proof:
        """A write sent at `sent` succeeded; whether it ends a cut, and the cut's length."""
        last = self._proved
        if last is not None and sent <= last:
            return Proof(resumed=False, gap=0.0)  # an older write answered late
        self._proved = sent
        if last is not None and (self._cut or sent - last >= self.window):
            self._cut = False
            return Proof(resumed=True, gap=sent - last)
        self._cut = False
        return Proof(resumed=False, gap=0.0)

    def won(self, revision: int, sent: float) -> None:
        """`create()` or `update(last=)` of the leader key succeeded."""
        if self.revision is None:
            self.won_at = sent
        self.revision = revision
        self.proof(sent)

    def lost(self) -> None:
        """The key is someone else's (a renewal was refused), or this replica stepped down."""
        self.revision = None
        self.won_at = None

    def cut(self) -> None:
        """The connection dropped: nothing said before it proves anything now."""
        self.lost()
        self._cut = True

    # -- what follows --------------------------------------------------------------------
    @property
    def was_cut(self) -> bool:
        """The connection dropped since the last successful write."""
        return self._cut

    def connected(self, now: float) -> bool:
        """Has this replica reached the quorum recently enough to act on what it hears?"""
        return not self._cut and self._proved is not None and now < self._proved + self.window

    def speaking(self, now: float) -> bool:
        return self.revision is not None and self.connected(now)

    def horizon(self, now: float) -> float | None:
        """Sweep leases up to here: never past the last proof that the quorum was reachable.

        Silence after the proof may be a cut not yet noticed, so it is judged only once a
        later write proves the path: detection trails by at most `interval` + a round trip.
        """
        return None if self._proved is None else min(now, self._proved)

    def write_timeout(self, now: float) -> float:
        """How long to wait for a write: never past the end of the speaking window.

        A slow write is not a failed one: a follower waits up to half a lease, so a busy
        quorum does not look like a cut.
        """
        if self.revision is not None and self._proved is not None:
            return max(0.05, min(self.lease_s / 2, self._proved + self.window - now))
        return self.lease_s / 2
