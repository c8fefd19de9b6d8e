"""The uploaded log file of the ftp and sftp destinations: its bytes and its name (pure).

Both uploaders write the same file the same way, so the format and the naming rules live
here once: `render` turns claimed events into `jsonl`, `csv` or `form` lines, and
`free_name` finds the final name that no earlier upload has taken.
"""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson

from ..domain import pure360
from ..domain.text import csv_cell
from ..models import Claimed, Result
from .http import flatten

MAX_NAME_TRIES = 10_000


def render(fmt: str, claims: list[Claimed], csv_raw: bool = False) -> bytes:
    """The file's bytes: one line per event, in claim order (oldest due first).

    CSV cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first)
    get a `'` in front, as OWASP advises, unless `csv_raw` (for programs, not people)."""
    if fmt == "jsonl":
        return b"".join(c.body + b"\n" for c in claims)
    if fmt == "pure360":  # Pure360's log: its POST data, one line per event
        return "".join(pure360.form_body(orjson.loads(c.body)) + "\n" for c in claims).encode()
    rows = [flatten(orjson.loads(c.body)) for c in claims]
    if fmt == "form":
        return "".join(urlencode(row) + "\n" for row in rows).encode()
    if not csv_raw:
        rows = [{k: csv_cell(v) for k, v in row.items()} for row in rows]
    return _csv(rows)


def _csv(rows: list[dict[str, str]]) -> bytes:
    """RFC 4180 CSV with a header row: every field any event has, in first-seen order.

    An event without a column's field has an empty cell there.
    """
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def period_start(ts: float, period_s: float) -> float:
    """The start of the period holding `ts`; periods are aligned to the Unix epoch (UTC),
    so `1h` starts on the hour and `1d` at midnight UTC, across restarts too."""
    return (ts // period_s) * period_s


def file_time(claims: list[Claimed], period_s: float) -> float:
    """What a file's `{date}` and `{time}` say: the start of the period its oldest event was
    received in, so a daily file is named by the day its events arrived, even when an
    upload is retried after midnight."""
    return period_start(min(c.created_at for c in claims), period_s)


def temp_name() -> str:
    """A hidden name no final name can have (final names may not start with a dot)."""
    return f".relay-{secrets.token_hex(8)}.part"


def fill(template: str, when: float, seq: int) -> str:
    moment = datetime.fromtimestamp(when, UTC)
    return template.format(
        date=moment.strftime("%Y-%m-%d"), time=moment.strftime("%H%M%S"), seq=seq
    )


async def free_name(template: str, when: float, exists: Callable[[str], Awaitable[bool]]) -> str:
    """The first name the server does not have yet: `{seq}` counts 1, 2, 3…; a template
    without `{seq}` gets `-2`, `-3`… before its extension. Uploads never overwrite."""
    has_seq = "{seq" in template
    for n in range(1, MAX_NAME_TRIES + 1):
        name = fill(template, when, n) if has_seq else _suffixed(fill(template, when, 1), n)
        if not await exists(name):
            return name
    raise FileExistsError(f"{MAX_NAME_TRIES} files named like {template!r} already exist")


def _suffixed(name: str, n: int) -> str:
    if n == 1:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}-{n}.{ext}" if dot and stem else f"{name}-{n}"


class LogFileSender:
    """ftp and sftp: the claimed events as one file, uploaded whole or not at all.

    Subclasses do the `_upload` and map their protocol's exceptions in `_failed`.
    """

    delivered_status: int | None = None

    def __init__(self, dest) -> None:  # an ftp or sftp destination
        self.dest = dest
        self.batch_size = dest.max_events_per_file
        self._stale: set[str] = set()  # temporary files an interrupted upload left behind
        self._broken: str | None = None  # a setup problem every send reports

    async def close(self) -> None:
        pass

    async def send(self, claims: list[Claimed]) -> Result:
        if self._broken is not None:
            return Result.retry(self._broken)
        data = render(self.dest.format, claims, self.dest.csv_raw)
        when = file_time(claims, self.dest.period_s)
        try:
            async with asyncio.timeout(self.dest.timeout_s):
                name = await self._upload(data, when)
        except TimeoutError:
            return Result.retry(f"timeout after {self.dest.timeout_s:g}s")
        except Exception as exc:
            result = self._failed(exc)
            if result is None:
                raise
            return result
        return Result.delivered(self.delivered_status, f"{name} ({len(data)} bytes)")

    async def _upload(self, data: bytes, when: float) -> str:
        raise NotImplementedError

    def _failed(self, exc: Exception) -> Result | None:
        """The result for a failed upload, or None for an exception that is a bug."""
        raise NotImplementedError
