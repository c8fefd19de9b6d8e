"""Two real `relay serve` processes on one real PostgreSQL of their own, one receiver:
exactly-once in a normal run, kill -9 of a node, and the database stopped for a while.

The cluster is this module's own (`pg.Cluster`): the outage test stops and starts it.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from .. import pg
from ..helpers import DaemonProcess, free_port, wait_for

CONCURRENCY = 16
# Two daemons, a PostgreSQL and 20,000 events share two cores with the test itself: the waits
# below bound correctness (everything arrives, once), not speed, so they leave room for a busy
# machine (seen: 17 s alone, 49 s with another suite running beside it).
DELIVERED_WITHIN_S = 120
pytestmark = pytest.mark.timeout(240)


class Nodes:
    def __init__(self, tmp_path: Path, dsn: str, hook_url: str) -> None:
        self.daemons: list[DaemonProcess] = []
        for n in (1, 2):
            where = tmp_path / f"node{n}"
            where.mkdir()
            port = free_port()
            (where / "relay.toml").write_text(
                f'[server]\nlisten = "127.0.0.1:{port}"\n'
                f'[storage]\nbackend = "postgres"\ndsn = "{dsn}"\npool_size = 6\n'
                '[log]\ndispatch = "dispatch.log"\n'
                f'[destinations.hook]\ntype = "http"\nurl = "{hook_url}"\n'
                f'concurrency = {CONCURRENCY}\nretry = {{ initial = "50ms", max = "200ms" }}\n'
                '[[routes]]\nevents = ["*"]\ndestinations = ["hook"]\n'
            )
            self.daemons.append(DaemonProcess(where / "relay.toml", port))

    async def start(self, n: int) -> None:
        await self.daemons[n].start(env={"RELAY_NODE": f"node-{n + 1}"})

    def stop_all(self) -> None:
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.kill(signal.SIGTERM)


@pytest.fixture
async def nodes(tmp_path, cluster, receiver) -> Iterator[Nodes]:
    n = Nodes(tmp_path, pg.fresh_schema_dsn(cluster.dsn), receiver.url)
    try:
        await asyncio.gather(n.start(0), n.start(1))
        yield n
    finally:
        n.stop_all()


class Client:
    """Posts batches to one node as fast as it answers; remembers what got a 202."""

    def __init__(self, url: str, counter: itertools.count, prefix: str, size: int = 50) -> None:
        self.url, self.counter, self.prefix, self.size = url, counter, prefix, size
        self.acked: set[str] = set()
        self.statuses: Counter[int] = Counter()
        self.retry_after_503 = 0

    async def run(self, stop: asyncio.Event, limit: int | None = None) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not stop.is_set() and (limit is None or len(self.acked) < limit):
                batch = [
                    {"event_type": "bounce", "email": "x@example.com", "id": f"{self.prefix}{i}"}
                    for i in itertools.islice(self.counter, self.size)
                ]
                try:
                    async with http.post(f"{self.url}/v1/events", json=batch) as resp:
                        self.statuses[resp.status] += 1
                        if resp.status == 202:
                            self.acked.update(e["id"] for e in batch)
                        elif resp.status == 503 and resp.headers.get("Retry-After"):
                            self.retry_after_503 += 1
                            await asyncio.sleep(0.05)
                except (aiohttp.ClientError, TimeoutError):
                    self.statuses[0] += 1
                    await asyncio.sleep(0.02)  # the node is down: try again


async def _all_delivered(receiver, acked: set[str], timeout: float) -> Counter[str]:
    def done() -> bool:
        return acked <= set(receiver.delivered_ids())

    await wait_for(done, timeout, "every acknowledged event to be delivered")
    return Counter(receiver.delivered_ids())


async def test_20000_events_through_two_nodes_are_each_delivered_once(nodes, receiver):
    counter = itertools.count()
    clients = [Client(nodes.daemons[i % 2].url, counter, f"e{i}-", size=100) for i in range(4)]
    stop = asyncio.Event()
    await asyncio.gather(*(c.run(stop, limit=5000) for c in clients))
    acked = set().union(*(c.acked for c in clients))
    assert len(acked) == 20_000
    seen = await _all_delivered(receiver, acked, DELIVERED_WITHIN_S)
    doubles = [k for k, n in seen.items() if n > 1]
    assert not doubles, f"{len(doubles)} events delivered twice in a normal run"
    assert set(seen) == acked


async def test_kill_9_of_one_node_loses_nothing(nodes, receiver):
    counter = itertools.count()
    clients = [Client(d.url, counter, "k-") for d in nodes.daemons]
    stop = asyncio.Event()
    running = [asyncio.create_task(c.run(stop)) for c in clients]
    try:
        await wait_for(lambda: len(clients[0].acked) >= 1500, 20, "node 1 to take events")
        assert nodes.daemons[0].kill(signal.SIGKILL) == -signal.SIGKILL
        before = len(clients[1].acked)
        await wait_for(lambda: len(clients[1].acked) >= before + 500, 20, "node 2 to go on")
        await nodes.start(0)  # the same node name: it frees its own leases at start-up
        after = len(clients[0].acked)
        await wait_for(lambda: len(clients[0].acked) >= after + 500, 20, "node 1 to be back")
    finally:
        stop.set()
        await asyncio.gather(*running)
    acked = clients[0].acked | clients[1].acked
    seen = await _all_delivered(receiver, acked, DELIVERED_WITHIN_S)
    doubles = sum(n - 1 for n in seen.values() if n > 1)
    # Only what the killed node had sent and not yet acked can go out twice: a send in each
    # of its slots, plus sends already answered whose ack waited for the next flush (a slot
    # is freed when the receiver answers, before the ack commits): a few rounds of slots.
    in_flight = 3 * CONCURRENCY
    assert doubles <= in_flight, f"{doubles} duplicates; at most ~{in_flight} were in flight"


async def test_database_outage_answers_503_then_recovers_with_nothing_lost(
    nodes, receiver, cluster
):
    counter = itertools.count()
    clients = [Client(d.url, counter, "o-") for d in nodes.daemons]
    stop = asyncio.Event()
    running = [asyncio.create_task(c.run(stop)) for c in clients]
    try:
        await wait_for(lambda: all(len(c.acked) >= 500 for c in clients), 20, "ingest to run")
        await asyncio.to_thread(cluster.stop)
        await wait_for(
            lambda: all(c.retry_after_503 >= 3 for c in clients), 15, "503 + Retry-After"
        )
        await asyncio.sleep(2)
        await asyncio.to_thread(cluster.start)
        marks = [len(c.acked) for c in clients]
        await wait_for(
            lambda: all(len(c.acked) >= m + 500 for c, m in zip(clients, marks, strict=True)),
            30,
            "both nodes to take events again",
        )
    finally:
        stop.set()
        await asyncio.gather(*running)
    acked = clients[0].acked | clients[1].acked
    await _all_delivered(receiver, acked, DELIVERED_WITHIN_S)
    async with aiohttp.ClientSession() as http:
        for d in nodes.daemons:
            async with http.get(f"{d.url}/readyz") as r:
                assert r.status == 200


async def test_two_nodes_on_one_host_without_relay_node_have_their_own_identity(
    tmp_path, cluster, receiver, monkeypatch
):
    # Node 2 holds claims in flight (the receiver takes 8 s); node 1 starts meanwhile. A
    # start frees the starting node's own claims only: with one shared identity (the host
    # name) node 1 freed node 2's and sent them again.
    monkeypatch.delenv("RELAY_NODE", raising=False)
    receiver.delay_s = 8.0
    nodes = Nodes(tmp_path, pg.fresh_schema_dsn(cluster.dsn), receiver.url)
    try:
        await nodes.daemons[1].start()
        events = [
            {"event_type": "bounce", "email": "x@example.com", "id": f"n{i}"} for i in range(8)
        ]
        url = f"{nodes.daemons[1].url}/v1/events"
        async with aiohttp.ClientSession() as http, http.post(url, json=events) as resp:
            assert resp.status == 202
        await wait_for(lambda: len(receiver.hits) == 8, 10, "node 2 to send all eight")
        await nodes.daemons[0].start()
        await _all_delivered(receiver, {e["id"] for e in events}, 30)
        node1_log = tmp_path / "node1" / "dispatch.log"
        node2_log = tmp_path / "node2" / "dispatch.log"

        def logged() -> bool:
            return node2_log.exists() and node2_log.read_text().count('"delivered"') == 8

        await wait_for(logged, 15, "node 2 to record its eight deliveries")
        assert Counter(receiver.delivered_ids()) == {e["id"]: 1 for e in events}
        names = {orjson.loads(line)["node"] for line in node2_log.read_text().splitlines()}
        port1, port2 = (d.port for d in nodes.daemons)
        assert names == {f"{socket.gethostname()}:{port2}"}
        started = (tmp_path / "node1" / "daemon.stderr").read_text()
        assert f"node={socket.gethostname()}:{port1}" in started
        assert not node1_log.exists() or '"delivered"' not in node1_log.read_text()
        stats = subprocess.run(
            [sys.executable, "-m", "relay", "stats", "-c", str(nodes.daemons[0].config_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert stats.stdout.splitlines()[0] == f"node: {socket.gethostname()}:{port1}"
    finally:
        nodes.stop_all()
