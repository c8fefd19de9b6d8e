"""Signed tracking links from a request's fields (pure): shared by POST /v1/links,
POST /v1/rewrite and `relay link`, each of which turns a `LinkError` into its own answer."""

from __future__ import annotations

from .tokens import FIELDS, Signer, TokenError

LINK_KINDS = ("click", "open", "unsub", "signup")


class LinkError(ValueError):
    """One field of link number `index` is wrong; `field` is "" when the item itself is."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.index = index
        self.field = field
        self.message = message

    def as_dict(self) -> dict:
        return {"index": self.index, "field": self.field, "message": self.message}


def message_fields(
    item: dict, index: int, allowed: tuple[str, ...] = ("kind", *FIELDS)
) -> dict[str, str | None]:
    """The token fields of `item`, each a string (a number is not an email); a key the
    request does not take (`allowed`) is named, not ignored (a typo like `emial`)."""
    for key in item:
        if key not in allowed:
            raise LinkError(index, key, f"unknown key (allowed: {', '.join(allowed)})")
    fields = {}
    for name in FIELDS:
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            raise LinkError(index, name, "must be a string")
        fields[name] = value
    return fields


def make_link(signer: Signer, item: object, index: int = 0) -> str:
    """One signed URL from `{"kind", "email", "url", ...}`; a `LinkError` naming the field
    if it can't be."""
    if not isinstance(item, dict):
        raise LinkError(index, "", "must be a JSON object")
    kind = item.get("kind")
    if kind not in LINK_KINDS:
        raise LinkError(index, "kind", f"must be one of {', '.join(LINK_KINDS)}")
    fields = message_fields(item, index)
    if kind == "click" and not fields["url"]:
        raise LinkError(index, "url", "required for a click link")
    if kind in ("click", "open", "unsub") and not fields["email"]:
        raise LinkError(index, "email", "required")
    try:
        return signer.url(kind, **fields)
    except TokenError as exc:
        field, _, message = str(exc).partition(": ")
        raise LinkError(index, field, message) from None
