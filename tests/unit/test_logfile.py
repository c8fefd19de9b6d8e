"""The uploaded log file's naming (pure): aligned periods, placeholders, never a taken name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from relay.destinations.logfile import fill, free_name, period_start

T = datetime(2026, 11, 25, 13, 47, 5, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period_s", "start"),
    [
        (3600, datetime(2026, 11, 25, 13, 0, tzinfo=UTC)),  # on the hour
        (86400, datetime(2026, 11, 25, tzinfo=UTC)),  # at midnight UTC
        (300, datetime(2026, 11, 25, 13, 45, tzinfo=UTC)),  # 47:05 is in the 45 slot
    ],
)
def test_periods_are_aligned_to_the_epoch_in_utc(period_s, start):
    assert period_start(T, period_s) == start.timestamp()


def test_placeholders():
    assert fill("e-{date}T{time}-{seq:04d}.csv", T, 7) == "e-2026-11-25T134705-0007.csv"


async def _taken(names: set[str]):
    async def exists(name: str) -> bool:
        return name in names

    return exists


@pytest.mark.parametrize(
    ("template", "taken", "expect"),
    [
        ("a-{date}-{seq}.jsonl", set(), "a-2026-11-25-1.jsonl"),
        ("a-{date}-{seq}.jsonl", {"a-2026-11-25-1.jsonl"}, "a-2026-11-25-2.jsonl"),
        ("b-{date}.jsonl", set(), "b-2026-11-25.jsonl"),
        ("b-{date}.jsonl", {"b-2026-11-25.jsonl"}, "b-2026-11-25-2.jsonl"),
        ("c", {"c", "c-2"}, "c-3"),
    ],
)
async def test_free_name_never_reuses_a_name(template, taken, expect):
    assert await free_name(template, T, await _taken(taken)) == expect
