"""POST /v1/events: one event, a JSON array, or NDJSON; all-or-nothing; 202 after commit."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from ..current import Current
from ..domain.events import Problem
from ..intake import Intake, Invalid, Overloaded
from ..store import StorageUnavailable
from .common import JsonError, check_bearer, json_response

JSON_TYPES = frozenset({"application/json", "text/json"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/ndjson"}
)
RETRY_AFTER = {"Retry-After": "1"}


def parse_body(body: bytes, content_type: str) -> list:
    """The request's items; a single object is a batch of one."""
    if content_type in NDJSON_TYPES:
        items = []
        for number, line in enumerate(body.splitlines()):
            if line.strip():
                try:
                    items.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise JsonError(
                        400, f"malformed JSON on line {number + 1}: {exc}", index=len(items)
                    ) from None
        return items
    if content_type not in JSON_TYPES:
        raise JsonError(415, "Content-Type must be application/json or application/x-ndjson")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JsonError(400, f"malformed JSON: {exc}") from None
    return data if isinstance(data, list) else [data]


def invalid(problems: list[Problem]) -> JsonError:
    return JsonError(400, "invalid events", errors=[p.as_dict() for p in problems[:1000]])


class Ingest:
    """The route, over the intake and the current config (the ingest tokens and limits,
    read per request: a reload counts at once)."""

    def __init__(self, intake: Intake, current: Current) -> None:
        self._intake = intake
        self._current = current

    async def post_events(self, request: web.Request) -> web.Response:
        limits = self._current.config.ingest
        check_bearer(request, limits.tokens)
        items = parse_body(await request.read(), request.content_type)
        if not items:
            raise JsonError(400, "no events in the request")
        if len(items) > limits.max_events:
            raise JsonError(413, f"at most {limits.max_events} events a request, got {len(items)}")
        intake = self._intake
        try:
            batch = intake.accept(items, time.time(), limits.max_queued)
            stored = await intake.commit(batch, "api")
        except Invalid as exc:
            raise invalid(exc.problems) from None
        except Overloaded:
            raise JsonError(503, "overloaded: try again shortly", RETRY_AFTER) from None
        except StorageUnavailable as exc:
            raise JsonError(503, f"storage unavailable: {exc}", RETRY_AFTER) from None
        # `accepted` counts the events this request stored; an id stored before (or twice in
        # this request) is a duplicate, stored once. `ids` follows the request's order.
        body = {"accepted": stored, "duplicates": len(batch) - stored, "ids": [e.id for e in batch]}
        return json_response(body, status=202)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/events", self.post_events)
