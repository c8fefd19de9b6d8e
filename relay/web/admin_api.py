"""The admin JSON API (`/v1/admin/*`): what the console shows, for scripts.

Every route needs a console token (`relay.web.auth.console_actor`: Bearer, or Basic
with the token as password); with no `console.tokens` it is open on a loopback listener
only. Actions (pause, resume, replay) answer 403 when `console.read_only` is set, and each
one is written to the audit trail with the caller's actor name.

Input is checked strictly and every 4xx names the offending field: an unknown query
parameter or body key is a 400, not silently ignored. A replay must say what to replay —
`destination`, `ids`, `since`, `until` or `group`; `"destination": "*"` is the explicit way
to replay every dead delivery of every destination (an empty body never does that).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ..admin import Admin
from ..config.reader import parse_duration
from ..current import Current
from ..domain.replay import MIN_RATE, ReplayError, ReplayRequest
from .auth import console_actor
from .common import JsonError, json_response

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_PAUSE_S = 366 * 86400.0
MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z: anything later cannot be shown as a date
_INT = re.compile(r"^[0-9]{1,18}$")
_EPOCH = re.compile(r"^[0-9]{1,12}(\.[0-9]+)?$")
REPLAY_KEYS = ("destination", "ids", "since", "until", "group", "dry_run", "rate")


def bad(field: str, message: str) -> JsonError:
    return JsonError(400, f"{field}: {message}", field=field)


def parse_ts(field: str, value: object) -> float:
    """Epoch seconds (a number or a string of digits) or ISO 8601 (UTC unless it says)."""
    ts: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _EPOCH.match(text):
            ts = float(text)
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                pass
            else:
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                try:
                    ts = parsed.timestamp()
                except (OverflowError, ValueError, OSError):
                    ts = None
    if ts is None or not math.isfinite(ts) or not 0 <= ts <= MAX_TS:
        raise bad(field, "must be ISO 8601 (2026-11-26T05:00:00Z) or epoch seconds")
    return ts


def _time_range(since: object, until: object) -> tuple[float | None, float | None]:
    s = None if since is None else parse_ts("since", since)
    u = None if until is None else parse_ts("until", until)
    if s is not None and u is not None and s > u:
        raise bad("until", "must not be before since")
    return s, u


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    for key in request.query:
        if key not in allowed:
            raise bad(key, f"unknown query parameter (allowed: {', '.join(allowed)})")
    return {k: request.query[k] for k in allowed if k in request.query}


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not _INT.match(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


async def _body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object posted (an empty body is `{}`); unknown keys are refused."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise JsonError(400, "body: not valid JSON", field="body") from None
    if not isinstance(body, dict):
        raise JsonError(400, "body: must be a JSON object", field="body")
    for key in body:
        if key not in allowed:
            raise bad(key, f"unknown key (allowed: {', '.join(allowed) or 'none'})")
    return body


class AdminApi:
    """The routes, over one `Admin` (built once, shared with the console) and the current
    config (console tokens, read-only, destination names: a reload counts at once)."""

    def __init__(self, admin: Admin, current: Current) -> None:
        self._admin = admin
        self._current = current

    def _actor(self, request: web.Request) -> str:
        return console_actor(request, self._current.config)

    def _action(self, request: web.Request) -> str:
        """Authenticate an action and refuse it on a read-only console; the actor's name."""
        actor = self._actor(request)
        if self._current.config.console.read_only:
            raise JsonError(403, "console is read-only")
        return actor

    def _destination(self, name: str) -> str:
        if name not in self._current.config.destinations:
            raise JsonError(404, f"no destination named {name!r}")
        return name

    # -- reads -----------------------------------------------------------------------------------

    async def destinations(self, request: web.Request) -> web.Response:
        self._actor(request)
        _query(request, ())
        a = self._admin
        return json_response({"destinations": await a.destinations(), "overdue": await a.overdue()})

    async def event(self, request: web.Request) -> web.Response:
        self._actor(request)
        _query(request, ())
        event_id = request.match_info["id"]
        view = await self._admin.event_view(event_id)
        if view is None:
            raise JsonError(404, f"no event with id {event_id!r} (never received, or purged)")
        return json_response(view)

    async def dead(self, request: web.Request) -> web.Response:
        self._actor(request)
        q = _query(request, ("destination", "since", "until", "after", "limit"))
        destination = q.get("destination") or None
        if destination is not None:
            self._destination(destination)
        since, until = _time_range(q.get("since"), q.get("until"))
        after = q.get("after", "0")
        if not _INT.match(after):
            raise bad(
                "after", "must be a non-negative integer (the next_after of the previous page)"
            )
        page = await self._admin.dead(destination, since, until, int(after), _limit(q.get("limit")))
        return json_response(page)

    async def audit(self, request: web.Request) -> web.Response:
        self._actor(request)
        q = _query(request, ("limit",))
        return json_response({"audit": await self._admin.audit_log(_limit(q.get("limit")))})

    # -- actions ---------------------------------------------------------------------------------

    async def pause(self, request: web.Request) -> web.Response:
        actor = self._action(request)
        name = self._destination(request.match_info["name"])
        body = await _body(request, ("for",))
        for_s = None
        if body.get("for") is not None:
            try:
                for_s = parse_duration(body["for"])
            except ValueError as exc:
                raise bad("for", str(exc)) from None
            if not math.isfinite(for_s) or not 0 < for_s <= MAX_PAUSE_S:
                raise bad("for", "must be more than 0 and at most 366d")
        return json_response(await self._admin.pause(name, for_s, actor))

    async def resume(self, request: web.Request) -> web.Response:
        actor = self._action(request)
        name = self._destination(request.match_info["name"])
        await _body(request, ())
        return json_response(await self._admin.resume(name, actor))

    async def replay(self, request: web.Request) -> web.Response:
        """The body's JSON types are checked here; what may be replayed, by `ReplayRequest`."""
        actor = self._action(request)
        body = await _body(request, REPLAY_KEYS)
        destination = body.get("destination")
        if destination is not None:
            if not isinstance(destination, str) or not destination:
                raise bad("destination", 'must be a destination name, or "*" for all')
            if destination != "*":
                self._destination(destination)
        ids = body.get("ids")
        if ids is not None and not isinstance(ids, list):
            raise bad("ids", "must be a list of event ids (non-empty strings)")
        group = body.get("group")
        if group is not None and not isinstance(group, str):
            raise bad("group", "must be a failure group id (12 hex digits, as listed)")
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise bad("dry_run", "must be true or false")
        rate = body.get("rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
            raise bad(
                "rate", f"must be a positive number of events per second ({MIN_RATE:g} to 1e6)"
            )
        since, until = _time_range(body.get("since"), body.get("until"))
        try:
            req = ReplayRequest(
                destination,
                tuple(ids or ()),
                since,
                until,
                group,
                None if rate is None else float(rate),
                dry_run,
            )
        except ReplayError as exc:
            raise bad(exc.field, exc.message) from None
        return json_response(await self._admin.replay(req, actor))

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1/admin/destinations", self.destinations)
        r.add_get("/v1/admin/events/{id}", self.event)
        r.add_get("/v1/admin/dead", self.dead)
        r.add_get("/v1/admin/audit", self.audit)
        r.add_post("/v1/admin/destinations/{name}/pause", self.pause)
        r.add_post("/v1/admin/destinations/{name}/resume", self.resume)
        r.add_post("/v1/admin/replay", self.replay)
