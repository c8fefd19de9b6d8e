"""The ftp destination: one log file per period, uploaded with aioftp (FTP or explicit FTPS).

The file goes up under a hidden temporary name and is renamed to its final name only when
the server has confirmed the whole transfer (226), and the events count as delivered only
after the rename (250). A reader of the directory therefore never sees half a file under a
final name, and an interrupted upload leaves at most a `.relay-….part` file, which the
next upload removes.
"""

from __future__ import annotations

import contextlib
import ssl

import aioftp

from ..config.destinations import FtpDestination
from ..models import Result
from .base import tls_context
from .logfile import LogFileSender, free_name, temp_name

BLOCK = 64 * 1024


class FtpSender(LogFileSender):
    delivered_status = 250

    def __init__(self, dest: FtpDestination) -> None:
        super().__init__(dest)
        self._tls: ssl.SSLContext | None = None

    async def start(self) -> None:
        if self.dest.tls:
            self._tls, self._broken = tls_context(self.dest.ca_file)

    def _failed(self, exc: Exception) -> Result | None:
        if isinstance(exc, aioftp.StatusCodeError):
            code = exc.received_codes[-1] if exc.received_codes else None
            text = " ".join(exc.info).strip() if isinstance(exc.info, list) else str(exc.info)
            status = int(code) if code is not None and str(code).isdigit() else None
            return Result.retry(f"FTP {code}: {text}"[:200], status)
        if isinstance(exc, ConnectionRefusedError):
            return Result.retry("cannot connect: connection refused")
        if isinstance(exc, OSError | aioftp.AIOFTPException | EOFError):
            return Result.retry(f"{type(exc).__name__}: {exc}"[:200] or "connection lost")
        return None

    async def _upload(self, data: bytes, when: float) -> str:
        dest = self.dest
        client = aioftp.Client(socket_timeout=dest.timeout_s, connection_timeout=dest.timeout_s)
        temp = temp_name()
        try:
            await client.connect(dest.host, dest.port)
            if self._tls is not None:
                await client.upgrade_to_tls(self._tls)
            await client.login(dest.username, dest.password)
            if dest.directory not in ("", "."):
                await client.change_directory(dest.directory)
            await self._remove_stale(client)
            self._stale.add(temp)
            async with client.upload_stream(temp) as stream:
                for i in range(0, len(data), BLOCK):
                    await stream.write(data[i : i + BLOCK])
            final = await free_name(dest.filename, when, client.exists)
            await client.rename(temp, final)
            self._stale.discard(temp)
            with contextlib.suppress(Exception):  # delivered already; a rude QUIT is fine
                await client.quit()
            return final
        finally:
            with contextlib.suppress(OSError):  # "Connect first": it never connected
                client.close()

    async def _remove_stale(self, client: aioftp.Client) -> None:
        for name in list(self._stale):
            with contextlib.suppress(aioftp.StatusCodeError):
                await client.remove_file(name)
            self._stale.discard(name)
