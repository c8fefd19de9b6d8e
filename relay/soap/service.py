"""The processes behind `handleRequest`: a session (`bus_facade_context`) and the event batch
(`bus_facade_eventNotification`), answered in the dialect's terms.

Every answer is a map with `result` (`success`, or `error` with the message in `resultData`);
a wrong password, an expired contextId or an unknown class is an `error` answer, not a Fault
(the envelope was fine). Leasing and acking go through `destinations.pull.Pull`: the JSON
pull's code path, limits, dispatch-log lines and console activity.
"""

from __future__ import annotations

import base64
import hmac
import time
from typing import Any

import orjson

from ..config import PullDestination
from ..current import Current
from ..destinations.pull import Pull
from ..dispatch.log import iso_ms
from ..domain import pure360
from ..domain.events import EVENT_TYPES, event_type_for
from .codec import Call
from .sessions import SessionTable

CONTEXT = "bus_facade_context"
NOTIFICATIONS = "bus_facade_eventNotification"
BATCH = "bus_entity_eventNotificationBatch"
DEFAULT_MAX = 1000  # the vendor's own examples ask for 1,000


class Refused(Exception):
    """A call answered with `result` = `error` and this message."""


def error(message: str) -> dict[str, Any]:
    return {"result": "error", "resultData": message}


def success(data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"result": "success", "resultData": data if data is not None else {}}


class PullService:
    """One node's SOAP pull: its session table and the processes of the two classes, over
    the lease and ack every pull dialect shares and the current config's destinations."""

    def __init__(self, pull: Pull, current: Current, sessions: SessionTable) -> None:
        self._pull = pull
        self._current = current
        self.sessions = sessions

    async def handle(self, call: Call) -> dict[str, Any]:
        try:
            if call.class_name == CONTEXT and call.process_name == "login":
                return self._login(call)
            dest = self._session(call)
            if call.class_name == CONTEXT and call.process_name == "logout":
                self.sessions.close(call.context_id or "")
                return success()
            if call.class_name == NOTIFICATIONS and call.process_name == "getBatch":
                return await self._get_batch(dest, _params(call))
            if call.class_name == NOTIFICATIONS and call.process_name == "markRead":
                return await self._mark_read(dest, _params(call))
            if call.class_name not in (CONTEXT, NOTIFICATIONS):
                raise Refused(f"unknown className {str(call.class_name)[:64]!r}")
            raise Refused(
                f"unknown processName {str(call.process_name)[:64]!r} on {call.class_name}"
            )
        except Refused as exc:
            return error(str(exc))

    def _login(self, call: Call) -> dict[str, Any]:
        params = _params(call)
        user, password = params.get("userName"), params.get("password")
        dest = self._current.config.destinations.get(user) if isinstance(user, str) else None
        if not isinstance(dest, PullDestination) or not _password_ok(password, dest.tokens):
            raise Refused("invalid userName or password")
        context_id = self.sessions.open(dest.name, dest.session_idle_s)
        if context_id is None:
            raise Refused("too many open sessions: log out unused ones or wait for them to expire")
        return success({"bus_entity_context": {"beanId": context_id, "userName": dest.name}})

    def _session(self, call: Call) -> PullDestination:
        session = self.sessions.use(call.context_id or "")
        if session is None:
            raise Refused("invalid or expired contextId: log in again")
        dest = self._current.config.destinations.get(session.destination)
        if not isinstance(dest, PullDestination):
            self.sessions.close(call.context_id or "")
            raise Refused(f"pull destination {session.destination!r} no longer exists")
        return dest

    async def _get_batch(self, dest: PullDestination, params: dict[str, Any]) -> dict[str, Any]:
        types = _event_types(params.get("notificationTypes"))
        limit = _max(params.get("maxNotifications"), dest.max_batch)
        mark = _flag(params.get("markAsReadInd"))
        claims = await self._pull.lease(dest, limit, types)
        claims = claims or []
        meta, data = pure360.csv_batch(orjson.loads(c.body) for c in claims)
        batch: dict[str, Any] = {
            "eventCount": len(claims),
            "eventMeta": meta,
            "eventData": base64.b64encode(data).decode(),
            "markAsReadInd": "Y" if mark else "N",
        }
        if claims and mark:
            await self._pull.ack(dest, claims[0].lease)
        elif claims:
            batch["batchId"] = str(claims[0].lease)
            batch["leaseExpires"] = iso_ms(time.time() + dest.lease_s)
        return success({BATCH: batch})

    async def _mark_read(self, dest: PullDestination, params: dict[str, Any]) -> dict[str, Any]:
        batch_id = params.get("batchId")
        if not isinstance(batch_id, str) or not batch_id.isdigit() or len(batch_id) > 30:
            raise Refused("batchId: must be the batchId a getBatch with markAsReadInd N answered")
        ids = await self._pull.ack(dest, int(batch_id))
        if not ids:
            raise Refused(
                "unknown batchId, or already read, or its lease expired and it was leased again"
            )
        return success({BATCH: {"eventCount": len(ids), "batchId": batch_id}})


def _params(call: Call) -> dict[str, Any]:
    """The process's parameters: the vendor's examples use either map; processData wins."""
    return {**call.entity_data, **call.process_data}


def _password_ok(given: object, tokens: tuple[str, ...]) -> bool:
    """Constant-time against every token; a destination without tokens is open (loopback)."""
    if not tokens:
        return True
    given_b = given.encode() if isinstance(given, str) else b""
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given_b, token.encode())
    return ok and bool(given_b)


def _event_types(value: object) -> frozenset[str] | None:
    """`notificationTypes` ("OPEN,CLICK" or a list of names) as event types; None: all."""
    if value is None or value == "":
        return None
    names = value if isinstance(value, list) else str(value).split(",")
    types = set()
    for name in names:
        etype = event_type_for(str(name).strip()) if isinstance(name, str) else None
        if etype is None:
            raise Refused(f"notificationTypes: unknown trigger {str(name)[:64]!r}")
        types.add(etype)
    return None if types >= EVENT_TYPES else frozenset(types)


def _max(value: object, ceiling: int) -> int:
    if value is None or value == "":
        return min(DEFAULT_MAX, ceiling)
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= ceiling:
        raise Refused(f"maxNotifications: must be an integer from 1 to {ceiling}")
    return int(text)


def _flag(value: object) -> bool:
    if value is None or value == "":
        return False
    text = str(value).strip().upper()
    if text not in ("Y", "N"):
        raise Refused("markAsReadInd: must be Y or N")
    return text == "Y"
