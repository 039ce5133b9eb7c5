"""The overlay's compact data path (KBR and Scribe wire version 2) and its fast path.

* KBR's compact DATA and ROUTE_DATA: who the sender is, forwarding, refusals,
  version-1 datagrams, the next-hop cache;
* Scribe's DATA and MULTICAST read in place: garbage never raises;
* the fast path between the layers (``next_upcall`` / ``handle_kbr_upcall`` /
  ``OverlayStack`` with ``on_message``) gives exactly what the event path gives;
* a 1400-byte message is one frame (docs/technologies/overlay-scribe.md §11).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
import struct
from collections import deque
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamcast.overlay.api import Delivered, DirectReceived, Joined
from hamcast.overlay.fragments import FragmentConfig, Fragmenter
from hamcast.overlay.ids import ID_SPACE, NodeHandle
from hamcast.overlay.kbr import KbrConfig, KbrNode
from hamcast.overlay.kbr.messages import VERSION, Pong
from hamcast.overlay.scribe import MessageReceived, ScribeNode, canonical_group
from hamcast.overlay.scribe.messages import encode_data, encode_join, encode_multicast
from hamcast.technologies.ip import mmsg
from hamcast.technologies.overlay import OverlayStack, OverlayTechnology
from tests.overlay_sim import FakeNetwork, KbrOverlay
from tests.scribe_oracle import FAST

GROUP = "ham:opaque:data-path"
CONFIG = KbrConfig()


def _pair() -> tuple[KbrNode, KbrNode]:
    """Two joined nodes that know each other, A low and B high."""
    a = KbrNode(NodeHandle(1 << 124, ("10.0.0.1", 4000)), CONFIG, random.Random(1))
    b = KbrNode(NodeHandle(9 << 124, ("10.0.0.2", 4000)), CONFIG, random.Random(2))
    a.bootstrap([], 0.0)
    b.bootstrap([a.handle.address], 0.0)
    nodes = {a.handle.address: a, b.handle.address: b}
    for step in range(20):
        moved = False
        for node in (a, b):
            for data, address in node.datagrams_to_send():
                moved = True
                nodes[address].receive_datagram(data, node.handle.address, step * 0.01)
        if not moved:
            break
    assert a.joined and b.joined
    for node in (a, b):
        while node.next_event() is not None:
            pass
    return a, b


def _deliver(sender: KbrNode, nodes: dict[tuple[str, int], KbrNode], now: float) -> None:
    for data, address in sender.datagrams_to_send():
        nodes[address].receive_datagram(data, sender.handle.address, now)


# --- KBR -------------------------------------------------------------------------------


def test_compact_direct_names_a_known_sender_by_its_table_handle() -> None:
    a, b = _pair()
    a.send_direct(b.handle, b"data", 1.0, compact=True)
    [(data, _)] = a.datagrams_to_send()
    assert data == bytes([VERSION, 0x0D, 0x01]) + a.handle.id.to_bytes(16, "big") + b"data"
    b.receive_datagram(data, ("10.9.9.9", 1), 1.0)  # the source address does not matter
    assert b.next_event() == DirectReceived(b"data", a.handle)
    assert b.stats.received["data"] == 1 and a.stats.sent["data"] == 1


def test_compact_direct_from_a_stranger_uses_the_source_address() -> None:
    _, b = _pair()
    stranger = 5 << 124
    data = bytes([VERSION, 0x0D, 0x01]) + stranger.to_bytes(16, "big") + b"x"
    b.receive_datagram(data, ("10.0.0.7", 4711), 1.0)
    assert b.next_event() == DirectReceived(b"x", NodeHandle(stranger, ("10.0.0.7", 4711)))
    # A compact datagram never puts its sender into a table.
    assert stranger not in {h.id for h in b.neighbors()}


def test_compact_input_that_must_be_refused_is_counted() -> None:
    a, b = _pair()
    mine = bytes([VERSION, 0x0D, 0x01]) + b.handle.id.to_bytes(16, "big") + b"x"
    b.receive_datagram(mine, a.handle.address, 1.0)  # a sender using b's own id
    assert b.stats.dropped["data"] == 1
    b.receive_datagram(bytes([VERSION, 0x0D, 0x03]) + bytes(16), a.handle.address, 1.0)
    b.receive_datagram(bytes([VERSION, 0x0E, 0x01]) + bytes(17), a.handle.address, 1.0)
    assert b.stats.malformed == 2
    idle = KbrNode(NodeHandle(3, ("10.0.0.3", 1)), CONFIG, random.Random(3))
    idle.receive_datagram(bytes([VERSION, 0x0D, 0x01]) + bytes(16), a.handle.address, 1.0)
    assert idle.stats.dropped["data"] == 1
    assert b.next_event() is None and idle.next_event() is None


def test_version_1_datagrams_are_counted_apart() -> None:
    a, b = _pair()
    a._send(Pong(1.0), b.handle.address)
    [(data, _)] = a.datagrams_to_send()
    b.receive_datagram(b"\xb1" + data[1:], a.handle.address, 1.0)
    stats = b.stats
    assert stats.unsupported_version == 1 and stats.malformed == 0
    assert stats.total_dropped >= 1


def test_plain_routes_travel_compact_and_keep_origin_and_hops() -> None:
    overlay = KbrOverlay(FakeNetwork(seed=3), CONFIG, seed=3)
    overlay.grow(40, spacing=0.05)
    overlay.net.run_for(15.0)
    hosts = overlay.joined()
    kinds: set[int] = set()
    overlay.net.trace = lambda source, destination, data: kinds.add(data[1])
    rng = random.Random(4)
    keys = [rng.randrange(ID_SPACE) for _ in range(60)]
    for key in keys:
        overlay.route(rng.choice(hosts), key, b"k%d" % key)
    overlay.net.run_for(2.0)
    delivered = overlay.deliveries()
    assert len(delivered) == len(keys)
    for host, event in delivered:
        assert event.payload == b"k%d" % event.key
        assert overlay.kbr(host).handle.id == overlay.closest(overlay.live_ids(), event.key)
    assert any(event.hops > 1 for _, event in delivered)  # multi-hop routes were forwarded
    assert 0x0E in kinds and 0x0A not in kinds  # ROUTE_DATA only (and keep-alives)


def test_the_next_hop_cache_always_agrees_with_the_tables() -> None:
    overlay = KbrOverlay(FakeNetwork(seed=7), dataclasses.replace(CONFIG, leaf_set_size=4), seed=7)
    overlay.grow(30, spacing=0.05)
    overlay.net.run_for(10.0)
    rng = random.Random(8)
    keys = [rng.randrange(ID_SPACE) for _ in range(50)]

    def check() -> None:
        for host in overlay.joined():
            node = overlay.kbr(host)
            for key in keys:
                assert node._cached_hop(key) == node._next_hop(key, -1)

    check()
    for host in rng.sample(overlay.joined(), 6):
        overlay.kill(host)
    for _ in range(6):
        overlay.net.run_for(5.0)
        check()
    overlay.grow(5, spacing=0.1)
    overlay.net.run_for(5.0)
    check()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from([0x0D, 0x0E]), body=st.binary(max_size=120), flags=st.integers(0, 3))
def test_compact_garbage_never_raises(kind: int, body: bytes, flags: int) -> None:
    a, b = _PAIR
    data = bytes([VERSION, kind, flags]) + body
    before = b.stats
    b.receive_datagram(data, a.handle.address, 1.0)
    after = b.stats
    counted = (after.total_received + after.malformed) - (before.total_received + before.malformed)
    assert counted == 1
    while b.next_event() is not None:
        pass
    b.datagrams_to_send()


_PAIR = _pair()


# --- Scribe ----------------------------------------------------------------------------


def _scribe_root() -> ScribeNode:
    _, key = canonical_group(GROUP)
    root = next(node for node in _pair() if node.is_root(key))
    scribe = ScribeNode(root, FAST)
    scribe.join(GROUP, 0.0)
    while (event := root.next_upcall()) is not None:
        scribe.handle_kbr_upcall(event, 0.0)
    assert scribe.is_root(GROUP)
    while scribe.next_event() is not None:
        pass
    return scribe


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["direct", "delivered"]),
    prefix=st.sampled_from([b"S\x02\x08", b"S\x02\x07", b"S\x01\x08", b"S\x02"]),
    body=st.binary(max_size=80),
)
def test_scribe_data_garbage_never_raises(kind: str, prefix: bytes, body: bytes) -> None:
    scribe = _SCRIBE
    stranger = NodeHandle(77 << 120, ("10.0.0.77", 4000))
    _, key = canonical_group(GROUP)
    item: tuple[Any, ...] = (
        (prefix + body, stranger) if kind == "direct" else (key, prefix + body, stranger, 2)
    )
    scribe.handle_kbr_upcall(item, 1.0)
    while scribe.next_upcall() is not None:
        pass


_SCRIBE = _scribe_root()


def test_a_root_turns_a_multicast_into_data_for_its_children() -> None:
    scribe = _scribe_root()
    kbr = scribe._kbr
    _, key = canonical_group(GROUP)
    child = next(h for h in kbr.leaf_set())  # type: ignore[attr-defined]
    # The child joins directly (as after a REDIRECT): the root adopts it.
    scribe.handle_kbr_upcall((encode_join(key, GROUP.encode(), child, 1), child), 0.5)
    assert scribe.children(GROUP) == [child]
    kbr.datagrams_to_send()  # type: ignore[attr-defined]
    source = NodeHandle(5 << 124, ("10.0.0.5", 4000))
    scribe.handle_kbr_upcall((key, encode_multicast(3, b"hello"), source, 2), 1.0)
    events = []
    while (event := scribe.next_event()) is not None:
        events.append(event)
    assert events[-1] == MessageReceived(GROUP, b"hello", source, 3, 2)
    [(data, address)] = kbr.datagrams_to_send()  # type: ignore[attr-defined]
    assert address == child.address and data[1] == 0x0D
    assert data[19:] == encode_data(key, source, 3, b"hello", hops=3)


# --- the fast path gives what the event path gives -------------------------------------


class EventStack:
    """KBR and Scribe pumped through events (next_event / handle_kbr_event)."""

    def __init__(self, handle: NodeHandle, config: KbrConfig, rng: random.Random) -> None:
        self.kbr = KbrNode(handle, config, rng)
        self.scribe = ScribeNode(self.kbr, FAST)
        self.now = 0.0
        self.events: deque[Any] = deque()

    def receive_datagram(self, data: bytes, source: tuple[str, int], now: float) -> None:
        self.now = now
        self.kbr.receive_datagram(data, source, now)
        self._feed()

    def datagrams_to_send(self) -> list[tuple[bytes, tuple[str, int]]]:
        self._feed()
        return self.kbr.datagrams_to_send()

    def get_timer(self) -> float | None:
        due = [t for t in (self.kbr.get_timer(), self.scribe.get_timer()) if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        self.now = now
        due = self.kbr.get_timer()
        if due is not None and due <= now:
            self.kbr.handle_timer(now)
        due = self.scribe.get_timer()
        if due is not None and due <= now:
            self.scribe.handle_timer(now)
        self._feed()

    def next_event(self) -> Any:
        self._feed()
        return self.events.popleft() if self.events else None

    def _feed(self) -> None:
        while True:
            busy = False
            while (event := self.kbr.next_event()) is not None:
                busy = True
                self.scribe.handle_kbr_event(event, self.now)
                if isinstance(event, Joined):
                    self.events.append(event)  # as OverlayStack passes it up
            while (out := self.scribe.next_event()) is not None:
                busy = True
                self.events.append(out)
            if not busy:
                return


class FastStack(EventStack):
    """The same, pumped as the overlay technology does (OverlayStack with on_message)."""

    def __init__(self, handle: NodeHandle, config: KbrConfig, rng: random.Random) -> None:
        super().__init__(handle, config, rng)
        self.stack = OverlayStack(self.kbr, self.scribe, self.events.append, self._message)

    def _message(
        self, group: str, payload: bytes, source: NodeHandle, sequence: int, hops: int
    ) -> None:
        self.events.append(MessageReceived(group, payload, source, sequence, hops))

    def _feed(self) -> None:
        self.stack.pump(self.now)


def _run(factory: type[EventStack]) -> tuple[list[tuple[int, Any]], list[bytes]]:
    net = FakeNetwork(seed=21, loss=0.02, duplicate=0.05)
    overlay = KbrOverlay(net, CONFIG, seed=21, core_factory=factory, kbr_of=lambda c: c.kbr)
    wire: list[bytes] = []
    overlay.grow(30, spacing=0.05)
    net.run_for(15.0)
    net.trace = lambda source, destination, data: wire.append(data)
    hosts = overlay.joined()
    rng = random.Random(22)
    members = rng.sample(hosts, 10)
    for host in members:
        net.call(host, lambda now, h=host: h.core.scribe.join(GROUP, now))
    net.run_for(3.0)
    senders = [*members[:3], *[h for h in hosts if h not in members][:3]]
    for round_ in range(20):
        for k, sender in enumerate(senders):
            payload = b"%d-%d" % (round_, k)
            net.call(
                sender, lambda now, s=sender, p=payload: s.core.scribe.multicast(GROUP, p, now)
            )
        net.run_for(0.05)
    net.run_for(2.0)
    log = [(host.core.kbr.handle.id, event) for host, event in overlay.events]
    return log, wire


def test_the_fast_path_delivers_exactly_what_the_event_path_delivers() -> None:
    slow_log, slow_wire = _run(EventStack)
    fast_log, fast_wire = _run(FastStack)
    received = [e for _, e in slow_log if isinstance(e, MessageReceived)]
    assert len(received) > 150  # the scenario delivers plenty
    assert fast_log == slow_log
    assert fast_wire == slow_wire


def test_events_are_built_only_when_asked_for() -> None:
    a, b = _pair()
    a.send_direct(b.handle, b"one", 1.0, compact=True)
    a.route(a.handle.id, b"two", 1.0)  # a is the root of its own id: delivered at once
    _deliver(a, {b.handle.address: b}, 1.0)
    assert b.next_upcall() == (b"one", a.handle)
    assert a.next_upcall() == (a.handle.id, b"two", a.handle, 0)
    a.route(a.handle.id, b"three", 1.0)
    assert a.next_event() == Delivered(a.handle.id, b"three", a.handle, 0)


# --- one frame per 1400-byte message -------------------------------------------------


def test_a_1400_byte_message_is_one_frame_either_way() -> None:
    fragmenter = Fragmenter(FragmentConfig(), first_message_id=0)
    a, b = _pair()
    _, key = canonical_group(GROUP)
    payload = bytes(1400)
    # Tree edge: KBR DATA carrying Scribe DATA.
    a.send_direct(b.handle, encode_data(key, a.handle, 1, payload), 1.0, compact=True)
    # Off the tree: KBR ROUTE_DATA carrying Scribe MULTICAST, to whichever is closer.
    a.route(b.handle.id, encode_multicast(1, payload), 1.0)
    out = a.datagrams_to_send()
    assert len(out) == 2
    for data, _ in out:
        assert len(data) - len(payload) == 70
        assert len(fragmenter.fragment(data)) == 1
    assert OverlayTechnology().atomic_msg_size("overlay") == 1401


def test_ipv6_peers_get_frames_of_their_own_budget() -> None:
    fragmenter = Fragmenter(FragmentConfig(), first_message_id=0)
    assert [len(f) for f in fragmenter.fragment(bytes(1460))] == [1461]
    assert len(fragmenter.fragment(bytes(1460), ipv6=True)) == 2
    assert all(len(f) <= 1452 for f in fragmenter.fragment(bytes(5000), ipv6=True))


# --- DatagramBatcher ---------------------------------------------------------------------


def test_the_batcher_sends_every_payload_as_its_own_datagram() -> None:
    if not mmsg.available():
        return
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with contextlib.closing(receiver), contextlib.closing(sender):
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        port = receiver.getsockname()[1]
        sockaddr = struct.pack(
            "=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton("127.0.0.1")
        )
        batcher = mmsg.DatagramBatcher(sender.fileno())
        payloads: list[bytes | memoryview] = [
            b"a",
            memoryview(b"view"),
            b"",
            bytes(range(256)) * 5,
            bytes(bytearray(b"ba")),
        ] * 12
        assert batcher.send(payloads, sockaddr) == 60
        assert batcher.send([], sockaddr) == 0
        got = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(receiver.recv(4096))
        assert got == [bytes(p) for p in payloads]


def _member_and_sender() -> tuple[OverlayStack, list[Any], list[tuple[bytes, tuple[str, int]]]]:
    """A member stack (root of GROUP), what it delivers, and 20 messages a sender sent it."""
    _, key = canonical_group(GROUP)
    a, b = _pair()
    root, sender = (a, b) if a.is_root(key) else (b, a)
    delivered: list[Any] = []
    member = OverlayStack(
        root, ScribeNode(root, FAST), delivered.append, lambda *m: delivered.append(m)
    )
    member.scribe.join(GROUP, 0.0)
    member.pump(0.0)
    source = OverlayStack(sender, ScribeNode(sender, FAST), lambda e: None)
    for n in range(20):
        source.scribe.multicast(GROUP, b"m%d" % n, 1.0)
    source.pump(1.0)
    out = [(data, sender.handle.address) for data, _ in sender.datagrams_to_send()]
    assert len(out) == 20
    delivered.clear()
    return member, delivered, out


def test_a_batch_of_datagrams_delivers_what_one_by_one_delivers() -> None:
    one, one_got, datagrams = _member_and_sender()
    for data, source in datagrams:
        one.receive_datagram(data, source, 2.0)
    batch, batch_got, same = _member_and_sender()
    assert same == datagrams
    batch.receive_datagrams(datagrams, 2.0)
    assert batch_got == one_got
    assert [m[1] for m in one_got if isinstance(m, tuple)] == [b"m%d" % n for n in range(20)]
