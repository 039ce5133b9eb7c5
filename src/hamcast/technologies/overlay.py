"""The ``overlay`` technology: Scribe multicast trees on the Pastry-style KBR overlay.

For hosts whose networks have no multicast: groups are distributed over
unicast UDP between hamcast daemons (DESIGN.md §9). The protocol lives in the
sans-I/O cores :class:`~hamcast.overlay.kbr.KbrNode` and
:class:`~hamcast.overlay.scribe.ScribeNode`; this module stacks them
(:class:`OverlayStack`), runs them on one UDP socket with
:class:`~hamcast.overlay.driver.OverlayDriver`, and translates between them
and the middleware core.

One interface, ``overlay``, whose address is this node (``ID-PREFIX@ADDRESS:PORT``).
Every group name can be served; its tree is rooted at the node whose id is
closest to the name's overlay key (docs/mapping.md).

Options (``[technology.overlay]``; the command line has ``--overlay-listen``
and ``--overlay-bootstrap``):

``listen``
    ``ADDRESS:PORT`` to bind (default ``0.0.0.0:7047``; ``[::]:7047`` for IPv6)
``advertise``
    ``ADDRESS:PORT`` other nodes reach this one at (default: the listen address,
    or for a wildcard one the first address of an up, non-loopback interface)
``bootstrap``
    list of ``ADDRESS:PORT`` of nodes already in the overlay. Empty: this node
    starts an overlay of its own and then follows the hamcast peers it hears
    on its links (the ``ip`` technology's announcements carry their overlay
    endpoints): it (re)joins through the lowest address it knows whenever that
    is lower than the node it joined through — so every daemon of a
    multicast-capable link ends up in the overlay of the link's lowest address,
    without configuration
``node_id``
    32 hex digits (default: random)
``[technology.overlay.kbr]``, ``[technology.overlay.scribe]``, ``[technology.overlay.fragments]``
    fields of :class:`~hamcast.overlay.kbr.KbrConfig`,
    :class:`~hamcast.overlay.scribe.ScribeConfig` and
    :class:`~hamcast.overlay.fragments.FragmentConfig`
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from hamcast.errors import ResourceError, UsageError
from hamcast.events import MemberJoined, MemberLeft
from hamcast.model import GroupRole, GroupSetEntry
from hamcast.overlay.api import Joined
from hamcast.overlay.driver import OverlayDriver
from hamcast.overlay.fragments import FragmentConfig
from hamcast.overlay.ids import Address, NodeHandle, encode_handle, format_id
from hamcast.overlay.kbr import KbrConfig, KbrNode, NodeState
from hamcast.overlay.kbr.messages import DATA_HEADER_SIZE, ROUTE_DATA_HEAD_SIZE
from hamcast.overlay.scribe import ScribeConfig, ScribeNode
from hamcast.overlay.scribe.events import ChildAdded, ChildRemoved, MessageReceived
from hamcast.overlay.scribe.messages import MULTICAST_OVERHEAD, data_overhead
from hamcast.technologies.base import Assessment, Technology, TechnologyInterface
from hamcast.technologies.ip.netifs import scan
from hamcast.uri import URI

__all__ = ["OverlayStack", "OverlayTechnology", "parse_endpoint"]

logger = logging.getLogger(__name__)

_IFACE = "overlay"
_MAX_NAME = 1024  # longest ham: URI (hamcast.uri.MAX_URI_LENGTH)
#: Restarts through link peers; a bound so a flapping peer cannot keep us restarting.
_MAX_RESTARTS = 8
_MAX_LINK_PEERS = 256
#: Messages of a run sent per pump and transmit (see OverlayTechnology.send_many).
_SEND_SLICE = 64
#: Node handles whose text form is cached for delivery upcalls (sources are few).
_MAX_SOURCE_NAMES = 4096
_OPTIONS = {"listen", "advertise", "bootstrap", "node_id", "kbr", "scribe", "fragments"}


def parse_endpoint(text: str, what: str) -> Address:
    """``ADDRESS:PORT`` or ``[IPv6]:PORT`` as an :data:`Address`; clear errors otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise UsageError(f"{what} {text!r} is not ADDRESS:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"{what} {text!r}: {host!r} is not an IP address") from None
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise UsageError(f"{what} {text!r}: port out of range")
    return str(address), port


class OverlayStack:
    """KBR and Scribe as one datagram core for the driver (STYLE.md 2: event on event).

    Datagrams and timers go to the KBR node; its upcalls go to Scribe; Scribe's
    events go to ``on_event``. After every input :meth:`pump` runs both queues
    dry, since each layer's reaction can produce work for the other.

    The data path takes no event objects: KBR's data upcalls reach Scribe as
    plain tuples (``next_upcall`` / ``handle_kbr_upcall``), and deliveries go
    to ``on_message(group, payload, source, sequence, hops)`` when it is
    given (else to ``on_event`` as :class:`MessageReceived`), in the order of
    the other events.
    """

    def __init__(
        self,
        kbr: KbrNode,
        scribe: ScribeNode,
        on_event: Callable[[object], None],
        on_message: Callable[[str, bytes, NodeHandle, int, int], None] | None = None,
    ) -> None:
        self.kbr = kbr
        self.scribe = scribe
        self._on_event = on_event
        self._on_message = on_message

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.kbr.receive_datagram(data, source, now)
        self.pump(now)

    def receive_datagrams(self, items: list[tuple[bytes, Address]], now: float) -> None:
        """The datagrams of one wake-up: KBR takes them all, then one :meth:`pump`.

        What reaches Scribe and the layer above is the same, in the same
        order, as with :meth:`receive_datagram` one by one; only KBR's replies
        to later datagrams may be queued before Scribe's to earlier ones.
        KBR's event queue holds the batch (``read_batch`` ≤ 256 datagrams,
        against ``max_events`` = 4096).
        """
        receive = self.kbr.receive_datagram
        for data, source in items:
            receive(data, source, now)
        self.pump(now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self.kbr.datagrams_to_send()

    def get_timer(self) -> float | None:
        timers = [t for t in (self.kbr.get_timer(), self.scribe.get_timer()) if t is not None]
        return min(timers, default=None)

    def handle_timer(self, now: float) -> None:
        kbr_timer = self.kbr.get_timer()
        if kbr_timer is not None and kbr_timer <= now:
            self.kbr.handle_timer(now)
        scribe_timer = self.scribe.get_timer()
        if scribe_timer is not None and scribe_timer <= now:
            self.scribe.handle_timer(now)
        self.pump(now)

    def pump(self, now: float) -> None:
        kbr, scribe = self.kbr, self.scribe
        next_upcall = kbr.next_upcall
        take = scribe.handle_kbr_upcall
        on_event, on_message = self._on_event, self._on_message
        next_event = scribe.next_event if on_message is None else scribe.next_upcall
        while True:
            if self.kbr is not kbr or self.scribe is not scribe:
                self.pump(now)  # restarted through a link peer meanwhile
                return
            busy = False
            while (upcall := next_upcall()) is not None:
                busy = True
                take(upcall, now)
                if type(upcall) is Joined:
                    on_event(upcall)  # the node's own arrival matters upward too
            while (scribe_event := next_event()) is not None:
                busy = True
                if type(scribe_event) is tuple:
                    on_message(*scribe_event)  # type: ignore[misc]
                else:
                    on_event(scribe_event)
            if not busy:
                return


class OverlayTechnology(Technology):
    """Overlay multicast between hamcast daemons over unicast UDP."""

    name = "overlay"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - _OPTIONS)
        if unknown:
            raise UsageError(f"[technology.overlay] unknown option(s): {', '.join(unknown)}")
        self._listen = parse_endpoint(str(self.options.get("listen", "0.0.0.0:7047")), "listen")
        advertise = self.options.get("advertise")
        self._advertise = parse_endpoint(str(advertise), "advertise") if advertise else None
        bootstrap = self.options.get("bootstrap", [])
        if not isinstance(bootstrap, list):
            raise UsageError("[technology.overlay] bootstrap must be a list of ADDRESS:PORT")
        self._bootstrap = [parse_endpoint(str(b), "bootstrap") for b in bootstrap]
        node_id = self.options.get("node_id")
        try:
            self._node_id = int(str(node_id), 16) if node_id else secrets.randbits(128)
        except ValueError:
            raise UsageError("[technology.overlay] node_id must be 32 hex digits") from None
        if not 0 <= self._node_id < 1 << 128:
            raise UsageError("[technology.overlay] node_id must be 32 hex digits")
        self._kbr_config: KbrConfig = _config(KbrConfig, self.options.get("kbr", {}), "kbr")
        self._scribe_config: ScribeConfig = _config(
            ScribeConfig, self.options.get("scribe", {}), "scribe"
        )
        self._fragments: FragmentConfig = _config(
            FragmentConfig, self.options.get("fragments", {}), "fragments"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stack: OverlayStack | None = None
        self._driver: OverlayDriver | None = None
        self._handle: NodeHandle | None = None
        self._uris: dict[str, URI] = {}
        self._source_names: dict[NodeHandle, str] = {}
        #: Groups joined through this module, to join again after a restart.
        self._members: set[str] = set()
        self._restarts = 0
        #: Overlay endpoints of hamcast peers heard on links (bounded).
        self._link_peers: set[Address] = set()
        #: The node this one joined through (itself when it started alone).
        self._seed: Address | None = None

    # --- lifecycle -----------------------------------------------------------

    async def start(self, upcalls: Any) -> None:
        await super().start(upcalls)
        self._loop = asyncio.get_running_loop()
        # The KBR node needs its reachable address before the socket exists:
        # bind first (port 0 gives an ephemeral one), then build the cores.
        placeholder = _Deferred()
        driver = OverlayDriver(placeholder, self._listen, fragments=self._fragments)
        await driver.start()
        bound = driver.local_address
        host = self._advertise or (bound if not _wildcard(bound[0]) else _first_address(bound))
        if host is None:
            await driver.stop()
            raise UsageError(
                f"overlay listen address {self._listen[0]} is a wildcard and this host has "
                "no other address: set advertise = ADDRESS:PORT that other nodes can reach"
            )
        self._handle = NodeHandle(self._node_id, host)
        kbr = KbrNode(self._handle, self._kbr_config, random.Random(self._node_id))
        scribe = ScribeNode(kbr, self._scribe_config)
        self._stack = OverlayStack(kbr, scribe, self._scribe_event, self._message)
        placeholder.target = self._stack
        self._driver = driver
        self._seed = self._bootstrap[0] if self._bootstrap else host
        kbr.bootstrap(self._bootstrap, self._loop.time())
        self._stack.pump(self._loop.time())
        driver.transmit()
        logger.info("overlay node %s on %s", format_id(self._node_id)[:8], host)

    async def stop(self) -> None:
        if self._stack is not None and self._loop is not None:
            self._stack.kbr.leave(self._loop.time())
        if self._driver is not None:
            await self._driver.stop()
            self._driver = None

    # --- the contract ------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _parts(self) -> tuple[OverlayStack, OverlayDriver]:
        if self._stack is None or self._driver is None:
            raise ResourceError("the overlay is not running")
        return self._stack, self._driver

    def interfaces(self) -> list[TechnologyInterface]:
        address = str(self._handle) if self._handle is not None else "starting"
        return [TechnologyInterface(_IFACE, "overlay", address)]

    def can_serve(self, iface: str, group: URI) -> bool:
        return iface == _IFACE

    def assess(self, iface: str, group: URI) -> Assessment:
        """Usable once this node has joined an overlay (alone, or through a bootstrap node)."""
        if self._stack is None:
            return Assessment(False, "the overlay is not running")
        kbr = self._stack.kbr
        if kbr.state is NodeState.JOINING and self._restarts:
            # Moving to a link peer's overlay: keep the groups here, they are joined again.
            return Assessment(True, "overlay node rejoining through a link peer")
        if kbr.state is not NodeState.JOINED:
            return Assessment(False, f"overlay node {kbr.state.value}")
        return Assessment(True, f"overlay node joined, {len(kbr.leaf_set())} leaf-set neighbours")

    def join(self, iface: str, group: URI) -> None:
        stack, driver = self._parts()
        self._uris[group.name] = group
        self._members.add(group.name)
        stack.scribe.join(group.name, self._now())
        stack.pump(self._now())
        driver.transmit()

    def leave(self, iface: str, group: URI) -> None:
        stack, driver = self._parts()
        self._members.discard(group.name)
        stack.scribe.leave(group.name, self._now())
        stack.pump(self._now())
        driver.transmit()

    def send(
        self, iface: str, group: URI, payload: bytes | memoryview, ttl: int, origin: str
    ) -> None:
        stack, driver = self._parts()
        now = self._now()
        try:
            stack.scribe.multicast(group.name, bytes(payload), now)
        finally:
            stack.pump(now)
            driver.transmit()

    def send_many(
        self,
        iface: str,
        group: URI,
        payloads: Sequence[bytes | memoryview],
        ttl: int,
        origin: str,
    ) -> None:
        """Send a run of messages with one pump and one (batched) transmit per slice.

        Slices of :data:`_SEND_SLICE` keep what waits in the KBR send queue
        well below its bound however wide the tree. The first message Scribe
        refuses ends the run, as :meth:`send` one by one would.
        """
        stack, driver = self._parts()
        now = self._now()
        name = group.name
        for start in range(0, len(payloads), _SEND_SLICE):
            multicast = stack.scribe.multicast  # a restart may replace it
            try:
                for payload in payloads[start : start + _SEND_SLICE]:
                    multicast(name, bytes(payload), now)
            finally:
                stack.pump(now)
                driver.transmit()

    def max_msg_size(self, iface: str) -> int:
        """A payload every group name fits with (names are at most 1024 characters).

        A group with a shorter name may carry a little more; Scribe checks
        each message against its own group's limit.
        """
        if self._stack is None:
            return 0
        return self._stack.scribe.max_payload("ham:opaque:" + "x" * (_MAX_NAME - 11))

    def atomic_msg_size(self, iface: str) -> int:
        """What fits one frame of the fragment MTU with the data messages' headers.

        1401 bytes over IPv4 with the defaults (docs/technologies/overlay.md),
        whatever the group's name: data messages do not carry it.
        """
        handle = self._handle or NodeHandle(0, ("0.0.0.0", 1))
        handle_size = len(encode_handle(handle))
        headers = max(
            DATA_HEADER_SIZE + data_overhead(handle),  # DATA along a tree edge
            ROUTE_DATA_HEAD_SIZE + handle_size + MULTICAST_OVERHEAD,  # routed to the root
        )
        ipv6 = ":" in handle.address[0]
        return max(self._fragments.payload_limit(ipv6=ipv6) - 1 - headers, 0)

    # --- finding the overlay through link peers ------------------------------------

    def advertisement(self) -> dict[str, str]:
        if self._handle is None:
            return {}
        host, port = self._handle.address
        return {"overlay": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"}

    def peer_learned(self, kind: str, endpoint: str) -> None:
        """Follow a link peer's overlay when its address is the lowest known.

        The seed rule: every daemon that was given no bootstrap node joins
        through the lowest address among itself and the link peers it heard,
        and moves when it hears a lower one. Seeds only go down, so the link's
        daemons converge on one overlay after at most one move per peer.
        """
        if kind != "overlay" or self._bootstrap or self._stack is None or self._seed is None:
            return
        try:
            target = parse_endpoint(endpoint, "a peer's overlay endpoint")
        except UsageError:
            return
        if len(self._link_peers) < _MAX_LINK_PEERS:
            self._link_peers.add(target)
        best = min(self._link_peers, key=lambda a: _address_key(a[0]))
        if _address_key(best[0]) >= _address_key(self._seed[0]):
            return
        if self._restarts >= _MAX_RESTARTS:
            logger.warning("overlay: not following %s:%d, restarted too often", *best)
            return
        self._seed = best
        self._restart_through(best)

    def _restart_through(self, target: Address) -> None:
        stack, driver = self._parts()
        assert self._handle is not None
        now = self._now()
        self._restarts += 1
        logger.info("overlay: joining the overlay of link peer %s:%d", *target)
        # Start afresh through the peer: the old node's neighbours notice it
        # vanish and repair; its groups are joined again below.
        kbr = KbrNode(self._handle, self._kbr_config, random.Random(self._node_id + self._restarts))
        stack.kbr = kbr
        stack.scribe = ScribeNode(kbr, self._scribe_config)
        kbr.bootstrap([target], now)
        for name in sorted(self._members):
            stack.scribe.join(name, now)
        stack.pump(now)
        driver.transmit()

    # --- upward ------------------------------------------------------------------

    def _uri(self, name: str) -> URI:
        uri = self._uris.get(name)
        if uri is None:
            uri = URI.parse(name)
            if len(self._uris) < 4096:
                self._uris[name] = uri
        return uri

    def _source_name(self, source: NodeHandle) -> str:
        text = self._source_names.get(source)
        if text is None:
            text = str(source)
            if len(self._source_names) >= _MAX_SOURCE_NAMES:
                self._source_names.clear()
            self._source_names[source] = text
        return text

    def _message(
        self, group: str, payload: bytes, source: NodeHandle, sequence: int, hops: int
    ) -> None:
        # The data path: what OverlayStack hands over without a MessageReceived.
        uri = self._uris.get(group)
        if uri is None:
            uri = self._uri(group)
        text = self._source_names.get(source)
        if text is None:
            text = self._source_name(source)
        self.upcalls.deliver(self, _IFACE, uri, text, payload)

    def _scribe_event(self, event: object) -> None:
        if type(event) is MessageReceived:
            self.upcalls.deliver(
                self, _IFACE, self._uri(event.group), self._source_name(event.source), event.payload
            )
        elif isinstance(event, ChildAdded):
            self.upcalls.notify(self, _IFACE, MemberJoined(self._uri(event.group), 0))
        elif isinstance(event, ChildRemoved):
            self.upcalls.notify(self, _IFACE, MemberLeft(self._uri(event.group), 0))
        elif isinstance(event, Joined):
            self.upcalls.conditions_changed(self)

    # --- service calls -------------------------------------------------------------

    def neighbor_set(self, iface: str) -> list[str]:
        """The overlay nodes this node keeps state about (leaf set and routing table)."""
        if self._stack is None:
            return []
        return [str(node) for node in self._stack.kbr.neighbors()]

    def children_set(self, iface: str, group: URI) -> list[str]:
        if self._stack is None:
            return []
        return [str(node) for node in self._stack.scribe.children(group.name)]

    def parent_set(self, iface: str, group: URI) -> list[str]:
        if self._stack is None:
            return []
        parent = self._stack.scribe.parent(group.name)
        return [] if parent is None else [str(parent)]

    def designated_host(self, iface: str, group: URI) -> bool:
        """Whether this node is the group's root (its rendezvous point)."""
        return self._stack is not None and self._stack.scribe.is_root(group.name)

    def group_set(self, iface: str) -> list[GroupSetEntry]:
        """Groups whose tree passes through this node without a local member: forwarders."""
        if self._stack is None:
            return []
        entries = []
        for name in self._stack.scribe.groups():
            if not self._stack.scribe.is_member(name):
                entries.append(GroupSetEntry(self._uri(name), GroupRole.LISTENER))
        return entries

    def interface_status(self, iface: str) -> dict[str, Any]:
        if self._stack is None or self._driver is None:
            return {"running": False}
        kbr = self._stack.kbr
        return {
            "running": True,
            "node": str(kbr.handle),
            "node_id": format_id(kbr.handle.id),
            "state": kbr.state.value,
            "leaf_set": [str(n) for n in kbr.leaf_set()],
            "routing_table_size": len(kbr.routing_table()),
            "groups": {
                name: {
                    "member": self._stack.scribe.is_member(name),
                    "root": self._stack.scribe.is_root(name),
                    "parent": str(p) if (p := self._stack.scribe.parent(name)) else None,
                    "children": [str(c) for c in self._stack.scribe.children(name)],
                }
                for name in self._stack.scribe.groups()
            },
        }


class _Deferred:
    """Stands in for the stack while the socket is bound; then forwards to it."""

    target: OverlayStack | None = None

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        if self.target is not None:
            self.target.receive_datagram(data, source, now)

    def receive_datagrams(self, items: list[tuple[bytes, Address]], now: float) -> None:
        if self.target is not None:
            self.target.receive_datagrams(items, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        return self.target.datagrams_to_send() if self.target is not None else []

    def get_timer(self) -> float | None:
        return self.target.get_timer() if self.target is not None else None

    def handle_timer(self, now: float) -> None:
        if self.target is not None:
            self.target.handle_timer(now)


def _address_key(host: str) -> tuple[int, int]:
    address = ipaddress.ip_address(host)
    return address.version, int(address)


def _wildcard(host: str) -> bool:
    return ipaddress.ip_address(host).is_unspecified


def _first_address(bound: Address) -> Address | None:
    """For a wildcard bind: the first address of an up, non-loopback interface of its family."""
    family = ipaddress.ip_address(bound[0]).version
    for netif in scan():
        if netif.up and not netif.loopback:
            for address in netif.addresses(family):
                if not address.is_link_local:
                    return str(address), bound[1]
    return None


def _config(cls: type[Any], table: object, section: str) -> Any:
    if not isinstance(table, dict):
        raise UsageError(f"[technology.overlay.{section}] must be a table")
    try:
        return cls(**table)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"[technology.overlay.{section}]: {exc}") from None
