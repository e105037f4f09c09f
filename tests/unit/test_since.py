"""`baton history --since WHEN` (services/cli/params.py parse_since)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.cli.params import parse_since

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("0", 0),
        ("30s", NOW - timedelta(seconds=30)),
        ("30m", NOW - timedelta(minutes=30)),
        ("12h", NOW - timedelta(hours=12)),
        ("7d", NOW - timedelta(days=7)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),  # UTC if no offset
        ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
        (
            "2026-01-02T03:04:05+02:00",
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_a_revision_a_duration_ago_or_a_time(text: str, expected: int | datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["last tuesday", "-3", "5w", "3 h", ""])
def test_anything_else_is_refused_with_the_three_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a revision \(42\), a duration ago \(30m"):
        parse_since(text, NOW)
