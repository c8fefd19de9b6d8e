"""SOAP sessions: a `login` answers a contextId naming one pull destination until it idles out.

The table lives in the node's memory (a session is a convenience of the dialect, not queue
state: losing it at a restart only means logging in again). It is bounded: expired sessions
are swept as new ones are made, and when MAX_SESSIONS live ones exist a login is refused.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    destination: str
    idle_s: float
    last_used: float


class SessionTable:
    """contextId → Session; a session unused for its `idle_s` is gone."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, destination: str, idle_s: float) -> str | None:
        """A new contextId for `destination` (None: too many live sessions)."""
        now = self._clock()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sweep(now)
            if len(self._sessions) >= MAX_SESSIONS:
                return None
        # The vendor's ids look like "C-" + 23 characters; a token of the same shape.
        context_id = "C-" + secrets.token_urlsafe(18)
        self._sessions[context_id] = Session(destination, idle_s, now)
        return context_id

    def use(self, context_id: str) -> Session | None:
        """The live session of `context_id`, its idle clock restarted (None: unknown or expired)."""
        session = self._sessions.get(context_id)
        now = self._clock()
        if session is None:
            return None
        if now - session.last_used > session.idle_s:
            del self._sessions[context_id]
            return None
        session.last_used = now
        return session

    def close(self, context_id: str) -> bool:
        return self._sessions.pop(context_id, None) is not None

    def _sweep(self, now: float) -> None:
        for context_id, s in list(self._sessions.items()):
            if now - s.last_used > s.idle_s:
                del self._sessions[context_id]
