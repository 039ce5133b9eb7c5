"""Counters of a KBR node, and the read-only snapshot it hands out.

A node keeps its counters in one flat list of ints (cheap per node when a
simulation runs 10^5 of them); :func:`snapshot` turns it into
:class:`KbrStats` on demand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from hamcast.overlay.kbr.messages import MessageType

__all__ = ["KbrStats", "counter_slots", "snapshot"]

_KINDS: Final = tuple(MessageType)
_STRIDE: Final = max(_KINDS) + 1
SENT: Final = 0
RECEIVED: Final = _STRIDE
DROPPED: Final = 2 * _STRIDE
MALFORMED: Final = 3 * _STRIDE
OVERSIZE: Final = MALFORMED + 1
SEND_QUEUE_FULL: Final = MALFORMED + 2
EVENTS_LOST: Final = MALFORMED + 3
CANDIDATES_IGNORED: Final = MALFORMED + 4
REQUESTS_IGNORED: Final = MALFORMED + 5
UNSUPPORTED_VERSION: Final = MALFORMED + 6
_SLOTS: Final = MALFORMED + 7


def counter_slots() -> list[int]:
    """A fresh, zeroed counter list."""
    return [0] * _SLOTS


@dataclass(frozen=True, slots=True)
class KbrStats:
    """What a node sent, received and dropped, by message kind (lower-case type name).

    Attributes:
        sent: Datagrams queued for sending, by kind.
        received: Well-formed datagrams received, by kind.
        dropped: Well-formed datagrams refused, by kind: not joined yet or
            any more, an unsolicited answer, the hop limit, a sender using
            this node's own id.
        malformed: Datagrams that failed validation (any field), dropped.
        oversize: Datagrams larger than ``max_datagram_size``, dropped unparsed.
        send_queue_full: Datagrams not queued because ``max_send_queue`` was reached.
        events_lost: Events not queued because ``max_events`` was reached.
        candidates_ignored: Nodes learned from others' lists and not verified
            because ``max_pending_probes`` were already being probed.
        requests_ignored: Leaf-set or row requests not sent because
            ``max_pending_requests`` were outstanding.
        unsupported_version: Datagrams of another version of the wire format
            (a version-1 node's), dropped unparsed.
    """

    sent: Mapping[str, int]
    received: Mapping[str, int]
    dropped: Mapping[str, int]
    malformed: int
    oversize: int
    send_queue_full: int
    events_lost: int
    candidates_ignored: int
    requests_ignored: int
    unsupported_version: int = 0

    @property
    def total_sent(self) -> int:
        """Datagrams sent, all kinds."""
        return sum(self.sent.values())

    @property
    def total_received(self) -> int:
        """Well-formed datagrams received, all kinds."""
        return sum(self.received.values())

    @property
    def total_dropped(self) -> int:
        """Datagrams dropped on receipt for any reason (refused, malformed, oversize)."""
        return (
            sum(self.dropped.values()) + self.malformed + self.oversize + self.unsupported_version
        )


def snapshot(counts: list[int]) -> KbrStats:
    """The counters in ``counts`` as a :class:`KbrStats`."""

    def by_kind(base: int) -> dict[str, int]:
        return {kind.name.lower(): counts[base + kind] for kind in _KINDS}

    return KbrStats(
        sent=by_kind(SENT),
        received=by_kind(RECEIVED),
        dropped=by_kind(DROPPED),
        malformed=counts[MALFORMED],
        oversize=counts[OVERSIZE],
        send_queue_full=counts[SEND_QUEUE_FULL],
        events_lost=counts[EVENTS_LOST],
        candidates_ignored=counts[CANDIDATES_IGNORED],
        requests_ignored=counts[REQUESTS_IGNORED],
        unsupported_version=counts[UNSUPPORTED_VERSION],
    )
