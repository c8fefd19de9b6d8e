"""Probes that held before this suite existed, kept here so they keep holding: tampered
tracking tokens, open-redirect attempts, script in console pages, and a 50 MB body."""

from __future__ import annotations

import io

import aiohttp
import pytest

from relay.domain.tokens import Signer

from ..helpers import base_toml

SECRET = "tracking-secret-for-the-security-tests"
TOML = base_toml() + f'[tracking]\nsecrets = ["{SECRET}"]\n'
XSS = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


@pytest.fixture
async def relay(make_relay):
    return await make_relay(TOML)


def tampered(token: str) -> list[str]:
    """One character changed at several places, cut short, extended, MAC dropped."""
    payload, _, mac = token.partition(".")
    flip = {"A": "B", "B": "A"}
    out = []
    for i in (0, len(payload) // 2, len(payload) - 1, len(token) - 1):
        c = token[i]
        out.append(token[:i] + flip.get(c, "A") + token[i + 1 :])
    return out + [token[:-1], token + "A", payload, payload + ".", "." + mac, token + "." + mac]


async def test_a_tampered_click_token_records_nothing_and_never_redirects(relay):
    signer = Signer([SECRET], relay.url)
    good = signer.url("click", email="jane@example.com", url="https://shop.example/")
    base, _, token = good.rpartition("/")
    other_kind = signer.url("open", email="jane@example.com").rpartition("/")[2]
    other_kind = other_kind.removesuffix(".gif")
    for bad in [*tampered(token), other_kind]:
        async with relay.http.get(f"{base}/{bad}", allow_redirects=False) as resp:
            assert resp.status == 404, bad
            assert "Location" not in resp.headers
    assert (await relay.store.stats()).events == 0
    async with relay.http.get(good, allow_redirects=False) as resp:
        assert resp.status == 302  # the untouched token still works
    assert (await relay.store.stats()).events == 1


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "//evil.example/",
        "http:evil.example",
        "https:\\\\evil.example",
        " https://evil.example/",
        "https://evil.example/\r\nSet-Cookie: x=1",
        "ftp://evil.example/",
    ],
)
async def test_no_open_redirect_can_be_signed(relay, url):
    async with relay.http.post(
        f"{relay.url}/v1/links", json={"kind": "click", "email": "a@example.com", "url": url}
    ) as resp:
        body = await resp.json()
        assert resp.status == 400, body
        assert body["errors"][0]["field"] == "url"


@pytest.mark.parametrize("back", ["//evil.example/", "https://evil.example/", "/console/\\evil"])
async def test_console_actions_never_redirect_off_the_console(make_relay, back):
    toml = TOML + '[destinations.feed]\ntype = "pull"\n[[routes]]\nevents = ["*"]\n'
    relay = await make_relay(toml + 'destinations = ["feed"]\n')
    async with relay.http.post(
        f"{relay.url}/console/destinations/feed/pause",
        data={"back": back, "for": ""},
        headers={"Origin": relay.url},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"].startswith("/console/"), resp.headers["Location"]


async def test_script_in_an_event_is_text_on_console_pages(relay):
    event = {"event_type": "bounce", "email": "x@example.com", "id": "xss-1", "message": XSS}
    assert (await relay.post_events(event)).status == 202
    async with relay.http.get(f"{relay.url}/console/events/xss-1") as resp:
        page = await resp.text()
        assert resp.status == 200
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_a_50_mb_body_is_refused_and_relay_carries_on(relay):
    """A 413 once 16 MiB (ingest.max_body_bytes) are read; a client still sending may see
    the connection closed instead. Either way nothing is stored and relay carries on."""
    big = b'{"event_type":"bounce","email":"a@example.com","message":"' + b"x" * 50_000_000
    try:
        async with relay.http.post(
            f"{relay.url}/v1/events",
            data=io.BytesIO(big),
            headers={"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 413
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        pass
    assert (await relay.store.stats()).events == 0
    ok = await relay.post_events({"event_type": "bounce", "email": "a@example.com"})
    assert ok.status == 202
