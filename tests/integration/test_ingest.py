"""POST /v1/events over real HTTP against the real app: the validation matrix."""

from __future__ import annotations

import json
import random

import orjson
import pytest

from ..helpers import base_toml, wait_for

TOKEN = "ingest-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PULL = '[destinations.inbox]\ntype = "pull"\n[[routes]]\nevents = ["*"]\ndestinations = ["inbox"]\n'


def ingest(tokens: bool = True, max_body_bytes: int = 2048, max_events: int = 5) -> str:
    lines = ["[ingest]"]
    if tokens:
        lines.append(f'tokens = ["{TOKEN}"]')
    lines += [f"max_body_bytes = {max_body_bytes}", f"max_events = {max_events}"]
    return "\n".join(lines) + "\n"


def bounce(n: int | str, **extra) -> dict:
    return {"event_type": "bounce", "email": f"user{n}@example.com", **extra}


@pytest.fixture
async def relay(make_relay):
    return await make_relay(base_toml() + ingest() + PULL)


async def post_raw(relay, body: bytes, content_type: str | None, headers=None):
    hdrs = {**AUTH, **(headers or {})}
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    async with relay.http.post(f"{relay.url}/v1/events", data=body, headers=hdrs) as resp:
        return resp.status, resp.content_type, await resp.read(), resp.headers


async def events_stored(relay) -> int:
    return (await relay.store.stats()).events


async def lease(relay, destination: str = "inbox", max_: int = 100) -> dict:
    async with relay.http.get(f"{relay.url}/v1/pull/{destination}?max={max_}") as resp:
        assert resp.status == 200
        return await resp.json()


# --- the three body shapes ---------------------------------------------------------------


async def test_one_object_is_accepted_and_stored(relay):
    resp = await relay.post_events(bounce(1, id="one"), token=TOKEN)
    assert resp.status == 202
    assert resp.content_type == "application/json"
    assert await resp.json() == {"accepted": 1, "duplicates": 0, "ids": ["one"]}
    assert await events_stored(relay) == 1
    leased = await lease(relay)
    assert [e["id"] for e in leased["events"]] == ["one"]
    assert leased["events"][0]["email"] == "user1@example.com"


async def test_an_array_is_accepted_with_ids_in_order(relay):
    resp = await relay.post_events([bounce(1, id="a"), bounce(2), bounce(3, id="c")], token=TOKEN)
    assert resp.status == 202
    body = await resp.json()
    assert body["accepted"] == 3
    assert body["ids"][0] == "a" and body["ids"][2] == "c"
    assert isinstance(body["ids"][1], str) and len(body["ids"][1]) == 28  # relay made one
    assert await events_stored(relay) == 3
    leased = await lease(relay)
    assert sorted(e["id"] for e in leased["events"]) == sorted(body["ids"])


async def test_ndjson_is_accepted(relay):
    lines = [orjson.dumps(bounce(n, id=f"nd{n}")) for n in range(3)]
    body = b"\n".join(lines[:2]) + b"\n\n" + lines[2] + b"\n"  # blank lines are skipped
    status, ctype, raw, _ = await post_raw(relay, body, "application/x-ndjson")
    assert (status, ctype) == (202, "application/json")
    assert orjson.loads(raw) == {"accepted": 3, "duplicates": 0, "ids": ["nd0", "nd1", "nd2"]}
    assert await events_stored(relay) == 3


async def test_json_with_a_charset_parameter_is_accepted(relay):
    status, _, raw, _ = await post_raw(
        relay, orjson.dumps(bounce(1)), "application/json; charset=utf-8"
    )
    assert status == 202, raw


async def test_stored_event_is_normalised(relay):
    resp = await relay.post_events(
        {"event_type": "BOUNCE", "email": "a@example.com", "id": "n1", "headers": {"X-A": "b"}},
        token=TOKEN,
    )
    assert resp.status == 202
    (event,) = (await lease(relay))["events"]
    assert event["event_type"] == "bounce"
    assert isinstance(event["event_time"], int)  # defaulted to the time received
    assert "headers" not in event  # only delivery events carry headers on


# --- malformed and refused requests ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"event_type": "bounce",', "application/json"),
        (b"not json at all", "application/json"),
        (b'{"event_type": "bounce", "email": "a@example.com"}\n{oops', "application/x-ndjson"),
    ],
)
async def test_malformed_json_is_400(relay, body, content_type):
    status, ctype, raw, _ = await post_raw(relay, body, content_type)
    assert (status, ctype) == (400, "application/json")
    assert "malformed JSON" in orjson.loads(raw)["error"]
    assert await events_stored(relay) == 0


async def test_ndjson_error_names_the_line(relay):
    body = orjson.dumps(bounce(0)) + b"\n" + orjson.dumps(bounce(1)) + b"\n{broken\n"
    status, _, raw, _ = await post_raw(relay, body, "application/x-ndjson")
    assert status == 400
    assert "line 3" in orjson.loads(raw)["error"]
    assert await events_stored(relay) == 0


@pytest.mark.parametrize("body", [b"[]", b"", b"\n\n"])
async def test_an_empty_batch_is_400(relay, body):
    ctype = "application/x-ndjson" if body.strip() == b"" else "application/json"
    status, _, raw, _ = await post_raw(relay, body, ctype)
    assert status == 400
    assert "error" in orjson.loads(raw)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
async def test_wrong_content_type_is_415(relay, content_type):
    status, ctype, raw, _ = await post_raw(relay, orjson.dumps(bounce(1)), content_type)
    assert (status, ctype) == (415, "application/json")
    assert "Content-Type" in orjson.loads(raw)["error"]
    assert await events_stored(relay) == 0


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"],
)
async def test_missing_or_wrong_token_is_401(relay, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    async with relay.http.post(f"{relay.url}/v1/events", json=bounce(1), headers=headers) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert "token" in (await resp.json())["error"]
    assert await events_stored(relay) == 0


async def test_the_token_is_checked_before_the_body(relay):
    async with relay.http.post(
        f"{relay.url}/v1/events", data=b"{garbage", headers={"Content-Type": "text/plain"}
    ) as resp:
        assert resp.status == 401


async def test_bearer_scheme_is_case_insensitive(relay):
    async with relay.http.post(
        f"{relay.url}/v1/events", json=bounce(1), headers={"Authorization": f"bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 202


async def test_any_configured_token_is_accepted(make_relay):
    relay = await make_relay(base_toml() + '[ingest]\ntokens = ["old", "new"]\n' + PULL)
    assert (await relay.post_events(bounce(1), token="old")).status == 202
    assert (await relay.post_events(bounce(2), token="new")).status == 202
    assert (await relay.post_events(bounce(3), token="neither")).status == 401


async def test_no_tokens_on_loopback_means_open(make_relay):
    relay = await make_relay(base_toml() + PULL)
    assert (await relay.post_events(bounce(1))).status == 202


async def test_a_body_over_max_body_bytes_is_413(relay):
    big = [bounce(n, message="x" * 500) for n in range(5)]
    body = orjson.dumps(big)
    assert len(body) > 2048
    status, ctype, raw, _ = await post_raw(relay, body, "application/json")
    assert (status, ctype) == (413, "application/json")
    assert "error" in orjson.loads(raw)
    assert await events_stored(relay) == 0
    # A body just under the limit is fine.
    small = orjson.dumps([bounce(n) for n in range(5)])
    assert len(small) < 2048
    status, _, _, _ = await post_raw(relay, small, "application/json")
    assert status == 202


async def test_more_than_max_events_is_413(relay):
    resp = await relay.post_events([bounce(n) for n in range(6)], token=TOKEN)
    assert resp.status == 413
    assert "5" in (await resp.json())["error"]
    assert await events_stored(relay) == 0
    resp = await relay.post_events([bounce(n) for n in range(5)], token=TOKEN)
    assert resp.status == 202


# --- all or nothing ----------------------------------------------------------------------


async def test_a_batch_with_bad_items_stores_nothing_and_lists_every_bad_index(relay):
    batch = [
        bounce(0),
        {"event_type": "bounce"},  # no email
        bounce(2),
        {"event_type": "engine_click", "email": "c@example.com", "event_time": True},
        bounce(4),
    ]
    resp = await relay.post_events(batch, token=TOKEN)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid events"
    errors = {(e["index"], e["field"]) for e in body["errors"]}
    assert errors == {(1, "email"), (3, "click_url"), (3, "event_time")}
    for e in body["errors"]:
        assert set(e) == {"index", "field", "message"} and e["message"]
    assert await events_stored(relay) == 0
    assert (await lease(relay))["events"] == []


async def test_a_single_bad_object_is_index_0(relay):
    resp = await relay.post_events({"event_type": "optin", "email": "a@example.com"}, token=TOKEN)
    assert resp.status == 400
    assert (await resp.json())["errors"] == [{"index": 0, "field": "listid", "message": "required"}]


async def test_an_unknown_event_type_is_named(relay):
    resp = await relay.post_events([bounce(0), {"event_type": "nope"}], token=TOKEN)
    assert resp.status == 400
    errors = (await resp.json())["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, "event_type")]


async def test_bad_ndjson_items_are_indexed_by_line_item(relay):
    body = b"\n".join(
        [
            orjson.dumps(bounce(0)),
            orjson.dumps({"event_type": "sms_failed"}),
            orjson.dumps(bounce(2)),
        ]
    )
    status, _, raw, _ = await post_raw(relay, body, "application/x-ndjson")
    assert status == 400
    assert [(e["index"], e["field"]) for e in orjson.loads(raw)["errors"]] == [(1, "phone")]
    assert await events_stored(relay) == 0


# --- idempotency -------------------------------------------------------------------------


async def test_reposting_an_id_stores_it_once_and_a_puller_gets_it_once(relay):
    first = await relay.post_events(bounce(1, id="dup-1"), token=TOKEN)
    again = await relay.post_events(bounce(1, id="dup-1"), token=TOKEN)
    assert first.status == again.status == 202
    assert await again.json() == {"accepted": 0, "duplicates": 1, "ids": ["dup-1"]}
    both = await relay.post_events([bounce(1, id="dup-1"), bounce(2, id="dup-2")], token=TOKEN)
    assert both.status == 202
    assert await both.json() == {"accepted": 1, "duplicates": 1, "ids": ["dup-1", "dup-2"]}
    assert relay.runtime.summary()["ingested"] == 2
    assert relay.runtime.summary()["duplicates"] == 2
    assert await events_stored(relay) == 2
    leased = await lease(relay)
    assert sorted(e["id"] for e in leased["events"]) == ["dup-1", "dup-2"]


async def test_a_repeated_id_inside_one_batch_is_stored_once(relay):
    resp = await relay.post_events([bounce(1, id="same"), bounce(2, id="same")], token=TOKEN)
    assert resp.status == 202
    # `accepted` counts what was stored, not what was posted.
    assert await resp.json() == {"accepted": 1, "duplicates": 1, "ids": ["same", "same"]}
    assert await events_stored(relay) == 1
    assert [e["id"] for e in (await lease(relay))["events"]] == ["same"]


async def test_reposting_an_id_delivers_one_webhook(make_relay, receiver):
    relay = await make_relay(
        base_toml()
        + f'[destinations.crm]\ntype = "http"\nurl = "{receiver.url}"\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
    )
    for _ in range(3):
        assert (await relay.post_events(bounce(1, id="once"))).status == 202

    async def delivered() -> bool:
        crm = (await relay.store.stats()).destinations.get("crm")
        return crm is not None and crm.delivered == 1

    await wait_for(delivered, 10, "the webhook to be delivered")
    stats = await relay.store.stats()
    crm = stats.destinations["crm"]
    assert (stats.events, crm.pending, crm.leased, crm.dead) == (1, 0, 0, 0)  # nothing more to send
    assert receiver.delivered_ids() == ["once"]


# --- routes, methods and garbage ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/event", "/nope", "/v1/events/extra", "/v1/pull/nosuch"])
async def test_unknown_route_is_404_json(relay, path):
    async with relay.http.get(f"{relay.url}{path}", headers=AUTH) as resp:
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_405_json(relay, method):
    async with relay.http.request(method, f"{relay.url}/v1/events", headers=AUTH) as resp:
        assert resp.status == 405
        assert resp.content_type == "application/json"
        assert "POST" in resp.headers["Allow"]
        assert "error" in await resp.json()
    assert await events_stored(relay) == 0


NOT_AN_OBJECT = {"field": "", "message": "must be a JSON object"}
# Each body with its one right answer: (body, status, what the error must say). A string is
# the start of `error` (malformed JSON, too large); a dict is the first of `errors`.
GARBAGE_JSON: list[tuple[bytes, int, object]] = [
    (b"\x00\xff\xfe", 400, "malformed JSON"),
    (b"null", 400, NOT_AN_OBJECT),
    (b"42", 400, NOT_AN_OBJECT),
    (b'"a string"', 400, NOT_AN_OBJECT),
    (b"[1, 2, 3]", 400, NOT_AN_OBJECT),
    (b"[[[[[[[[[[]]]]]]]]]]", 400, NOT_AN_OBJECT),
    (b"[" * 1020 + b"]" * 1020, 400, NOT_AN_OBJECT),  # deep nesting, just under the limit
    (b"[" * 5000 + b"]" * 5000, 413, "request entity too large"),  # over the body limit
    (b'{"event_type": "bounce", "email": "\\ud800@example.com"}', 400, "malformed JSON"),
    (
        b'{"event_type": {"x": 1}, "email": "a@example.com"}',
        400,
        {"field": "event_type", "message": "unknown event type \"{'x': 1}\""},
    ),
    (
        b'{"event_type": "bounce", "email": "a@example.com", "event_time": 1e400}',
        400,
        "malformed JSON",
    ),
    # A number past ±(2^53 - 1) would be rounded (this one past 64 bits was read as 1e+23):
    # refused, naming the field, so an identifier is sent as a string and kept exactly.
    (
        b'{"event_type": "bounce", "email": "a@example.com", "x_ref": 99999999999999999999999}',
        400,
        {
            "field": "x_ref",
            "message": "a number beyond ±(2^53 - 1) would be rounded: send it as a string",
        },
    ),
    # Every known field has one type: a listid is a string, an email is not a number.
    (
        b'{"event_type": "bounce", "email": "a@example.com", "listid": 99999999999999999999999}',
        400,
        {"field": "listid", "message": "must be a string"},
    ),
    (
        b'{"event_type": "bounce", "email": 42}',
        400,
        {"field": "email", "message": "must be a string"},
    ),
    (
        b'{"event_type": "bounce", "email": true}',
        400,
        {"field": "email", "message": "must be a string"},
    ),
    (
        b'{"event_type": "delivery", "sendid": 20110705}',
        400,
        {"field": "sendid", "message": "must be a string"},
    ),
    (
        b'{"event_type": "bounce", "email": "a@example.com", "first": "yes"}',
        400,
        {"field": "first", "message": "must be true or false"},
    ),
    (
        b'{"event_type": "bounce", "email": "a@example.com", "timestamp": "1317305252.08"}',
        400,
        {"field": "timestamp", "message": "must be a number"},
    ),
    (
        b'{"event_type": "bounce", "email": "a@example.com", "listid": null, "x_custom": 7}',
        202,
        None,
    ),
    (
        b'{"event_type": "bounce", "email": "a@example.com", "headers": {"X": {"y": 1}}}',
        400,
        {"field": "headers.X", "message": "must be a string"},
    ),
    # A null id is no id: relay assigns one.
    (b'{"event_type": "bounce", "email": "a@example.com", "id": null}', 202, None),
    (
        b'{"event_type": "delivery_attempt", "email": "a@example.com", "status": ["success"]}',
        400,
        {"field": "status", "message": "must be a string"},
    ),
    (
        b'{"' + b"k" * 1500 + b'": 1, "event_type": "bounce", "email": "a@example.com"}',
        400,
        {"field": "k" * 64, "message": "field name longer than 64"},  # the name, cut
    ),
]


async def test_garbage_never_causes_a_500(relay):
    rng = random.Random(20240501)
    noise = [(rng.randbytes(rng.randint(1, 1500)), 400, "malformed JSON") for _ in range(25)]
    accepted = 0
    for body, expected, says in GARBAGE_JSON + noise:
        for ctype in ("application/json", "application/x-ndjson"):
            status, rtype, raw, _ = await post_raw(relay, body, ctype)
            assert (status, rtype) == (expected, "application/json"), (body[:60], raw[:200])
            answer = json.loads(raw)
            if status == 202:
                accepted += 1
                assert answer["accepted"] == 1
            elif isinstance(says, str):
                assert answer["error"].startswith(says), answer
            else:
                assert answer["error"] == "invalid events"
                assert answer["errors"][0]["index"] == 0
                assert answer["errors"][0].items() >= says.items(), answer["errors"][0]
    assert await events_stored(relay) == accepted  # exactly the valid body, twice
    async with relay.http.get(f"{relay.url}/healthz") as resp:
        assert resp.status == 200  # still alive


async def test_garbage_headers_never_cause_a_500(relay):
    for auth in ("Bearer ünïcödé", "Bearer " + "x" * 4000, "bearer  spaced  out", "Bearer\tx"):
        async with relay.http.post(
            f"{relay.url}/v1/events",
            data=b"{}",
            headers={"Authorization": auth, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 401


# --- query parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/v1/pull/inbox?maxx=5", "maxx"),
        ("GET", "/v1/pull/inbox?max=5&lease=1", "lease"),
        ("POST", "/v1/pull/inbox/ack?batch=1", "batch"),
        ("POST", "/v1/events?dry_run=1", "dry_run"),
        ("POST", "/v1/links?kind=click", "kind"),
        ("POST", "/v1/rewrite?x=1", "x"),
        ("GET", "/healthz?verbose", "verbose"),
        ("GET", "/readyz?x=1", "x"),
        ("GET", "/metrics?name=relay", "name"),
        ("GET", "/v1/openapi.json?v=2", "v"),
    ],
)
async def test_an_unknown_query_parameter_is_a_400_naming_it(relay, method, path, name):
    await relay.post_events([bounce(i) for i in range(3)], token=TOKEN)
    async with relay.http.request(method, relay.url + path, headers=AUTH, json={}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["field"] == name
    assert body["error"].startswith(f"{name}: unknown query parameter (allowed: ")
    leased = await lease(relay)  # nothing was leased by the refused request
    assert len(leased["events"]) == 3
