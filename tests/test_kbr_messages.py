"""The KBR wire format: byte layout, round trips, and every validation rule."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.errors import ProtocolError, UsageError
from hamcast.overlay.ids import ID_SPACE, NodeHandle
from hamcast.overlay.kbr import KbrConfig
from hamcast.overlay.kbr.messages import (
    VERSION,
    Announce,
    CompactDatagram,
    Datagram,
    Direct,
    DirectData,
    Join,
    JoinReply,
    LeafSet,
    LeafSetRequest,
    Leave,
    Message,
    MessageType,
    Ping,
    Pong,
    Route,
    RouteData,
    RowRequest,
    Rows,
    UnsupportedVersion,
    WireCodec,
    encode_handle,
)

CONFIG = KbrConfig(max_payload=1000)
CODEC = WireCodec(
    rows=CONFIG.rows,
    columns=CONFIG.columns,
    leaf_set_size=CONFIG.leaf_set_size,
    max_payload=CONFIG.max_payload,
    max_hops=CONFIG.max_hops,
    max_rows_per_message=CONFIG.max_rows_per_message,
)
A = NodeHandle(0x0123456789ABCDEF0123456789ABCDEF, ("192.0.2.1", 4000))
B = NodeHandle(0xFEDCBA9876543210FEDCBA9876543210, ("2001:db8::7", 65535))
SENDER = encode_handle(A)


def test_handle_layout_ipv4_and_ipv6() -> None:
    assert encode_handle(A) == (
        bytes.fromhex("0123456789abcdef0123456789abcdef") + b"\x04" + bytes([192, 0, 2, 1])
    ) + struct.pack("!H", 4000)
    encoded = encode_handle(B)
    assert len(encoded) == 35
    assert encoded[16] == 6
    assert encoded[17:33] == bytes.fromhex("20010db8000000000000000000000007")
    assert encoded[33:] == b"\xff\xff"


def test_ping_is_byte_exact() -> None:
    data = CODEC.encode(SENDER, True, Ping(1.5))
    assert data == bytes([VERSION, 0x01, 0x01]) + SENDER + struct.pack("!d", 1.5) + b"\x00"
    assert data[0] == 0xB2


def test_route_is_byte_exact() -> None:
    data = CODEC.encode(SENDER, False, Route(5, 3, True, B, b"xyz"))
    expected = (
        bytes([0xB2, 0x0A, 0x00])
        + SENDER
        + bytes([0x01, 3])
        + (5).to_bytes(16, "big")
        + encode_handle(B)
        + b"\x00\x00\x00\x03xyz"
    )
    assert data == expected


def test_rows_and_join_reply_layout() -> None:
    data = CODEC.encode(SENDER, True, JoinReply(((0, (B,)), (2, ())), (A, B)))
    body = data[3 + len(SENDER) :]
    handle_b = encode_handle(B)
    assert body == (
        b"\x02" + b"\x00\x01" + handle_b + b"\x02\x00" + b"\x02" + encode_handle(A) + handle_b
    )


ALL_MESSAGES: list[Message] = [
    Ping(0.0),
    Ping(12345.678, (A, B)),
    Pong(-1.25),
    Join(0, 0, B),
    Join(7, 3, A),
    Rows(((0, (A, B)), (5, ()), (31, (B,)))),
    JoinReply((), ()),
    JoinReply(((1, (A,)),), (B, A)),
    Announce((A,)),
    LeafSetRequest(),
    LeafSet(()),
    LeafSet((B,)),
    RowRequest(31),
    Route(ID_SPACE - 1, 1, False, A, b""),
    Route(0, 64, True, B, b"\x00" * 1000),
    Direct(b"hello"),
    Direct(b""),
    Leave((A, B)),
    DirectData(b""),
    DirectData(b"\x00" * 1000),
    RouteData(ID_SPACE - 1, 1, A, b""),
    RouteData(5, 64, B, b"xyz"),
]


def _sender_of(datagram: Datagram | CompactDatagram) -> int:
    return datagram.sender_id if isinstance(datagram, CompactDatagram) else datagram.sender.id


@pytest.mark.parametrize("message", ALL_MESSAGES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("member", [False, True])
def test_round_trip(message: Message, member: bool) -> None:
    datagram = CODEC.decode(CODEC.encode(encode_handle(B), member, message))
    assert _sender_of(datagram) == B.id
    assert datagram.member is member
    assert datagram.message == message


def test_compact_data_is_byte_exact() -> None:
    data = CODEC.encode(SENDER, True, DirectData(b"xyz"))
    assert data == bytes([0xB2, 0x0D, 0x01]) + A.id.to_bytes(16, "big") + b"xyz"
    assert len(data) - 3 == 19


def test_compact_route_is_byte_exact() -> None:
    data = CODEC.encode(SENDER, True, RouteData(5, 3, B, b"xyz"))
    expected = (
        bytes([0xB2, 0x0E, 0x01])
        + A.id.to_bytes(16, "big")
        + bytes([3])
        + (5).to_bytes(16, "big")
        + encode_handle(B)
        + b"xyz"
    )
    assert data == expected
    # 59 bytes of header with an IPv4 origin.
    assert len(CODEC.encode(SENDER, True, RouteData(5, 3, A, b""))) == 59


def test_version_1_datagrams_are_refused_as_such() -> None:
    v1 = _with(_valid(Pong(1.0)), 0, 0xB1)
    with pytest.raises(UnsupportedVersion, match="version-1"):
        CODEC.decode(v1)
    with pytest.raises(UnsupportedVersion):
        CODEC.decode(_with(_valid(DirectData(b"x")), 0, 0xB1))


def test_every_type_has_a_round_trip_case() -> None:
    assert {m.TYPE for m in ALL_MESSAGES} == set(MessageType)


def _valid(message: Message) -> bytes:
    return CODEC.encode(SENDER, True, message)


def _with(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes([value]) + data[index + 1 :]


HEADER = 3 + len(SENDER)
BAD = {
    "empty": b"",
    "short header": _valid(Pong(1.0))[:20],
    "bad version": _with(_valid(Pong(1.0)), 0, 0xB3),
    "version 1": _with(_valid(Pong(1.0)), 0, 0xB1),
    "short compact data": _valid(DirectData(b""))[:-1],
    "compact data flags": _with(_valid(DirectData(b"")), 2, 0x03),
    "compact data over max": _valid(DirectData(b"x" * 1001)),
    "compact route zero hops": _valid(RouteData(1, 0, A, b"")),
    "compact route hops over limit": _valid(RouteData(1, 65, A, b"")),
    "compact route truncated key": _valid(RouteData(1, 1, A, b""))[:30],
    "compact route truncated origin": _valid(RouteData(1, 1, A, b""))[:-3],
    "compact route bad family": _with(_valid(RouteData(1, 1, A, b"")), 36 + 16, 5),
    "compact route over max": _valid(RouteData(1, 1, A, b"x" * 1001)),
    "unknown type": _with(_valid(Pong(1.0)), 1, 0x7F),
    "type zero": _with(_valid(Pong(1.0)), 1, 0x00),
    "unknown flags": _with(_valid(Pong(1.0)), 2, 0x02),
    "bad family": _with(_valid(Pong(1.0)), 3 + 16, 5),
    "port zero": _valid(Pong(1.0))[: HEADER - 2] + b"\x00\x00" + _valid(Pong(1.0))[HEADER:],
    "truncated pong": _valid(Pong(1.0))[:-1],
    "trailing byte": _valid(Pong(1.0)) + b"\x00",
    "nan timestamp": _valid(Pong(1.0))[:HEADER] + struct.pack("!d", math.nan),
    "inf timestamp": _valid(Pong(1.0))[:HEADER] + struct.pack("!d", math.inf),
    "ping without list count": _valid(Ping(1.0))[:-1],
    "too many leaves": _valid(Ping(1.0))[:-1] + bytes([17]) + encode_handle(A) * 17,
    "truncated leaf": _valid(Ping(1.0, (A,)))[:-3],
    "row request beyond rows": _valid(RowRequest(0))[:-1] + bytes([32]),
    "rows out of order": _valid(Rows(((3, ()), (2, ())))),
    "rows duplicated": _valid(Rows(((3, ()), (3, ())))),
    "row beyond rows": _valid(Rows(((32, ()),))),
    "row too long": _valid(Rows(((1, (A,) * 16),))),
    "too many rows": _valid(Rows(tuple((i, ()) for i in range(9)))),
    "join hops over limit": _valid(Join(65, 0, A)),
    "join next_row beyond": _valid(Join(1, 33, A)),
    "route zero hops": _valid(Route(1, 0, False, A, b"")),
    "route hops over limit": _valid(Route(1, 65, False, A, b"")),
    "route flags": _with(_valid(Route(1, 1, False, A, b"")), HEADER, 0x02),
    "route length short": _valid(Route(1, 1, False, A, b"abc"))[:-1],
    "route length long": _valid(Route(1, 1, False, A, b"abc")) + b"d",
    "payload over max": _valid(Direct(b"x" * 1001)),
    "leave truncated": _valid(Leave((A,)))[:-1],
    "leafset request with body": _valid(LeafSetRequest()) + b"\x00",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_datagrams_are_refused(name: str) -> None:
    with pytest.raises(ProtocolError):
        CODEC.decode(BAD[name])


@pytest.mark.parametrize(
    "handle",
    [
        NodeHandle(1, ("localhost", 4000)),
        NodeHandle(1, ("192.0.2.1", 0)),
        NodeHandle(1, ("192.0.2.1", 70000)),
        NodeHandle(ID_SPACE, ("192.0.2.1", 1)),
        NodeHandle(-1, ("192.0.2.1", 1)),
        NodeHandle(1, ("fe80::1%eth0", 1)),
    ],
)
def test_handles_that_cannot_go_on_the_wire(handle: NodeHandle) -> None:
    with pytest.raises(UsageError):
        encode_handle(handle)


def test_decoded_addresses_are_canonical() -> None:
    odd = NodeHandle(9, ("2001:0db8:0000::0001", 7))
    datagram = CODEC.decode(CODEC.encode(encode_handle(odd), True, Pong(0.0)))
    assert datagram.sender.address == ("2001:db8::1", 7)


ids = st.integers(min_value=0, max_value=ID_SPACE - 1)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda address: address.compressed)
handles = st.builds(
    NodeHandle, ids, st.tuples(st.one_of(ipv4, ipv6), st.integers(min_value=1, max_value=65535))
)
leaf_lists = st.lists(handles, max_size=16).map(tuple)
row_lists = st.lists(
    st.tuples(st.integers(0, 31), st.lists(handles, max_size=15).map(tuple)),
    max_size=8,
    unique_by=lambda row: row[0],
).map(lambda rows: tuple(sorted(rows)))
times = st.floats(allow_nan=False, allow_infinity=False)
payloads = st.binary(max_size=1000)
messages = st.one_of(
    st.builds(Ping, times, leaf_lists),
    st.builds(Pong, times),
    st.builds(Join, st.integers(0, 64), st.integers(0, 32), handles),
    st.builds(Rows, row_lists),
    st.builds(JoinReply, row_lists, leaf_lists),
    st.builds(Announce, leaf_lists),
    st.just(LeafSetRequest()),
    st.builds(LeafSet, leaf_lists),
    st.builds(RowRequest, st.integers(0, 31)),
    st.builds(Route, ids, st.integers(1, 64), st.booleans(), handles, payloads),
    st.builds(Direct, payloads),
    st.builds(Leave, leaf_lists),
)
compact_messages = st.one_of(
    st.builds(DirectData, payloads),
    st.builds(RouteData, ids, st.integers(1, 64), handles, payloads),
)


@settings(max_examples=300, deadline=None)
@given(sender=handles, member=st.booleans(), message=messages)
def test_any_message_round_trips(sender: NodeHandle, member: bool, message: Message) -> None:
    data = CODEC.encode(encode_handle(sender), member, message)
    assert len(data) <= CONFIG.max_datagram_size
    datagram = CODEC.decode(data)
    assert isinstance(datagram, Datagram)
    assert (datagram.sender, datagram.member, datagram.message) == (sender, member, message)


@settings(max_examples=300, deadline=None)
@given(sender=handles, member=st.booleans(), message=compact_messages)
def test_any_compact_message_round_trips(
    sender: NodeHandle, member: bool, message: DirectData | RouteData
) -> None:
    data = CODEC.encode(encode_handle(sender), member, message)
    datagram = CODEC.decode(data)
    assert isinstance(datagram, CompactDatagram)
    assert (datagram.sender_id, datagram.member, datagram.message) == (sender.id, member, message)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), kind=st.sampled_from([0x0D, 0x0E]))
def test_compact_garbage_decodes_or_is_refused(data: bytes, kind: int) -> None:
    raw = bytes([VERSION, kind]) + data
    try:
        datagram = CODEC.decode(raw)
    except ProtocolError:
        return
    # Whatever decodes encodes back to the same bytes.
    assert isinstance(datagram, CompactDatagram)
    again = CODEC.encode(datagram.sender_id.to_bytes(16, "big"), datagram.member, datagram.message)
    assert again == raw


@settings(max_examples=300, deadline=None)
@given(message=messages, cut=st.integers(min_value=1, max_value=50))
def test_any_truncation_is_refused(message: Message, cut: int) -> None:
    data = CODEC.encode(SENDER, True, message)
    if cut >= len(data):
        cut = len(data) - 1
    with pytest.raises(ProtocolError):
        CODEC.decode(data[:-cut])
