"""Group names and their overlay keys, as Scribe uses them.

A group's tree hangs off the overlay key of its name (docs/mapping.md: the first
16 bytes of SHA-256 over the canonical name). Scribe messages carry the name as
well as the key, so receivers hand up the name the sender used and anyone can
check that the two agree.
"""

from __future__ import annotations

import functools

from hamcast.errors import InvalidURIError
from hamcast.mapping import map_group
from hamcast.uri import URI

__all__ = ["canonical_group", "group_key"]


@functools.lru_cache(maxsize=4096)
def canonical_group(text: str) -> tuple[str, int]:
    """The canonical name of group ``text`` and its overlay key.

    Credentials are dropped (they are no part of a group's identity). Raises
    :class:`~hamcast.errors.InvalidURIError` if ``text`` is not a ``ham:`` URI.
    Cached because every multicast names its group (parsing and hashing cost
    more than the rest of a send); bounded, and failures are not cached.
    """
    uri = URI.parse(text)
    return uri.name, map_group(uri).overlay_key


@functools.lru_cache(maxsize=4096)
def group_key(name: str) -> int | None:
    """The overlay key of ``name`` if it is a canonical group name, else ``None``.

    For names that arrive from peers: a name that is not canonical (or carries
    credentials) is refused rather than rewritten, because every node must
    hash exactly the bytes the sender hashed. Cached because every data message
    carries a name and a node sees few distinct ones; bounded because peers
    choose them.
    """
    try:
        uri = URI.parse(name)
    except InvalidURIError:
        return None
    if uri.name != name:
        return None
    return map_group(uri).overlay_key
