"""Membership events an application can subscribe to (RFC 7046 §4.1, §5.4.6).

A socket that called ``enable_events()`` is told of these for every group on
its interfaces, and of changes of what its interfaces' networks offer. Each is
a past-tense fact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hamcast.uri import URI

__all__ = [
    "BindingChanged",
    "Event",
    "EventKind",
    "InterfaceChanged",
    "MemberJoined",
    "MemberLeft",
    "MembershipEvent",
    "SourceAppeared",
]


class EventKind(enum.IntEnum):
    """Event codes as they travel in IPC ``EVENT`` frames (docs/ipc.md)."""

    JOIN = 1
    LEAVE = 2
    NEW_SOURCE = 3
    INTERFACE_CHANGED = 4
    BINDING_CHANGED = 5


@dataclass(frozen=True, slots=True)
class MemberJoined:
    """A member joined ``group``, seen on interface ``interface`` (RFC's join_event)."""

    group: URI
    interface: int


@dataclass(frozen=True, slots=True)
class MemberLeft:
    """A member left ``group`` on interface ``interface`` (RFC's leave_event)."""

    group: URI
    interface: int


@dataclass(frozen=True, slots=True)
class SourceAppeared:
    """A source not seen before sent to ``group`` (RFC's new_source_event).

    ``source`` names the sender as in :attr:`hamcast.Message.source`.
    """

    group: URI
    interface: int
    source: str


@dataclass(frozen=True, slots=True)
class InterfaceChanged:
    """What the network offers on ``interface`` changed (beyond RFC 7046).

    ``status`` is the technology's new verdict, e.g. ``none``, ``link-local``
    or ``routed`` for the ``ip`` technology (docs/discovery.md); the details
    come from ``interface_status()``.
    """

    interface: int
    status: str


@dataclass(frozen=True, slots=True)
class BindingChanged:
    """The middleware moved ``group`` to another interface for this socket (beyond RFC 7046).

    Late binding (docs/hybrid.md): what the networks offer changed, e.g. a
    multicast router appeared, and the group is now carried on ``interface``.
    ``reason`` says why that interface was chosen, starting with its
    technology (``"ip: PIM router 10.0.1.1 on the link"``). The application
    needs to do nothing; messages keep flowing.
    """

    group: URI
    interface: int
    reason: str


#: The three events of RFC 7046.
MembershipEvent = MemberJoined | MemberLeft | SourceAppeared
#: Everything a socket with events enabled may receive.
Event = MemberJoined | MemberLeft | SourceAppeared | InterfaceChanged | BindingChanged
