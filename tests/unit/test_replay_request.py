"""One set of replay rules for the admin API, the console and the CLI."""

from __future__ import annotations

import math
from typing import Any

import pytest

from relay.domain.replay import MAX_IDS, ReplayError, ReplayRequest


def refused(**kw: Any) -> tuple[str, str]:
    with pytest.raises(ReplayError) as exc:
        ReplayRequest(**kw)
    return exc.value.field, exc.value.message


def test_a_replay_says_what_to_replay_and_star_means_everything() -> None:
    assert refused()[0] == "destination"
    assert refused(dry_run=True, rate=5.0)[0] == "destination"
    assert ReplayRequest("*").only is None
    assert ReplayRequest("crm").only == "crm"
    kws: list[dict[str, Any]] = [{"ids": ("e1",)}, {"since": 1.0}, {"until": 2.0}]
    for kw in [*kws, {"group": "0123456789ab"}]:
        assert ReplayRequest(**kw).only is None


def test_each_field_is_checked_the_same_wherever_it_came_from() -> None:
    assert refused(destination="") == ("destination", 'must be a destination name, or "*" for all')
    assert refused(ids=("e1", ""))[0] == "ids"
    assert refused(ids=tuple(f"e{i}" for i in range(MAX_IDS + 1))) == (
        "ids",
        f"at most {MAX_IDS} ids at once",
    )
    assert refused(destination="*", since=2.0, until=1.0) == ("until", "must not be before since")
    assert refused(group="XYZ")[0] == "group"
    assert refused(group="0123456789ab", ids=("e1",)) == ("group", "cannot be combined with ids")
    for rate in (0.0, -1.0, 0.0001, 2e6, math.nan, math.inf):
        assert refused(destination="crm", rate=rate)[0] == "rate"
    assert ReplayRequest("crm", rate=0.001).rate == 0.001
