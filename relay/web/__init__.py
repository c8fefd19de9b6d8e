"""The HTTP surface: the aiohttp app factory and every route module (ingest, tracking,
links, pull, admin API, console)."""
