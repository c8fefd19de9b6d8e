"""Slow and idle clients, and too many of them, against the real app on a real socket.

The timeouts are configured small (a second or two) so the tests are quick; what is
checked is the behaviour a user relies on: a slow-loris socket is closed (with a 408 when
it had started a request), an idle keep-alive connection is closed, a well-behaved client
is served meanwhile, and past the connection cap new clients get a clear 503 while
`/healthz` still answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from relay.web.guard import LIMITS as LIMITS_KEY

from ..helpers import base_toml, wait_for

LIMITS = 'head_timeout = "1s"\nbody_timeout = "1s"\nidle_timeout = "2s"\nmax_connections = {cap}\n'


def toml(cap: int = 1000, head: str = "1s") -> str:
    server = LIMITS.format(cap=cap).replace('head_timeout = "1s"', f'head_timeout = "{head}"')
    return base_toml().replace("[storage]", server + "[storage]")


async def connect(relay) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", relay.daemon.port)


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sent before it closed the socket; fail if it stays open."""
    async with asyncio.timeout(within):
        return await reader.read()  # b"" or the answer, then EOF


async def trickle(writer: asyncio.StreamWriter, lines: list[bytes], every: float) -> None:
    with contextlib.suppress(ConnectionError):
        for line in lines:
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(every)


async def get(relay, path: str) -> tuple[int, dict]:
    async with relay.http.get(f"{relay.url}{path}") as resp:
        return resp.status, dict(resp.headers)


async def test_slow_loris_sockets_are_closed_and_others_are_served(make_relay):
    relay = await make_relay(toml())
    head = [b"GET /v1/admin/destinations HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n"]
    head += [b"X-Slow-%d: 1\r\n" % i for i in range(40)]
    silent = [await connect(relay) for _ in range(10)]
    trickling = [await connect(relay) for _ in range(10)]
    slow_body = [await connect(relay) for _ in range(10)]
    started = time.monotonic()
    tasks = [asyncio.create_task(trickle(w, head, 0.2)) for _, w in trickling]
    body_head = (
        b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    tasks += [asyncio.create_task(trickle(w, [body_head] + [b" "] * 50, 0.2)) for _, w in slow_body]
    # a well-behaved client is served while all thirty hang around
    status, _ = await get(relay, "/v1/admin/destinations")
    assert status == 200
    for reader, _ in silent:
        assert await closed_by_server(reader, 10) == b""
    for reader, _ in trickling + slow_body:
        answer = await closed_by_server(reader, 10)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer[:100]
    assert time.monotonic() - started < 10  # each within the bound above, not eventually
    for task in tasks:
        task.cancel()
    for _, writer in silent + trickling + slow_body:
        writer.close()
    assert (await relay.store.stats()).events == 0  # no half-sent event got in
    status, _ = await get(relay, "/healthz")
    assert status == 200


async def test_a_slow_but_steady_request_within_the_timeout_is_served(make_relay):
    relay = await make_relay(toml(head="3s"))
    reader, writer = await connect(relay)
    body = b'{"event_type":"bounce","email":"a@example.com","id":"slow-1"}'
    request = (
        b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    await trickle(writer, [request[:20], request[20:], body], 0.3)
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 202"), status_line
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(make_relay):
    relay = await make_relay(toml())
    reader, writer = await connect(relay)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    rest = await closed_by_server(reader, 10)
    assert rest.endswith(b'{"status":"ok"}')  # the rest of the answer, then the close
    assert time.monotonic() - started >= 1.5  # kept for idle_timeout (2s), not cut early
    writer.close()


async def test_past_the_cap_new_clients_get_503_but_healthz_answers(make_relay, caplog):
    relay = await make_relay(toml(cap=5, head="30s"))
    held = [await connect(relay) for _ in range(5)]
    for _, writer in held:
        writer.write(b"GET / HTTP/1.1\r\n")  # started, never finished: each holds a slot
        await writer.drain()
    await wait_for(lambda: relay.daemon._runner.app[LIMITS_KEY].open >= 5, 5, "5 open")
    caplog.set_level(logging.WARNING, logger="relay.limits")
    status, headers = await get(relay, "/v1/admin/destinations")
    assert status == 503 and headers.get("Connection") == "close"
    status, _ = await get(relay, "/healthz")
    assert status == 200
    assert any("connection cap reached" in r.getMessage() for r in caplog.records)
    for _, writer in held:
        writer.close()
    await wait_for(lambda: relay.daemon._runner.app[LIMITS_KEY].open <= 1, 5, "slots freed")
    status, _ = await get(relay, "/v1/admin/destinations")
    assert status == 200


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("head_timeout", '"0s"', "must be more than 0"),
        ("max_connections", "0", "must be between 1 and"),
        ("allowed_hosts", '["relay.example:8080"]', "not a host name without a port"),
    ],
)
async def test_limit_keys_are_checked(tmp_path, key, value, message):
    from relay.config import ConfigError, load

    path = tmp_path / "relay.toml"
    path.write_text(base_toml().replace("[storage]", f"{key} = {value}\n[storage]"))
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert f"server.{key}" in str(caught.value) and message in str(caught.value)


async def test_past_the_cap_the_oldest_silent_sockets_make_room(make_relay, caplog):
    relay = await make_relay(toml(cap=5, head="30s"))
    silent = [await connect(relay) for _ in range(5)]
    limits = relay.daemon._runner.app[LIMITS_KEY]
    await wait_for(lambda: limits.open >= 5, 5, "5 open")
    caplog.set_level(logging.WARNING, logger="relay.limits")
    status, _ = await get(relay, "/v1/admin/destinations")
    assert status == 200  # served: a silent socket gave up its slot
    assert await closed_by_server(silent[0][0], 5) == b""  # the oldest one
    assert any("sent nothing" in r.getMessage() for r in caplog.records)
    for _, writer in silent:
        writer.close()
