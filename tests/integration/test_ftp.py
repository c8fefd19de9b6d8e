"""The ftp destination against aioftp's own server on 127.0.0.1: the
temporary-name-then-rename protocol, the three formats, file naming, no overwrites, an
upload cut in the middle, a server that is down, and explicit FTPS."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import orjson
import pytest

from relay.destinations.http import flatten

from ..helpers import free_port, wait_for
from ..mailftp import BreakingPathIO, FtpServer, certificate, ftp_toml

FAST_RETRY = 'retry = { initial = "50ms", max = "100ms", multiplier = 2.0, max_attempts = 5 }\n'


def events(n: int, prefix: str = "ev") -> list[dict]:
    return [
        {
            "event_type": "delivery_attempt",
            "email": f"user{i}@example.com",
            "status": "deferral",
            "id": f"{prefix}-{i}",
            "message": "451 4.7.1 try again later, & then some",
            "headers": {"X-Campaign": f"spring {i}"},
        }
        for i in range(n)
    ]


async def upload(relay, sent: list[dict], files: int = 1, ftp=None) -> None:
    assert (await relay.post_events(sent)).status == 202
    relay.runtime.dispatchers["logs"].flush()
    if ftp is not None:
        # the hidden .part file shows first; done once it is renamed to a final name
        # (20 s: a connection the server drops under load is retried after 5 s)
        await wait_for(
            lambda: len(ftp.files()) >= files and not any(n.startswith(".") for n in ftp.files()),
            20,
            f"{files} uploaded file(s)",
        )


def jsonl_ids(data: bytes) -> list[str]:
    return [orjson.loads(line)["id"] for line in data.splitlines()]


async def test_file_is_uploaded_under_a_temporary_name_then_renamed_when_complete(make_relay, ftp):
    relay = await make_relay(ftp_toml(ftp.server_port, 'filename = "log-{date}-{seq}.jsonl"\n'))
    sent = events(50)
    await upload(relay, sent, ftp=ftp)

    files = ftp.files()
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert list(files) == [f"log-{day}-1.jsonl"]
    # STOR went to a hidden temporary name; RNTO gave the final name to the whole file.
    assert len(ftp.stored) == 1 and ftp.stored[0].startswith(".relay-")
    assert ftp.renamed == [(ftp.stored[0], f"log-{day}-1.jsonl", len(files[f"log-{day}-1.jsonl"]))]
    assert jsonl_ids(files[f"log-{day}-1.jsonl"]) == [e["id"] for e in sent]
    parsed = [orjson.loads(line) for line in files[f"log-{day}-1.jsonl"].splitlines()]
    assert all({k: p[k] for k in e} == e for e, p in zip(sent, parsed, strict=True))

    await wait_for(lambda: len(relay.dispatch_lines()) == 50, 2, "one dispatch line per event")
    assert {(x["outcome"], x["status"]) for x in relay.dispatch_lines()} == {("delivered", 250)}
    assert (await relay.store.stats()).destinations["logs"].delivered == 50


async def test_csv_has_a_header_row_and_parses_back(make_relay, ftp):
    relay = await make_relay(ftp_toml(ftp.server_port, 'format = "csv"\n'))
    sent = events(5) + [{"event_type": "sms_failed", "phone": "+15550100", "id": "sms-1"}]
    await upload(relay, sent, ftp=ftp)

    (name, data), *_ = ftp.files().items()
    assert name.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    header = data.decode().split("\r\n", 1)[0].split(",")
    assert header[:3] == ["event_type", "email", "status"]
    assert "headers.X-Campaign" in header and "phone" in header
    assert [r["id"] for r in rows] == [e["id"] for e in sent]
    for event, row in zip(sent, rows, strict=True):
        flat = flatten(event)
        assert {k: row[k] for k in flat} == flat
    assert rows[-1]["email"] == rows[-1]["status"] == ""  # not this event's fields: empty


async def test_form_lines_are_the_http_form_bodies(make_relay, ftp):
    relay = await make_relay(ftp_toml(ftp.server_port, 'format = "form"\n'))
    sent = events(4)
    await upload(relay, sent, ftp=ftp)

    (name, data), *_ = ftp.files().items()
    assert name.endswith(".txt")
    lines = data.decode().splitlines()
    assert len(lines) == 4
    for event, line in zip(sent, lines, strict=True):
        flat = flatten(event)
        assert {k: v for k, v in parse_qsl(line, keep_blank_values=True) if k in flat} == flat


@pytest.mark.parametrize(
    ("every", "template", "expect"),
    [
        ("1h", "hourly-{date}T{time}.jsonl", "hourly-%Y-%m-%dT%H0000.jsonl"),
        ("1d", "daily-{date}-{time}-{seq:03d}.jsonl", "daily-%Y-%m-%d-000000-001.jsonl"),
    ],
)
async def test_hourly_and_daily_names(make_relay, ftp, every, template, expect):
    relay = await make_relay(
        ftp_toml(ftp.server_port, f'filename = "{template}"\n').replace(
            'upload_every = "1h"', f'upload_every = "{every}"'
        )
    )
    before = datetime.now(UTC)
    await upload(relay, events(2), ftp=ftp)
    assert list(ftp.files()) in ([before.strftime(expect)], [datetime.now(UTC).strftime(expect)])


@pytest.mark.parametrize(
    ("template", "second"),
    [("fixed-{date}.jsonl", "fixed-{day}-2.jsonl"), ("n-{date}-{seq}.jsonl", "n-{day}-2.jsonl")],
)
async def test_two_uploads_never_overwrite_each_other(make_relay, ftp, template, second):
    relay = await make_relay(ftp_toml(ftp.server_port, f'filename = "{template}"\n'))
    await upload(relay, events(3, "first"), ftp=ftp)
    await upload(relay, events(2, "second"), files=2, ftp=ftp)

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    files = ftp.files()
    assert second.format(day=day) in files
    assert sorted(len(data.splitlines()) for data in files.values()) == [2, 3]


async def test_an_upload_cut_midway_retries_and_leaves_no_partial_final_file(make_relay, ftp):
    relay = await make_relay(ftp_toml(ftp.server_port, FAST_RETRY))
    BreakingPathIO.breaks = 1
    sent = events(300)  # several 8 KiB blocks: the cut comes after the first
    await upload(relay, sent)
    await wait_for(lambda: len(ftp.renamed) == 1, 8, "the retried upload")
    await wait_for(lambda: len(relay.dispatch_lines()) == 600, 2, "retry and delivered lines")

    assert len(ftp.stored) == 2  # the cut upload, then the good one
    files = ftp.files()
    final = [n for n in files if not n.startswith(".")]
    assert len(final) == 1
    assert jsonl_ids(files[final[0]]) == [e["id"] for e in sent]  # none lost, none twice
    assert not [n for n in files if n.startswith(".")]  # the half temporary file was removed
    outcomes = [line["outcome"] for line in relay.dispatch_lines()]
    assert outcomes == ["retry"] * 300 + ["delivered"] * 300


async def test_a_server_that_is_down_is_retried_until_it_is_back(make_relay, tmp_path):
    port = free_port()
    relay = await make_relay(
        ftp_toml(port, FAST_RETRY.replace("max_attempts = 5", "max_attempts = 50"))
    )
    await upload(relay, events(3))
    await wait_for(lambda: relay.dispatch_lines(), 5, "a failed attempt")
    assert "refused" in relay.dispatch_lines()[0]["error"]

    root = tmp_path / "late-root"
    root.mkdir()
    server = FtpServer(root)
    await server.start_on(port)
    try:
        await wait_for(
            lambda: server.files() and not any(n.startswith(".") for n in server.files()),
            8,
            "the upload once the server is up",
        )
    finally:
        await server.close()
    assert jsonl_ids(next(iter(server.files().values()))) == ["ev-0", "ev-1", "ev-2"]


async def test_explicit_ftps(make_relay, tmp_path):
    server_tls, ca_file = certificate(tmp_path)
    root = tmp_path / "ftps-root"
    root.mkdir()
    server = FtpServer(root, tls=server_tls)
    port = await server.start_on()
    try:
        relay = await make_relay(ftp_toml(port, f'tls = true\nca_file = "{ca_file}"\n'))
        await upload(relay, events(2), ftp=server)
    finally:
        await server.close()
    assert jsonl_ids(next(iter(server.files().values()))) == ["ev-0", "ev-1"]


async def test_flush_with_nothing_due_uploads_nothing(make_relay, ftp):
    relay = await make_relay(ftp_toml(ftp.server_port))
    dispatcher = relay.runtime.dispatchers["logs"]
    dispatcher.flush()
    # The flush is done when the dispatcher has looked for due deliveries and found none.
    await wait_for(lambda: not dispatcher._flush, 10, "the flush")
    assert dispatcher.rounds == 0
    assert ftp.files() == {} and ftp.stored == []
