"""A deterministic in-memory network with a virtual clock, driving sans-I/O overlay cores.

Two layers, both reusable by the tests of the layers above KBR:

* :class:`FakeNetwork` moves datagrams between any cores that follow the
  aioquic-style contract (``receive_datagram``, ``datagrams_to_send``,
  ``get_timer``, ``handle_timer``, ``next_event``). Per-link latency comes
  from seeded random positions in a unit square (so round-trip times obey
  the triangle inequality, like the Pastry paper's simulations); knobs add
  loss, duplication and random extra delay (which reorders). A host can be
  killed (silently: nothing in or out, no timers) and hosts can be
  partitioned. Everything runs off one event heap ordered by virtual time,
  so a run is a pure function of the seed.
* :class:`KbrOverlay` builds and grows an overlay of
  :class:`~hamcast.overlay.kbr.KbrNode` cores on such a network and knows
  the global truth (live ids in ring order) to check routing and leaf sets
  against. A layer stacked on KBR passes ``core_factory`` (build its core
  around a ``KbrNode``) and ``kbr_of`` (find the ``KbrNode`` inside).

No sockets, no sleeps: time advances only through :meth:`FakeNetwork.run_until`.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hamcast.overlay.api import Delivered
from hamcast.overlay.ids import ID_SPACE, Address, NodeHandle, ring_distance
from hamcast.overlay.kbr import KbrConfig, KbrNode

__all__ = [
    "FakeNetwork",
    "KbrOverlay",
    "NetworkCounters",
    "SansIoCore",
    "SimHost",
    "random_key",
]


class SansIoCore(Protocol):
    """What :class:`FakeNetwork` needs from a protocol core."""

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None: ...

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> Any: ...


@dataclass(eq=False)
class SimHost:
    """One core on the fake network."""

    address: Address
    core: Any
    position: tuple[float, float]
    #: Called with (host, event) for every event; the default keeps them in ``events``.
    on_event: Callable[[SimHost, Any], None] | None = None
    events: list[Any] = field(default_factory=list)
    alive: bool = True
    partition: int = 0
    #: The deadline the network has armed for this host, and its arming number.
    timer_at: float | None = None
    timer_token: int = 0
    datagrams_in: int = 0
    datagrams_out: int = 0


@dataclass
class NetworkCounters:
    """What happened to datagrams on the fake network."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    to_dead: int = 0
    partitioned: int = 0
    unknown_address: int = 0


class FakeNetwork:
    """A virtual-clock network of sans-I/O cores (see the module docstring).

    ``min_latency``/``max_latency`` bound the one-way delay of a link
    (seconds), set by the distance between the two hosts' positions;
    ``loss`` and ``duplicate`` are per-datagram probabilities; ``jitter`` is
    the most extra delay (seconds, uniform) added per datagram. The knobs
    are plain attributes: change them between runs.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        jitter: float = 0.0,
        min_latency: float = 0.002,
        max_latency: float = 0.080,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.jitter = jitter
        self.min_latency = min_latency
        self.max_latency = max_latency
        self.now = 0.0
        self.hosts: dict[Address, SimHost] = {}
        self.counters = NetworkCounters()
        #: Called with (source host, destination address, data) for each datagram sent.
        self.trace: Callable[[SimHost, Address, bytes], None] | None = None
        # (time, sequence, host, datagram or None for a timer, source or timer token)
        self._queue: list[tuple[float, int, SimHost, bytes | None, Any]] = []
        self._seq = 0
        self._next_address = 1

    # --- building ------------------------------------------------------------

    def new_address(self) -> Address:
        """A fresh address, 10.x.y.z:4000."""
        n = self._next_address
        self._next_address += 1
        return (f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", 4000)

    def add_host(
        self,
        core: Any,
        address: Address | None = None,
        *,
        on_event: Callable[[SimHost, Any], None] | None = None,
    ) -> SimHost:
        """Attach ``core`` at ``address`` (fresh if ``None``); a host there before is replaced."""
        host = SimHost(
            address=address or self.new_address(),
            core=core,
            position=(self.rng.random(), self.rng.random()),
            on_event=on_event,
        )
        self.hosts[host.address] = host
        return host

    def latency(self, a: SimHost, b: SimHost) -> float:
        """One-way delay between two hosts, seconds (without jitter)."""
        distance = math.dist(a.position, b.position) / math.sqrt(2)
        return self.min_latency + (self.max_latency - self.min_latency) * distance

    # --- faults ----------------------------------------------------------------

    def kill(self, host: SimHost) -> None:
        """Silently stop ``host``: it receives, sends and times out nothing more."""
        host.alive = False

    def partition(self, *groups: Iterable[SimHost]) -> None:
        """Cut the network: hosts in different groups no longer reach each other.

        Hosts not named in any group form one more group together.
        """
        for host in self.hosts.values():
            host.partition = 0
        for number, group in enumerate(groups, start=1):
            for host in group:
                host.partition = number

    def heal(self) -> None:
        """Undo :meth:`partition`."""
        for host in self.hosts.values():
            host.partition = 0

    # --- driving -----------------------------------------------------------------

    def call(self, host: SimHost, action: Callable[[float], object]) -> None:
        """Run ``action(now)`` on ``host`` (an API call on its core), then move its output."""
        action(self.now)
        self.pump(host)

    def pump(self, host: SimHost) -> None:
        """Take the host's events and datagrams, and re-arm its timer."""
        core = host.core
        while (event := core.next_event()) is not None:
            if host.on_event is not None:
                host.on_event(host, event)
            else:
                host.events.append(event)
        for data, destination in core.datagrams_to_send():
            self._transmit(host, data, destination)
        deadline = core.get_timer()
        if deadline != host.timer_at:
            host.timer_at = deadline
            host.timer_token += 1
            if deadline is not None:
                self._push(max(deadline, self.now), host, None, host.timer_token)

    def _push(self, at: float, host: SimHost, data: bytes | None, extra: Any) -> None:
        heapq.heappush(self._queue, (at, self._seq, host, data, extra))
        self._seq += 1

    def _transmit(self, source: SimHost, data: bytes, destination: Address) -> None:
        counters = self.counters
        counters.sent += 1
        source.datagrams_out += 1
        if self.trace is not None:
            self.trace(source, destination, data)
        target = self.hosts.get(destination)
        if target is None:
            counters.unknown_address += 1
            return
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            counters.lost += 1
            return
        copies = 1
        if self.duplicate and rng.random() < self.duplicate:
            copies = 2
            counters.duplicated += 1
        base = self.latency(source, target)
        for _ in range(copies):
            delay = base + (rng.random() * self.jitter if self.jitter else 0.0)
            self._push(self.now + delay, target, data, source)

    def run_until(self, until: float) -> None:
        """Process everything due up to virtual time ``until``, then set the clock to it."""
        queue = self._queue
        counters = self.counters
        while queue and queue[0][0] <= until:
            at, _, host, data, extra = heapq.heappop(queue)
            self.now = at
            if data is None:
                if extra != host.timer_token or not host.alive:
                    continue
                host.timer_at = None
                host.core.handle_timer(at)
            else:
                source: SimHost = extra
                if not host.alive:
                    counters.to_dead += 1
                    continue
                if host.partition != source.partition:
                    counters.partitioned += 1
                    continue
                counters.delivered += 1
                host.datagrams_in += 1
                host.core.receive_datagram(data, source.address, at)
            self.pump(host)
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        """Advance the virtual clock by ``seconds``."""
        self.run_until(self.now + seconds)


class KbrOverlay:
    """An overlay of KBR nodes on a :class:`FakeNetwork`, with the global truth beside it.

    ``core_factory(handle, config, rng)`` builds each host's core (default: a
    bare :class:`KbrNode`); ``kbr_of(core)`` finds the ``KbrNode`` in it.
    Every event of every host is recorded in :attr:`events` as
    ``(host, event)`` unless ``record_events`` is off.
    """

    def __init__(
        self,
        net: FakeNetwork,
        config: KbrConfig | None = None,
        *,
        seed: int = 1,
        core_factory: Callable[[NodeHandle, KbrConfig, random.Random], Any] | None = None,
        kbr_of: Callable[[Any], KbrNode] | None = None,
        record_events: bool = True,
    ) -> None:
        self.net = net
        self.config = config or KbrConfig()
        self.rng = random.Random(seed)
        # One generator for every core: a Random costs 2.5 KB, and the run
        # stays deterministic because the event order is.
        self.node_rng = random.Random(seed + 1)
        self._factory = core_factory or KbrNode
        self._kbr_of: Callable[[Any], KbrNode] = kbr_of or (lambda core: core)
        self.record_events = record_events
        self.hosts: list[SimHost] = []
        self.by_id: dict[int, SimHost] = {}
        self.events: list[tuple[SimHost, Any]] = []
        #: Called with (host, event) after recording: a test's stand-in for the
        #: layer above (for example passing on every RouteStep with ``forward``).
        self.on_event: Callable[[SimHost, Any], None] | None = None

    # --- building ----------------------------------------------------------------

    def kbr(self, host: SimHost) -> KbrNode:
        """The KBR core of ``host``."""
        return self._kbr_of(host.core)

    def _record(self, host: SimHost, event: Any) -> None:
        self.events.append((host, event))
        if self.on_event is not None:
            self.on_event(host, event)

    def add(self, via: SimHost | None = None, node_id: int | None = None) -> SimHost:
        """A new node joining through ``via`` (``None``: it starts the overlay alone)."""
        if node_id is None:
            node_id = self.rng.getrandbits(128)
            while node_id in self.by_id:
                node_id = self.rng.getrandbits(128)
        address = self.net.new_address()
        handle = NodeHandle(node_id, address)
        core = self._factory(handle, self.config, self.node_rng)
        host = self.net.add_host(
            core, address, on_event=self._record if self.record_events else None
        )
        self.hosts.append(host)
        self.by_id[node_id] = host
        known = [] if via is None else [via.address]
        self.net.call(host, lambda now: self.kbr(host).bootstrap(known, now))
        return host

    def grow(self, count: int, *, spacing: float = 0.1) -> list[SimHost]:
        """Add ``count`` nodes, ``spacing`` seconds apart, each through a random live member."""
        added = []
        for _ in range(count):
            members = self.joined()
            via = self.rng.choice(members) if members else None
            added.append(self.add(via))
            self.net.run_for(spacing)
        return added

    # --- faults --------------------------------------------------------------------

    def kill(self, host: SimHost) -> None:
        """Silently crash ``host``."""
        self.net.kill(host)

    def leave(self, host: SimHost) -> None:
        """``host`` leaves gracefully (its goodbyes go out), then stops."""
        self.net.call(host, lambda now: self.kbr(host).leave(now))
        self.net.kill(host)

    # --- global truth ------------------------------------------------------------

    def joined(self) -> list[SimHost]:
        """Live hosts whose KBR core has joined."""
        return [h for h in self.hosts if h.alive and self.kbr(h).joined]

    def live_ids(self) -> list[int]:
        """Ids of live joined nodes, sorted."""
        return sorted(self.kbr(h).handle.id for h in self.joined())

    @staticmethod
    def closest(ids: list[int], key: int) -> int:
        """The id in sorted ``ids`` numerically closest to ``key`` (ties: the lower id)."""
        index = bisect.bisect_left(ids, key)
        around = {ids[(index - 1) % len(ids)], ids[index % len(ids)]}
        return min(around, key=lambda node: (ring_distance(node, key), node))

    @staticmethod
    def true_leaf_sides(ids: list[int], node: int, half: int) -> tuple[list[int], list[int]]:
        """The true (left, right) halves of ``node``'s leaf set among sorted ``ids``."""
        others = len(ids) - 1
        count = min(half, others)
        index = ids.index(node)
        left = [ids[(index - k) % len(ids)] for k in range(1, count + 1)]
        right = [ids[(index + k) % len(ids)] for k in range(1, count + 1)]
        return left, right

    def leaf_set_errors(self) -> list[str]:
        """Every live node whose leaf set differs from the truth, described."""
        ids = self.live_ids()
        half = self.config.leaf_set_size // 2
        errors = []
        for host in self.joined():
            node = self.kbr(host)
            want_left, want_right = self.true_leaf_sides(ids, node.handle.id, half)
            have_left, have_right = ([h.id for h in side] for side in node.leaf_set_sides())
            if have_left != want_left or have_right != want_right:
                errors.append(
                    f"{node.handle}: left {len(set(have_left) ^ set(want_left))} wrong, "
                    f"right {len(set(have_right) ^ set(want_right))} wrong"
                )
        return errors

    # --- routing -------------------------------------------------------------------

    def route(self, host: SimHost, key: int, payload: bytes, *, intercept: bool = False) -> None:
        """``host`` routes ``payload`` to ``key`` now."""
        self.net.call(
            host, lambda now: self.kbr(host).route(key, payload, now, intercept=intercept)
        )

    def deliveries(self) -> list[tuple[SimHost, Delivered]]:
        """Every Delivered event recorded so far."""
        return [(h, e) for h, e in self.events if isinstance(e, Delivered)]

    def walk(self, start: SimHost, key: int) -> list[int]:
        """The ids a route for ``key`` would visit from ``start`` with the tables as they are.

        Follows each live node's own ``next_hop``; stops at a node that is its
        own root, at a dead next hop, or after 256 hops.
        """
        path = [self.kbr(start).handle.id]
        host = start
        for _ in range(256):
            hop = self.kbr(host).next_hop(key)
            if hop is None:
                break
            path.append(hop.id)
            host = self.by_id[hop.id]
            if not host.alive:
                break
        return path


def random_key(rng: random.Random) -> int:
    """A uniformly random 128-bit key."""
    return rng.randrange(ID_SPACE)
