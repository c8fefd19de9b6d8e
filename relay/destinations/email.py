"""The email destination: events as mail over SMTP (aiosmtplib), one per event or as digests.

A message is a readable text summary (counts by type, then one table row per event) with
the full events attached as a JSON-lines file, so a person can read it and a program can
parse it. The SMTP answer decides the outcome: 2xx delivered; a 5xx is permanent, dead at
once with the reply as the reason (`reject_5xx = false`: retried like the rest); anything
else — a 4xx, a lost connection, a timeout — a retry with the SMTP code as `status`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib
import orjson

from ..config.destinations import EmailDestination
from ..domain.text import ascii_domain, msg_id_left, one_line
from ..models import Claimed, Result
from .base import tls_context
from .http import message_id

SUMMARY_ROWS = 200  # more than this and the table says "and N more" (all are attached)
DETAIL_FIELDS = ("click_url", "message", "status", "listid", "sendid")
ERROR_CHARS = 200


def subject(dest: EmailDestination, events: list[dict]) -> str:
    types = sorted({str(e.get("event_type")) for e in events})
    event_type = types[0] if len(types) == 1 else "mixed"
    return dest.subject.format(event_type=event_type, count=len(events), destination=dest.name)


def _when(event: dict, received: float) -> str:
    ts = event.get("event_time", received)
    try:
        moment = datetime.fromtimestamp(float(ts), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        moment = datetime.fromtimestamp(received, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def summary(dest: EmailDestination, claims: list[Claimed], events: list[dict]) -> str:
    """The text part: what a person needs to decide whether to open the attachment."""
    counts = Counter(str(e.get("event_type")) for e in events)
    by_type = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    lines = [
        f'{len(events)} event(s) for destination "{dest.name}": {by_type}.',
        "",
        f"{'time (UTC)':<20} {'event type':<17} {'email / phone':<32} detail",
    ]
    for c, e in list(zip(claims, events, strict=True))[:SUMMARY_ROWS]:
        # Recipients' values: one line each, whatever they hold (no forged summary rows).
        who = one_line(str(e.get("email") or e.get("phone") or ""))
        detail = next((str(e[f]) for f in DETAIL_FIELDS if e.get(f) not in (None, "")), "")
        detail = one_line(detail)
        row = f"{_when(e, c.created_at):<20} {str(e.get('event_type')):<17} {who:<32} {detail}"
        lines.append(row[:160])
    if len(events) > SUMMARY_ROWS:
        lines.append(f"... and {len(events) - SUMMARY_ROWS} more.")
    lines += ["", "Every event is attached in full, one JSON object per line."]
    return "\n".join(lines) + "\n"


def build_message(dest: EmailDestination, claims: list[Claimed]) -> EmailMessage:
    events = [orjson.loads(c.body) for c in claims]
    msg = EmailMessage()
    msg["From"] = dest.from_addr
    msg["To"] = ", ".join(dest.to)
    msg["Subject"] = subject(dest, events)
    msg["Date"] = formatdate(usegmt=True)
    # Stable across retries of the same events: receivers can drop a duplicate.
    domain = dest.from_addr.rpartition("@")[2]
    msg["Message-ID"] = f"<{msg_id_left(message_id(claims))}@{ascii_domain(domain)}>"
    msg.set_content(summary(dest, claims, events))
    stamp = datetime.fromtimestamp(min(c.created_at for c in claims), UTC)
    msg.add_attachment(
        b"".join(c.body + b"\n" for c in claims),
        maintype="application",
        subtype="x-ndjson",
        filename=f"events-{dest.name}-{stamp:%Y%m%dT%H%M%SZ}.jsonl",
    )
    return msg


class EmailSender:
    def __init__(self, dest: EmailDestination) -> None:
        self.dest = dest
        # A digest takes up to a message's worth; per-event mode one at a time.
        self.batch_size = dest.max_events_per_message if dest.digest_s > 0 else 1
        self._tls: ssl.SSLContext | None = None
        self._broken: str | None = None

    async def start(self) -> None:
        if self.dest.tls or self.dest.starttls:
            self._tls, self._broken = tls_context(self.dest.ca_file)

    async def close(self) -> None:
        pass

    async def send(self, claims: list[Claimed]) -> Result:
        if self._broken is not None:
            return Result.retry(self._broken)
        dest = self.dest
        msg = build_message(dest, claims)
        try:
            async with asyncio.timeout(dest.timeout_s):
                _, reply = await aiosmtplib.send(
                    msg,
                    hostname=dest.host,
                    port=dest.port,
                    username=dest.username,
                    password=dest.password,
                    use_tls=dest.tls,
                    start_tls=dest.starttls,
                    tls_context=self._tls,
                    timeout=dest.timeout_s,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return self._refused(first.code, first.message)
        except aiosmtplib.SMTPResponseException as exc:
            return self._refused(exc.code, exc.message)
        except (aiosmtplib.SMTPTimeoutError, TimeoutError):
            return Result.retry(f"timeout after {dest.timeout_s:g}s")
        except aiosmtplib.SMTPServerDisconnected:
            return Result.retry("connection lost")
        except (aiosmtplib.SMTPException, OSError) as exc:
            return Result.retry(f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
        return Result.delivered(250, reply)

    def _refused(self, code: int, message: str) -> Result:
        if code >= 500 and self.dest.reject_5xx:  # permanent: retrying cannot help
            return Result.rejected(_said(code, message), code)
        return Result.retry(_said(code, message), code)


def _said(code: int, message: str) -> str:
    return f"SMTP {code}: {' '.join(message.split())}"[:ERROR_CHARS]
