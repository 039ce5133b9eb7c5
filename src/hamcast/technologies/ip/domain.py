"""The multicast domain behind a link: which group names are used there, and its gateways.

Link announcements (:mod:`hamcast.technologies.ip.peers`) never leave a link. To
bridge a group between native multicast and the overlay, a gateway must know
the group's *name* wherever native multicast reaches — its domain: the links
joined by multicast routers. So every daemon with the ``ip`` technology also
announces, to a routed group of administrative scope, the names its
applications use natively, and whether it is a gateway candidate (it runs the
overlay too, with the gateway on). Routers carry the announcements exactly as
far as they carry the groups, and every daemon learns the domain's names and
candidates without configuration.

Groups: 239.255.70.46 (IPv4 local scope, RFC 2365) and ff05::114 (site-local
scope, RFC 4727's experiment id), UDP port 7046, TTL / hop limit ``domain_ttl``
(default 16).

Datagram (integers big-endian), at most :data:`MAX_DATAGRAM` bytes::

    magic       4 bytes  b"HCDA"
    version     u8       1
    flags       u8       bit 0: the sender is a gateway candidate; others reserved
    interval    u16      seconds until the sender's next announcement
    daemon id   16 bytes the same id as in its link announcements
    sequence    u32      per announcement round
    listening   u16 count, then per name: u16 length + UTF-8 ham: URI
    sending     u16 count, then per name: u16 length + UTF-8 ham: URI

Names that do not fit one datagram go in more datagrams of the same round,
each with the full header; a name is remembered for 3.5 of its sender's
intervals after the last datagram that mentioned it, and the sender for as
long after its last datagram.

Election (:meth:`hamcast.technologies.base.DomainView.winner`): highest random
weight (Thaler and Ravishankar, "Using name-based mappings to increase hit
rates", IEEE/ACM ToN 1998): each candidate's weight for a group is SHA-256 of
its daemon id and the group name; the highest wins. Every daemon computes the
same winner from the same table, groups spread over the candidates, and when
one goes quiet only the groups it held move.

:class:`DomainTable` is sans-I/O, like :class:`~hamcast.technologies.ip.peers.PeerTable`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from hamcast.technologies.base import DomainView

__all__ = [
    "DOMAIN_GROUP_V4",
    "DOMAIN_GROUP_V6",
    "MAX_DATAGRAM",
    "DomainAnnouncement",
    "DomainTable",
    "decode_domain",
    "encode_domain",
]

DOMAIN_GROUP_V4 = ipaddress.IPv4Address("239.255.70.46")
DOMAIN_GROUP_V6 = ipaddress.IPv6Address("ff05::114")
MAGIC = b"HCDA"
VERSION = 1
MAX_DATAGRAM = 1400
FLAG_GATEWAY = 0x01
#: Daemons remembered per link, and names per daemon; more are ignored.
MAX_MEMBERS = 256
MAX_NAMES = 4096
MAX_NAME_BYTES = 1024
HOLD_FACTOR = 3.5

_HEAD = struct.Struct("!4sBBH16sI")
_COUNT = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class DomainAnnouncement:
    """One datagram's worth of what a daemon says about its native groups."""

    daemon_id: bytes
    sequence: int
    interval: int
    gateway: bool
    listening: tuple[str, ...]
    sending: tuple[str, ...]


def encode_domain(announcement: DomainAnnouncement) -> list[bytes]:
    """The datagrams of one announcement round (at least one, even with no names)."""
    a = announcement
    flags = FLAG_GATEWAY if a.gateway else 0
    head = _HEAD.pack(MAGIC, VERSION, flags, a.interval, a.daemon_id, a.sequence)
    listening, sending = a.listening, a.sending
    pending = [(0, n.encode()) for n in listening] + [(1, n.encode()) for n in sending]
    pending = [(kind, raw) for kind, raw in pending if len(raw) <= MAX_NAME_BYTES]
    out: list[bytes] = []
    while True:
        lists: tuple[list[bytes], list[bytes]] = ([], [])
        size = len(head) + 2 * _COUNT.size
        while pending and size + 2 + len(pending[0][1]) <= MAX_DATAGRAM:
            kind, raw = pending.pop(0)
            lists[kind].append(raw)
            size += 2 + len(raw)
        body = bytearray(head)
        for names in lists:
            body += _COUNT.pack(len(names))
            for raw in names:
                body += _COUNT.pack(len(raw)) + raw
        out.append(bytes(body))
        if not pending:
            return out


def decode_domain(data: bytes) -> DomainAnnouncement | None:
    """The announcement in ``data``, or None for anything else (never raises)."""
    if len(data) > MAX_DATAGRAM or len(data) < _HEAD.size + 4 or data[:4] != MAGIC:
        return None
    _, version, flags, interval, daemon_id, sequence = _HEAD.unpack_from(data)
    if version != VERSION or interval == 0:
        return None
    pos = _HEAD.size
    lists: list[tuple[str, ...]] = []
    try:
        for _ in range(2):
            (count,) = _COUNT.unpack_from(data, pos)
            pos += 2
            names = []
            for _ in range(count):
                (size,) = _COUNT.unpack_from(data, pos)
                end = pos + 2 + size
                if end > len(data) or size > MAX_NAME_BYTES:
                    return None
                names.append(data[pos + 2 : end].decode())
                pos = end
            lists.append(tuple(names))
    except (struct.error, UnicodeDecodeError):
        return None
    return DomainAnnouncement(
        daemon_id, sequence, interval, bool(flags & FLAG_GATEWAY), lists[0], lists[1]
    )


@dataclass(slots=True)
class _Member:
    gateway: bool
    expires: float
    listening: dict[str, float] = field(default_factory=dict)
    sending: dict[str, float] = field(default_factory=dict)


class DomainTable:
    """Per link: the daemons heard on the domain group, their names, their gateway flag.

    Contract: :meth:`receive` each domain datagram with its link and ``now``
    (True when the link's view changed); :meth:`expire` at :meth:`next_expiry`
    (True when something was forgotten); every ``interval`` seconds send
    :meth:`datagrams` on every link. Link keys are the ``ip`` technology's.
    """

    def __init__(self, daemon_id: bytes, interval: int = 5) -> None:
        if len(daemon_id) != 16:
            raise ValueError("a daemon id is 16 bytes")
        self.daemon_id = daemon_id
        self.interval = interval
        #: Whether this daemon is a gateway candidate (it runs a technology to bridge to).
        self.gateway = False
        self._sequence = 0
        self._links: dict[str, dict[bytes, _Member]] = {}

    def set_links(self, keys: Iterable[str]) -> None:
        wanted = set(keys)
        for key in list(self._links):
            if key not in wanted:
                del self._links[key]
        for key in wanted:
            self._links.setdefault(key, {})

    def receive(self, link_key: str, data: bytes, now: float) -> bool:
        members = self._links.get(link_key)
        announcement = decode_domain(data)
        if members is None or announcement is None or announcement.daemon_id == self.daemon_id:
            return False
        hold = HOLD_FACTOR * announcement.interval
        member = members.get(announcement.daemon_id)
        changed = False
        if member is None:
            if len(members) >= MAX_MEMBERS:
                return False
            member = members[announcement.daemon_id] = _Member(announcement.gateway, now + hold)
            changed = True
        elif member.gateway != announcement.gateway:
            member.gateway = announcement.gateway
            changed = True
        member.expires = now + hold
        for names, table in (
            (announcement.listening, member.listening),
            (announcement.sending, member.sending),
        ):
            for name in names:
                if name not in table:
                    if len(member.listening) + len(member.sending) >= MAX_NAMES:
                        break
                    changed = True
                table[name] = now + hold
        return changed

    def expire(self, now: float) -> bool:
        changed = False
        for members in self._links.values():
            for daemon_id, member in list(members.items()):
                if member.expires <= now:
                    del members[daemon_id]
                    changed = True
                    continue
                for table in (member.listening, member.sending):
                    for name in [n for n, t in table.items() if t <= now]:
                        del table[name]
                        changed = True
        return changed

    def next_expiry(self) -> float | None:
        times = [
            t
            for members in self._links.values()
            for m in members.values()
            for t in (m.expires, *m.listening.values(), *m.sending.values())
        ]
        return min(times, default=None)

    def datagrams(self, listening: Iterable[str], sending: Iterable[str]) -> list[bytes]:
        """This round's announcement of this daemon's own native names."""
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        return encode_domain(
            DomainAnnouncement(
                self.daemon_id,
                self._sequence,
                self.interval,
                self.gateway,
                tuple(listening),
                tuple(sending),
            )
        )

    def view(
        self, link_key: str, listening: Iterable[str] = (), sending: Iterable[str] = ()
    ) -> DomainView:
        """The domain as seen from ``link_key``, this daemon's own names included."""
        members = self._links.get(link_key, {})
        gateways = [i for i, m in members.items() if m.gateway]
        if self.gateway:
            gateways.append(self.daemon_id)
        heard_listening = {n for m in members.values() for n in m.listening}
        heard_sending = {n for m in members.values() for n in m.sending}
        return DomainView(
            self.daemon_id,
            tuple(sorted(gateways)),
            frozenset(heard_listening.union(listening)),
            frozenset(heard_sending.union(sending)),
            daemons=len(members) + 1,
        )
