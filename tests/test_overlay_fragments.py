"""Fragmentation and reassembly of overlay datagrams, on a virtual clock. No I/O, no sleeps."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.errors import MessageTooLongError, UsageError
from hamcast.overlay.fragments import (
    FRAGMENT_HEADER_SIZE,
    TAG_FRAGMENT,
    TAG_WHOLE,
    FragmentConfig,
    Fragmenter,
    Reassembler,
)
from hamcast.overlay.ids import Address

SOURCE: Address = ("192.0.2.1", 4711)
OTHER: Address = ("2001:db8::2", 4711)
CONFIG = FragmentConfig()
MAX = CONFIG.max_message_size
CHUNK = CONFIG.fragment_data_size


def fragment_frame(message_id: int, index: int, count: int, total: int, data: bytes) -> bytes:
    """A fragment frame built by hand from the documented layout."""
    return struct.pack("!BIHHI", TAG_FRAGMENT, message_id, index, count, total) + data


def deliver_all(
    reassembler: Reassembler, frames: list[bytes], source: Address = SOURCE, now: float = 0.0
) -> list[bytes]:
    """Feed ``frames``; the datagrams that came out."""
    out = []
    for frame in frames:
        message = reassembler.receive(frame, source, now)
        if message is not None:
            out.append(message)
    return out


def assert_bounded(reassembler: Reassembler) -> None:
    config = reassembler.config
    assert 0 <= reassembler.buffered_bytes <= config.max_buffered_bytes
    assert 0 <= reassembler.incomplete <= config.max_incomplete


# --- the wire format -------------------------------------------------------------


def test_wire_constants_are_the_documented_ones() -> None:
    assert TAG_WHOLE == 0xB2
    assert TAG_FRAGMENT == 0xB3
    assert FRAGMENT_HEADER_SIZE == 13


def test_small_datagram_is_one_frame_with_a_one_byte_header() -> None:
    fragmenter = Fragmenter(first_message_id=7)
    assert fragmenter.fragment(b"hello") == [b"\xb2hello"]
    assert fragmenter.fragment(b"") == [b"\xb2"]
    # Whole frames spend no message id.
    assert fragmenter.next_message_id == 7


def test_largest_whole_frame_fills_the_mtu_exactly() -> None:
    fragmenter = Fragmenter(first_message_id=0)
    [frame] = fragmenter.fragment(bytes(CONFIG.mtu_payload - 1))
    assert len(frame) == CONFIG.mtu_payload
    frames = fragmenter.fragment(bytes(CONFIG.mtu_payload))
    assert len(frames) == 2


def test_fragment_frames_byte_exact() -> None:
    # 7 data bytes per fragment.
    config = FragmentConfig(mtu_payload=20, max_message_size=1000, max_fragments=200)
    data = bytes(range(20))
    frames = Fragmenter(config, first_message_id=0x01020304).fragment(data)
    # 20 bytes in ceil(20 / 7) = 3 fragments: [0, 6), [6, 13), [13, 20).
    assert frames == [
        b"\xb3\x01\x02\x03\x04\x00\x00\x00\x03\x00\x00\x00\x14" + data[0:6],
        b"\xb3\x01\x02\x03\x04\x00\x01\x00\x03\x00\x00\x00\x14" + data[6:13],
        b"\xb3\x01\x02\x03\x04\x00\x02\x00\x03\x00\x00\x00\x14" + data[13:20],
    ]


@pytest.mark.parametrize("size", [CONFIG.mtu_payload, 10_000, 60_000, MAX])
def test_fragments_fit_the_mtu_and_are_as_few_as_possible(size: int) -> None:
    frames = Fragmenter(first_message_id=0).fragment(bytes(size))
    assert all(len(frame) <= CONFIG.mtu_payload for frame in frames)
    assert len(frames) == -(-size // CHUNK) == CONFIG.fragments_for(size)
    sizes = {len(frame) - FRAGMENT_HEADER_SIZE for frame in frames}
    assert max(sizes) - min(sizes) <= 1


def test_message_ids_count_up_and_wrap() -> None:
    fragmenter = Fragmenter(first_message_id=0xFFFFFFFF)
    big = bytes(5000)
    ids = [struct.unpack_from("!I", fragmenter.fragment(big)[0], 1)[0] for _ in range(3)]
    assert ids == [0xFFFFFFFF, 0, 1]


def test_random_first_message_id_by_default() -> None:
    ids = {Fragmenter().next_message_id for _ in range(8)}
    assert len(ids) > 1


def test_oversized_datagram_is_refused_when_sending() -> None:
    with pytest.raises(MessageTooLongError):
        Fragmenter().fragment(bytes(MAX + 1))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mtu_payload": 13},
        {"mtu_payload": 70_000},
        {"max_message_size": -1},
        {"max_fragments": 1},
        {"mtu_payload": 100, "max_fragments": 10},
        {"reassembly_timeout": 0},
        {"max_buffered_bytes": 1000},
        {"max_incomplete": 0},
        {"max_incomplete_per_source": 0},
        {"max_completed_remembered": 0},
    ],
)
def test_bad_configuration_is_a_usage_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        FragmentConfig(**kwargs)


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, CONFIG.mtu_payload - 1, CONFIG.mtu_payload, CHUNK * 2, CHUNK * 2 + 1, 60_000, MAX],
)
def test_round_trip_at_the_edges(size: int) -> None:
    data = random.Random(size).randbytes(size)
    frames = Fragmenter().fragment(data)
    random.Random(size + 1).shuffle(frames)
    reassembler = Reassembler()
    assert deliver_all(reassembler, frames) == [data]
    assert reassembler.incomplete == 0
    assert reassembler.buffered_bytes == 0


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=MAX),
    seed=st.integers(min_value=0, max_value=2**32),
    first_id=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_round_trip_any_size_any_order(size: int, seed: int, first_id: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    frames = Fragmenter(first_message_id=first_id).fragment(data)
    rng.shuffle(frames)
    reassembler = Reassembler()
    assert deliver_all(reassembler, frames) == [data]
    assert reassembler.buffered_bytes == 0


@settings(max_examples=50, deadline=None)
@given(
    mtu=st.integers(min_value=FRAGMENT_HEADER_SIZE + 1, max_value=3000),
    size=st.integers(min_value=0, max_value=20_000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_round_trip_any_mtu(mtu: int, size: int, seed: int) -> None:
    config = FragmentConfig(
        mtu_payload=mtu, max_message_size=20_000, max_fragments=20_000, max_buffered_bytes=10**7
    )
    rng = random.Random(seed)
    data = rng.randbytes(size)
    frames = Fragmenter(config).fragment(data)
    assert all(len(frame) <= mtu for frame in frames)
    rng.shuffle(frames)
    assert deliver_all(Reassembler(config), frames) == [data]


def test_interleaved_messages_and_sources_with_equal_ids() -> None:
    rng = random.Random(3)
    a1, a2, b1 = rng.randbytes(5000), rng.randbytes(7000), rng.randbytes(3000)
    sender_a = Fragmenter(first_message_id=9)
    sender_b = Fragmenter(first_message_id=9)  # same ids as A: keyed by source too
    tagged = [(SOURCE, f) for f in sender_a.fragment(a1) + sender_a.fragment(a2)]
    tagged += [(OTHER, f) for f in sender_b.fragment(b1)]
    rng.shuffle(tagged)
    reassembler = Reassembler()
    got: dict[Address, list[bytes]] = {}
    for source, frame in tagged:
        message = reassembler.receive(frame, source, 0.0)
        if message is not None:
            got.setdefault(source, []).append(message)
    assert sorted(got[SOURCE]) == sorted([a1, a2])
    assert got[OTHER] == [b1]


# --- loss, duplication, timeouts -------------------------------------------------


def test_lost_fragment_times_out_and_frees_memory() -> None:
    config = FragmentConfig(reassembly_timeout=2.0)
    frames = Fragmenter(config).fragment(bytes(10_000))
    reassembler = Reassembler(config)
    assert reassembler.get_timer() is None
    assert deliver_all(reassembler, frames[:-1], now=10.0) == []
    assert reassembler.incomplete == 1
    assert reassembler.buffered_bytes > 9000
    assert reassembler.get_timer() == 12.0
    # Later fragments do not extend the deadline.
    reassembler.receive(frames[0], SOURCE, 11.0)
    assert reassembler.get_timer() == 12.0
    reassembler.handle_timer(11.999)
    assert reassembler.incomplete == 1
    reassembler.handle_timer(12.0)
    assert reassembler.incomplete == 0
    assert reassembler.buffered_bytes == 0
    assert reassembler.get_timer() is None
    assert reassembler.stats.timed_out == 1
    # The missing fragment arriving late starts a new message, which times out too.
    assert reassembler.receive(frames[-1], SOURCE, 12.5) is None
    reassembler.handle_timer(14.5)
    assert reassembler.stats.timed_out == 2
    assert reassembler.buffered_bytes == 0


def test_timeouts_expire_in_order() -> None:
    config = FragmentConfig(reassembly_timeout=1.0)
    fragmenter = Fragmenter(config)
    reassembler = Reassembler(config)
    for step in range(5):
        reassembler.receive(fragmenter.fragment(bytes(3000))[0], SOURCE, step / 2)
    assert reassembler.get_timer() == 1.0
    reassembler.handle_timer(2.0)
    assert reassembler.incomplete == 2
    assert reassembler.get_timer() == 2.5


def test_clock_going_back_does_not_shorten_or_confuse_deadlines() -> None:
    config = FragmentConfig(reassembly_timeout=1.0)
    fragmenter = Fragmenter(config)
    reassembler = Reassembler(config)
    reassembler.receive(fragmenter.fragment(bytes(3000))[0], SOURCE, 100.0)
    reassembler.receive(fragmenter.fragment(bytes(3000))[0], SOURCE, 50.0)  # counts as 100
    assert reassembler.get_timer() == 101.0
    reassembler.handle_timer(60.0)
    assert reassembler.incomplete == 2
    reassembler.handle_timer(101.0)
    assert reassembler.incomplete == 0


def test_every_fragment_twice_delivers_once() -> None:
    rng = random.Random(5)
    data = rng.randbytes(20_000)
    frames = Fragmenter().fragment(data) * 2
    rng.shuffle(frames)
    reassembler = Reassembler()
    assert deliver_all(reassembler, frames) == [data]
    assert reassembler.stats.duplicates == len(frames) // 2
    assert reassembler.incomplete == 0


def test_late_duplicates_after_completion_are_dropped_until_the_timeout() -> None:
    config = FragmentConfig(reassembly_timeout=2.0)
    frames = Fragmenter(config).fragment(bytes(5000))
    reassembler = Reassembler(config)
    assert len(deliver_all(reassembler, frames, now=0.0)) == 1
    assert deliver_all(reassembler, frames, now=1.0) == []
    assert reassembler.incomplete == 0
    assert reassembler.stats.duplicates == len(frames)
    # After the timeout the id may be reused (2**32 messages later, or a restart).
    reassembler.handle_timer(2.0)
    assert len(deliver_all(reassembler, frames, now=3.0)) == 1


def test_loss_and_duplication_across_many_messages() -> None:
    """A lossy, duplicating, reordering link: what is complete comes out once, the rest frees."""
    rng = random.Random(11)
    # All 100 messages are in flight at once from one source.
    config = FragmentConfig(reassembly_timeout=1.0, max_incomplete_per_source=100)
    fragmenter = Fragmenter(config)
    reassembler = Reassembler(config)
    wire: list[bytes] = []
    expected = []
    for _ in range(100):
        data = rng.randbytes(rng.randrange(CHUNK + 1, 30_000))
        frames = fragmenter.fragment(data)
        kept = [f for f in frames if rng.random() > 0.05]
        if len(kept) == len(frames):
            expected.append(data)
        wire += kept + [f for f in kept if rng.random() < 0.2]
    rng.shuffle(wire)
    got = deliver_all(reassembler, wire)
    assert sorted(got) == sorted(expected)
    assert 0 < len(expected) < 100
    reassembler.handle_timer(1.0)
    assert reassembler.incomplete == 0
    assert reassembler.buffered_bytes == 0


def test_whole_frames_carry_no_state_so_their_duplicates_pass() -> None:
    """Like UDP itself: a duplicated small datagram arrives twice; the layer above copes."""
    [frame] = Fragmenter().fragment(b"ping")
    reassembler = Reassembler()
    assert deliver_all(reassembler, [frame, frame]) == [b"ping", b"ping"]
    assert reassembler.incomplete == 0


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "counter"),
    [
        (b"", "malformed"),
        (b"\x00", "malformed"),
        (b"\xb0", "unsupported_version"),  # right magic, version 0 (never used)
        (b"\xb4whatever", "unsupported_version"),  # version 2, whole
        (b"\xb5" + bytes(20), "unsupported_version"),  # version 2, fragment
        (b"\xa2hello", "malformed"),  # wrong magic
        (b"\xb3\x00\x00", "malformed"),  # short header
        (fragment_frame(1, 0, 1, 10, bytes(10)), "malformed"),  # count < 2
        (fragment_frame(1, 2, 2, 10, bytes(5)), "malformed"),  # index >= count
        (fragment_frame(1, 0, 11, 10, bytes(1)), "malformed"),  # more fragments than bytes
        (fragment_frame(1, 0, 300, 3000, bytes(10)), "malformed"),  # count > max_fragments
        (fragment_frame(1, 0, 2, 10, bytes(4)), "malformed"),  # data shorter than implied
        (fragment_frame(1, 0, 2, 10, bytes(6)), "malformed"),  # data longer than implied
        (fragment_frame(1, 0, 2, MAX + 1, bytes(10)), "oversized"),  # total > max
        (b"\xb2" + bytes(MAX + 1), "oversized"),  # whole frame > max
    ],
)
def test_bad_frames_are_counted_not_raised(frame: bytes, counter: str) -> None:
    reassembler = Reassembler()
    assert reassembler.receive(frame, SOURCE, 0.0) is None
    assert getattr(reassembler.stats, counter) == 1
    assert reassembler.stats.rejected == 1
    assert reassembler.incomplete == 0
    assert reassembler.buffered_bytes == 0


def test_changed_count_or_total_mid_message_is_dropped_and_counted() -> None:
    data = bytes(range(100))
    good = [fragment_frame(5, i, 4, 100, data[i * 25 : (i + 1) * 25]) for i in range(4)]
    reassembler = Reassembler()
    assert reassembler.receive(good[0], SOURCE, 0.0) is None
    # Same message id, count changed (5 fragments of 20) and total changed (4 of 24, 96 bytes).
    assert reassembler.receive(fragment_frame(5, 1, 5, 100, data[20:40]), SOURCE, 0.0) is None
    assert reassembler.receive(fragment_frame(5, 1, 4, 96, data[24:48]), SOURCE, 0.0) is None
    assert reassembler.stats.inconsistent == 2
    # The first-seen layout still completes.
    assert deliver_all(reassembler, good[1:]) == [data]


def test_fragment_of_a_duplicate_index_with_other_bytes_keeps_the_first() -> None:
    data = bytes(100)
    reassembler = Reassembler()
    reassembler.receive(fragment_frame(5, 0, 2, 100, data[:50]), SOURCE, 0.0)
    reassembler.receive(fragment_frame(5, 0, 2, 100, b"x" * 50), SOURCE, 0.0)
    assert reassembler.stats.duplicates == 1
    assert reassembler.receive(fragment_frame(5, 1, 2, 100, data[50:]), SOURCE, 0.0) == data


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_random_bytes_never_raise(frames: list[bytes]) -> None:
    config = FragmentConfig(mtu_payload=64, max_message_size=4000, max_buffered_bytes=100_000)
    reassembler = Reassembler(config)
    for now, frame in enumerate(frames):
        reassembler.receive(frame, SOURCE, float(now))
        assert_bounded(reassembler)
    reassembler.handle_timer(1e9)
    assert reassembler.incomplete == 0
    assert reassembler.buffered_bytes == 0


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3),  # message id
            st.integers(min_value=0, max_value=8),  # index
            st.integers(min_value=0, max_value=8),  # count
            st.integers(min_value=0, max_value=300),  # total
            st.binary(max_size=120),
            st.sampled_from([SOURCE, OTHER]),
            st.floats(min_value=0, max_value=10, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_plausible_fragment_headers_never_raise(
    items: list[tuple[int, int, int, int, bytes, Address, float]],
) -> None:
    """Headers near the valid ones (right tag, small fields) reach the deep checks."""
    config = FragmentConfig(
        mtu_payload=64,
        max_message_size=300,
        max_fragments=8,
        reassembly_timeout=1.0,
        max_buffered_bytes=2000,
        max_incomplete=4,
        max_incomplete_per_source=3,
    )
    reassembler = Reassembler(config)
    for message_id, index, count, total, data, source, now in items:
        frame = fragment_frame(message_id, index, count, total, data)
        message = reassembler.receive(frame, source, now)
        assert message is None or len(message) == total
        assert_bounded(reassembler)
        timer = reassembler.get_timer()
        if timer is not None and timer <= now:
            reassembler.handle_timer(now)


# --- bounds --------------------------------------------------------------------------


def test_flood_of_bogus_first_fragments_from_many_sources_stays_bounded() -> None:
    config = FragmentConfig()
    reassembler = Reassembler(config)
    bogus = fragment_frame(0, 0, 40, 40 * CHUNK, bytes(CHUNK))
    for n in range(20_000):
        source = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 4711)
        assert reassembler.receive(bogus, source, n * 1e-5) is None
        assert_bounded(reassembler)
    assert reassembler.incomplete == config.max_incomplete
    assert reassembler.stats.evicted == 20_000 - config.max_incomplete
    # A real message still gets through right after the flood.
    data = random.Random(1).randbytes(60_000)
    assert deliver_all(reassembler, Fragmenter(config).fragment(data), now=0.2) == [data]


def test_one_source_cannot_hold_more_than_its_share() -> None:
    config = FragmentConfig(max_incomplete_per_source=4)
    reassembler = Reassembler(config)
    for message_id in range(100):
        reassembler.receive(fragment_frame(message_id, 0, 2, 100, bytes(50)), SOURCE, 0.0)
    assert reassembler.incomplete == 4
    assert reassembler.stats.evicted == 96
    # The newest ones survive: the source's own oldest went first.
    assert reassembler.receive(fragment_frame(99, 1, 2, 100, bytes(50)), SOURCE, 0.0) == bytes(100)
    # Another source is unaffected by the first one's flood.
    data = bytes(range(100))
    frames = [fragment_frame(0, i, 2, 100, data[i * 50 : (i + 1) * 50]) for i in range(2)]
    assert deliver_all(reassembler, frames, source=OTHER) == [data]


def test_bytes_bound_drops_the_oldest_incomplete_messages() -> None:
    config = FragmentConfig(max_buffered_bytes=200_000)
    fragmenter = Fragmenter(config)
    reassembler = Reassembler(config)
    sources = [(f"10.0.0.{n}", 1) for n in range(20)]
    for source in sources:
        # Everything but the last fragment of a 60 KB message.
        frames = fragmenter.fragment(bytes(60_000))[:-1]
        deliver_all(reassembler, frames, source=source)
        assert_bounded(reassembler)
    assert reassembler.stats.evicted > 0
    assert reassembler.incomplete <= 200_000 // 59_000
    # A message that is being completed is never the one evicted to make room for itself.
    data = random.Random(2).randbytes(MAX)
    assert deliver_all(reassembler, fragmenter.fragment(data), source=sources[0]) == [data]
    assert_bounded(reassembler)


def test_completed_memory_is_bounded() -> None:
    config = FragmentConfig(max_completed_remembered=10)
    fragmenter = Fragmenter(config, first_message_id=0)
    reassembler = Reassembler(config)
    messages = [fragmenter.fragment(bytes(3000)) for _ in range(11)]
    for frames in messages:
        assert len(deliver_all(reassembler, frames)) == 1
    # Message 0 was forgotten (11 > 10), so its duplicates make a message again;
    # message 10 is still remembered.
    assert len(deliver_all(reassembler, messages[0])) == 1
    assert deliver_all(reassembler, messages[10]) == []


# --- many frames at once -----------------------------------------------------------


def _state(reassembler: Reassembler) -> tuple[object, ...]:
    return (
        reassembler.stats,
        reassembler.buffered_bytes,
        reassembler.incomplete,
        list(reassembler._completed.items()),
        list(reassembler._partials),
    )


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    messages=st.integers(1, 12),
    tight=st.booleans(),
    batch=st.integers(1, 40),
)
def test_receive_many_is_receive_frame_by_frame(
    seed: int, messages: int, tight: bool, batch: int
) -> None:
    """In-order runs, reordering, loss, duplicates, two sources, garbage, tight bounds."""
    rng = random.Random(seed)
    config = (
        FragmentConfig(
            mtu_payload=200,
            max_message_size=2000,
            max_fragments=16,
            max_buffered_bytes=2 * (256 + 2000 + 16 * 64),
            max_incomplete=3,
            max_incomplete_per_source=2,
            max_completed_remembered=3,
        )
        if tight
        else FragmentConfig(mtu_payload=200, max_message_size=2000, max_fragments=16)
    )
    fragmenters = {SOURCE: Fragmenter(config, first_message_id=7), OTHER: Fragmenter(config)}
    wire: list[tuple[bytes, Address]] = []
    for _ in range(messages):
        source = rng.choice((SOURCE, OTHER))
        frames = fragmenters[source].fragment(rng.randbytes(rng.randrange(0, 2000)))
        if rng.random() < 0.2:
            rng.shuffle(frames)
        if rng.random() < 0.2:
            frames = [f for f in frames if rng.random() > 0.2]
        if rng.random() < 0.2:
            frames += frames[: rng.randrange(len(frames) + 1)]
        if rng.random() < 0.1:
            frames.insert(rng.randrange(len(frames) + 1), rng.randbytes(rng.randrange(20)))
        wire += [(frame, source) for frame in frames]
    if rng.random() < 0.3:
        wire += wire[: rng.randrange(len(wire) + 1)]  # the same messages again, later
    one, many = Reassembler(config), Reassembler(config)
    expected = []
    got = []
    for start in range(0, len(wire), batch):
        now = start / 10  # later batches may find remembered messages expired
        for frame, source in wire[start : start + batch]:
            datagram = one.receive(frame, source, now)
            if datagram is not None:
                expected.append((datagram, source))
        got += many.receive_many(wire[start : start + batch], now)
        assert _state(many) == _state(one)
    assert got == expected
