"""The sftp destination: the ftp destination's log files, uploaded over SSH with asyncssh.

Same protocol as ftp (temporary name, then rename; delivered only after the rename), plus
what SSH adds: the server's host key must match `known_hosts` or the pinned `host_key`
(the connection is refused otherwise), and login may use a key file.
"""

from __future__ import annotations

import contextlib
import warnings

with warnings.catch_warnings():
    # cryptography deprecates DSA and asyncssh imports its key classes at import time: a warning
    # an operator can do nothing about, so it stays out of relay's log.
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    import asyncssh

from ..config.destinations import SftpDestination
from ..models import Result
from .logfile import LogFileSender, free_name, temp_name


def known_hosts(dest: SftpDestination) -> object:
    """asyncssh's `known_hosts`: a file, or (trusted host keys, trusted CAs, revoked keys).

    `()` is asyncssh's default (~/.ssh/known_hosts); never None, which would trust any key.
    """
    if dest.host_key is not None:
        return ([asyncssh.import_public_key(dest.host_key)], [], [])
    if dest.known_hosts is not None:
        return str(dest.known_hosts)
    return ()


class SftpSender(LogFileSender):
    def __init__(self, dest: SftpDestination) -> None:
        super().__init__(dest)
        self._options: dict = {}

    async def start(self) -> None:
        """Read the keys once. A bad key fails each send (visible in the dispatch log and
        `relay dead list`) rather than the daemon's start, so other destinations still run."""
        try:
            self._options = self._prepare()
        except (asyncssh.KeyImportError, OSError, ValueError) as exc:
            self._broken = f"cannot use the configured keys: {exc}"[:200]

    def _prepare(self) -> dict:
        dest = self.dest
        keys = None  # no key file: password only (no agent, no ~/.ssh/id_* guessing)
        if dest.private_key is not None:
            keys = [asyncssh.read_private_key(str(dest.private_key), dest.passphrase)]
        return {
            "port": dest.port,
            "username": dest.username,
            "password": dest.password,
            "client_keys": keys,
            "known_hosts": known_hosts(dest),
            "agent_path": None,
            "connect_timeout": dest.timeout_s,
            "login_timeout": dest.timeout_s,
        }

    def _failed(self, exc: Exception) -> Result | None:
        if isinstance(exc, asyncssh.SFTPError):
            return Result.retry(f"SFTP error {exc.code}: {exc.reason}"[:200])
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return Result.retry(f"host key not verifiable: {exc.reason}"[:200])
        if isinstance(exc, asyncssh.Error):
            return Result.retry(f"SSH {type(exc).__name__}: {exc.reason}"[:200])
        if isinstance(exc, OSError | EOFError):
            return Result.retry(f"{type(exc).__name__}: {exc}"[:200])
        return None

    async def _upload(self, data: bytes, when: float) -> str:
        dest = self.dest
        async with (
            asyncssh.connect(dest.host, **self._options) as conn,
            conn.start_sftp_client() as sftp,
        ):
            if dest.directory not in ("", "."):
                await sftp.chdir(dest.directory)
            for name in list(self._stale):
                with contextlib.suppress(asyncssh.SFTPError):
                    await sftp.remove(name)
                self._stale.discard(name)
            temp = temp_name()
            self._stale.add(temp)
            async with sftp.open(temp, "wb") as f:
                await f.write(data)
            final = await free_name(dest.filename, when, sftp.exists)
            await sftp.rename(temp, final)  # SFTP v3 rename never overwrites
            self._stale.discard(temp)
            return final
