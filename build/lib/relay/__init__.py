"""relay: a durable event relay for mail platforms."""

__version__ = "0.1.0"
