"""Config of the email, ftp and sftp destinations: frozen dataclasses and parsers.

Kept apart from `config.py` so that file stays about the config as a whole. These parsers
take the already-parsed `retry` policy from `config.py`, so this module never imports it
(which would be a cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .reader import Table

if TYPE_CHECKING:
    from . import RetryPolicy

FORMATS = ("jsonl", "csv", "form", "pure360")
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "form": "txt", "pure360": "txt"}
SUBJECT_FIELDS = {"event_type": "bounce", "count": 1, "destination": "d"}
FILENAME_FIELDS = {"date": "2026-01-01", "time": "000000", "seq": 1}
DEFAULT_SUBJECT = "[relay] {count} {event_type} events for {destination}"
MAX_PER_MESSAGE = 100_000
MAX_PER_FILE = 1_000_000
LEASE_SLACK_S = 30.0  # time to record the result after the send's own timeout


class Leased:
    """A pushing destination's claim holds its send's `timeout_s` plus slack to record the
    result (mixed into the frozen, slotted destination dataclasses)."""

    __slots__ = ()
    timeout_s: float

    @property
    def lease_s(self) -> float:
        return self.timeout_s + LEASE_SLACK_S


class Uploads(Leased):
    """ftp and sftp: one file a period of `upload_every_s`."""

    __slots__ = ()
    upload_every_s: float

    @property
    def period_s(self) -> float:
        return self.upload_every_s


@dataclass(frozen=True, slots=True)
class EmailDestination(Leased):
    name: str
    retry: RetryPolicy
    host: str
    from_addr: str  # the `from` key
    to: tuple[str, ...]
    port: int = 25
    tls: bool = False  # implicit TLS from the first byte (usually port 465)
    starttls: bool = False  # upgrade a plain connection (usually port 587); required when set
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # trust these CAs instead of the system's
    subject: str = DEFAULT_SUBJECT
    digest_s: float = 3600.0  # 0: one message per event
    max_events_per_message: int = 1000
    timeout_s: float = 30.0  # for one whole message: connect to QUIT
    delay_s: float = 0.0
    concurrency: int = 4  # per-event mode only: messages in flight at once
    reject_5xx: bool = True  # an SMTP 5xx reply is permanent: dead at once, never retried
    type: str = "email"

    @property
    def period_s(self) -> float:
        return self.digest_s

    def describe(self) -> str:
        every = f"digest every {self.digest_s:g}s" if self.digest_s else "one message per event"
        return f"smtp://{self.host}:{self.port} to {', '.join(self.to)} ({every})"


@dataclass(frozen=True, slots=True)
class FtpDestination(Uploads):
    name: str
    retry: RetryPolicy
    host: str
    port: int = 21
    username: str = "anonymous"
    password: str = "anon@"
    directory: str = "."
    tls: bool = False  # explicit FTPS: AUTH TLS on the plain port, data channels protected
    passive: bool = True  # the only mode: active FTP does not cross NAT or firewalls
    ca_file: Path | None = None
    upload_every_s: float = 3600.0
    filename: str = "events-{date}-{time}-{seq}.jsonl"
    format: str = "jsonl"
    csv_raw: bool = False  # csv: cells as they are, formulas too (see logfile.render)
    max_events_per_file: int = 100_000
    timeout_s: float = 60.0  # for one whole upload: connect to rename
    delay_s: float = 0.0
    type: str = "ftp"

    def describe(self) -> str:
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{self.host}:{self.port}/{self.directory} ({self.format} every {self.upload_every_s:g}s)"


@dataclass(frozen=True, slots=True)
class SftpDestination(Uploads):
    name: str
    retry: RetryPolicy
    host: str
    username: str
    port: int = 22
    password: str | None = None
    private_key: Path | None = None
    passphrase: str | None = None
    known_hosts: Path | None = None  # an OpenSSH known_hosts file
    host_key: str | None = None  # or one pinned public key: "ssh-ed25519 AAAA..."
    directory: str = "."
    upload_every_s: float = 3600.0
    filename: str = "events-{date}-{time}-{seq}.jsonl"
    format: str = "jsonl"
    csv_raw: bool = False
    max_events_per_file: int = 100_000
    timeout_s: float = 60.0
    delay_s: float = 0.0
    type: str = "sftp"

    def describe(self) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}/{self.directory} ({self.format} every {self.upload_every_s:g}s)"


def parse_email(t: Table, name: str, retry: RetryPolicy, base_dir: Path) -> EmailDestination:
    tls, starttls = t.bool("tls", False), t.bool("starttls", False)
    if tls and starttls:
        t.problem("tls (implicit TLS) and starttls exclude each other; set one", "starttls")
    to = t.str_list("to")
    if not to:
        t.problem("required: a list of recipient addresses", "to")
    for i, addr in enumerate(to):
        _address(t, f"to[{i}]", addr)
    dest = EmailDestination(
        name=name,
        retry=retry,
        host=_required(t, "host"),
        from_addr=_address(t, "from", _required(t, "from")),
        to=to,
        port=t.int("port", 465 if tls else 587 if starttls else 25, low=1, high=65535),
        tls=tls,
        starttls=starttls,
        username=t.str("username"),
        password=t.secret("password"),
        ca_file=_file(t, "ca_file", base_dir),
        subject=_template(t, "subject", DEFAULT_SUBJECT, SUBJECT_FIELDS),
        digest_s=t.duration("digest", "1h"),
        max_events_per_message=t.int("max_events_per_message", 1000, low=1, high=MAX_PER_MESSAGE),
        timeout_s=t.duration("timeout", "30s"),
        delay_s=t.duration("delay", "0s"),
        concurrency=t.int("concurrency", 4, low=1, high=100),
        reject_5xx=t.bool("reject_5xx", True),
    )
    if dest.username and dest.password is None:
        t.problem("required when username is set", "password")
    return dest


def parse_ftp(t: Table, name: str, retry: RetryPolicy, base_dir: Path) -> FtpDestination:
    if not t.bool("passive", True):
        t.problem("active FTP is not supported; leave passive = true", "passive")
    fmt, every = _format_and_period(t)
    return FtpDestination(
        name=name,
        retry=retry,
        host=_required(t, "host"),
        port=t.int("port", 21, low=1, high=65535),
        username=t.str("username", "anonymous"),
        password=t.secret("password", "anon@"),
        directory=t.str("directory", "."),
        tls=t.bool("tls", False),
        ca_file=_file(t, "ca_file", base_dir),
        upload_every_s=every,
        filename=_filename(t, fmt),
        format=fmt,
        csv_raw=t.bool("csv_raw", False),
        max_events_per_file=t.int("max_events_per_file", 100_000, low=1, high=MAX_PER_FILE),
        timeout_s=t.duration("timeout", "60s"),
        delay_s=t.duration("delay", "0s"),
    )


def parse_sftp(t: Table, name: str, retry: RetryPolicy, base_dir: Path) -> SftpDestination:
    fmt, every = _format_and_period(t)
    dest = SftpDestination(
        name=name,
        retry=retry,
        host=_required(t, "host"),
        username=_required(t, "username"),
        port=t.int("port", 22, low=1, high=65535),
        password=t.secret("password"),
        private_key=_file(t, "private_key", base_dir),
        passphrase=t.secret("passphrase"),
        known_hosts=_file(t, "known_hosts", base_dir),
        host_key=t.str("host_key"),
        directory=t.str("directory", "."),
        upload_every_s=every,
        filename=_filename(t, fmt),
        format=fmt,
        csv_raw=t.bool("csv_raw", False),
        max_events_per_file=t.int("max_events_per_file", 100_000, low=1, high=MAX_PER_FILE),
        timeout_s=t.duration("timeout", "60s"),
        delay_s=t.duration("delay", "0s"),
    )
    if dest.password is None and dest.private_key is None and not t.has("private_key"):
        t.problem("set password or private_key (or both)", "password")
    if dest.known_hosts and dest.host_key:
        t.problem("known_hosts and host_key exclude each other; set one", "host_key")
    if dest.host_key is not None and len(dest.host_key.split()) < 2:
        t.problem('must be a public key line such as "ssh-ed25519 AAAA..."', "host_key")
    return dest


def _format_and_period(t: Table) -> tuple[str, float]:
    fmt = t.choice("format", FORMATS, "jsonl")
    every = t.duration("upload_every", "1h")
    if every < 1:
        t.problem("must be at least 1s (uploads are periodic)", "upload_every")
    return fmt, every


def _filename(t: Table, fmt: str) -> str:
    name = _template(
        t, "filename", f"events-{{date}}-{{time}}-{{seq}}.{EXTENSIONS[fmt]}", FILENAME_FIELDS
    )
    if "/" in name or name.startswith("."):
        t.problem("must be a plain file name (no /, not starting with .)", "filename")
    return name


def _template(t: Table, key: str, default: str, fields: dict[str, object]) -> str:
    """A `str.format` template that may use only `fields`; checked now, not at send time."""
    value = t.str(key, default)
    legal = ", ".join("{" + f + "}" for f in fields)
    try:
        value.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        t.problem(f"bad template ({exc}); it may use {legal}", key)
        return default
    return value


def _required(t: Table, key: str) -> str:
    value = t.str(key)
    if not value:
        t.problem("required", key)
        return ""
    return value


def _address(t: Table, key: str, value: str) -> str:
    if value and ("@" not in value or any(c in value for c in "\r\n,<> ")):
        t.problem(f"must be a bare email address like ops@example.com, got {value!r}", key)
    return value


def _file(t: Table, key: str, base_dir: Path) -> Path | None:
    value = t.str(key)
    if value is None:
        return None
    path = base_dir / value
    if not path.is_file():
        t.problem(f"no such file: {path}", key)
        return None
    return path


def round_period_s(dest: object) -> float:
    """Seconds between a periodic destination's rounds (a digest, an upload); 0 when it
    sends each event on its own (http, pull, an email with `digest = 0`)."""
    return dest.period_s if isinstance(dest, EmailDestination | Uploads) else 0.0
