"""Identifiers of the overlay: 128-bit node ids and keys, and node handles.

A node handle on the wire, in every overlay message that carries one (KBR and
Scribe alike): the 16-byte id (big-endian), the address family (one byte, 4
or 6), the packed address (4 or 16 bytes) and the UDP port (two bytes,
big-endian, 1..65535).

Node ids and keys share one circular space of ``2**128`` values. Pastry
reads them as sequences of digits of ``b`` bits (base ``2**b``), most
significant first (Rowstron & Druschel, Middleware 2001, §2.1).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from hamcast.errors import ProtocolError, UsageError

__all__ = [
    "ID_BITS",
    "ID_SPACE",
    "Address",
    "NodeHandle",
    "digit",
    "encode_handle",
    "format_id",
    "read_handle",
    "ring_distance",
    "shared_prefix_length",
]

ID_BITS = 128
ID_SPACE = 1 << ID_BITS

#: A UDP endpoint: (IP address text, port).
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class NodeHandle:
    """A node of the overlay: its id and where to reach it."""

    id: int
    address: Address

    def __str__(self) -> str:
        host, port = self.address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"{format_id(self.id)[:8]}@{where}"


def format_id(value: int) -> str:
    """An id as 32 lower-case hex digits."""
    return f"{value:032x}"


def digit(value: int, index: int, b: int = 4) -> int:
    """The ``index``-th digit (0 = most significant) of ``value`` in base ``2**b``."""
    shift = ID_BITS - (index + 1) * b
    return (value >> shift) & ((1 << b) - 1)


def shared_prefix_length(a: int, b_value: int, b: int = 4) -> int:
    """How many leading base-``2**b`` digits ``a`` and ``b_value`` have in common."""
    differing = a ^ b_value
    if differing == 0:
        return ID_BITS // b
    return (ID_BITS - differing.bit_length()) // b


def ring_distance(a: int, b_value: int) -> int:
    """Distance between two ids on the circular id space (the shorter way round)."""
    forward = (b_value - a) % ID_SPACE
    return min(forward, ID_SPACE - forward)


# Handles are encoded and decoded over and over (a leaf set in every
# exchange); one process-wide memo turns that into a dict lookup and lets
# every node of a simulation share the same NodeHandle objects. Bounded: it
# is emptied when full, which costs only recomputation.
_CACHE_LIMIT: Final = 1 << 18
# Keyed by id (an int hashes much faster than a handle); the handle is kept to
# check the address.
_ENCODED: dict[int, tuple[NodeHandle, bytes]] = {}
_DECODED: dict[bytes, NodeHandle] = {}


def encode_handle(handle: NodeHandle) -> bytes:
    """``handle`` on the wire; :class:`UsageError` if it cannot be (not an IP address)."""
    cached = _ENCODED.get(handle.id)
    if cached is not None and (cached[0] is handle or cached[0] == handle):
        return cached[1]
    host, port = handle.address
    if not 0 <= handle.id < ID_SPACE:
        raise UsageError(f"node id {handle.id!r} is not a 128-bit unsigned integer")
    if not (isinstance(port, int) and 0 < port < 65536):
        raise UsageError(f"port {port!r} of {handle} is not in 1..65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"address {host!r} of a node handle must be an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        raise UsageError(f"address {host!r}: scoped IPv6 addresses cannot be sent to peers")
    family = b"\x04" if ip.version == 4 else b"\x06"
    encoded = handle.id.to_bytes(16, "big") + family + ip.packed + port.to_bytes(2, "big")
    if len(_ENCODED) >= _CACHE_LIMIT:
        _ENCODED.clear()
    _ENCODED[handle.id] = (handle, encoded)
    return encoded


def read_handle(data: bytes, offset: int) -> tuple[NodeHandle, int]:
    """The handle encoded at ``data[offset:]`` and the offset after it (ProtocolError if bad)."""
    if offset + 17 > len(data):
        raise ProtocolError("truncated node handle")
    family = data[offset + 16]
    if family == 4:
        end = offset + 23
    elif family == 6:
        end = offset + 35
    else:
        raise ProtocolError(f"address family {family} in a node handle (4 or 6)")
    if end > len(data):
        raise ProtocolError("truncated node handle")
    raw = data[offset:end]
    handle = _DECODED.get(raw)
    if handle is None:
        port = (raw[-2] << 8) | raw[-1]
        if port == 0:
            raise ProtocolError("port 0 in a node handle")
        packed = raw[17:-2]
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv4Address(packed) if family == 4 else ipaddress.IPv6Address(packed)
        )
        handle = NodeHandle(int.from_bytes(raw[:16], "big"), (ip.compressed, port))
        if len(_DECODED) >= _CACHE_LIMIT:
            _DECODED.clear()
        _DECODED[raw] = handle
    return handle, end
