"""Packet sockets that capture only discovery traffic (the one I/O helper of discovery).

Why packet sockets (measured, docs/discovery.md): a raw ``IPPROTO_IGMP`` or
``IPPROTO_ICMPV6`` socket gets a multicast packet only if the host itself is a
member of its destination group, so it misses other hosts' IGMPv1/v2 and MLDv1
reports (sent to the group itself) and leaves (to all-routers), and joining
224.0.0.22 / ff02::16 to see IGMPv3 / MLDv2 reports makes the host announce
those memberships itself. A cooked (``SOCK_DGRAM``) ``AF_PACKET`` socket sees
every frame the interface receives, before any of that.

The data path must stay out of Python, so each socket:

* is bound to one interface and one ethertype (IPv4 or IPv6), never
  ``ETH_P_ALL``: protocol taps are not called for transmitted packets, so the
  sending side of the data path is untouched;
* gets a classic BPF filter *before* it is bound to a protocol (a socket of
  protocol 0 receives nothing), so not one unfiltered packet is queued; the
  kernel runs the filter per received packet, and only IGMP, PIM and MLD
  reach user space;
* drops looped-back copies of this host's own packets in the filter.

On Ethernet-like interfaces the socket also adds the link-layer addresses of
224.0.0.22/ff02::16 (IGMPv3/MLDv2 reports), 224.0.0.13/ff02::d (PIM) and
224.0.0.2/ff02::2 (leaves and dones) to the interface's multicast filter
(``PACKET_MR_MULTICAST``), which joins nothing at the IP layer and sends no
report; ``allmulti`` adds ``PACKET_MR_ALLMULTI``. Closing the socket undoes both.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import struct

__all__ = ["CaptureError", "bpf_program", "open_capture"]

logger = logging.getLogger(__name__)

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SO_ATTACH_FILTER = 26
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0
PACKET_MR_ALLMULTI = 2
ARPHRD_ETHER = 1
RECEIVE_BUFFER = 256 * 1024

# Classic BPF opcodes (linux/filter.h).
_LD_W_ABS = 0x20
_LD_B_ABS = 0x30
_LD_B_IND = 0x50
_ALU_ADD_K = 0x04
_ALU_LSH_K = 0x64
_TAX = 0x07
_JEQ_K = 0x15
_JGT_K = 0x25
_JGE_K = 0x35
_RET_K = 0x06
# Ancillary load of skb->pkttype: SKF_AD_OFF (-0x1000) + SKF_AD_PKTTYPE (4).
_SKF_AD_PKTTYPE = 0xFFFFF004
# PACKET_OUTGOING (4) and PACKET_LOOPBACK (5) are this host's own packets.
_PACKET_OUTGOING = 4
# Accept whole packets; the reader truncates and drops oversized ones.
_SNAPLEN = 0x40000

_LINK_GROUPS = {
    4: ("01:00:5e:00:00:16", "01:00:5e:00:00:0d", "01:00:5e:00:00:02"),
    6: ("33:33:00:00:00:16", "33:33:00:00:00:0d", "33:33:00:00:00:02"),
}


class CaptureError(OSError):
    """A capture socket could not be set up; ``str()`` says why and what to change."""


# An instruction is (opcode, jump-if-true label, jump-if-false label, k);
# labels name later instructions and are resolved into relative offsets.
_Op = tuple[int, str | None, str | None, int]


def _assemble(ops: list[tuple[str | None, _Op]]) -> list[tuple[int, int, int, int]]:
    where = {label: index for index, (label, _) in enumerate(ops) if label}
    program = []
    for index, (_, (code, true, false, k)) in enumerate(ops):
        jt = where[true] - index - 1 if true else 0
        jf = where[false] - index - 1 if false else 0
        if not (0 <= jt < 256 and 0 <= jf < 256):
            raise AssertionError("BPF jump out of range")
        program.append((code, jt, jf, k))
    return program


def bpf_program(family: int) -> list[tuple[int, int, int, int]]:
    """The filter for a cooked packet socket of ``family`` (4 or 6).

    Offsets count from the IP header. IPv4: protocol IGMP or PIM. IPv6: PIM
    right after the fixed header, or a hop-by-hop header (MLD always carries
    one with Router Alert, RFC 3810 §5) followed by ICMPv6 of type 130-132 or 143.
    """
    common: list[tuple[str | None, _Op]] = [
        (None, (_LD_W_ABS, None, None, _SKF_AD_PKTTYPE)),
        (None, (_JGE_K, "drop", None, _PACKET_OUTGOING)),
    ]
    if family == 4:
        body: list[tuple[str | None, _Op]] = [
            (None, (_LD_B_ABS, None, None, 9)),  # protocol
            (None, (_JEQ_K, "accept", None, 2)),  # IGMP
            (None, (_JEQ_K, "accept", "drop", 103)),  # PIM
        ]
    else:
        body = [
            (None, (_LD_B_ABS, None, None, 6)),  # next header
            (None, (_JEQ_K, "hop-by-hop", None, 0)),
            (None, (_JEQ_K, "accept", "drop", 103)),  # PIM
            ("hop-by-hop", (_LD_B_ABS, None, None, 40)),  # its next header
            (None, (_JEQ_K, None, "drop", 58)),  # ICMPv6
            (None, (_LD_B_ABS, None, None, 41)),  # its length in 8-byte units - 1
            (None, (_ALU_ADD_K, None, None, 1)),
            (None, (_ALU_LSH_K, None, None, 3)),
            (None, (_ALU_ADD_K, None, None, 40)),
            (None, (_TAX, None, None, 0)),
            (None, (_LD_B_IND, None, None, 0)),  # ICMPv6 type
            (None, (_JGE_K, None, "drop", 130)),
            (None, (_JGT_K, None, "accept", 132)),  # 130-132: query, report, done
            (None, (_JEQ_K, "accept", "drop", 143)),  # MLDv2 report
        ]
    tail: list[tuple[str | None, _Op]] = [
        ("accept", (_RET_K, None, None, _SNAPLEN)),
        ("drop", (_RET_K, None, None, 0)),
    ]
    return _assemble(common + body + tail)


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; },
    # in native layout ("@", with the pointer's alignment padding).
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _add_membership(sock: socket.socket, ifindex: int, kind: int, mac: bytes = b"") -> None:
    request = struct.pack("=iHH8s", ifindex, kind, len(mac), mac)
    sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, request)


def open_capture(name: str, ifindex: int, family: int, *, allmulti: bool = False) -> socket.socket:
    """A non-blocking socket that receives the discovery packets of ``family`` on ``name``.

    Each read returns one whole IP packet. Raises :class:`CaptureError` with an
    explanation when the socket cannot be opened or filtered.
    """
    proto = ETH_P_IP if family == 4 else ETH_P_IPV6
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    except PermissionError as exc:
        raise CaptureError(
            exc.errno,
            "no permission for packet sockets: run the daemon as root or give it "
            "CAP_NET_RAW (setcap cap_net_raw+ep, or AmbientCapabilities=CAP_NET_RAW)",
        ) from exc
    except OSError as exc:
        raise CaptureError(exc.errno, f"cannot open a packet socket: {exc.strerror}") from exc
    try:
        try:
            _attach_filter(sock, bpf_program(family))
        except OSError as exc:
            # Without the filter the socket would carry the data path into Python.
            raise CaptureError(exc.errno, f"cannot attach the BPF filter: {exc.strerror}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((name, proto))
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise CaptureError(exc.errno, f"interface {name} does not exist") from exc
            raise CaptureError(exc.errno, f"cannot bind to {name}: {exc.strerror}") from exc
        try:
            bound = socket.if_nametoindex(name)
        except OSError as exc:
            raise CaptureError(errno.ENODEV, f"interface {name} vanished") from exc
        if bound != ifindex:
            raise CaptureError(
                errno.ENODEV, f"interface {name} has index {bound} now, not {ifindex}"
            )
        hatype = sock.getsockname()[3]
        if hatype == ARPHRD_ETHER:
            _filter_link_groups(sock, name, ifindex, family, allmulti)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _filter_link_groups(
    sock: socket.socket, name: str, ifindex: int, family: int, allmulti: bool
) -> None:
    # Virtual links (veth, bridges) deliver every multicast frame anyway; real
    # NICs filter by MAC, so ask for the discovery groups' addresses. A failure
    # only narrows what we see, so it is logged, not raised.
    for text in _LINK_GROUPS[family]:
        try:
            _add_membership(sock, ifindex, PACKET_MR_MULTICAST, _mac(text))
        except OSError as exc:
            logger.warning("%s: cannot add link-layer group %s: %s", name, text, exc.strerror)
    if allmulti:
        try:
            _add_membership(sock, ifindex, PACKET_MR_ALLMULTI)
        except OSError as exc:
            logger.warning("%s: cannot enable all-multicast mode: %s", name, exc.strerror)
