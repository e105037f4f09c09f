"""What the registry hears of a check (services/prober/relay.py): transitions and refreshes."""

from __future__ import annotations

from services.prober.relay import RegistryFeed

REFRESH = 60.0


def test_the_first_run_tells_then_a_steady_status_stays_quiet_until_the_refresh() -> None:
    feed = RegistryFeed()
    assert feed.tells("passing", 0.0, REFRESH)  # nothing told yet: where the check stands
    told = [feed.tells("passing", t, REFRESH) for t in (10.0, 20.0, 30.0, 40.0, 50.0)]
    assert told == [False] * 5
    assert feed.tells("passing", 60.0, REFRESH)  # anti-entropy: a lost transition heals
    assert not feed.tells("passing", 70.0, REFRESH)  # the refresh restarted the period


def test_every_change_of_status_tells_at_once() -> None:
    feed = RegistryFeed()
    feed.tells("critical", 0.0, REFRESH)
    assert feed.tells("passing", 1.0, REFRESH)
    assert not feed.tells("passing", 2.0, REFRESH)  # the output may differ: not sent
    assert feed.tells("warning", 3.0, REFRESH)
    assert feed.tells("critical", 4.0, REFRESH)
    assert not feed.tells("critical", 5.0, REFRESH)
    assert feed.tells("passing", 6.0, REFRESH)


def test_a_check_taken_back_over_tells_on_its_first_run() -> None:
    feed = RegistryFeed()
    feed.tells("passing", 0.0, REFRESH)
    feed.forget()  # another replica owned it meanwhile; the registry may have heard others
    assert feed.tells("passing", 1.0, REFRESH)
    assert not feed.tells("passing", 2.0, REFRESH)
