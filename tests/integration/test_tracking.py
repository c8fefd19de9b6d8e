"""The recipient-facing routes through a real relay on a socket (tracking fields,
/o /c /u /s /v1/links /v1/rewrite): what a browser, a mail client, a link scanner or an attacker
gets back, and what a webhook receiver is sent."""

from __future__ import annotations

import asyncio
import re
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.domain.tokens import Signer

from ..helpers import Receiver, RunningRelay, free_port, wait_for

SECRET = "tracking-secret-for-the-tests-0123456789"
INGEST = "ingest-token-for-the-tests"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
BROWSER = {"User-Agent": CHROME}
MSG = {
    "email": "ann@example.com",
    "listid": "list-7",
    "sendid": "send-42",
    "click_tracking_id": "ctid-9",
    "mail_class": "newsletter",
}
GIF_LEN = 43
DOCS = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "tracking-links.md"


def tracking_toml(
    hook: str, port: int, server: str = "", tracking: str = "", extra: str = ""
) -> str:
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n{server}'
        '[storage]\npath = "relay.db"\n[log]\ndispatch = "dispatch.log"\n'
        f'[tracking]\nsecrets = ["{SECRET}"]\n{tracking}'
        f"{extra}"
        f'[destinations.hook]\ntype = "http"\nurl = "{hook}"\ntimeout = "2s"\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["hook"]\n'
    )


@pytest.fixture
async def start(make_relay, receiver):
    """`await start(server=..., tracking=..., extra=...)`: a relay whose public_url is its own
    address, with every event routed to the `receiver`."""

    async def go(server: str = "", tracking: str = "", extra: str = "") -> RunningRelay:
        port = free_port()
        toml = tracking_toml(receiver.url, port, server, tracking, extra)
        return await make_relay(toml, subdir=f"relay-{port}")

    return go


TRUST_LOCAL = 'trusted_proxies = ["127.0.0.1/32"]\n'


def received(receiver: Receiver) -> list[dict]:
    """Every event the webhook got, once each, in arrival order."""
    seen: dict[str, dict] = {}
    for hit in receiver.hits:
        if hit.path != "/hook":
            continue
        data = orjson.loads(hit.body)
        for event in data if isinstance(data, list) else [data]:
            seen.setdefault(event["id"], event)
    return list(seen.values())


async def arrived(receiver: Receiver, count: int = 1, **match: object) -> list[dict]:
    """Wait until at least `count` events matching `match` reached the receiver; return them."""

    def found() -> list[dict]:
        return [e for e in received(receiver) if all(e.get(k) == v for k, v in match.items())]

    await wait_for(lambda: len(found()) >= count, 10, f"{count} event(s) like {match}")
    return found()


async def stored(relay: RunningRelay) -> int:
    """Events in the store: a tracking hit commits before it answers, so this is final."""
    return (await relay.store.stats()).events


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def link(relay: RunningRelay, kind: str, token: str | None = None, **fields: str) -> str:
    async with relay.http.post(
        f"{relay.url}/v1/links", json={"kind": kind, **fields}, headers=auth(token)
    ) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["url"]


async def get(relay: RunningRelay, url: str, method: str = "GET", **kw) -> tuple[int, dict, bytes]:
    kw.setdefault("headers", BROWSER)
    async with relay.http.request(method, url, allow_redirects=False, **kw) as r:
        return r.status, r.headers, await r.read()


class Tags(HTMLParser):
    """(tag, attrs) of every start tag, attribute values unescaped as a browser reads them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


def assert_pixel(status: int, headers, body: bytes) -> None:
    assert status == 200
    assert headers["Content-Type"] == "image/gif"
    assert len(body) == GIF_LEN and body.startswith(b"GIF89a") and body.endswith(b";")
    assert "no-store" in headers["Cache-Control"]


def tampered(url: str) -> str:
    """The same URL with one character of the token changed."""
    path, _, token = url.rpartition("/")
    i = len(token) // 3
    return f"{path}/{token[:i]}{'A' if token[i] != 'A' else 'B'}{token[i + 1 :]}"


# --- open pixel --------------------------------------------------------------------------------


async def test_pixel_is_a_gif_for_any_token_and_only_a_valid_one_records_an_open(start, receiver):
    relay = await start()
    pixel = await link(relay, "open", **MSG)
    assert pixel.startswith(f"{relay.url}/o/") and pixel.endswith(".gif")

    foreign = Signer(["someone-else"], relay.url).url("open", **MSG)
    click = await link(relay, "click", url="https://example.com/", **MSG)
    invalid = [
        tampered(pixel.removesuffix(".gif")) + ".gif",
        pixel[:-12] + ".gif",  # truncated
        foreign,
        f"{relay.url}/o/{click.rsplit('/', 1)[1]}.gif",  # a click token as a pixel
        f"{relay.url}/o/x.gif",
        f"{relay.url}/o/..gif",
    ]
    for url in invalid:
        assert_pixel(*await get(relay, url))
    assert await stored(relay) == 0, "an invalid pixel records nothing"

    # HEAD on a valid pixel (a link checker, not an image load): headers only, no open.
    status, headers, body = await get(relay, pixel, "HEAD")
    assert status == 200 and headers["Content-Type"] == "image/gif" and body == b""
    assert "no-store" in headers["Cache-Control"]
    assert await stored(relay) == 0

    assert_pixel(*await get(relay, pixel))
    assert await stored(relay) == 1
    [event] = await arrived(receiver, event_type="engine_open")
    assert {k: event[k] for k in MSG} == MSG
    assert event["engine_ip"] == "127.0.0.1"
    assert event["user_agent"] == CHROME
    assert event["is_bot"] is False and event["bot_reason"] is None
    assert event["first"] is True
    assert "url" not in event and "click_url" not in event
    assert isinstance(event["id"], str) and isinstance(event["event_time"], int | float)

    assert_pixel(*await get(relay, pixel))
    second = await arrived(receiver, 2, event_type="engine_open")
    assert [e["first"] for e in second] == [True, False]

    # Another sendid is another message: first again.
    other = await link(relay, "open", **{**MSG, "sendid": "send-43"})
    assert_pixel(*await get(relay, other))
    [third] = await arrived(receiver, sendid="send-43")
    assert third["first"] is True


# --- click ------------------------------------------------------------------------------------


async def test_click_redirects_to_the_exact_url_and_records_the_click(start, receiver):
    relay = await start()
    target = "https://shop.example.com/caf%C3%A9/sale?utm_source=news&utm_medium=email&q=a+b#top"
    url = await link(relay, "click", url=target, **MSG)
    assert url.startswith(f"{relay.url}/c/")

    status, headers, _ = await get(relay, url)
    assert status == 302
    assert headers["Location"] == target
    assert "no-store" in headers["Cache-Control"]
    [event] = await arrived(receiver, event_type="engine_click")
    assert event["click_url"] == target
    assert {k: event[k] for k in MSG} == MSG
    assert event["engine_ip"] == "127.0.0.1" and event["user_agent"] == CHROME
    assert event["is_bot"] is False and event["bot_reason"] is None
    assert event["first"] is True

    # HEAD (a link checker): the same redirect, nothing recorded.
    status, headers, body = await get(relay, url, "HEAD")
    assert status == 302 and headers["Location"] == target and body == b""
    assert await stored(relay) == 1


async def test_bad_click_tokens_are_404_never_redirect_and_record_nothing(start):
    relay = await start()
    good = await link(relay, "click", url="https://example.com/offer", **MSG)
    token = good.rsplit("/", 1)[1]
    others = {
        kind: (await link(relay, kind, url="https://example.com/offer", **MSG)).rsplit("/", 1)[1]
        for kind in ("open", "unsub", "signup")
    }
    bad = [
        tampered(good),
        good[:-1],
        good + "A",
        f"{relay.url}/c/{token.replace('.', '')}",  # the separator gone
        Signer(["someone-else"], relay.url).url("click", url="https://evil.example/", **MSG),
        *(f"{relay.url}/c/{t.removesuffix('.gif')}" for t in others.values()),
        f"{relay.url}/c/{token.split('.')[0]}",  # payload without its MAC
        f"{relay.url}/c/" + quote("https://evil.example/", safe=""),
        f"{relay.url}/c/x",
    ]
    for url in bad:
        for method in ("GET", "HEAD"):
            status, headers, _ = await get(relay, yarl.URL(url, encoded=True), method)
            assert status == 404, (method, url)
            assert "Location" not in headers
    assert await stored(relay) == 0


async def test_open_redirect_attempts_cannot_be_signed(start):
    relay = await start()
    attempts = [
        "javascript:alert(document.domain)",
        "JAVASCRIPT:alert(1)",
        "//evil.com/login",
        "/\\evil.com",
        "https://example.com/\r\nLocation: https://evil.com/",
        "https://example.com/%0d%0a\nSet-Cookie: x=1",
        "ftp://evil.com/file",
        "data:text/html,<script>alert(1)</script>",
        "evil.com",
    ]
    for kind in ("click", "unsub", "signup"):
        for url in attempts:
            async with relay.http.post(
                f"{relay.url}/v1/links", json={"kind": kind, "url": url, **MSG}
            ) as r:
                assert r.status == 400, (kind, url)
                body = await r.json()
                assert "url" not in body and "urls" not in body
                assert body["errors"] == [
                    {"index": 0, "field": "url", "message": body["errors"][0]["message"]}
                ]
    # One bad item in a batch: 400 naming it, and no URL for the good ones either.
    batch = [
        {"kind": "click", "url": "https://example.com/ok", **MSG},
        {"kind": "click", "url": "javascript:alert(1)", **MSG},
    ]
    async with relay.http.post(f"{relay.url}/v1/links", json=batch) as r:
        assert r.status == 400
        body = await r.json()
        assert "urls" not in body
        assert body["errors"][0]["index"] == 1 and body["errors"][0]["field"] == "url"
    assert await stored(relay) == 0


# --- unsubscribe ------------------------------------------------------------------------------


async def test_unsubscribe_get_shows_a_confirm_form_and_records_nothing(start, receiver):
    relay = await start()
    landing = "https://example.com/goodbye?list=7&u=1"
    url = await link(relay, "unsub", url=landing, **{**MSG, "email": "a<b>@example.com"})
    assert url.startswith(f"{relay.url}/u/")

    for _ in range(3):  # a link scanner fetches it again and again
        status, headers, body = await get(relay, url)
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert "no-store" in headers["Cache-Control"]
    page = body.decode()
    tags = Tags(page)
    [form] = tags.all("form")
    assert form["method"].lower() == "post"
    assert form.get("action") in (None, "", url, yarl.URL(url).path)
    assert len(tags.all("button")) == 1
    assert "a<b>@example.com" not in page and "a&lt;b&gt;@example.com" in page
    assert await stored(relay) == 0, "a GET changes nothing"

    # The person presses the button: the form posts back, 303 to the landing page.
    fields = {i["name"]: i.get("value") or "" for i in tags.all("input") if i.get("name")}
    for _ in range(2):  # pressed twice: one unsubscribe
        status, headers, _ = await get(relay, url, "POST", data=fields)
        assert status == 303
        assert headers["Location"] == landing
    [event] = await arrived(receiver, event_type="engine_unsub")
    assert {k: event[k] for k in MSG if k != "email"} == {k: MSG[k] for k in MSG if k != "email"}
    assert event["email"] == "a<b>@example.com"
    assert event["is_bot"] is False and event["bot_reason"] is None
    assert event["first"] is True
    assert await stored(relay) == 1


async def test_unsubscribe_without_a_landing_page_goes_to_the_built_in_one(start, receiver):
    relay = await start()
    url = await link(relay, "unsub", **MSG)
    status, headers, _ = await get(relay, url, "POST", data={"confirm": "1"})
    assert status == 303 and headers["Location"] == "/unsubscribed"
    status, _, body = await get(relay, relay.url + headers["Location"])
    assert status == 200 and b"unsubscribed" in body.lower()
    await arrived(receiver, event_type="engine_unsub", email=MSG["email"])

    # A tampered or foreign token: 404, no redirect, nothing recorded.
    for bad in (tampered(url), Signer(["x"], relay.url).url("unsub", **MSG)):
        for method in ("GET", "POST"):
            status, headers, _ = await get(relay, bad, method, data={"confirm": "1"})
            assert status == 404 and "Location" not in headers
    assert await stored(relay) == 1


@pytest.mark.parametrize("multipart", [False, True], ids=["urlencoded", "multipart"])
async def test_rfc8058_one_click_records_and_answers_200_without_redirect(
    start, receiver, multipart
):
    relay = await start()
    url = await link(relay, "unsub", url="https://example.com/bye", **MSG)
    for _ in range(3):  # mailbox providers retry; it is recorded once
        form = aiohttp.FormData({"List-Unsubscribe": "One-Click"}, default_to_multipart=multipart)
        async with relay.http.post(url, data=form, allow_redirects=False) as r:
            assert r.status == 200
            sent = r.request_info.headers["Content-Type"]
            assert sent.startswith("multipart/form-data" if multipart else "application/x-www")
            assert "Location" not in r.headers
            assert "Set-Cookie" not in r.headers
    [event] = await arrived(receiver, event_type="engine_unsub")
    assert event["email"] == MSG["email"] and event["sendid"] == MSG["sendid"]
    assert await stored(relay) == 1


async def test_unsubscribe_on_get_records_on_the_get(start, receiver):
    relay = await start(tracking="unsubscribe_on_get = true\n")
    url = await link(relay, "unsub", **MSG)
    status, _, _ = await get(relay, url, "HEAD")  # a link checker's HEAD never unsubscribes
    assert status == 200
    assert await stored(relay) == 0
    for _ in range(2):
        status, _, body = await get(relay, url)
        assert status == 200 and b"unsubscribed" in body.lower()
    [event] = await arrived(receiver, event_type="engine_unsub")
    assert event["email"] == MSG["email"]
    assert await stored(relay) == 1


# --- signup -----------------------------------------------------------------------------------


def docs_form() -> tuple[str, list[dict[str, str | None]]]:
    """The signup form snippet in the tracking how-to: its action and its inputs."""
    blocks = re.findall(r"```html\n(.*?)```", DOCS.read_text(), re.DOTALL)
    [snippet] = [b for b in blocks if "<form" in b]
    tags = Tags(snippet)
    [form] = tags.all("form")
    assert form["method"].lower() == "post"
    return form["action"] or "", tags.all("input")


async def test_signup_from_the_documented_form(start, receiver):
    relay = await start()
    thanks = "https://example.com/thanks?list=news"
    action = await link(relay, "signup", listid="news-7", url=thanks)
    assert action.startswith(f"{relay.url}/s/")

    documented_action, inputs = docs_form()
    assert "/s/" in documented_action
    names = {i.get("name"): i for i in inputs}
    assert names["email"]["type"] == "email"
    assert "website" in names, "the honeypot field"

    # A person fills in only what they can see.
    form = {n: (i.get("value") or "") for n, i in names.items() if n and i.get("type") != "submit"}
    form["email"] = "  New.Reader+tag@example.org "
    status, headers, _ = await get(relay, action, "POST", data=form)
    assert status == 303 and headers["Location"] == thanks
    [event] = await arrived(receiver, event_type="optin")
    assert event["email"] == "New.Reader+tag@example.org"
    assert event["listid"] == "news-7"
    assert event["is_bot"] is False

    # Bad addresses: 400, nothing recorded.
    for bad in ["", "plainaddress", "a@b", "@example.com", "a@", "two words@example.com",
                "<script>@example.com", "x" * 250 + "@example.com"]:  # fmt: skip
        status, headers, body = await get(relay, action, "POST", data={**form, "email": bad})
        assert status == 400, bad
        assert "Location" not in headers
        assert b"<script>" not in body
    status, _, _ = await get(relay, action, "POST", data={"website": ""})
    assert status == 400

    # A bot fills the hidden field: it is thanked like a person, and nothing is recorded.
    status, headers, _ = await get(
        relay, action, "POST", data={**form, "email": "bot@example.com", "website": "http://spam"}
    )
    assert status == 303 and headers["Location"] == thanks
    assert await stored(relay) == 1

    # Without a thank-you URL: the built-in page. A tampered token: 404.
    plain = await link(relay, "signup", listid="news-8")
    status, headers, _ = await get(relay, plain, "POST", data={"email": "b@example.com"})
    assert status == 303 and headers["Location"] == "/thanks"
    status, _, body = await get(relay, relay.url + "/thanks")
    assert status == 200 and b"Thank you" in body
    status, headers, _ = await get(relay, tampered(plain), "POST", data={"email": "c@example.com"})
    assert status == 404 and "Location" not in headers
    assert await stored(relay) == 2


# --- /v1/links ----------------------------------------------------------------------------------


async def test_links_single_and_batch_in_order_with_errors_naming_index_and_field(start):
    relay = await start(extra=f'[ingest]\ntokens = ["{INGEST}"]\n')
    one = {"kind": "click", "url": "https://example.com/a", **MSG}
    for token in (None, "wrong-token"):
        async with relay.http.post(f"{relay.url}/v1/links", json=one, headers=auth(token)) as r:
            assert r.status == 401
            assert "error" in await r.json()

    single = await link(relay, "click", INGEST, url="https://example.com/a", **MSG)
    assert (await get(relay, single))[1]["Location"] == "https://example.com/a"

    batch = [
        {"kind": "click", "url": "https://example.com/first", **MSG},
        {"kind": "open", **MSG},
        {"kind": "unsub", "url": "https://example.com/bye", **MSG},
        {"kind": "signup", "listid": "7", "url": "https://example.com/thanks"},
        {"kind": "click", "url": "https://example.com/last", **MSG},
    ]
    async with relay.http.post(f"{relay.url}/v1/links", json=batch, headers=auth(INGEST)) as r:
        assert r.status == 200
        urls = (await r.json())["urls"]
    assert [yarl.URL(u).path.split("/")[1] for u in urls] == ["c", "o", "u", "s", "c"]
    assert (await get(relay, urls[0]))[1]["Location"] == "https://example.com/first"
    assert (await get(relay, urls[4]))[1]["Location"] == "https://example.com/last"

    errors = [
        ([one, {"kind": "click", **MSG}], 1, "url"),  # a click needs its url
        ([one, one, {"kind": "teleport", **MSG}], 2, "kind"),
        ([{"kind": "open", "listid": "7"}], 0, "email"),
        ([one, {"kind": "open", "email": ["a@example.com"]}], 1, "email"),
        ([one, {**one, "sendid": "s" * 5000}], 1, "sendid"),
        ([one, "not an object"], 1, ""),
        ([one, {**one, "email": 42}], 1, "email"),  # a number is not an email
        ([{**one, "listid": 7}], 0, "listid"),  # an integer is not a string
        ([one, {**one, "emial": "a@example.com"}], 1, "emial"),  # a typo is named
    ]
    for payload, index, field in errors:
        async with relay.http.post(
            f"{relay.url}/v1/links", json=payload, headers=auth(INGEST)
        ) as r:
            assert r.status == 400, payload
            body = await r.json()
            assert body["error"] and "urls" not in body
            assert (body["errors"][0]["index"], body["errors"][0]["field"]) == (index, field)
    async with relay.http.post(
        f"{relay.url}/v1/links", data="kind=click", headers=auth(INGEST)
    ) as r:
        assert r.status == 415


# --- /v1/rewrite, then read the message like a person ------------------------------------------

NEWSLETTER = """\
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<HTML xmlns="http://www.w3.org/1999/xhtml">
<HEAD>
<META http-equiv="Content-Type" content="text/html; charset=UTF-8">
<TITLE>Spring &amp; Summer &ndash; 20&percnt; off</TITLE>
<style type="text/css">a { color:#0645ad } .btn { padding:12px }</style>
</HEAD>
<BODY style="margin:0" bgcolor="#f4f4f4">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0"><tr><td align="center">
  <TABLE width="600" cellpadding="0" cellspacing="0">
    <TR><TD><IMG SRC="https://cdn.example.com/logo.png" ALT="Caf&eacute; &copy; 2024" width="120"></TD></TR>
    <TR><TD class="btn"><A HREF="{LANDING}/sale?utm_source=news&amp;utm_medium=email&amp;id=7" TARGET="_blank">Shop the sale &rarr;</A></TD></TR>
    <tr><td><a href='https://shop.example.com/caf%C3%A9?q=1&amp;r=2#top'>Caf&eacute; menu</a>
      &middot; <a href="mailto:help@example.com?subject=Hi&amp;body=x">Email us</a>
      &middot; <a href="tel:+15555550100">Call</a> &middot; <a href="#terms">Terms</a></td></tr>
    <tr><td>Prices &lt; 10&euro;&nbsp;&mdash; see <a href=https://example.com/plain>details</a></td></tr>
  </TABLE>
  <p style="font-size:11px">Don&#39;t want these? <a href="##unsubscribetag##{LANDING}/goodbye?list=7&amp;u=1">Unsubscribe</a></p>
</td></tr></table>
</BODY>
</HTML>
"""


async def test_rewritten_message_read_in_a_browser_produces_open_click_and_unsub(start, receiver):
    relay = await start()
    landing = receiver.url.rsplit("/", 1)[0] + "/landing"  # a real page to land on
    original = NEWSLETTER.replace("{LANDING}", landing)
    async with relay.http.post(f"{relay.url}/v1/rewrite", json={"html": original, **MSG}) as r:
        assert r.status == 200, await r.text()
        result = await r.json()
    html = result["html"]
    tags = Tags(html)
    hrefs = [a["href"] for a in tags.all("a")]
    public = relay.url

    # What is not a link is kept byte for byte.
    for kept in [
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"',
        "<TITLE>Spring &amp; Summer &ndash; 20&percnt; off</TITLE>",
        '<IMG SRC="https://cdn.example.com/logo.png" ALT="Caf&eacute; &copy; 2024" width="120">',
        "Prices &lt; 10&euro;&nbsp;&mdash; see ",
        '<a href="mailto:help@example.com?subject=Hi&amp;body=x">',
        '<a href="tel:+15555550100">',
        '<a href="#terms">',
        "Don&#39;t want these?",
    ]:
        assert kept in html, kept
    assert html.count("<table") == 1 and html.count("<TABLE") == 1

    # Every http(s) link is wrapped; mailto/tel/#anchors are not.
    clicks = [h for h in hrefs if h.startswith(f"{public}/c/")]
    unsubs = [h for h in hrefs if h.startswith(f"{public}/u/")]
    assert len(unsubs) == 1
    assert "mailto:help@example.com?subject=Hi&body=x" in hrefs
    assert all(h.startswith(public) for h in hrefs if h.lower().startswith("http"))
    pixels = [i["src"] for i in tags.all("img") if i["src"].startswith(f"{public}/o/")]
    assert len(pixels) == 1
    assert html.index(pixels[0].replace("&", "&amp;")) < html.index("</BODY>")
    hidden = [a["href"] for a in tags.all("a") if "display:none" in (a.get("style") or "")]
    assert len(hidden) == 1, "the honeypot link"
    visible_clicks = [h for h in clicks if h not in hidden]
    assert len(visible_clicks) == 3

    headers = result["headers"]
    assert headers["List-Unsubscribe"] == f"<{unsubs[0]}>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # A person reads it in a desktop browser: images load, they click the sale link, then
    # unsubscribe from the footer.
    async with aiohttp.ClientSession(headers=BROWSER) as browser:
        async with browser.get(pixels[0]) as r:
            assert r.status == 200 and len(await r.read()) == GIF_LEN
        async with browser.get(visible_clicks[0]) as r:
            assert r.status == 200
            assert [h.status for h in r.history] == [302]
            assert r.history[0].headers["Location"] == (
                f"{landing}/sale?utm_source=news&utm_medium=email&id=7"
            )
        async with browser.get(unsubs[0]) as r:
            page = await r.text()
        [form] = Tags(page).all("form")
        fields = {i["name"]: i.get("value") or "" for i in Tags(page).all("input") if i.get("name")}
        async with browser.post(
            str(r.url.join(yarl.URL(form.get("action") or ""))), data=fields
        ) as r:
            assert r.status == 200
            assert r.history[0].status == 303
            assert str(r.url) == f"{landing}/goodbye?list=7&u=1"

    # The landing pages were really reached, with their query strings intact.
    landed = [(h.method, h.path, h.query) for h in receiver.hits if h.path.startswith("/landing")]
    assert ("GET", "/landing/sale", "utm_source=news&utm_medium=email&id=7") in landed
    assert ("GET", "/landing/goodbye", "list=7&u=1") in landed

    # The mailbox provider's one-click POST to the List-Unsubscribe URL: recorded once.
    async with relay.http.post(
        headers["List-Unsubscribe"][1:-1], data={"List-Unsubscribe": "One-Click"}
    ) as r:
        assert r.status == 200 and not r.history

    want = {
        "engine_open": None,
        "engine_click": f"{landing}/sale?utm_source=news&utm_medium=email&id=7",
    }
    for etype, click_url in want.items():
        [event] = await arrived(receiver, event_type=etype)
        assert {k: event[k] for k in MSG} == MSG
        assert event["is_bot"] is False and event["bot_reason"] is None, event
        assert event["user_agent"] == CHROME and event["first"] is True
        assert event.get("click_url") == click_url
    [unsub] = await arrived(receiver, event_type="engine_unsub")
    assert {k: unsub[k] for k in MSG} == MSG
    assert await stored(relay) == 3


OUTLOOK_BUTTON = """\
<html><body><div><!--[if mso]>
  <v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" xmlns:w="urn:schemas-microsoft-com:office:word" href="{LANDING}/sale?from=outlook&amp;x=1" style="height:40px;v-text-anchor:middle;width:200px;" arcsize="10%" strokecolor="#1e3650" fill="t">
    <v:fill type="tile" src="https://i.imgur.com/0xPEf.gif" color="#556270" />
    <w:anchorlock/>
    <center style="color:#ffffff;font-family:sans-serif;font-size:13px;font-weight:bold;">Show me the button!</center>
  </v:roundrect>
<![endif]--><a href="{LANDING}/sale?from=web" style="mso-hide:all;">Show me the button!</a></div></body></html>
"""


async def test_a_click_on_an_outlook_vml_button_is_recorded(start, receiver):
    relay = await start()
    landing = receiver.url.rsplit("/", 1)[0] + "/landing"
    original = OUTLOOK_BUTTON.replace("{LANDING}", landing)
    async with relay.http.post(f"{relay.url}/v1/rewrite", json={"html": original, **MSG}) as r:
        assert r.status == 200, await r.text()
        html = (await r.json())["html"]
    start_at, end_at = html.index("<!--[if mso]>"), html.index("<![endif]-->")
    vml = html[start_at:end_at]
    href = html_unescape(re.search(r'<v:roundrect [^>]*href="([^"]+)"', vml).group(1))
    assert href.startswith(f"{relay.url}/c/")
    async with aiohttp.ClientSession(headers=BROWSER) as outlook, outlook.get(href) as r:
        assert r.history[0].status == 302
        assert r.history[0].headers["Location"] == f"{landing}/sale?from=outlook&x=1"
    [event] = await arrived(receiver, event_type="engine_click")
    assert event["click_url"] == f"{landing}/sale?from=outlook&x=1"
    assert {k: event[k] for k in MSG} == MSG


async def test_rewrite_fields_are_exact(start):
    relay = await start()
    for body, field, message in [
        ({"html": "<p>x</p>", "email": 42}, "email", "must be a string"),
        ({"html": "<p>x</p>", **MSG, "sendid": 20110705}, "sendid", "must be a string"),
        ({"html": "<p>x</p>", **MSG, "url": "https://x.example/"}, "url", "unknown key"),
    ]:
        async with relay.http.post(f"{relay.url}/v1/rewrite", json=body) as r:
            assert r.status == 400, body
            [error] = (await r.json())["errors"]
        assert error["field"] == field and error["message"].startswith(message), error


async def test_rewrite_needs_html_and_email_and_the_ingest_token(start):
    relay = await start(extra=f'[ingest]\ntokens = ["{INGEST}"]\n')
    body = {"html": "<p>hi</p>", **MSG}
    async with relay.http.post(f"{relay.url}/v1/rewrite", json=body) as r:
        assert r.status == 401
    for payload, field in [({**MSG}, "html"), ({"html": "<p/>", "listid": "1"}, "email")]:
        async with relay.http.post(
            f"{relay.url}/v1/rewrite", json=payload, headers=auth(INGEST)
        ) as r:
            assert r.status == 400
            assert (await r.json())["errors"][0]["field"] == field
    async with relay.http.post(f"{relay.url}/v1/rewrite", json=body, headers=auth(INGEST)) as r:
        assert r.status == 200
        result = await r.json()
    # No marker in the message: List-Unsubscribe still names a one-click URL that works.
    unsub = result["headers"]["List-Unsubscribe"][1:-1]
    assert unsub.startswith(f"{relay.url}/u/")
    async with relay.http.post(unsub, data={"List-Unsubscribe": "One-Click"}) as r:
        assert r.status == 200


# --- client address: privacy and proxies --------------------------------------------------------


async def test_tracking_ip_truncated_and_none(start, receiver):
    truncated = await start(server=TRUST_LOCAL, tracking='ip = "truncated"\n')
    nothing = await start(tracking='ip = "none"\n')
    for client, kept in [
        ("198.51.100.77", "198.51.100.0"),  # IPv4: its /24
        ("2001:db8:1234:5678::1", "2001:db8:1234::"),  # IPv6: its /48
        ("::ffff:198.51.100.78", "198.51.100.0"),  # an IPv4 peer of a dual-stack socket
    ]:
        pixel = await link(truncated, "open", **{**MSG, "email": f"{client}@example.com"})
        assert_pixel(*await get(truncated, pixel, headers={**BROWSER, "X-Forwarded-For": client}))
        [event] = await arrived(receiver, email=f"{client}@example.com")
        assert event["engine_ip"] == kept

    click = await link(
        nothing, "click", url="https://example.com/", **{**MSG, "email": "n@example.com"}
    )
    assert (await get(nothing, click))[0] == 302
    [event] = await arrived(receiver, email="n@example.com")
    assert event.get("engine_ip") is None
    hit = next(h for h in receiver.hits if b"n@example.com" in h.body)
    assert b"127.0.0.1" not in hit.body and b"127.0.0." not in hit.body


async def test_x_forwarded_for_is_honoured_only_from_trusted_proxies(start, receiver):
    trusted = await start(server=TRUST_LOCAL)
    untrusted = await start(server='trusted_proxies = ["10.0.0.0/8"]\n')
    chain = "203.0.113.9, 198.51.100.7"  # the proxy appended the client it saw last
    for relay, email, expected in [
        (trusted, "t@example.com", "198.51.100.7"),
        (untrusted, "u@example.com", "127.0.0.1"),
    ]:
        click = await link(relay, "click", url="https://example.com/", **{**MSG, "email": email})
        headers = {**BROWSER, "X-Forwarded-For": chain}
        assert (await get(relay, click, headers=headers))[0] == 302
        [event] = await arrived(receiver, email=email)
        assert event["engine_ip"] == expected, relay


# --- machine opens and clicks -----------------------------------------------------------------


def from_ip(ip: str, ua: str | None = CHROME) -> dict:
    headers = {"X-Forwarded-For": ip}
    if ua is not None:
        headers["User-Agent"] = ua
    return {"headers": headers}


async def rewritten(relay: RunningRelay, **fields: str) -> tuple[list[str], str, str]:
    """(visible click URLs, honeypot URL, pixel URL) of a rewritten two-link message."""
    html = (
        '<html><body><a href="https://example.com/one">one</a>'
        ' <a href="https://example.com/two">two</a></body></html>'
    )
    async with relay.http.post(f"{relay.url}/v1/rewrite", json={"html": html, **fields}) as r:
        out = Tags((await r.json())["html"])
    hidden = [a["href"] for a in out.all("a") if "display:none" in (a.get("style") or "")]
    visible = [a["href"] for a in out.all("a") if a["href"] not in hidden]
    [pixel] = [i["src"] for i in out.all("img")]
    return visible, hidden[0], pixel


async def test_bot_rules_end_to_end(start, receiver):
    relay = await start(server=TRUST_LOCAL)

    def msg(name: str) -> dict[str, str]:
        return {**MSG, "email": f"{name}@example.com"}

    # A person at a desktop browser: open, then one click. Never flagged.
    links, _, pixel = await rewritten(relay, **msg("person"))
    assert_pixel(*await get(relay, pixel, **from_ip("203.0.113.10")))
    assert (await get(relay, links[0], **from_ip("203.0.113.10")))[0] == 302

    # Scanner user agents (the default aiohttp one says Python; curl; no user agent at all).
    links, _, _ = await rewritten(relay, **{**msg("scanned"), "sendid": "s-1"})
    assert (await get(relay, links[0], headers={"X-Forwarded-For": "203.0.113.20"}))[0] == 302
    links, _, _ = await rewritten(relay, **{**msg("curled"), "sendid": "s-2"})
    assert (await get(relay, links[0], **from_ip("203.0.113.21", "curl/8.5.0")))[0] == 302
    links, _, _ = await rewritten(relay, **{**msg("no-ua"), "sendid": "s-3"})
    status, _, _ = await get(
        relay,
        links[0],
        headers={"X-Forwarded-For": "203.0.113.22"},
        skip_auto_headers=["User-Agent"],
    )
    assert status == 302

    # A gateway follows every link, the invisible honeypot included; its clicks after that
    # (with a browser user agent) are flagged, and a person elsewhere is not.
    links, honeypot, pixel = await rewritten(relay, **msg("gatewayed"))
    status, headers, _ = await get(relay, honeypot, **from_ip("198.51.100.50"))
    assert status == 200 and "Location" not in headers
    assert await stored(relay) == 5, "the honeypot itself records nothing"
    assert (await get(relay, links[1], **from_ip("198.51.100.50")))[0] == 302
    assert_pixel(*await get(relay, pixel, **from_ip("198.51.100.50")))

    # HEAD from a link checker marks its address too.
    links, _, _ = await rewritten(relay, **msg("headed"))
    assert (await get(relay, links[0], "HEAD", **from_ip("198.51.100.60")))[0] == 302
    assert (await get(relay, links[0], **from_ip("198.51.100.60")))[0] == 302

    # Apple Mail Privacy Protection prefetch; Gmail's image proxy (a person, through a proxy).
    _, _, pixel = await rewritten(relay, **msg("apple"))
    assert_pixel(*await get(relay, pixel, **from_ip("17.58.101.9", "Mozilla/5.0")))
    _, _, pixel = await rewritten(relay, **msg("gmail"))
    gmail = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    assert_pixel(*await get(relay, pixel, **from_ip("66.249.84.1", gmail)))

    # Two different links of one message at the same moment: the later one is a burst.
    links, _, _ = await rewritten(relay, **msg("burst"))
    answers = await asyncio.gather(
        *(get(relay, u, **from_ip(f"192.0.2.{i}")) for i, u in enumerate(links, 1))
    )
    assert [a[0] for a in answers] == [302, 302]

    expect = {
        ("person", "engine_open"): [(False, None)],
        ("person", "engine_click"): [(False, None)],
        ("scanned", "engine_click"): [(True, "scanner-ua")],
        ("curled", "engine_click"): [(True, "scanner-ua")],
        ("no-ua", "engine_click"): [(True, "scanner-ua")],
        ("gatewayed", "engine_click"): [(True, "honeypot")],
        ("gatewayed", "engine_open"): [(True, "honeypot")],
        ("headed", "engine_click"): [(True, "head")],
        ("apple", "engine_open"): [(True, "apple-mpp")],
        ("gmail", "engine_open"): [(False, "google-image-proxy")],
        ("burst", "engine_click"): [(False, None), (True, "burst")],
    }
    await wait_for(lambda: len(received(receiver)) >= 12, 10, "every tracking event")
    got: dict[tuple[str, str], list] = {}
    for e in received(receiver):
        key = (e["email"].split("@")[0], e["event_type"])
        got.setdefault(key, []).append((e["is_bot"], e["bot_reason"]))
    assert {k: sorted(v, key=str) for k, v in got.items()} == expect
    assert await stored(relay) == 12


async def test_bots_drop_keeps_people_and_drops_flagged(start, receiver):
    relay = await start(tracking='bots = "drop"\n')
    scanned = await link(
        relay, "click", url="https://example.com/x", **{**MSG, "email": "bot@example.com"}
    )
    status, headers, _ = await get(relay, scanned, headers={"User-Agent": "curl/8.5.0"})
    assert status == 302 and headers["Location"] == "https://example.com/x", "still redirected"
    pixel = await link(relay, "open", **{**MSG, "email": "bot@example.com"})
    assert_pixel(*await get(relay, pixel, headers={"User-Agent": "python-requests/2.31"}))
    assert await stored(relay) == 0

    person = await link(relay, "click", url="https://example.com/x", **MSG)
    assert (await get(relay, person))[0] == 302
    [event] = await arrived(receiver, event_type="engine_click")
    assert event["email"] == MSG["email"] and event["is_bot"] is False
    assert await stored(relay) == 1


# --- property: nothing a client sends to the tracking routes is a 500 ---------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
printable = st.characters(exclude_categories=("Cs",))


@pytest.fixture
async def fuzz_relay(start):
    return await start()


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    base=st.sampled_from(["", "open", "click", "unsub", "signup"]),
    cut=st.integers(0, 400),
    suffix=st.text(printable, max_size=40) | st.text(B64URL + ".", max_size=40),
    noise=st.text(printable, max_size=300) | st.text(B64URL + ".", max_size=300),
    body=st.binary(max_size=300)
    | st.sampled_from([b"List-Unsubscribe=One-Click", b"email=a%40example.com&website="])
    | st.builds(
        lambda disposition, value: (
            b"--xyz\r\nContent-Disposition: form-data; "
            + disposition
            + b"\r\n\r\n"
            + value
            + b"\r\n--xyz--\r\n"
        ),
        st.sampled_from([b'name="email"', b"name=", b'filename="a"', b"", b'name="a"; x']),
        st.binary(max_size=100),
    ),
    ctype=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "text/plain",
            "application/json",
        ]
    ),
)
async def test_tracking_routes_never_answer_500(fuzz_relay, base, cut, suffix, noise, body, ctype):
    relay = fuzz_relay
    made = ""
    if base:
        signer = Signer([SECRET], relay.url)
        url = signer.url(base, email="f@example.com", url="https://example.com/f", listid="1")
        made = url.rsplit("/", 1)[1].removesuffix(".gif")
        token = made[:cut] + suffix
    else:
        token = noise
    valid = bool(made) and token == made  # cut at or past the end, nothing appended
    quoted = quote(token, safe="") or "x"
    for method, path, kind in [
        ("GET", f"/o/{quoted}.gif", "open"),
        ("GET", f"/c/{quoted}", "click"),
        ("HEAD", f"/c/{quoted}", "click"),
        ("GET", f"/u/{quoted}", "unsub"),
        ("POST", f"/u/{quoted}", "unsub"),
        ("POST", f"/s/{quoted}", "signup"),
    ]:
        url = yarl.URL(relay.url + path, encoded=True)
        async with relay.http.request(
            method,
            url,
            data=body if method == "POST" else None,
            headers={"Content-Type": ctype} if method == "POST" else None,
            allow_redirects=False,
        ) as r:
            got = await r.read()
            where = (method, path, r.status, valid)
            if kind == "open":  # the pixel answers the GIF to every token, valid or not
                assert (r.status, r.headers["Content-Type"]) == (200, "image/gif"), where
                assert len(got) == 43, where
            elif not (valid and base == kind):  # tampered, cut, extended or another kind's
                assert r.status == 404, where
            elif kind == "click":
                assert r.status == 302, where
                assert r.headers["Location"] == "https://example.com/f", where
            elif method == "GET":  # the unsubscribe page, which changes nothing
                assert r.status == 200, where
            elif r.status == 400:  # a body that is not a form, or no plausible email
                assert got == b'{"error":"bad request"}' or b"does not look right" in got, where
            elif kind == "unsub" and r.status == 200:  # RFC 8058 one-click
                assert got == b"unsubscribed", where
            else:  # confirmed: on to the signed landing page, or past a filled honeypot
                assert r.status == 303, where
                assert r.headers["Location"] == "https://example.com/f", where
