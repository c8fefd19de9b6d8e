"""Pure modules: event validation, routing, tracking tokens, bot detection, link rewriting.
No I/O, no store, no web."""
