"""What a webhook receiver gets (http keys, delivery semantics): body shapes, signatures, custom
headers, delay, pause/resume, and one failing destination not slowing another."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from urllib.parse import parse_qs

import orjson

from ..helpers import Receiver, base_toml, wait_for

FAST_RETRY = 'retry = { initial = "50ms", max = "200ms", multiplier = 2.0, max_attempts = 4 }\n'


def destination(name: str, url: str, extra: str = "", timeout: str = "300ms") -> str:
    return f'[destinations.{name}]\ntype = "http"\nurl = "{url}"\ntimeout = "{timeout}"\n' + extra


def config(url: str, extra: str = "", name: str = "crm") -> str:
    return (
        base_toml()
        + destination(name, url, extra)
        + f'[[routes]]\nevents = ["*"]\ndestinations = ["{name}"]\n'
    )


def bounce(event_id: str = "e1", **fields) -> dict:
    return {"event_type": "bounce", "email": "a@example.com", "id": event_id, **fields}


def flat_fields(qs: str) -> dict[str, str]:
    parsed = parse_qs(qs, keep_blank_values=True, strict_parsing=True)
    assert all(len(v) == 1 for v in parsed.values()), parsed
    return {k: v[0] for k, v in parsed.items()}


ATTEMPT = {
    "event_type": "delivery_attempt",
    "id": "att-1",
    "email": "bob@example.com",
    "status": "deferral",
    "message": "451 try later & again",
    "is_retry": True,
    "headers": {"X-Campaign": "spring sale", "X-Mailer-Id": "42"},
}


async def test_json_body_is_the_bare_event_signed_with_standard_webhooks(make_relay, receiver):
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    relay = await make_relay(config(receiver.url, f'signing_secret = "{secret}"\n'))
    sent = bounce("evt-sig-1", sendid="s9", mail_class="transactional")
    assert (await relay.post_events(sent)).status == 202

    await wait_for(lambda: receiver.hits, 5, "the webhook")
    hit = receiver.hits[0]
    assert hit.method == "POST"
    assert hit.headers["Content-Type"].startswith("application/json")
    body = orjson.loads(hit.body)
    # The bare event (no envelope), id included, every field passed on as given.
    assert body["id"] == "evt-sig-1"
    assert {k: body[k] for k in sent} == sent
    assert isinstance(body["event_time"], int | float)

    # Standard Webhooks, checked independently of relay's code.
    msg_id = hit.headers["webhook-id"]
    stamp = hit.headers["webhook-timestamp"]
    assert msg_id == "evt-sig-1"
    assert abs(int(stamp) - time.time()) < 60
    signed = f"{msg_id}.{stamp}.".encode() + hit.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    signatures = hit.headers["webhook-signature"].split(" ")
    assert f"v1,{expected}" in signatures
    # A receiver with a different key must reject it.
    other = base64.b64encode(hmac.new(b"x" * 32, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{other}" not in signatures


async def test_unsigned_requests_still_carry_the_event_id(make_relay, receiver):
    relay = await make_relay(config(receiver.url))
    await relay.post_events(bounce())
    await wait_for(lambda: receiver.hits, 5, "the webhook")
    headers = {k.lower(): v for k, v in receiver.hits[0].headers.items()}
    assert headers["webhook-id"] == receiver.delivered_ids()[0]  # the receiver's dedupe key
    assert not headers.keys() & {"webhook-timestamp", "webhook-signature"}


async def test_custom_headers_arrive_with_every_request(make_relay, receiver):
    receiver.script = [500, 200]
    relay = await make_relay(
        config(receiver.url, 'headers = { "X-Api-Key" = "k", "X-Tenant" = "acme" }\n' + FAST_RETRY)
    )
    await relay.post_events(bounce())
    await wait_for(lambda: len(receiver.hits) == 2, 5, "the retried webhook")
    for hit in receiver.hits:
        assert hit.headers["X-Api-Key"] == "k"
        assert hit.headers["X-Tenant"] == "acme"


async def test_batch_size_sends_json_arrays_of_up_to_that_many_events(make_relay, receiver):
    relay = await make_relay(config(receiver.url, "batch_size = 10\n"))
    ids = [f"b{i:02d}" for i in range(25)]
    resp = await relay.post_events([bounce(i) for i in ids])
    assert resp.status == 202

    await wait_for(lambda: len(receiver.delivered_ids()) >= 25, 5, "all 25 events")
    bodies = [orjson.loads(h.body) for h in receiver.hits]
    assert all(isinstance(b, list) and 1 <= len(b) <= 10 for b in bodies), bodies
    assert max(len(b) for b in bodies) == 10  # the 25 were committed together: full batches
    assert sorted(receiver.delivered_ids()) == ids  # each exactly once
    assert all(
        e["event_type"] == "bounce" and e["email"] == "a@example.com" for b in bodies for e in b
    )
    await wait_for(
        lambda: sum(x["outcome"] == "delivered" for x in relay.dispatch_lines()) == 25,
        3,
        "a delivered line per event",
    )
    s = (await relay.store.stats()).destinations["crm"]
    assert (s.delivered, s.pending, s.leased) == (25, 0, 0)


async def test_form_format_sends_urlencoded_fields_with_flat_headers(make_relay, receiver):
    relay = await make_relay(config(receiver.url, 'format = "form"\n'))
    await relay.post_events(ATTEMPT)

    await wait_for(lambda: receiver.hits, 5, "the webhook")
    hit = receiver.hits[0]
    assert hit.method == "POST"
    assert hit.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    fields = flat_fields(hit.body.decode())
    assert fields["id"] == "att-1"
    assert fields["event_type"] == "delivery_attempt"
    assert fields["email"] == "bob@example.com"
    assert fields["status"] == "deferral"
    assert fields["message"] == "451 try later & again"
    assert fields["headers.X-Campaign"] == "spring sale"
    assert fields["headers.X-Mailer-Id"] == "42"
    assert "headers" not in fields


async def test_get_sends_the_fields_in_the_query_string(make_relay, receiver):
    relay = await make_relay(
        config(receiver.url + "?source=relay", 'method = "GET"\nformat = "form"\n')
    )
    await relay.post_events(ATTEMPT)

    await wait_for(lambda: receiver.hits, 5, "the webhook")
    hit = receiver.hits[0]
    assert hit.method == "GET"
    assert hit.body == b""
    fields = flat_fields(hit.query)
    assert fields["source"] == "relay"  # the URL's own query is kept
    assert fields["id"] == "att-1"
    assert fields["email"] == "bob@example.com"
    assert fields["message"] == "451 try later & again"
    assert fields["headers.X-Campaign"] == "spring sale"


async def test_delay_holds_the_first_attempt(make_relay, receiver):
    relay = await make_relay(config(receiver.url, 'delay = "1s"\n'))
    # Ingest late in a wall-clock second, where rounding event_time down would show most.
    while time.time() % 1 < 0.8:
        await asyncio.sleep(0.02)
    before = time.time()
    await relay.post_events(bounce("late"))
    # An event that happened 10 s ago is already past its delay: sent at once.
    await relay.post_events(bounce("old", event_time=int(before) - 10))

    await wait_for(lambda: len(receiver.hits) == 2, 10, "both events")
    # "late" was ingested first: had "old" been held from its receipt too, "late" came first.
    assert receiver.delivered_ids() == ["old", "late"]
    held = receiver.hits[1].at - before
    assert held >= 1.0, f"sent {held:.3f}s after ingest, delay is 1s"


async def test_pause_holds_deliveries_and_resume_sends_them(make_relay, receiver):
    relay = await make_relay(config(receiver.url))
    await relay.store.pause("crm", None)
    # The running daemon picks the change up from the store (as it would from the CLI).
    await wait_for(lambda: relay.runtime.is_paused("crm"), 5, "the pause to be noticed")

    resp = await relay.post_events([bounce(f"p{i}") for i in range(5)])
    assert resp.status == 202  # still taking events while paused
    # The pause is in force (noticed above): a send would come within milliseconds, so
    # half a second is the window that proves nothing goes out.
    await asyncio.sleep(0.5)
    assert receiver.hits == []
    s = (await relay.store.stats()).destinations["crm"]
    assert s.pending == 5

    await relay.store.resume("crm")
    await wait_for(lambda: len(receiver.delivered_ids()) == 5, 3, "the held events")
    assert sorted(receiver.delivered_ids()) == [f"p{i}" for i in range(5)]


async def test_a_hanging_destination_does_not_slow_a_healthy_one(make_relay, receiver):
    stuck = Receiver(default="hang", shutdown_s=0.5)
    await stuck.start()
    try:
        relay = await make_relay(
            base_toml()
            + destination("healthy", receiver.url)
            + destination("stuck", stuck.url, "concurrency = 2\n" + FAST_RETRY, "60s")
            + '[[routes]]\nevents = ["*"]\ndestinations = ["healthy", "stuck"]\n'
        )
        for chunk in range(4):
            resp = await relay.post_events([bounce(f"c{chunk}-{i}") for i in range(50)])
            assert resp.status == 202

        # The stuck one's requests hang for the whole test: if they held the healthy one up,
        # its 200 deliveries would never all arrive. (How fast they do is bench/'s business.)
        await wait_for(lambda: len(receiver.hits) >= 200, 20, "200 events at the healthy one")
        assert len(set(receiver.delivered_ids())) == 200
        # The stuck one is held to its own concurrency: 2 requests hanging, no more.
        await wait_for(lambda: len(stuck.hits) == 2, 5, "the stuck one's two requests")
        assert len(stuck.hits) == 2

        async def healthy_done() -> bool:
            return (await relay.store.stats()).destinations["healthy"].delivered == 200

        await wait_for(healthy_done, 3, "the healthy deliveries to be recorded")
        assert (await relay.store.stats()).destinations["stuck"].delivered == 0
    finally:
        await stuck.stop()
