"""`relay show EVENT_ID [--json]` as a real subprocess, on the SQLite file of a
relay running in this process at the same time: a delivered, a retried and a dead event,
and an unknown id."""

from __future__ import annotations

import re

import orjson
import pytest

from ..helpers import Receiver, RunningRelay, wait_for
from .test_admin_api import three_outcomes
from .test_cli import cli

ATTEMPT = re.compile(r"^  #(\d+) (\S+Z) (\w+) (\S+) ([\d.]+)ms ?(.*)$")


@pytest.fixture
async def explained(make_relay, receiver):
    """ev1 delivered at once, ev2 failed once then delivered, ev3 dead after 3 attempts."""
    failing = Receiver(default=500)
    await failing.start()
    relay = await three_outcomes(make_relay, receiver, failing)
    yield relay
    await failing.stop()


async def show(relay: RunningRelay, *args: str) -> tuple[int, str, str]:
    return await cli("show", *args, "-c", str(relay.config_path))


def attempts(out: str) -> list[tuple[str, str, str]]:
    """(attempt, outcome, status) of each attempt line."""
    found = []
    for line in out.splitlines():
        if line.startswith("  #"):
            m = ATTEMPT.match(line)
            assert m, f"not an attempt line: {line!r}"
            found.append((m.group(1), m.group(3), m.group(4)))
    return found


async def test_show_a_delivered_event(explained):
    code, out, err = await show(explained, "ev1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("event ev1  bounce  received 20")
    assert any(line.split() == ["email", "j***@example.com"] for line in lines)
    assert "crm: delivered, 1 attempt(s)" in lines
    assert attempts(out) == [("1", "delivered", "200")]


async def test_show_a_retried_event(explained):
    code, out, err = await show(explained, "ev2")
    assert code == 0, err
    assert "crm: delivered, 2 attempt(s)" in out.splitlines()
    assert attempts(out) == [("1", "retry", "500"), ("2", "delivered", "200")]
    assert out.splitlines()[-2].endswith("ms HTTP 500: nope")


async def test_show_a_dead_event(explained):
    code, out, err = await show(explained, "ev3")
    assert code == 0, err
    assert "down: dead, 3 attempt(s)" in out.splitlines()
    assert attempts(out) == [("1", "retry", "500"), ("2", "retry", "500"), ("3", "dead", "500")]


@pytest.mark.parametrize("event_id", ["ev1", "ev2", "ev3"])
async def test_show_json_is_what_the_admin_api_answers(explained, event_id):
    code, out, err = await show(explained, event_id, "--json")
    assert code == 0, err
    assert len(out.splitlines()) == 1
    async with explained.http.get(f"{explained.url}/v1/admin/events/{event_id}") as resp:
        assert resp.status == 200
        assert orjson.loads(out) == await resp.json()


async def test_show_an_unknown_event(explained):
    code, out, err = await show(explained, "no-such-event")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [
        "relay: no event with id 'no-such-event' (never received, or purged)"
    ]
    code, out, err = await show(explained, "no-such-event", "--json")
    assert code == 1 and out == ""


async def test_tail_prints_the_audit_lines_of_operator_actions(explained):
    async with explained.http.post(
        f"{explained.url}/v1/admin/destinations/down/pause", json={"for": "1h"}
    ) as resp:
        assert resp.status == 200
    await wait_for(lambda: any("audit" in x for x in explained.dispatch_lines()), 3, "audit line")
    config = str(explained.config_path)
    code, out, err = await cli("tail", "-c", config)
    assert code == 0, err
    [line] = [x for x in out.splitlines() if " audit " in x]
    assert line.split()[1:] == ["audit", "pause", "down", "by", "loopback", "for", "3600s"]
    _, out, _ = await cli("tail", "--destination", "down", "-c", config)
    assert any(" audit " in x for x in out.splitlines())
    for other in (["--destination", "crm"], ["--outcome", "dead"], ["--event-type", "bounce"]):
        _, out, _ = await cli("tail", *other, "-c", config)
        assert out and " audit " not in out
    _, out, _ = await cli("tail", "--json", "-c", config)
    [audit] = [orjson.loads(x) for x in out.splitlines() if '"audit"' in x]
    assert (audit["audit"], audit["actor"], audit["target"]) == ("pause", "loopback", "down")
