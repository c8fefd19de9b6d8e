"""The console's pages and actions (`/console/…`); every figure comes from `Admin`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import shlex
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import jinja2
import orjson
from aiohttp import web

from ...admin import Admin
from ...config import Config, HttpDestination
from ...config.reader import parse_duration
from ...current import Current
from ...destinations.http import build_request
from ...dispatch.log import DispatchLog
from ...domain.replay import ReplayError, ReplayRequest
from ...models import Claimed
from ...store import AttemptFilter
from . import live
from .guard import ACTOR, CURRENT, HEADERS, JINJA, render
from .render import FILTERS

log = logging.getLogger("relay.console")
HERE = Path(__file__).parent
LIVE = web.AppKey("console_live", live.LiveTail)
ADMIN = web.AppKey("console_admin", Admin)  # one for the app's life, shared with the admin API
PAGE = 50  # attempts and dead letters per page
OUTCOMES = ("delivered", "retry", "dead", "failed")
TAIL_OUTCOMES = ("delivered", "retry", "dead", "leased", "acked")
PAUSE_CHOICES = (("", "until resumed"), ("15m", "15 min"), ("1h", "1 hour"), ("4h", "4 hours"))
_IDS = re.compile(r"[\s,]+")


class Flashes:
    """Messages shown once after a POST → 303 (`?flash=ID`), kept in memory a few minutes.

    Server-side rather than in the URL, so nobody can link someone to a page showing a
    message of their choosing.
    """

    KEEP_S, MAX = 300.0, 256

    def __init__(self) -> None:
        self.items: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def add(self, message: str) -> str:
        now = time.time()
        while self.items and (
            len(self.items) >= self.MAX or next(iter(self.items.values()))[0] < now - self.KEEP_S
        ):
            self.items.popitem(last=False)
        key = secrets.token_urlsafe(9)
        self.items[key] = (now, message)
        return key

    def get(self, key: str | None) -> str | None:
        item = self.items.get(key or "")
        return item[1] if item and item[0] >= time.time() - self.KEEP_S else None


FLASHES = web.AppKey("console_flashes", Flashes)


class OverdueCache:
    """`Admin.overdue()` at most every `console.unsub_deadline / 10` (≤ 30 s), refreshed in
    the background while the page shows the last answer.

    The store answers it with a scan of the live backlog (no counter exists for it): ~170 ms
    at a million pending deliveries, more when the backlog is older than the deadline. A
    banner about a 24-hour deadline may be half a minute late; the overview may not be slow.
    """

    def __init__(self) -> None:
        self.value: list[dict[str, Any]] | None = None
        self.at = 0.0
        self.task: asyncio.Task | None = None

    async def get(self, a: Admin, deadline_s: float) -> list[dict[str, Any]]:
        ttl = min(30.0, deadline_s / 10)
        if self.value is None:
            await self._refresh(a)
        elif time.monotonic() - self.at > ttl and self.task is None:
            self.task = asyncio.create_task(self._refresh(a))
            self.task.add_done_callback(self._done)
        return self.value or []

    async def _refresh(self, a: Admin) -> None:
        at = time.monotonic()
        self.value, self.at = await a.overdue(), at

    def _done(self, task: asyncio.Task) -> None:
        self.task = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("overdue check failed: %s", task.exception())


OVERDUE = web.AppKey("console_overdue", OverdueCache)


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


def parse_time(value: str, field: str) -> float | None:
    """Epoch seconds, ISO 8601, or a duration meaning that long ago (`2h`) — as the CLI."""
    value = value.strip()
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return float(value)
    with contextlib.suppress(ValueError):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()  # naive: UTC
    with contextlib.suppress(ValueError):
        return time.time() - parse_duration(value)
    raise bad_request(f"{field}: not a time: {value!r} (epoch seconds, ISO 8601, or e.g. 2h)")


def admin(request: web.Request) -> Admin:
    return request.app[ADMIN]


def config(request: web.Request) -> Config:
    """The config in force: a reload counts at the next request."""
    return request.app[CURRENT].config


def known_destination(request: web.Request, name: str) -> None:
    if name not in config(request).destinations:
        raise web.HTTPNotFound(text=f"No destination named {name!r}.")


def redirect(request: web.Request, location: str, message: str) -> web.HTTPSeeOther:
    key = request.app[FLASHES].add(message)
    sep = "&" if "?" in location else "?"
    return web.HTTPSeeOther(f"{location}{sep}flash={key}")


def safe_back(value: str | None, default: str) -> str:
    """Only a console path: never an open redirect."""
    if value and value.startswith("/console/") and value.isprintable() and "\\" not in value:
        return value
    return default


def page(name: str, request: web.Request, ctx: dict[str, Any], status: int = 200) -> web.Response:
    flash = request.app[FLASHES].get(request.query.get("flash"))
    return render(name, request, {"flash": flash, **ctx}, status)


def qs(**params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"?{urlencode(kept)}" if kept else ""


# -- pages -------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    a = admin(request)
    rows, overdue, audit = await asyncio.gather(
        a.destinations(),
        request.app[OVERDUE].get(a, config(request).console.unsub_deadline_s),
        a.audit_log(20),
    )
    return page(
        "overview.html",
        request,
        {"title": "Overview", "rows": rows, "overdue": overdue, "audit": audit, "refresh": True},
    )


async def destination(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    known_destination(request, name)
    q = request.query
    outcome = q.get("outcome", "").strip()
    if outcome and outcome not in OUTCOMES:
        raise bad_request(f"outcome: must be one of {', '.join(OUTCOMES)}")
    event_type = q.get("event_type", "").strip()
    since = parse_time(q.get("since", ""), "since")
    until = parse_time(q.get("until", ""), "until")
    before = None
    if q.get("before"):
        try:
            ts, delivery_id, attempt = q["before"].rsplit(":", 2)
            before = (float(ts), int(delivery_id), int(attempt))
        except ValueError:
            raise bad_request("before: not a cursor from this page") from None
    a = admin(request)
    where = AttemptFilter(name, outcome or None, event_type or None, since, until, before)
    rows, attempts, groups = await asyncio.gather(
        a.destinations(), a.recent_attempts(where, PAGE), a.failure_groups(name)
    )
    row = next(r for r in rows if r["name"] == name)
    filters = {
        "outcome": outcome,
        "event_type": event_type,
        "since": q.get("since", ""),
        "until": q.get("until", ""),
    }
    older = qs(**filters, before=attempts[-1]["cursor"]) if len(attempts) == PAGE else None
    return page(
        "destination.html",
        request,
        {
            "title": name,
            "d": row,
            "attempts": attempts,
            "groups": groups,
            "filters": filters,
            "outcomes": OUTCOMES,
            "older": older,
            "pause_choices": PAUSE_CHOICES,
            "refresh": True,
        },
    )


async def event(request: web.Request) -> web.Response:
    event_id = request.match_info["id"]
    view = await admin(request).event_view(event_id)
    if view is None:
        raise web.HTTPNotFound(text=f"No event with id {event_id!r}.")
    curls = {}
    for d in view["destinations"]:
        dest = config(request).destinations.get(d["name"])
        if dest is not None and dest.type == "http":
            curls[d["name"]] = curl(dest, view["event"])
    return page(
        "event.html",
        request,
        {
            "title": f"Event {event_id}",
            "view": view,
            "fields": sorted(view["event"].items()),
            "event_json": orjson.dumps(view["event"], option=orjson.OPT_INDENT_2).decode(),
            "curls": curls,
            "first_curl": next(iter(curls), None),
        },
    )


def curl(dest: HttpDestination, event: dict[str, Any]) -> str:
    """The request relay sends this event to an http destination, as a curl command: built
    by the sender's own `build_request`, so the two cannot drift apart.

    Header values from the config and the signature headers are placeholders: the page never
    shows a secret. Masked email addresses stay masked.
    """
    claim = Claimed(0, 0, str(event.get("id", "")), "", orjson.dumps(event), 1, 0.0)
    url, body, headers, _ = build_request(dest, [claim], with_signature=False)
    for name, _ in dest.headers:
        headers[name] = f"<{name} from the config>"
    headers["webhook-id"] = "<webhook-id>"
    if dest.signing_key is not None:
        headers["webhook-timestamp"] = "<unix time>"
        headers["webhook-signature"] = "<v1,signature made with signing_secret>"
    lines = [f"curl -X {dest.method} {shlex.quote(url)}"]
    lines += [f"  -H {shlex.quote(f'{k}: {v}')}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"  --data-binary {shlex.quote(body.decode())}")
    return " \\\n".join(lines)


async def dead(request: web.Request) -> web.Response:
    q = request.query
    name = q.get("destination", "").strip() or None
    if name is not None:
        known_destination(request, name)
    try:
        after = int(q.get("after", "0") or 0)
    except ValueError:
        raise bad_request("after: must be an integer id") from None
    a = admin(request)
    listing, groups = await asyncio.gather(
        a.dead(name, None, None, after, PAGE), a.dead_groups(name)
    )
    nxt = listing["next_after"]
    return page(
        "dead.html",
        request,
        {
            "title": "Dead letters",
            "groups": groups,
            "items": listing["dead"],
            "destination": name or "",
            "names": sorted(config(request).destinations),
            "next": qs(destination=name, after=nxt) if nxt is not None else None,
        },
    )


def tail_filters(request: web.Request) -> dict[str, str | None]:
    q = request.query
    outcome = q.get("outcome", "").strip() or None
    if outcome is not None and outcome not in TAIL_OUTCOMES:
        raise bad_request(f"outcome: must be one of {', '.join(TAIL_OUTCOMES)}")
    return {
        "destination": q.get("destination", "").strip() or None,
        "event_type": q.get("event_type", "").strip() or None,
        "outcome": outcome,
    }


async def tail_page(request: web.Request) -> web.Response:
    filters = tail_filters(request)
    tail = request.app[LIVE]
    lines = tail.recent(filters, 100, config(request).console.show_emails)
    return page(
        "tail.html",
        request,
        {
            "title": "Live tail",
            "lines": lines,
            "filters": {k: v or "" for k, v in filters.items()},
            "outcomes": TAIL_OUTCOMES,
            "names": sorted(config(request).destinations),
            "stream": "/console/tail/stream" + qs(**filters),
            "last_id": tail.last_id,
        },
    )


async def tail_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each new dispatch-log line matching the filters, with its id."""
    filters = tail_filters(request)
    tail = request.app[LIVE]
    resume = request.headers.get("Last-Event-ID") or request.query.get("after")
    try:
        last = int(resume) if resume else tail.last_id
    except ValueError:
        raise bad_request("Last-Event-ID: must be an id from this stream") from None
    if last > tail.last_id:  # not an id of this run: start from now
        last = tail.last_id
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no", **HEADERS}
    )
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    wake = asyncio.Event()
    tail.waiters.add(wake)
    try:
        while not tail.closed:
            wake.clear()
            show = config(request).console.show_emails
            out = [
                live.sse(live.render(line_id, line, show))
                for line_id, line in tail.after(last)
                if live.matches(line, **filters)
            ]
            last = max(last, tail.last_id)
            if out:
                await response.write(b"".join(out))
            try:
                await asyncio.wait_for(wake.wait(), live.KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        tail.waiters.discard(wake)
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


# -- actions -----------------------------------------------------------------------------------


async def pause(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    known_destination(request, name)
    form = await request.post()
    raw = str(form.get("for", "")).strip()
    try:
        for_s = parse_duration(raw) if raw else None
    except ValueError as exc:
        raise bad_request(f"for: {exc}") from None
    await admin(request).pause(name, for_s, request[ACTOR])
    what = f"for {raw}" if raw else "until resumed"
    raise redirect(request, f"/console/destinations/{quote(name)}", f"Paused {name} {what}.")


async def resume(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    known_destination(request, name)
    await admin(request).resume(name, request[ACTOR])
    raise redirect(request, f"/console/destinations/{quote(name)}", f"Resumed {name}.")


async def replay(request: web.Request) -> web.Response:
    """A dry run (`dry_run=1`) shows the count and sample ids with a confirm button;
    the confirm (no `dry_run`) replays and redirects back with the count."""
    form = await request.post()
    name = str(form.get("destination", "")).strip() or None
    if name is not None:
        known_destination(request, name)
    group = str(form.get("group", "")).strip() or None
    ids = tuple(i for i in _IDS.split(str(form.get("ids", ""))) if i)
    since = parse_time(str(form.get("since", "")), "since")
    until = parse_time(str(form.get("until", "")), "until")
    rate_raw = str(form.get("rate", "")).strip()
    try:
        rate = float(rate_raw) if rate_raw else None
    except ValueError:
        rate = math.nan  # refused by the request, with the same words as everywhere
    dry_run = str(form.get("dry_run", "")) in ("1", "true", "on", "yes")
    back = safe_back(
        str(form.get("back", "")),
        f"/console/destinations/{quote(name)}" if name else "/console/dead",
    )
    try:
        req = ReplayRequest(name, ids, since, until, group, rate, dry_run)
    except ReplayError as exc:
        raise bad_request(str(exc)) from None
    result = await admin(request).replay(req, request[ACTOR])
    if not dry_run:
        n = result["replayed"]
        paced = f" at {rate:g}/s" if rate else ""
        raise redirect(request, back, f"Replayed {n} event{'s' if n != 1 else ''}{paced}.")
    cli = ["relay", "dead", "replay"]
    if name:
        cli += ["--destination", name]
    if group or ids:
        shown = result["sample_ids"] if group else list(ids)
        for i in shown[:20]:
            cli += ["--id", i]
        if result["matched"] > len(shown[:20]):
            cli.append("…")
    if since is not None:
        cli += ["--since", str(round(since, 3))]
    if until is not None:
        cli += ["--until", str(round(until, 3))]
    return page(
        "replay.html",
        request,
        {
            "title": "Replay",
            "matched": result["matched"],
            "samples": result["sample_ids"],
            "hidden": {
                "destination": name or "",
                "group": group or "",
                "ids": " ".join(ids),
                "since": "" if since is None else repr(since),
                "until": "" if until is None else repr(until),
                "back": back,
            },
            "rate": rate_raw,
            "back": back,
            "cli": " ".join(shlex.quote(c) if c != "…" else c for c in cli),
            "target": name or "every destination",
            "group": group,
        },
    )


# -- wiring ------------------------------------------------------------------------------------


def add_routes(
    app: web.Application, admin: Admin, current: Current, dispatch_log: DispatchLog
) -> None:
    """Pages, actions, static files and the live tail (fed by `dispatch_log`). Their auth,
    error pages and headers are `guard.serve`, which `relay.web.front` runs for every
    request under /console."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        app_key=JINJA,
        autoescape=True,
        filters=FILTERS,
        default_helpers=False,
        undefined=jinja2.StrictUndefined,
    )
    app[ADMIN] = admin
    app[CURRENT] = current
    app[FLASHES] = Flashes()
    app[OVERDUE] = OverdueCache()
    tail = app[LIVE] = live.LiveTail()
    dispatch_log.listeners.add(tail.feed)

    async def on_shutdown(app: web.Application) -> None:
        tail.close()  # open streams end now: shutdown does not wait for them
        if (task := app[OVERDUE].task) is not None:
            task.cancel()

    async def on_cleanup(app: web.Application) -> None:
        dispatch_log.listeners.discard(tail.feed)

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    r = app.router
    r.add_get("/console", to_overview)
    r.add_get("/console/", overview)
    r.add_get("/console/destinations/{name}", destination)
    r.add_post("/console/destinations/{name}/pause", pause)
    r.add_post("/console/destinations/{name}/resume", resume)
    r.add_post("/console/replay", replay)
    r.add_get("/console/events/{id}", event)
    r.add_get("/console/dead", dead)
    r.add_get("/console/tail", tail_page)
    r.add_get("/console/tail/stream", tail_stream)
    r.add_static("/console/static/", HERE / "static", append_version=False)


async def to_overview(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/")
