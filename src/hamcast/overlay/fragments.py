"""Cutting overlay datagrams to the path MTU and putting them back together.

The overlay's datagrams (KBR and Scribe messages) carry application messages of
up to 64 KiB, far above the path MTU. Leaving that to IP fragmentation would
lose a whole message with any one fragment and, worse, many paths drop IP
fragments outright; so the overlay cuts its own datagrams into frames that fit
one UDP payload each and puts them back together at the next hop.

Every UDP payload the overlay sends is one **frame** (byte-exact layout in
docs/technologies/overlay-fragments.md):

* a **whole frame** — one tag byte ``0xB2``, then the datagram. A datagram that
  fits is sent like this: one byte of overhead, no state at the receiver;
* a **fragment frame** — tag ``0xB3``, then a 12-byte header (message id,
  fragment index, fragment count, total length, all big-endian), then fragment
  ``index`` of the datagram. Fragment ``i`` of ``n`` holds bytes
  ``[i * total // n, (i + 1) * total // n)``: the layout follows from the
  header alone, fragments differ in size by at most one byte, and a receiver
  can check every fragment's length exactly.

Both classes are sans-I/O (STYLE.md item 1): no sockets, no clock reads.
"""

from __future__ import annotations

import random
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from hamcast.errors import MessageTooLongError, UsageError
from hamcast.overlay.ids import Address

__all__ = [
    "FRAGMENT_HEADER_SIZE",
    "TAG_FRAGMENT",
    "TAG_WHOLE",
    "WIRE_VERSION",
    "FragmentConfig",
    "Fragmenter",
    "ReassemblyStats",
    "Reassembler",
]

#: Version of the frame format; it lives in bits 3-1 of the tag byte.
WIRE_VERSION = 1
# Tag byte: bits 7-4 the magic 0xB, bits 3-1 the version, bit 0 set for a fragment.
_MAGIC = 0xB
TAG_WHOLE = (_MAGIC << 4) | (WIRE_VERSION << 1)
TAG_FRAGMENT = TAG_WHOLE | 1
_WHOLE_PREFIX = bytes([TAG_WHOLE])
_FRAGMENT_PREFIX = bytes([TAG_FRAGMENT])

# Tag, message id (u32), fragment index (u16), fragment count (u16), total length (u32).
_FRAGMENT_HEADER = struct.Struct("!BIHHI")
#: Bytes in front of a fragment's data.
FRAGMENT_HEADER_SIZE = _FRAGMENT_HEADER.size

_MAX_U32 = (1 << 32) - 1
_MAX_U16 = (1 << 16) - 1
# Largest UDP payload over IPv4 (65535 - 20 - 8); a frame can never be larger.
_MAX_UDP_PAYLOAD = 65507

# Approximate bookkeeping cost, in bytes, of one incomplete message and of each
# fragment it holds, charged against max_buffered_bytes so that a flood of tiny
# fragments is bounded by memory, not just by the bytes it carries.
_MESSAGE_OVERHEAD = 256
_FRAGMENT_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class FragmentConfig:
    """Sizes, bounds and timeouts of fragmentation; one per overlay node.

    Attributes:
        mtu_payload: Largest UDP payload the fragmenter emits towards an IPv4
            peer, in bytes, frame header included: a 1500-byte MTU less the
            IPv4 (20) and UDP (8) headers. Lower it under tunnels.
        mtu_payload_ipv6: The same towards an IPv6 peer (1500 - 40 - 8).
        max_message_size: Largest datagram, in bytes, that is sent or
            reassembled: 64 KiB of application payload plus room for the
            overlay's own headers. Larger ones are refused when sending and
            dropped when announced by a fragment header.
        max_fragments: Most fragments a message may be cut into. Our own
            senders need ``ceil(max_message_size / (mtu_payload - 13))``
            (51 with the defaults); the limit stops a peer from announcing a
            message in thousands of one-byte fragments.
        reassembly_timeout: Seconds from a message's first fragment until an
            incomplete message is dropped. Not extended by later fragments, so
            a trickle cannot keep a message alive.
        max_buffered_bytes: Most bytes held by incomplete messages together,
            bookkeeping included; when a new fragment would exceed it, the
            oldest incomplete messages are dropped.
        max_incomplete: Most incomplete messages held at once (all sources).
        max_incomplete_per_source: Most incomplete messages held per source
            address; a source that opens more loses its oldest.
        max_completed_remembered: How many recently completed messages are
            remembered (for ``reassembly_timeout`` seconds) so that late
            duplicates of their fragments are dropped instead of starting the
            message again.
    """

    mtu_payload: int = 1472
    mtu_payload_ipv6: int = 1452
    max_message_size: int = 65536 + 4096
    max_fragments: int = 256
    reassembly_timeout: float = 2.0
    max_buffered_bytes: int = 4 * 1024 * 1024
    max_incomplete: int = 256
    max_incomplete_per_source: int = 16
    max_completed_remembered: int = 1024

    def __post_init__(self) -> None:
        for name in ("mtu_payload", "mtu_payload_ipv6"):
            value = getattr(self, name)
            if not FRAGMENT_HEADER_SIZE + 1 <= value <= _MAX_UDP_PAYLOAD:
                raise UsageError(
                    f"{name} must be between {FRAGMENT_HEADER_SIZE + 1} and "
                    f"{_MAX_UDP_PAYLOAD} bytes, not {value}"
                )
        if not 0 <= self.max_message_size <= _MAX_U32:
            raise UsageError(f"max_message_size must be between 0 and {_MAX_U32} bytes")
        if not 2 <= self.max_fragments <= _MAX_U16:
            raise UsageError(f"max_fragments must be between 2 and {_MAX_U16}")
        for ipv6 in (False, True):
            needed = self.fragments_for(self.max_message_size, ipv6=ipv6)
            if needed > self.max_fragments:
                raise UsageError(
                    f"a {self.max_message_size}-byte message needs {needed} fragments of "
                    f"{self.payload_limit(ipv6=ipv6) - FRAGMENT_HEADER_SIZE} bytes, more "
                    f"than max_fragments ({self.max_fragments}): raise "
                    f"{'mtu_payload_ipv6' if ipv6 else 'mtu_payload'} or max_fragments"
                )
        if self.reassembly_timeout <= 0:
            raise UsageError("reassembly_timeout must be positive")
        needed = _message_cost(self.max_message_size, self.max_fragments)
        if self.max_buffered_bytes < needed:
            raise UsageError(
                f"max_buffered_bytes must hold one largest message with its "
                f"bookkeeping: at least {needed} bytes"
            )
        for name in ("max_incomplete", "max_incomplete_per_source", "max_completed_remembered"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1")

    @property
    def fragment_data_size(self) -> int:
        """Most datagram bytes one fragment frame to an IPv4 peer carries."""
        return self.mtu_payload - FRAGMENT_HEADER_SIZE

    def payload_limit(self, *, ipv6: bool = False) -> int:
        """The largest frame towards a peer of that family (``mtu_payload[_ipv6]``)."""
        return self.mtu_payload_ipv6 if ipv6 else self.mtu_payload

    def fragments_for(self, size: int, *, ipv6: bool = False) -> int:
        """How many frames a datagram of ``size`` bytes is sent as (1: a whole frame)."""
        limit = self.payload_limit(ipv6=ipv6)
        if size + 1 <= limit:
            return 1
        return -(-size // (limit - FRAGMENT_HEADER_SIZE))


def _message_cost(total: int, count: int) -> int:
    """Bytes charged for a complete message of ``total`` bytes in ``count`` fragments."""
    return _MESSAGE_OVERHEAD + total + count * _FRAGMENT_OVERHEAD


class Fragmenter:
    """Cuts datagrams into frames of at most ``config.mtu_payload`` bytes.

    Message ids count up from ``first_message_id`` modulo ``2**32``, one per
    fragmented datagram (whole frames carry none). By default they start at a
    random value, so that a restarted sender is unlikely to reuse an id that a
    receiver still holds an incomplete message for; simulators pass a fixed
    value to stay deterministic.
    """

    def __init__(
        self, config: FragmentConfig | None = None, *, first_message_id: int | None = None
    ) -> None:
        self.config = config or FragmentConfig()
        if first_message_id is None:
            first_message_id = random.getrandbits(32)
        self._next_id = first_message_id & _MAX_U32

    @property
    def next_message_id(self) -> int:
        """The id the next fragmented datagram will carry."""
        return self._next_id

    def fragment(
        self, datagram: bytes | bytearray | memoryview, *, ipv6: bool = False
    ) -> list[bytes]:
        """The frames to send for ``datagram`` to a peer of that family, in order.

        Raises :class:`~hamcast.errors.MessageTooLongError` when ``datagram`` is
        longer than ``config.max_message_size``.
        """
        config = self.config
        total = len(datagram)
        limit = config.mtu_payload_ipv6 if ipv6 else config.mtu_payload
        if total + 1 <= limit:
            # The common case: one byte of header, no message id spent.
            return [_WHOLE_PREFIX + datagram]
        if total > config.max_message_size:
            raise MessageTooLongError(total, config.max_message_size)
        count = -(-total // (limit - FRAGMENT_HEADER_SIZE))
        message_id = self._next_id
        self._next_id = (message_id + 1) & _MAX_U32
        view = memoryview(datagram)
        pack = _FRAGMENT_HEADER.pack
        frames = []
        start = 0
        for index in range(count):
            end = (index + 1) * total // count
            frames.append(pack(TAG_FRAGMENT, message_id, index, count, total) + view[start:end])
            start = end
        return frames


@dataclass(slots=True)
class ReassemblyStats:
    """What a :class:`Reassembler` has seen; every field counts frames or messages.

    Attributes:
        frames: Frames given to :meth:`Reassembler.receive`.
        whole: Whole frames passed through.
        fragments: Fragment frames stored towards a message.
        messages: Fragmented messages completed and returned.
        duplicates: Fragment frames dropped because that fragment was already
            held, or its message was completed a moment ago.
        malformed: Frames dropped for their form: empty, wrong magic, short
            header, fragment count below 2 or above ``max_fragments`` or above
            the total length, index not below the count, data length not what
            the header implies.
        unsupported_version: Frames with the right magic but another version.
        inconsistent: Fragment frames whose count or total length differ from
            the first fragment of the same message.
        oversized: Frames whose datagram (whole, or announced total) is longer
            than ``max_message_size``.
        timed_out: Incomplete messages dropped at their reassembly deadline.
        evicted: Incomplete messages dropped to stay within the bounds.
    """

    frames: int = 0
    whole: int = 0
    fragments: int = 0
    messages: int = 0
    duplicates: int = 0
    malformed: int = 0
    unsupported_version: int = 0
    inconsistent: int = 0
    oversized: int = 0
    timed_out: int = 0
    evicted: int = 0

    @property
    def rejected(self) -> int:
        """Frames dropped as bad input (not duplicates, not lost to bounds)."""
        return self.malformed + self.unsupported_version + self.inconsistent + self.oversized


@dataclass(eq=False, slots=True)
class _Partial:
    """An incomplete message: the fragments received so far."""

    count: int
    total: int
    deadline: float
    chunks: list[bytes | None]
    missing: int
    cost: int


_Key = tuple[Address, int]


class Reassembler:
    """Rebuilds datagrams from frames, per (source address, message id).

    Driving contract (sans-I/O, STYLE.md item 1): call :meth:`receive` with every
    frame, its source and the current time; it returns the complete datagram
    when the frame finished one (a whole frame always does), else ``None``.
    Call :meth:`handle_timer` once the time reaches :meth:`get_timer` to drop
    incomplete messages whose deadline passed. Times are seconds on the
    caller's clock; a ``now`` earlier than one already seen counts as the
    later one, so a clock step back cannot confuse the deadlines.

    It never raises for any frame: bad ones are dropped and counted in
    :attr:`stats`. Memory is bounded by ``max_buffered_bytes``,
    ``max_incomplete``, ``max_incomplete_per_source`` and
    ``max_completed_remembered``; when a new fragment would exceed a bound,
    the oldest incomplete message (of that source, for the per-source bound)
    is dropped. Duplicated fragments are harmless.
    """

    def __init__(self, config: FragmentConfig | None = None) -> None:
        self.config = config or FragmentConfig()
        self.stats = ReassemblyStats()
        self._now = float("-inf")
        # Insertion order is deadline order because deadlines are first
        # arrival + a constant on a clock that never goes back.
        self._partials: OrderedDict[_Key, _Partial] = OrderedDict()
        self._by_source: dict[Address, dict[int, None]] = {}
        self._completed: OrderedDict[_Key, float] = OrderedDict()
        self._buffered = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes charged to incomplete messages now (data plus bookkeeping)."""
        return self._buffered

    @property
    def incomplete(self) -> int:
        """Incomplete messages held now."""
        return len(self._partials)

    def receive(self, frame: bytes, source: Address, now: float) -> bytes | None:
        """Take one frame from ``source``; the datagram it completes, or ``None``."""
        stats = self.stats
        stats.frames += 1
        if frame[:1] == _WHOLE_PREFIX:
            if len(frame) - 1 > self.config.max_message_size:
                stats.oversized += 1
                return None
            stats.whole += 1
            return frame[1:]
        self._now = max(self._now, now)
        size = len(frame)
        if size < FRAGMENT_HEADER_SIZE or frame[0] != TAG_FRAGMENT:
            if frame and frame[0] >> 4 == _MAGIC and (frame[0] >> 1) & 7 != WIRE_VERSION:
                stats.unsupported_version += 1
            else:
                stats.malformed += 1
            return None
        _, message_id, index, count, total = _FRAGMENT_HEADER.unpack_from(frame)
        config = self.config
        if total > config.max_message_size:
            stats.oversized += 1
            return None
        if not 2 <= count <= config.max_fragments or count > total or index >= count:
            stats.malformed += 1
            return None
        if size - FRAGMENT_HEADER_SIZE != (index + 1) * total // count - index * total // count:
            stats.malformed += 1
            return None
        return self._store((source, message_id), index, count, total, frame)

    def receive_many(
        self, frames: Sequence[tuple[bytes, Address]], now: float
    ) -> list[tuple[bytes, Address]]:
        """:meth:`receive` for each ``(frame, source)`` in order; the datagrams completed.

        Same datagrams, counters and state as frame by frame. A message whose
        fragments arrive one after the other, in order (what one read of a
        socket usually holds), is put together at once without being held.
        """
        out: list[tuple[bytes, Address]] = []
        receive = self.receive
        position, end = 0, len(frames)
        while position < end:
            frame, source = frames[position]
            if frame[:1] == _FRAGMENT_PREFIX:
                datagram = self._consecutive(frames, position, now)
                if datagram is not None:
                    out.append((datagram[0], source))
                    position += datagram[1]
                    continue
            datagram_or_none = receive(frame, source, now)
            if datagram_or_none is not None:
                out.append((datagram_or_none, source))
            position += 1
        return out

    def get_timer(self) -> float | None:
        """When the oldest incomplete message expires, or ``None`` if none is held."""
        for partial in self._partials.values():
            return partial.deadline
        return None

    def handle_timer(self, now: float) -> None:
        """Drop every incomplete message whose deadline is at or before ``now``."""
        self._now = max(self._now, now)
        now = self._now
        while self._partials:
            key, partial = next(iter(self._partials.items()))
            if partial.deadline > now:
                break
            self._drop(key)
            self.stats.timed_out += 1
        self._forget_completed(now)

    # --- internals ---------------------------------------------------------------

    def _consecutive(
        self, frames: Sequence[tuple[bytes, Address]], first: int, now: float
    ) -> tuple[bytes, int] | None:
        """The message whose fragments are ``frames[first:]`` in order, and their number.

        ``None`` unless frame by frame would complete it from nothing, with
        no bound reached, no eviction and no duplicate: then :meth:`receive`
        takes the frames one by one.
        """
        frame, source = frames[first]
        if len(frame) < FRAGMENT_HEADER_SIZE:
            return None
        _, message_id, index, count, total = _FRAGMENT_HEADER.unpack_from(frame)
        config = self.config
        if (
            index != 0
            or first + count > len(frames)
            or total > config.max_message_size
            or not 2 <= count <= config.max_fragments
            or count > total
        ):
            return None
        key = (source, message_id)
        if key in self._partials:
            return None
        now = max(self._now, now)
        completed = self._completed
        done_until = completed.get(key)
        if done_until is not None and done_until > now:
            return None
        mine = self._by_source.get(source)
        if (mine is not None and len(mine) >= config.max_incomplete_per_source) or len(
            self._partials
        ) >= config.max_incomplete:
            return None
        chunks = []
        cost = _MESSAGE_OVERHEAD
        unpack = _FRAGMENT_HEADER.unpack_from
        for offset in range(count):
            frame, from_ = frames[first + offset]
            if offset:
                if from_ != source or len(frame) < FRAGMENT_HEADER_SIZE:
                    return None
                tag, other_id, index, other_count, other_total = unpack(frame)
                if (
                    tag != TAG_FRAGMENT
                    or other_id != message_id
                    or index != offset
                    or other_count != count
                    or other_total != total
                ):
                    return None
            size = (offset + 1) * total // count - offset * total // count
            if len(frame) - FRAGMENT_HEADER_SIZE != size:
                return None
            chunks.append(frame[FRAGMENT_HEADER_SIZE:])
            cost += size + _FRAGMENT_OVERHEAD
        if self._buffered + cost > config.max_buffered_bytes:
            return None
        # What receive() would have done, less the state it adds and drops again.
        self._now = now
        stats = self.stats
        stats.frames += count
        stats.fragments += count
        stats.messages += 1
        if done_until is not None:
            del completed[key]
        completed[key] = now + config.reassembly_timeout
        if len(completed) > config.max_completed_remembered:
            completed.popitem(last=False)
        return b"".join(chunks), count

    def _store(self, key: _Key, index: int, count: int, total: int, frame: bytes) -> bytes | None:
        stats, now = self.stats, self._now
        completed = self._completed
        done_until = completed.get(key)
        if done_until is not None:
            if done_until > now:
                stats.duplicates += 1
                return None
            del completed[key]
        partials = self._partials
        partial = partials.get(key)
        data_cost = len(frame) - FRAGMENT_HEADER_SIZE + _FRAGMENT_OVERHEAD
        if partial is None:
            config = self.config
            source = key[0]
            mine = self._by_source.get(source)
            if (
                (mine is not None and len(mine) >= config.max_incomplete_per_source)
                or len(partials) >= config.max_incomplete
                or self._buffered + data_cost + _MESSAGE_OVERHEAD > config.max_buffered_bytes
            ):
                self._make_room_for_message(source, data_cost + _MESSAGE_OVERHEAD)
                mine = self._by_source.get(source)
            partial = _Partial(
                count,
                total,
                now + config.reassembly_timeout,
                [None] * count,
                count,
                _MESSAGE_OVERHEAD,
            )
            partials[key] = partial
            if mine is None:
                mine = self._by_source[source] = {}
            mine[key[1]] = None
            self._buffered += _MESSAGE_OVERHEAD
        elif partial.count != count or partial.total != total:
            stats.inconsistent += 1
            return None
        elif partial.chunks[index] is not None:
            stats.duplicates += 1
            return None
        elif self._buffered + data_cost > self.config.max_buffered_bytes:
            self._make_room(data_cost, keep=key)
        partial.chunks[index] = frame[FRAGMENT_HEADER_SIZE:]
        partial.missing -= 1
        partial.cost += data_cost
        self._buffered += data_cost
        stats.fragments += 1
        if partial.missing:
            return None
        chunks = partial.chunks
        self._drop(key)
        # Not held before (a remembered key was deleted above), so it goes last.
        completed[key] = now + self.config.reassembly_timeout
        if len(completed) > self.config.max_completed_remembered:
            completed.popitem(last=False)
        stats.messages += 1
        return b"".join(chunks)  # type: ignore[arg-type]  # no None is left

    def _make_room_for_message(self, source: Address, cost: int) -> None:
        """Drop old incomplete messages until a new one of ``cost`` bytes fits every bound."""
        config = self.config
        mine = self._by_source.get(source)
        if mine is not None and len(mine) >= config.max_incomplete_per_source:
            self._drop((source, next(iter(mine))))
            self.stats.evicted += 1
        if len(self._partials) >= config.max_incomplete:
            self._drop(next(iter(self._partials)))
            self.stats.evicted += 1
        self._make_room(cost, keep=None)

    def _make_room(self, cost: int, keep: _Key | None) -> None:
        """Drop the oldest incomplete messages but ``keep`` until ``cost`` more bytes fit.

        The configuration guarantees that one largest message fits on its own,
        so dropping everything else always makes enough room.
        """
        limit = self.config.max_buffered_bytes
        while self._buffered + cost > limit:
            victim = next((key for key in self._partials if key != keep), None)
            if victim is None:
                return
            self._drop(victim)
            self.stats.evicted += 1

    def _drop(self, key: _Key) -> None:
        partial = self._partials.pop(key)
        self._buffered -= partial.cost
        source, message_id = key
        mine = self._by_source[source]
        del mine[message_id]
        if not mine:
            del self._by_source[source]

    def _forget_completed(self, now: float) -> None:
        completed = self._completed
        while completed:
            key, until = next(iter(completed.items()))
            if until > now:
                break
            del completed[key]
