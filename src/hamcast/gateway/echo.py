"""A bounded filter for the gateway's own copies coming back (echoes).

A gateway that sends a message into one technology gets its own copy back
where that technology loops messages back to the sending host (native IP
multicast loopback; Scribe's delivery to a member that multicasts). Forwarding
that copy back would loop. The gateway records what it sends (:meth:`sent`)
and drops the first matching arrival (:meth:`echo`): a counted match, so an
application that sends the same bytes twice loses nothing, and a bounded one,
so copies that never come back cannot grow it.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["EchoFilter"]


class EchoFilter:
    """Counts of recently sent (direction, group, payload) digests, least recent evicted."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("an echo filter holds at least one entry")
        self.capacity = capacity
        self._pending: OrderedDict[tuple[str, str, int], int] = OrderedDict()
        #: Echoes dropped so far, and entries evicted before their echo came.
        self.dropped = 0
        self.evicted = 0

    @staticmethod
    def _key(side: str, group: str, payload: bytes | memoryview) -> tuple[str, str, int]:
        return side, group, hash(bytes(payload))

    def sent(self, side: str, group: str, payload: bytes | memoryview) -> None:
        """A copy of ``payload`` went into ``side`` and will come back from there once."""
        key = self._key(side, group, payload)
        self._pending[key] = self._pending.get(key, 0) + 1
        self._pending.move_to_end(key)
        if len(self._pending) > self.capacity:
            self._pending.popitem(last=False)
            self.evicted += 1

    def echo(self, side: str, group: str, payload: bytes | memoryview) -> bool:
        """Whether this arrival from ``side`` is the echo of a copy we sent (it is consumed)."""
        if not self._pending:
            return False
        key = self._key(side, group, payload)
        count = self._pending.get(key)
        if count is None:
            return False
        if count == 1:
            del self._pending[key]
        else:
            self._pending[key] = count - 1
        self.dropped += 1
        return True

    def __len__(self) -> int:
        return len(self._pending)
