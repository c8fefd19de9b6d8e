"""Storage backends behind one queue interface (`base.Store`)."""

from .base import (
    Claimed,
    DeadDelivery,
    DestinationStats,
    NewEvent,
    ReplayFilter,
    State,
    Stats,
    StorageUnavailable,
    Store,
)
from .sqlite import SqliteStore

__all__ = [
    "Claimed",
    "DeadDelivery",
    "DestinationStats",
    "NewEvent",
    "ReplayFilter",
    "SqliteStore",
    "State",
    "Stats",
    "StorageUnavailable",
    "Store",
]
