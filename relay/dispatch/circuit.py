"""Circuit breaking for one destination (pure: the caller passes the clock).

A receiver that is down turns every due delivery into a doomed request, and retries of a
large backlog would hammer it the moment it comes back. So after `failures` consecutive
failed sends the circuit opens: the dispatcher stops sending (deliveries stay pending, no
attempts are spent) until `cooldown` has passed, then sends ONE probe. A probe that
succeeds closes the circuit; one that fails reopens it with the cooldown doubled, up to
`max_cooldown`.

    closed --N failures--> open --cooldown--> probing --success--> closed
                             ^                   |
                             +----failure--------+   (cooldown × 2, capped)

A success from any send closes the circuit (the receiver is evidently up); a failure of a
send that started before the circuit opened changes nothing.
"""

from __future__ import annotations

from enum import StrEnum

from ..config import CircuitPolicy


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"  # waiting for the cooldown to pass
    PROBING = "probing"  # one probe in flight; everything else waits


class Gate(StrEnum):
    """What the dispatcher may do now."""

    SEND = "send"  # closed: send as usual
    PROBE = "probe"  # cooldown over: send one request
    WAIT = "wait"  # open, or a probe is in flight


class Circuit:
    def __init__(self, policy: CircuitPolicy) -> None:
        self.policy = policy
        self.state = CircuitState.CLOSED
        self.failures = 0  # consecutive failed sends
        self.cooldown_s = policy.cooldown_s
        self.retry_at = 0.0  # when OPEN: the clock reading at which a probe may go
        self.opened = 0  # how many times it opened (for logs and the console)

    @property
    def is_open(self) -> bool:
        """Open or probing: the destination is not being sent its backlog."""
        return self.state is not CircuitState.CLOSED

    def gate(self, now: float) -> Gate:
        if self.state is CircuitState.CLOSED:
            return Gate.SEND
        if self.state is CircuitState.OPEN and now >= self.retry_at:
            return Gate.PROBE
        return Gate.WAIT

    def wait_s(self, now: float) -> float:
        """How long until a probe may go (0 when not open)."""
        if self.state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self.retry_at - now)

    def probe_now(self) -> bool:
        """An operator fixed the receiver and replayed or resumed: let a probe go at once
        instead of after the cooldown. False when the circuit is not waiting on one."""
        if self.state is not CircuitState.OPEN:
            return False
        self.retry_at = 0.0
        return True

    def probe_sent(self) -> None:
        self.state = CircuitState.PROBING

    def record(self, ok: bool, now: float, probe: bool = False) -> str | None:
        """Feed one send's outcome; return "opened", "closed" or "reopened" on a change."""
        if ok:
            self.failures = 0
            if self.state is CircuitState.CLOSED:
                return None
            self.state, self.cooldown_s = CircuitState.CLOSED, self.policy.cooldown_s
            return "closed"
        if probe and self.state is CircuitState.PROBING:
            self.cooldown_s = min(self.cooldown_s * 2, self.policy.max_cooldown_s)
            self._open(now)
            return "reopened"
        if self.state is not CircuitState.CLOSED or not self.policy.failures:
            return None  # already open, or circuit breaking is off
        self.failures += 1
        if self.failures < self.policy.failures:
            return None
        self._open(now)
        self.opened += 1
        return "opened"

    def _open(self, now: float) -> None:
        self.state = CircuitState.OPEN
        self.retry_at = now + self.cooldown_s
