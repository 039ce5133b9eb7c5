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
:meth:`Simulator.fail` crashes a host (no goodbye: its peers find out by
their own timeouts), which is what churn is made of.

Cost: the simulator adds about a quarter to what the cores themselves cost
per datagram; joined hosts are tracked incrementally (from the KBR
``Joined`` event), so growing the overlay is linear in its size.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hamcast.overlay.api import Delivered, Joined, KbrEvent
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
        alive: ``False`` once :meth:`Simulator.fail` crashed it: it receives
            nothing, sends nothing and its timers do not fire.
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
    alive: bool = True

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
        # Joined, live hosts in the order they joined, and where each is in it.
        self._joined: list[Host] = []
        self._joined_at: dict[int, int] = {}
        # Joined, live hosts by the router they are attached to.
        self._joined_on: dict[int, list[Host]] = {}
        # (time, sequence, kind, host index, datagram, source address)
        self._queue: list[tuple[float, int, int, int, bytes, Address | int]] = []
        self._seq = 0

    # --- building ------------------------------------------------------------

    def add_host(
        self, via: Host | None, *, router: int | None = None, spares: Sequence[Host] = ()
    ) -> Host:
        """A new host joining through ``via`` (``None``: the first).

        It sits on ``router``, by default a random stub router. ``spares`` are
        further bootstrap hosts, tried in turn if ``via`` does not answer (it
        may crash while the JOIN is on its way).
        """
        node_id = self.rng.getrandbits(128)
        while node_id in self.by_id:
            node_id = self.rng.getrandbits(128)
        index = len(self.hosts)
        address = (f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}", _PORT)
        kbr = KbrNode(NodeHandle(node_id, address), self.kbr_config, self._core_rng)
        host = Host(
            index=index,
            router=self.rng.choice(self.topology.stub_routers) if router is None else router,
            kbr=kbr,
            scribe=ScribeNode(kbr, self.scribe_config),
        )
        self.hosts.append(host)
        self.by_address[address] = host
        self.by_id[node_id] = host
        known = [] if via is None else [via.handle.address]
        known += [spare.handle.address for spare in spares]
        self.call(host, lambda now: kbr.bootstrap(known, now))
        return host

    def grow(
        self,
        count: int,
        *,
        spacing: float = 0.05,
        rate: float | None = None,
        nearby: bool = False,
    ) -> list[Host]:
        """Add ``count`` hosts, each through a random joined host (``nearby``: a closest one).

        Pastry assumes a new node knows a node near it in the network to
        join through (Rowstron & Druschel 2001, §2.4): the first rows of its
        routing table, copied from that node, are then near too. ``nearby``
        does that; otherwise the bootstrap node is a random one.

        They come ``spacing`` seconds apart; with ``rate``, faster once the
        overlay is large: at most ``rate`` times the number of joined hosts
        per second. A fixed spacing would have a small overlay absorb as many
        concurrent joins as a large one, and Pastry's leaf sets converge
        slowly when a sizeable fraction of the overlay joins at once; a rate
        proportional to the size keeps that fraction constant.
        """
        added = []
        joined = self._joined
        for _ in range(count):
            if not joined:
                added.append(self.add_host(None))
            elif nearby:
                router = self.rng.choice(self.topology.stub_routers)
                added.append(self.add_host(self.nearest_joined(router), router=router))
            else:
                added.append(self.add_host(self.rng.choice(joined)))
            step = spacing
            if rate is not None and joined:
                step = min(spacing, 1.0 / (rate * len(joined)))
            self.run_for(step)
        return added

    def joined(self) -> list[Host]:
        """Live hosts whose KBR core has joined the overlay, in the order they joined."""
        return list(self._joined)

    def nearest_joined(self, router: int) -> Host:
        """A live, joined host closest to ``router`` (a random one among equals)."""
        on = self._joined_on
        here = on.get(router)
        if here:  # the common case in a large overlay: skip sorting every router
            return here[0] if len(here) == 1 else self.rng.choice(here)
        for candidate in self.topology.routers_by_delay(router):
            hosts = on.get(candidate)
            if hosts:
                return hosts[0] if len(hosts) == 1 else self.rng.choice(hosts)
        raise LookupError("no joined host")

    def random_joined(self) -> Host:
        """A uniformly random live, joined host (decided by the seed)."""
        return self.rng.choice(self._joined)

    def fail(self, host: Host) -> None:
        """Crash ``host`` now: it goes silent without a word to anyone.

        Datagrams on their way to it are lost; its peers detect the failure
        by their own keep-alive and heartbeat timeouts.
        """
        if not host.alive:
            return
        host.alive = False
        host.timer_at = None
        host.timer_token += 1  # its pending timer entry is stale now
        self._forget_joined(host)

    def _forget_joined(self, host: Host) -> None:
        position = self._joined_at.pop(host.index, None)
        if position is None:
            return
        self._joined_on[host.router].remove(host)
        last = self._joined.pop()
        if last is not host:
            self._joined[position] = last
            self._joined_at[last.index] = position

    # --- driving -------------------------------------------------------------

    def call(self, host: Host, action: Callable[[float], object]) -> None:
        """Run ``action(now)`` on ``host`` (an API call on its cores), then move its output."""
        action(self.now)
        self._pump(host)

    def join(self, host: Host, group: str) -> None:
        """``host`` joins ``group`` now (Scribe ``join``)."""
        scribe = host.scribe
        self.call(host, lambda now: scribe.join(group, now))

    def multicast(self, host: Host, group: str, payload: bytes) -> None:
        """``host`` multicasts ``payload`` to ``group`` now (Scribe ``multicast``)."""
        scribe = host.scribe
        self.call(host, lambda now: scribe.multicast(group, payload, now))

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
            if not host.alive:
                continue
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
            if type(event) is Joined and host.index not in self._joined_at:
                self._joined_at[host.index] = len(self._joined)
                self._joined.append(host)
                self._joined_on.setdefault(host.router, []).append(host)
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
        deadline = host.kbr.get_timer()
        scribe_due = host.scribe.get_timer()
        if scribe_due is not None and (deadline is None or scribe_due < deadline):
            deadline = scribe_due
        if deadline != host.timer_at:
            host.timer_at = deadline
            host.timer_token += 1
            if deadline is not None:
                self._push(max(deadline, self.now), _TIMER, host.index, b"", host.timer_token)

    def _transmit(self, source: Host, data: bytes, destination: Address) -> None:
        source.datagrams_out += 1
        self.datagrams += 1
        target = self.by_address.get(destination)
        if target is None or not target.alive:
            return
        if self.on_transmit is not None:
            self.on_transmit(source, target, data)
        delay_s = self.topology.host_delay_ms(source.router, target.router) / 1000.0
        self._push(self.now + delay_s, _DATAGRAM, target.index, data, source.handle.address)

    def _push(self, at: float, kind: int, index: int, data: bytes, extra: Address | int) -> None:
        heapq.heappush(self._queue, (at, self._seq, kind, index, data, extra))
        self._seq += 1
