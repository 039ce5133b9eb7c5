"""Membership events an application can subscribe to (RFC 7046 §4.1, §5.4.6).

A socket that called ``enable_events()`` is told of these for every group on
its interfaces. Each is a past-tense fact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hamcast.uri import URI

__all__ = ["EventKind", "MemberJoined", "MemberLeft", "MembershipEvent", "SourceAppeared"]


class EventKind(enum.IntEnum):
    """Event codes as they travel in IPC ``EVENT`` frames (docs/ipc.md)."""

    JOIN = 1
    LEAVE = 2
    NEW_SOURCE = 3


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


MembershipEvent = MemberJoined | MemberLeft | SourceAppeared
