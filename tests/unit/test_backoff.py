"""The retry policy: exponential backoff with jitter, dead letters, Retry-After."""

from __future__ import annotations

import pytest

from relay.config import RetryPolicy
from relay.dispatch.backoff import JITTER, backoff_s, next_attempt_at

EPS = 1e-9
DEFAULT_POLICY = RetryPolicy(
    initial_s=5, max_s=3600, multiplier=2.0, max_attempts=15, max_age_s=3 * 86400
)


def fixed(value: float):
    return lambda: value


def test_jitter_is_twenty_percent_early():
    assert JITTER == 0.2


# Each row: attempt, rand(), expected seconds, and the arithmetic that gives it.
@pytest.mark.parametrize(
    ("attempt", "rand", "expected", "why"),
    [
        (1, 0.0, 5.0, "5 × 2^0 = 5; no jitter"),
        (1, 1 - EPS, 4.0, "5 × (1 − 0.2) = 4"),
        (1, 0.5, 4.5, "5 × (1 − 0.1) = 4.5"),
        (2, 0.0, 10.0, "5 × 2^1 = 10"),
        (2, 1 - EPS, 8.0, "10 × 0.8 = 8"),
        (3, 0.0, 20.0, "5 × 2^2 = 20"),
        (3, 1 - EPS, 16.0, "20 × 0.8 = 16"),
        (10, 0.0, 2560.0, "5 × 2^9 = 2560, under the 3600 cap"),
        (11, 0.0, 3600.0, "5 × 2^10 = 5120, capped at 3600"),
        (11, 1 - EPS, 2880.0, "3600 × 0.8 = 2880"),
        (15, 0.0, 3600.0, "capped"),
        (1000, 0.0, 3600.0, "a huge attempt number neither overflows nor exceeds the cap"),
    ],
)
def test_backoff_table(attempt, rand, expected, why):
    assert backoff_s(DEFAULT_POLICY, attempt, fixed(rand)) == pytest.approx(expected, abs=1e-6), why


@pytest.mark.parametrize(
    ("policy", "attempt", "expected", "why"),
    [
        (RetryPolicy(1, 60, 3.0, 10, 3600), 4, 27.0, "1 × 3^3 = 27"),
        (RetryPolicy(1, 60, 3.0, 10, 3600), 5, 60.0, "1 × 3^4 = 81, capped at 60"),
        (RetryPolicy(30, 30, 1.0, 10, 3600), 7, 30.0, "multiplier 1: constant"),
        (RetryPolicy(0.25, 10, 2.0, 10, 3600), 3, 1.0, "0.25 × 2^2 = 1"),
    ],
)
def test_backoff_other_policies(policy, attempt, expected, why):
    assert backoff_s(policy, attempt, fixed(0.0)) == pytest.approx(expected), why


def test_backoff_never_grows_past_max_and_never_shrinks():
    waits = [backoff_s(DEFAULT_POLICY, n, fixed(0.0)) for n in range(1, 40)]
    assert waits == sorted(waits)
    assert max(waits) == DEFAULT_POLICY.max_s


def test_backoff_with_real_randomness_stays_in_its_band():
    for attempt in (1, 2, 5, 12):
        base = min(3600.0, 5.0 * 2 ** (attempt - 1))
        for _ in range(200):
            assert 0.8 * base <= backoff_s(DEFAULT_POLICY, attempt) <= base


def test_next_attempt_is_now_plus_backoff():
    now = 10_000.0
    assert next_attempt_at(DEFAULT_POLICY, 1, created_at=now - 1, now=now, rand=fixed(0)) == now + 5
    assert next_attempt_at(DEFAULT_POLICY, 3, created_at=now - 1, now=now, rand=fixed(0)) == now + 20


def test_dead_after_max_attempts():
    policy = RetryPolicy(5, 3600, 2.0, max_attempts=3, max_age_s=86400)
    now = 10_000.0
    assert next_attempt_at(policy, 2, created_at=now, now=now, rand=fixed(0)) == now + 10
    assert next_attempt_at(policy, 3, created_at=now, now=now, rand=fixed(0)) is None
    assert next_attempt_at(policy, 4, created_at=now, now=now, rand=fixed(0)) is None


def test_max_attempts_one_means_no_retry():
    policy = RetryPolicy(5, 3600, 2.0, max_attempts=1, max_age_s=86400)
    assert next_attempt_at(policy, 1, created_at=0, now=1, rand=fixed(0)) is None


def test_dead_after_max_age():
    policy = RetryPolicy(5, 3600, 2.0, max_attempts=100, max_age_s=3600)
    created = 1_000_000.0
    assert next_attempt_at(policy, 1, created, now=created + 3599, rand=fixed(0)) == created + 3604
    assert next_attempt_at(policy, 1, created, now=created + 3600, rand=fixed(0)) is None
    assert next_attempt_at(policy, 1, created, now=created + 90_000, rand=fixed(0)) is None


def test_a_longer_retry_after_is_honoured():
    now = 50_000.0
    at = next_attempt_at(DEFAULT_POLICY, 1, now, now, retry_after_s=120, rand=fixed(0))
    assert at == now + 120


def test_a_shorter_retry_after_does_not_cut_the_backoff():
    now = 50_000.0
    at = next_attempt_at(DEFAULT_POLICY, 3, now, now, retry_after_s=1, rand=fixed(0))
    assert at == now + 20


def test_retry_after_does_not_revive_a_dead_delivery():
    policy = RetryPolicy(5, 3600, 2.0, max_attempts=2, max_age_s=86400)
    assert next_attempt_at(policy, 2, 0, 1, retry_after_s=10, rand=fixed(0)) is None
