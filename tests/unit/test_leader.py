"""LeaderLease: who may speak, when a replica counts as cut off, how far it may sweep."""

from __future__ import annotations

import pytest

from services.registry.leader import LeaderLease

L = 2.0  # lease seconds: window 1.6 s, a write every 0.2 s


def test_a_replica_speaks_only_while_its_last_write_is_within_the_window() -> None:
    lease = LeaderLease(L)
    assert not lease.speaking(0.0)
    lease.won(revision=1, sent=10.0)
    assert lease.speaking(10.0)
    assert lease.speaking(11.59)
    # the server drops the key 2 s after it stamped the write (>= 10.0): silent before
    assert not lease.speaking(11.6)


def test_the_holder_falls_silent_before_anyone_else_can_win() -> None:
    """Whatever the delay of the write, the key lives >= lease_s from the send."""
    lease = LeaderLease(L)
    for sent in (0.0, 0.5, 1.0):  # renewals, however spaced
        lease.won(revision=int(sent * 10) + 1, sent=sent)
    last = 1.0
    silent_from = next(t / 100 for t in range(100, 400) if not lease.speaking(t / 100))
    earliest_rival = last + L  # the server stamped the write no earlier than it left
    assert silent_from < earliest_rival
    assert silent_from == pytest.approx(last + L * 0.8)


def test_a_refused_renewal_ends_speaking_at_once() -> None:
    lease = LeaderLease(L)
    lease.won(revision=3, sent=0.0)
    lease.lost()
    assert not lease.speaking(0.1)
    assert lease.connected(0.1)  # still in touch: it may answer as a follower


def test_a_follower_write_proves_contact_but_is_no_lease() -> None:
    lease = LeaderLease(L)
    assert lease.proof(0.0) == (False, 0.0)
    assert lease.connected(1.0)
    assert not lease.speaking(1.0)
    assert not lease.connected(1.6)


def test_a_proof_after_the_window_ends_a_cut_and_says_how_long_it_was() -> None:
    lease = LeaderLease(L)
    lease.proof(0.0)
    lease.proof(0.5)
    resumed = lease.proof(5.5)  # writes failed from 0.5 to 5.5
    assert resumed.resumed
    assert resumed.gap == pytest.approx(5.0)
    assert not lease.proof(6.0).resumed


def test_a_dropped_connection_is_a_cut_even_if_short() -> None:
    lease = LeaderLease(L)
    lease.won(revision=1, sent=0.0)
    lease.cut()
    assert not lease.speaking(0.2)
    assert not lease.connected(0.2)  # nothing heard before the drop vouches for now
    assert lease.revision is None  # it must win the key again
    resumed = lease.proof(0.4)
    assert resumed.resumed
    assert resumed.gap == pytest.approx(0.4)


def test_a_late_answer_to_an_old_write_changes_nothing() -> None:
    lease = LeaderLease(L)
    lease.proof(1.0)
    assert lease.proof(0.5) == (False, 0.0)
    assert lease.proved == 1.0


def test_sweeps_never_pass_the_last_proof() -> None:
    lease = LeaderLease(L)
    assert lease.horizon(5.0) is None  # never in touch: judge nothing
    lease.proof(1.0)
    assert lease.horizon(0.9) == 0.9
    assert lease.horizon(1.4) == 1.0  # silence after the proof waits for the next one
    assert lease.horizon(30.0) == 1.0  # cut off: no lease is judged on this side


def test_a_write_never_waits_past_the_speaking_window() -> None:
    lease = LeaderLease(L)
    lease.won(revision=1, sent=0.0)
    assert lease.write_timeout(0.0) == pytest.approx(1.0)  # half a lease at most
    assert lease.write_timeout(1.4) == pytest.approx(0.2)  # the window ends at 1.6
    assert lease.write_timeout(1.7) == pytest.approx(0.05)  # the floor: one last try
    lease.lost()
    assert lease.write_timeout(1.7) == pytest.approx(1.0)  # a follower's presence


def test_too_few_chances_to_renew_are_refused() -> None:
    with pytest.raises(ValueError, match="4 chances"):
        LeaderLease(1.0, interval=0.5)
