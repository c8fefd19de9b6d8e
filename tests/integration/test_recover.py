"""An operator's replay or resume on a destination whose circuit is open goes out now.

The receiver fails until its circuit opens with a cooldown of an hour; the operator fixes
it and replays (admin API, or `relay dead replay` from another process) or resumes. The
dispatcher sends a probe at once and the events follow; without that they would wait out
the cooldown.
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson

from ..helpers import base_toml, wait_for

CRM = (
    '[destinations.crm]\ntype = "http"\nurl = "{url}"\nconcurrency = 1\n'
    'retry = {{ initial = "50ms", max = "50ms", max_attempts = 1 }}\n'
    'circuit = {{ failures = 2, cooldown = "1h", max_cooldown = "1h" }}\n'
    '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
)


def bounce(i: int) -> dict:
    return {"id": f"r{i}", "event_type": "bounce", "email": f"u{i}@example.com"}


async def tripped(make_relay, receiver, n: int = 4):
    """A relay whose crm circuit is open (cooldown 1 h) with `n` dead events; receiver fixed."""
    receiver.default = 500
    relay = await make_relay(base_toml() + CRM.format(url=receiver.url))
    assert (await relay.post_events([bounce(i) for i in range(n)])).status == 202
    dispatcher = relay.runtime.dispatchers["crm"]
    await wait_for(lambda: dispatcher.state == "circuit_open", 10, "the circuit to open")

    async def all_dead() -> bool:
        return (await relay.store.stats()).destinations["crm"].dead == 2

    await wait_for(all_dead, 10, "the two opening failures to be dead")
    assert len(receiver.hits) == 2  # the other two wait behind the open circuit
    receiver.default = 200
    return relay


async def delivered(relay, n: int) -> bool:
    return (await relay.store.stats()).destinations["crm"].delivered == n


async def test_replay_from_the_admin_api_probes_at_once_and_delivers(make_relay, receiver):
    relay = await tripped(make_relay, receiver)
    async with relay.http.post(f"{relay.url}/v1/admin/replay", json={"destination": "crm"}) as resp:
        assert (resp.status, await resp.json()) == (200, {"replayed": 2})
    await wait_for(lambda: delivered(relay, 4), 5, "the replayed and waiting events")
    assert relay.runtime.dispatchers["crm"].state == "ok"
    assert sorted(orjson.loads(h.body)["id"] for h in receiver.hits[2:]) == ["r0", "r1", "r2", "r3"]


async def test_replay_from_the_command_line_reaches_the_running_daemon(make_relay, receiver):
    relay = await tripped(make_relay, receiver)
    environ = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "relay", "dead", "replay", "--destination", "crm", "-c", str(relay.config_path)),
        stdout=asyncio.subprocess.PIPE,
        env=environ,
    )
    out, _ = await proc.communicate()
    assert (proc.returncode, out.decode().strip()) == (0, "replayed 2 deliveries")
    await wait_for(lambda: delivered(relay, 4), 5, "the replayed and waiting events")


async def test_resume_probes_an_open_circuit_at_once(make_relay, receiver):
    relay = await tripped(make_relay, receiver)
    async with relay.http.post(f"{relay.url}/v1/admin/destinations/crm/pause") as resp:
        assert resp.status == 200
    async with relay.http.post(f"{relay.url}/v1/admin/destinations/crm/resume") as resp:
        assert resp.status == 200
    await wait_for(lambda: delivered(relay, 2), 5, "the two events behind the circuit")
    assert relay.runtime.dispatchers["crm"].state == "ok"
