"""services/stream's pure parts: which JetStream answers are a lost race, what a stream
the server has is as a spec, what an unreachable store says, and where a follower starts."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from services import errors, logs
from services.bus import Bus
from services.governor.store import StaleWriteError
from services.natsclient import Client
from services.stream import Follower, LostRace, StreamSpec, lost_race
from services.stream.spec import stream_spec
from services.stream.writer import WRONG_LAST_SEQUENCE, unreachable


@pytest.mark.parametrize(
    "exc",
    [
        nats.js.errors.APIError(code=400, err_code=10071, description="wrong last sequence: 7"),
        nats.js.errors.BadRequestError(code=400, err_code=10071),  # how nats-py raises it
        nats.js.errors.APIError(code=400, err_code=10164, description="wrong last sequence"),
        nats.js.errors.KeyWrongLastSequenceError("wrong last sequence"),  # no err_code
    ],
)
def test_every_wrong_last_sequence_answer_is_a_lost_race(exc: Exception) -> None:
    assert lost_race(exc)


@pytest.mark.parametrize(
    "exc",
    [
        nats.js.errors.APIError(code=503, err_code=10008, description="no quorum"),
        nats.js.errors.NotFoundError(code=404, err_code=10059),
        nats.js.errors.APIError(code=400),  # no code at all
        nats.js.errors.KeyDeletedError(),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        OSError("connection reset"),
    ],
)
def test_anything_else_is_not_a_lost_race(exc: Exception) -> None:
    assert not lost_race(exc)


def test_both_codes_are_known() -> None:
    assert {10071, 10164} == WRONG_LAST_SEQUENCE


def test_a_lost_race_is_a_conflict_and_the_governors_stale_write() -> None:
    assert issubclass(LostRace, errors.Conflict)
    assert LostRace().code == 409
    assert StaleWriteError is LostRace


def test_an_unreachable_store_says_which_and_what_to_check() -> None:
    err = unreachable("the config store", "BATON_CONFIG", TimeoutError("no reply"))
    assert isinstance(err, errors.Unavailable)
    assert err.message.startswith("the config store (JetStream stream BATON_CONFIG)")
    assert "nats-server runs with JetStream enabled" in err.message


def test_a_stream_the_server_has_reads_back_as_its_spec() -> None:
    config = api.StreamConfig(
        name="S",
        subjects=["s.>"],
        max_msgs_per_subject=1,
        num_replicas=3,
        republish=api.RePublish(src="s.*.event", dest="t.{{wildcard(1)}}"),
    )
    assert stream_spec(config) == StreamSpec(
        name="S",
        subjects=("s.>",),
        per_subject=1,
        replicas=3,
        republish=("s.*.event", "t.{{wildcard(1)}}"),
    )
    plain = stream_spec(api.StreamConfig(name="P", subjects=["p.>"]))
    assert (plain.republish, plain.replicas, plain.per_subject) == (None, 1, -1)


def follower(*, last_per_subject: bool = True) -> Follower:
    """A follower on a client never connected: only its choice of start is used."""
    bus = Bus(Client(), logs.get_logger("test"))
    return Follower(
        bus, bus.log, lambda _: None, stream="S", subject="s.>", noun="test",
        last_per_subject=last_per_subject,
    )  # fmt: skip


def test_a_follower_starts_at_the_latest_of_each_subject_or_at_the_first() -> None:
    assert follower()._start_at(9).deliver_policy == api.DeliverPolicy.LAST_PER_SUBJECT
    first = follower(last_per_subject=False)._start_at(9)
    assert first.deliver_policy == api.DeliverPolicy.ALL


def test_a_restarted_follower_goes_on_after_the_last_record_delivered() -> None:
    f = follower()
    f.last_seq = 5
    config = f._start_at(9)
    assert (config.deliver_policy, config.opt_start_seq) == (
        api.DeliverPolicy.BY_START_SEQUENCE,
        6,
    )
    assert f._start_at(5).opt_start_seq == 6  # nothing new yet: from the next one on


def test_a_follower_whose_stream_was_made_again_starts_over() -> None:
    f = follower()
    f.last_seq = 5
    config = f._start_at(2)  # the stream ends before what was delivered: not the same one
    assert config.deliver_policy == api.DeliverPolicy.LAST_PER_SUBJECT
    assert f.last_seq == 0
