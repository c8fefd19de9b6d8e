"""Fault matrix: each fault against the real relay on real sockets, and each time the process
and the queue carry on afterwards.

Receiver slow-loris, receiver answering garbage, a destination host that does not resolve,
storage full (a real SQLITE_FULL through `max_page_count` on the writer's connection), the
database locked by another process (briefly, and past the busy timeout), clients uploading
bodies slowly, and thousands of idle connections.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time

import aiohttp

from ..helpers import base_toml, wait_for

FAST_RETRY = 'retry = { initial = "50ms", max = "200ms", multiplier = 2.0, max_attempts = 50 }\n'


def two_destinations(bad_url: str, good_url: str, extra: str = "") -> str:
    """`bad` points at the faulty receiver; `good` at a healthy one, for isolation."""
    return (
        base_toml()
        + f'[destinations.bad]\ntype = "http"\nurl = "{bad_url}"\ntimeout = "300ms"\n'
        + FAST_RETRY
        + extra
        + f'[destinations.good]\ntype = "http"\nurl = "{good_url}"\ntimeout = "2s"\n'
        + FAST_RETRY
        + '[[routes]]\nevents = ["*"]\ndestinations = ["bad", "good"]\n'
    )


def event(event_id: str) -> dict:
    return {"event_type": "bounce", "email": "a@example.com", "id": event_id}


class RawReceiver:
    """A TCP server speaking as much HTTP as a test wants: one behaviour per connection
    from `script`, then `default`. `loris`: a status line, then a header byte now and then,
    never finishing. `garbage`: bytes that are not HTTP, then close. `ok`: a proper 200."""

    def __init__(self, script: list[str], default: str = "ok") -> None:
        self.script = list(script)
        self.default = default
        self.seen: list[str] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _read_request(self, reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                await self._read_request(reader)
                behaviour = self.script.pop(0) if self.script else self.default
                self.seen.append(behaviour)
                if behaviour == "loris":
                    writer.write(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(300):  # ~30 s of one header line, a byte at a time
                        writer.write(b"X")
                        await writer.drain()
                        await asyncio.sleep(0.1)
                    return
                if behaviour == "garbage":
                    writer.write(b"\x00\xffSMTP 220 hello\x7f\x80\r\n\r\nnot http at all\r\n")
                    await writer.drain()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            self.tasks.discard(task)
            writer.close()


def outcomes(relay, destination: str) -> list[dict]:
    return [line for line in relay.dispatch_lines() if line["destination"] == destination]


async def healthy(relay) -> None:
    async with relay.http.get(f"{relay.url}/healthz") as r:
        assert r.status == 200


async def carries_on(relay, receiver, event_id: str) -> None:
    """The process answers, ingest takes a new event, and the healthy destination gets it."""
    await healthy(relay)
    resp = await relay.post_events(event(event_id))
    assert resp.status == 202
    await wait_for(lambda: event_id in receiver.delivered_ids(), 10, f"{event_id} at `good`")


async def test_a_slow_loris_receiver_times_out_is_retried_and_delivered_later(make_relay, receiver):
    bad = RawReceiver(["loris", "loris"])
    await bad.start()
    try:
        relay = await make_relay(two_destinations(bad.url, receiver.url))
        assert (await relay.post_events(event("loris-1"))).status == 202
        await wait_for(
            lambda: any(x["outcome"] == "delivered" for x in outcomes(relay, "bad")),
            15,
            "delivery to the loris receiver once it behaves",
        )
        lines = outcomes(relay, "bad")
        retries = [x for x in lines if x["outcome"] == "retry"]
        # Each stalled answer was cut by the 300 ms timeout, not taken for a success.
        assert [x["error"] for x in retries] == ["timeout after 0.3s"] * 2, lines
        assert bad.seen[:3] == ["loris", "loris", "ok"]
        assert "loris-1" in receiver.delivered_ids()  # the other destination was not held up
        await carries_on(relay, receiver, "loris-2")
    finally:
        await bad.stop()


async def test_a_receiver_answering_garbage_is_retried_never_delivered_by_mistake(
    make_relay, receiver
):
    bad = RawReceiver(["garbage", "garbage", "garbage"])
    await bad.start()
    try:
        relay = await make_relay(two_destinations(bad.url, receiver.url))
        assert (await relay.post_events(event("junk-1"))).status == 202
        await wait_for(
            lambda: any(x["outcome"] == "delivered" for x in outcomes(relay, "bad")),
            15,
            "delivery once the receiver speaks HTTP",
        )
        lines = outcomes(relay, "bad")
        assert [x["outcome"] for x in lines] == ["retry", "retry", "retry", "delivered"], lines
        assert all(x["error"] for x in lines[:3])
        await carries_on(relay, receiver, "junk-2")
        stats = (await relay.store.stats()).destinations
        assert stats["bad"].pending == 0 and stats["bad"].dead == 0
    finally:
        await bad.stop()


async def test_a_host_that_does_not_resolve_is_retried_then_dead_and_isolated(make_relay, receiver):
    relay = await make_relay(
        base_toml()
        + '[destinations.bad]\ntype = "http"\nurl = "http://relay-nowhere.invalid/hook"\n'
        + 'timeout = "2s"\nretry = { initial = "50ms", max = "100ms", max_attempts = 3 }\n'
        + f'[destinations.good]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["bad", "good"]\n'
    )
    assert (await relay.post_events(event("dns-1"))).status == 202
    await wait_for(
        lambda: any(x["outcome"] == "dead" for x in outcomes(relay, "bad")), 20, "a dead line"
    )
    lines = outcomes(relay, "bad")
    assert [x["outcome"] for x in lines] == ["retry", "retry", "dead"], lines
    assert all(x["error"] and x["status"] is None for x in lines), lines
    assert "dns-1" in receiver.delivered_ids()
    await carries_on(relay, receiver, "dns-2")

    async def both_dead() -> bool:
        return (await relay.store.stats()).destinations["bad"].dead == 2  # dns-1 and dns-2

    await wait_for(both_dead, 20, "dns-2 dead too")


async def _set_max_pages(relay, pages: int | None) -> int:
    """PRAGMA max_page_count on the writer's own connection (it is per connection)."""

    def job(conn):  # a writer job: runs in the SQLite thread, in the group's transaction
        limit = conn.execute("PRAGMA page_count").fetchone()[0] if pages is None else pages
        return conn.execute(f"PRAGMA max_page_count = {limit}").fetchone()[0]

    return await relay.store._submit(job)


async def test_storage_full_is_503_with_retry_after_and_recovers(make_relay, receiver, tmp_path):
    relay = await make_relay(
        base_toml()
        + f'[destinations.good]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["good"]\n'
    )
    assert (await relay.post_events(event("before-full"))).status == 202
    await _set_max_pages(relay, None)  # the file may not grow by one more page
    big = [event(f"full-{i}") | {"message": "x" * 2000} for i in range(200)]
    resp = await relay.post_events(big)
    assert resp.status == 503, await resp.text()
    assert resp.headers["Retry-After"].isdigit()
    body = await resp.json()
    assert "full" in body["error"], body
    # A pixel or anything else still answers; the process is alive.
    await healthy(relay)

    await _set_max_pages(relay, 1 << 30)  # space returns
    resp = await relay.post_events(big)
    assert resp.status == 202, await resp.text()
    await wait_for(lambda: len(set(receiver.delivered_ids())) == 201, 20, "every event delivered")
    assert "before-full" in receiver.delivered_ids()
    with sqlite3.connect(tmp_path / "relay.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    await carries_on(relay, receiver, "after-full")


LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
# Still holding the lock: had any post committed meanwhile, the lock did not take effect.
print(db.execute("SELECT count(*) FROM events WHERE id LIKE 'locked-%'").fetchone()[0])
db.execute("COMMIT")
"""


async def test_database_locked_by_another_process_is_503_or_wait_never_500(
    make_relay, receiver, tmp_path
):
    relay = await make_relay(
        base_toml()
        + f'[destinations.good]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["good"]\n'
    )
    assert (await relay.post_events(event("before-lock"))).status == 202
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(tmp_path / "relay.db"), "6.5"],
        stdout=subprocess.PIPE,
    )
    try:
        assert locker.stdout is not None
        assert await asyncio.wait_for(asyncio.to_thread(locker.stdout.readline), 10) == b"locked\n"
        statuses: list[int] = []
        accepted: list[str] = []

        async def post(i: int) -> None:
            resp = await relay.post_events(
                event(f"locked-{i}"), timeout=aiohttp.ClientTimeout(total=30)
            )
            statuses.append(resp.status)
            if resp.status == 202:
                accepted.append(f"locked-{i}")
            else:
                assert resp.headers.get("Retry-After"), resp.headers

        await asyncio.gather(*(post(i) for i in range(20)))
        async with relay.http.get(f"{relay.url}/healthz") as r:
            assert r.status == 200  # liveness does not depend on the lock
        assert set(statuses) <= {202, 503}, statuses
        assert len(statuses) == 20
        # Nothing committed while the lock was held: every 202 waited for it to go.
        assert await asyncio.wait_for(asyncio.to_thread(locker.stdout.readline), 30) == b"0\n"
    finally:
        await asyncio.to_thread(locker.wait, 30)
        locker.stdout.close()
    assert locker.returncode == 0
    with sqlite3.connect(tmp_path / "relay.db") as db:
        stored = db.execute("SELECT id FROM events WHERE id LIKE 'locked-%'").fetchall()
    assert sorted(i for (i,) in stored) == sorted(accepted)
    # The lock is gone: everything works again, and every 202 is delivered.
    await carries_on(relay, receiver, "after-lock")
    await wait_for(
        lambda: set(accepted) <= set(receiver.delivered_ids()), 10, "every 202 delivered"
    )
    assert "before-lock" in receiver.delivered_ids()


async def test_a_long_lock_answers_503_within_the_busy_timeout_not_after_many(
    make_relay, receiver, tmp_path
):
    """Ten requests that share one commit while another process holds the lock for 14 s:
    each answers once the 5 s busy timeout runs out (503), not one busy timeout per event."""
    relay = await make_relay(
        base_toml()
        + f'[destinations.good]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["good"]\n'
    )
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(tmp_path / "relay.db"), "14"], stdout=subprocess.PIPE
    )
    try:
        assert locker.stdout is not None
        assert await asyncio.wait_for(asyncio.to_thread(locker.stdout.readline), 10) == b"locked\n"
        answers: list[tuple[int, float]] = []

        async def post(i: int) -> None:
            started = time.monotonic()
            resp = await relay.post_events(
                event(f"long-{i}"), timeout=aiohttp.ClientTimeout(total=60)
            )
            answers.append((resp.status, time.monotonic() - started))

        await asyncio.gather(*(post(i) for i in range(10)))
        # One busy timeout (5 s), two if the requests straddled two commits; had each event
        # waited out its own, the third would have outlived the 14 s lock and got a 202.
        assert {status for status, _ in answers} == {503}, answers
    finally:
        await asyncio.to_thread(locker.wait, 30)
        locker.stdout.close()
    await carries_on(relay, receiver, "after-long-lock")


async def test_a_client_uploading_slowly_does_not_hold_up_anyone_else(make_relay, receiver):
    relay = await make_relay(
        base_toml()
        + f'[destinations.good]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["good"]\n'
    )
    port = int(relay.url.rsplit(":", 1)[1])
    slow = []
    for _ in range(20):  # twenty uploads that will never finish their body
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n[{"
        )
        await writer.drain()
        slow.append((reader, writer))

    async def trickle() -> None:
        while True:
            await asyncio.sleep(0.05)
            for _, writer in slow:
                writer.write(b" ")  # a byte now and then, all the while

    trickling = asyncio.create_task(trickle())
    try:
        for i in range(10):
            assert (await relay.post_events(event(f"beside-slow-{i}"))).status == 202
        await carries_on(relay, receiver, "after-slow")
        # They got through beside the slow uploads, not after them: those are still open.
        assert not any(reader.at_eof() for reader, _ in slow)
    finally:
        trickling.cancel()
        for _, writer in slow:
            writer.close()
    # The half-sent bodies stored nothing.
    await wait_for(lambda: len(set(receiver.delivered_ids())) == 11, 10, "11 events delivered")


async def test_thousands_of_idle_connections_do_not_stop_service(make_relay, receiver):
    relay = await make_relay(
        base_toml()
        + f'[destinations.good]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["good"]\n'
    )
    port = int(relay.url.rsplit(":", 1)[1])
    idle = []
    try:
        for _ in range(2000):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        await carries_on(relay, receiver, "amid-idle")
        async with relay.http.get(f"{relay.url}/readyz") as r:
            assert r.status == 200
    finally:
        for _, writer in idle:
            writer.close()
    await carries_on(relay, receiver, "after-idle")


HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()  # until the test says so
db.execute("COMMIT")
"""


async def test_more_events_waiting_for_the_writer_than_max_queued_is_503(
    make_relay, receiver, tmp_path
):
    """The writer is stuck behind another process's lock; events queue up behind it. Past
    `ingest.max_queued` (200,000 by default; 10 here, the same check) ingest answers 503 with
    Retry-After at once, instead of queueing more in memory; the queued ones commit later."""
    relay = await make_relay(
        base_toml()
        + "[ingest]\nmax_queued = 10\n"
        + f'[destinations.good]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["good"]\n'
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "relay.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 10) == b"locked\n"
        # While the lock holds, the writer is stuck on one group; every post after that waits
        # in the queue until more than 10 events wait, and then the next one is shed.
        queued: list[tuple[list[dict], asyncio.Task]] = []
        shed = None
        for n in range(6):
            batch = [event(f"b{n}-{i}") for i in range(20)]
            task = asyncio.create_task(relay.post_events(batch))
            await asyncio.wait({task}, timeout=0.3)  # answered at once, or waiting
            if task.done():
                shed = task.result()
                break
            queued.append((batch, task))
        assert shed is not None and len(queued) >= 2, "nothing was shed"
        assert shed.status == 503
        assert shed.headers["Retry-After"] == "1"
        assert (await shed.json())["error"] == "overloaded: try again shortly"
        assert relay.store.queued_events > 10
    finally:
        holder.stdin.write(b"go\n")
        holder.stdin.close()
        await asyncio.to_thread(holder.wait, 30)
        holder.stdout.close()
    assert [(await task).status for _, task in queued] == [202] * len(queued)
    await carries_on(relay, receiver, "after-queue")
    with sqlite3.connect(tmp_path / "relay.db") as db:
        stored = {i for (i,) in db.execute("SELECT id FROM events WHERE id LIKE 'b%'")}
    assert stored == {e["id"] for batch, _ in queued for e in batch}  # the shed one is not
