"""`relay tail`: read or follow the dispatch log, with filters; survives logrotate."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import IO

import orjson

from .domain.text import one_line

POLL_S = 0.2


def lines(path: str, follow: bool) -> Iterator[bytes]:
    """Every line of the file; with `follow`, keep waiting for more, reopening after a
    rotation by rename and reading from the start again after a `copytruncate`."""
    handle: IO[bytes] | None = None
    inode = None
    while True:
        if handle is None:
            try:
                handle = open(path, "rb")  # noqa: SIM115 - reopened on rotation
                inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                if not follow:
                    return
                time.sleep(POLL_S)
                continue
        line = handle.readline()
        if line.endswith(b"\n"):
            yield line
            continue
        if not follow:
            return
        handle.seek(-len(line), os.SEEK_CUR)  # a half-written line: read it again when whole
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        rotated = now is None or now.st_ino != inode
        if not rotated and now is not None and now.st_size < handle.tell():
            # copytruncate: the same file was cut back and starts again from the beginning.
            # (Lines written between logrotate's copy and its truncate are lost: its race.)
            handle.seek(0)
            continue
        if rotated:
            rest = handle.read()
            if rest.endswith(b"\n"):
                yield from rest.splitlines(keepends=True)
            handle.close()
            handle = None
            continue
        time.sleep(POLL_S)


def matches(
    entry: dict, destination: str | None, event_type: str | None, outcome: str | None
) -> bool:
    if "audit" in entry:
        # An operator's action (pause, resume, replay): shown unless the filters are about
        # attempts (event type, outcome); --destination keeps the actions on that one.
        return (
            event_type is None
            and outcome is None
            and (destination is None or entry.get("target") in (destination, "*"))
        )
    return (
        (destination is None or entry.get("destination") == destination)
        and (event_type is None or entry.get("event_type") == event_type)
        and (outcome is None or entry.get("outcome") == outcome)
    )


def pretty(entry: dict) -> str:
    if "audit" in entry:
        parts = [
            entry.get("ts") or "-",
            f"{'audit':<9}",
            f"{entry.get('audit')} {entry.get('target') or '-'}",
            f"by {entry.get('actor') or '-'}",
            f"count={entry['count']}" if entry.get("count") is not None else "",
            entry.get("detail") or "",
        ]
        return one_line("  ".join(p for p in parts if p))
    ident = entry.get("event_id") or f"{entry.get('count', 0)} events"
    parts = [
        entry.get("ts") or "-",
        f"{entry.get('outcome', '-'):<9}",
        entry.get("destination") or "-",
        entry.get("event_type") or "-",
        ident,
        f"attempt={entry['attempt']}" if entry.get("attempt") is not None else "",
        f"status={entry['status']}" if entry.get("status") is not None else "",
        f"{entry['ms']}ms" if entry.get("ms") is not None else "",
        f"next={entry['next_attempt']}" if entry.get("next_attempt") else "",
        f"error={entry['error']!r}" if entry.get("error") else "",
    ]
    return one_line("  ".join(p for p in parts if p))


def run(
    path: str,
    follow: bool,
    as_json: bool,
    destination: str | None,
    event_type: str | None,
    outcome: str | None,
) -> int:
    if path == "-":
        print(
            'relay tail: the dispatch log goes to stdout ([log] dispatch = "-"); nothing to read',
            file=sys.stderr,
        )
        return 1
    if not os.path.exists(path):
        where = (
            f"no dispatch log at {os.path.abspath(path)}"
            " ([log] dispatch; has relay serve run with this config?)"
        )
        if not follow:
            print(f"relay tail: {where}", file=sys.stderr)
            return 1
        print(f"relay tail: {where}; waiting for it", file=sys.stderr, flush=True)
    try:
        for raw in lines(path, follow):
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if matches(entry, destination, event_type, outcome):
                print(raw.decode().rstrip("\n") if as_json else pretty(entry), flush=follow)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()
    return 0
