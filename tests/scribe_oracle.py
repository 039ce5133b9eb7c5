"""An in-memory oracle KBR network for Scribe tests: global knowledge, virtual clock.

Each :class:`OracleKbr` implements :class:`hamcast.overlay.api.KeyBasedRouting`
and emits its events, but routing decisions come from the network's global,
sorted set of node ids instead of per-node tables:

* the root of a key is the live node closest to it on the ring (ties: lower id);
* a node routes straight to the root when the root is among its ``leaf_half``
  neighbours on either side (Pastry's leaf set); otherwise it picks a node
  sharing one more hex digit with the key than itself (Pastry's routing table,
  b = 4), choosing among the candidates by a hash of its own id and the row,
  the way different Pastry nodes hold different entries. Paths therefore
  look like Pastry's (about log16 N hops, longer prefixes each hop) and are
  loop free.

Knobs: per-message latency plus uniform jitter (so messages can overtake each
other), loss probability, duplication probability (the copy arrives a little
later), and killing a node. A killed node drops everything at once, but the
others learn of it only ``failure_delay`` seconds later: then the ids list
forgets it (routing and ``is_root`` change), its leaf-set neighbours get
:class:`NeighborsChanged`, and ``notify`` decides who gets :class:`NodeFailed`
(``"leafset"``: those neighbours; ``"all"``: every node; ``"none"``: nobody).

The upper layer of each node (the "app": a ScribeNode) is driven exactly as a
real driver would: KBR events in, then the app's events out, then its timer
re-armed. Nothing sleeps: :meth:`OracleNetwork.run_until` advances the clock.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any, Protocol

from hamcast.overlay.api import (
    Delivered,
    DirectReceived,
    Joined,
    KbrEvent,
    NeighborsChanged,
    NodeFailed,
    RouteStep,
)
from hamcast.overlay.ids import ID_BITS, ID_SPACE, NodeHandle, ring_distance, shared_prefix_length
from hamcast.overlay.scribe import ScribeConfig, ScribeEvent, ScribeNode
from hamcast.overlay.scribe.events import MessageReceived

_B = 4  # bits per digit, as Pastry's usual b


class App(Protocol):
    """The layer above KBR, as the oracle drives it."""

    def handle_kbr_event(self, event: KbrEvent, now: float) -> None: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def next_event(self) -> Any: ...


class OracleKbr:
    """One node's KBR, backed by the network's global knowledge."""

    def __init__(self, network: OracleNetwork, handle: NodeHandle) -> None:
        self._network = network
        self._handle = handle
        self.events: deque[KbrEvent] = deque()
        self.alive = True

    @property
    def handle(self) -> NodeHandle:
        return self._handle

    def route(self, key: int, payload: bytes, now: float, *, intercept: bool = False) -> None:
        net = self._network
        net.routes_started += 1
        if intercept:
            next_id = net.next_hop(self._handle.id, key)
            self.events.append(
                RouteStep(key, payload, self._handle, None, net.handle_of(next_id), 0)
            )
            return
        next_id = net.next_hop(self._handle.id, key)
        if next_id is None:
            # Here already; queued, not pumped: the app is in the middle of a call.
            self.events.append(Delivered(key, payload, self._handle, 0))
            return
        net.transmit(next_id, lambda: net.route_hop(next_id, key, payload, self._handle, 1))

    def forward(
        self,
        key: int,
        payload: bytes,
        next_hop: NodeHandle,
        now: float,
        *,
        step: RouteStep | None = None,
    ) -> None:
        origin = step.origin if step is not None else self._handle
        hops = step.hops if step is not None else 0
        net = self._network
        net.transmit(
            next_hop.id,
            lambda: net.arrive_step(
                next_hop.id, key, payload, origin=origin, previous=self._handle, hops=hops + 1
            ),
        )

    def send_direct(
        self, node: NodeHandle, payload: bytes, now: float, *, compact: bool = False
    ) -> None:
        net = self._network
        net.direct_sent += 1
        sender = self._handle
        net.transmit(node.id, lambda: net.arrive_direct(node.id, payload, sender))

    def is_root(self, key: int) -> bool:
        return self.alive and self._network.root_of(key) == self._handle.id

    def leaf_set(self) -> list[NodeHandle]:
        net = self._network
        return [net.nodes[i].handle for i in net.leaf_ids(self._handle.id)]

    def routing_table(self) -> list[NodeHandle]:
        return []

    def next_event(self) -> KbrEvent | None:
        return self.events.popleft() if self.events else None


class OracleNetwork:
    """Every node, the wire between them and the virtual clock."""

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: float = 0.01,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        leaf_half: int = 8,
        failure_delay: float = 0.5,
        notify: str = "leafset",
    ) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self.duplicate = duplicate
        self.leaf_half = leaf_half
        self.failure_delay = failure_delay
        self.notify = notify
        self.nodes: dict[int, OracleKbr] = {}
        self.apps: dict[int, App] = {}
        self.on_event: Callable[[int, Any], None] = lambda node, event: None
        self._ids: list[int] = []  # ids routing knows of, sorted
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._armed: dict[int, float] = {}
        self.messages = 0
        self.lost = 0
        self.direct_sent = 0
        self.routes_started = 0

    # --- membership ----------------------------------------------------------

    def add_node(self, node_id: int) -> OracleKbr:
        index = len(self.nodes) + 1
        address = (f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 7000)
        kbr = OracleKbr(self, NodeHandle(node_id, address))
        self.nodes[node_id] = kbr
        bisect.insort(self._ids, node_id)
        kbr.events.append(Joined(kbr.handle))
        for other in self.leaf_ids(node_id):
            self._later(self.latency, other, lambda o=other: self._neighbors_changed(o))
        return kbr

    def attach(self, node_id: int, app: App) -> None:
        self.apps[node_id] = app
        self.pump(node_id)

    def kill(self, node_id: int) -> None:
        """Crash ``node_id`` now; the others notice after ``failure_delay``."""
        self.nodes[node_id].alive = False
        self._armed.pop(node_id, None)
        self.schedule(self.failure_delay, lambda: self._forget(node_id))

    def _forget(self, node_id: int) -> None:
        neighbours = self.leaf_ids(node_id)
        self._ids.remove(node_id)
        dead = self.nodes[node_id].handle
        told: set[int] = set(neighbours) if self.notify == "leafset" else set()
        if self.notify == "all":
            told = set(self._ids)
        for other in sorted(set(neighbours) | told):
            kbr = self.nodes[other]
            if other in told:
                kbr.events.append(NodeFailed(dead))
            if other in neighbours:
                kbr.events.append(NeighborsChanged(tuple(kbr.leaf_set())))
            self.pump(other)

    def _neighbors_changed(self, node_id: int) -> None:
        kbr = self.nodes[node_id]
        kbr.events.append(NeighborsChanged(tuple(kbr.leaf_set())))
        self.pump(node_id)

    @property
    def live_ids(self) -> list[int]:
        return [i for i in self._ids if self.nodes[i].alive]

    # --- routing knowledge ---------------------------------------------------

    def handle_of(self, node_id: int | None) -> NodeHandle | None:
        return None if node_id is None else self.nodes[node_id].handle

    def leaf_ids(self, node_id: int) -> list[int]:
        ids = self._ids
        n = len(ids)
        i = bisect.bisect_left(ids, node_id)
        present = i < n and ids[i] == node_id
        out: list[int] = []
        for k in range(1, self.leaf_half + 1):
            for j in (i + k if present else i + k - 1, i - k):
                other = ids[j % n] if n else None
                if other is not None and other != node_id and other not in out:
                    out.append(other)
        return out

    def root_of(self, key: int) -> int:
        ids = self._ids
        i = bisect.bisect_left(ids, key)
        candidates = {ids[i % len(ids)], ids[i - 1]}
        return min(candidates, key=lambda c: (ring_distance(c, key), c))

    def next_hop(self, at: int, key: int) -> int | None:
        root = self.root_of(key)
        if root == at:
            return None
        if root in self.leaf_ids(at):
            return root
        ids = self._ids
        length = shared_prefix_length(at, key, _B)
        shift = ID_BITS - _B * (length + 1)
        low = (key >> shift) << shift
        first = bisect.bisect_left(ids, low)
        end = bisect.bisect_left(ids, low + (1 << shift))
        if first == end:
            return root  # Pastry's rare case: nobody shares more; go numerically closer
        pick = ((at * 0x9E3779B97F4A7C15 >> 64) ^ (length * 0x632BE5AB)) % (end - first)
        return ids[first + pick]

    # --- the wire ------------------------------------------------------------

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (self.now + delay, next(self._order), action))

    def _later(self, delay: float, node_id: int, action: Callable[[], None]) -> None:
        self.schedule(delay, lambda: action() if self.nodes[node_id].alive else None)

    def transmit(self, destination: int, arrive: Callable[[], None]) -> None:
        self.messages += 1
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return
        delay = self.latency + (self.rng.uniform(0, self.jitter) if self.jitter else 0.0)
        self.schedule(delay, arrive)
        if self.duplicate and self.rng.random() < self.duplicate:
            self.schedule(delay + self.rng.uniform(0, self.latency + self.jitter), arrive)

    def arrive_direct(self, node_id: int, payload: bytes, sender: NodeHandle) -> None:
        kbr = self.nodes[node_id]
        if not kbr.alive:
            return
        kbr.events.append(DirectReceived(payload, sender))
        self.pump(node_id)

    def arrive_step(
        self,
        node_id: int,
        key: int,
        payload: bytes,
        *,
        origin: NodeHandle,
        previous: NodeHandle,
        hops: int,
    ) -> None:
        kbr = self.nodes[node_id]
        if not kbr.alive or node_id not in self._ids:
            return
        next_id = self.next_hop(node_id, key)
        kbr.events.append(RouteStep(key, payload, origin, previous, self.handle_of(next_id), hops))
        self.pump(node_id)

    def route_hop(
        self, node_id: int, key: int, payload: bytes, origin: NodeHandle, hops: int
    ) -> None:
        """A plain route is at ``node_id``: deliver here or pass on."""
        kbr = self.nodes[node_id]
        if not kbr.alive or node_id not in self._ids:
            return
        next_id = self.next_hop(node_id, key)
        if next_id is None:
            kbr.events.append(Delivered(key, payload, origin, hops))
            self.pump(node_id)
            return
        self.transmit(next_id, lambda: self.route_hop(next_id, key, payload, origin, hops + 1))

    # --- driving the apps ----------------------------------------------------

    def pump(self, node_id: int) -> None:
        """Hand the node's KBR events to its app, pass the app's events on, re-arm its timer."""
        kbr = self.nodes[node_id]
        app = self.apps.get(node_id)
        if app is None or not kbr.alive:
            kbr.events.clear()
            return
        while (event := kbr.next_event()) is not None:
            app.handle_kbr_event(event, self.now)
        while (out := app.next_event()) is not None:
            self.on_event(node_id, out)
        due = app.get_timer()
        if due is not None and self._armed.get(node_id) != due:
            self._armed[node_id] = due
            self.schedule(max(due - self.now, 0.0), lambda: self._fire(node_id, due))

    def _fire(self, node_id: int, due: float) -> None:
        if self._armed.get(node_id) != due or not self.nodes[node_id].alive:
            return
        del self._armed[node_id]
        self.apps[node_id].handle_timer(self.now)
        self.pump(node_id)

    def call(self, node_id: int, action: Callable[[float], object]) -> None:
        """Run an application call on a node now, then drive what it caused."""
        action(self.now)
        self.pump(node_id)

    def run_until(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, action = heapq.heappop(heap)
            self.now = max(self.now, when)
            action()
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)


#: Timers short enough for tests to cover many heartbeat rounds cheaply.
FAST = ScribeConfig(
    heartbeat_interval=0.5,
    parent_timeout=1.6,
    child_timeout=1.6,
    join_timeout=0.5,
    join_backoff_max=4.0,
)


class ScribeSim:
    """``n`` ScribeNodes on one oracle network, with their events recorded."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 1,
        config: ScribeConfig = FAST,
        **network: Any,
    ) -> None:
        self.rng = random.Random(seed)
        self.net = OracleNetwork(seed=seed, **network)
        self.config = config
        self.nodes: dict[int, ScribeNode] = {}
        self.events: dict[int, list[ScribeEvent]] = defaultdict(list)
        self.net.on_event = lambda node, event: self.events[node].append(event)
        for _ in range(n):
            self.add_node()

    def add_node(self, node_id: int | None = None) -> int:
        if node_id is None:
            node_id = self.rng.randrange(ID_SPACE)
        kbr = self.net.add_node(node_id)
        node = ScribeNode(kbr, self.config)
        self.nodes[node_id] = node
        self.net.attach(node_id, node)
        return node_id

    @property
    def ids(self) -> list[int]:
        return self.net.live_ids

    def join(self, node_id: int, group: str) -> None:
        self.net.call(node_id, lambda now: self.nodes[node_id].join(group, now))

    def leave(self, node_id: int, group: str) -> None:
        self.net.call(node_id, lambda now: self.nodes[node_id].leave(group, now))

    def multicast(self, node_id: int, group: str, payload: bytes) -> None:
        self.net.call(node_id, lambda now: self.nodes[node_id].multicast(group, payload, now))

    def run_for(self, seconds: float) -> None:
        self.net.run_for(seconds)

    def kill(self, node_id: int) -> None:
        self.net.kill(node_id)

    def received(self, node_id: int, group: str | None = None) -> list[MessageReceived]:
        return [
            e
            for e in self.events[node_id]
            if isinstance(e, MessageReceived) and (group is None or e.group == group)
        ]

    def payloads(self, node_id: int, group: str) -> list[bytes]:
        return [e.payload for e in self.received(node_id, group)]

    def tree(self, group: str) -> dict[int, int | None]:
        """Every live node with state for ``group`` -> its parent's id (None: none)."""
        out: dict[int, int | None] = {}
        for node_id in self.ids:
            info = self.nodes[node_id].info(group)
            if info is not None:
                out[node_id] = info.parent.id if info.parent is not None else None
        return out


def check_tree(sim: ScribeSim, group: str, members: set[int]) -> int:
    """Assert ``group``'s tree is one proper tree over ``members``; return its root.

    One root, the live node closest to the key; every parent chain reaches it
    without a cycle; parents and children agree; every member is on it and
    every other node on it forwards for someone; everybody knows the path is
    rooted.
    """
    from hamcast.overlay.scribe import Role, TreeState, canonical_group

    _, key = canonical_group(group)
    tree = sim.tree(group)
    roots = [n for n, parent in tree.items() if parent is None]
    assert roots == [sim.net.root_of(key)], (roots, sim.net.root_of(key))
    root = roots[0]
    for node_id, parent in tree.items():
        info = sim.nodes[node_id].info(group)
        assert info is not None
        assert info.rooted, node_id
        if parent is None:
            assert info.state is TreeState.ROOT
            assert sim.nodes[node_id].is_root(group)
        else:
            assert info.state is TreeState.ATTACHED
            assert node_id in {c.id for c in sim.nodes[parent].children(group)}
            assert info.path[-1] == parent
        for child in sim.nodes[node_id].children(group):
            assert tree.get(child.id) == node_id, (node_id, child.id)
        seen = {node_id}
        up = parent
        while up is not None:
            assert up not in seen, f"cycle through {up}"
            seen.add(up)
            up = tree[up]
        assert root in seen
        role = sim.nodes[node_id].groups()[group]
        assert (Role.MEMBER in role) == (node_id in members)
        if node_id not in members:
            assert Role.FORWARDER in role, "a non-member without children should have pruned"
    assert members <= set(tree)
    return root
