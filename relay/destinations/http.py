"""The http destination: POST or GET webhooks, JSON or form, Standard Webhooks signatures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

import aiohttp
import orjson

from .. import __version__
from ..config import HttpDestination
from ..domain import pure360
from ..domain.text import header_value
from ..models import RESPONSE_CHARS, Claimed, Result

ERROR_BODY_CHARS = 200


def flatten(event: dict) -> dict[str, str]:
    """An event as flat string fields (form, query string, CSV): `headers.<Name>` per header."""
    flat: dict[str, str] = {}
    for key, value in event.items():
        if key == "headers" and isinstance(value, dict):
            for name, v in value.items():
                flat[f"headers.{name}"] = str(v)
        elif value is None:
            flat[key] = ""
        elif isinstance(value, bool):
            flat[key] = "true" if value else "false"
        else:
            flat[key] = str(value)
    return flat


def _form(fmt: str, event: dict) -> str:
    """The urlencoded fields: relay's own (`form`) or Pure360's (`pure360`)."""
    return pure360.form_body(event) if fmt == "pure360" else urlencode(flatten(event))


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def message_id(claims: Sequence[Claimed]) -> str:
    """The event id; for a batch, a stable id derived from its event ids."""
    if len(claims) == 1:
        return claims[0].event_id
    digest = hashlib.sha256("\n".join(c.event_id for c in claims).encode()).hexdigest()
    return f"batch_{digest[:32]}"


def build_request(
    dest: HttpDestination, claims: Sequence[Claimed], with_signature: bool = True
) -> tuple[str, bytes | None, dict[str, str], bytes]:
    """(url, body, headers, signed bytes) for one attempt at `claims`: what the sender
    sends, and what the console shows as curl (without the signature headers)."""
    headers = dict(dest.headers)
    url, body = dest.url, None
    if dest.method == "GET":
        query = _form(dest.format, orjson.loads(claims[0].body))
        url = f"{url}{'&' if '?' in url else '?'}{query}"
        signed = query.encode()
    elif dest.format in ("form", "pure360"):
        body = _form(dest.format, orjson.loads(claims[0].body)).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        signed = body
    else:
        body = (
            claims[0].body
            if dest.batch_size == 1
            else b"[" + b",".join(c.body for c in claims) + b"]"
        )
        headers["Content-Type"] = "application/json"
        signed = body
    # ASCII whatever the id (signed as sent, so receivers verify what they got)
    msg_id = header_value(message_id(claims))
    headers["webhook-id"] = msg_id  # always: receivers dedupe on it
    if with_signature and dest.signing_key is not None:
        ts = int(time.time())
        headers["webhook-timestamp"] = str(ts)
        headers["webhook-signature"] = sign(dest.signing_key, msg_id, ts, signed)
    return url, body, headers, signed


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError):
        return None


class HttpSender:
    def __init__(self, dest: HttpDestination) -> None:
        self.dest = dest
        self.batch_size = dest.batch_size
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        local = (self.dest.source_address, 0) if self.dest.source_address else None
        # One keep-alive pool per destination, as wide as its concurrency.
        connector = aiohttp.TCPConnector(
            limit=self.dest.concurrency, local_addr=local, ttl_dns_cache=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.dest.timeout_s),
            headers={"User-Agent": f"relay/{__version__}"},
            skip_auto_headers=("Content-Type",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, claims: list[Claimed]) -> Result:
        assert self._session is not None, "start() first"
        url, body, headers, _ = build_request(self.dest, claims)
        try:
            async with self._session.request(
                self.dest.method, url, data=body, headers=headers
            ) as resp:
                text = (await resp.content.read(RESPONSE_CHARS)).decode("utf-8", "replace")
                if 200 <= resp.status < 300:
                    return Result.delivered(resp.status, text)
                after = None
                if resp.status in (429, 503):
                    after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
                snippet = text[:ERROR_BODY_CHARS].strip()
                error = f"HTTP {resp.status}" + (f": {snippet}" if snippet else "")
                if resp.status in self.dest.reject:  # e.g. 410 Gone: retrying cannot help
                    return Result.rejected(error, resp.status, text)
                return Result.retry(error, resp.status, after, text)
        except TimeoutError:
            return Result.retry(f"timeout after {self.dest.timeout_s:g}s")
        except aiohttp.ClientConnectorError as exc:
            return Result.retry(f"cannot connect: {exc.os_error.strerror or exc.os_error}")
        except aiohttp.ServerDisconnectedError:
            return Result.retry("server disconnected")
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            return Result.retry(f"{type(exc).__name__}: {exc}"[:ERROR_BODY_CHARS])
