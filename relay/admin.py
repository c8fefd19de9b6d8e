"""What the operator console and the admin API show and do — one place, two faces.

`/v1/admin/*` answers these as JSON, `/console/*` renders them as HTML, and `relay show`
prints `event_view`. Figures come from what the engine already keeps: the store's counters
(no scan of big tables), each dispatcher's in-memory activity, and the attempt history;
so the overview stays fast with a million-event backlog.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .config import Config, PullDestination, round_period_s
from .dispatch.activity import Activity
from .dispatch.log import DispatchLog, iso_ms
from .domain.replay import ReplayRequest
from .models import State
from .store import AttemptFilter, AuditEntry, DeadDelivery, EventDetail, ReplayFilter, Store

if TYPE_CHECKING:
    from .dispatch.dispatcher import Dispatcher

# Events whose delivery is a legal matter: flagged when they wait past the deadline.
DEADLINE_TYPES = ("engine_unsub", "scomp", "sms_optout")
SAMPLE_IDS = 20
# A local part quoted ("jane doe") or not, in any script; a domain in any script (IDN) or
# an address literal ([192.0.2.1]).
EMAIL = re.compile(r'("(?:[^"\\\r\n]|\\.)+"|[^\s@<>()\[\],;:"]+)@([\w.-]+|\[[^\]\s]+\])')


def _masked(match: re.Match[str]) -> str:
    return f"{match.group(1).lstrip(chr(34))[:1]}***@{match.group(2)}"


def mask_email(text: str) -> str:
    """`jane.doe@example.com` → `j***@example.com`: enough to recognise, not to harvest
    (quoted local parts and international addresses too)."""
    return EMAIL.sub(_masked, text)


def mask_event(event: dict[str, Any]) -> dict[str, Any]:
    return {k: mask_email(v) if isinstance(v, str) else v for k, v in event.items()}


_NUMBERS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


_STATUS = re.compile(r"^(HTTP \d{3}|\d{3}\b)")  # an HTTP status or an SMTP reply code


def signature(error: str | None) -> str:
    """A failure's group: the error with numbers and ids blurred, so `HTTP 500: order 123
    failed` and `… order 456 failed` are one group — but the leading status or reply code
    is kept, so `HTTP 500` and `HTTP 503` are two causes."""
    text = error or "no error recorded"
    m = _STATUS.match(text)
    head, rest = (m.group(0), text[m.end() :]) if m else ("", text)
    return _SPACE.sub(" ", head + _NUMBERS.sub("#", rest)).strip()[:160]


def group_id(destination: str, sig: str) -> str:
    return hashlib.sha256(f"{destination}\0{sig}".encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class FailureGroup:
    id: str
    destination: str
    signature: str
    count: int
    first_seen: float
    last_seen: float
    sample_event_id: str

    def as_dict(self) -> dict:
        return {
            "group": self.id,
            "destination": self.destination,
            "signature": self.signature,
            "count": self.count,
            "first_seen": iso_ms(self.first_seen),
            "last_seen": iso_ms(self.last_seen),
            "sample_event_id": self.sample_event_id,
        }


def forecast(pending: int, state: str, activity: Activity | None, periodic: bool) -> str:
    """ "empty in ~4 min" / "growing +300/min" from the backlog's trend over the last minutes."""
    if pending == 0:
        return "empty"
    if state == "paused":
        return "paused"
    if periodic:
        return "at the next round"
    if activity is None:
        return "waiting"
    per_min = activity.trend(pending)
    if per_min is None:
        return "measuring"
    if per_min >= 0:
        return f"growing +{round(per_min)}/min" if per_min >= 1 else "not draining"
    minutes = pending / -per_min
    return f"empty in ~{minutes:.0f} min" if minutes >= 1 else "empty in <1 min"


class Operated(Protocol):
    """What `Admin` reads and acts on: the daemon's `Runtime`, or a CLI command's
    `cli.Offline` (the store and the config only: the running daemon notices a change
    made in the database within a second)."""

    config: Config
    store: Store
    log: DispatchLog | None  # an action's audit line goes here too
    paused: dict[str, float | None]
    dispatchers: Mapping[str, Dispatcher]
    activities: Mapping[str, Activity]  # the console's live picture, per destination

    async def refresh_paused(self) -> None: ...

    async def recover(self, destinations: Iterable[str]) -> None: ...


class Admin:
    """Reads and actions over one running relay, or over its database from the CLI."""

    def __init__(self, runtime: Operated) -> None:
        self.runtime = runtime

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def show_emails(self) -> bool:
        return self.runtime.config.console.show_emails

    def activity(self, name: str) -> Activity | None:
        return self.runtime.activities.get(name)

    def state(self, name: str) -> str:
        if name in self.runtime.paused:
            return "paused"
        d = self.runtime.dispatchers.get(name)
        return d.state if d is not None else "ok"  # a pull destination cannot fail

    # -- reads -----------------------------------------------------------------------------

    async def destinations(self) -> list[dict[str, Any]]:
        """One row per configured destination (the admin API's fields, plus what the page draws)."""
        stats = await self.store.stats()
        now = time.time()
        rows = []
        for name, dest in sorted(self.runtime.config.destinations.items()):
            s = stats.destinations.get(name)
            act = self.activity(name)
            delivered, failed = act.series(now) if act else ([0] * 60, [0] * 60)
            last_error = act.last_failure if act else None
            state = self.state(name)
            row = {
                "name": name,
                "type": dest.type,
                "state": state,
                "pending": s.pending if s else 0,
                "leased": s.leased if s else 0,
                "dead": s.dead if s else 0,
                "delivered": s.delivered if s else 0,
                "oldest_pending_s": s.oldest_pending_s if s else None,
                "failure_rate_5m": act.failure_rate(5, now) if act else None,
                "failure_rate_1h": act.failure_rate(60, now) if act else None,
                "last_success": iso_ms(act.last_success.ts) if act and act.last_success else None,
                "last_error": self._last_error(last_error),
                "paused_until": iso_ms(self.runtime.paused.get(name)),
                "forecast": forecast(
                    s.pending if s else 0, state, act, bool(round_period_s(dest))
                ),
                "series": {"delivered": delivered, "failed": failed},
                "detail": self._type_detail(name, dest, act, now),
            }
            rows.append(row)
        return rows

    def _last_error(self, last) -> dict | None:
        if last is None:
            return None
        d = last.as_dict()
        d["ts"] = iso_ms(d["ts"])
        if d["response"] and d["error"] and d["response"].strip()[:40] in d["error"]:
            d["response"] = None  # the error already quotes it
        if not self.show_emails:
            d["error"] = mask_email(d["error"]) if d["error"] else None
            d["response"] = mask_email(d["response"]) if d["response"] else None
        return d

    def _type_detail(self, name: str, dest: Any, act: Activity | None, now: float) -> dict:
        """What only this kind of destination has: next digest/upload, last file, last pull."""
        if isinstance(dest, PullDestination):
            return {"last_pull": iso_ms(act.last_sent) if act else None}
        d = self.runtime.dispatchers.get(name)
        detail: dict[str, Any] = {}
        period = round_period_s(dest)
        if period:
            detail["next_round"] = iso_ms((now // period + 1) * period)
            if act and act.last_success:
                detail["last_result"] = act.last_success.response  # SMTP reply / file and size
        if d is not None and d.circuit.is_open:
            detail["circuit_opened"] = d.circuit.opened
        return detail

    async def overdue(self) -> list[dict[str, Any]]:
        """Unsubscribes and complaints waiting longer than `console.unsub_deadline`."""
        deadline = self.runtime.config.console.unsub_deadline_s
        late = await self.store.oldest_pending(DEADLINE_TYPES, time.time() - deadline)
        return [
            {"destination": name, "count": n, "oldest": iso_ms(oldest)}
            for name, (n, oldest) in sorted(late.items())
        ]

    async def event_view(self, event_id: str) -> dict[str, Any] | None:
        """`GET /v1/admin/events/{id}`, also `relay show ID --json`."""
        detail = await self.store.event(event_id)
        if detail is None:
            return None
        return self.render_event(detail)

    def render_event(self, detail: EventDetail) -> dict[str, Any]:
        event = orjson.loads(detail.body)
        if not self.show_emails:
            event = mask_event(event)
        paused = self.runtime.paused
        destinations = []
        for d in detail.deliveries:
            state = d.state.name.lower()
            if d.state is State.LEASED and d.due_at <= time.time():
                state = "pending"  # an expired lease is pending again
            if state == "pending" and d.destination in paused:
                state = "paused"
            destinations.append(
                {
                    "name": d.destination,
                    "state": state,
                    "attempts_made": d.attempts,
                    "next_attempt": iso_ms(d.due_at) if state == "pending" else None,
                    "last_error": self._mask(d.last_error),
                    "attempts": [
                        {
                            "attempt": a.attempt,
                            "ts": iso_ms(a.ts),
                            "outcome": a.outcome,
                            "status": a.status,
                            "ms": round(a.ms, 1),
                            "error": self._mask(a.error),
                            "response": self._mask(a.response),
                        }
                        for a in d.history
                    ],
                }
            )
        return {
            "event": event,
            "received_at": iso_ms(detail.received_at),
            "destinations": destinations,
        }

    def _mask(self, text: str | None) -> str | None:
        if text is None or self.show_emails:
            return text
        return mask_email(text)

    async def recent_attempts(self, where: AttemptFilter, limit: int = 100) -> list[dict]:
        rows = await self.store.attempts(where, limit)
        out = []
        for r in rows:
            d = r.as_dict()
            d["ts"] = iso_ms(r.ts)
            d["error"], d["response"] = self._mask(r.error), self._mask(r.response)
            d["cursor"] = f"{r.ts!r}:{r.delivery_id}:{r.attempt}"
            out.append(d)
        return out

    async def dead(
        self,
        destination: str | None,
        since: float | None,
        until: float | None,
        after: int,
        limit: int,
    ) -> dict[str, Any]:
        rows = await self.store.dead_list(destination, after, limit, since, until)
        items = []
        for r in rows:
            d = r.as_dict()
            d["received_at"], d["died_at"] = iso_ms(r.created_at), iso_ms(r.died_at)
            d["last_error"] = self._mask(r.last_error)
            d["group"] = group_id(r.destination, signature(r.last_error))
            items.append(d)
        return {
            "dead": items,
            "next_after": rows[-1].delivery_id if len(rows) == limit else None,
        }

    async def dead_groups(self, destination: str | None, scan: int = 50_000) -> list[FailureGroup]:
        """Dead deliveries grouped by cause (the first `scan` of them, oldest first)."""
        groups: dict[str, list[DeadDelivery]] = {}
        async for r in self._dead_rows(destination, scan):
            groups.setdefault(group_id(r.destination, signature(r.last_error)), []).append(r)
        out = [
            FailureGroup(
                gid,
                rows[0].destination,
                self._mask(signature(rows[0].last_error)) or "",
                len(rows),
                min(r.died_at for r in rows),
                max(r.died_at for r in rows),
                rows[-1].event_id,
            )
            for gid, rows in groups.items()
        ]
        return sorted(out, key=lambda g: (-g.count, g.destination, g.signature))

    async def failure_groups(self, destination: str, limit: int = 2000) -> list[FailureGroup]:
        """Recent failed attempts of one destination grouped by signature."""
        groups: dict[tuple[str, str], list] = {}
        for a in await self.store.attempts(AttemptFilter(destination, outcome="failed"), limit):
            sig = signature(a.error)
            groups.setdefault((group_id(destination, sig), sig), []).append(a)
        out = [
            FailureGroup(
                gid,
                destination,
                self._mask(sig) or "",
                len(rows),
                min(a.ts for a in rows),
                max(a.ts for a in rows),
                rows[0].event_id,
            )
            for (gid, sig), rows in groups.items()
        ]
        return sorted(out, key=lambda g: -g.last_seen)

    async def _dead_rows(self, destination: str | None, scan: int):
        after, seen = 0, 0
        while seen < scan:
            rows = await self.store.dead_list(destination, after, 1000)
            for r in rows:
                yield r
            seen += len(rows)
            if len(rows) < 1000:
                return
            after = rows[-1].delivery_id

    async def audit_log(self, limit: int = 20) -> list[dict]:
        entries = await self.store.audit_log(limit)
        return [dict(e.as_dict(), ts=iso_ms(e.ts)) for e in entries]

    # -- actions ---------------------------------------------------------------------------

    async def pause(self, name: str, for_s: float | None, actor: str) -> dict[str, Any]:
        until = time.time() + for_s if for_s else None
        await self.store.pause(name, until)
        await self.runtime.refresh_paused()
        detail = f"for {for_s:g}s" if for_s else "until resumed"
        await self._audit(actor, "pause", name, None, detail)
        return {"destination": name, "paused": True, "until": iso_ms(until)}

    async def resume(self, name: str, actor: str) -> dict[str, Any]:
        await self.store.resume(name)
        await self.runtime.refresh_paused()
        await self._audit(actor, "resume", name, None, "")
        return {"destination": name, "paused": False}

    async def replay(self, req: ReplayRequest, actor: str) -> dict[str, Any]:
        """Make the dead deliveries `req` matches pending again (or count them: dry run)."""
        destination, ids, group = req.only, req.ids, req.group
        since, until, dry_run, rate = req.since, req.until, req.dry_run, req.rate
        if group is not None:
            # A group is a set of dead deliveries of one cause: replay those events by id.
            matched = [
                r
                async for r in self._dead_rows(destination, 1_000_000)
                if group_id(r.destination, signature(r.last_error)) == group
            ]
            if not matched:
                return {"matched": 0, "sample_ids": []} if dry_run else {"replayed": 0}
            destination = matched[0].destination
            ids = tuple(r.event_id for r in matched)
        where = ReplayFilter(destination, ids, since, until)
        found = await self.store.replay(where, dry_run=dry_run, rate=rate)
        if dry_run:
            return {"matched": len(found), "sample_ids": found[:SAMPLE_IDS]}
        replayed = found
        await self.runtime.recover(
            [destination] if destination else list(self.runtime.config.destinations)
        )
        parts = [
            f"{k}={v}"
            for k, v in (
                ("group", group),
                ("since", iso_ms(since)),
                ("until", iso_ms(until)),
                ("rate", None if rate is None else f"{rate:g}"),
            )
            if v is not None
        ]
        if ids and group is None:
            parts.append(f"ids={len(ids)}")
        await self._audit(actor, "replay", destination or "*", len(replayed), " ".join(parts))
        return {"replayed": len(replayed)}

    async def _audit(
        self, actor: str, action: str, target: str, count: int | None, detail: str
    ) -> None:
        entry = AuditEntry(time.time(), actor, action, target, count, detail)
        await self.store.audit(entry)
        if self.runtime.log is not None:  # a command run with `dispatch_log = "-"` has none
            self.runtime.log.write_audit(dict(entry.as_dict(), ts=iso_ms(entry.ts)))
