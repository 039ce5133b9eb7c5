"""Scribe wire format: byte-exact vectors (docs/technologies/overlay-scribe.md), garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.errors import ProtocolError, UsageError
from hamcast.overlay.ids import NodeHandle
from hamcast.overlay.scribe import canonical_group, group_key
from hamcast.overlay.scribe.messages import (
    Accept,
    Data,
    Heartbeat,
    Join,
    Leave,
    MalformedMessage,
    Multicast,
    Redirect,
    Refresh,
    data_overhead,
    decode,
    encode_accept,
    encode_data,
    encode_heartbeat,
    encode_join,
    encode_leave,
    encode_multicast,
    encode_redirect,
    encode_refresh,
    pack_path,
    path_contains,
    restamp,
    unpack_path,
)

KEY = int.from_bytes(bytes(range(1, 17)), "big")
KEY_BYTES = bytes(range(1, 17))
V4 = NodeHandle(0xAB, ("192.0.2.1", 7000))
V4_BYTES = bytes(15) + b"\xab" + b"\x04" + bytes([192, 0, 2, 1]) + b"\x1b\x58"
V6 = NodeHandle(1 << 127, ("2001:db8::1", 443))
V6_BYTES = (
    b"\x80" + bytes(15) + b"\x06" + bytes.fromhex("20010db8000000000000000000000001") + b"\x01\xbb"
)
NAME = "ham:opaque:news"


def pack(*ids: int) -> bytes:
    return pack_path(ids)


def test_leave_is_the_bare_header() -> None:
    assert encode_leave(KEY) == b"\x53\x02\x04" + KEY_BYTES
    assert decode(encode_leave(KEY)) == Leave(KEY)


def test_refresh_vector() -> None:
    assert encode_refresh(KEY, 3) == b"\x53\x02\x06" + KEY_BYTES + b"\x03"
    assert encode_refresh(KEY, 1000) == b"\x53\x02\x06" + KEY_BYTES + b"\xff"
    assert decode(encode_refresh(KEY, 3)) == Refresh(KEY, 3)


def test_join_vector() -> None:
    raw = encode_join(KEY, NAME.encode(), V4, 2)
    assert raw == b"\x53\x02\x01" + KEY_BYTES + b"\x02" + V4_BYTES + b"\x00\x0f" + NAME.encode()
    assert decode(raw) == Join(KEY, NAME, V4, 2)


def test_accept_and_heartbeat_vectors() -> None:
    ids = (1).to_bytes(16, "big") + (2).to_bytes(16, "big")
    assert pack(1, 2) == ids
    assert unpack_path(ids) == (1, 2)
    assert encode_accept(KEY, True, ids) == b"\x53\x02\x02" + KEY_BYTES + b"\x01\x02" + ids
    assert encode_heartbeat(KEY, False, ids) == b"\x53\x02\x05" + KEY_BYTES + b"\x00\x02" + ids
    assert decode(encode_accept(KEY, True, ids)) == Accept(KEY, True, ids)
    assert decode(encode_heartbeat(KEY, False, ids)) == Heartbeat(KEY, False, ids)


def test_path_contains_only_whole_aligned_ids() -> None:
    path = pack(0x0102, 0x0304)
    assert path_contains(path, 0x0102) and path_contains(path, 0x0304)
    assert not path_contains(path, 0x0203)
    # An id whose bytes straddle two entries is not in the path.
    straddle = int.from_bytes(path[8:24], "big")
    assert not path_contains(path, straddle)
    assert not path_contains(b"", 1)


def test_redirect_vector_with_ipv6() -> None:
    raw = encode_redirect(KEY, 3, V6)
    assert raw == b"\x53\x02\x03" + KEY_BYTES + b"\x03" + V6_BYTES
    assert decode(raw) == Redirect(KEY, 3, V6)


def test_data_vector_and_restamp() -> None:
    raw = encode_data(KEY, V4, 7, b"hello", hops=1)
    fixed = b"\x01" + (7).to_bytes(8, "big")
    assert raw == b"\x53\x02\x08" + KEY_BYTES + fixed + V4_BYTES + b"hello"
    assert decode(raw) == Data(KEY, V4, 7, 1, b"hello")
    assert len(raw) == data_overhead(V4) + 5 == 51 + 5
    assert data_overhead(V6) == 63
    tree = restamp(raw, 3)
    assert tree[2] == 8 and tree[19] == 3
    assert decode(tree) == Data(KEY, V4, 7, 3, b"hello")
    assert decode(restamp(raw, 999)).hops == 255  # type: ignore[union-attr]


def test_multicast_vector() -> None:
    raw = encode_multicast(5, b"hi")
    assert raw == bytes.fromhex("53 02 07 00 00 00 00 00 00 00 05 68 69")
    assert decode(raw) == Multicast(5, b"hi")
    assert decode(encode_multicast(2**64 - 1, b"")) == Multicast(2**64 - 1, b"")


def test_version_1_data_is_refused() -> None:
    # A version-1 DATA: hops, sequence, source, name, payload after the full header.
    v1 = (
        b"\x53\x01\x08"
        + KEY_BYTES
        + b"\x01"
        + (7).to_bytes(8, "big")
        + V4_BYTES
        + b"\x00\x0f"
        + NAME.encode()
        + b"hello"
    )
    with pytest.raises(MalformedMessage, match="unknown version 1"):
        decode(v1)


def test_empty_payload_is_a_message() -> None:
    raw = encode_data(KEY, V6, 1, b"")
    assert decode(raw).payload == b""  # type: ignore[union-attr]
    assert decode(encode_multicast(1, b"")).payload == b""  # type: ignore[union-attr]


def test_encoding_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(UsageError):
        encode_join(KEY, NAME.encode(), NodeHandle(1, ("host.example", 7000)), 0)
    with pytest.raises(UsageError):
        encode_join(KEY, NAME.encode(), NodeHandle(1, ("192.0.2.1", 0)), 0)
    with pytest.raises(UsageError):
        encode_join(KEY, b"", V4, 0)
    with pytest.raises(UsageError):
        encode_accept(KEY, True, pack())
    with pytest.raises(UsageError):
        encode_heartbeat(KEY, True, pack(*range(256)))


def _valid_messages() -> list[bytes]:
    return [
        encode_join(KEY, NAME.encode(), V4, 0),
        encode_accept(KEY, True, pack(1, 2, 3)),
        encode_heartbeat(
            KEY,
            False,
            pack(
                9,
            ),
        ),
        encode_redirect(KEY, 1, V6),
        encode_leave(KEY),
        encode_refresh(KEY, 2),
        encode_multicast(1, b"payload"),
        encode_data(KEY, V6, 1, b"payload"),
        encode_data(KEY, V4, 2, b""),
    ]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "shorter than a header"),
        (b"\x54\x01\x04" + KEY_BYTES, "bad magic"),
        (b"\x53\x01\x04" + KEY_BYTES, "unknown version 1"),
        (b"\x53\x03\x04" + KEY_BYTES, "unknown version"),
        (b"\x53\x01\x07" + bytes(8) + b"x", "unknown version 1"),
        (b"\x53\x02\x07" + bytes(7), "truncated multicast"),
        (b"\x53\x02\x08" + KEY_BYTES[:10], "shorter than a header"),
        (b"\x53\x02\x09" + KEY_BYTES, "unknown type"),
        (b"\x53\x02\x00" + KEY_BYTES, "unknown type"),
        (encode_leave(KEY) + b"\x00", "trailing"),
        (b"\x53\x02\x06" + KEY_BYTES, "REFRESH has 20 bytes"),
        (encode_refresh(KEY, 1) + b"\x00", "REFRESH has 20 bytes"),
        (
            encode_accept(
                KEY,
                True,
                pack(
                    1,
                ),
            )[:-1],
            "do not hold a path",
        ),
        (b"\x53\x02\x02" + KEY_BYTES + b"\x01\x00", "empty path"),
        (b"\x53\x02\x05" + KEY_BYTES + b"\x02\x01" + bytes(16), "unknown flags"),
        (b"\x53\x02\x01" + KEY_BYTES + b"\x00" + V4_BYTES[:-1], "truncated node handle"),
        (b"\x53\x02\x03" + KEY_BYTES + b"\x00" + bytes(16) + b"\x05", "address family 5"),
        (b"\x53\x02\x03" + KEY_BYTES + b"\x00" + V4_BYTES[:-2] + b"\x00\x00", "port 0"),
        (b"\x53\x02\x01" + KEY_BYTES + b"\x00" + V4_BYTES + b"\x00\x00", "name length 0"),
        (b"\x53\x02\x01" + KEY_BYTES + b"\x00" + V4_BYTES + b"\x00\x05abc", "truncated name"),
        (b"\x53\x02\x01" + KEY_BYTES + b"\x00" + V4_BYTES + b"\x00\x02\xff\xfe", "not UTF-8"),
        (b"\x53\x02\x01" + KEY_BYTES + b"\x00" + V4_BYTES + b"\x10\x01", "name length 4097"),
        (b"\x53\x02\x08" + KEY_BYTES + b"\x00" * 5, "truncated data header"),
    ],
)
def test_malformed_vectors(raw: bytes, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        decode(raw)
    assert issubclass(MalformedMessage, ProtocolError)


def test_every_truncation_of_a_valid_message_is_refused() -> None:
    for raw in _valid_messages():
        last = len(raw) - 1
        if decode(raw).__class__ in (Data, Multicast):
            # Data ends with the payload: only cuts into the fixed fields fail.
            last = len(raw) - len(decode(raw).payload) - 1  # type: ignore[union-attr]
        for cut in range(last + 1):
            with pytest.raises(MalformedMessage):
                decode(raw[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_raises_anything_else(raw: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        decode(raw)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_valid_messages()),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
)
def test_decode_of_mutated_messages_never_raises_anything_else(
    raw: bytes, flips: list[tuple[int, int]]
) -> None:
    mutated = bytearray(raw)
    for position, value in flips:
        if position < len(mutated):
            mutated[position] = value
    with contextlib.suppress(MalformedMessage):
        decode(bytes(mutated))


def test_group_key_accepts_only_canonical_names() -> None:
    name, key = canonical_group("HAM:opaque:news")
    assert name == NAME
    assert group_key(NAME) == key
    assert group_key("HAM:opaque:news") is None  # not canonical: refused, not rewritten
    assert group_key("ham:opaque:news/alg;secret") is None  # credentials never travel
    assert group_key("not a uri") is None
