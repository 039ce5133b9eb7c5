"""Multicast socket options for IPv4 and IPv6, by interface index, with clear errors.

Joins use the protocol-independent RFC 3678 options (``MCAST_JOIN_GROUP``,
``MCAST_JOIN_SOURCE_GROUP`` …) so IPv4 and IPv6, ASM and SSM take one code
path. Python 3.11's socket module lacks several Linux constants; their numbers
are below (TESTBED-FACTS.md). Each failing ``setsockopt`` is turned into a
:class:`~hamcast.errors.HamcastError` that says what to change (STYLE.md 12).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

from hamcast.errors import HamcastError, ResourceError, UnknownInterfaceError, UsageError

__all__ = [
    "IP_MULTICAST_ALL",
    "IP_PKTINFO",
    "IPV6_MULTICAST_ALL",
    "IpAddress",
    "destination_from_ancillary",
    "join",
    "leave",
    "multicast_error",
    "open_receiver",
    "open_sender",
    "set_ttl",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
MCAST_JOIN_GROUP = 42
MCAST_LEAVE_GROUP = 45
MCAST_JOIN_SOURCE_GROUP = 46
MCAST_LEAVE_SOURCE_GROUP = 47

_ALIGNED_INDEX = struct.Struct("=I4x")  # gr_interface, padded to sockaddr_storage alignment
_IN_PKTINFO = struct.Struct("=i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
_IN6_PKTINFO = struct.Struct("=16sI")  # ipi6_addr, ipi6_ifindex


def _family(address: IpAddress) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def _level(address: IpAddress) -> int:
    return socket.IPPROTO_IP if address.version == 4 else socket.IPPROTO_IPV6


def _sockaddr_storage(address: IpAddress) -> bytes:
    if address.version == 4:
        raw = struct.pack("=H2x4s", socket.AF_INET, address.packed)
    else:
        raw = struct.pack("=H2xI16sI", socket.AF_INET6, 0, address.packed, 0)
    return raw.ljust(128, b"\0")


def multicast_error(action: str, exc: OSError, where: str) -> HamcastError:
    """The error to report for a failed multicast socket operation, errno by errno."""
    code = exc.errno
    if code == errno.ENODEV:
        error: HamcastError = UnknownInterfaceError(f"{action} on {where}: the interface is gone")
    elif code in (errno.EADDRNOTAVAIL, errno.EINVAL):
        error = UsageError(f"{action} on {where}: the kernel refused ({exc.strerror})")
    elif code == errno.ENOBUFS:
        error = ResourceError(
            f"{action} on {where}: too many memberships "
            "(raise net.ipv4.igmp_max_memberships / net.ipv6.mld_max_msf)"
        )
    elif code == errno.ENETUNREACH:
        error = ResourceError(f"{action} on {where}: no route for multicast on this interface")
    elif code in (errno.EPERM, errno.EACCES):
        error = ResourceError(f"{action} on {where}: not permitted ({exc.strerror})")
    else:
        error = ResourceError(f"{action} on {where} failed: {exc.strerror or exc}")
    error.errno = code
    return error


def _membership(
    sock: socket.socket,
    join_it: bool,
    ifindex: int,
    group: IpAddress,
    source: IpAddress | None,
) -> None:
    base = _ALIGNED_INDEX.pack(ifindex) + _sockaddr_storage(group)
    if source is None:
        option = MCAST_JOIN_GROUP if join_it else MCAST_LEAVE_GROUP
        sock.setsockopt(_level(group), option, base)
    else:
        option = MCAST_JOIN_SOURCE_GROUP if join_it else MCAST_LEAVE_SOURCE_GROUP
        sock.setsockopt(_level(group), option, base + _sockaddr_storage(source))


def join(sock: socket.socket, ifindex: int, group: IpAddress, source: IpAddress | None) -> None:
    """Join ``group`` (from ``source`` only, for SSM) on interface ``ifindex``."""
    try:
        _membership(sock, True, ifindex, group, source)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return  # already a member on this socket and interface
        raise multicast_error(f"joining {group}", exc, f"interface {ifindex}") from None


def leave(sock: socket.socket, ifindex: int, group: IpAddress, source: IpAddress | None) -> None:
    try:
        _membership(sock, False, ifindex, group, source)
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):
            return  # not a member (any more), or the interface is gone: nothing to undo
        raise multicast_error(f"leaving {group}", exc, f"interface {ifindex}") from None


def open_receiver(
    family: int, port: int, group: IpAddress | None = None, ifindex: int = 0
) -> socket.socket:
    """A non-blocking UDP socket on ``port`` for group traffic.

    On the wildcard address it reports each datagram's destination address and
    interface (PKTINFO): the daemon's receiver of every group on the port.
    Bound to ``group`` (``ifindex`` scopes an IPv6 address) it receives that
    group only: an application's direct receiver. Either receives only groups
    joined on it — not every group the host joined on this port
    (IP_MULTICAST_ALL off).
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    sock = socket.socket(af, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if family == 4:
            if group is None:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            sock.bind((str(group) if group else "0.0.0.0", port))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if group is None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            sock.bind((str(group), port, 0, ifindex) if group else ("::", port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EACCES:
            raise ResourceError(f"port {port} needs privileges to bind") from None
        raise multicast_error(f"opening a receiver on port {port}", exc, f"IPv{family}") from None
    return sock


def open_sender(family: int, ifindex: int) -> socket.socket:
    """A non-blocking UDP socket that sends multicast out of interface ``ifindex``.

    Loopback stays on so receivers on this host — the daemon's own receiver
    included — see what it sends, as with any multicast program.
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    sock = socket.socket(af, socket.SOCK_DGRAM)
    try:
        if family == 4:
            mreqn = struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise multicast_error("opening a sender", exc, f"interface {ifindex}") from None
    return sock


def set_ttl(sock: socket.socket, family: int, ttl: int) -> None:
    if family == 4:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)


def destination_from_ancillary(
    family: int, ancdata: list[tuple[int, int, bytes]]
) -> tuple[IpAddress, int] | None:
    """The datagram's destination address and arrival interface from PKTINFO, if present."""
    for level, kind, data in ancdata:
        if family == 4 and (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO):
            ifindex, _, addr = _IN_PKTINFO.unpack_from(data.ljust(_IN_PKTINFO.size, b"\0"))
            return ipaddress.IPv4Address(addr), ifindex
        if family == 6 and (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO):
            addr, ifindex = _IN6_PKTINFO.unpack_from(data.ljust(_IN6_PKTINFO.size, b"\0"))
            return ipaddress.IPv6Address(addr), ifindex
    return None
