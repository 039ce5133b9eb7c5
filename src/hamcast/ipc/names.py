"""The daemon's per-session name table: short integer ids for group and source names.

DATA, EVENT and SEND frames carry 32-bit name ids instead of URIs, so a
message costs a few bytes of header however long its group's name. The daemon
assigns the ids and tells the client with a NAME frame before first use.

The table is bounded: names a client explicitly uses for sending are *pinned*
(reference-counted) and never evicted; all others (sources, groups seen in
events) are evicted least-recently-used, and their id is then reused with a
fresh NAME frame. A remote peer that invents endless source addresses can
therefore not grow the table past ``capacity``.
"""

from __future__ import annotations

from collections import OrderedDict

from hamcast.errors import UsageError

__all__ = ["NameTable"]


class NameTable:
    """Bounded map between (kind, text) names and ids ``1..capacity``."""

    __slots__ = ("_by_id", "_ids", "_lru", "_pins", "capacity", "evictions")

    def __init__(self, capacity: int = 16384) -> None:
        if capacity < 2:
            raise ValueError("a name table needs room for at least 2 names")
        self.capacity = capacity
        self._ids: dict[tuple[int, str], int] = {}
        self._by_id: dict[int, tuple[int, str]] = {}
        # Unpinned ids, least recently used first.
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._pins: dict[int, int] = {}
        #: Ids reassigned so far; a caller caching ids re-checks when it changes.
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def intern(self, kind: int, text: str) -> tuple[int, bool]:
        """The id for a name, and whether it is new (the client must be told)."""
        key = (kind, text)
        name_id = self._ids.get(key)
        if name_id is not None:
            if name_id in self._lru:
                self._lru.move_to_end(name_id)
            return name_id, False
        if len(self._by_id) < self.capacity:
            name_id = len(self._by_id) + 1
        elif self._lru:
            name_id, _ = self._lru.popitem(last=False)
            del self._ids[self._by_id[name_id]]
            self.evictions += 1
        else:
            raise UsageError(f"all {self.capacity} names of this session are in use for sending")
        self._ids[key] = name_id
        self._by_id[name_id] = key
        self._lru[name_id] = None
        return name_id, True

    def text(self, name_id: int) -> str | None:
        """The text an id stands for now, or None."""
        entry = self._by_id.get(name_id)
        return entry[1] if entry else None

    def pin(self, name_id: int) -> None:
        """Keep ``name_id`` from eviction until as many :meth:`unpin` calls."""
        if name_id not in self._by_id:
            raise KeyError(name_id)
        self._pins[name_id] = self._pins.get(name_id, 0) + 1
        self._lru.pop(name_id, None)

    def unpin(self, name_id: int) -> None:
        count = self._pins.get(name_id, 0) - 1
        if count > 0:
            self._pins[name_id] = count
            return
        if self._pins.pop(name_id, None) is not None:
            self._lru[name_id] = None

    def pinned(self, name_id: int) -> bool:
        return name_id in self._pins

    @property
    def pinned_count(self) -> int:
        """How many ids are pinned now."""
        return len(self._pins)
