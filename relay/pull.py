"""The client-pull API: lease a batch of events, ack it to remove them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection

import orjson
from aiohttp import web

from .activity import Activity
from .config import PullDestination
from .dispatch_log import iso_ms
from .runtime import Runtime
from .store import Claimed
from .web import RUNTIME, JsonError, check_bearer, json_response

# A token nobody can send (a fresh random one each start): checking against it always fails.
UNMATCHABLE = secrets.token_urlsafe(32)


def _destination(request: web.Request) -> PullDestination:
    """The pull destination named in the path, once its token checks out.

    An unknown name answers exactly like a known one asked without its token whenever any
    pull destination has tokens, so a stranger cannot list the names by their 404s.
    """
    name = request.match_info["destination"]
    config = request.app[RUNTIME].config
    dest = config.destinations.get(name)
    if not isinstance(dest, PullDestination):
        if not config.server.loopback or any(
            isinstance(d, PullDestination) and d.tokens for d in config.destinations.values()
        ):
            check_bearer(request, (UNMATCHABLE,))
        raise JsonError(404, f"no pull destination named {name!r}")
    check_bearer(request, dest.tokens)
    return dest


def batch_line(
    destination: str, outcome: str, event_ids: list[str], claims: list[Claimed] = ()
) -> dict:
    """One dispatch-log line for a whole pull batch (the log format allows `count` + `event_ids`)."""
    return {
        "ts": iso_ms(time.time()),
        "event_id": None,
        "event_type": None,
        "destination": destination,
        "attempt": max((c.attempts for c in claims), default=None),
        "outcome": outcome,
        "status": None,
        "ms": None,
        "error": None,
        "next_attempt": None,
        "count": len(event_ids),
        "event_ids": event_ids,
    }


async def lease_batch(
    runtime: Runtime, dest: PullDestination, limit: int, event_types: Collection[str] | None = None
) -> list[Claimed] | None:
    """Lease up to `limit` events for a pull client (None: the destination is paused).

    The one code path of every pull dialect (JSON and SOAP): the claim, the dispatch-log
    line and the console's "last pull" are the same whichever way the client asked.
    """
    if runtime.is_paused(dest.name):
        return None
    claims = await runtime.store.claim(dest.name, limit, dest.lease_s, event_types)
    # The console's "last pull" (any poll, empty or not); acks count as deliveries.
    runtime.pull_activity.setdefault(dest.name, Activity()).last_sent = time.time()
    if claims:
        runtime.log.write([batch_line(dest.name, "leased", [c.event_id for c in claims], claims)])
    return claims


async def ack_batch(runtime: Runtime, dest: PullDestination, batch_id: int) -> list[str]:
    """Mark a leased batch read: its events leave the queue; returns their ids ([]: unknown
    batch, already acked, or its lease ran out and it was leased again)."""
    ids = await runtime.store.ack_lease(dest.name, batch_id)
    if not ids:
        return ids
    runtime.log.write([batch_line(dest.name, "acked", ids)])
    runtime.acked(dest.name, len(ids))
    activity = runtime.pull_activity.setdefault(dest.name, Activity())
    last_pull = activity.last_sent  # an ack is not a pull: keep "last pull" as it was
    activity.record(True, len(ids), None, None, f"acked {len(ids)} events (batch {batch_id})")
    activity.last_sent = last_pull
    return ids


async def lease(request: web.Request) -> web.Response:
    dest = _destination(request)
    raw = request.query.get("max", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= dest.max_batch:
        raise JsonError(400, f"max: must be an integer from 1 to {dest.max_batch}", field="max")
    claims = await lease_batch(request.app[RUNTIME], dest, int(raw))
    if claims is None:
        return json_response({"batch_id": None, "events": [], "paused": True})
    if not claims:
        return json_response({"batch_id": None, "events": []})
    # The stored bodies are already JSON: splice them in rather than decode and re-encode.
    body = b'{"batch_id":"%s","lease_expires":"%s","events":[%s]}' % (
        str(claims[0].lease).encode(),
        iso_ms(time.time() + dest.lease_s).encode(),
        b",".join(c.body for c in claims),
    )
    return web.Response(body=body, content_type="application/json")


async def ack(request: web.Request) -> web.Response:
    dest = _destination(request)
    try:
        batch_id = orjson.loads(await request.read()).get("batch_id")
    except (orjson.JSONDecodeError, AttributeError):
        raise JsonError(400, 'body must be {"batch_id": "..."}', field="batch_id") from None
    if not isinstance(batch_id, str) or not batch_id.isdigit() or len(batch_id) > 30:
        raise JsonError(400, "batch_id: must be the batch_id a pull returned", field="batch_id")
    ids = await ack_batch(request.app[RUNTIME], dest, int(batch_id))
    if not ids:
        raise JsonError(
            404, "unknown batch_id, or already acked, or its lease expired and it was leased again"
        )
    return json_response({"acked": len(ids)})
