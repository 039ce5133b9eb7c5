"""Scribe messages and their wire format, byte for byte.

docs/technologies/overlay-scribe.md is the specification; this module is its
reference implementation. Every Scribe message travels as one KBR payload
(routed, intercepted or sent direct). All integers are unsigned and big-endian
(network order); there is no padding.

Every message but MULTICAST starts with the same 19 bytes::

    magic 0x53 ('S') | version 0x02 | type u8 | key (16 bytes)

Version 2 made the data messages compact: a MULTICAST is
``magic | version | type | sequence u64 | payload`` (its KBR route carries the
key, the source as origin, and the hops), a DATA carries no group name.

:func:`decode` validates every field and raises :class:`MalformedMessage`
(a :class:`~hamcast.errors.ProtocolError`) for anything else; it never raises
anything else, whatever the bytes.
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass
from typing import Final

from hamcast.errors import ProtocolError, UsageError
from hamcast.overlay.ids import NodeHandle, encode_handle, read_handle

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_NAME_BYTES",
    "VERSION",
    "Accept",
    "Data",
    "Heartbeat",
    "Join",
    "Leave",
    "MalformedMessage",
    "Message",
    "MessageType",
    "Multicast",
    "Redirect",
    "Refresh",
    "MULTICAST_OVERHEAD",
    "data_overhead",
    "decode",
    "encode_accept",
    "encode_data",
    "encode_heartbeat",
    "encode_join",
    "encode_leave",
    "encode_multicast",
    "encode_redirect",
    "encode_refresh",
    "pack_path",
    "path_contains",
    "restamp",
    "unpack_path",
]

MAGIC: Final = 0x53
VERSION: Final = 2
#: magic, version, type, key.
HEADER_SIZE: Final = 19
#: Longest group name on the wire, bytes of UTF-8: four bytes for each of the
#: 1024 characters a URI may have (hamcast.uri.MAX_URI_LENGTH).
MAX_NAME_BYTES: Final = 4096

FLAG_ROOTED: Final = 0x01

_HEADER = struct.Struct("!BBB16s")
_DATA_FIXED = struct.Struct("!BQ")  # hops, sequence
_SEQUENCE = struct.Struct("!Q")
#: Bytes a MULTICAST adds to its payload: magic, version, type, sequence.
MULTICAST_OVERHEAD: Final = 11
_MULTICAST_HEAD: Final = bytes((MAGIC, VERSION, 7))
_PORT = struct.Struct("!H")
_HOPS_OFFSET: Final = HEADER_SIZE
_ID_SIZE: Final = 16
_HOP_BYTES: Final = tuple(bytes((i,)) for i in range(256))


class MessageType(enum.IntEnum):
    """The ``type`` byte."""

    #: Routed (intercepted) toward the key, or sent direct after a REDIRECT: make me your child.
    JOIN = 1
    #: Parent to new child: you are my child; here is my path to the root.
    ACCEPT = 2
    #: Full parent to joiner: join this child of mine instead (bounded fan-out).
    REDIRECT = 3
    #: Either end of a tree edge: drop the edge between us.
    LEAVE = 4
    #: Parent to child, every heartbeat interval and when its path changes.
    HEARTBEAT = 5
    #: Child to parent, every heartbeat interval: I am still your child, with this many children.
    REFRESH = 6
    #: A multicast routed (plain KBR route) to the key's root by a sender off the tree.
    MULTICAST = 7
    #: A multicast sent along a tree edge.
    DATA = 8


class MalformedMessage(ProtocolError):
    """Bytes that are not a valid Scribe message of this version."""


@dataclass(frozen=True, slots=True)
class Join:
    """Make ``joiner`` a child of the node that accepts this, for group ``name``."""

    key: int
    name: str
    joiner: NodeHandle
    #: Push-downs this JOIN has taken so far (0 when routed).
    redirects: int


@dataclass(frozen=True, slots=True)
class Accept:
    """The sender took the receiver as its child.

    ``path`` holds the node ids from the root down to the sender (the sender
    last), packed as on the wire: 16 bytes each (see :func:`unpack_path`).
    Kept packed because every tree node stores its parent's path: bytes are
    far smaller than a tuple of 128-bit ints. ``rooted`` says whether the
    sender is connected to a root, i.e. whether the path is complete.
    """

    key: int
    rooted: bool
    path: bytes


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The sender is alive and still the receiver's parent; fields as :class:`Accept`."""

    key: int
    rooted: bool
    path: bytes


@dataclass(frozen=True, slots=True)
class Redirect:
    """The sender is full: send a direct JOIN (with ``redirects``) to ``target``."""

    key: int
    redirects: int
    target: NodeHandle


@dataclass(frozen=True, slots=True)
class Leave:
    """Drop the tree edge between sender and receiver for ``key``."""

    key: int


@dataclass(frozen=True, slots=True)
class Refresh:
    """The sender is alive and still the receiver's child.

    ``children`` is how many children the sender has in the group (255 means
    255 or more): the parent pushes joiners down to its least loaded child.
    """

    key: int
    children: int


@dataclass(frozen=True, slots=True)
class Data:
    """One multicast message along a tree edge (DATA); the group is known by its key."""

    key: int
    source: NodeHandle
    sequence: int
    hops: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Multicast:
    """One multicast message routed to the key's root (MULTICAST).

    Key, source and hops are the KBR route's key, origin and hop count.
    """

    sequence: int
    payload: bytes


Message = Join | Accept | Heartbeat | Redirect | Leave | Refresh | Data | Multicast

# The data types as plain ints: comparing with them costs less than with enum members.
_DATA: Final = int(MessageType.DATA)
_MULTICAST: Final = int(MessageType.MULTICAST)


# --- encoding ----------------------------------------------------------------


def _header(kind: int, key: int) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, kind, key.to_bytes(16, "big"))


def _name_field(name: bytes) -> bytes:
    if not 0 < len(name) <= MAX_NAME_BYTES:
        raise UsageError(f"a group name must have 1..{MAX_NAME_BYTES} bytes, not {len(name)}")
    return _PORT.pack(len(name)) + name


def encode_join(key: int, name: bytes, joiner: NodeHandle, redirects: int) -> bytes:
    """A JOIN for group ``name`` (UTF-8) with overlay ``key``."""
    return (
        _header(MessageType.JOIN, key)
        + _HOP_BYTES[redirects]
        + encode_handle(joiner)
        + _name_field(name)
    )


def pack_path(ids: tuple[int, ...] | list[int]) -> bytes:
    """Node ids as a packed path: 16 big-endian bytes each."""
    return b"".join(node.to_bytes(16, "big") for node in ids)


def unpack_path(path: bytes) -> tuple[int, ...]:
    """The node ids of a packed path."""
    return tuple(
        int.from_bytes(path[i : i + _ID_SIZE], "big") for i in range(0, len(path), _ID_SIZE)
    )


def path_contains(path: bytes, node_id: int) -> bool:
    """Whether packed ``path`` lists ``node_id``."""
    needle = node_id.to_bytes(16, "big")
    at = path.find(needle)
    while at != -1:
        if at % _ID_SIZE == 0:
            return True
        at = path.find(needle, at + 1)
    return False


def _encode_path(kind: MessageType, key: int, rooted: bool, path: bytes) -> bytes:
    count, rest = divmod(len(path), _ID_SIZE)
    if rest or not 0 < count <= 255:
        raise UsageError(f"a path must pack 1..255 node ids, not {len(path)} bytes")
    return b"".join(
        (
            _header(kind, key),
            _HOP_BYTES[FLAG_ROOTED if rooted else 0],
            _HOP_BYTES[count],
            path,
        )
    )


def encode_accept(key: int, rooted: bool, path: bytes) -> bytes:
    """An ACCEPT carrying the sender's packed ``path`` (root first, sender last)."""
    return _encode_path(MessageType.ACCEPT, key, rooted, path)


def encode_heartbeat(key: int, rooted: bool, path: bytes) -> bytes:
    """A HEARTBEAT carrying the sender's packed ``path`` (root first, sender last)."""
    return _encode_path(MessageType.HEARTBEAT, key, rooted, path)


def encode_redirect(key: int, redirects: int, target: NodeHandle) -> bytes:
    """A REDIRECT to ``target``; ``redirects`` counts this push-down too."""
    return _header(MessageType.REDIRECT, key) + _HOP_BYTES[redirects] + encode_handle(target)


def encode_leave(key: int) -> bytes:
    """A LEAVE."""
    return _header(MessageType.LEAVE, key)


def encode_refresh(key: int, children: int) -> bytes:
    """A REFRESH from a child that has ``children`` children itself (capped at 255)."""
    return _header(MessageType.REFRESH, key) + _HOP_BYTES[min(children, 255)]


def encode_data(
    key: int, source: NodeHandle, sequence: int, payload: bytes, *, hops: int = 1
) -> bytes:
    """A DATA message (sent along a tree edge)."""
    return b"".join(
        (data_header(key), _DATA_FIXED.pack(hops, sequence), encode_handle(source), payload)
    )


def encode_multicast(sequence: int, payload: bytes) -> bytes:
    """A MULTICAST message (routed to the key's root, which knows key and source from KBR)."""
    return _MULTICAST_HEAD + _SEQUENCE.pack(sequence) + payload


@functools.lru_cache(maxsize=1024)
def data_header(key: int) -> bytes:
    """The 19-byte header of a DATA message for ``key`` (cached: one per group)."""
    return _header(_DATA, key)


def data_overhead(source: NodeHandle) -> int:
    """Bytes a DATA message from ``source`` adds to its payload (more than a MULTICAST)."""
    return HEADER_SIZE + _DATA_FIXED.size + len(encode_handle(source))


def restamp(raw: bytes, hops: int) -> bytes:
    """Valid DATA bytes ``raw`` as a DATA message with ``hops``.

    A forwarder passes a message on by changing two bytes, not by re-encoding it.
    """
    return b"".join(
        (
            raw[:2],
            _HOP_BYTES[_DATA],
            raw[3:_HOPS_OFFSET],
            _HOP_BYTES[min(hops, 255)],
            memoryview(raw)[_HOPS_OFFSET + 1 :],
        )
    )


# --- decoding ----------------------------------------------------------------


def decode(raw: bytes) -> Message:
    """The message in ``raw``; raises :class:`MalformedMessage` if it is not one."""
    size = len(raw)
    if size < 3:
        raise MalformedMessage(f"{size} bytes is shorter than a header")
    magic, version, kind = raw[0], raw[1], raw[2]
    if magic != MAGIC:
        raise MalformedMessage(f"bad magic 0x{magic:02x}")
    if version != VERSION:
        raise MalformedMessage(f"unknown version {version} (this node speaks {VERSION})")
    if kind == _MULTICAST:
        if size < MULTICAST_OVERHEAD:
            raise MalformedMessage("truncated multicast")
        (sequence,) = _SEQUENCE.unpack_from(raw, 3)
        return Multicast(sequence, raw[MULTICAST_OVERHEAD:])
    if size < HEADER_SIZE:
        raise MalformedMessage(f"{size} bytes is shorter than a header")
    key = int.from_bytes(raw[3:HEADER_SIZE], "big")
    offset = HEADER_SIZE
    if kind == _DATA:
        if size < offset + _DATA_FIXED.size:
            raise MalformedMessage("truncated data header")
        hops, sequence = _DATA_FIXED.unpack_from(raw, offset)
        source, offset = _read_handle(raw, offset + _DATA_FIXED.size)
        return Data(key, source, sequence, hops, raw[offset:])
    if kind in (MessageType.HEARTBEAT, MessageType.ACCEPT):
        if size < offset + 2:
            raise MalformedMessage("truncated path header")
        flags = raw[offset]
        count = raw[offset + 1]
        if flags & ~FLAG_ROOTED:
            raise MalformedMessage(f"unknown flags 0x{flags:02x}")
        if count == 0:
            raise MalformedMessage("empty path")
        offset += 2
        if size != offset + count * _ID_SIZE:
            raise MalformedMessage(f"{size} bytes do not hold a path of {count} nodes")
        path = raw[offset:]
        rooted = bool(flags & FLAG_ROOTED)
        if kind == MessageType.HEARTBEAT:
            return Heartbeat(key, rooted, path)
        return Accept(key, rooted, path)
    if kind == MessageType.JOIN:
        if size < offset + 1:
            raise MalformedMessage("truncated join")
        redirects = raw[offset]
        joiner, offset = _read_handle(raw, offset + 1)
        name, offset = _read_name(raw, offset)
        _expect_end(raw, offset)
        return Join(key, name, joiner, redirects)
    if kind == MessageType.REDIRECT:
        if size < offset + 1:
            raise MalformedMessage("truncated redirect")
        redirects = raw[offset]
        target, offset = _read_handle(raw, offset + 1)
        _expect_end(raw, offset)
        return Redirect(key, redirects, target)
    if kind == MessageType.LEAVE:
        _expect_end(raw, offset)
        return Leave(key)
    if kind == MessageType.REFRESH:
        if size != offset + 1:
            raise MalformedMessage(f"a REFRESH has 20 bytes, not {size}")
        return Refresh(key, raw[offset])
    raise MalformedMessage(f"unknown type {kind}")


def _expect_end(raw: bytes, offset: int) -> None:
    if len(raw) != offset:
        raise MalformedMessage(f"{len(raw) - offset} unexpected trailing bytes")


def _read_handle(raw: bytes, offset: int) -> tuple[NodeHandle, int]:
    try:
        return read_handle(raw, offset)
    except ProtocolError as exc:
        raise MalformedMessage(str(exc)) from None


def _read_name(raw: bytes, offset: int) -> tuple[str, int]:
    if len(raw) < offset + 2:
        raise MalformedMessage("truncated name length")
    (length,) = _PORT.unpack_from(raw, offset)
    if not 0 < length <= MAX_NAME_BYTES:
        raise MalformedMessage(f"name length {length} not in 1..{MAX_NAME_BYTES}")
    end = offset + 2 + length
    if len(raw) < end:
        raise MalformedMessage("truncated name")
    try:
        name = raw[offset + 2 : end].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("name is not UTF-8") from None
    return name, end
