"""A deterministic discrete-event simulator driving unchanged sans-I/O overlay cores.

Every host runs a :class:`~hamcast.overlay.kbr.KbrNode` with a
:class:`~hamcast.overlay.scribe.ScribeNode` on top, exactly as the real
driver does: datagrams, timer expiries and API calls go in; datagrams, one
timer and events come out (STYLE.md 1, 13). The simulator only moves data:

* one virtual clock (seconds) and one heap of ``(time, sequence, action)``,
  so a run is a pure function of its seed — no wall clock, no sleeps;
* a datagram from host A to host B arrives after the one-way delay between
  their routers on the :class:`~hamcast.sim.topology.Topology` (access
  links included); nothing is lost or reordered beyond what delays imply;
* each host's single timer is re-armed after every input; a superseded
  timer entry is skipped by its arming number.

Hosts join in stages (:meth:`Simulator.grow`), each bootstrapping through
an already-joined host, as the Pastry join protocol expects.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hamcast.overlay.api import Delivered, KbrEvent
from hamcast.overlay.ids import Address, NodeHandle
from hamcast.overlay.kbr import KbrConfig, KbrNode
from hamcast.overlay.scribe import ScribeConfig, ScribeEvent, ScribeNode
from hamcast.sim.topology import Topology

__all__ = ["Host", "Simulator"]

_PORT = 4000
# Action kinds in the event heap.
_DATAGRAM = 0
_TIMER = 1


@dataclass(eq=False, slots=True)
class Host:
    """One simulated overlay node: its cores, its router, and the simulator's bookkeeping.

    Attributes:
        index: Position in :attr:`Simulator.hosts`.
        router: The stub router it is attached to.
        kbr: Its KBR core.
        scribe: Its Scribe core, stacked on ``kbr``.
        timer_at: The deadline armed for it (virtual seconds), if any.
        timer_token: Arming number; a heap entry with an older one is stale.
        datagrams_out: Datagrams it sent.
        datagrams_in: Datagrams it received.
        events: Its Scribe events, when no ``on_scribe_event`` hook is set.
    """

    index: int
    router: int
    kbr: KbrNode
    scribe: ScribeNode
    timer_at: float | None = None
    timer_token: int = 0
    datagrams_out: int = 0
    datagrams_in: int = 0
    events: list[ScribeEvent] = field(default_factory=list)

    @property
    def handle(self) -> NodeHandle:
        """The node's handle (id and address)."""
        return self.kbr.handle


class Simulator:
    """Hosts on a router topology, driven off one virtual-time event heap.

    ``seed`` decides node ids, attachment routers, bootstrap choices and the
    cores' own randomness (one shared generator: the run stays deterministic
    because the event order is).

    ``on_scribe_event(host, event, now)`` sees every Scribe event (default:
    appended to ``host.events``); ``on_delivered(host, event, now)`` sees KBR
    deliveries of keys registered with :meth:`route_probe`, which are kept
    from Scribe (they are measurement traffic, not Scribe messages);
    ``on_transmit(source, target, datagram)`` sees every datagram sent.
    """

    def __init__(
        self,
        topology: Topology,
        seed: int = 0,
        *,
        kbr_config: KbrConfig | None = None,
        scribe_config: ScribeConfig | None = None,
    ) -> None:
        self.topology = topology
        self.kbr_config = kbr_config or KbrConfig()
        self.scribe_config = scribe_config or ScribeConfig()
        self.rng = random.Random(seed)
        self._core_rng = random.Random(seed + 1)
        self.now = 0.0
        self.hosts: list[Host] = []
        self.by_address: dict[Address, Host] = {}
        self.by_id: dict[int, Host] = {}
        self.datagrams = 0
        self.on_scribe_event: Callable[[Host, ScribeEvent, float], None] | None = None
        self.on_delivered: Callable[[Host, Delivered, float], None] | None = None
        #: Called with (source, target, datagram) for every datagram sent between hosts.
        self.on_transmit: Callable[[Host, Host, bytes], None] | None = None
        self._probe_keys: set[int] = set()
        # (time, sequence, kind, host index, datagram, source address)
        self._queue: list[tuple[float, int, int, int, bytes, Address | int]] = []
        self._seq = 0

    # --- building ------------------------------------------------------------

    def add_host(self, via: Host | None) -> Host:
        """A new host on a random stub router, joining through ``via`` (``None``: first)."""
        node_id = self.rng.getrandbits(128)
        while node_id in self.by_id:
            node_id = self.rng.getrandbits(128)
        index = len(self.hosts)
        address = (f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", _PORT)
        kbr = KbrNode(NodeHandle(node_id, address), self.kbr_config, self._core_rng)
        host = Host(
            index=index,
            router=self.rng.choice(self.topology.stub_routers),
            kbr=kbr,
            scribe=ScribeNode(kbr, self.scribe_config),
        )
        self.hosts.append(host)
        self.by_address[address] = host
        self.by_id[node_id] = host
        known = [] if via is None else [via.handle.address]
        self.call(host, lambda now: kbr.bootstrap(known, now))
        return host

    def grow(self, count: int, *, spacing: float = 0.05) -> list[Host]:
        """Add ``count`` hosts ``spacing`` seconds apart, each through a random joined host."""
        added = []
        for _ in range(count):
            joined = self.joined()
            added.append(self.add_host(self.rng.choice(joined) if joined else None))
            self.run_for(spacing)
        return added

    def joined(self) -> list[Host]:
        """Hosts whose KBR core has joined the overlay."""
        return [host for host in self.hosts if host.kbr.joined]

    # --- driving -------------------------------------------------------------

    def call(self, host: Host, action: Callable[[float], object]) -> None:
        """Run ``action(now)`` on ``host`` (an API call on its cores), then move its output."""
        action(self.now)
        self._pump(host)

    def join(self, host: Host, group: str) -> None:
        """``host`` joins ``group`` now (Scribe ``join``)."""
        scribe = host.scribe
        self.call(host, lambda now: scribe.join(group, now))

    def route_probe(self, host: Host, key: int) -> None:
        """Route an empty plain message for ``key`` from ``host``; see ``on_delivered``."""
        self._probe_keys.add(key)
        self.call(host, lambda now: host.kbr.route(key, b"", now))

    def run_until(self, until: float) -> None:
        """Process everything due by virtual time ``until``, then set the clock to it."""
        queue = self._queue
        hosts = self.hosts
        while queue and queue[0][0] <= until:
            at, _, kind, index, data, extra = heapq.heappop(queue)
            host = hosts[index]
            self.now = at
            if kind == _TIMER:
                if extra != host.timer_token:
                    continue
                host.timer_at = None
                kbr_due = host.kbr.get_timer()
                if kbr_due is not None and kbr_due <= at:
                    host.kbr.handle_timer(at)
                self._feed(host)
                scribe_due = host.scribe.get_timer()
                if scribe_due is not None and scribe_due <= at:
                    host.scribe.handle_timer(at)
            else:
                assert isinstance(extra, tuple)
                host.datagrams_in += 1
                host.kbr.receive_datagram(data, extra, at)
            self._pump(host)
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        """Advance the virtual clock by ``seconds``."""
        self.run_until(self.now + seconds)

    def _feed(self, host: Host) -> int:
        """Pass KBR's events to Scribe (probe deliveries to ``on_delivered`` instead).

        Returns how many events were moved.
        """
        now = self.now
        moved = 0
        while (event := host.kbr.next_event()) is not None:
            moved += 1
            if self._is_probe(event):
                assert isinstance(event, Delivered)
                if self.on_delivered is not None:
                    self.on_delivered(host, event, now)
                continue
            host.scribe.handle_kbr_event(event, now)
        return moved

    def _is_probe(self, event: KbrEvent) -> bool:
        return isinstance(event, Delivered) and not event.payload and event.key in self._probe_keys

    def _pump(self, host: Host) -> None:
        """Move the host's events and datagrams, and re-arm its one timer."""
        # Scribe's reactions to KBR events make KBR emit more (the first
        # RouteStep of a JOIN): go round until both layers are quiet.
        while True:
            moved = self._feed(host)
            while (event := host.scribe.next_event()) is not None:
                moved += 1
                if self.on_scribe_event is not None:
                    self.on_scribe_event(host, event, self.now)
                else:
                    host.events.append(event)
            if not moved:
                break
        for data, destination in host.kbr.datagrams_to_send():
            self._transmit(host, data, destination)
        due = [t for t in (host.kbr.get_timer(), host.scribe.get_timer()) if t is not None]
        deadline = min(due) if due else None
        if deadline != host.timer_at:
            host.timer_at = deadline
            host.timer_token += 1
            if deadline is not None:
                self._push(max(deadline, self.now), _TIMER, host.index, b"", host.timer_token)

    def _transmit(self, source: Host, data: bytes, destination: Address) -> None:
        source.datagrams_out += 1
        self.datagrams += 1
        target = self.by_address.get(destination)
        if target is None:
            return
        if self.on_transmit is not None:
            self.on_transmit(source, target, data)
        delay_s = self.topology.host_delay_ms(source.router, target.router) / 1000.0
        self._push(self.now + delay_s, _DATAGRAM, target.index, data, source.handle.address)

    def _push(self, at: float, kind: int, index: int, data: bytes, extra: Address | int) -> None:
        heapq.heappush(self._queue, (at, self._seq, kind, index, data, extra))
        self._seq += 1
