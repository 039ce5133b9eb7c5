"""The leaf set: the ``L / 2`` numerically closest node ids on each side of this node.

Pastry keeps the ``L`` nodes whose ids are closest to its own, half of them
clockwise (larger ids, modulo ``2**128``) and half counter-clockwise
(Rowstron & Druschel 2001, §2.1). Routing uses it for the last hop and to
decide whether this node is a key's root.

Both halves are chosen independently: a node belongs to the clockwise half
if it is among the ``L / 2`` nearest clockwise, whatever the other half
holds. In an overlay of at most ``L`` other nodes this puts some nodes in
both halves, and the halves overlapping is exactly how a node knows it sees
the whole ring.

Ids only, no handles and no I/O: the node keeps handles beside it.
"""

from __future__ import annotations

from hamcast.overlay.ids import ID_SPACE

__all__ = ["LeafSet"]

_MASK = ID_SPACE - 1
_HALF_SPACE = ID_SPACE >> 1


class LeafSet:
    """Two short lists of ids, nearest first, each at most ``size / 2`` long."""

    __slots__ = ("_complete", "_half", "_me", "left", "right")

    def __init__(self, me: int, size: int) -> None:
        self._me = me
        self._half = size // 2
        #: Counter-clockwise neighbours (smaller ids, wrapping), nearest first.
        self.left: list[int] = []
        #: Clockwise neighbours (larger ids, wrapping), nearest first.
        self.right: list[int] = []
        self._complete = True

    def __contains__(self, node: object) -> bool:
        return node in self.right or node in self.left

    def __len__(self) -> int:
        """Distinct members."""
        return len(self.members())

    @property
    def half(self) -> int:
        """``L / 2``: the most ids on each side."""
        return self._half

    @property
    def complete(self) -> bool:
        """The leaf set holds every node there is (the halves overlap, or both are empty).

        Then every key is within its range and this node decides the root of
        any key among itself and its leaves.
        """
        return self._complete

    def members(self) -> list[int]:
        """Distinct members, farthest counter-clockwise first, round to farthest clockwise."""
        ordered = self.left[::-1]
        seen = set(ordered)
        ordered.extend(node for node in self.right if node not in seen)
        return ordered

    def fits(self, node: int) -> bool:
        """Whether ``node`` (not yet a member) would enter either half."""
        if node == self._me:
            return False
        me = self._me
        right, left = self.right, self.left
        # Each half on its own, as add() inserts: a node already in one half may
        # still enter the other (in a small overlay the halves overlap).
        if node not in right and (
            len(right) < self._half or (node - me) & _MASK < (right[-1] - me) & _MASK
        ):
            return True
        return node not in left and (
            len(left) < self._half or (me - node) & _MASK < (me - left[-1]) & _MASK
        )

    def add(self, node: int) -> tuple[bool, list[int]]:
        """Insert ``node`` where it belongs.

        Returns whether the leaf set changed, and the ids pushed out of it
        altogether (no longer in either half).
        """
        if node == self._me:
            return False, []
        pushed: list[int] = []
        changed = False
        if node not in self.right:
            changed |= self._insert(self.right, node, True, pushed)
        if node not in self.left:
            changed |= self._insert(self.left, node, False, pushed)
        if changed:
            self._update_complete()
        gone = [x for x in pushed if x not in self.right and x not in self.left]
        return changed, gone

    def _insert(self, side: list[int], node: int, clockwise: bool, pushed: list[int]) -> bool:
        me = self._me
        distance = (node - me) & _MASK if clockwise else (me - node) & _MASK
        position = len(side)
        for index, member in enumerate(side):
            if distance < ((member - me) & _MASK if clockwise else (me - member) & _MASK):
                position = index
                break
        if position >= self._half:
            return False
        side.insert(position, node)
        if len(side) > self._half:
            pushed.append(side.pop())
        return True

    def remove(self, node: int) -> bool:
        """Take ``node`` out of both halves; whether it was in either."""
        found = False
        if node in self.right:
            self.right.remove(node)
            found = True
        if node in self.left:
            self.left.remove(node)
            found = True
        if found:
            self._update_complete()
        return found

    def _update_complete(self) -> None:
        left = self.left
        self._complete = (not left and not self.right) or any(x in left for x in self.right)

    def covers(self, key: int) -> bool:
        """Whether ``key`` lies within the range from the farthest left to the farthest right."""
        if self._complete:
            return True
        me = self._me
        right, left = self.right, self.left
        if right and (key - me) & _MASK <= (right[-1] - me) & _MASK:
            return True
        return bool(left) and (me - key) & _MASK <= (me - left[-1]) & _MASK

    def closest(self, key: int, exclude: int = -1) -> int:
        """The member or this node numerically closest to ``key``; ties go to the lower id."""
        best = self._me
        best_distance = (best - key) & _MASK
        if best_distance > _HALF_SPACE:
            best_distance = ID_SPACE - best_distance
        for side in (self.left, self.right):
            for node in side:
                if node == exclude:
                    continue
                distance = (node - key) & _MASK
                if distance > _HALF_SPACE:
                    distance = ID_SPACE - distance
                if distance < best_distance or (distance == best_distance and node < best):
                    best, best_distance = node, distance
        return best

    def side_of(self, node: int) -> tuple[bool, bool]:
        """Whether ``node`` is in the left half, and whether in the right half."""
        return node in self.left, node in self.right

    def farthest(self, right: bool) -> int | None:
        """The farthest member of one half (``None`` if it is empty)."""
        side = self.right if right else self.left
        return side[-1] if side else None
