"""One subscription's counts for the NATS services protocol (ADR-32).

The bus keeps one `Endpoint` per subscription and counts on it beside the handler;
`services.micro` reads them to answer `$SRV.INFO` and `$SRV.STATS`. It lives apart from
both so that neither imports the other to share it.
"""

from __future__ import annotations

from schemas import subjects
from schemas.micro import EndpointInfo, EndpointStats

__all__ = ["Endpoint"]


class Endpoint:
    """One subscription's counts, fed by the bus on every message it takes."""

    __slots__ = (
        "last_error",
        "metadata",
        "name",
        "num_errors",
        "num_requests",
        "processing_time",
        "queue_group",
        "subject",
    )

    def __init__(self, subject: str, queue_group: str, metadata: dict[str, str]) -> None:
        self.name = subjects.endpoint_name(subject)
        self.subject = subject
        self.queue_group = queue_group
        self.metadata = metadata
        self.num_requests = 0
        self.num_errors = 0
        self.last_error = ""
        self.processing_time = 0  # ns

    def failed(self, code: int, message: str) -> None:
        self.num_errors += 1
        self.last_error = f"{code}:{message}"

    def info(self) -> EndpointInfo:
        return EndpointInfo(
            name=self.name,
            subject=self.subject,
            queue_group=self.queue_group,
            metadata=self.metadata,
        )

    def stats(self) -> EndpointStats:
        n = self.num_requests
        return EndpointStats(
            name=self.name,
            subject=self.subject,
            queue_group=self.queue_group,
            num_requests=n,
            num_errors=self.num_errors,
            last_error=self.last_error,
            processing_time=self.processing_time,
            average_processing_time=self.processing_time // n if n else 0,
        )
