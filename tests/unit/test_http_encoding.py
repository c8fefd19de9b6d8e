"""How http destinations encode events: flat fields, Standard Webhooks signatures, Retry-After."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qsl, urlencode

import pytest

from relay.config import load
from relay.destinations.http import flatten, parse_retry_after, sign


def test_flatten_turns_headers_into_fields():
    event = {
        "event_type": "delivery",
        "sendid": "s1",
        "headers": {"X-Customer-Ref": "A-1001", "X-Campaign": "spring"},
    }
    assert flatten(event) == {
        "event_type": "delivery",
        "sendid": "s1",
        "headers.X-Customer-Ref": "A-1001",
        "headers.X-Campaign": "spring",
    }


def test_flatten_writes_bools_none_and_numbers_as_text():
    flat = flatten({"is_bot": True, "first": False, "bot_reason": None, "event_time": 17, "t": 1.5})
    assert flat == {
        "is_bot": "true",
        "first": "false",
        "bot_reason": "",
        "event_time": "17",
        "t": "1.5",
    }


def test_flattened_fields_survive_a_form_round_trip():
    event = {
        "email": "a+b@example.com",
        "click_url": "http://x.example/?a=1&b=2",
        "headers": {"X-A": "é"},
    }
    assert dict(parse_qsl(urlencode(flatten(event)))) == {
        "email": "a+b@example.com",
        "click_url": "http://x.example/?a=1&b=2",
        "headers.X-A": "é",
    }


# --- Standard Webhooks -------------------------------------------------------------------


def reference_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """An independent Standard Webhooks signer, written from the specification."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed_content = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(key, signed_content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def reference_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    expected = reference_signature(
        secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body
    )
    return any(
        hmac.compare_digest(expected, sig) for sig in headers["webhook-signature"].split(" ")
    )


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "body"),
    [
        ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'),
        ("e1", 1700000000, b'{"event_type":"bounce","email":"a@example.com","id":"e1"}'),
        ("01hzy", 0, b""),
        ("unicode", 1700000001, '{"email":"jos\u00e9@example.com"}'.encode()),
    ],
)
def test_sign_matches_an_independent_standard_webhooks_signer(tmp_path, msg_id, timestamp, body):
    # The key goes through the config, as a user writes it: whsec_ + base64.
    path = tmp_path / "relay.toml"
    path.write_text(
        f'[destinations.crm]\ntype = "http"\nurl = "https://x.example/"\nsigning_secret = "{SECRET}"\n'
        '[[routes]]\nevents = ["*"]\ndestinations = ["crm"]\n'
    )
    key = load(path).destinations["crm"].signing_key
    signature = sign(key, msg_id, timestamp, body)
    assert signature == reference_signature(SECRET, msg_id, timestamp, body)
    assert signature.startswith("v1,")
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
    assert reference_verify(SECRET, headers, body)


def test_the_standard_webhooks_published_example():
    # The example in the Standard Webhooks specification's reference libraries.
    body = b'{"test": 2432232314}'
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert (
        sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_a_changed_body_id_or_timestamp_fails_verification():
    """Relay's signature covers the body, the id and the timestamp: change any one and the
    receiver's check (the independent verifier) refuses relay's original signature, while
    relay's signature of the changed message is exactly the reference one."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signature = sign(key, "e1", 1700000000, b'{"a":1}')
    good = {"webhook-id": "e1", "webhook-timestamp": "1700000000", "webhook-signature": signature}
    assert reference_verify(SECRET, good, b'{"a":1}')
    for msg_id, ts, body in (
        ("e1", 1700000000, b'{"a":2}'),
        ("e2", 1700000000, b'{"a":1}'),
        ("e1", 1700000001, b'{"a":1}'),
    ):
        changed = {**good, "webhook-id": msg_id, "webhook-timestamp": str(ts)}
        assert not reference_verify(SECRET, changed, body)
        resigned = sign(key, msg_id, ts, body)
        assert resigned != signature
        assert resigned == reference_signature(SECRET, msg_id, ts, body)
        assert reference_verify(SECRET, {**changed, "webhook-signature": resigned}, body)


# --- Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 30 ", 30.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_in_seconds(value, expected):
    assert parse_retry_after(value, now=1_700_000_000.0) == expected


def test_retry_after_as_an_http_date():
    now = 1_700_000_000.0
    later = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    assert later.endswith("GMT")
    assert parse_retry_after(later, now) == pytest.approx(90.0)


def test_retry_after_as_a_date_in_the_past_is_zero():
    now = 1_700_000_000.0
    earlier = format_datetime(datetime.fromtimestamp(now - 600, UTC), usegmt=True)
    assert parse_retry_after(earlier, now) == 0.0


def test_retry_after_fixed_rfc_9110_date():
    # Sun, 06 Nov 1994 08:49:37 GMT is 784111777 seconds after the epoch.
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=784111777 - 60) == 60.0
