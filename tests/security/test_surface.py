"""The HTTP surface against a browser's forged requests and rebinding, on a real socket.

Each probe sends what a browser sends — a form's body and content type, `Origin`,
`Sec-Fetch-Site`, a rebinding page's `Host` — to the real app, then checks the answer
and that nothing changed in relay (no pause, no replay, no lease, no event).
"""

from __future__ import annotations

import aiohttp
import pytest

from relay.domain.tokens import Signer

from ..helpers import RunningRelay, base_toml

PULL = '[destinations.feed]\ntype = "pull"\n[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'
SECRET = "tracking-secret-for-the-security-tests"
TRACKING = f'[tracking]\nsecrets = ["{SECRET}"]\n'
EVIL = "http://evil.example"
# What chromium attaches to a form that another site's page submits.
CROSS_SITE = {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
# An older browser without Fetch Metadata: only Origin tells.
ORIGIN_ONLY = {"Origin": EVIL}
BOUNCE = {"event_type": "bounce", "email": "jane@example.com", "id": "b-1"}


@pytest.fixture
async def relay(make_relay) -> RunningRelay:
    r = await make_relay(base_toml() + PULL + TRACKING)
    resp = await r.post_events([{**BOUNCE, "id": f"b-{i}"} for i in range(3)])
    assert resp.status == 202
    return r


def form(kind: str, fields: dict[str, str]) -> dict:
    """The body and content type a browser's form sends with `enctype=kind`."""
    if kind == "urlencoded":
        return {"data": fields}
    if kind == "multipart":
        data = aiohttp.FormData()
        for k, v in fields.items():
            data.add_field(k, v)
        data._is_multipart = True
        return {"data": data}
    # text/plain: "name=value" lines — the trick that makes a JSON body out of a form
    body = "\r\n".join(f"{k}={v}" for k, v in fields.items())
    return {"data": body.encode(), "headers": {"Content-Type": "text/plain"}}


async def state(relay: RunningRelay) -> tuple:
    """Everything a forged request could change: pauses, audit trail, leases, deliveries."""
    stats = await relay.store.stats()
    feed = stats.destinations["feed"]
    return (
        dict(relay.runtime.paused),
        [a.as_dict() if hasattr(a, "as_dict") else a for a in await relay.store.audit_log(10)],
        feed.pending,
        feed.leased,
    )


REPLAY_TEXT_PLAIN = {'{"destination":"': '","destination":"feed"}'}  # text/plain → valid JSON
ACTIONS = [
    ("/v1/admin/destinations/feed/pause", {"for": "1h"}),
    ("/v1/admin/destinations/feed/pause", {}),
    ("/v1/admin/destinations/feed/resume", {}),
    ("/v1/admin/replay", REPLAY_TEXT_PLAIN),
    ("/v1/pull/feed/ack", {"batch_id": "1"}),
    ("/v1/events", {'{"event_type":"bounce","email":"x@example.com","x":"': '"}'}),
    ("/v1/links", {'{"kind":"click","email":"a@b.c","url":"https://x.example/","z":"': '"}'}),
]


@pytest.mark.parametrize("kind", ["urlencoded", "multipart", "text/plain"])
@pytest.mark.parametrize("browser", [CROSS_SITE, ORIGIN_ONLY], ids=["fetch-metadata", "origin"])
@pytest.mark.parametrize(("path", "fields"), ACTIONS, ids=[a[0] for a in ACTIONS])
async def test_a_forged_cross_site_form_changes_nothing(relay, kind, browser, path, fields):
    before = await state(relay)
    spec = form(kind, fields)
    headers = {**browser, **spec.pop("headers", {})}
    async with relay.http.post(f"{relay.url}{path}", headers=headers, **spec) as resp:
        body = await resp.json()
        assert resp.status == 403, body
        assert "cross-site request refused" in body["error"]
    assert await state(relay) == before


@pytest.mark.parametrize("kind", ["urlencoded", "multipart", "text/plain"])
@pytest.mark.parametrize(("path", "fields"), ACTIONS, ids=[a[0] for a in ACTIONS])
async def test_a_form_body_without_browser_headers_is_refused_by_its_type(
    relay, kind, path, fields
):
    """A browser too old to say where a request comes from still labels a form as one."""
    before = await state(relay)
    spec = form(kind, fields)
    async with relay.http.post(f"{relay.url}{path}", **spec) as resp:
        body = await resp.json()
        assert resp.status == 415, body
        assert body["field"] == "Content-Type"
    assert await state(relay) == before


async def test_an_empty_text_plain_form_does_not_pause(relay):
    async with relay.http.post(
        f"{relay.url}/v1/admin/destinations/feed/pause", headers={"Content-Type": "text/plain"}
    ) as resp:
        assert resp.status == 415
    assert "feed" not in relay.runtime.paused


async def test_a_cross_site_pull_does_not_lease(relay):
    before = await state(relay)
    for headers in (
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
        {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
    ):
        async with relay.http.get(f"{relay.url}/v1/pull/feed", headers=headers) as resp:
            assert resp.status == 403, await resp.text()
    assert await state(relay) == before
    async with relay.http.get(f"{relay.url}/v1/pull/feed") as resp:  # curl, a script: fine
        assert resp.status == 200
        assert len((await resp.json())["events"]) == 3


async def test_an_old_browser_without_fetch_metadata_does_not_lease(relay):
    """What an `<img src>` from another site looks like in a browser older than Fetch
    Metadata: a browser's User-Agent, no Sec-Fetch-*, no Origin."""
    before = await state(relay)
    old = {"User-Agent": "Mozilla/5.0 (Windows NT 6.1; rv:60.0) Gecko/20100101 Firefox/60.0"}
    async with relay.http.get(f"{relay.url}/v1/pull/feed", headers=old) as resp:
        assert resp.status == 403
        assert "Fetch Metadata" in (await resp.json())["error"]
    assert await state(relay) == before
    typed = {**old, "Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}  # a current one
    async with relay.http.get(f"{relay.url}/v1/pull/feed?max=1", headers=typed) as resp:
        assert resp.status == 200
        assert len((await resp.json())["events"]) == 1


async def test_an_old_browser_still_pulls_a_feed_with_a_token(make_relay):
    """A token is what a page cannot attach: a browser with it is someone's own script."""
    relay = await make_relay(base_toml() + PULL.replace('"pull"\n', '"pull"\ntokens = ["pt"]\n'))
    assert (await relay.post_events([BOUNCE])).status == 202
    headers = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)", "Authorization": "Bearer pt"}
    async with relay.http.get(f"{relay.url}/v1/pull/feed", headers=headers) as resp:
        assert resp.status == 200
        assert [e["id"] for e in (await resp.json())["events"]] == ["b-1"]


REBIND = ["rebind.attacker.example:8080", "rebind.attacker.example", "127.0.0.1.nip.io", "0x7f.1"]


@pytest.mark.parametrize("host", REBIND)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/destinations"),
        ("GET", "/v1/admin/dead"),
        ("POST", "/v1/admin/destinations/feed/pause"),
        ("GET", "/console/"),
        ("GET", "/console/dead"),
        ("GET", "/v1/pull/feed"),
        ("POST", "/v1/events"),
        ("GET", "/metrics"),
    ],
)
async def test_a_rebinding_host_is_misdirected(relay, host, method, path):
    before = await state(relay)
    kw = {"json": BOUNCE} if path == "/v1/events" else {}
    async with relay.http.request(
        method, f"{relay.url}{path}", headers={"Host": host}, **kw
    ) as resp:
        text = await resp.text()
        assert resp.status == 421, text
        assert "server.allowed_hosts" in text
        assert "jane@example.com" not in text
    assert await state(relay) == before
    assert (await relay.store.stats()).events == 3


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "LOCALHOST:1234", "[::1]:8080"])
async def test_the_loopback_names_are_allowed_with_any_port(relay, host):
    async with relay.http.get(f"{relay.url}/v1/admin/destinations", headers={"Host": host}) as resp:
        assert resp.status == 200


async def test_tracking_routes_answer_every_origin_and_their_public_hosts(make_relay):
    toml = base_toml().replace(
        "[storage]",
        'public_url = "https://t.example.com"\nallowed_hosts = ["relay.internal"]\n[storage]',
    )
    relay = await make_relay(toml + PULL + TRACKING)
    signer = Signer([SECRET], "https://t.example.com")
    click = signer.url("click", email="jane@example.com", url="https://shop.example/")
    path = click.removeprefix("https://t.example.com")
    for host, status in (
        ("t.example.com", 302),
        ("relay.internal:443", 302),
        ("evil.example", 421),
    ):
        headers = {"Host": host, **CROSS_SITE}
        async with relay.http.get(
            f"{relay.url}{path}", headers=headers, allow_redirects=False
        ) as resp:
            assert resp.status == status, (host, await resp.text())
    for host in ("t.example.com", "anything.example"):
        async with relay.http.get(f"{relay.url}/healthz", headers={"Host": host}) as resp:
            assert resp.status == 200
    for host, status in (("relay.internal", 200), ("t.example.com", 421), ("localhost", 421)):
        async with relay.http.get(
            f"{relay.url}/v1/admin/destinations", headers={"Host": host}
        ) as resp:
            assert resp.status == status, host


async def test_tokened_routes_accept_any_host_behind_a_proxy(make_relay):
    """With a token, a route is not loopback-open: a proxy's Host does not matter."""
    toml = base_toml() + '[ingest]\ntokens = ["ingest-token"]\n' + PULL
    relay = await make_relay(toml)
    headers = {"Host": "relay.example", "Authorization": "Bearer ingest-token"}
    async with relay.http.post(f"{relay.url}/v1/events", json=BOUNCE, headers=headers) as resp:
        assert resp.status == 202
    async with relay.http.get(
        f"{relay.url}/v1/admin/destinations", headers={"Host": "relay.example"}
    ) as resp:
        assert resp.status == 421  # the admin API: always the allow-list


async def test_pull_names_cannot_be_enumerated(make_relay):
    toml = (
        base_toml()
        + '[destinations.feed]\ntype = "pull"\ntokens = ["pull-token"]\n'
        + '[[routes]]\nevents = ["*"]\ndestinations = ["feed"]\n'
    )
    relay = await make_relay(toml)
    answers = []
    for name in ("feed", "nosuch"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with relay.http.get(f"{relay.url}/v1/pull/{name}", headers=headers) as resp:
                answers.append((resp.status, await resp.json()))
    assert answers[0] == answers[2] and answers[1] == answers[3], answers
    assert {status for status, _ in answers} == {401}


async def test_unsubscribe_refuses_a_json_body(make_relay):
    relay = await make_relay(base_toml() + PULL + TRACKING)
    signer = Signer([SECRET], relay.url)
    url = signer.url("unsub", email="jane@example.com")
    async with relay.http.post(url, json={"List-Unsubscribe": "One-Click"}) as resp:
        assert resp.status == 400, await resp.text()
    assert (await relay.store.stats()).events == 0
    async with relay.http.post(url, data={"List-Unsubscribe": "One-Click"}) as resp:
        assert resp.status == 200
    assert (await relay.store.stats()).events == 1
