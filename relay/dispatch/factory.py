"""Which sender and which dispatch mode each push destination gets.

http, and email with `digest = "0s"`, use the per-event `Dispatcher`; email digests and
ftp/sftp uploads use the `PeriodicDispatcher`. Senders with heavy libraries (asyncssh
takes ~0.3 s to import) are imported only when a destination needs them.
"""

from __future__ import annotations

from ..config import HttpDestination, PushDestination
from ..config.destinations import EmailDestination, FtpDestination, SftpDestination
from ..destinations.base import Sender
from ..outcomes import Settles
from ..store import Store
from .dispatcher import Dispatcher
from .periodic import PeriodicDispatcher


def make_sender(dest: PushDestination) -> Sender:
    if isinstance(dest, HttpDestination):
        from ..destinations.http import HttpSender

        return HttpSender(dest)
    if isinstance(dest, EmailDestination):
        from ..destinations.email import EmailSender

        return EmailSender(dest)
    if isinstance(dest, FtpDestination):
        from ..destinations.ftp import FtpSender

        return FtpSender(dest)
    assert isinstance(dest, SftpDestination), dest
    from ..destinations.sftp import SftpSender

    return SftpSender(dest)


def is_periodic(dest: object) -> bool:
    """True for destinations sent in rounds (and so what `relay flush` can act on)."""
    if isinstance(dest, EmailDestination):
        return dest.digest_s > 0
    return isinstance(dest, FtpDestination | SftpDestination)


def make_dispatcher(dest: PushDestination, store: Store, outcomes: Settles) -> Dispatcher:
    sender = make_sender(dest)
    if isinstance(dest, HttpDestination):
        return Dispatcher(dest, store, sender, outcomes, dest.concurrency, dest.circuit)
    if isinstance(dest, EmailDestination) and not is_periodic(dest):
        return Dispatcher(dest, store, sender, outcomes, dest.concurrency)
    assert isinstance(dest, EmailDestination | FtpDestination | SftpDestination), dest
    return PeriodicDispatcher(dest, store, sender, outcomes)
