"""Signed tracking tokens: round trip, tamper matrix, key rotation, what can never
be signed, URL length, and a decoder that never raises."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.domain.tokens import (
    FIELDS as TOKEN_FIELDS,
)
from relay.domain.tokens import (
    KINDS,
    MAX_FIELD,
    MAX_TOKEN,
    Signer,
    TokenError,
    is_safe_url,
    sign,
    verify,
)

KEY = b"current-tracking-secret-0123456789"
OLD = b"previous-tracking-secret-987654321"
B64URL = string.ascii_letters + string.digits + "-_"

FIELDS = {
    "email": "jane.doe@example.com",
    "url": "https://www.example.com/spring-sale?utm_source=newsletter&x=%20y#top",
    "listid": "42",
    "sendid": "20240501-newsletter",
    "click_tracking_id": "cta-1",
    "mail_class": "marketing",
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_mac(value: object, kind: str, key: bytes) -> str:
    """Any JSON as a token body, with the MAC made by `key` (as only the key holder could)."""
    payload = orjson.dumps(value)
    mac = hmac.new(key, kind.encode() + b"\0" + payload, hashlib.sha256).digest()[:16]
    return f"{b64(payload)}.{b64(mac)}"


def fields_for(kind: str) -> dict[str, str]:
    """What each kind carries in practice (an open has no target URL)."""
    if kind in ("open", "honeypot"):
        return {k: v for k, v in FIELDS.items() if k != "url"}
    return dict(FIELDS)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_every_kind(kind):
    token = sign(KEY, kind, fields_for(kind))
    assert verify([KEY], kind, token) == fields_for(kind)
    assert set(token) <= set(B64URL + "."), "tokens are URL-safe as they are"


def test_round_trip_keeps_unicode_and_drops_empty_fields():
    token = sign(
        KEY, "click", {"email": "zoë@exämple.com", "url": "https://example.com/ü", "listid": ""}
    )
    assert verify([KEY], "click", token) == {
        "email": "zoë@exämple.com",
        "url": "https://example.com/ü",
    }
    # Only the email set: the missing url / listid / ... are absent, not empty strings.
    assert verify([KEY], "open", sign(KEY, "open", {"email": "a@example.com"})) == {
        "email": "a@example.com"
    }


def test_the_format_is_the_documented_one():
    """base64url(JSON array) "." base64url(first 16 bytes of HMAC-SHA256(kind NUL payload)),
    built here without relay's code: what another implementation would have to produce."""
    payload = orjson.dumps(["click", "a@example.com", "https://example.com/x"])
    mac = hmac.new(KEY, b"click\0" + payload, hashlib.sha256).digest()[:16]
    token = f"{b64(payload)}.{b64(mac)}"
    assert sign(KEY, "click", {"email": "a@example.com", "url": "https://example.com/x"}) == token
    assert verify([KEY], "click", token) == {
        "email": "a@example.com",
        "url": "https://example.com/x",
    }

    # Even a correctly MACed token is refused if its target is not a safe http(s) URL:
    # nothing relay verifies can ever become a redirect to javascript: or a CR/LF header.
    for bad in ("javascript:alert(1)", "https://example.com/\r\nSet-Cookie: a=b", "//evil.com"):
        assert (
            verify([KEY], "click", with_mac(["click", "a@example.com", bad], "click", KEY)) is None
        )


# --- the tamper matrix: every one of these must verify to None --------------------------------

TOKEN = sign(KEY, "click", FIELDS)


def test_every_character_changed_to_every_other_base64url_char_is_rejected():
    rejected = 0
    for i, original in enumerate(TOKEN):
        for c in B64URL:
            if c == original:
                continue
            forged = TOKEN[:i] + c + TOKEN[i + 1 :]
            assert verify([KEY], "click", forged) is None, (i, c)
            rejected += 1
    assert rejected == len(TOKEN) * 63 + 1  # the "." has 64 replacements, the rest 63


def test_every_bit_of_the_decoded_payload_and_mac_flipped_is_rejected():
    body, mac = TOKEN.split(".")
    raw = {
        "body": base64.urlsafe_b64decode(body + "=="),
        "mac": base64.urlsafe_b64decode(mac + "=="),
    }
    for part, data in raw.items():
        for i in range(len(data) * 8):
            flipped = bytearray(data)
            flipped[i // 8] ^= 1 << (i % 8)
            enc = base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
            forged = f"{enc}.{mac}" if part == "body" else f"{body}.{enc}"
            assert verify([KEY], "click", forged) is None, (part, i)


def test_truncated_at_every_length_is_rejected():
    for n in range(len(TOKEN)):
        assert verify([KEY], "click", TOKEN[:n]) is None, n
    # ...and with the first characters cut instead
    for n in range(1, len(TOKEN)):
        assert verify([KEY], "click", TOKEN[n:]) is None, n


@pytest.mark.parametrize(
    "suffix", [*B64URL[::7], "=", "==", ".", ".AAAA", "%00", "\n", " ", "/", "?x=1", "#"]
)
def test_extended_is_rejected(suffix):
    assert verify([KEY], "click", TOKEN + suffix) is None
    assert verify([KEY], "click", suffix + TOKEN) is None


def test_padding_or_other_spellings_of_the_same_bytes_are_rejected():
    body, mac = TOKEN.split(".")
    padded = body + "=" * (-len(body) % 4)
    if padded != body:
        assert verify([KEY], "click", f"{padded}.{mac}") is None
    standard = TOKEN.replace("-", "+").replace("_", "/")  # plain base64, not base64url
    if standard != TOKEN:
        assert verify([KEY], "click", standard) is None


def test_another_secret_is_rejected():
    assert verify([b"someone-elses-secret"], "click", TOKEN) is None
    assert verify([], "click", TOKEN) is None
    assert verify([KEY[:-1]], "click", TOKEN) is None


@pytest.mark.parametrize("signed_as", KINDS)
@pytest.mark.parametrize("read_as", KINDS)
def test_a_token_of_another_kind_is_rejected(signed_as, read_as):
    token = sign(KEY, signed_as, fields_for(signed_as))
    result = verify([KEY], read_as, token)
    assert (result is not None) == (signed_as == read_as)


def test_a_token_relabelled_as_another_kind_is_rejected():
    """Swapping the kind inside the payload (keeping the MAC) does not make an open a click."""
    token = sign(KEY, "open", {"email": "a@example.com", "url": "https://example.com/"})
    body, mac = token.split(".")
    payload = orjson.loads(base64.urlsafe_b64decode(body + "=="))
    payload[0] = "click"
    body2 = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    assert verify([KEY], "click", f"{body2}.{mac}") is None


# --- key rotation ------------------------------------------------------------------------------


def test_key_rotation_accepts_the_old_secret_second_and_signs_with_the_first():
    before = Signer([OLD.decode()], "https://t.example.com")
    old_url = before.url("click", **FIELDS)
    old_token = old_url.rsplit("/", 1)[1]

    rotated = Signer([KEY.decode(), OLD.decode()], "https://t.example.com")
    assert rotated.read("click", old_token) == FIELDS, "links already sent keep working"

    new_token = rotated.url("click", **FIELDS).rsplit("/", 1)[1]
    assert new_token != old_token
    assert verify([KEY], "click", new_token) == FIELDS, "new links are signed with the first"
    assert verify([OLD], "click", new_token) is None

    # Once the old secret is dropped, its links stop working.
    assert Signer([KEY.decode()], "https://t.example.com").read("click", old_token) is None


def test_signer_needs_a_secret_and_builds_each_path():
    with pytest.raises(ValueError):
        Signer([], "https://t.example.com")
    s = Signer(["k"], "https://t.example.com/")
    assert s.url("open", email="a@example.com").startswith("https://t.example.com/o/")
    assert s.url("open", email="a@example.com").endswith(".gif")
    assert s.url("click", email="a@example.com", url="https://x.example/").startswith(
        "https://t.example.com/c/"
    )
    assert s.url("unsub", email="a@example.com").startswith("https://t.example.com/u/")
    assert s.url("signup", listid="7").startswith("https://t.example.com/s/")


# --- what can never be signed -------------------------------------------------------------------

UNSAFE_URLS = [
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "//evil.com/phish",
    "/relative/path",
    "evil.com",
    "mailto:a@example.com",
    "tel:+15555550100",
    "ftp://files.example.com/x",
    "file:///etc/passwd",
    "https://",
    "http:///no-host",
    "https://example.com/\r\nSet-Cookie: a=b",
    "https://example.com/\nx",
    "https://example.com/\rx",
    "https://example.com/a b",
    "https://example.com/a\tb",
    "https://example.com/\x00",
    "https://example.com/\x7f",
    "https://example.com/" + "a" * MAX_FIELD,
]


@pytest.mark.parametrize("url", UNSAFE_URLS)
@pytest.mark.parametrize("kind", ["click", "unsub", "signup"])
def test_sign_refuses_unsafe_targets(kind, url):
    with pytest.raises(TokenError, match="^url: "):
        sign(KEY, kind, {"email": "a@example.com", "url": url})


@pytest.mark.parametrize("field", ["email", "listid", "sendid", "click_tracking_id", "mail_class"])
def test_sign_refuses_over_long_fields(field):
    with pytest.raises(TokenError, match=f"^{field}: "):
        sign(KEY, "click", {**FIELDS, field: "x" * (MAX_FIELD + 1)})
    # exactly at the limit is fine
    assert verify([KEY], "click", sign(KEY, "click", {**FIELDS, field: "x" * MAX_FIELD}))


def test_sign_refuses_an_unknown_kind():
    with pytest.raises(TokenError, match="^kind: "):
        sign(KEY, "redirect", FIELDS)


def test_a_typical_click_url_is_under_250_characters():
    signer = Signer(["a-43-character-random-secret-from-secrets-mod"], "https://relay.example.com")
    url = signer.url(
        "click",
        email="jane.doe@example.com",
        url="https://www.example.com/spring-sale?utm_source=newsletter",
        listid="42",
        sendid="20240501",
        click_tracking_id="cta-1",
        mail_class="marketing",
    )
    assert len(url) < 250, len(url)


# --- property: the decoder never raises ---------------------------------------------------------

token_like = st.text(alphabet=B64URL + ".=", max_size=300)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from(KINDS),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None, database=None)
@given(
    token=st.text(max_size=3000)
    | token_like
    | st.builds(with_mac, json_values, st.just("click"), st.just(OLD[::-1])),
    kind=st.sampled_from(KINDS),
)
def test_verify_never_raises_on_arbitrary_text(token, kind):
    assert verify([KEY, OLD], kind, token) is None


@settings(max_examples=500, deadline=None, database=None)
@given(value=json_values, kind=st.sampled_from(KINDS))
def test_verify_never_raises_on_a_correctly_macd_odd_payload(value, kind):
    """Past the MAC, whatever the payload holds is either well-formed fields or None."""
    result = verify([KEY], kind, with_mac(value, kind, KEY))
    assert result is None or (
        isinstance(result, dict) and all(isinstance(v, str) and v for v in result.values())
    )


@settings(max_examples=300, deadline=None, database=None)
@given(
    kind=st.sampled_from(KINDS),
    values=st.fixed_dictionaries(
        {},
        optional={
            name: st.text(max_size=80)
            for name in ("email", "url", "listid", "sendid", "click_tracking_id", "mail_class")
        },
    ),
)
def test_sign_either_refuses_or_round_trips(kind, values):
    try:
        token = sign(KEY, kind, values)
    except TokenError:
        assert values.get("url"), "only a bad url is refused at these lengths"
        return
    assert verify([KEY], kind, token) == {k: v for k, v in values.items() if v}


# -- the Signer's memory of verified tokens ------------------------------------------------


def test_a_token_read_again_gives_the_same_fields_in_a_fresh_dict():
    signer = Signer([KEY.decode()], "https://t.example.com")
    token = sign(KEY, "click", FIELDS)
    first = signer.read("click", token)
    assert first == FIELDS
    first["url"] = "https://evil.example.com/"  # a caller changing its copy
    first.pop("email")
    again = signer.read("click", token)
    assert again == FIELDS and again is not first


def test_a_remembered_token_is_still_only_good_for_its_own_kind():
    signer = Signer([KEY.decode()], "https://t.example.com")
    token = sign(KEY, "click", FIELDS)
    assert signer.read("click", token) == FIELDS
    for kind in KINDS:
        if kind != "click":
            assert signer.read(kind, token) is None
    assert signer.read("click", token + "A") is None
    assert signer.read("click", token[:-1]) is None


def test_invalid_tokens_are_not_remembered_and_the_memory_is_bounded():
    from relay.domain import tokens

    signer = Signer([KEY.decode()], "https://t.example.com")
    bad = sign(OLD, "open", FIELDS)
    assert signer.read("open", bad) is None
    assert signer.read("open", bad) is None
    assert signer._verified == {}
    for i in range(tokens.VERIFIED_CACHE + 10):
        assert signer.read("open", sign(KEY, "open", {"email": f"u{i}@example.com"}))
    assert len(signer._verified) == tokens.VERIFIED_CACHE


def test_a_new_signer_without_the_old_secret_forgets_its_tokens():
    old = Signer([OLD.decode()], "https://t.example.com")
    token = sign(OLD, "open", FIELDS)
    assert old.read("open", token) is not None
    assert Signer([KEY.decode()], "https://t.example.com").read("open", token) is None


# --- edges found by mutation testing (tools/mutation.sh) -----------------------------------


def test_the_format_holds_for_payloads_of_every_length():
    """Hundreds of lengths, so the base64 of some ends in each character and each padding."""
    for n in range(300):
        email = f"{'u' * n}@example.com"
        payload = orjson.dumps(["open", email])
        mac = hmac.new(KEY, b"open\0" + payload, hashlib.sha256).digest()[:16]
        token = f"{b64(payload)}.{b64(mac)}"
        assert sign(KEY, "open", {"email": email}) == token
        assert verify([KEY], "open", token) == {"email": email}


def test_a_token_longer_than_max_token_is_rejected_even_with_a_good_mac():
    """Unpadded base64 is never 1 more than a multiple of 4, so no token is exactly
    MAX_TOKEN (2048) long: the nearest are 2047 (read) and 2049 (refused)."""
    by_length = {}
    for n in range(1400, 1600):
        by_length[len(with_mac(["click", "a" * n], "click", KEY))] = n
    assert MAX_TOKEN not in by_length
    under = with_mac(["click", "a" * by_length[MAX_TOKEN - 1]], "click", KEY)
    assert verify([KEY], "click", under) == {"email": "a" * by_length[MAX_TOKEN - 1]}
    over = with_mac(["click", "a" * by_length[MAX_TOKEN + 1]], "click", KEY)
    assert verify([KEY], "click", over) is None


def test_a_payload_of_another_kind_maced_for_this_one_is_rejected():
    assert verify([KEY], "click", with_mac(["open", "a@example.com"], "click", KEY)) is None


def test_a_payload_with_more_values_than_fields_is_rejected():
    values = ["a@example.com", "https://example.com/", *["x"] * (len(TOKEN_FIELDS) - 2)]
    assert verify([KEY], "click", with_mac(["click", *values], "click", KEY)) is not None
    assert verify([KEY], "click", with_mac(["click", *values, "x"], "click", KEY)) is None


def test_a_token_signed_with_the_first_of_two_secrets_verifies_with_both_given():
    token = sign(KEY, "click", FIELDS)
    assert verify([KEY, OLD], "click", token) == FIELDS
    assert verify([OLD, KEY], "click", token) == FIELDS


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("http://example.com/", True),
        ("HTTP://example.com/", True),
        ("https://example.com/" + "x" * (MAX_FIELD - 20), True),  # exactly MAX_FIELD
        ("https://example.com/" + "x" * (MAX_FIELD - 19), False),  # one more
        ("", False),
        ("https://", False),
        ("ftp://example.com/", False),
        ("https://[::1/", False),  # urlsplit raises on it: not safe, not an error
    ],
)
def test_is_safe_url_edges(url, safe):
    assert is_safe_url(url) is safe


def test_a_public_url_keeps_its_path_and_loses_only_a_trailing_slash():
    s = Signer(["k"], "https://t.example.com/relayX/")
    assert s.url("open", email="a@example.com").startswith("https://t.example.com/relayX/o/")


def test_the_error_messages_say_what_is_allowed():
    with pytest.raises(TokenError) as kind:
        sign(KEY, "redirect", FIELDS)
    assert str(kind.value) == "kind: must be one of open, click, unsub, signup, honeypot"
    with pytest.raises(TokenError) as url:
        sign(KEY, "click", {**FIELDS, "url": "javascript:alert(1)"})
    assert str(url.value) == (
        "url: must be an absolute http(s) URL without spaces or control characters"
    )
    with pytest.raises(ValueError) as secret:
        Signer([], "https://t.example.com")
    assert str(secret.value) == "at least one tracking secret is needed"
