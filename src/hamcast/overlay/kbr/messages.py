"""The KBR wire format: message records, and their encoder and validating decoder.

docs/technologies/overlay-kbr.md specifies every byte; this module is its
reference implementation and does no I/O. All integers are big-endian
(network order). A datagram is::

    version:u8 = 0xB2 | type:u8 | flags:u8 | sender:handle | body

``flags`` bit 0 (``MEMBER``) says the sender has joined the overlay: only
then may the receiver put it in its tables. A ``handle`` is
``id:16 family:u8 (4|6) address:4|16 port:u16``. The compact data types
(``DATA``, ``ROUTE_DATA``, new in version 2) name the sender by its 16-byte id
only and let the datagram's end delimit the payload.

Decoding validates every field against the receiver's limits and raises
:class:`~hamcast.errors.ProtocolError`; the node counts and drops those.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import ClassVar, Final

from hamcast.errors import ProtocolError
from hamcast.overlay.ids import NodeHandle, encode_handle, read_handle

__all__ = [
    "FLAG_MEMBER",
    "VERSION",
    "Announce",
    "CompactDatagram",
    "Datagram",
    "Direct",
    "DirectData",
    "Join",
    "JoinReply",
    "LeafSet",
    "LeafSetRequest",
    "Leave",
    "Message",
    "MessageType",
    "Ping",
    "Pong",
    "Route",
    "RouteData",
    "RowRequest",
    "Rows",
    "UnsupportedVersion",
    "WireCodec",
    "encode_handle",
    "read_compact",
]

#: First byte of every datagram: high nibble 0xB marks hamcast KBR, low nibble the version (2).
VERSION: Final = 0xB2
#: Bytes of a DATA datagram before its payload: version, type, flags, sender id.
DATA_HEADER_SIZE: Final = 19
#: Bytes of a ROUTE_DATA datagram before the origin handle: DATA's, hops, key.
ROUTE_DATA_HEAD_SIZE: Final = 36
#: Header flag: the sender is a member (has joined) and may be put in tables.
FLAG_MEMBER: Final = 0x01
#: ROUTE flag: an intercepted route (a RouteStep at every hop).
_ROUTE_INTERCEPT: Final = 0x01

_F64 = struct.Struct("!d")
_U32 = struct.Struct("!I")
_ROUTE_HEAD = struct.Struct("!BB16s")  # flags, hops, key


class UnsupportedVersion(ProtocolError):
    """A datagram of another version of this format (a version-1 node's, say)."""

    def __init__(self, version_byte: int) -> None:
        super().__init__(
            f"version byte {version_byte:#04x}, this node speaks {VERSION:#04x}"
            + (" (a version-1 hamcast node)" if version_byte == 0xB1 else "")
        )
        self.version_byte = version_byte


class MessageType(enum.IntEnum):
    """The ``type`` byte."""

    PING = 0x01
    PONG = 0x02
    JOIN = 0x03
    ROWS = 0x04
    JOIN_REPLY = 0x05
    ANNOUNCE = 0x06
    LEAFSET_REQUEST = 0x07
    LEAFSET = 0x08
    ROW_REQUEST = 0x09
    ROUTE = 0x0A
    DIRECT = 0x0B
    LEAVE = 0x0C
    DATA = 0x0D
    ROUTE_DATA = 0x0E


#: One routing-table row on the wire: its index and its entries.
Row = tuple[int, tuple[NodeHandle, ...]]


@dataclass(frozen=True, slots=True)
class Ping:
    """A keep-alive or verification probe.

    ``timestamp`` is the sender's clock (seconds), echoed in the PONG so the
    sender measures the round-trip time without keeping it. ``leaf_set`` is
    the sender's leaf set when it shares it (empty otherwise).
    """

    TYPE: ClassVar[MessageType] = MessageType.PING
    timestamp: float
    leaf_set: tuple[NodeHandle, ...] = ()


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a PING: its ``timestamp`` echoed."""

    TYPE: ClassVar[MessageType] = MessageType.PONG
    timestamp: float


@dataclass(frozen=True, slots=True)
class Join:
    """A new node's join request, routed towards the root of ``joiner.id``.

    ``hops`` counts overlay hops so far; ``next_row`` is the first
    routing-table row no node on the path has sent the joiner yet.
    """

    TYPE: ClassVar[MessageType] = MessageType.JOIN
    hops: int
    next_row: int
    joiner: NodeHandle


@dataclass(frozen=True, slots=True)
class Rows:
    """Routing-table rows of the sender: to a joiner, or answering a ROW_REQUEST."""

    TYPE: ClassVar[MessageType] = MessageType.ROWS
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class JoinReply:
    """The root's answer to a JOIN: its last rows and its leaf set."""

    TYPE: ClassVar[MessageType] = MessageType.JOIN_REPLY
    rows: tuple[Row, ...]
    leaf_set: tuple[NodeHandle, ...]


@dataclass(frozen=True, slots=True)
class Announce:
    """A node that just joined introduces itself, with its leaf set."""

    TYPE: ClassVar[MessageType] = MessageType.ANNOUNCE
    leaf_set: tuple[NodeHandle, ...]


@dataclass(frozen=True, slots=True)
class LeafSetRequest:
    """Please send me your leaf set (leaf-set repair)."""

    TYPE: ClassVar[MessageType] = MessageType.LEAFSET_REQUEST


@dataclass(frozen=True, slots=True)
class LeafSet:
    """The sender's leaf set, answering a LEAFSET_REQUEST."""

    TYPE: ClassVar[MessageType] = MessageType.LEAFSET
    leaf_set: tuple[NodeHandle, ...]


@dataclass(frozen=True, slots=True)
class RowRequest:
    """Please send me row ``row`` of your routing table (routing-table repair)."""

    TYPE: ClassVar[MessageType] = MessageType.ROW_REQUEST
    row: int


@dataclass(frozen=True, slots=True)
class Route:
    """An application payload on its way to the root of ``key``.

    ``hops`` counts the overlay hops taken including the one that brought it
    here; ``origin`` called ``route``.
    """

    TYPE: ClassVar[MessageType] = MessageType.ROUTE
    key: int
    hops: int
    intercept: bool
    origin: NodeHandle
    payload: bytes


@dataclass(frozen=True, slots=True)
class Direct:
    """An application payload sent straight to the receiver."""

    TYPE: ClassVar[MessageType] = MessageType.DIRECT
    payload: bytes


@dataclass(frozen=True, slots=True)
class Leave:
    """The sender leaves the overlay; ``leaf_set`` helps the receiver fill the gap."""

    TYPE: ClassVar[MessageType] = MessageType.LEAVE
    leaf_set: tuple[NodeHandle, ...]


@dataclass(frozen=True, slots=True)
class DirectData:
    """An application payload sent straight to the receiver, compact (sender by id)."""

    TYPE: ClassVar[MessageType] = MessageType.DATA
    payload: bytes


@dataclass(frozen=True, slots=True)
class RouteData:
    """A plain (not intercepted) route, compact: fields as :class:`Route`."""

    TYPE: ClassVar[MessageType] = MessageType.ROUTE_DATA
    key: int
    hops: int
    origin: NodeHandle
    payload: bytes


Message = (
    Ping
    | Pong
    | Join
    | Rows
    | JoinReply
    | Announce
    | LeafSetRequest
    | LeafSet
    | RowRequest
    | Route
    | Direct
    | Leave
    | DirectData
    | RouteData
)


@dataclass(frozen=True, slots=True)
class Datagram:
    """A decoded datagram: who sent it, whether it is a member, and the message."""

    sender: NodeHandle
    member: bool
    message: Message


@dataclass(frozen=True, slots=True)
class CompactDatagram:
    """A decoded compact datagram (DATA, ROUTE_DATA): the sender is known by its id only."""

    sender_id: int
    member: bool
    message: DirectData | RouteData


def _write_handles(out: bytearray, handles: tuple[NodeHandle, ...]) -> None:
    out.append(len(handles))
    for handle in handles:
        out += encode_handle(handle)


def _write_rows(out: bytearray, rows: tuple[Row, ...]) -> None:
    out.append(len(rows))
    for index, entries in rows:
        out.append(index)
        _write_handles(out, entries)


class WireCodec:
    """Encodes messages and decodes datagrams under one node's limits.

    The limits come from :class:`~hamcast.overlay.kbr.config.KbrConfig`:
    ``rows`` and ``columns`` of the routing table, ``leaf_set_size``,
    ``max_payload`` and ``max_hops``.
    """

    __slots__ = ("_columns", "_leaf_limit", "_max_hops", "_max_payload", "_row_limit", "_rows")

    def __init__(
        self,
        *,
        rows: int,
        columns: int,
        leaf_set_size: int,
        max_payload: int,
        max_hops: int,
        max_rows_per_message: int,
    ) -> None:
        self._rows = rows
        self._columns = columns
        self._leaf_limit = leaf_set_size
        self._max_payload = max_payload
        self._max_hops = max_hops
        self._row_limit = max_rows_per_message

    # --- encoding --------------------------------------------------------------

    def encode(self, sender: bytes, member: bool, message: Message) -> bytes:
        """``message`` from the already encoded ``sender`` handle, as one datagram."""
        head = bytes((VERSION, message.TYPE, FLAG_MEMBER if member else 0))
        if isinstance(message, DirectData):
            return head + sender[:16] + message.payload
        if isinstance(message, RouteData):
            return b"".join(
                (
                    head,
                    sender[:16],
                    bytes((message.hops,)),
                    message.key.to_bytes(16, "big"),
                    encode_handle(message.origin),
                    message.payload,
                )
            )
        if isinstance(message, Ping):
            if not message.leaf_set:
                return head + sender + _F64.pack(message.timestamp) + b"\x00"
            out = bytearray(head + sender + _F64.pack(message.timestamp))
            _write_handles(out, message.leaf_set)
            return bytes(out)
        if isinstance(message, Pong):
            return head + sender + _F64.pack(message.timestamp)
        if isinstance(message, Route):
            flags = _ROUTE_INTERCEPT if message.intercept else 0
            return b"".join(
                (
                    head,
                    sender,
                    _ROUTE_HEAD.pack(flags, message.hops, message.key.to_bytes(16, "big")),
                    encode_handle(message.origin),
                    _U32.pack(len(message.payload)),
                    message.payload,
                )
            )
        if isinstance(message, Direct):
            return head + sender + _U32.pack(len(message.payload)) + message.payload
        out = bytearray(head + sender)
        if isinstance(message, Join):
            out.append(message.hops)
            out.append(message.next_row)
            out += encode_handle(message.joiner)
        elif isinstance(message, Rows):
            _write_rows(out, message.rows)
        elif isinstance(message, JoinReply):
            _write_rows(out, message.rows)
            _write_handles(out, message.leaf_set)
        elif isinstance(message, Announce | LeafSet | Leave):
            _write_handles(out, message.leaf_set)
        elif isinstance(message, RowRequest):
            out.append(message.row)
        # LeafSetRequest has no body.
        return bytes(out)

    # --- decoding --------------------------------------------------------------

    def decode(self, data: bytes) -> Datagram | CompactDatagram:
        """The datagram in ``data``; :class:`ProtocolError` if any field is invalid.

        A version byte other than :data:`VERSION` raises
        :class:`UnsupportedVersion` (a :class:`ProtocolError`).
        """
        if len(data) < DATA_HEADER_SIZE:
            raise ProtocolError("datagram shorter than the smallest header")
        if data[0] != VERSION:
            raise UnsupportedVersion(data[0])
        kind = data[1]
        flags = data[2]
        if flags & ~FLAG_MEMBER:
            raise ProtocolError(f"unknown header flags {flags:#04x}")
        if kind in (MessageType.DATA, MessageType.ROUTE_DATA):
            return self.decode_compact(data)
        if len(data) < 3 + 23:
            raise ProtocolError("datagram shorter than the smallest header")
        sender, offset = read_handle(data, 3)
        message: Message
        if kind == MessageType.PING:
            timestamp, offset = self._read_timestamp(data, offset)
            leaf_set, offset = self._read_handles(data, offset, self._leaf_limit)
            message = Ping(timestamp, leaf_set)
        elif kind == MessageType.PONG:
            timestamp, offset = self._read_timestamp(data, offset)
            message = Pong(timestamp)
        elif kind == MessageType.ROUTE:
            message, offset = self._read_route(data, offset)
        elif kind == MessageType.DIRECT:
            payload, offset = self._read_payload(data, offset)
            message = Direct(payload)
        elif kind == MessageType.JOIN:
            if offset + 2 > len(data):
                raise ProtocolError("truncated JOIN")
            hops, next_row = data[offset], data[offset + 1]
            if hops > self._max_hops:
                raise ProtocolError(f"JOIN with {hops} hops, more than {self._max_hops}")
            if next_row > self._rows:
                raise ProtocolError(f"JOIN next_row {next_row} beyond {self._rows} rows")
            joiner, offset = read_handle(data, offset + 2)
            message = Join(hops, next_row, joiner)
        elif kind == MessageType.ROWS:
            rows, offset = self._read_rows(data, offset)
            message = Rows(rows)
        elif kind == MessageType.JOIN_REPLY:
            rows, offset = self._read_rows(data, offset)
            leaf_set, offset = self._read_handles(data, offset, self._leaf_limit)
            message = JoinReply(rows, leaf_set)
        elif kind == MessageType.ANNOUNCE:
            leaf_set, offset = self._read_handles(data, offset, self._leaf_limit)
            message = Announce(leaf_set)
        elif kind == MessageType.LEAFSET_REQUEST:
            message = LeafSetRequest()
        elif kind == MessageType.LEAFSET:
            leaf_set, offset = self._read_handles(data, offset, self._leaf_limit)
            message = LeafSet(leaf_set)
        elif kind == MessageType.ROW_REQUEST:
            if offset >= len(data):
                raise ProtocolError("truncated ROW_REQUEST")
            row = data[offset]
            if row >= self._rows:
                raise ProtocolError(f"ROW_REQUEST for row {row} of {self._rows}")
            message = RowRequest(row)
            offset += 1
        elif kind == MessageType.LEAVE:
            leaf_set, offset = self._read_handles(data, offset, self._leaf_limit)
            message = Leave(leaf_set)
        else:
            raise ProtocolError(f"unknown message type {kind:#04x}")
        if offset != len(data):
            raise ProtocolError(f"{len(data) - offset} trailing bytes after {message.TYPE.name}")
        return Datagram(sender, bool(flags & FLAG_MEMBER), message)

    def decode_compact(self, data: bytes) -> CompactDatagram:
        """A DATA or ROUTE_DATA datagram whose version byte was checked already."""
        hops, origin, start = read_compact(data, self._max_hops, self._max_payload)
        sender_id = int.from_bytes(data[3:DATA_HEADER_SIZE], "big")
        message: DirectData | RouteData
        if origin is None:
            message = DirectData(data[start:])
        else:
            key = int.from_bytes(data[DATA_HEADER_SIZE + 1 : ROUTE_DATA_HEAD_SIZE], "big")
            message = RouteData(key, hops, origin, data[start:])
        return CompactDatagram(sender_id, bool(data[2] & FLAG_MEMBER), message)

    @staticmethod
    def _read_timestamp(data: bytes, offset: int) -> tuple[float, int]:
        if offset + 8 > len(data):
            raise ProtocolError("truncated timestamp")
        (value,) = _F64.unpack_from(data, offset)
        if not math.isfinite(value):
            raise ProtocolError("timestamp is not a finite number")
        return value, offset + 8

    def _read_payload(self, data: bytes, offset: int) -> tuple[bytes, int]:
        if offset + 4 > len(data):
            raise ProtocolError("truncated payload length")
        (length,) = _U32.unpack_from(data, offset)
        if length > self._max_payload:
            raise ProtocolError(f"payload of {length} bytes, limit {self._max_payload}")
        start = offset + 4
        if start + length != len(data):
            raise ProtocolError("payload length does not match the datagram")
        return data[start:], len(data)

    def _read_route(self, data: bytes, offset: int) -> tuple[Route, int]:
        if offset + _ROUTE_HEAD.size > len(data):
            raise ProtocolError("truncated ROUTE")
        flags, hops, key = _ROUTE_HEAD.unpack_from(data, offset)
        if flags & ~_ROUTE_INTERCEPT:
            raise ProtocolError(f"unknown ROUTE flags {flags:#04x}")
        if hops == 0 or hops > self._max_hops:
            raise ProtocolError(f"ROUTE with {hops} hops (1..{self._max_hops})")
        origin, offset = read_handle(data, offset + _ROUTE_HEAD.size)
        payload, offset = self._read_payload(data, offset)
        route = Route(
            int.from_bytes(key, "big"), hops, bool(flags & _ROUTE_INTERCEPT), origin, payload
        )
        return route, offset

    @staticmethod
    def _read_handles(data: bytes, offset: int, limit: int) -> tuple[tuple[NodeHandle, ...], int]:
        if offset >= len(data):
            raise ProtocolError("truncated handle list")
        count = data[offset]
        if count > limit:
            raise ProtocolError(f"list of {count} handles, limit {limit}")
        offset += 1
        handles = []
        for _ in range(count):
            handle, offset = read_handle(data, offset)
            handles.append(handle)
        return tuple(handles), offset

    def _read_rows(self, data: bytes, offset: int) -> tuple[tuple[Row, ...], int]:
        if offset >= len(data):
            raise ProtocolError("truncated row list")
        count = data[offset]
        if count > self._row_limit:
            raise ProtocolError(f"{count} rows in one message, limit {self._row_limit}")
        offset += 1
        rows: list[Row] = []
        previous = -1
        for _ in range(count):
            if offset >= len(data):
                raise ProtocolError("truncated row")
            index = data[offset]
            if index >= self._rows or index <= previous:
                raise ProtocolError(f"row index {index} out of order or beyond {self._rows}")
            previous = index
            entries, offset = self._read_handles(data, offset + 1, self._columns - 1)
            rows.append((index, entries))
        return tuple(rows), offset


_DATA_TYPE: Final = int(MessageType.DATA)
_ROUTE_DATA_TYPE: Final = int(MessageType.ROUTE_DATA)


def read_compact(
    data: bytes, max_hops: int, max_payload: int
) -> tuple[int, NodeHandle | None, int]:
    """Check a DATA or ROUTE_DATA datagram whose version byte was checked already.

    Returns ``(hops, origin, payload_start)``: hops 0 and origin ``None`` for
    DATA. Raises :class:`ProtocolError` for any invalid field. The one check
    of both the codec and the node's in-place data path.
    """
    size = len(data)
    if size < DATA_HEADER_SIZE:
        raise ProtocolError("datagram shorter than the smallest header")
    flags = data[2]
    if flags & ~FLAG_MEMBER:
        raise ProtocolError(f"unknown header flags {flags:#04x}")
    kind = data[1]
    hops = 0
    origin: NodeHandle | None = None
    if kind == _DATA_TYPE:
        start = DATA_HEADER_SIZE
    elif kind == _ROUTE_DATA_TYPE:
        if size < ROUTE_DATA_HEAD_SIZE:
            raise ProtocolError("truncated ROUTE_DATA")
        hops = data[DATA_HEADER_SIZE]
        if hops == 0 or hops > max_hops:
            raise ProtocolError(f"ROUTE_DATA with {hops} hops (1..{max_hops})")
        origin, start = read_handle(data, ROUTE_DATA_HEAD_SIZE)
    else:
        raise ProtocolError(f"type {kind:#04x} is not a compact data type")
    if size - start > max_payload:
        raise ProtocolError(f"payload of {size - start} bytes, limit {max_payload}")
    return hops, origin, start
