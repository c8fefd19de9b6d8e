"""The values that travel between relay's layers: an event on its way into the store, a
claimed delivery on its way to a destination, what one send gave, and the delivery states.

A leaf: it imports nothing from relay, so the store, the destinations, the dispatchers
and the web layer can all share these without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

RESPONSE_CHARS = 2048  # of a receiver's answer, kept with each attempt


class State(IntEnum):
    """A delivery's state, as stored (the SQL formats these; it never spells a number).

    Ordered: a delivery below DELIVERED is still open (due or in flight), one at DELIVERED
    or above is finished; the partial indexes rely on that (`state < DELIVERED`).
    """

    PENDING = 0
    LEASED = 1
    DELIVERED = 2
    DEAD = 3


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    event_type: str
    received_at: float
    body: bytes  # the event as JSON
    deliveries: tuple[tuple[str, float], ...]  # (destination, due_at)
    check_duplicate: bool = True  # False for ids relay made itself: they cannot collide
    # Tracking events: (event_type, email, sendid). The store adds `"first": true|false` to
    # the body — true when no earlier event had this key — inside the same transaction.
    first_key: tuple[str, str, str] | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: int
    lease: int
    event_id: str
    event_type: str
    body: bytes
    attempts: int  # including this one
    created_at: float  # when relay received the event


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one send of a batch of claims gave, kept per delivery for `relay show` and the
    console. The store adds the outcome from the verb it is passed to (ack/retry/dead)."""

    destination: str
    ts: float
    status: int | None = None  # HTTP status or SMTP code
    ms: float = 0.0
    error: str | None = None
    response: str | None = None  # the first RESPONSE_CHARS of the answer


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

    @classmethod
    def rejected(cls, error: str, status: int | None = None, response: str | None = None) -> Result:
        """The receiver said no for good (an HTTP status in `reject`, an SMTP 5xx)."""
        return cls(Outcome.REJECTED, status, error, None, response)
