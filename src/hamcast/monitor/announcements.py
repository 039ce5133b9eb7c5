"""Reading hamcast peer announcements for the collector (read-only; sends nothing).

The announcement format is the ``ip`` technology's
(:mod:`hamcast.technologies.ip.peers`). The collector decodes it with that
module's decoder and additionally reads one *optional trailing field* that a
daemon may append after the overlay endpoint: the monitoring endpoint::

    monitor     u8 length + UTF-8 "ADDRESS:PORT" of the monitoring endpoint (0 = none)

Receivers of version 1 stop reading after the overlay field, so the field is
compatible with them (docs/monitor.md has the proposal). Without it, the
collector guesses the endpoint: the announcing address and the default
monitoring port.

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

__all__ = ["monitor_url", "open_listener", "trailing_monitor_field"]

_HEAD_SIZE = struct.calcsize("!4sBBH16sI")
# Linux numbers the socket module lacks (TESTBED-FACTS).
_IP_MULTICAST_ALL = 49


def trailing_monitor_field(data: bytes) -> str:
    """The optional ``monitor`` field after the overlay endpoint ("" when absent or bad)."""
    try:
        pos = _HEAD_SIZE
        pos += 1 + data[pos]  # name
        count = data[pos]
        pos += 1
        for _ in range(count):
            pos += 1 + data[pos]
        pos += 1 + data[pos]  # overlay
        if pos >= len(data):
            return ""
        size = data[pos]
        end = pos + 1 + size
        if end > len(data) or size > 128:
            return ""
        return data[pos + 1 : end].decode()
    except (IndexError, UnicodeDecodeError):
        return ""


def monitor_url(data: bytes, source: str, default_port: int) -> tuple[Announcement, str] | None:
    """The announcement in ``data`` and the monitoring URL it leads to; None if not one."""
    announcement = decode_announcement(data)
    if announcement is None:
        return None
    field = trailing_monitor_field(data)
    if field:
        return announcement, f"http://{field}"
    host = f"[{source}]" if ":" in source else source
    return announcement, f"http://{host}:{default_port}"


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
