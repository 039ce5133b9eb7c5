"""The Pastry routing table: row ``r`` holds nodes sharing exactly ``r`` leading digits with us.

Row ``r``, column ``c`` holds a node whose id shares the first ``r`` digits
(base ``2**b``) with this node's id and whose digit ``r`` is ``c``
(Rowstron & Druschel 2001, §2.1). The column of this node's own digit stays
empty. It is bounded by construction: at most ``rows * (2**b - 1)`` entries.

Rows are allocated on first use: an overlay of ``N`` nodes fills about
``log_{2**b} N`` rows, so a node keeps a few short lists instead of
``128 / b`` of them. Ids only, no handles and no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from hamcast.overlay.ids import ID_BITS

__all__ = ["RoutingTable"]


class RoutingTable:
    """Ids in ``(row, column)`` slots; which id goes where is fixed by the ids."""

    __slots__ = ("_b", "_count", "_digit_mask", "_me", "_rows")

    def __init__(self, me: int, b: int) -> None:
        self._me = me
        self._b = b
        self._digit_mask = (1 << b) - 1
        self._rows: list[list[int | None] | None] = [None] * (ID_BITS // b)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def slot(self, node: int) -> tuple[int, int]:
        """The ``(row, column)`` where ``node`` (not this node) belongs."""
        row = (ID_BITS - (self._me ^ node).bit_length()) // self._b
        column = (node >> (ID_BITS - (row + 1) * self._b)) & self._digit_mask
        return row, column

    def get(self, row: int, column: int) -> int | None:
        """The id in a slot, or ``None``."""
        entries = self._rows[row]
        return None if entries is None else entries[column]

    def lookup(self, key: int) -> int | None:
        """The entry Pastry routes ``key`` to: row = shared prefix, column = next key digit."""
        if key == self._me:
            return None
        row, column = self.slot(key)
        entries = self._rows[row]
        return None if entries is None else entries[column]

    def contains(self, node: int) -> bool:
        """Whether ``node`` is in the table."""
        if node == self._me:
            return False
        row, column = self.slot(node)
        entries = self._rows[row]
        return entries is not None and entries[column] == node

    def put(self, node: int) -> int | None:
        """Put ``node`` in its slot; returns the id it displaced (``None`` if the slot was free)."""
        row, column = self.slot(node)
        entries = self._rows[row]
        if entries is None:
            entries = self._rows[row] = [None] * (1 << self._b)
        previous = entries[column]
        entries[column] = node
        if previous is None:
            self._count += 1
        return previous

    def remove(self, node: int) -> tuple[int, int] | None:
        """Take ``node`` out; returns the slot it held, or ``None`` if it was not there."""
        if node == self._me:
            return None
        row, column = self.slot(node)
        entries = self._rows[row]
        if entries is None or entries[column] != node:
            return None
        entries[column] = None
        self._count -= 1
        if all(entry is None for entry in entries):
            self._rows[row] = None
        return row, column

    def row(self, row: int) -> list[int]:
        """The ids of one row, in column order."""
        entries = self._rows[row]
        return [] if entries is None else [node for node in entries if node is not None]

    def nonempty_rows(self) -> list[int]:
        """Indices of the rows that hold at least one id."""
        return [index for index, entries in enumerate(self._rows) if entries is not None]

    def entries(self) -> Iterator[tuple[int, int, int]]:
        """Every ``(row, column, id)``, row by row."""
        for row, entries in enumerate(self._rows):
            if entries is None:
                continue
            for column, node in enumerate(entries):
                if node is not None:
                    yield row, column, node
