"""What every destination plug-in is: a `Sender` that turns claimed deliveries into a `Result`.

A sender maps its own protocol's answers (HTTP status and Retry-After, SMTP codes, FTP
replies) into one small result, and never lets a library exception reach the dispatcher.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from ..models import Claimed, Result


def tls_context(ca_file: Path | None) -> tuple[ssl.SSLContext | None, str | None]:
    """A verifying TLS context, or the reason it could not be made.

    A bad `ca_file` fails each send with that reason instead of stopping the daemon's start.
    """
    cafile = str(ca_file) if ca_file else None
    try:
        return ssl.create_default_context(cafile=cafile), None
    except (ssl.SSLError, OSError) as exc:
        return None, f"ca_file {cafile}: {exc}"[:200]


class Sender(Protocol):
    batch_size: int  # how many deliveries one `send` takes

    async def start(self) -> None: ...

    async def send(self, claims: list[Claimed]) -> Result: ...

    async def close(self) -> None: ...
