"""What every destination plug-in is: a `Sender` that turns claimed deliveries into a `Result`.

A sender maps its own protocol's answers (HTTP status and Retry-After, SMTP codes, FTP
replies) into one small result, and never lets a library exception reach the dispatcher.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from ..store import Claimed


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # try again later (the backoff decides when, or if it is dead)
    REJECTED = "rejected"  # never worth retrying: dead at once


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    status: int | None = None  # HTTP status or SMTP code
    error: str | None = None
    retry_after_s: float | None = None  # the receiver asked us to wait this long
    # What the receiver said (body start, SMTP reply, file written): the attempt history.
    response: str | None = None

    @classmethod
    def delivered(cls, status: int | None = None, response: str | None = None) -> Result:
        return cls(Outcome.DELIVERED, status, response=response)

    @classmethod
    def retry(
        cls,
        error: str,
        status: int | None = None,
        after_s: float | None = None,
        response: str | None = None,
    ) -> Result:
        return cls(Outcome.RETRY, status, error, after_s, response)


def tls_context(ca_file: Path | None) -> tuple[ssl.SSLContext | None, str | None]:
    """A verifying TLS context, or the reason it could not be made.

    A bad `ca_file` fails each send with that reason instead of stopping the daemon's start.
    """
    cafile = str(ca_file) if ca_file else None
    try:
        return ssl.create_default_context(cafile=cafile), None
    except (ssl.SSLError, OSError) as exc:
        return None, f"ca_file {cafile}: {exc}"[:200]


class Sender(Protocol):
    batch_size: int  # how many deliveries one `send` takes

    async def start(self) -> None: ...

    async def send(self, claims: list[Claimed]) -> Result: ...

    async def close(self) -> None: ...
