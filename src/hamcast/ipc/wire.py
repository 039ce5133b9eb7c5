"""IPC wire format: frame types, the frame reader, and the value codec.

Everything here is specified in docs/ipc.md; this module is the reference
implementation of that document and does no I/O.

A frame is ``length:u32 type:u8 body``, little-endian, where ``length``
counts the type byte and the body. The value codec encodes request arguments
and response results from a *signature*: a string of field codes

=====  =========================================================
``B``  unsigned 8-bit integer (also booleans: 0 or 1)
``H``  unsigned 16-bit integer
``I``  unsigned 32-bit integer
``Q``  unsigned 64-bit integer
``S``  string: ``u16`` byte length, then that many bytes of UTF-8
``[`` … ``]``  a list: ``u16`` count, then each element encoded by the
       signature between the brackets (one or more fields, a record)
=====  =========================================================
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Any, Final

from hamcast.errors import ProtocolError

__all__ = [
    "CLIENT_MAGIC",
    "DAEMON_MAGIC",
    "DATA_HEADER",
    "DEFAULT_MAX_FRAME",
    "EVENT_BODY",
    "FRAME_HEADER",
    "NAME_HEADER",
    "PROTOCOL_VERSION",
    "REQUEST_HEADER",
    "RESPONSE_HEADER",
    "SEND_HEADER",
    "FrameReader",
    "FrameType",
    "NameKind",
    "Signature",
    "decode_values",
    "encode_values",
]

CLIENT_MAGIC: Final = b"HAMC"
DAEMON_MAGIC: Final = b"HAMD"
PROTOCOL_VERSION: Final = 1

#: Largest frame (type byte + body) either side accepts unless the WELCOME
#: says otherwise. Big enough for the largest message plus headers.
DEFAULT_MAX_FRAME: Final = 1 << 20 | 1 << 10


class FrameType(enum.IntEnum):
    """The ``type`` byte of a frame."""

    HELLO = 0x01  # client -> daemon, first frame
    WELCOME = 0x02  # daemon -> client, answer to HELLO
    REQUEST = 0x10  # client -> daemon
    RESPONSE = 0x11  # daemon -> client
    NAME = 0x20  # daemon -> client: defines a name id
    SEND = 0x30  # client -> daemon: one message to send
    DATA = 0x31  # daemon -> client: one received message
    SEND_FAILED = 0x32  # daemon -> client: a SEND could not be carried out
    DIRECT_REPORT = 0x33  # client -> daemon: what it sent/received on direct sockets
    EVENT = 0x40  # daemon -> client: a membership event


class NameKind(enum.IntEnum):
    """What a NAME frame's text is."""

    GROUP = 1  # a canonical ham: URI
    SOURCE = 2  # a source as its technology writes it
    TEXT = 3  # any other text an event carries (an interface status)


#: ``length:u32 type:u8``
FRAME_HEADER: Final = struct.Struct("<IB")
#: frame header + ``sock:u32 group:u32``, then the payload
SEND_HEADER: Final = struct.Struct("<IBII")
#: frame header + ``sock:u32 group:u32 source:u32 interface:u32``, then the payload
DATA_HEADER: Final = struct.Struct("<IBIIII")
#: frame header + ``request_id:u32 op:u8``, then the arguments
REQUEST_HEADER: Final = struct.Struct("<IBIB")
#: frame header + ``request_id:u32 status:u16``, then results or an error text
RESPONSE_HEADER: Final = struct.Struct("<IBIH")
#: frame header + ``id:u32 kind:u8``, then the UTF-8 text
NAME_HEADER: Final = struct.Struct("<IBIB")
#: body of an EVENT frame: ``sock:u32 kind:u8 group:u32 interface:u32 source:u32``
EVENT_BODY: Final = struct.Struct("<IBIII")

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_INTS: Final = {"B": _U8, "H": _U16, "I": _U32, "Q": _U64}


class FrameReader:
    """Splits a byte stream into frames.

    Feed it whatever the socket returned; it hands back the complete frames
    as ``(type, body)`` pairs, ``body`` a memoryview into immutable bytes
    (safe to keep). A length of zero or above ``max_frame`` raises
    :class:`ProtocolError` before anything of that frame is buffered, so a
    peer cannot make the reader hold more than one ``max_frame``.
    """

    __slots__ = ("_need", "_pending", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._pending = bytearray()
        # Bytes the pending partial frame needs before it is worth parsing.
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes held of an incomplete frame."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, memoryview]]:
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return []
            data = bytes(self._pending)
            self._pending = bytearray()
        elif type(data) is not bytes:
            # Bodies must outlive the caller's (possibly reused) read buffer.
            data = bytes(data)
        view = memoryview(data)
        end = len(view)
        pos = 0
        frames: list[tuple[int, memoryview]] = []
        unpack = FRAME_HEADER.unpack_from
        max_frame = self.max_frame
        while end - pos >= 5:
            length, ftype = unpack(view, pos)
            if length == 0 or length > max_frame:
                raise ProtocolError(
                    f"frame length {length} at stream offset +{pos} is outside 1..{max_frame}"
                )
            stop = pos + 4 + length
            if stop > end:
                self._need = stop - pos
                break
            frames.append((ftype, view[pos + 5 : stop]))
            pos = stop
        else:
            self._need = 5
        if pos < end:
            self._pending = bytearray(view[pos:])
        return frames


# --- value codec -------------------------------------------------------------

Signature = str


def _parse(sig: str, pos: int, closing: str | None) -> tuple[list[Any], int]:
    fields: list[Any] = []
    while pos < len(sig):
        code = sig[pos]
        if code == "]":
            if closing != "]":
                raise ValueError(f"unbalanced ']' in signature {sig!r}")
            return fields, pos + 1
        if code == "[":
            inner, pos = _parse(sig, pos + 1, "]")
            if not inner:
                raise ValueError(f"empty list in signature {sig!r}")
            fields.append(inner)
            continue
        if code not in "BHIQS":
            raise ValueError(f"unknown code {code!r} in signature {sig!r}")
        fields.append(code)
        pos += 1
    if closing is not None:
        raise ValueError(f"missing ']' in signature {sig!r}")
    return fields, pos


_COMPILED: dict[str, list[Any]] = {}


def _compiled(sig: Signature) -> list[Any]:
    fields = _COMPILED.get(sig)
    if fields is None:
        fields = _COMPILED[sig] = _parse(sig, 0, None)[0]
    return fields


def _encode(fields: list[Any], values: Sequence[Any], out: bytearray) -> None:
    if len(values) != len(fields):
        raise ValueError(f"{len(fields)} values expected, got {len(values)}")
    for field, value in zip(fields, values, strict=True):
        if isinstance(field, list):
            if len(value) > 0xFFFF:
                raise ValueError("list longer than 65535 elements")
            out += _U16.pack(len(value))
            for element in value:
                _encode(field, element if len(field) > 1 else (element,), out)
        elif field == "S":
            raw = value.encode()
            if len(raw) > 0xFFFF:
                raise ValueError("string longer than 65535 bytes")
            out += _U16.pack(len(raw))
            out += raw
        else:
            out += _INTS[field].pack(int(value))


def encode_values(sig: Signature, values: Sequence[Any]) -> bytes:
    """Encode ``values`` by ``sig``. A one-field list's elements are given bare."""
    out = bytearray()
    _encode(_compiled(sig), values, out)
    return bytes(out)


def _decode(fields: list[Any], buf: memoryview, pos: int) -> tuple[list[Any], int]:
    values: list[Any] = []
    for field in fields:
        if isinstance(field, list):
            (count,) = _U16.unpack_from(buf, pos)
            pos += 2
            items: list[Any] = []
            for _ in range(count):
                element, pos = _decode(field, buf, pos)
                items.append(tuple(element) if len(field) > 1 else element[0])
            values.append(items)
        elif field == "S":
            (size,) = _U16.unpack_from(buf, pos)
            pos += 2
            if pos + size > len(buf):
                raise struct.error("string runs past the end")
            values.append(str(buf[pos : pos + size], "utf-8"))
            pos += size
        else:
            codec = _INTS[field]
            values.append(codec.unpack_from(buf, pos)[0])
            pos += codec.size
    return values, pos


def decode_values(sig: Signature, buf: memoryview | bytes) -> list[Any]:
    """Decode a whole buffer by ``sig``; anything malformed is a ProtocolError."""
    view = memoryview(buf)
    try:
        values, pos = _decode(_compiled(sig), view, 0)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed values for signature {sig!r}: {exc}") from None
    if pos != len(view):
        raise ProtocolError(f"{len(view) - pos} bytes left over after signature {sig!r}")
    return values
