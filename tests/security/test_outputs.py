"""Every output encoded for where it goes: hostile ids and fields through email, webhook,
FTP, a click's Location, `relay show`, a digest, CSV, the dispatch log, metrics and the
console — each through the real server or command, never a stub."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from relay.domain.tokens import Signer

from .. import mailftp
from ..helpers import Receiver, base_toml, wait_for
from ..integration.test_cli import cli
from ..mailftp import Mailbox, attached_events, flush_cli, smtp_server, summary_text

ID = "идент-ü-1"
HOSTILE = "line one\r\nX-Forged: yes\n\x1b[2J\x1b]0;pwned\x07\u202eevil\x00end"
SECRET = "tracking-secret-for-the-security-tests"
ROUTE = '[[routes]]\nevents = ["*"]\ndestinations = ["{name}"]\n'


def bounce(event_id: str = ID, **extra: object) -> dict:
    return {"event_type": "bounce", "email": "jane@example.com", "id": event_id, **extra}


async def test_a_non_ascii_id_is_delivered_by_webhook(make_relay, receiver):
    signed = 'signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"\n'
    toml = base_toml() + f'[destinations.hook]\ntype = "http"\nurl = "{receiver.url}"\n{signed}'
    relay = await make_relay(toml + ROUTE.format(name="hook"))
    assert (await relay.post_events(bounce())).status == 202
    await wait_for(lambda: receiver.hits, 10, "the webhook")
    hit = receiver.hits[0]
    assert hit.headers["webhook-id"] == "%D0%B8%D0%B4%D0%B5%D0%BD%D1%82-%C3%BC-1"
    assert orjson.loads(hit.body)["id"] == ID
    import base64

    from relay.destinations.http import sign

    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    ts = int(hit.headers["webhook-timestamp"])
    assert hit.headers["webhook-signature"] == sign(key, hit.headers["webhook-id"], ts, hit.body)
    await wait_for(
        lambda: any(line.get("outcome") == "delivered" for line in relay.dispatch_lines()),
        5,
        "logged",
    )


@pytest.mark.parametrize("event_id", [ID, "plain%20id", 'a b"c<d>@e'])
async def test_any_id_is_delivered_by_email_with_an_ascii_message_id(make_relay, event_id):
    box = Mailbox()
    with smtp_server(box) as port:
        toml = (
            base_toml()
            + f'[destinations.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {port}\n'
            + 'from = "relay@example.com"\nto = ["ops@example.com"]\ndigest = "0s"\n'
            + ROUTE.format(name="mail")
        )
        relay = await make_relay(toml)
        assert (await relay.post_events(bounce(event_id))).status == 202
        await wait_for(lambda: box.messages, 10, "the message")
    msg = box.messages[0]
    message_id = msg["Message-ID"]
    assert message_id.isascii() and message_id.startswith("<") and message_id.endswith(">")
    assert " " not in message_id and message_id.count("@") == 1
    assert attached_events(msg)[0]["id"] == event_id
    await wait_for(
        lambda: (
            [line["outcome"] for line in relay.dispatch_lines() if line["destination"] == "mail"]
            == ["delivered"]
        ),
        5,
        "one delivered attempt",
    )


def ftp_toml(port: int, extra: str = "") -> str:
    return mailftp.ftp_toml(
        port, 'retry = { initial = "50ms", max = "100ms", max_attempts = 5 }\n' + extra
    )


def uploaded(ftp) -> dict[str, bytes]:
    """Files under a final name (the hidden .part one comes first, then is renamed)."""
    return {name: data for name, data in ftp.files().items() if not name.startswith(".")}


async def test_a_non_ascii_id_is_delivered_by_ftp(make_relay, ftp):
    relay = await make_relay(ftp_toml(ftp.server_port))
    assert (await relay.post_events(bounce())).status == 202
    relay.runtime.dispatchers["logs"].flush()  # the period's end, now
    await wait_for(lambda: uploaded(ftp), 10, "the upload under its final name")
    (data,) = uploaded(ftp).values()
    assert orjson.loads(data)["id"] == ID


FORMULAS = {
    "a": '=HYPERLINK("http://evil.example","click")',
    "b": "+1+1",
    "c": "-2+3+cmd|' /C calc'!A0",
    "d": "@SUM(1+1)",
    "e": "\tleading tab",
    "f": "\rleading cr",
    "g": "-5",
    "h": "+1.5",
    "i": "plain = text",
}


@pytest.mark.parametrize("raw", [False, True])
async def test_csv_cells_are_neutralised_unless_asked_raw(make_relay, ftp, raw):
    extra = 'format = "csv"\n' + ("csv_raw = true\n" if raw else "")
    relay = await make_relay(ftp_toml(ftp.server_port, extra))
    assert (await relay.post_events(bounce("csv-1", **FORMULAS))).status == 202
    relay.runtime.dispatchers["logs"].flush()  # the period's end, now
    await wait_for(lambda: uploaded(ftp), 10, "the upload under its final name")
    (data,) = uploaded(ftp).values()
    (row,) = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    for key, value in FORMULAS.items():
        safe = key in "ghi" or raw
        assert row[key] == (value if safe else "'" + value), key


async def test_a_click_redirects_to_an_ascii_uri(make_relay):
    relay = await make_relay(base_toml() + f'[tracking]\nsecrets = ["{SECRET}"]\n')
    signer = Signer([SECRET], relay.url)
    target = "https://münchen.example.de/straße?q=grüße#oben"
    url = signer.url("click", email="jane@example.com", url=target)
    for method in ("GET", "HEAD"):
        async with relay.http.request(method, url, allow_redirects=False) as resp:
            assert resp.status == 302
            raw = resp.raw_headers
            location = next(v for k, v in raw if k.lower() == b"location")
            assert (
                location == b"https://xn--mnchen-3ya.example.de/stra%C3%9Fe?q=gr%C3%BC%C3%9Fe#oben"
            )


async def test_relay_show_prints_one_clean_line_per_field(make_relay, receiver):
    toml = base_toml() + f'[destinations.hook]\ntype = "http"\nurl = "{receiver.url}"\n'
    receiver.default = 500
    receiver.error_text = HOSTILE
    relay = await make_relay(
        toml.replace('url = "', 'retry = { max_attempts = 1 }\nurl = "') + ROUTE.format(name="hook")
    )
    event = bounce("show-1", message=HOSTILE, listid="l\x1b[31mred", note="\x9b31m")
    assert (await relay.post_events(event)).status == 202
    await wait_for(
        lambda: any(line.get("outcome") == "dead" for line in relay.dispatch_lines()), 10, "dead"
    )
    code, out, err = await cli("show", "show-1", "-c", str(relay.config_path))
    assert code == 0, err
    assert not any(c in out for c in "\r\x1b\x00\x07\x9b\u202e")
    lines = out.splitlines()
    fields = [line.split()[0] for line in lines[1:4]]
    assert fields == ["email", "message", "listid"] or "message" in out
    message = next(line for line in lines if line.lstrip().startswith("message"))
    assert message.split(None, 1)[1] == (
        "line one\\r\\nX-Forged: yes\\n\\x1b[2J\\x1b]0;pwned\\x07\\u202eevil\\x00end"
    )
    assert not any(line.startswith("X-Forged") for line in lines)
    for command in (("dead", "list"), ("tail",), ("stats",)):
        code, out, err = await cli(*command, "-c", str(relay.config_path))
        assert code == 0, err
        assert not any(c in out for c in "\r\x1b\x00\x07\u202e"), command
        assert not any(line.startswith("X-Forged") for line in out.splitlines()), command


async def test_a_digest_shows_each_value_on_one_line(make_relay):
    box = Mailbox()
    with smtp_server(box) as port:
        toml = (
            base_toml()
            + f'[destinations.mail]\ntype = "email"\nhost = "127.0.0.1"\nport = {port}\n'
            + 'from = "relay@example.com"\nto = ["ops@example.com"]\ndigest = "1h"\n'
            + ROUTE.format(name="mail")
        )
        relay = await make_relay(toml)
        sent = [
            bounce("d-1", email="a@example.com\n2026-01-01 00:00:00  bounce  forged@example.com"),
            bounce("d-2", message=HOSTILE),
        ]
        assert (await relay.post_events(sent)).status == 202
        code, _, err = await flush_cli(relay.config_path, "mail")
        assert code == 0, err
        await wait_for(lambda: box.messages, 10, "the digest")
    text = summary_text(box.messages[0])
    rows = [line for line in text.splitlines() if "bounce" in line and "event(s)" not in line]
    assert len(rows) == 2, text
    assert "forged@example.com" in rows[0] and "\\n" in rows[0]
    assert not any(line.startswith("X-Forged") for line in text.splitlines())
    assert "\x1b" not in text


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (2**53 - 1, True),
        (-(2**53 - 1), True),
        (2**53, False),
        (-(2**53), False),
        (99999999999999999999999, False),
        (1.5, True),
        (1e300, False),
    ],
)
async def test_numbers_beyond_the_json_safe_range_are_refused(make_relay, value, ok):
    relay = await make_relay(base_toml())
    body = b'{"event_type":"bounce","email":"a@example.com","amount":%s}' % str(value).encode()
    async with relay.http.post(
        f"{relay.url}/v1/events", data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        answer = await resp.json()
        if ok:
            assert resp.status == 202, answer
        else:
            assert resp.status == 400, answer
            assert answer["errors"][0]["field"] == "amount"
            assert "string" in answer["errors"][0]["message"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("filename", "events-{seq}\\r\\n.jsonl"),
        ("directory", "in\\ncoming"),
        ("ca_file", "ca\\u0000.pem"),
    ],
)
async def test_config_refuses_control_characters(tmp_path, key, value):
    config = tmp_path / "relay.toml"
    config.write_text(
        ftp_toml(21).replace('timeout = "5s"\n', f'timeout = "5s"\n{key} = "{value}"\n')
    )
    code, out, err = await cli("check-config", "-c", str(config))
    assert code != 0
    assert f"destinations.logs.{key}: must not contain control characters" in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('"X Bad" = "v"', "header name"),
        ('X-Ok = "va\\nlue"', "control"),
        ('X-Ok = "grüße"', "printable ASCII"),
    ],
)
async def test_config_refuses_bad_custom_headers(tmp_path, header, message):
    config = tmp_path / "relay.toml"
    config.write_text(
        base_toml()
        + '[destinations.hook]\ntype = "http"\nurl = "http://127.0.0.1:9/"\n'
        + f"[destinations.hook.headers]\n{header}\n"
        + ROUTE.format(name="hook")
    )
    code, _, err = await cli("check-config", "-c", str(config))
    assert code != 0 and message in err and "destinations.hook.headers." in err, err


async def test_the_console_masks_quoted_and_international_addresses(make_relay):
    relay = await make_relay(base_toml())
    sent = [
        bounce("m-1", email='"jane doe"@example.com'),
        bounce("m-2", email="jöhn.smith@münchen.de"),
    ]
    assert (await relay.post_events(sent)).status == 202
    for event_id, hidden, shown in (
        ("m-1", "jane doe", "j***@example.com"),
        ("m-2", "jöhn.smith", "j***@münchen.de"),
    ):
        async with relay.http.get(f"{relay.url}/v1/admin/events/{event_id}") as resp:
            text = await resp.text()
        assert hidden not in text and shown in text, text
        async with relay.http.get(f"{relay.url}/console/events/{event_id}") as resp:
            page = await resp.text()
        assert hidden not in page and shown in page


async def test_hostile_strings_stay_inert_in_the_dispatch_log_and_metrics(make_relay):
    failing = Receiver(default=500, error_text=HOSTILE + '"} fake_metric{x="1"} 1\n')
    await failing.start()
    try:
        toml = base_toml() + (
            f'[destinations.hook]\ntype = "http"\nurl = "{failing.url}"\n'
            "retry = { max_attempts = 1 }\n"
        )
        relay = await make_relay(toml + ROUTE.format(name="hook"))
        assert (await relay.post_events(bounce("log-1", message=HOSTILE))).status == 202
        await wait_for(
            lambda: any(line.get("outcome") == "dead" for line in relay.dispatch_lines()),
            10,
            "dead",
        )
        raw = (relay.dir / "dispatch.log").read_bytes()
        for line in raw.splitlines():
            entry = orjson.loads(line)  # every line is one whole JSON object
            assert isinstance(entry, dict)
        assert b"\x1b" not in raw and b"\r" not in raw
        async with relay.http.get(f"{relay.url}/metrics") as resp:
            metrics = await resp.text()
        assert "fake_metric" not in metrics and "\x1b" not in metrics
    finally:
        await failing.stop()
