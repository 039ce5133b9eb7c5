"""One KBR core driven by hand: join handshake, probes, failure, leave, misuse, bounds, fuzz."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamcast.errors import ClosedError, MessageTooLongError, UsageError
from hamcast.overlay.api import (
    Delivered,
    DirectReceived,
    Joined,
    KbrEvent,
    KeyBasedRouting,
    NeighborsChanged,
    NodeFailed,
    RouteStep,
)
from hamcast.overlay.ids import ID_SPACE, NodeHandle
from hamcast.overlay.kbr import KbrConfig, KbrNode, NodeState
from hamcast.overlay.kbr.messages import (
    Announce,
    Datagram,
    Direct,
    JoinReply,
    LeafSet,
    Message,
    MessageType,
    Ping,
    Pong,
    Route,
    Rows,
    WireCodec,
    encode_handle,
)
from tests.overlay_sim import FakeNetwork, KbrOverlay

CONFIG = KbrConfig()
CODEC = WireCodec(
    rows=CONFIG.rows,
    columns=CONFIG.columns,
    leaf_set_size=CONFIG.leaf_set_size,
    max_payload=CONFIG.max_payload,
    max_hops=CONFIG.max_hops,
    max_rows_per_message=CONFIG.max_rows_per_message,
)
LOW = 1 << 120
HIGH = 9 << 124


def make(node_id: int, host: int, config: KbrConfig = CONFIG) -> KbrNode:
    return KbrNode(NodeHandle(node_id, (f"10.0.0.{host}", 4000)), config, random.Random(host))


def events(node: KbrNode) -> list[KbrEvent]:
    out = []
    while (event := node.next_event()) is not None:
        out.append(event)
    return out


def sent(node: KbrNode) -> list[tuple[Datagram, tuple[str, int]]]:
    return [(CODEC.decode(data), address) for data, address in node.datagrams_to_send()]


def deliver(source: KbrNode, target: KbrNode, now: float) -> list[Datagram]:
    """Move every datagram ``source`` has for ``target``'s address; return what moved."""
    moved = []
    for data, address in source.datagrams_to_send():
        if address == target.handle.address:
            target.receive_datagram(data, source.handle.address, now)
            moved.append(CODEC.decode(data))
    return moved


def forge(sender: NodeHandle, message: Message, member: bool = True) -> bytes:
    return CODEC.encode(encode_handle(sender), member, message)


def pair() -> tuple[KbrNode, KbrNode]:
    """Two joined nodes that know each other (A started the overlay, B joined through it)."""
    a, b = make(LOW, 1), make(HIGH, 2)
    a.bootstrap([], 0.0)
    b.bootstrap([a.handle.address], 0.0)
    deliver(b, a, 0.01)  # JOIN
    deliver(a, b, 0.02)  # JOIN_REPLY
    deliver(b, a, 0.03)  # ANNOUNCE
    events(a)
    events(b)
    return a, b


# --- alone -------------------------------------------------------------------


def test_implements_the_key_based_routing_contract() -> None:
    node: KeyBasedRouting = make(LOW, 1)  # checked by mypy: the Protocol's shape
    assert node.handle.id == LOW and node.next_event() is None


def test_first_node_is_joined_at_once_and_root_of_everything() -> None:
    a = make(LOW, 1)
    assert a.state is NodeState.IDLE
    a.bootstrap([], 0.0)
    assert events(a) == [Joined(a.handle), NeighborsChanged(())]
    assert a.joined and a.get_timer() is not None
    assert a.datagrams_to_send() == []
    key = 12345
    assert a.is_root(key)
    a.route(key, b"hi", 1.0)
    assert events(a) == [Delivered(key, b"hi", a.handle, 0)]
    a.route(key, b"hi", 1.0, intercept=True)
    assert events(a) == [RouteStep(key, b"hi", a.handle, None, None, 0)]
    a.send_direct(a.handle, b"me", 1.0)
    assert events(a) == [DirectReceived(b"me", a.handle)]


def test_misuse_is_reported_to_the_caller() -> None:
    a = make(LOW, 1)
    with pytest.raises(UsageError, match="not joined"):
        a.route(1, b"", 0.0)
    with pytest.raises(UsageError, match="host, port"):
        a.bootstrap([("10.0.0.9",)], 0.0)  # type: ignore[list-item]
    a.bootstrap([], 0.0)
    with pytest.raises(UsageError, match="once"):
        a.bootstrap([], 0.0)
    with pytest.raises(MessageTooLongError):
        a.route(1, b"x" * (CONFIG.max_payload + 1), 0.0)
    with pytest.raises(UsageError, match="128-bit"):
        a.route(ID_SPACE, b"", 0.0)
    with pytest.raises(UsageError, match="itself"):
        a.forward(1, b"", a.handle, 0.0)
    a.leave(1.0)
    assert a.state is NodeState.LEFT and a.get_timer() is None
    with pytest.raises(ClosedError):
        a.send_direct(a.handle, b"", 2.0)
    with pytest.raises(UsageError, match="IP address"):
        make(LOW, 1).__class__(NodeHandle(1, ("example.org", 1)), CONFIG, random.Random())


# --- joining -----------------------------------------------------------------------


def test_join_handshake() -> None:
    a, b = make(LOW, 1), make(HIGH, 2)
    a.bootstrap([], 0.0)
    events(a)
    b.bootstrap([a.handle.address], 0.0)
    assert b.state is NodeState.JOINING
    ((raw, address),) = b.datagrams_to_send()
    join = CODEC.decode(raw)
    assert address == a.handle.address
    assert join.message.TYPE is MessageType.JOIN and not join.member
    b.receive_datagram(b"", a.handle.address, 0.0)  # garbage while joining: counted
    assert b.stats.malformed == 1
    # The JOIN is routed to its root (A, alone) which answers with its state.
    a.receive_datagram(raw, b.handle.address, 0.01)
    assert a.leaf_set() == []  # a joining node is not a member yet
    ((reply, address),) = sent(a)
    assert address == b.handle.address
    assert isinstance(reply.message, JoinReply) and reply.member
    b.receive_datagram(forge(a.handle, reply.message), a.handle.address, 0.02)
    assert b.joined
    assert events(b) == [Joined(b.handle), NeighborsChanged((a.handle,))]
    (announce, address), *_ = sent(b)
    assert isinstance(announce.message, Announce) and address == a.handle.address
    a.receive_datagram(forge(b.handle, announce.message), b.handle.address, 0.03)
    assert a.leaf_set() == [b.handle]
    assert events(a) == [NeighborsChanged((b.handle,))]


def test_slots_refuse_stray_attributes() -> None:
    with pytest.raises(AttributeError):
        make(LOW, 1).stray = 1  # type: ignore[attr-defined]


def test_join_is_retried_through_the_next_address() -> None:
    b = make(HIGH, 2)
    nowhere = ("10.9.9.9", 4000)
    b.bootstrap([nowhere, ("10.0.0.1", 4000)], 0.0)
    assert [address for _, address in sent(b)] == [nowhere]
    assert b.get_timer() == CONFIG.join_timeout
    b.handle_timer(CONFIG.join_timeout)
    ((join, address),) = sent(b)
    assert address == ("10.0.0.1", 4000) and join.message.TYPE is MessageType.JOIN
    b.handle_timer(2 * CONFIG.join_timeout)
    assert [address for _, address in sent(b)] == [nowhere]


class Switch:
    """Delivers every queued datagram among some nodes, in order, until all are quiet."""

    def __init__(self, *nodes: KbrNode) -> None:
        self.nodes = {node.handle.address: node for node in nodes}
        self.log: list[tuple[KbrNode, Datagram, tuple[str, int]]] = []

    def run(self, now: float) -> None:
        pending: list[tuple[KbrNode, bytes, tuple[str, int]]] = []
        while True:
            for node in self.nodes.values():
                pending.extend((node, data, to) for data, to in node.datagrams_to_send())
            if not pending:
                return
            source, data, to = pending.pop(0)
            self.log.append((source, CODEC.decode(data), to))
            if to in self.nodes:
                self.nodes[to].receive_datagram(data, source.handle.address, now)


def test_join_verifies_the_roots_leaves_before_announcing() -> None:
    a, b = pair()
    d = make(5 << 124, 4)
    switch = Switch(a, b, d)
    d.bootstrap([a.handle.address], 1.0)
    switch.run(1.0)
    assert d.joined and {h.id for h in b.leaf_set()} == {LOW, 5 << 124}
    # C joins through A; its root is B, whose leaf set names D, which C never
    # heard from: C pings D as a non-member before it announces itself.
    c = make(HIGH - (1 << 100), 3)
    switch.nodes[c.handle.address] = c
    c.bootstrap([a.handle.address], 2.0)
    switch.run(2.0)
    assert c.joined
    from_c = [(datagram, to) for source, datagram, to in switch.log if source is c]
    kinds = [(datagram.message.TYPE.name, datagram.member) for datagram, _ in from_c]
    assert ("PING", False) in kinds
    first_member = next(i for i, (_, member) in enumerate(kinds) if member)
    assert all(not member for _, member in kinds[:first_member])
    assert kinds[first_member][0] == "ANNOUNCE"
    for node in (a, b, c, d):
        assert len(node.leaf_set()) == 3


def test_join_completes_without_an_answering_leaf() -> None:
    c = make(HIGH, 3)
    c.bootstrap([("10.0.0.1", 4000)], 0.0)
    sent(c)
    root = NodeHandle(LOW, ("10.0.0.1", 4000))
    ghost = NodeHandle(LOW + 1, ("10.0.0.7", 4000))
    c.receive_datagram(forge(root, JoinReply((), (ghost,))), root.address, 0.1)
    assert c.state is NodeState.JOINING
    assert c.get_timer() == pytest.approx(0.1 + CONFIG.probe_timeout)
    c.handle_timer(0.1 + CONFIG.probe_timeout)
    assert c.joined and c.leaf_set() == [root]


# --- probing, failure, leave ------------------------------------------------------------


def test_round_trip_time_comes_from_the_echoed_timestamp() -> None:
    a, b = pair()
    first_round = a.get_timer()
    assert first_round is not None
    a.handle_timer(first_round)
    pings = deliver(a, b, first_round + 0.03)
    assert pings and isinstance(pings[0].message, Ping)
    assert pings[0].message.timestamp == first_round
    assert pings[0].message.leaf_set == (b.handle,)  # first round after a change shares it
    deliver(b, a, first_round + 0.1)
    assert a.rtt(b.handle.id) == pytest.approx(0.1)
    assert a.rtt(12345) is None


def test_silent_leaf_is_declared_failed_within_the_failure_timeout() -> None:
    a, b = pair()
    last_contact = 0.03
    now = last_contact
    failed: list[KbrEvent] = []
    while not failed:
        deadline = a.get_timer()
        assert deadline is not None and deadline <= last_contact + CONFIG.failure_timeout
        now = deadline
        a.handle_timer(now)
        a.datagrams_to_send()  # lost: B is gone
        failed = [e for e in events(a) if isinstance(e, NodeFailed)]
    assert failed == [NodeFailed(b.handle)]
    assert a.leaf_set() == [] and a.routing_table() == []
    assert a.is_root(HIGH)
    # Lists from others that still name B do not bring it back ...
    c = NodeHandle(5 << 124, ("10.0.0.3", 4000))
    a.receive_datagram(forge(c, LeafSet((b.handle,))), c.address, now)
    assert all(address != b.handle.address for _, address in sent(a))
    # ... but B itself speaking does.
    a.receive_datagram(forge(b.handle, Ping(now)), b.handle.address, now + 1)
    assert b.handle in a.leaf_set()


def test_a_node_that_keeps_us_as_a_leaf_wrongly_gets_our_leaf_set() -> None:
    """Regression (simulator, 150 nodes, seed 2): a node joined through a root
    that did not know its neighbours yet kept only far nodes as leaves, which
    never listed it, and pongs carry no leaf set: it stayed misplaced (routes
    for keys near it ended elsewhere) until routing-table maintenance. A
    leaf-set ping from a node we would not keep as a leaf now gets our leaf
    set back."""
    a = make(LOW, 1)
    a.bootstrap([], 0.0)
    half = CONFIG.leaf_set_size // 2
    for offset in range(1, half + 1):
        for node_id in (LOW + offset, LOW - offset):
            near = NodeHandle(node_id, (f"10.0.1.{len(a.leaf_set()) + 1}", 4000))
            a.receive_datagram(forge(near, Announce(())), near.address, 0.1)
    assert len(a.leaf_set()) == CONFIG.leaf_set_size
    sent(a)
    events(a)
    # A far node that believes A is one of its leaves gossips its leaf set.
    far = NodeHandle(HIGH, ("10.0.2.1", 4000))
    a.receive_datagram(forge(far, Ping(1.0, (a.handle,))), far.address, 1.0)
    replies = [(d.message, address) for d, address in sent(a)]
    assert all(address == far.address for _, address in replies)
    assert [type(message) for message, _ in replies] == [Pong, Announce]
    announce = replies[1][0]
    assert isinstance(announce, Announce)
    assert announce.leaf_set == tuple(a.leaf_set())
    # A real leaf's gossip gets only the pong: no extra traffic when consistent.
    leaf = a.leaf_set()[0]
    a.receive_datagram(forge(leaf, Ping(2.0, (a.handle,))), leaf.address, 2.0)
    assert [type(d.message) for d, _ in sent(a)] == [Pong]
    # A plain keep-alive (no leaf set) from the far node gets only the pong too.
    a.receive_datagram(forge(far, Ping(3.0)), far.address, 3.0)
    assert [type(d.message) for d, _ in sent(a)] == [Pong]


def test_graceful_leave_tells_the_leaf_set() -> None:
    a, b = pair()
    b.leave(1.0)
    assert b.state is NodeState.LEFT and b.get_timer() is None
    goodbyes = deliver(b, a, 1.01)
    assert [type(d.message).__name__ for d in goodbyes] == ["Leave"]
    assert not goodbyes[0].member and goodbyes[0].message.leaf_set == (a.handle,)  # type: ignore[union-attr]
    assert events(a) == [NodeFailed(b.handle), NeighborsChanged(())]
    assert a.leaf_set() == []
    # A straggler sent before the LEAVE does not bring B back; a new ANNOUNCE does.
    a.receive_datagram(forge(b.handle, Ping(0.9)), b.handle.address, 1.02)
    assert a.leaf_set() == []
    a.receive_datagram(forge(b.handle, Announce(())), b.handle.address, 5.0)
    assert a.leaf_set() == [b.handle]
    # B no longer listens.
    before = b.stats.total_dropped
    b.receive_datagram(forge(a.handle, Ping(2.0)), a.handle.address, 2.0)
    assert b.stats.total_dropped == before + 1 and b.datagrams_to_send() == []


# --- routing steps -----------------------------------------------------------------------


def test_intercepted_route_steps_name_previous_and_next_hop() -> None:
    a, b = pair()
    key = HIGH + 5
    a.route(key, b"join", 1.0, intercept=True)
    (step,) = events(a)
    assert step == RouteStep(key, b"join", a.handle, None, b.handle, 0)
    assert isinstance(step, RouteStep) and step.next_hop is not None
    a.forward(key, b"join'", step.next_hop, 1.0, step=step)
    deliver(a, b, 1.05)
    assert events(b) == [RouteStep(key, b"join'", a.handle, a.handle, None, 1)]


def test_plain_route_is_delivered_at_the_root_with_its_hop_count() -> None:
    a, b = pair()
    a.route(HIGH - 1, b"p", 1.0)
    assert events(a) == []
    deliver(a, b, 1.05)
    assert events(b) == [Delivered(HIGH - 1, b"p", a.handle, 1)]
    b.route(LOW + 1, b"q", 1.1)
    deliver(b, a, 1.15)
    assert events(a) == [Delivered(LOW + 1, b"q", b.handle, 1)]


def test_hop_limit_drops_a_route() -> None:
    a, b = pair()
    data = forge(b.handle, Route(HIGH - 1, CONFIG.max_hops, False, b.handle, b""))
    a.receive_datagram(data, b.handle.address, 1.0)
    assert a.datagrams_to_send() == [] and events(a) == []
    assert a.stats.dropped["route"] == 1


# --- refusing input ------------------------------------------------------------------------


def test_unsolicited_and_impossible_input_is_dropped_and_counted() -> None:
    a, b = pair()
    c = NodeHandle(5 << 124, ("10.0.0.3", 4000))
    a.receive_datagram(forge(b.handle, LeafSet((c,))), b.handle.address, 1.0)
    a.receive_datagram(forge(b.handle, Rows(((0, (c,)),))), b.handle.address, 1.0)
    a.receive_datagram(forge(b.handle, JoinReply((), (c,))), b.handle.address, 1.0)
    impostor = NodeHandle(a.handle.id, ("10.0.0.66", 4000))
    a.receive_datagram(forge(impostor, Direct(b"x")), impostor.address, 1.0)
    stats = a.stats
    assert (stats.dropped["leafset"], stats.dropped["rows"], stats.dropped["join_reply"]) == (
        1,
        1,
        1,
    )
    assert stats.dropped["direct"] == 1
    assert events(a) == [] and c.id not in {h.id for h in a.neighbors()}
    a.receive_datagram(b"\x00" * (CONFIG.max_datagram_size + 1), b.handle.address, 1.0)
    a.receive_datagram(b"\xb2garbage", b.handle.address, 1.0)
    assert (a.stats.oversize, a.stats.malformed) == (1, 1)


# --- bounds --------------------------------------------------------------------------------


def test_event_queue_is_bounded() -> None:
    a = make(LOW, 1, dataclasses.replace(CONFIG, max_events=3))
    a.bootstrap([], 0.0)  # Joined + NeighborsChanged
    for _ in range(5):
        a.route(1, b"", 0.0)
    assert len(events(a)) == 3
    assert a.stats.events_lost == 4


def test_send_queue_is_bounded() -> None:
    a = make(LOW, 1, dataclasses.replace(CONFIG, max_send_queue=2))
    a.bootstrap([], 0.0)
    for _ in range(5):
        a.send_direct(NodeHandle(7, ("10.0.0.7", 1)), b"", 0.0)
    assert len(a.datagrams_to_send()) == 2
    assert a.stats.send_queue_full == 3 and a.stats.sent["direct"] == 2


def test_candidate_probes_are_bounded() -> None:
    c = make(HIGH, 3, dataclasses.replace(CONFIG, max_pending_probes=2))
    c.bootstrap([("10.0.0.1", 4000)], 0.0)
    sent(c)
    root = NodeHandle(LOW, ("10.0.0.1", 4000))
    leaves = tuple(NodeHandle(HIGH + i, (f"10.0.1.{i}", 4000)) for i in range(1, 11))
    c.receive_datagram(forge(root, JoinReply((), leaves)), root.address, 0.1)
    assert c.table_sizes()["candidates"] == 2
    assert len(sent(c)) == 2
    assert c.stats.candidates_ignored == 8


# --- fuzz ------------------------------------------------------------------------------------


def _corpus() -> tuple[list[bytes], KbrOverlay]:
    """Real datagrams of every kind from a small overlay, to mutate."""
    net = FakeNetwork(seed=11)
    # A small leaf set, so that the ring is not complete and repairs happen.
    overlay = KbrOverlay(net, dataclasses.replace(CONFIG, leaf_set_size=4), seed=12)
    captured: list[bytes] = []
    net.trace = lambda source, destination, data: captured.append(data)
    overlay.grow(9, spacing=0.2)
    net.run_for(12)
    hosts = overlay.joined()
    overlay.route(hosts[0], 1, b"payload", intercept=False)
    overlay.route(hosts[1], 2, b"step", intercept=True)
    net.call(
        hosts[2], lambda now: overlay.kbr(hosts[2]).send_direct(hosts[3].core.handle, b"d", now)
    )
    net.call(
        hosts[2],
        lambda now: overlay.kbr(hosts[2]).send_direct(
            hosts[4].core.handle, b"compact", now, compact=True
        ),
    )
    # An intercepted route passed on by hand (nothing above KBR here does it).
    net.call(
        hosts[3],
        lambda now: overlay.kbr(hosts[3]).forward(3, b"fwd", hosts[4].core.handle, now),
    )
    overlay.leave(hosts[5])
    overlay.kill(hosts[6])
    net.run_for(70)
    return captured, overlay


CORPUS, FUZZ_OVERLAY = _corpus()
KINDS_IN_CORPUS = {data[1] for data in CORPUS}


def test_fuzz_corpus_has_every_kind() -> None:
    assert {int(kind) for kind in MessageType} == KINDS_IN_CORPUS


def _check_survives(data: bytes) -> None:
    host = FUZZ_OVERLAY.joined()[0]
    node = FUZZ_OVERLAY.kbr(host)
    before = node.stats
    node.receive_datagram(data, ("10.0.0.200", 4000), FUZZ_OVERLAY.net.now)
    after = node.stats
    counted = (
        after.total_received
        + after.malformed
        + after.oversize
        + after.unsupported_version
        - (before.total_received + before.malformed + before.oversize + before.unsupported_version)
    )
    assert counted == 1
    # Still consistent: every table entry resolves to a handle.
    node.leaf_set()
    node.routing_table()
    node.is_root(data.__hash__() % ID_SPACE)
    node.datagrams_to_send()
    events(node)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    _check_survives(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    cut=st.integers(min_value=0, max_value=40),
    tail=st.binary(max_size=8),
)
def test_mutated_datagrams_never_raise(
    index: int, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(CORPUS[index % len(CORPUS)])
    for position, value in flips:
        data[position % len(data)] = value
    if cut:
        del data[-cut:]
    _check_survives(bytes(data) + tail)
