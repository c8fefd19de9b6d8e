"""The client-pull API's routes: lease a batch of events, ack it to remove them."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from ..config import PullDestination
from ..destinations.pull import ack_batch, lease_batch
from ..dispatch.log import iso_ms
from .common import RUNTIME, JsonError, check_bearer, json_response


def _destination(request: web.Request) -> PullDestination:
    name = request.match_info["destination"]
    dest = request.app[RUNTIME].config.destinations.get(name)
    if not isinstance(dest, PullDestination):
        raise JsonError(404, f"no pull destination named {name!r}")
    check_bearer(request, dest.tokens)
    return dest


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
