"""Real SMTP, FTP(S) servers on 127.0.0.1 for the email and ftp destination tests.

`Mailbox` is an aiosmtpd handler that records accepted messages and answers from a script
(a code such as 421/451/550, or "drop" to cut the connection). `FtpServer` is aioftp's own
server on a temporary directory that records STOR/RNTO, can cut an upload in the middle,
and can speak explicit FTPS (AUTH TLS), which aioftp's server lacks on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import ssl
import sys
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path, PurePosixPath

import aioftp
import orjson
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from .helpers import base_toml, free_port


async def flush_cli(config_path: Path, name: str) -> tuple[int, str, str]:
    """`relay flush NAME -c CONFIG` as a real subprocess: (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "flush",
        name,
        "-c",
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


# -- SMTP --------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """An aiosmtpd handler: answers DATA from `script` (then 250) and keeps what it took.

    `refuse` names recipients whose RCPT gets a 550; `message_ids` has the Message-ID of
    every DATA, taken or not; `recipients` the accepted RCPTs of each message taken."""

    script: list[object] = field(default_factory=list)
    default: object = 250
    messages: list[EmailMessage] = field(default_factory=list)
    attempts: int = 0
    refuse: frozenset[str] = frozenset()
    message_ids: list[str] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.attempts += 1
            self.message_ids.append(str(parsed["Message-ID"]))
            behaviour = self.script.pop(0) if self.script else self.default
        if behaviour == "drop":
            server.transport.close()
            return "421 dropped"
        if behaviour != 250:
            return f"{behaviour} scripted failure"
        with self._lock:
            self.messages.append(parsed)  # type: ignore[arg-type]
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data == (b"relay", b"s3cret")
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)


def attached_events(msg: EmailMessage) -> list[dict]:
    """The JSON-lines attachment of a digest, parsed."""
    parts = [p for p in msg.iter_attachments() if p.get_filename()]
    assert len(parts) == 1, [p.get_filename() for p in parts]
    assert parts[0].get_filename().endswith(".jsonl")
    data = parts[0].get_payload(decode=True)
    return [orjson.loads(line) for line in data.splitlines()]


def summary_text(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return body.get_content()


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, tls: ssl.SSLContext | None = None, auth: bool = False):
    """A threaded aiosmtpd Controller on a free port; yields the port."""
    kwargs: dict = {}
    if tls is not None:
        kwargs.update(tls_context=tls, require_starttls=True)
    if auth:
        kwargs.update(authenticator=mailbox.authenticate, auth_required=True)
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def certificate(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 signed by a CA made now, and that CA's PEM file."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, ca_file


# -- FTP ---------------------------------------------------------------------------------


class BreakingPathIO(aioftp.PathIO):
    """Writes the first block of an upload, then cuts the connection: `breaks` times."""

    breaks = 0

    async def write(self, file, data):  # type: ignore[override]
        written = await super().write(file, data)
        if BreakingPathIO.breaks > 0:
            BreakingPathIO.breaks -= 1
            file.flush()
            assert self.connection is not None
            self.connection.command_connection.close()
            raise ConnectionResetError("test: connection cut mid-upload")
        return written


class FtpServer(aioftp.Server):
    """aioftp's server, recording STOR and RNTO; with `tls`, explicit FTPS via AUTH TLS."""

    def __init__(self, root: Path, tls: ssl.SSLContext | None = None, **kwargs) -> None:
        user = aioftp.User("relay", "s3cret", base_path=root, home_path=PurePosixPath("/"))
        super().__init__([user], path_io_factory=BreakingPathIO, **kwargs)
        self.root = root
        self.explicit_tls = tls
        self.stored: list[str] = []
        self.renamed: list[tuple[str, str, int]] = []  # (from, to, size of from at RNTO)
        self.commands_mapping["auth"] = self.auth
        self.hang_rename: str | None = None  # "before" or "after": RNTO never answers

    async def start_on(self, port: int = 0) -> int:
        await self.start("127.0.0.1", port)
        self.ssl = self.explicit_tls  # from here on: data connections use TLS (PROT P)
        return self.server_port

    async def auth(self, connection, rest) -> bool:
        if self.explicit_tls is None or rest.upper() != "TLS":
            connection.response("502", "no TLS here")
            return True
        stream = connection.command_connection
        await stream.write(b"234 go ahead\r\n")
        await stream.writer.start_tls(self.explicit_tls)
        return True

    async def pbsz(self, connection, rest) -> bool:
        """As RFC 4217 servers do: PBSZ and PROT right after AUTH TLS, before login."""
        connection.response("200", "")
        return True

    async def prot(self, connection, rest) -> bool:
        connection.response("200" if rest == "P" else "502", "")
        return True

    async def stor(self, connection, rest, mode="wb") -> bool:
        self.stored.append(str(rest))
        return await super().stor(connection, rest, mode)

    async def rnto(self, connection, rest) -> bool:
        source = getattr(connection, "rename_from", None)
        size = source.stat().st_size if source is not None and source.exists() else -1
        self.renamed.append((source.name if source else "", str(rest), size))
        if self.hang_rename == "after" and source is not None:
            source.rename(self.get_paths(connection, rest)[0])  # the client never hears 250
        if self.hang_rename:
            await asyncio.sleep(3600)
        return await super().rnto(connection, rest)

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.root.iterdir()) if p.is_file()}


def ftp_toml(port: int, extra: str = "", name: str = "logs") -> str:
    """relay with one ftp destination `name` at the `ftp` fixture's server, every event
    routed to it, uploading only when flushed (`upload_every` is an hour)."""
    return (
        base_toml()
        + f'[destinations.{name}]\ntype = "ftp"\nhost = "127.0.0.1"\nport = {port}\n'
        + 'username = "relay"\npassword = "s3cret"\ntimeout = "5s"\nupload_every = "1h"\n'
        + extra
        + f'[[routes]]\nevents = ["*"]\ndestinations = ["{name}"]\n'
    )
