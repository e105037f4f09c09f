"""Moved to services/stream/writer.py, which maps every "lost the race" answer in one place
(`lost_race`, `LostRace`).

Only services/registry/replica.py still reads the codes from here, until it moves onto
services/stream; then this module goes.
"""

from __future__ import annotations

from services.stream.writer import WRONG_LAST_SEQUENCE

__all__ = ["WRONG_LAST_SEQUENCE"]
