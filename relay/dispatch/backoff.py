"""The retry policy (pure): when to try again after a failed attempt, or give up."""

from __future__ import annotations

import random
from collections.abc import Callable

from ..config import RetryPolicy

JITTER = 0.2  # a retry comes up to 20% early, so failures that happened together spread out


def backoff_s(
    policy: RetryPolicy, attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

        base  = min(max, initial × multiplier^(attempt − 1))
        delay = base × (1 − JITTER × rand())        with rand() in [0, 1)

    e.g. initial 5s, ×2, max 1h: attempt 1 → 4–5 s, 2 → 8–10 s, 3 → 16–20 s, 11+ → 48–60 min.
    """
    exponent = min(attempt - 1, 64)  # large enough to reach any max; small enough not to overflow
    base = min(policy.max_s, policy.initial_s * policy.multiplier**exponent)
    return base * (1.0 - JITTER * rand())


def next_attempt_at(
    policy: RetryPolicy,
    attempts: int,
    created_at: float,
    now: float,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """When to try again after `attempts` failed attempts, or None when the delivery is dead.

    Dead after `max_attempts` attempts, or once the event is `max_age` old. A receiver's
    `Retry-After` is honoured when it asks for longer than the backoff would wait.
    """
    if attempts >= policy.max_attempts or now - created_at >= policy.max_age_s:
        return None
    wait = backoff_s(policy, attempts, rand)
    if retry_after_s is not None:
        wait = max(wait, retry_after_s)
    return now + wait
