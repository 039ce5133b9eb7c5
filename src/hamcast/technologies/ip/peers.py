"""hamcast peers on a link: announcements, the peer table, and the designated-host rule.

Each daemon with the ``ip`` technology announces itself on every link, so
daemons know each other without configuration: ``neighbor_set`` lists them,
``designated_host`` elects among them, and later the overlay bootstraps from
them and gateways elect through them.

Announcements go to the link-local experiment groups of RFC 4727
(224.0.0.254 and ff02::114), UDP port 7046, with TTL / hop limit 1, so they
never leave the link. Other programs using those groups are told apart by the
magic and ignored.

Announcement datagram (all integers big-endian), at most 512 bytes::

    magic       4 bytes  b"HCPA"
    version     u8       1
    flags       u8       0 (reserved; receivers ignore bits they do not know)
    interval    u16      seconds until the sender's next announcement
    daemon id   16 bytes random, fixed for the daemon's lifetime
    sequence    u32      incremented per announcement
    name        u8 length + UTF-8 (host name, at most 64 bytes)
    techs       u8 count, then each: u8 length + ASCII technology name
    overlay     u8 length + UTF-8 "ADDRESS:PORT" of the overlay endpoint (0 = none)
    monitor     u8 length + UTF-8 "ADDRESS:PORT" of the monitoring endpoint (0 = none);
                optional: added within version 1, absent from older daemons'
                announcements, and ignored by their receivers (they stop after overlay)

Designated host: on each link the live peer with the numerically lowest
source address — this daemon included — is the designated host, for every
group; the same rule as IGMPv2's querier election (RFC 2236 §3), so it needs
no extra messages and every daemon on the link agrees once it has heard the
others. A peer is forgotten after 3.5 of its announced intervals without an
announcement.

:class:`PeerTable` is sans-I/O: the ``ip`` technology feeds it datagrams with
the current time, asks it when to announce next, and sends what it builds.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

__all__ = [
    "ANNOUNCE_GROUP_V4",
    "ANNOUNCE_GROUP_V6",
    "ANNOUNCE_PORT",
    "Announcement",
    "Peer",
    "PeerTable",
    "decode_announcement",
    "encode_announcement",
]

ANNOUNCE_GROUP_V4 = ipaddress.IPv4Address("224.0.0.254")
ANNOUNCE_GROUP_V6 = ipaddress.IPv6Address("ff02::114")
ANNOUNCE_PORT = 7046
MAGIC = b"HCPA"
VERSION = 1
MAX_DATAGRAM = 512
#: Peers remembered per link; more are ignored until some expire.
MAX_PEERS_PER_LINK = 256
#: An announcement is valid for this many of its intervals.
HOLD_FACTOR = 3.5

_HEAD = struct.Struct("!4sBBH16sI")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Announcement:
    """What one daemon says about itself."""

    daemon_id: bytes
    sequence: int
    interval: int
    name: str
    technologies: tuple[str, ...]
    overlay: str = ""
    #: The daemon's monitoring endpoint (docs/monitor.md), "" when it has none.
    monitor: str = ""


def encode_announcement(a: Announcement) -> bytes:
    name = a.name.encode()[:64]
    out = bytearray(_HEAD.pack(MAGIC, VERSION, 0, a.interval, a.daemon_id, a.sequence))
    out += bytes([len(name)]) + name
    techs = [t.encode("ascii")[:32] for t in a.technologies[:16]]
    out.append(len(techs))
    for tech in techs:
        out += bytes([len(tech)]) + tech
    for text in (a.overlay, a.monitor):
        raw = text.encode()[:128]
        out += bytes([len(raw)]) + raw
    return bytes(out)


def decode_announcement(data: bytes) -> Announcement | None:
    """The announcement in ``data``, or None for anything else (never raises)."""
    if len(data) > MAX_DATAGRAM or len(data) < _HEAD.size or data[:4] != MAGIC:
        return None
    _, version, _, interval, daemon_id, sequence = _HEAD.unpack_from(data)
    if version != VERSION or interval == 0:
        return None
    pos = _HEAD.size
    try:
        name, pos = _string(data, pos)
        count = data[pos]
        pos += 1
        techs = []
        for _ in range(count):
            tech, pos = _string(data, pos)
            techs.append(tech)
        overlay, pos = _string(data, pos)
        monitor = _string(data, pos)[0] if pos < len(data) else ""
    except (IndexError, UnicodeDecodeError, ValueError):
        return None
    return Announcement(daemon_id, sequence, interval, name, tuple(techs), overlay, monitor)


def _string(data: bytes, pos: int) -> tuple[str, int]:
    size = data[pos]
    end = pos + 1 + size
    if end > len(data):
        raise ValueError("string runs past the datagram")
    return data[pos + 1 : end].decode(), end


@dataclass(slots=True)
class Peer:
    """Another daemon heard on a link."""

    address: IpAddress
    announcement: Announcement
    expires: float


@dataclass(slots=True)
class _Link:
    own_address: IpAddress
    peers: dict[bytes, Peer] = field(default_factory=dict)


class PeerTable:
    """The peers of every link of this daemon, and when to announce next.

    Contract: :meth:`receive` each datagram from the announcement socket with
    its link and ``now``; call :meth:`expire` at :meth:`next_expiry`; send
    :meth:`announcement` on every link at :meth:`next_announce` and then call
    :meth:`announced`. Link keys are the ``ip`` technology's interface keys.
    """

    def __init__(
        self, daemon_id: bytes, name: str, technologies: tuple[str, ...], interval: int = 10
    ) -> None:
        if len(daemon_id) != 16:
            raise ValueError("a daemon id is 16 bytes")
        self.daemon_id = daemon_id
        self.name = name
        self.technologies = technologies
        self.interval = interval
        self.overlay = ""
        self.monitor = ""
        self._sequence = 0
        self._links: dict[str, _Link] = {}
        self._next_announce = 0.0
        self._last_answer = float("-inf")
        #: The peer the last :meth:`receive` accepted (None if it ignored the datagram).
        self.last_heard: Peer | None = None

    def set_links(self, links: dict[str, IpAddress]) -> None:
        """The links to announce on, with this daemon's address on each."""
        for key in list(self._links):
            if key not in links:
                del self._links[key]
        for key, address in links.items():
            link = self._links.get(key)
            if link is None:
                self._links[key] = _Link(address)
                self._next_announce = 0.0  # a new link hears from us at once
            else:
                link.own_address = address

    def receive(self, link_key: str, data: bytes, source: IpAddress, now: float) -> bool:
        """Take one datagram; True if it announced a daemon not known on that link before.

        A new peer should hear from us soon (:meth:`answer_due`), so two
        daemons that start together know each other within a round trip
        rather than an interval.
        """
        self.last_heard = None
        link = self._links.get(link_key)
        announcement = decode_announcement(data)
        if link is None or announcement is None or announcement.daemon_id == self.daemon_id:
            return False
        peers = link.peers
        new = announcement.daemon_id not in peers
        if new and len(peers) >= MAX_PEERS_PER_LINK:
            return False
        peer = Peer(source, announcement, now + HOLD_FACTOR * announcement.interval)
        peers[announcement.daemon_id] = peer
        self.last_heard = peer
        if new:
            # Answer at once, but at most once a second whatever peers come.
            self._next_announce = min(self._next_announce, max(now, self._last_answer + 1.0))
        return new

    def expire(self, now: float) -> list[Peer]:
        """Forget peers whose announcements ran out; returns them."""
        gone = []
        for link in self._links.values():
            for daemon_id, peer in list(link.peers.items()):
                if peer.expires <= now:
                    gone.append(link.peers.pop(daemon_id))
        return gone

    def next_expiry(self) -> float | None:
        times = [p.expires for link in self._links.values() for p in link.peers.values()]
        return min(times, default=None)

    def next_announce(self) -> float:
        return self._next_announce

    def announcement(self) -> bytes:
        return encode_announcement(
            Announcement(
                self.daemon_id,
                self._sequence,
                self.interval,
                self.name,
                self.technologies,
                self.overlay,
                self.monitor,
            )
        )

    def announced(self, now: float, jitter: float = 0.0) -> None:
        """Record that :meth:`announcement` went out on every link at ``now``."""
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        self._next_announce = now + self.interval + jitter
        self._last_answer = now

    def peers(self, link_key: str) -> list[Peer]:
        link = self._links.get(link_key)
        if link is None:
            return []
        return sorted(link.peers.values(), key=lambda p: (p.address.version, int(p.address)))

    def designated(self, link_key: str) -> bool:
        """Whether this daemon is the designated host on the link (lowest address wins)."""
        link = self._links.get(link_key)
        if link is None:
            return False
        own = int(link.own_address)
        return all(int(p.address) > own for p in link.peers.values())
