"""What to replay: one request, checked by one set of rules whether it came from the admin
API's JSON, the console's form or the CLI's flags. Each surface reads its own syntax (JSON
types, form text, argv) into a `ReplayRequest`; the request refuses what no surface may ask.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_IDS = 10_000
MIN_RATE, MAX_RATE = 0.001, 1_000_000.0
_GROUP = re.compile(r"[0-9a-f]{12}")


class ReplayError(ValueError):
    """`field` (as the API names it) cannot be what was given; `message` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    destination: str | None = None  # "*": every destination
    ids: tuple[str, ...] = ()
    since: float | None = None  # on the time relay received the event
    until: float | None = None
    group: str | None = None  # a failure group's id, as the console lists it
    rate: float | None = None  # at most this many events a second, oldest first
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.destination is not None and not self.destination:
            raise ReplayError("destination", 'must be a destination name, or "*" for all')
        if not all(isinstance(i, str) and i for i in self.ids):
            raise ReplayError("ids", "must be a list of event ids (non-empty strings)")
        if len(self.ids) > MAX_IDS:
            raise ReplayError("ids", f"at most {MAX_IDS} ids at once")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ReplayError("until", "must not be before since")
        if self.group is not None:
            if not _GROUP.fullmatch(self.group):
                raise ReplayError("group", "must be a failure group id (12 hex digits, as listed)")
            if self.ids:
                raise ReplayError("group", "cannot be combined with ids")
        if self.rate is not None and not (
            math.isfinite(self.rate) and MIN_RATE <= self.rate <= MAX_RATE
        ):
            raise ReplayError(
                "rate", f"must be a positive number of events per second ({MIN_RATE:g} to 1e6)"
            )
        if self.destination is None and not self.ids and self.group is None and not self.when:
            raise ReplayError(
                "destination",
                "say what to replay: destination, ids, since, until or group "
                '(destination "*" replays every dead delivery)',
            )

    @property
    def when(self) -> bool:
        """Limited by the time relay received the event."""
        return self.since is not None or self.until is not None

    @property
    def only(self) -> str | None:
        """The one destination this replay is limited to (None: every destination)."""
        return None if self.destination == "*" else self.destination
