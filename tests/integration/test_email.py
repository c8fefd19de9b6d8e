"""The email destination against a real aiosmtpd server on 127.0.0.1: digests,
size limits, per-event mode, STARTTLS, AUTH, retries on 4xx and lost connections, dead after
repeated 5xx, and `relay flush`."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from relay.models import NewEvent
from relay.store.sqlite import SqliteStore

from ..helpers import base_toml, wait_for
from ..mailftp import (
    Mailbox,
    attached_events,
    certificate,
    flush_cli,
    smtp_server,
    summary_text,
)

FAST_RETRY = 'retry = { initial = "50ms", max = "100ms", multiplier = 2.0, max_attempts = 3 }\n'


def email_toml(port: int, extra: str = "", name: str = "mail") -> str:
    return (
        base_toml()
        + f'[destinations.{name}]\ntype = "email"\nhost = "127.0.0.1"\nport = {port}\n'
        + 'from = "relay@example.com"\nto = ["ops@example.com", "crm@example.com"]\n'
        + 'timeout = "5s"\n'
        + extra
        + f'[[routes]]\nevents = ["*"]\ndestinations = ["{name}"]\n'
    )


def events(n: int, prefix: str = "ev") -> list[dict]:
    kinds = ("bounce", "scomp", "engine_unsub")
    return [
        {"event_type": kinds[i % 3], "email": f"u{i}@example.com", "id": f"{prefix}-{i}"}
        for i in range(n)
    ]


async def delivered(relay, n: int) -> bool:
    stats = (await relay.store.stats()).destinations["mail"]
    return (stats.delivered, stats.pending, stats.leased) == (n, 0, 0)


async def test_digest_is_one_message_whose_attachment_parses_back_into_the_events(make_relay):
    box = Mailbox()
    with smtp_server(box) as port:
        relay = await make_relay(email_toml(port, 'digest = "1h"\n'))
        sent = events(5)
        assert (await relay.post_events(sent)).status == 202
        await asyncio.sleep(0.3)  # a window for a wrong early send (the period is 1 h)
        assert box.attempts == 0  # a digest waits for the end of its period

        code, out, err = await flush_cli(relay.config_path, "mail")
        assert code == 0, err
        assert "flush requested for mail" in out
        await wait_for(lambda: box.messages, 5, "the digest")
        # Once all five are acked nothing is left to send: a second message cannot follow.
        await wait_for(lambda: delivered(relay, 5), 5, "the five events acked")

    assert len(box.messages) == 1
    msg = box.messages[0]
    assert msg["From"] == "relay@example.com"
    assert msg["To"] == "ops@example.com, crm@example.com"
    assert msg["Subject"] == "[relay] 5 mixed events for mail"
    got = attached_events(msg)
    assert [e["id"] for e in got] == [e["id"] for e in sent]
    for original, parsed in zip(sent, got, strict=True):
        assert {k: parsed[k] for k in original} == original
    text = summary_text(msg)
    assert '5 event(s) for destination "mail": 2 bounce, 1 engine_unsub, 2 scomp.' in text
    assert all(f"u{i}@example.com" in text for i in range(5))

    def lines() -> list[dict]:
        return [line for line in relay.dispatch_lines() if line["destination"] == "mail"]

    await wait_for(lambda: len(lines()) >= 5, 5, "five dispatch lines (flushed each 0.1 s)")
    lines = lines()
    assert sorted(line["event_id"] for line in lines) == sorted(e["id"] for e in sent)
    assert {(line["outcome"], line["status"]) for line in lines} == {("delivered", 250)}


async def test_max_events_per_message_splits_a_digest_without_losing_or_repeating(make_relay):
    box = Mailbox()
    with smtp_server(box) as port:
        relay = await make_relay(
            email_toml(port, 'digest = "1h"\nmax_events_per_message = 3\nsubject = "{count}"\n')
        )
        sent = events(7)
        assert (await relay.post_events(sent)).status == 202
        relay.runtime.dispatchers["mail"].flush()
        await wait_for(lambda: len(box.messages) == 3, 5, "three messages")

    assert sorted(len(attached_events(m)) for m in box.messages) == [1, 3, 3]
    assert sorted(m["Subject"] for m in box.messages) == ["1", "3", "3"]
    ids = [e["id"] for m in box.messages for e in attached_events(m)]
    assert sorted(ids) == sorted(e["id"] for e in sent)


async def test_digest_zero_sends_one_message_per_event(make_relay):
    box = Mailbox()
    with smtp_server(box) as port:
        relay = await make_relay(email_toml(port, 'digest = "0s"\n'))
        sent = events(3)
        assert (await relay.post_events(sent)).status == 202
        await wait_for(lambda: len(box.messages) == 3, 5, "three messages")

    assert sorted(attached_events(m)[0]["id"] for m in box.messages) == ["ev-0", "ev-1", "ev-2"]
    assert sorted(m["Subject"] for m in box.messages) == [
        "[relay] 1 bounce events for mail",
        "[relay] 1 engine_unsub events for mail",
        "[relay] 1 scomp events for mail",
    ]
    code, _, err = await flush_cli(relay.config_path, "mail")
    assert code == 1 and "not an email digest" in err and err.count("\n") == 1


async def test_starttls_with_a_certificate_made_here_and_auth(make_relay, tmp_path):
    server_tls, ca_file = certificate(tmp_path)
    box = Mailbox()
    with smtp_server(box, tls=server_tls, auth=True) as port:
        relay = await make_relay(
            email_toml(
                port,
                f'digest = "0s"\nstarttls = true\nca_file = "{ca_file}"\n'
                'username = "relay"\npassword = "s3cret"\n',
            )
        )
        assert (await relay.post_events(events(1))).status == 202
        await wait_for(lambda: box.messages, 5, "the message over STARTTLS")
    assert box.logins == ["relay"]


async def test_starttls_refuses_a_certificate_it_cannot_verify(make_relay, tmp_path):
    server_tls, _ = certificate(tmp_path)
    box = Mailbox()
    with smtp_server(box, tls=server_tls) as port:
        relay = await make_relay(email_toml(port, 'digest = "0s"\nstarttls = true\n' + FAST_RETRY))
        assert (await relay.post_events(events(1))).status == 202
        await wait_for(
            lambda: any(line["outcome"] == "retry" for line in relay.dispatch_lines()), 5, "a retry"
        )
    assert box.messages == []
    assert "certificate" in relay.dispatch_lines()[0]["error"].lower()


@pytest.mark.parametrize("failure", [451, 421, "drop"])
async def test_4xx_or_a_lost_connection_retries_then_delivers(make_relay, failure):
    box = Mailbox(script=[failure])
    with smtp_server(box) as port:
        relay = await make_relay(email_toml(port, 'digest = "1h"\n' + FAST_RETRY))
        assert (await relay.post_events(events(2))).status == 202
        relay.runtime.dispatchers["mail"].flush()
        await wait_for(lambda: box.messages, 8, "the retried digest")
        await wait_for(lambda: len(relay.dispatch_lines()) == 4, 2, "four dispatch lines")

    lines = relay.dispatch_lines()
    first, second = lines[:2], lines[2:]
    assert [line["outcome"] for line in first] == ["retry", "retry"]
    assert [line["outcome"] for line in second] == ["delivered", "delivered"]
    if failure == "drop":
        assert first[0]["status"] is None and first[0]["error"] == "connection lost"
    else:
        assert first[0]["status"] == failure and str(failure) in first[0]["error"]
    assert len(attached_events(box.messages[0])) == 2


async def _digest_of_two_refused_with_550(make_relay, extra: str = ""):
    """Two events in one digest to a server answering 550, until both are dead:
    (the relay, its stats for "mail", how many messages the server was offered)."""
    box = Mailbox(default=550)
    with smtp_server(box) as port:
        relay = await make_relay(email_toml(port, 'digest = "1h"\n' + extra + FAST_RETRY))
        assert (await relay.post_events(events(2))).status == 202
        relay.runtime.dispatchers["mail"].flush()
        await wait_for(
            lambda: sum(line["outcome"] == "dead" for line in relay.dispatch_lines()) == 2,
            10,
            "both events dead",
        )
        await asyncio.sleep(0.3)  # FAST_RETRY would have tried again by now
        stats = (await relay.store.stats()).destinations["mail"]
    return relay, stats, box.attempts


async def test_a_5xx_is_permanent_dead_at_once_with_the_reply_as_reason(make_relay):
    relay, stats, attempts = await _digest_of_two_refused_with_550(make_relay)
    assert attempts == 1
    assert stats.dead == 2 and stats.pending == 0
    lines = relay.dispatch_lines()
    assert [(line["attempt"], line["status"]) for line in lines] == [(1, 550), (1, 550)]
    assert all(line["error"].startswith("SMTP 550") for line in lines)


async def test_with_reject_5xx_off_a_5xx_retries_by_the_policy_and_goes_dead(make_relay):
    relay, stats, attempts = await _digest_of_two_refused_with_550(
        make_relay, "reject_5xx = false\n"
    )
    assert attempts == 3  # max_attempts
    assert stats.dead == 2 and stats.pending == 0
    lines = relay.dispatch_lines()
    assert [line["attempt"] for line in lines] == [1, 1, 2, 2, 3, 3]
    assert all(line["status"] == 550 for line in lines)
    assert orjson.dumps(lines[-1]["error"]).decode().startswith('"SMTP 550')


async def test_a_digest_goes_out_when_its_period_ends(make_relay):
    box = Mailbox()
    with smtp_server(box) as port:
        relay = await make_relay(email_toml(port, 'digest = "1s"\n'))
        assert (await relay.post_events(events(3))).status == 202
        await wait_for(lambda: box.messages, 4, "the digest at the end of the period")
        await wait_for(lambda: delivered(relay, 3), 5, "the three events acked")
    assert sum(len(attached_events(m)) for m in box.messages) == 3


async def test_events_due_in_an_earlier_period_go_out_right_after_start(make_relay, tmp_path):
    """relay was down when their period ended: they must not wait for the next one."""
    store = SqliteStore(tmp_path / "relay.db")
    await store.open()
    old = time.time() - 7200
    body = orjson.dumps({"event_type": "bounce", "email": "a@example.com", "id": "old-1"})
    await store.append([NewEvent("old-1", "bounce", old, body, (("mail", old),))])
    await store.close()

    box = Mailbox()
    with smtp_server(box) as port:
        relay = await make_relay(email_toml(port, 'digest = "1h"\n'))
        await wait_for(lambda: box.messages, 5, "the overdue digest")
        # the round is counted once the send returns, a moment after the server has the message
        await wait_for(lambda: relay.runtime.dispatchers["mail"].rounds >= 1, 5, "the round")
    assert [e["id"] for e in attached_events(box.messages[0])] == ["old-1"]


async def test_flush_requests_are_taken_once(tmp_path):
    store = SqliteStore(tmp_path / "flush.db")
    await store.open()
    try:
        assert await store.take_flushes() == []
        await store.request_flush("a")
        await store.request_flush("a")
        await store.request_flush("b")
        assert sorted(await store.take_flushes()) == ["a", "b"]
        assert await store.take_flushes() == []
    finally:
        await store.close()
