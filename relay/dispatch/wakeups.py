"""The running dispatchers by destination, and the one way to wake them.

Built first by the daemon, so the store (another node's NOTIFY), the intake (events
stored here) and the runtime (resume, replay) can all be given `wake` at construction,
before any dispatcher exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dispatcher import Dispatcher


class Wakeups:
    def __init__(self) -> None:
        self.dispatchers: dict[str, Dispatcher] = {}

    def wake(self, destinations: Iterable[str]) -> None:
        """New or newly due work for these destinations: their dispatchers stop idling."""
        dispatchers = self.dispatchers
        for name in destinations:
            if (d := dispatchers.get(name)) is not None:
                d.wake()
