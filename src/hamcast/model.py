"""The values the API hands out: interfaces, received messages, group-set entries.

These are the RFC 7046 §4.1 abstract data types in Python form. They are
immutable. :class:`Message` is a ``NamedTuple`` because one is built for every
received datagram and a tuple is the cheapest immutable record Python has.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from hamcast.uri import URI

__all__ = ["GroupRole", "GroupSetEntry", "Interface", "Message", "SocketStats"]


@dataclass(frozen=True, slots=True)
class Interface:
    """One interface of the host as the middleware sees it (RFC 7046 ``ifProp``).

    ``index`` counts from 1 and is stable for the daemon's lifetime;
    ``name`` is a human-readable name (``lo``, ``eth0``, ``local``);
    ``address`` is the technology's own address on it (an IP address, an
    overlay id, ``localhost``); ``technology`` names the module serving it.
    """

    index: int
    name: str
    address: str
    technology: str


class Message(NamedTuple):
    """A received multicast message.

    ``group`` is the group name the sender used, ``source`` the sender as its
    technology names it (``ADDRESS:PORT`` for IP, ``local:PID/SOCKET`` on
    this host), ``payload`` the message bytes and ``interface`` the index of
    the interface it arrived on.
    """

    group: URI
    source: str
    payload: bytes
    interface: int


class GroupRole(enum.IntFlag):
    """Whether this host listens to a group, sends to it, or both (RFC 7046 §5.4.1)."""

    LISTENER = 1
    SENDER = 2
    BOTH = 3


@dataclass(frozen=True, slots=True)
class GroupSetEntry:
    """One group active on an interface, with this host's role in it."""

    group: URI
    role: GroupRole


@dataclass(frozen=True, slots=True)
class SocketStats:
    """Counters of one multicast socket since it was created (messages)."""

    sent: int
    received: int
    #: Messages the daemon discarded because this socket's queue was full:
    #: the application did not receive fast enough.
    dropped: int
    #: Messages handed to the daemon that no technology could send.
    send_failed: int
