"""The operator console (`/console/…`, issue 9): the real app on a real socket, driven with
an HTTP client (the browser tests drive the same pages in Chromium).

Covers what each page shows, the forms (POST → 303 → GET with a flash), same-origin and
read-only refusals, the security headers, masked emails, and the live tail's SSE stream
(new lines, resume by Last-Event-ID, prompt end on shutdown).
"""

from __future__ import annotations

import asyncio
import base64
import html
import re

import aiohttp
import orjson

from ..helpers import base_toml, free_port, wait_for

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'"
)
FAST_RETRY = 'retry = { initial = "50ms", max = "100ms", multiplier = 2.0, max_attempts = 2 }\n'


def toml(url: str, console: str = "", crm_extra: str = "", more: bool = False) -> str:
    """crm (http) and feed (pull), plus an email and an ftp destination when `more`."""
    text = (
        base_toml()
        + f'[destinations.crm]\ntype = "http"\nurl = "{url}"\ntimeout = "300ms"\n'
        + FAST_RETRY
        + crm_extra
        + '[destinations.feed]\ntype = "pull"\n'
    )
    names = ["crm", "feed"]
    if more:
        text += (
            f'[destinations.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {free_port()}\n'
            'from = "relay@example.com"\nto = ["ops@example.com"]\ndigest = "1h"\n'
            f'[destinations.logs]\ntype = "ftp"\nhost = "127.0.0.1"\nport = {free_port()}\n'
            'username = "relay"\npassword = "s3cret"\nupload_every = "1h"\n'
        )
        names += ["mail", "logs"]
    text += f'[[routes]]\nevents = ["*"]\ndestinations = {orjson.dumps(names).decode()}\n'
    if console:
        text += "[console]\n" + console
    return text


def bounce(event_id: str, email: str = "jane.doe@example.com") -> dict:
    return {"event_type": "bounce", "email": email, "id": event_id}


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


def row(page: str, destination: str) -> dict[str, str]:
    """The overview row of one destination: cell class → its text."""
    m = re.search(rf'<tr data-destination="{destination}"[^>]*>(.*?)</tr>', page, re.S)
    assert m, f"no row for {destination}"
    cells = re.findall(r'<t[dh][^>]*class="([\w-]+)[^"]*"[^>]*>(.*?)</t[dh]>', m.group(1), re.S)
    return {cls: text_of(body) if cls != "spark" else body for cls, body in cells}


def element(page: str, element_id: str) -> str:
    m = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert m, f"no #{element_id}"
    return m.group(2)


def attempts(page: str) -> list[str]:
    return re.findall(r'<tr class="attempt" data-outcome="(\w+)"', page)


def assert_no_inline_code(page: str) -> None:
    for tag in re.findall(r"<script\b[^>]*>", page):
        assert 'src="/console/static/' in tag, tag
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", page), "inline script"
    assert not re.search(r"\sstyle=", page), "inline style attribute"
    assert not re.search(r"<style\b", page), "inline style element"
    assert not re.search(r"\son\w+=", page), "inline event handler"


class Console:
    """A client for one relay's console, sending same-origin headers on POST by default."""

    def __init__(self, relay, auth: str | None = None) -> None:
        self.relay = relay
        self.headers = {"Authorization": auth} if auth else {}

    async def get(self, path: str, **kw) -> tuple[aiohttp.ClientResponse, str]:
        async with self.relay.http.get(
            self.relay.url + path, headers=self.headers, allow_redirects=False, **kw
        ) as resp:
            return resp, await resp.text()

    async def post(
        self, path: str, data: dict | None = None, headers: dict | None = None
    ) -> tuple[aiohttp.ClientResponse, str]:
        if headers is None:
            headers = {"Origin": self.relay.url, "Sec-Fetch-Site": "same-origin"}
        async with self.relay.http.post(
            self.relay.url + path,
            data=data or {},
            headers={**self.headers, **headers},
            allow_redirects=False,
        ) as resp:
            return resp, await resp.text()

    async def follow(self, resp: aiohttp.ClientResponse) -> str:
        assert resp.status == 303, resp.status
        location = resp.headers["Location"]
        assert location.startswith("/console/")
        got, body = await self.get(location)
        assert got.status == 200
        return body


async def test_overview_lists_every_destination_with_its_figures(make_relay, receiver):
    relay = await make_relay(toml(receiver.url, more=True))
    for i in range(3):
        assert (await relay.post_events(bounce(f"ov{i}"))).status == 202
    await wait_for(lambda: len(receiver.hits) == 3, 5, "deliveries to crm")
    console = Console(relay)

    resp, page = await console.get("/console/")
    assert resp.status == 200 and resp.content_type == "text/html"
    crm, feed, mail, logs = (row(page, n) for n in ("crm", "feed", "mail", "logs"))
    assert crm["state"] == "ok" and crm["pending"] == "0"
    assert crm["failure-5m"] == "0%" and crm["last-success"] != "—"
    assert crm["forecast"] == "empty" and crm["last-error"] == "—"
    assert "3 delivered, 0 failed" in crm["spark"] and "<svg" in crm["spark"]
    assert feed["state"] == "ok" and feed["pending"] == "3"  # nobody pulled yet
    assert feed["oldest"].endswith("s") and "last pull" in feed["detail"]
    assert mail["pending"] == "3" and "next digest" in mail["detail"]
    assert "last SMTP reply" in mail["detail"]
    assert logs["pending"] == "3" and "next upload" in logs["detail"]
    assert "last file" in logs["detail"]
    for cls in ("oldest", "failure-1h", "last-success", "last-error", "forecast", "spark"):
        assert cls in crm
    assert 'id="audit"' in page and 'id="overdue"' not in page
    assert 'data-refresh="5"' in page  # console.js refreshes <main> every 5 s
    assert (await console.get("/console"))[0].headers["Location"][:8] == "/console"


async def test_failing_receiver_turns_the_row_failing_with_status_and_snippet(make_relay, receiver):
    receiver.default = 500  # answers "nope"
    relay = await make_relay(toml(receiver.url))
    assert (await relay.post_events(bounce("f1"))).status == 202
    console = Console(relay)

    async def failing() -> bool:
        return row((await console.get("/console/"))[1], "crm")["state"] == "failing"

    await wait_for(failing, 5, "crm to show failing")
    crm = row((await console.get("/console/"))[1], "crm")
    assert "500" in crm["last-error"] and "nope" in crm["last-error"]
    assert crm["failure-5m"] == "100%"
    assert "0 delivered" in crm["spark"] and "0 failed" not in crm["spark"]


async def test_destination_page_attempts_filters_groups_and_pages(make_relay, receiver):
    receiver.script = [500]  # the first request fails, then everything succeeds
    relay = await make_relay(toml(receiver.url))
    events = [{**bounce(f"d{i:02}"), "event_type": "bounce" if i else "scomp"} for i in range(55)]
    assert (await relay.post_events(events)).status == 202
    await wait_for(lambda: len(set(receiver.delivered_ids())) == 55, 10, "all delivered")
    await wait_for(lambda: len(receiver.hits) == 56, 5, "the retry")
    tally = relay.runtime.outcomes.tallies["crm"]  # counted once the store has the attempt
    await wait_for(lambda: tally["delivered"] == 55 and tally["retry"] == 1, 5, "recorded")
    console = Console(relay)

    resp, page = await console.get("/console/destinations/crm")
    assert resp.status == 200
    rows = attempts(page)
    assert len(rows) == 50 and set(rows) <= {"delivered", "retry"}
    assert 'id="attempts"' in page and 'id="failure-groups"' in page
    group = re.search(r'<tr data-group="(\w+)">(.*?)</tr>', page, re.S)
    assert group and "HTTP 500" in text_of(group.group(2))
    assert "Replay this group" in group.group(2)
    for form, button, cli in (
        ("pause", "Pause", "relay pause crm"),
        ("resume", "Resume", "relay resume crm"),
        ("replay", "Replay…", "relay dead replay --destination crm"),
    ):
        m = re.search(rf'<form class="{form}"[^>]*>(.*?)</form>', page, re.S)
        assert m, form
        assert f">{button}</button>" in m.group(1)
        assert f'<code class="cli">{cli}</code>' in m.group(1)
    assert re.search(r'<select name="for">.*15m.*1h.*4h', page, re.S)

    # the older link pages on (keyset), and carries the filters
    older = re.search(r'<a class="older"[^>]*href="([^"]+)"', page)
    assert older
    _, page2 = await console.get(html.unescape(older.group(1)))
    assert len(attempts(page2)) == 6  # 55 delivered + 1 retry

    _, retries = await console.get("/console/destinations/crm?outcome=failed")
    assert attempts(retries) == ["retry"]
    _, scomp = await console.get("/console/destinations/crm?event_type=scomp")
    assert sorted(attempts(scomp)) == ["delivered", "retry"]
    _, future = await console.get("/console/destinations/crm?since=2999-01-01T00:00:00Z")
    assert attempts(future) == []
    _, recent = await console.get("/console/destinations/crm?since=1h&outcome=delivered")
    assert set(attempts(recent)) == {"delivered"}
    resp, body = await console.get("/console/destinations/crm?outcome=bogus")
    assert resp.status == 400 and resp.content_type == "text/html" and "outcome" in body
    resp, body = await console.get("/console/destinations/nope")
    assert resp.status == 404 and resp.content_type == "text/html" and "nope" in body


async def test_pause_and_resume_forms_post_redirect_get(make_relay, receiver):
    relay = await make_relay(toml(receiver.url))
    console = Console(relay)

    resp, _ = await console.post("/console/destinations/crm/pause", {"for": "1h"})
    assert resp.status == 303
    page = await console.follow(resp)
    assert "Paused crm for 1h" in text_of(element(page, "flash"))
    assert "crm" in relay.runtime.paused
    assert row(page, "crm")["state"] == "paused"
    assert (await relay.post_events(bounce("p1"))).status == 202
    await asyncio.sleep(0.5)  # a window for a wrong send while paused (one takes ms)
    assert receiver.hits == []
    assert row((await console.get("/console/"))[1], "crm")["pending"] == "1"

    resp, _ = await console.post("/console/destinations/crm/resume")
    page = await console.follow(resp)
    assert "Resumed crm" in text_of(element(page, "flash"))
    await wait_for(lambda: receiver.delivered_ids() == ["p1"], 5, "delivery after resume")

    _, overview = await console.get("/console/")
    audit = text_of(element(overview, "audit"))
    assert "pause" in audit and "resume" in audit and "loopback" in audit
    resp, _ = await console.post("/console/destinations/crm/pause", {"for": "soon"})
    assert resp.status == 400
    resp, _ = await console.post("/console/destinations/nope/pause")
    assert resp.status == 404


async def test_replay_dry_run_confirms_then_replays_exactly_those(make_relay, receiver):
    receiver.default = 500
    relay = await make_relay(toml(receiver.url))
    ids = [f"r{i}" for i in range(3)]
    assert (await relay.post_events([bounce(i) for i in ids])).status == 202
    console = Console(relay)

    async def dead() -> bool:
        return row((await console.get("/console/"))[1], "crm")["dead"] == "3"

    await wait_for(dead, 5, "three dead")
    _, page = await console.get("/console/dead")
    assert set(re.findall(r'<tr class="dead" data-event-id="(\w+)"', page)) == set(ids)
    groups = re.findall(r'<tr data-group="(\w+)" data-destination="crm">', page)
    assert len(groups) == 1
    assert ">3</td>" in element(page, "dead-groups")

    # the group's dry run: count and samples, nothing changes
    resp, confirm = await console.post(
        "/console/replay", {"destination": "crm", "group": groups[0], "dry_run": "1"}
    )
    assert resp.status == 200
    assert text_of(element(confirm, "replay-count")) == "3"
    assert set(re.findall(r">(r\d)</a>", element(confirm, "replay-samples"))) == set(ids)
    assert ">Replay 3 events</button>" in confirm
    assert row((await console.get("/console/"))[1], "crm")["dead"] == "3"

    # confirm (the hidden fields of the confirm form), paced by the optional rate field
    receiver.default = 200
    hits_before = len(receiver.hits)
    form = re.search(r'<form class="replay-confirm"[^>]*>(.*?)</form>', confirm, re.S)
    assert form
    fields = {
        k: html.unescape(v)
        for k, v in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(1))
    }
    resp, _ = await console.post("/console/replay", {**fields, "rate": "100"})
    page = await console.follow(resp)
    assert "Replayed 3 events" in text_of(element(page, "flash"))
    await wait_for(lambda: len(receiver.hits) == hits_before + 3, 5, "the replayed three")
    assert sorted(receiver.delivered_ids()[-3:]) == ids

    # the destination page's "Replay…" (all dead of crm): now nothing is left
    resp, confirm = await console.post("/console/replay", {"destination": "crm", "dry_run": "1"})
    assert text_of(element(confirm, "replay-count")) == "0"
    assert "replay-confirm" not in confirm
    _, overview = await console.get("/console/")
    assert "replay" in text_of(element(overview, "audit"))


async def test_cross_site_posts_are_refused(make_relay, receiver):
    relay = await make_relay(toml(receiver.url))
    console = Console(relay)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "null"},
        {"Sec-Fetch-Mode": "navigate"},  # a browser that sent neither Origin nor Site
    ):
        resp, body = await console.post("/console/destinations/crm/pause", headers=headers)
        assert resp.status == 403, headers
        assert resp.content_type == "text/html" and "Cross-site" in body
        assert resp.headers["Content-Security-Policy"] == CSP
    assert relay.runtime.paused == {}
    # same origin by Sec-Fetch-Site, by Origin alone, and a non-browser client (no headers)
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Origin": relay.url}, {}):
        resp, _ = await console.post("/console/destinations/crm/resume", headers=headers)
        assert resp.status == 303, headers


async def test_read_only_hides_forms_and_refuses_posts(make_relay, receiver):
    receiver.default = 500
    relay = await make_relay(toml(receiver.url, console="read_only = true\n"))
    assert (await relay.post_events(bounce("ro1"))).status == 202
    console = Console(relay)
    await wait_for(lambda: relay.runtime.outcomes.activities["crm"].last_failure, 5, "a failure")
    for path in ("/console/", "/console/destinations/crm", "/console/dead", "/console/tail"):
        resp, page = await console.get(path)
        assert resp.status == 200
        assert 'method="post"' not in page, path
        assert "read-only" in page
    for path, data in (
        ("/console/destinations/crm/pause", {}),
        ("/console/destinations/crm/resume", {}),
        ("/console/replay", {"destination": "crm", "dry_run": "1"}),
    ):
        resp, body = await console.post(path, data)
        assert resp.status == 403 and "read-only" in body
    assert relay.runtime.paused == {}


async def test_security_headers_and_no_inline_code_on_every_page(make_relay, receiver):
    relay = await make_relay(toml(receiver.url))
    assert (await relay.post_events(bounce("s1"))).status == 202
    await wait_for(lambda: receiver.hits, 5, "a delivery")
    console = Console(relay)
    for path, status in (
        ("/console/", 200),
        ("/console/destinations/crm", 200),
        ("/console/destinations/feed", 200),
        ("/console/events/s1", 200),
        ("/console/dead", 200),
        ("/console/tail", 200),
        ("/console/events/nope", 404),
        ("/console/no-such-page", 404),
        ("/console/static/console.js", 200),
        ("/console/static/console.css", 200),
    ):
        resp, page = await console.get(path)
        assert resp.status == status, path
        assert resp.headers["Content-Security-Policy"] == CSP, path
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["Cache-Control"] == "no-store"
        if path.startswith("/console/static/"):
            continue
        assert resp.content_type == "text/html", path
        assert_no_inline_code(page)
    # the API keeps its JSON errors and does not get the console's headers
    async with relay.http.get(relay.url + "/v1/nope") as resp:
        assert resp.content_type == "application/json"
        assert "Content-Security-Policy" not in resp.headers


async def test_emails_are_masked_unless_show_emails(make_relay, receiver, tmp_path):
    receiver.default = 500
    relay = await make_relay(
        toml(
            receiver.url,
            crm_extra='headers = { Authorization = "Bearer hunter2" }\n'
            'signing_secret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="\n',
        )
    )
    assert (await relay.post_events(bounce("m1", "jane.doe@example.com"))).status == 202
    console = Console(relay)
    await wait_for(lambda: receiver.hits, 5, "an attempt")
    resp, page = await console.get("/console/events/m1")
    assert resp.status == 200
    assert "jane.doe@example.com" not in page and "j***@example.com" in page
    assert 'data-destination="crm"' in page and 'data-destination="feed"' in page
    curl = html.unescape(element(page, "curl"))
    assert curl.startswith("curl -X POST " + receiver.url)
    assert "Content-Type: application/json" in curl and '"id":"m1"' in curl
    assert "Authorization: <" in curl
    assert "webhook-signature: <v1,signature made with signing_secret>" in curl  # the config key
    assert "hunter2" not in page and "whsec_" not in page
    for path in ("/console/", "/console/dead", "/console/tail", "/console/destinations/crm"):
        assert "jane.doe@example.com" not in (await console.get(path))[1], path

    shown = await make_relay(toml(receiver.url, console="show_emails = true\n"), "shown")
    assert (await shown.post_events(bounce("m2", "jane.doe@example.com"))).status == 202
    _, page = await Console(shown).get("/console/events/m2")
    assert "jane.doe@example.com" in page


async def test_overdue_unsubscribes_are_flagged(make_relay, receiver):
    relay = await make_relay(toml(receiver.url, console='unsub_deadline = "1s"\n'))
    assert (
        await relay.post_events({"event_type": "scomp", "email": "a@x.example", "id": "u1"})
    ).status == 202
    console = Console(relay)
    _, page = await console.get("/console/")
    assert 'id="overdue"' not in page
    await asyncio.sleep(1.2)  # past the 1 s unsub_deadline: the event is overdue only now

    async def flagged() -> bool:  # the check runs in the background, at most every 0.1 s here
        return 'id="overdue"' in (await console.get("/console/"))[1]

    await wait_for(flagged, 5, "the overdue banner")
    _, page = await console.get("/console/")
    banner = text_of(element(page, "overdue"))
    assert re.search(r"feed ?: 1 waiting", banner)  # the pull destination nobody pulled


async def test_console_tokens_basic_and_bearer(make_relay, receiver):
    relay = await make_relay(toml(receiver.url, console='tokens = ["t0ken-one"]\n'))
    resp, page = await Console(relay).get("/console/")
    assert resp.status == 401 and resp.content_type == "text/html"
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert resp.headers["Content-Security-Policy"] == CSP
    basic = "Basic " + base64.b64encode(b"ops:t0ken-one").decode()
    console = Console(relay, basic)
    resp, page = await console.get("/console/")
    assert resp.status == 200 and "token#1" in page
    resp, _ = await console.post("/console/destinations/crm/pause")
    assert resp.status == 303
    _, page = await console.get("/console/")
    assert "token#1" in text_of(element(page, "audit"))
    resp, _ = await Console(relay, "Bearer t0ken-one").get("/console/tail")
    assert resp.status == 200
    resp, _ = await Console(relay, "Bearer wrong").get("/console/tail/stream")
    assert resp.status == 401


async def read_event(resp: aiohttp.ClientResponse, timeout: float = 5.0) -> tuple[int, dict]:
    """The next `id:`/`data:` event of an SSE stream (comments and `retry:` skipped)."""
    event_id, data = None, None
    async with asyncio.timeout(timeout):
        while True:
            line = (await resp.content.readline()).decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
            elif line == "" and data is not None:
                assert event_id is not None
                return event_id, data


async def test_live_tail_streams_new_lines_and_resumes_after_reconnect(make_relay, receiver):
    relay = await make_relay(toml(receiver.url))
    console = Console(relay)
    url = relay.url + "/console/tail/stream?destination=crm&outcome=delivered"
    async with relay.http.get(url) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.headers["Content-Security-Policy"] == CSP
        assert (await relay.post_events(bounce("t1"))).status == 202
        first_id, first = await read_event(stream)
        assert first["event_id"] == "t1" and first["outcome"] == "delivered"
        assert "crm" in first["text"] and "j***@example.com" not in first["text"]

    # while nobody listens, two more lines are written; a reconnect resumes after t1
    assert (await relay.post_events([bounce("t2"), bounce("t3")])).status == 202
    await wait_for(lambda: len(receiver.hits) >= 3, 5, "t2 and t3")
    async with relay.http.get(url, headers={"Last-Event-ID": str(first_id)}) as stream:
        got = [await read_event(stream), await read_event(stream)]
    assert sorted(d["event_id"] for _, d in got) == ["t2", "t3"]
    assert all(i > first_id for i, _ in got)

    # an id this run never gave (an older process's) starts from now, not from nothing
    async with relay.http.get(url, headers={"Last-Event-ID": str(10**18)}) as stream:
        assert (await relay.post_events(bounce("t4"))).status == 202
        _, data = await read_event(stream)
    assert data["event_id"] == "t4"

    # the page lists the buffered lines server-side, for a browser without JavaScript
    _, page = await console.get("/console/tail?destination=crm")
    lines = re.findall(r'<li class="line" data-id="(\d+)" data-outcome="(\w+)">', page)
    assert len(lines) == 4 and {o for _, o in lines} == {"delivered"}
    assert re.search(r'<ul id="tail" data-stream="/console/tail/stream\?destination=crm"', page)
    resp, _ = await console.get("/console/tail/stream?outcome=nonsense")
    assert resp.status == 400


async def test_open_tail_stream_ends_promptly_when_the_daemon_stops(make_relay, receiver):
    relay = await make_relay(toml(receiver.url))
    stream_http = aiohttp.ClientSession()
    try:
        resp = await stream_http.get(relay.url + "/console/tail/stream")
        assert resp.status == 200
        assert (await resp.content.readline()).startswith(b"retry:")
        await relay.stop()
        relay.daemon = None  # stopped: the fixture has nothing left to stop
        relay.http = None
        # Ended by the server, cleanly: had shutdown waited for the stream, its 5 s timeout
        # would have cancelled the handler and cut the chunked body short (a payload error).
        async with asyncio.timeout(30):
            rest = await resp.content.read()
        assert b"data:" not in rest
        assert resp.content.at_eof()
        resp.release()
    finally:
        await stream_http.close()


async def test_an_unknown_query_parameter_on_a_console_page_is_a_400_naming_it(
    make_relay, receiver
):
    relay = await make_relay(toml(receiver.url))
    console = Console(relay)
    for path, name in [
        ("/console/dead?destinatoin=crm", "destinatoin"),
        ("/console/destinations/crm?outcome=dead&sort=ts", "sort"),
        ("/console/tail?outcom=dead", "outcom"),
        ("/console/?refresh=5", "refresh"),
    ]:
        resp, body = await console.get(path)
        assert resp.status == 400, path
        assert f"{name}: unknown query parameter" in body, body
    resp, _ = await console.get("/console/dead?destination=crm&after=0")
    assert resp.status == 200
