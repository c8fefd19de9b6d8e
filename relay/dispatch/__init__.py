"""Delivery: per-destination dispatchers, their backoff, circuit breaker, activity and
dispatch log."""
