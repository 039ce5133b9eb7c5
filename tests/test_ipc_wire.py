"""Tests for hamcast.ipc.wire: the frame reader and the value codec (docs/ipc.md §3, §6)."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.errors import ProtocolError
from hamcast.ipc.ops import OPS
from hamcast.ipc.wire import (
    DEFAULT_MAX_FRAME,
    FRAME_HEADER,
    FrameReader,
    decode_values,
    encode_values,
)

FAST = settings(max_examples=150, deadline=None)


def frame(ftype: int, body: bytes) -> bytes:
    """A frame as docs/ipc.md writes it, built without the code under test."""
    return struct.pack("<IB", len(body) + 1, ftype) + body


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def read_all(reader: FrameReader, pieces: list[bytes]) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    for piece in pieces:
        out.extend((t, bytes(b)) for t, b in reader.feed(piece))
    return out


frames_st = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=300)),
    max_size=12,
)


# --- FrameReader ---------------------------------------------------------------


def test_header_is_little_endian_length_then_type() -> None:
    assert FRAME_HEADER.pack(0x0102, 0x10) == bytes.fromhex("0201000010")
    [(ftype, body)] = FrameReader().feed(bytes.fromhex("0300000010abcd"))
    assert (ftype, bytes(body)) == (0x10, b"\xab\xcd")


def test_type_only_frame_has_an_empty_body() -> None:
    [(ftype, body)] = FrameReader().feed(b"\x01\x00\x00\x00\x7f")
    assert ftype == 0x7F
    assert bytes(body) == b""


@FAST
@given(frames=frames_st, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_any_chunking_yields_the_same_frames(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(frame(t, b) for t, b in frames)
    whole = read_all(FrameReader(), [stream])
    assert whole == frames
    reader = FrameReader()
    assert read_all(reader, chunks(stream, cuts)) == frames
    assert reader.buffered == 0


@FAST
@given(frames=frames_st, cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_buffered_is_exactly_the_incomplete_tail(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(frame(t, b) for t, b in frames)
    boundaries = [0]
    for t, b in frames:
        boundaries.append(boundaries[-1] + len(frame(t, b)))
    reader = FrameReader()
    fed = 0
    for piece in chunks(stream, cuts):
        reader.feed(piece)
        fed += len(piece)
        last_complete = max(x for x in boundaries if x <= fed)
        assert reader.buffered == fed - last_complete


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_accepts_every_buffer_type(kind: type) -> None:
    stream = frame(1, b"abc") + frame(2, b"")
    reader = FrameReader()
    got = read_all(reader, [kind(stream[:6]), kind(stream[6:])])
    assert got == [(1, b"abc"), (2, b"")]


def test_bodies_stay_valid_after_later_feeds() -> None:
    reader = FrameReader()
    [(_, first)] = reader.feed(frame(1, b"first"))
    reader.feed(frame(2, b"second")[:3])
    reader.feed(frame(2, b"second")[3:])
    assert bytes(first) == b"first"


def test_bodies_survive_reuse_of_the_fed_buffer() -> None:
    buffer = bytearray(frame(1, b"hello"))
    [(_, body)] = FrameReader().feed(buffer)
    buffer[5:10] = b"XXXXX"
    assert bytes(body) == b"hello"


@pytest.mark.parametrize("length", [0, 65, 0xFFFFFFFF])
def test_bad_length_raises_on_the_header_alone(length: int) -> None:
    reader = FrameReader(max_frame=64)
    with pytest.raises(ProtocolError, match=r"outside 1\.\.64"):
        reader.feed(struct.pack("<IB", length, 1))
    assert reader.buffered == 0


def test_length_equal_to_max_frame_is_accepted() -> None:
    reader = FrameReader(max_frame=64)
    assert read_all(reader, [frame(9, bytes(63))]) == [(9, bytes(63))]
    with pytest.raises(ProtocolError):
        reader.feed(frame(9, bytes(64)))


@FAST
@given(
    good=frames_st,
    bad_length=st.one_of(st.just(0), st.integers(1025, 0xFFFFFFFF)),
    cuts=st.lists(st.integers(0, 10_000), max_size=10),
)
def test_bad_length_after_good_frames_raises_without_buffering(
    good: list[tuple[int, bytes]], bad_length: int, cuts: list[int]
) -> None:
    prefix = b"".join(frame(t, b) for t, b in good)
    # The garbage "body" after the bad header must never be waited for.
    stream = prefix + struct.pack("<IB", bad_length, 0x10) + bytes(50)
    reader = FrameReader(max_frame=1024)
    seen: list[tuple[int, bytes]] = []
    fed = 0
    with pytest.raises(ProtocolError):
        for piece in chunks(stream, cuts):
            seen.extend((t, bytes(b)) for t, b in reader.feed(piece))
            fed += len(piece)
            assert fed < len(prefix) + 5, "the bad header was complete but not rejected"
    assert reader.buffered == 0
    assert seen == good[: len(seen)]


@FAST
@given(data=st.lists(st.binary(min_size=1, max_size=400), max_size=30))
def test_buffered_never_exceeds_one_frame(data: list[bytes]) -> None:
    max_frame = 256
    reader = FrameReader(max_frame=max_frame)
    try:
        for piece in data:
            reader.feed(piece)
            assert reader.buffered <= 4 + max_frame - 1
    except ProtocolError:
        assert reader.buffered == 0


def test_default_max_frame_fits_a_mebibyte_message() -> None:
    assert DEFAULT_MAX_FRAME == 1_049_600
    # DATA: type + 16 bytes of ids + payload; SEND: type + 8 + payload.
    assert DEFAULT_MAX_FRAME >= 1 + 16 + (1 << 20)


# --- value codec -----------------------------------------------------------------


def _parse(sig: str, pos: int = 0) -> tuple[list[Any], int]:
    """The signature grammar of docs/ipc.md, parsed independently of the code."""
    fields: list[Any] = []
    while pos < len(sig) and sig[pos] != "]":
        if sig[pos] == "[":
            inner, pos = _parse(sig, pos + 1)
            assert sig[pos] == "]"
            fields.append(inner)
        else:
            fields.append(sig[pos])
        pos += 1
    return fields, pos


_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
_INT_ST = {
    "B": st.integers(0, 0xFF),
    "H": st.integers(0, 0xFFFF),
    "I": st.integers(0, 0xFFFFFFFF),
    "Q": st.integers(0, 0xFFFFFFFFFFFFFFFF),
    "S": _TEXT,
}


def _field_st(field: Any) -> st.SearchStrategy[Any]:
    if isinstance(field, list):
        element = (
            _field_st(field[0]) if len(field) == 1 else st.tuples(*(_field_st(f) for f in field))
        )
        return st.lists(element, max_size=4)
    return _INT_ST[field]


def values_for(sig: str) -> st.SearchStrategy[list[Any]]:
    fields, _ = _parse(sig)
    return st.tuples(*(_field_st(f) for f in fields)).map(list)


SIGNATURES = sorted(
    {spec.args for spec in OPS.values()}
    | {spec.results for spec in OPS.values()}
    | {"B", "H", "Q", "SS", "[[B]S]", "[I[S[H]]]Q", "[[[Q]]]"}
)


@st.composite
def sig_and_values(draw: st.DrawFn) -> tuple[str, list[Any]]:
    sig = draw(st.sampled_from(SIGNATURES))
    return sig, draw(values_for(sig))


def test_worked_example_from_the_docs() -> None:
    # SET_TTL arguments: socket 1, ttl 16, interfaces [1, 2]
    assert encode_values("IB[I]", [1, 16, [1, 2]]).hex() == "0100000010020001000000" + "02000000"
    # GROUP_SET results: a list of (group, role) records
    raw = encode_values("[SB]", [[("ham:opaque:a", 3)]])
    assert raw.hex() == "0100" + "0c00" + b"ham:opaque:a".hex() + "03"
    assert decode_values("[SB]", raw) == [[("ham:opaque:a", 3)]]


def test_integers_are_little_endian_unsigned() -> None:
    raw = encode_values("BHIQ", [0xAB, 0x0102, 0x01020304, 0x0102030405060708])
    assert raw.hex() == "ab" + "0201" + "04030201" + "0807060504030201"


def test_strings_are_utf8_with_a_byte_count() -> None:
    assert encode_values("S", ["é"]) == b"\x02\x00\xc3\xa9"
    assert encode_values("S", [""]) == b"\x00\x00"


def test_empty_signature_is_an_empty_buffer() -> None:
    assert encode_values("", []) == b""
    assert decode_values("", b"") == []
    with pytest.raises(ProtocolError):
        decode_values("", b"\x00")


@FAST
@given(case=sig_and_values())
def test_round_trip(case: tuple[str, list[Any]]) -> None:
    sig, values = case
    assert decode_values(sig, encode_values(sig, values)) == values


@FAST
@given(case=sig_and_values(), data=st.data())
def test_truncated_buffers_are_protocol_errors(case: tuple[str, list[Any]], data: Any) -> None:
    sig, values = case
    raw = encode_values(sig, values)
    if not raw:
        return
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(ProtocolError):
        decode_values(sig, raw[:cut])


@FAST
@given(case=sig_and_values(), extra=st.binary(min_size=1, max_size=8))
def test_extended_buffers_are_protocol_errors(case: tuple[str, list[Any]], extra: bytes) -> None:
    sig, values = case
    with pytest.raises(ProtocolError, match="left over"):
        decode_values(sig, encode_values(sig, values) + extra)


@settings(max_examples=300, deadline=None)
@given(sig=st.sampled_from(SIGNATURES), raw=st.binary(max_size=64))
def test_random_bytes_decode_or_raise_protocol_error(sig: str, raw: bytes) -> None:
    try:
        values = decode_values(sig, raw)
    except ProtocolError:
        return
    # Whatever decodes re-encodes to the same bytes: the encoding is canonical.
    assert encode_values(sig, values) == raw


def test_invalid_utf8_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_values("S", b"\x02\x00\xc3\x28")


def test_list_count_beyond_the_buffer_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_values("[I]", b"\xff\xff" + bytes(8))


@pytest.mark.parametrize("sig", ["[", "]", "[]", "I]", "[I", "X", "i"])
def test_bad_signatures_are_local_value_errors(sig: str) -> None:
    with pytest.raises(ValueError, match="signature"):
        encode_values(sig, [])


def test_encoder_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="65535"):
        encode_values("S", ["x" * 0x10000])
    with pytest.raises(ValueError, match="65535"):
        encode_values("[B]", [[0] * 0x10000])
    with pytest.raises(ValueError, match="values expected"):
        encode_values("II", [1])
    assert len(encode_values("S", ["x" * 0xFFFF])) == 2 + 0xFFFF
