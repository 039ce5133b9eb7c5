"""Reading hamcast peer announcements for the collector (read-only; sends nothing).

The announcement format is the ``ip`` technology's
(:mod:`hamcast.technologies.ip.peers`), decoded with that module's decoder; a
daemon with a TCP monitoring endpoint names it in its announcements (the
``monitor`` field). Without it (older daemons), the collector guesses the
endpoint: the announcing address and the default monitoring port.

:func:`open_listener` makes the socket: bound to the announcement port,
joined to the IPv4 announcement group on the named interfaces only. Joining
makes the kernel send an IGMP report on those links, so it is opt-in
(``hamcast monitor --announcements IFACE``) and never done by default.
"""

from __future__ import annotations

import socket
import struct

from hamcast.technologies.ip.peers import (
    ANNOUNCE_GROUP_V4,
    ANNOUNCE_PORT,
    Announcement,
    decode_announcement,
)

__all__ = ["monitor_url", "open_listener", "peer_monitor_url"]

# Linux numbers the socket module lacks (TESTBED-FACTS).
_IP_MULTICAST_ALL = 49


def monitor_url(data: bytes, source: str, default_port: int) -> tuple[Announcement, str] | None:
    """The announcement in ``data`` and the monitoring URL it leads to; None if not one."""
    announcement = decode_announcement(data)
    if announcement is None:
        return None
    return announcement, peer_monitor_url(announcement.monitor, source, default_port)


def peer_monitor_url(monitor: str, source: str, default_port: int) -> str:
    """Where a peer's monitoring endpoint is: its ``monitor`` field ("ADDRESS:PORT"; an
    unspecified address means the peer's own, ``source``), else ``source`` and the
    default port."""
    host, port = source, str(default_port)
    if monitor:
        address, _, port = monitor.rpartition(":")
        address = address.strip("[]")
        if address and address not in ("0.0.0.0", "::"):
            host = address
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def open_listener(interfaces: list[str]) -> socket.socket:
    """A non-blocking UDP socket receiving IPv4 announcements on ``interfaces`` (names)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        sock.bind(("0.0.0.0", ANNOUNCE_PORT))
        for name in interfaces:
            index = socket.if_nametoindex(name)
            mreqn = struct.pack("=4s4si", ANNOUNCE_GROUP_V4.packed, b"\0" * 4, index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
