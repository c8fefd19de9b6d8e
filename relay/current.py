"""What a reload changes and a request reads: the config in force and the signer made from it.

The route surfaces are built once, at start; each is given this object and reads
`current.config` or `current.signer` on every request, so a SIGHUP's new tokens, tracking
settings, destinations and routes are seen by the very next request. Only the runtime
swaps them (`Runtime.apply`), both in one step with no await between.
"""

from __future__ import annotations

from .config import Config
from .domain.tokens import Signer


class Current:
    """The config in force and its tracking-link signer (secrets and public URL)."""

    __slots__ = ("config", "signer")

    def __init__(self, config: Config, signer: Signer) -> None:
        self.config = config
        self.signer = signer
