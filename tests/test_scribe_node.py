"""One ScribeNode against a scripted KBR: the state machine, message by message."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hamcast.errors import (
    InvalidURIError,
    MessageTooLongError,
    NotJoinedError,
    ResourceError,
    UsageError,
)
from hamcast.overlay.api import (
    Delivered,
    DirectReceived,
    Joined,
    KbrEvent,
    NeighborsChanged,
    NodeFailed,
    RouteStep,
)
from hamcast.overlay.ids import NodeHandle
from hamcast.overlay.scribe import (
    BecameRoot,
    ChildAdded,
    ChildRemoved,
    MessageReceived,
    ParentChanged,
    Role,
    RootLost,
    ScribeConfig,
    ScribeEvent,
    ScribeNode,
    SourceSeen,
    TreeState,
    canonical_group,
)
from hamcast.overlay.scribe.messages import (
    Accept,
    Data,
    Heartbeat,
    Join,
    Leave,
    Message,
    Multicast,
    Redirect,
    Refresh,
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
)
from hamcast.overlay.scribe.node import _Dedup

G = "ham:opaque:news"
NAME, KEY = canonical_group(G)
ME = NodeHandle(0x5000, ("10.0.0.1", 7000))
P = NodeHandle(0x6000, ("10.0.0.2", 7000))  # parent
R = NodeHandle(0x7000, ("10.0.0.3", 7000))  # root
A = NodeHandle(0x1000, ("10.0.0.4", 7000))
B = NodeHandle(0x2000, ("10.0.0.5", 7000))
C = NodeHandle(0x3000, ("10.0.0.6", 7000))
S = NodeHandle(0x9000, ("10.0.0.7", 7000))  # a source
CONFIG = ScribeConfig(
    heartbeat_interval=1.0, parent_timeout=3.5, child_timeout=3.5, join_timeout=1.0
)


def pack(*ids: int) -> bytes:
    return pack_path(ids)


class FakeKbr:
    """Records what Scribe asks of KBR; ``is_root`` answers from ``root_keys``."""

    def __init__(self) -> None:
        self.root_keys: set[int] = set()
        #: Raised by every send while set, as a KBR node that has not joined does.
        self.refuse: Exception | None = None
        self.routed: list[tuple[int, bytes, bool]] = []
        self.forwarded: list[tuple[int, bytes, NodeHandle]] = []
        self.direct: list[tuple[NodeHandle, bytes]] = []

    @property
    def handle(self) -> NodeHandle:
        return ME

    def route(self, key: int, payload: bytes, now: float, *, intercept: bool = False) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.routed.append((key, payload, intercept))

    def forward(
        self,
        key: int,
        payload: bytes,
        next_hop: NodeHandle,
        now: float,
        *,
        step: RouteStep | None = None,
    ) -> None:
        assert step is not None, "Scribe always passes the step on"
        if self.refuse is not None:
            raise self.refuse
        self.forwarded.append((key, payload, next_hop))

    def send_direct(
        self, node: NodeHandle, payload: bytes, now: float, *, compact: bool = False
    ) -> None:
        if self.refuse is not None:
            raise self.refuse
        # Data goes compact, control messages do not.
        assert compact == (payload[2] == 8), (compact, payload[:3])
        self.direct.append((node, payload))

    def is_root(self, key: int) -> bool:
        return key in self.root_keys

    def leaf_set(self) -> list[NodeHandle]:
        return []

    def routing_table(self) -> list[NodeHandle]:
        return []

    def next_event(self) -> KbrEvent | None:
        return None

    def sent(self) -> list[tuple[NodeHandle, Message]]:
        """Direct sends since the last call, decoded."""
        out = [(node, decode(payload)) for node, payload in self.direct]
        self.direct.clear()
        return out


def make(config: ScribeConfig = CONFIG) -> tuple[ScribeNode, FakeKbr]:
    kbr = FakeKbr()
    return ScribeNode(kbr, config), kbr


def drain(node: ScribeNode) -> list[ScribeEvent]:
    out = []
    while (event := node.next_event()) is not None:
        out.append(event)
    return out


def own_step(node: ScribeNode, kbr: FakeKbr, next_hop: NodeHandle | None, now: float) -> None:
    key, payload, intercept = kbr.routed[-1]
    assert intercept
    node.handle_kbr_event(RouteStep(key, payload, ME, None, next_hop, 0), now)


def attached(config: ScribeConfig = CONFIG) -> tuple[ScribeNode, FakeKbr]:
    """A member attached below P, whose path is R, P."""
    node, kbr = make(config)
    node.join(G, 0.0)
    own_step(node, kbr, P, 0.0)
    node.handle_kbr_event(DirectReceived(encode_accept(KEY, True, pack(R.id, P.id)), P), 0.1)
    drain(node)
    kbr.direct.clear()
    kbr.forwarded.clear()
    return node, kbr


def transit_join(
    node: ScribeNode, joiner: NodeHandle, next_hop: NodeHandle | None, now: float, origin=None
) -> None:
    payload = encode_join(KEY, NAME.encode(), joiner, 0)
    step = RouteStep(KEY, payload, origin or joiner, joiner, next_hop, 1)
    node.handle_kbr_event(step, now)


def data(source: NodeHandle, sequence: int, payload: bytes = b"x", hops: int = 1) -> bytes:
    return encode_data(KEY, source, sequence, payload, hops=hops)


# --- joining -----------------------------------------------------------------


def test_join_routes_an_intercepted_join_naming_this_node() -> None:
    node, kbr = make()
    node.join("HAM:opaque:news", 0.0)  # any spelling; the canonical name is kept
    assert len(kbr.routed) == 1
    key, payload, intercept = kbr.routed[0]
    assert key == KEY and intercept
    assert decode(payload) == Join(KEY, NAME, ME, 0)
    assert node.groups() == {NAME: Role.MEMBER}
    assert node.info(G).state is TreeState.DETACHED  # type: ignore[union-attr]
    node.join(G, 0.1)  # idempotent
    assert len(kbr.routed) == 1


def test_join_at_the_root_makes_this_node_the_root() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    own_step(node, kbr, None, 0.0)
    assert drain(node) == [BecameRoot(NAME)]
    assert node.is_root(G)
    assert node.groups() == {NAME: Role.MEMBER | Role.ROOT}
    assert kbr.forwarded == []


def test_join_passes_on_then_accept_attaches() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    own_step(node, kbr, P, 0.0)
    assert kbr.forwarded == [(KEY, kbr.routed[0][1], P)]
    node.handle_kbr_event(DirectReceived(encode_accept(KEY, True, pack(R.id, P.id)), P), 0.1)
    assert drain(node) == [ParentChanged(NAME, P)]
    assert node.parent(G) == P
    info = node.info(G)
    assert info is not None and info.path == (R.id, P.id) and info.rooted
    assert info.state is TreeState.ATTACHED


def test_transit_join_makes_a_forwarder_that_adopts_and_passes_on() -> None:
    node, kbr = make()
    transit_join(node, A, P, 0.0)
    assert drain(node) == [ChildAdded(NAME, A)]
    assert kbr.sent() == [
        (
            A,
            Accept(
                KEY,
                False,
                pack(
                    ME.id,
                ),
            ),
        )
    ]
    [(key, payload, next_hop)] = kbr.forwarded
    assert (key, next_hop) == (KEY, P)
    assert decode(payload) == Join(KEY, NAME, ME, 0)  # the forwarder now joins for itself
    assert node.groups() == {NAME: Role.FORWARDER}
    assert node.children(G) == [A]


def test_transit_join_at_the_root_ends_there() -> None:
    node, kbr = make()
    transit_join(node, A, None, 0.0)
    assert drain(node) == [BecameRoot(NAME), ChildAdded(NAME, A)]
    assert kbr.sent() == [
        (
            A,
            Accept(
                KEY,
                True,
                pack(
                    ME.id,
                ),
            ),
        )
    ]
    assert kbr.forwarded == []
    assert node.groups() == {NAME: Role.FORWARDER | Role.ROOT}


def test_join_reaching_a_tree_node_stops_there() -> None:
    node, kbr = attached()
    transit_join(node, A, R, 1.0)
    assert kbr.forwarded == []
    assert kbr.sent() == [(A, Accept(KEY, True, pack(R.id, P.id, ME.id)))]
    assert drain(node) == [ChildAdded(NAME, A)]
    # A retried JOIN (its ACCEPT was lost) is answered again, without a new event.
    transit_join(node, A, R, 1.5)
    assert kbr.sent() == [(A, Accept(KEY, True, pack(R.id, P.id, ME.id)))]
    assert drain(node) == []


def test_join_from_an_ancestor_goes_on_toward_the_root() -> None:
    node, kbr = attached()
    transit_join(node, P, R, 1.0)  # the parent itself
    transit_join(node, A, R, 1.0, origin=R)  # a re-joining ancestor's JOIN, named by A
    assert kbr.sent() == [] and node.children(G) == []
    assert [(key, decode(payload).joiner, hop) for key, payload, hop in kbr.forwarded] == [  # type: ignore[union-attr]
        (KEY, P, R),
        (KEY, A, R),
    ]
    assert node.stats.joins_passed_on == 2


def test_pushed_down_join_from_an_ancestor_is_refused() -> None:
    node, kbr = attached()
    node.handle_kbr_event(DirectReceived(encode_join(KEY, NAME.encode(), P, 1), P), 1.0)
    assert kbr.sent() == [] and node.stats.joins_refused_loop == 1


def test_join_from_an_ancestor_at_the_kbr_root_makes_us_root_first() -> None:
    node, kbr = attached()
    transit_join(node, P, None, 1.0)
    assert node.is_root(G) and node.children(G) == [P]
    assert kbr.sent() == [
        (P, Leave(KEY)),
        (
            P,
            Accept(
                KEY,
                True,
                pack(
                    ME.id,
                ),
            ),
        ),
    ]


def test_own_join_coming_back_is_dropped() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    _, payload, _ = kbr.routed[0]
    node.handle_kbr_event(RouteStep(KEY, payload, ME, A, P, 3), 0.1)
    assert kbr.forwarded == [] and node.stats.joins_looped == 1


def test_join_on_tree_at_the_kbr_root_promotes_this_node() -> None:
    node, kbr = attached()
    transit_join(node, A, None, 1.0)
    assert drain(node) == [ParentChanged(NAME, None), BecameRoot(NAME), ChildAdded(NAME, A)]
    assert kbr.sent() == [
        (P, Leave(KEY)),
        (
            A,
            Accept(
                KEY,
                True,
                pack(
                    ME.id,
                ),
            ),
        ),
    ]
    assert node.is_root(G) and node.parent(G) is None


# --- bounded fan-out ---------------------------------------------------------


def test_full_node_pushes_joiner_down_to_nearest_child() -> None:
    node, kbr = make(ScribeConfig(max_children=2, max_redirects=1))
    transit_join(node, A, None, 0.0)
    transit_join(node, C, None, 0.0)
    kbr.sent()
    transit_join(node, B, None, 0.1)
    # B (0x2000) is as near A (0x1000) as C (0x3000); min keeps the first child.
    assert kbr.sent() == [(B, Redirect(KEY, 1, A))]
    assert len(node.children(G)) == 2 and node.stats.joins_redirected == 1
    # A redirected JOIN that finds this node full again has no budget left.
    node.handle_kbr_event(DirectReceived(encode_join(KEY, NAME.encode(), B, 1), B), 0.2)
    assert kbr.sent() == [] and node.stats.joins_refused_full == 1


def test_redirect_makes_the_joiner_ask_the_target_directly() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    own_step(node, kbr, P, 0.0)
    node.handle_kbr_event(DirectReceived(encode_redirect(KEY, 1, A), P), 0.1)
    assert kbr.sent() == [(A, Join(KEY, NAME, ME, 1))]
    node.handle_kbr_event(DirectReceived(encode_accept(KEY, True, pack(R.id, A.id)), A), 0.2)
    assert node.parent(G) == A
    # A redirect once attached is stale and ignored.
    node.handle_kbr_event(DirectReceived(encode_redirect(KEY, 1, B), P), 0.3)
    assert kbr.sent() == [] and node.stats.unexpected == 1


def test_direct_join_is_accepted_only_on_the_tree() -> None:
    node, _kbr = make()
    node.handle_kbr_event(DirectReceived(encode_join(KEY, NAME.encode(), A, 1), A), 0.0)
    assert node.stats.joins_no_tree == 1 and node.groups() == {}
    # ... and only from the joiner it names.
    node, _ = attached()
    node.handle_kbr_event(DirectReceived(encode_join(KEY, NAME.encode(), A, 1), B), 1.0)
    assert node.children(G) == [] and node.stats.unexpected == 1


# --- leaving and pruning -----------------------------------------------------


def test_leave_of_last_child_prunes_a_forwarder_upward() -> None:
    node, kbr = make()
    transit_join(node, A, P, 0.0)
    node.handle_kbr_event(DirectReceived(encode_accept(KEY, True, pack(R.id, P.id)), P), 0.1)
    drain(node)
    kbr.sent()
    node.handle_kbr_event(DirectReceived(encode_leave(KEY), A), 1.0)
    assert drain(node) == [ChildRemoved(NAME, A), ParentChanged(NAME, None)]
    assert kbr.sent() == [(P, Leave(KEY))]
    assert node.groups() == {}
    assert node.get_timer() is None


def test_member_leave_keeps_a_forwarder_with_children() -> None:
    node, _ = attached()
    transit_join(node, A, R, 1.0)
    node.leave(G, 2.0)
    assert node.groups() == {NAME: Role.FORWARDER}
    assert not node.is_member(G)
    with pytest.raises(NotJoinedError):
        node.leave(G, 2.0)
    with pytest.raises(NotJoinedError):
        node.leave("ham:opaque:other", 2.0)


def test_leave_of_a_root_member_without_children_drops_the_tree() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    own_step(node, kbr, None, 0.0)
    drain(node)
    node.leave(G, 1.0)
    assert drain(node) == [RootLost(NAME)]
    assert node.groups() == {}


# --- failures, heartbeats and timers -----------------------------------------


def test_parent_failure_rejoins_at_once() -> None:
    node, kbr = attached()
    node.handle_kbr_event(NodeFailed(P), 1.0)
    assert drain(node) == [ParentChanged(NAME, None)]
    assert len(kbr.routed) == 2 and kbr.routed[-1][2]
    assert node.info(G).state is TreeState.DETACHED  # type: ignore[union-attr]


def test_parent_leave_rejoins() -> None:
    node, kbr = attached()
    node.handle_kbr_event(DirectReceived(encode_leave(KEY), P), 1.0)
    assert node.parent(G) is None and len(kbr.routed) == 2


def test_heartbeats_refreshes_and_parent_timeout() -> None:
    node, kbr = attached()
    transit_join(node, A, R, 0.2)
    kbr.sent()
    assert node.get_timer() == pytest.approx(1.0)  # the first upkeep round
    node.handle_timer(1.0)
    sent = kbr.sent()
    assert (P, Refresh(KEY, 1)) in sent
    assert (A, Heartbeat(KEY, True, pack(R.id, P.id, ME.id))) in sent
    node.handle_kbr_event(DirectReceived(encode_refresh(KEY, 0), A), 1.5)
    node.handle_kbr_event(DirectReceived(encode_heartbeat(KEY, True, pack(R.id, P.id)), P), 2.0)
    for now in (3.0, 4.0, 5.0):
        node.handle_kbr_event(DirectReceived(encode_refresh(KEY, 0), A), now)
        node.handle_timer(now)
    assert node.parent(G) == P
    node.handle_timer(6.0)  # 4 s since the parent's last heartbeat
    assert node.parent(G) is None and node.stats.parent_timeouts == 1
    assert len(kbr.routed) == 2


def test_silent_child_is_dropped_and_told() -> None:
    node, kbr = attached()
    transit_join(node, A, R, 0.0)
    drain(node)
    for now in (1.0, 2.0, 3.0):
        node.handle_kbr_event(DirectReceived(encode_heartbeat(KEY, True, pack(R.id, P.id)), P), now)
        node.handle_timer(now)
    kbr.sent()
    node.handle_kbr_event(DirectReceived(encode_heartbeat(KEY, True, pack(R.id, P.id)), P), 4.0)
    node.handle_timer(4.0)
    assert drain(node) == [ChildRemoved(NAME, A)]
    assert (A, Leave(KEY)) in kbr.sent()
    assert node.stats.child_timeouts == 1


def test_join_retries_back_off() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    times = []
    now = 0.0
    for _ in range(12):
        due = node.get_timer()
        assert due is not None
        # The periodic upkeep shares the timer; only count JOIN retries.
        before = len(kbr.routed)
        node.handle_timer(due)
        now = due
        if len(kbr.routed) > before:
            times.append(now)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:3] == [1.0, 2.0, 4.0]


def test_heartbeat_while_detached_is_taken_as_a_lost_accept() -> None:
    node, _ = make()
    node.join(G, 0.0)
    node.handle_kbr_event(DirectReceived(encode_heartbeat(KEY, True, pack(R.id, P.id)), P), 0.5)
    assert node.parent(G) == P


def test_path_with_this_node_in_it_is_a_loop() -> None:
    node, kbr = attached()
    beat = encode_heartbeat(KEY, False, pack(A.id, ME.id, P.id))
    node.handle_kbr_event(DirectReceived(beat, P), 1.0)
    assert node.parent(G) is None and node.stats.loops_detected == 1
    assert kbr.sent() == [(P, Leave(KEY))]
    # It waits a join timeout before joining again, instead of looping at once.
    assert len(kbr.routed) == 1
    node.handle_timer(2.0)
    assert len(kbr.routed) == 2


def test_too_long_path_counts_as_a_loop() -> None:
    node, _ = attached(ScribeConfig(max_depth=3))
    beat = encode_heartbeat(KEY, True, pack(1, 2, 3, P.id))
    node.handle_kbr_event(DirectReceived(beat, P), 1.0)
    assert node.parent(G) is None and node.stats.loops_detected == 1


def test_path_change_is_pushed_to_children() -> None:
    node, kbr = attached()
    transit_join(node, A, R, 0.5)
    kbr.sent()
    node.handle_kbr_event(DirectReceived(encode_heartbeat(KEY, True, pack(B.id, P.id)), P), 1.0)
    assert kbr.sent() == [(A, Heartbeat(KEY, True, pack(B.id, P.id, ME.id)))]
    node.handle_kbr_event(DirectReceived(encode_heartbeat(KEY, True, pack(B.id, P.id)), P), 1.2)
    assert kbr.sent() == []  # unchanged: nothing to push


def test_stale_edges_are_torn_down() -> None:
    node, kbr = attached()
    node.handle_kbr_event(DirectReceived(encode_refresh(KEY, 0), A), 1.0)  # not our child
    node.handle_kbr_event(
        DirectReceived(
            encode_heartbeat(
                KEY,
                True,
                pack(
                    R.id,
                ),
            ),
            R,
        ),
        1.0,
    )
    node.handle_kbr_event(
        DirectReceived(
            encode_accept(
                KEY,
                True,
                pack(
                    R.id,
                ),
            ),
            R,
        ),
        1.0,
    )
    other = canonical_group("ham:opaque:other")[1]
    node.handle_kbr_event(
        DirectReceived(
            encode_heartbeat(
                other,
                True,
                pack(
                    R.id,
                ),
            ),
            R,
        ),
        1.0,
    )
    assert [m for _, m in kbr.sent()] == [Leave(KEY), Leave(KEY), Leave(KEY), Leave(other)]
    assert node.parent(G) == P
    assert node.stats.stale_edges == 4
    node.handle_kbr_event(DirectReceived(encode_leave(other), R), 1.0)  # never answered
    assert kbr.sent() == []


def test_root_hands_over_when_kbr_says_another_node_is_closer() -> None:
    node, kbr = make()
    kbr.root_keys.add(KEY)
    node.join(G, 0.0)
    own_step(node, kbr, None, 0.0)
    transit_join(node, A, None, 0.1)
    drain(node)
    kbr.root_keys.clear()
    node.handle_kbr_event(NeighborsChanged(()), 1.0)
    assert drain(node) == [RootLost(NAME)]
    assert len(kbr.routed) == 2 and node.children(G) == [A]
    # The children hear at once that they are cut off from the root.
    assert (
        A,
        Heartbeat(
            KEY,
            False,
            pack(
                ME.id,
            ),
        ),
    ) in kbr.sent()


def test_node_that_kbr_calls_root_takes_over() -> None:
    node, kbr = attached()
    kbr.root_keys.add(KEY)
    node.handle_kbr_event(NeighborsChanged(()), 1.0)
    assert drain(node) == [ParentChanged(NAME, None), BecameRoot(NAME)]
    assert kbr.sent() == [(P, Leave(KEY))]
    assert node.is_root(G)


def test_overlay_joined_retries_pending_joins_at_once() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    node.handle_kbr_event(Joined(ME), 0.2)
    assert len(kbr.routed) == 2


def test_failed_child_is_removed() -> None:
    node, _ = attached()
    transit_join(node, A, R, 0.0)
    transit_join(node, B, R, 0.0)
    drain(node)
    node.handle_kbr_event(NodeFailed(A), 1.0)
    assert drain(node) == [ChildRemoved(NAME, A)]
    assert node.children(G) == [B]


# --- data ----------------------------------------------------------------------


def test_data_is_delivered_once_and_flooded_to_other_neighbours() -> None:
    node, kbr = attached()
    transit_join(node, A, R, 0.0)
    transit_join(node, B, R, 0.0)
    drain(node)
    kbr.sent()
    node.handle_kbr_event(DirectReceived(data(S, 1, b"hi", hops=2), P), 1.0)
    assert drain(node) == [SourceSeen(NAME, S), MessageReceived(NAME, b"hi", S, 1, 2)]
    sent = kbr.sent()
    assert sorted(n.id for n, _ in sent) == [A.id, B.id]
    assert all(m == Data(KEY, S, 1, 3, b"hi") for _, m in sent)
    # A duplicate is neither delivered nor passed on; a message from a child goes up too.
    node.handle_kbr_event(DirectReceived(data(S, 1, b"hi", hops=2), P), 1.1)
    node.handle_kbr_event(DirectReceived(data(S, 2, b"up"), A), 1.2)
    assert drain(node) == [MessageReceived(NAME, b"up", S, 2, 1)]
    assert sorted(n.id for n, _ in kbr.sent()) == [B.id, P.id]
    assert node.stats.duplicates == 1


def test_forwarder_passes_data_on_without_delivering() -> None:
    node, kbr = make()
    transit_join(node, A, P, 0.0)
    node.handle_kbr_event(DirectReceived(encode_accept(KEY, True, pack(R.id, P.id)), P), 0.1)
    drain(node)
    kbr.sent()
    node.handle_kbr_event(DirectReceived(data(S, 1), P), 1.0)
    assert drain(node) == []
    assert [n for n, _ in kbr.sent()] == [A]


def test_routed_multicast_at_the_root_goes_down_the_tree() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    own_step(node, kbr, None, 0.0)
    transit_join(node, A, None, 0.0)
    drain(node)
    kbr.sent()
    raw = encode_multicast(4, b"m")
    node.handle_kbr_event(Delivered(KEY, raw, S, 3), 1.0)
    assert drain(node) == [SourceSeen(NAME, S), MessageReceived(NAME, b"m", S, 4, 3)]
    assert kbr.sent() == [(A, Data(KEY, S, 4, 4, b"m"))]


def test_routed_multicast_where_there_is_no_tree_is_dropped() -> None:
    node, _ = make()
    raw = encode_multicast(1, b"m")
    node.handle_kbr_event(Delivered(KEY, raw, S, 3), 1.0)
    assert node.stats.no_tree == 1 and drain(node) == []


def test_data_from_a_stranger_is_used_and_the_edge_torn_down() -> None:
    node, kbr = attached()
    node.handle_kbr_event(DirectReceived(data(S, 1), A), 1.0)
    assert [type(e) for e in drain(node)] == [SourceSeen, MessageReceived]
    sent = kbr.sent()
    assert (A, Leave(KEY)) in sent and P in [n for n, _ in sent]


def test_multicast_off_the_tree_routes_to_the_root() -> None:
    node, kbr = make()
    node.multicast(G, b"hello", 0.0)
    [(key, payload, intercept)] = kbr.routed
    assert key == KEY and not intercept
    assert decode(payload) == Multicast(1, b"hello")
    node.multicast(G, b"again", 0.1)
    assert decode(kbr.routed[-1][1]).sequence == 2  # type: ignore[union-attr]
    assert drain(node) == []


def test_multicast_on_the_tree_floods_and_loops_back() -> None:
    node, kbr = attached()
    transit_join(node, A, R, 0.0)
    drain(node)
    kbr.sent()
    node.multicast(G, b"hi", 1.0)
    assert sorted(n.id for n, _ in kbr.sent()) == [A.id, P.id]
    assert len(kbr.routed) == 1  # rooted: no copy routed to the root
    assert drain(node) == [SourceSeen(NAME, ME), MessageReceived(NAME, b"hi", ME, 1, 0)]
    # Our own message coming back is a duplicate.
    node.handle_kbr_event(DirectReceived(data(ME, 1, b"hi"), P), 1.1)
    assert drain(node) == [] and node.stats.duplicates == 1


def test_multicast_from_a_part_cut_off_from_the_root_also_routes() -> None:
    node, kbr = make()
    transit_join(node, A, P, 0.0)  # a forwarder still waiting for its ACCEPT
    kbr.sent()
    node.multicast(G, b"hi", 0.1)
    assert [n for n, _ in kbr.sent()] == [A]
    assert not kbr.routed[-1][2] and isinstance(decode(kbr.routed[-1][1]), Multicast)


def test_loopback_can_be_turned_off() -> None:
    node, _ = make(ScribeConfig(loopback=False))
    node.join(G, 0.0)
    node.multicast(G, b"hi", 0.1)
    assert drain(node) == []


def test_multicast_too_long_is_refused() -> None:
    node, _ = make(ScribeConfig(max_message_size=1000))
    limit = node.max_payload(G)
    assert limit == 1000 - (19 + 9 + 23)  # the name does not travel with data
    node.multicast(G, bytes(limit), 0.0)
    with pytest.raises(MessageTooLongError):
        node.multicast(G, bytes(limit + 1), 0.0)


def test_sources_are_remembered_within_bounds() -> None:
    node, _ = attached(ScribeConfig(max_sources=2))
    for i, source in enumerate((A, B, C, A)):
        node.handle_kbr_event(DirectReceived(data(source, i + 1), P), 1.0)
    seen = [e.source for e in drain(node) if isinstance(e, SourceSeen)]
    assert seen == [A, B, C, A]  # A was forgotten when C came


# --- bounds and garbage --------------------------------------------------------


def test_max_groups_bounds_joins_and_transit() -> None:
    node, kbr = make(ScribeConfig(max_groups=1))
    node.join(G, 0.0)
    with pytest.raises(ResourceError, match="max_groups"):
        node.join("ham:opaque:other", 0.0)
    other_name, other_key = canonical_group("ham:opaque:other")
    payload = encode_join(other_key, other_name.encode(), A, 0)
    node.handle_kbr_event(RouteStep(other_key, payload, A, A, P, 1), 0.1)
    # Passed on untouched: P adopts A directly.
    assert kbr.forwarded[-1] == (other_key, payload, P)
    assert node.stats.transit_full == 1 and len(node.groups()) == 1


def test_event_queue_is_bounded() -> None:
    node, _ = attached(ScribeConfig(max_events=3))
    for i in range(5):
        node.handle_kbr_event(DirectReceived(data(S, i + 1), P), 1.0)
    assert len(drain(node)) == 3 and node.stats.events_dropped == 3


def test_bad_names_and_keys() -> None:
    node, _ = make()
    with pytest.raises(InvalidURIError):
        node.join("news", 0.0)
    with pytest.raises(InvalidURIError):
        node.multicast("ham:", b"", 0.0)
    # A name whose key is not the message's: dropped and counted.
    other_key = canonical_group("ham:opaque:other")[1]
    payload = encode_join(other_key, NAME.encode(), A, 0)
    node.handle_kbr_event(RouteStep(other_key, payload, A, A, P, 1), 0.0)
    assert node.stats.key_mismatch == 1 and node.groups() == {}


def test_oversize_input_is_dropped_before_parsing() -> None:
    node, _ = make(ScribeConfig(max_message_size=600))
    node.handle_kbr_event(DirectReceived(bytes(601), A), 0.0)
    assert node.stats.oversize == 1 and node.stats.malformed == 0


def test_routed_data_sent_direct_and_other_misplaced_messages_are_counted() -> None:
    node, kbr = attached()
    raw = encode_multicast(1, b"x")
    node.handle_kbr_event(DirectReceived(raw, P), 1.0)
    node.handle_kbr_event(Delivered(KEY, encode_leave(KEY), A, 1), 1.0)
    node.handle_kbr_event(DirectReceived(encode_leave(KEY), ME), 1.0)
    node.handle_kbr_event(Delivered(KEY, data(S, 1), A, 1), 1.0)  # DATA is never routed
    node.handle_kbr_event(RouteStep(KEY, raw, A, A, None, 1), 1.0)  # nor intercepted
    assert node.stats.unexpected == 5
    # A non-JOIN intercepted route is passed on untouched.
    node.handle_kbr_event(RouteStep(KEY, encode_leave(KEY), A, A, R, 1), 1.0)
    assert kbr.forwarded[-1] == (KEY, encode_leave(KEY), R)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["direct", "step", "delivered"]),
            st.sampled_from(
                [
                    encode_join(KEY, NAME.encode(), A, 0),
                    encode_accept(KEY, True, pack(R.id, P.id)),
                    encode_heartbeat(
                        KEY,
                        False,
                        pack(
                            P.id,
                        ),
                    ),
                    encode_redirect(KEY, 1, B),
                    encode_leave(KEY),
                    encode_refresh(KEY, 0),
                    data(S, 1),
                    encode_multicast(2, b"r"),
                ]
            ),
            st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=3),
            st.sampled_from([A, B, P, R]),
        ),
        max_size=12,
    )
)
def test_random_and_mutated_inputs_never_raise(inputs: list) -> None:  # type: ignore[type-arg]
    node, _ = attached()
    now = 1.0
    for kind, raw, flips, peer in inputs:
        mutated = bytearray(raw)
        for position, value in flips:
            if position < len(mutated):
                mutated[position] = value
        payload = bytes(mutated)
        event: KbrEvent
        if kind == "direct":
            event = DirectReceived(payload, peer)
        elif kind == "step":
            event = RouteStep(KEY, payload, peer, peer, None if peer is R else R, 2)
        else:
            event = Delivered(KEY, payload, peer, 2)
        node.handle_kbr_event(event, now)
        now += 0.7
        node.handle_timer(now)
        drain(node)
    node.get_timer()


# --- config and dedup ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"heartbeat_interval": 0},
        {"parent_timeout": -1},
        {"max_children": 0},
        {"max_depth": 255},
        {"max_redirects": 256},
        {"dedup_window": 0},
        {"max_message_size": 100},
    ],
)
def test_config_is_validated(bad: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        ScribeConfig(**bad)  # type: ignore[arg-type]


def test_dedup_window() -> None:
    dedup = _Dedup(size=2, window=4)
    assert dedup.first_time(1, 10)
    assert not dedup.first_time(1, 10)
    assert dedup.first_time(1, 8)  # late, but inside the window
    assert not dedup.first_time(1, 8)
    assert dedup.first_time(1, 12)
    assert not dedup.first_time(1, 8)  # now 4 behind: out of the window, counted as seen
    assert dedup.first_time(1, 11) and not dedup.first_time(1, 11)
    assert dedup.first_time(1, 100) and dedup.first_time(1, 99)
    assert dedup.first_time(2, 1) and dedup.first_time(3, 1)  # stream 1 forgotten (LRU)
    assert len(dedup) == 2
    assert dedup.first_time(1, 100)


def test_service_calls_for_unknown_groups() -> None:
    node, _ = make()
    assert node.children(G) == [] and node.parent(G) is None
    assert not node.is_root(G) and not node.is_member(G) and node.info(G) is None
    assert node.handle == ME
    assert node.stats.as_dict()["malformed"] == 0


def test_path_not_ending_with_its_sender_is_malformed() -> None:
    node, kbr = attached()
    node.handle_kbr_event(DirectReceived(encode_heartbeat(KEY, True, pack(R.id, A.id)), P), 1.0)
    assert node.stats.malformed == 1 and node.parent(G) == P and kbr.sent() == []


def test_kbr_refusals_never_escape_from_events_and_timers() -> None:
    node, kbr = make()
    kbr.refuse = UsageError("the node has not joined the overlay yet")
    node.join(G, 0.0)  # kept, and retried: the daemon may join before the overlay is up
    assert node.is_member(G) and node.stats.kbr_refused == 1
    transit_join(node, A, P, 0.1)
    node.handle_kbr_event(DirectReceived(data(S, 1), A), 0.2)
    node.handle_timer(5.0)
    with pytest.raises(UsageError, match="not joined"):
        node.multicast(G, b"x", 5.0)  # the application hears it
    kbr.refuse = None
    node.handle_kbr_event(Joined(ME), 6.0)
    assert kbr.routed and decode(kbr.routed[-1][1]) == Join(KEY, NAME, ME, 0)


def test_topology_changes_resend_outstanding_joins_at_once() -> None:
    node, kbr = make()
    node.join(G, 0.0)
    node.handle_kbr_event(NeighborsChanged(()), 0.1)  # too soon after the first: skipped
    assert len(kbr.routed) == 1
    node.handle_kbr_event(NeighborsChanged(()), 0.6)
    node.handle_kbr_event(NodeFailed(A), 1.2)
    assert len(kbr.routed) == 3
    # Attached groups are left alone.
    own_step(node, kbr, P, 1.2)
    node.handle_kbr_event(DirectReceived(encode_accept(KEY, True, pack(R.id, P.id)), P), 1.3)
    node.handle_kbr_event(NeighborsChanged(()), 2.0)
    assert len(kbr.routed) == 3
