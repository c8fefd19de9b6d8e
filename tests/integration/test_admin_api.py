"""The admin JSON API (`/v1/admin/*`) against the real app on a real socket, with
real receivers that fail on demand: figures and states, the event view, dead letters,
pause (timed), replay (dry run, group, rate), the audit trail, auth and the validation
matrix."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import jsonschema_rs  # comes with schemathesis
import pytest
import yaml

from ..helpers import Receiver, RunningRelay, base_toml, wait_for

FAST_RETRY = '{ initial = "50ms", max = "100ms", multiplier = 2.0, max_attempts = 3 }'
TOKENS = '[console]\ntokens = ["first-secret", "second-secret"]\n'
AUTH = {"Authorization": "Bearer second-secret"}
PULL = '[destinations.default]\ntype = "pull"\n[[routes]]\nevents = ["*"]\ndestinations = ["default"]\n'


def http_dest(name: str, url: str, retry: str = "{ max_attempts = 1 }", extra: str = "") -> str:
    return (
        f'[destinations.{name}]\ntype = "http"\nurl = "{url}"\ntimeout = "2s"\n'
        f"retry = {retry}\n{extra}"
    )


def route(*destinations: str, events: str = '"*"') -> str:
    names = ", ".join(f'"{d}"' for d in destinations)
    return f"[[routes]]\nevents = [{events}]\ndestinations = [{names}]\n"


def bounce(i: int | str) -> dict:
    return {"id": f"ev{i}", "event_type": "bounce", "email": f"jane.doe{i}@example.com"}


async def call(
    relay: RunningRelay,
    method: str,
    path: str,
    body: object = None,
    headers: dict | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict, dict]:
    assert relay.http is not None
    kw: dict = {"headers": headers if headers is not None else AUTH}
    if raw is not None:
        kw["data"] = raw
        kw["headers"] = {"Content-Type": "application/json", **kw["headers"]}
    elif body is not None:
        kw["json"] = body
    async with relay.http.request(method, f"{relay.url}{path}", **kw) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def get(relay: RunningRelay, path: str, **kw) -> dict:
    status, data, _ = await call(relay, "GET", path, **kw)
    assert status == 200, data
    return data


async def post(relay: RunningRelay, path: str, body: object = None, **kw) -> dict:
    status, data, _ = await call(relay, "POST", path, body, **kw)
    assert status == 200, data
    return data


async def dead_is(relay: RunningRelay, destination: str, n: int) -> bool:
    d = (await relay.store.stats()).destinations.get(destination)
    return (d.dead if d else 0) == n


SCHEMAS = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml").read_text()
)["components"]["schemas"]


def conforms(data: dict, schema: str) -> None:
    """As documented in docs/openapi.yaml (the fuzz test sees only a pull destination)."""
    jsonschema_rs.Draft202012Validator(SCHEMAS[schema]).validate(data)


def row(data: dict, name: str) -> dict:
    [found] = [d for d in data["destinations"] if d["name"] == name]
    return found


@pytest.fixture
async def failing():
    r = Receiver(default=500)
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def flaky(make_relay, receiver):
    """`crm` answered 500 once per event (max_attempts = 1): ev1, ev2, ev3 are dead."""
    receiver.default = 500
    relay = await make_relay(base_toml() + TOKENS + http_dest("crm", receiver.url) + route("crm"))
    await relay.post_events([bounce(1), bounce(2), bounce(3)])
    await wait_for(lambda: dead_is(relay, "crm", 3), 10, "three dead deliveries")
    receiver.default = 200
    receiver.hits.clear()
    return relay


# -- reads ---------------------------------------------------------------------------------


async def test_destinations_show_ok_failing_and_paused_with_their_figures(
    make_relay, receiver, failing
):
    relay = await make_relay(
        base_toml()
        + TOKENS
        + http_dest("good", receiver.url)
        + http_dest("bad", failing.url)
        + '[destinations.feed]\ntype = "pull"\n'
        + route("good", "bad", "feed")
    )
    await relay.post_events([bounce(1), bounce(2)])
    await wait_for(lambda: dead_is(relay, "bad", 2), 10, "bad's deliveries to die")
    await wait_for(lambda: len(receiver.hits) == 2, 10, "good's deliveries")
    async with relay.http.get(f"{relay.url}/v1/pull/feed?max=1") as resp:
        assert (await resp.json())["events"]

    async def good_delivered() -> bool:
        return row(await get(relay, "/v1/admin/destinations"), "good")["delivered"] == 2

    await wait_for(good_delivered, 5, "good's deliveries to be counted")
    data = await get(relay, "/v1/admin/destinations")
    assert [d["name"] for d in data["destinations"]] == ["bad", "feed", "good"]
    good, bad, feed = row(data, "good"), row(data, "bad"), row(data, "feed")
    for d in data["destinations"]:
        conforms(d, "Destination")
    assert good["state"] == "ok" and good["type"] == "http"
    assert (good["pending"], good["dead"], good["delivered"]) == (0, 0, 2)
    assert good["failure_rate_5m"] == 0.0 and good["last_success"].endswith("Z")
    assert good["last_error"] is None
    assert bad["state"] == "failing" and bad["dead"] == 2 and bad["failure_rate_5m"] == 1.0
    assert bad["last_error"]["status"] == 500
    assert bad["last_error"]["error"] == "HTTP 500: nope"
    assert bad["last_error"]["response"] in (None, "nope")  # None: the error quotes it
    assert feed["type"] == "pull" and feed["leased"] == 1 and feed["pending"] == 1
    assert feed["detail"]["last_pull"].endswith("Z")
    assert set(good) >= {
        "name", "type", "state", "pending", "leased", "dead", "delivered", "oldest_pending_s",
        "failure_rate_5m", "failure_rate_1h", "last_success", "last_error",
    }  # fmt: skip

    assert (await post(relay, "/v1/admin/destinations/good/pause"))["paused"] is True
    assert row(await get(relay, "/v1/admin/destinations"), "good")["state"] == "paused"


async def three_outcomes(
    make_relay, receiver: Receiver, failing: Receiver, extra_toml: str = ""
) -> RunningRelay:
    """A relay where ev1 was delivered at once, ev2 failed once then was delivered, and ev3
    (to a receiver that always answers 500) died after its attempts (`relay show` too)."""
    receiver.script = [200, 500]
    relay = await make_relay(
        base_toml()
        + extra_toml
        + http_dest("crm", receiver.url, FAST_RETRY, "concurrency = 1\n")
        + http_dest("down", failing.url, FAST_RETRY)
        + route("crm", events='"bounce"')
        + route("down", events='"engine_open"')
    )
    await relay.post_events(bounce(1))
    await wait_for(lambda: len(receiver.hits) == 1, 10, "ev1")
    await relay.post_events(bounce(2))
    await relay.post_events({"id": "ev3", "event_type": "engine_open", "email": "x@y.example"})
    await wait_for(lambda: dead_is(relay, "down", 1), 10, "ev3 to die")

    async def both_delivered() -> bool:
        d = (await relay.store.stats()).destinations.get("crm")
        return d is not None and d.delivered == 2

    await wait_for(both_delivered, 10, "ev1 and ev2 delivered")
    return relay


async def test_event_view_of_a_delivered_a_retried_and_a_dead_event(make_relay, receiver, failing):
    relay = await three_outcomes(make_relay, receiver, failing, TOKENS)

    async def view(event_id: str, state: str) -> dict:
        async def done():
            v = await get(relay, f"/v1/admin/events/{event_id}")
            return v if v["destinations"][0]["state"] == state else None

        await wait_for(done, 5, f"{event_id} {state}")
        return await done()

    delivered = await view("ev1", "delivered")
    conforms(delivered, "EventView")
    assert delivered["event"]["id"] == "ev1" and delivered["event"]["event_type"] == "bounce"
    assert delivered["event"]["email"] == "j***@example.com"  # masked by default
    assert delivered["received_at"].endswith("Z")
    [crm] = delivered["destinations"]
    assert crm["name"] == "crm"
    assert [(a["outcome"], a["status"]) for a in crm["attempts"]] == [("delivered", 200)]

    retried = (await view("ev2", "delivered"))["destinations"][0]
    assert [(a["outcome"], a["status"]) for a in retried["attempts"]] == [
        ("retry", 500),
        ("delivered", 200),
    ]
    assert retried["attempts"][0]["error"] == "HTTP 500: nope"
    assert set(retried["attempts"][0]) >= {"ts", "outcome", "status", "ms", "error", "response"}

    conforms(await view("ev3", "dead"), "EventView")
    dead = (await view("ev3", "dead"))["destinations"][0]
    assert [a["outcome"] for a in dead["attempts"]] == ["retry", "retry", "dead"]
    assert dead["last_error"] == "HTTP 500: nope"


async def test_dead_letters_page_with_after(make_relay, failing):
    relay = await make_relay(base_toml() + TOKENS + http_dest("crm", failing.url) + route("crm"))
    await relay.post_events([bounce(i) for i in range(5)])
    await wait_for(lambda: dead_is(relay, "crm", 5), 10, "five dead deliveries")
    seen, after, pages = [], None, 0
    while True:
        query = "destination=crm&limit=2" + (f"&after={after}" if after else "")
        page = await get(relay, f"/v1/admin/dead?{query}")
        pages += 1
        seen += [d["event_id"] for d in page["dead"]]
        after = page["next_after"]
        if after is None:
            break
    assert sorted(seen) == [f"ev{i}" for i in range(5)] and len(set(seen)) == 5
    assert pages == 3
    item = (await get(relay, "/v1/admin/dead"))["dead"][0]
    assert item["destination"] == "crm" and item["last_error"] == "HTTP 500: nope"
    assert len(item["group"]) == 12 and item["died_at"].endswith("Z")
    # since/until filter on the time the event was received
    assert (await get(relay, "/v1/admin/dead?until=2000-01-01T00:00:00Z"))["dead"] == []
    assert len((await get(relay, "/v1/admin/dead?since=946684800"))["dead"]) == 5


# -- actions -------------------------------------------------------------------------------


async def test_pause_for_a_while_resumes_by_itself(make_relay, receiver):
    relay = await make_relay(base_toml() + TOKENS + http_dest("crm", receiver.url) + route("crm"))
    paused = await post(relay, "/v1/admin/destinations/crm/pause", {"for": "2s"})
    assert paused["paused"] is True and paused["until"].endswith("Z")
    assert row(await get(relay, "/v1/admin/destinations"), "crm")["paused_until"]
    await relay.post_events(bounce(1))
    await asyncio.sleep(0.5)  # a window inside the 2 s pause for a wrong send
    assert receiver.hits == []  # held while paused
    view = await get(relay, "/v1/admin/events/ev1")
    assert view["destinations"][0]["state"] == "paused"
    # the daemon's upkeep (every second) resumes it once the time is up
    await wait_for(lambda: receiver.hits, 5, "the delivery after the pause ran out")
    assert row(await get(relay, "/v1/admin/destinations"), "crm")["state"] == "ok"


async def test_pause_and_resume(make_relay, receiver):
    relay = await make_relay(base_toml() + TOKENS + http_dest("crm", receiver.url) + route("crm"))
    assert (await post(relay, "/v1/admin/destinations/crm/pause"))["until"] is None
    await relay.post_events(bounce(1))
    await asyncio.sleep(0.5)  # a window for a wrong send (one would come within ms)
    assert receiver.hits == []
    assert (await post(relay, "/v1/admin/destinations/crm/resume"))["paused"] is False
    await wait_for(lambda: receiver.hits, 5, "the delivery after resume")


async def test_replay_dry_run_counts_and_changes_nothing(flaky, receiver):
    result = await post(flaky, "/v1/admin/replay", {"destination": "crm", "dry_run": True})
    assert result == {"matched": 3, "sample_ids": ["ev1", "ev2", "ev3"]}
    await asyncio.sleep(0.5)  # a window for a wrong replay's send (one would come within ms)
    assert receiver.hits == [] and await dead_is(flaky, "crm", 3)
    assert (await get(flaky, "/v1/admin/audit"))["audit"] == []  # a dry run is not an action

    assert await post(flaky, "/v1/admin/replay", {"ids": ["ev2"]}) == {"replayed": 1}
    await wait_for(lambda: receiver.hits, 6, "the replayed delivery")
    assert receiver.delivered_ids() == ["ev2"]


async def test_replay_everything_needs_the_star(flaky, receiver):
    status, data, _ = await call(flaky, "POST", "/v1/admin/replay", {})
    assert status == 400 and data["field"] == "destination" and '"*"' in data["error"]
    assert await post(flaky, "/v1/admin/replay", {"destination": "*"}) == {"replayed": 3}
    await wait_for(lambda: len(receiver.hits) == 3, 6, "every replayed delivery")


async def test_replay_by_failure_group(make_relay, receiver):
    receiver.script = [500, 503, 500]
    relay = await make_relay(
        base_toml()
        + TOKENS
        + http_dest("crm", receiver.url, extra="concurrency = 1\n")
        + route("crm")
    )
    for i in range(3):  # one at a time, so the script's answers go in order
        await relay.post_events(bounce(i))
        await wait_for(lambda i=i: dead_is(relay, "crm", i + 1), 10, f"ev{i} to die")
    dead = (await get(relay, "/v1/admin/dead"))["dead"]
    groups = {d["event_id"]: d["group"] for d in dead}
    assert groups["ev0"] == groups["ev2"] != groups["ev1"]  # HTTP 500 vs HTTP 503
    receiver.hits.clear()
    dry = await post(relay, "/v1/admin/replay", {"group": groups["ev0"], "dry_run": True})
    assert dry == {"matched": 2, "sample_ids": ["ev0", "ev2"]}
    assert await post(relay, "/v1/admin/replay", {"group": groups["ev0"]}) == {"replayed": 2}
    await wait_for(lambda: len(receiver.hits) == 2, 6, "the group's deliveries")
    assert sorted(receiver.delivered_ids()) == ["ev0", "ev2"]
    assert await dead_is(relay, "crm", 1)
    unknown = await post(relay, "/v1/admin/replay", {"group": "0123456789ab", "dry_run": True})
    assert unknown == {"matched": 0, "sample_ids": []}


async def test_replay_with_a_rate_spreads_the_deliveries(flaky, receiver):
    assert await post(flaky, "/v1/admin/replay", {"destination": "crm", "rate": 2}) == {
        "replayed": 3
    }
    await wait_for(lambda: len(receiver.hits) == 3, 8, "the paced deliveries")
    spread = receiver.hits[-1].at - receiver.hits[0].at
    assert spread >= 0.8, f"3 events at 2/s arrived within {spread:.2f}s"


async def test_actions_are_audited_with_the_actor(flaky, receiver):
    await post(flaky, "/v1/admin/destinations/crm/pause", {"for": "10m"})
    first = {"Authorization": "Bearer first-secret"}
    await post(flaky, "/v1/admin/destinations/crm/resume", headers=first)
    await post(flaky, "/v1/admin/replay", {"destination": "crm", "rate": 100})
    audit = (await get(flaky, "/v1/admin/audit"))["audit"]
    assert [(e["action"], e["actor"], e["target"]) for e in audit] == [
        ("replay", "token#2", "crm"),
        ("resume", "token#1", "crm"),
        ("pause", "token#2", "crm"),
    ]
    assert audit[0]["count"] == 3 and "rate=100" in audit[0]["detail"]
    assert audit[2]["detail"] == "for 600s" and audit[0]["ts"].endswith("Z")
    assert len((await get(flaky, "/v1/admin/audit?limit=1"))["audit"]) == 1

    def logged():
        return [x for x in flaky.dispatch_lines() if "audit" in x]

    await wait_for(lambda: len(logged()) == 3, 3, "the audit lines in the dispatch log")
    assert [(x["audit"], x["actor"]) for x in logged()] == [
        ("pause", "token#2"),
        ("resume", "token#1"),
        ("replay", "token#2"),
    ]


# -- auth ----------------------------------------------------------------------------------


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Token first-secret"}, 401),
        (basic("admin", "nope"), 401),
        ({"Authorization": "Basic !!!"}, 401),
        ({"Authorization": "Bearer first-secret"}, 200),
        (basic("anyone", "second-secret"), 200),
    ],
)
async def test_console_token_as_bearer_or_basic(make_relay, headers, status):
    relay = await make_relay(base_toml() + TOKENS)
    got, data, resp_headers = await call(relay, "GET", "/v1/admin/destinations", headers=headers)
    assert got == status, data
    if status == 401:
        assert resp_headers["WWW-Authenticate"] == 'Basic realm="relay console"'
        assert "token" in data["error"]


async def test_open_on_loopback_without_tokens_and_audited_as_loopback(make_relay):
    relay = await make_relay(base_toml() + PULL)
    await post(relay, "/v1/admin/destinations/default/pause", headers={})
    [entry] = (await get(relay, "/v1/admin/audit", headers={}))["audit"]
    assert entry["actor"] == "loopback"


async def test_no_console_tokens_on_a_public_listener_is_refused(make_relay):
    relay = await make_relay(
        base_toml(listen="0.0.0.0:0")
        + '[ingest]\ntokens = ["ingest-secret"]\n'
        + PULL.replace('type = "pull"', 'type = "pull"\ntokens = ["pull-secret"]')
    )
    for method, path in [("GET", "/v1/admin/destinations"), ("POST", "/v1/admin/replay")]:
        status, data, _ = await call(relay, method, path, {"destination": "*"}, headers={})
        assert status == 403
        assert data["error"] == "console needs console.tokens on a non-loopback listener"


async def test_read_only_console_refuses_actions_but_answers_reads(make_relay):
    relay = await make_relay(base_toml() + PULL + TOKENS + "read_only = true\n")
    for path, body in [
        ("/v1/admin/destinations/default/pause", None),
        ("/v1/admin/destinations/default/resume", None),
        ("/v1/admin/replay", {"destination": "*"}),
    ]:
        status, data, _ = await call(relay, "POST", path, body)
        assert (status, data["error"]) == (403, "console is read-only")
    status, _, _ = await call(relay, "POST", "/v1/admin/replay", {}, headers={})
    assert status == 401  # who you are comes first
    await get(relay, "/v1/admin/destinations")
    assert await relay.store.paused() == {}


# -- validation ----------------------------------------------------------------------------

PAUSE = "/v1/admin/destinations/default/pause"
MATRIX = [
    # (method, path, json body or raw bytes, status, field)
    ("POST", "/v1/admin/destinations/nope/pause", None, 404, None),
    ("POST", "/v1/admin/destinations/nope/resume", None, 404, None),
    ("GET", "/v1/admin/events/no-such-event", None, 404, None),
    ("GET", "/v1/admin/dead?destination=nope", None, 404, None),
    ("POST", "/v1/admin/replay", {"destination": "nope"}, 404, None),
    ("POST", PAUSE, {"for": "soon"}, 400, "for"),
    ("POST", PAUSE, {"for": "0s"}, 400, "for"),
    ("POST", PAUSE, {"for": -5}, 400, "for"),
    ("POST", PAUSE, {"for": True}, 400, "for"),
    ("POST", PAUSE, {"for": "9999d"}, 400, "for"),
    ("POST", PAUSE, {"until": "1h"}, 400, "until"),
    ("POST", PAUSE, b"{not json", 400, "body"),
    ("POST", PAUSE, b"[1, 2]", 400, "body"),
    ("POST", "/v1/admin/replay", {"destination": "*", "rate": 0}, 400, "rate"),
    ("POST", "/v1/admin/replay", {"destination": "*", "rate": -1}, 400, "rate"),
    ("POST", "/v1/admin/replay", {"destination": "*", "rate": "fast"}, 400, "rate"),
    ("POST", "/v1/admin/replay", {"destination": "*", "rate": True}, 400, "rate"),
    ("POST", "/v1/admin/replay", {"since": "yesterday"}, 400, "since"),
    ("POST", "/v1/admin/replay", {"until": "2026-13-45"}, 400, "until"),
    ("POST", "/v1/admin/replay", {"since": 1e300}, 400, "since"),
    ("POST", "/v1/admin/replay", {"since": 200, "until": 100}, 400, "until"),
    ("POST", "/v1/admin/replay", {"ids": "ev1"}, 400, "ids"),
    ("POST", "/v1/admin/replay", {"ids": [1, 2]}, 400, "ids"),
    ("POST", "/v1/admin/replay", {"ids": [""]}, 400, "ids"),
    ("POST", "/v1/admin/replay", {"group": "not-a-group"}, 400, "group"),
    ("POST", "/v1/admin/replay", {"group": "0123456789ab", "ids": ["a"]}, 400, "group"),
    ("POST", "/v1/admin/replay", {"destination": 5}, 400, "destination"),
    ("POST", "/v1/admin/replay", {"destination": "*", "dry_run": "yes"}, 400, "dry_run"),
    ("POST", "/v1/admin/replay", {"destination": "*", "everything": True}, 400, "everything"),
    ("POST", "/v1/admin/replay", {}, 400, "destination"),
    ("POST", "/v1/admin/replay", {"ids": []}, 400, "destination"),
    ("POST", "/v1/admin/replay", b"", 400, "destination"),
    ("POST", "/v1/admin/replay", b"\xff\xfe", 400, "body"),
    ("GET", "/v1/admin/dead?limit=0", None, 400, "limit"),
    ("GET", "/v1/admin/dead?limit=1001", None, 400, "limit"),
    ("GET", "/v1/admin/dead?limit=ten", None, 400, "limit"),
    ("GET", "/v1/admin/dead?after=-1", None, 400, "after"),
    ("GET", "/v1/admin/dead?after=abc", None, 400, "after"),
    ("GET", "/v1/admin/dead?after=99999999999999999999999", None, 400, "after"),
    ("GET", "/v1/admin/dead?since=last%20week", None, 400, "since"),
    ("GET", "/v1/admin/dead?until=1e999", None, 400, "until"),
    ("GET", "/v1/admin/dead?order=desc", None, 400, "order"),
    ("GET", "/v1/admin/audit?limit=5000", None, 400, "limit"),
    ("DELETE", "/v1/admin/replay", None, 405, None),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), MATRIX)
async def test_validation_matrix(make_relay, method, path, body, status, field):
    relay = await make_relay(base_toml() + PULL + TOKENS)
    raw = body if isinstance(body, bytes) else None
    got, data, _ = await call(relay, method, path, None if raw is not None else body, raw=raw)
    assert got == status, data
    assert isinstance(data["error"], str) and data["error"]
    if field is not None:
        assert data["field"] == field and data["error"].startswith(f"{field}:"), data
    assert await relay.store.paused() == {}  # nothing was done


async def test_good_inputs_are_accepted(make_relay, receiver):
    receiver.default = 500  # two events die at crm on their only attempt
    relay = await make_relay(
        base_toml() + PULL + TOKENS + http_dest("crm", receiver.url) + route("crm")
    )
    await relay.post_events([bounce(1), bounce(2)])
    await wait_for(lambda: dead_is(relay, "crm", 2), 10, "two dead deliveries")
    both = {"matched": 2, "sample_ids": ["ev1", "ev2"]}
    for body, answer in [
        ({"since": "2026-01-01T00:00:00Z", "until": 4102444800, "dry_run": True}, both),
        ({"since": "2026-01-01T00:00:00+02:00", "dry_run": True}, both),
        ({"since": "1700000000.5", "destination": "crm", "rate": 0.5, "dry_run": True}, both),
        ({"until": "1700000000.5", "dry_run": True}, {"matched": 0, "sample_ids": []}),
        ({"ids": ["ev1", "b"], "dry_run": False}, {"replayed": 1}),
    ]:
        got = await post(relay, "/v1/admin/replay", body)
        assert {**got, "sample_ids": sorted(got.get("sample_ids", []))} == (
            {**answer, "sample_ids": sorted(answer.get("sample_ids", []))}
        ), body
    before = time.time()
    paused = await post(relay, PAUSE, {"for": 90})
    assert (paused["destination"], paused["paused"]) == ("default", True)
    assert paused["until"].endswith("Z")
    until = (await relay.store.paused())["default"]
    assert before + 90 <= until <= time.time() + 90
    forever = await post(relay, PAUSE, raw=b"")
    assert (forever["paused"], forever["until"]) == (True, None)
    assert await relay.store.paused() == {"default": None}


async def test_pull_destination_shows_its_last_pull_and_acks(make_relay):
    relay = await make_relay(base_toml() + PULL + TOKENS)
    assert row(await get(relay, "/v1/admin/destinations"), "default")["detail"]["last_pull"] is None
    await relay.post_events([bounce(1), bounce(2)])
    async with relay.http.get(f"{relay.url}/v1/pull/default?max=10") as resp:
        batch = await resp.json()
    leased = row(await get(relay, "/v1/admin/destinations"), "default")
    assert leased["leased"] == 2 and leased["detail"]["last_pull"].endswith("Z")
    assert leased["last_success"] is None
    async with relay.http.post(
        f"{relay.url}/v1/pull/default/ack", json={"batch_id": batch["batch_id"]}
    ) as resp:
        assert resp.status == 200
    acked = row(await get(relay, "/v1/admin/destinations"), "default")
    assert acked["leased"] == 0 and acked["last_success"].endswith("Z")
    assert acked["series"]["delivered"][-1] == 2 and acked["failure_rate_5m"] == 0.0
