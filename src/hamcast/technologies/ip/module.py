"""The ``ip`` technology: native IPv4 and IPv6 multicast, any-source and source-specific.

One hamcast interface per network interface and address family that is up,
multicast-capable, not loopback and has an address of that family. On the
wire a datagram's payload is exactly the application's message: plain
multicast programs interoperate on ``ham:ip:`` groups in both directions.

* Groups: ``ham:ip:G:P`` uses G and P as written; ``ham:ip:G@S:P`` is SSM
  (joined for source S only); every other name uses its mapped IPv4/IPv6 group
  and port (docs/mapping.md).
* Receiving: one UDP socket per (family, port) bound to the wildcard address
  joins the groups on the chosen interfaces; PKTINFO tells each datagram's
  group and interface, and the name table gives back the name the sender used
  (for names this daemon has seen; ``ham:ip:G:P`` otherwise).
* Sending: one UDP socket per interface (``IP_MULTICAST_IF``), TTL / hop limit
  set per message as the socket asks, loopback on.

Options (``[technology.ip]``):

``interfaces``
    network interface names to use (default: all that qualify)
``families``
    address families, default ``[4, 6]``
``rescan_interval``
    seconds between looks for interfaces that came or went (default 5)
``announce``
    announce this daemon to hamcast peers on every link (default true;
    see :mod:`hamcast.technologies.ip.peers`)
``announce_interval``
    seconds between announcements (default 10)
``domain``
    announce the group names this host uses natively to the whole multicast
    domain and hear the others' (default true; gateways need it; see
    :mod:`hamcast.technologies.ip.domain`)
``domain_interval``
    seconds between domain announcements (default 5)
``domain_ttl``
    TTL / hop limit of domain announcements (default 16)
``discovery``
    observe IGMP/MLD queries and reports and PIM Hellos on every link (default
    true; needs CAP_NET_RAW, else every link's verdict is ``unknown``)
``[technology.ip.discovery]``
    fields of :class:`hamcast.discovery.DiscoveryConfig` (timers, bounds)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import random
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hamcast.discovery import (
    DiscoveryConfig,
    DiscoveryDriver,
    DiscoveryEvent,
    MemberExpired,
    MemberReported,
    Verdict,
    VerdictChanged,
)
from hamcast.errors import (
    HamcastError,
    ResourceError,
    UnknownInterfaceError,
    UnsupportedGroupError,
    UsageError,
)
from hamcast.events import InterfaceChanged, MemberJoined, MemberLeft
from hamcast.mapping import GroupMapping, NameTable, map_group
from hamcast.model import GroupRole, GroupSetEntry
from hamcast.technologies.base import (
    Assessment,
    DirectReceiver,
    DirectSender,
    DomainView,
    Technology,
    TechnologyInterface,
)
from hamcast.technologies.ip import sockopts
from hamcast.technologies.ip.domain import DOMAIN_GROUP_V4, DOMAIN_GROUP_V6, DomainTable
from hamcast.technologies.ip.mmsg import BATCH, DatagramBatcher
from hamcast.technologies.ip.netifs import NetInterface, scan
from hamcast.technologies.ip.peers import (
    ANNOUNCE_GROUP_V4,
    ANNOUNCE_GROUP_V6,
    ANNOUNCE_PORT,
    PeerTable,
)
from hamcast.technologies.ip.sockopts import IpAddress
from hamcast.uri import URI

__all__ = ["IpTechnology"]

logger = logging.getLogger(__name__)

#: Largest UDP payload per family (bytes).
_MAX_PAYLOAD = {4: 65507, 6: 65527}
#: IP + UDP header bytes per family, subtracted from the MTU for the atomic size.
_HEADERS = {4: 28, 6: 48}
_OPTIONS = {
    "interfaces",
    "families",
    "rescan_interval",
    "announce",
    "announce_interval",
    "discovery",
    "domain",
    "domain_interval",
    "domain_ttl",
}
#: Datagrams read per readiness callback before yielding to other work.
_READ_BATCH = 256


@dataclass(slots=True)
class _Link:
    """One hamcast interface: a network interface in one address family."""

    netif: NetInterface
    family: int
    address: IpAddress
    sender: socket.socket | None = None
    ttl: int = -1
    #: Messages the kernel had no buffer for (EAGAIN / ENOBUFS): dropped, like UDP does.
    send_drops: int = 0

    @property
    def key(self) -> str:
        return f"{self.netif.name}/{self.family}"

    @property
    def link_address(self) -> IpAddress:
        """The address this host uses towards link-local groups (IPv6: its fe80:: one)."""
        if self.family == 6:
            for address in self.netif.ipv6:
                if address.is_link_local:
                    return address
        return self.address


@dataclass(slots=True)
class _Receiver:
    """The socket receiving one (family, port), and how many memberships use it."""

    sock: socket.socket
    family: int
    port: int
    members: set[tuple[str, URI]] = field(default_factory=set)


class IpTechnology(Technology):
    """Native IP multicast on this host's interfaces."""

    name = "ip"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        unknown = sorted(set(self.options) - _OPTIONS)
        if unknown:
            raise UsageError(f"[technology.ip] unknown option(s): {', '.join(unknown)}")
        wanted = self.options.get("interfaces")
        if wanted is not None and not (
            isinstance(wanted, list) and all(isinstance(n, str) for n in wanted)
        ):
            raise UsageError("[technology.ip] interfaces must be a list of interface names")
        self._wanted: set[str] | None = set(wanted) if wanted is not None else None
        families = self.options.get("families", [4, 6])
        if not families or any(f not in (4, 6) for f in families):
            raise UsageError("[technology.ip] families must be a list of 4 and/or 6")
        self._families: tuple[int, ...] = tuple(sorted(set(families)))
        self._rescan_interval = float(self.options.get("rescan_interval", 5.0))
        self._links: dict[str, _Link] = {}
        self._by_index: dict[tuple[int, int], _Link] = {}
        self._receivers: dict[tuple[int, int], _Receiver] = {}
        self._names = NameTable()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rescan: asyncio.TimerHandle | None = None
        self._announce = bool(self.options.get("announce", True))
        interval = int(self.options.get("announce_interval", 10))
        if not 1 <= interval <= 3600:
            raise UsageError("[technology.ip] announce_interval must be 1 to 3600 seconds")
        self.peers = PeerTable(os.urandom(16), socket.gethostname(), ("ip",), interval)
        self._peer_timer: asyncio.TimerHandle | None = None
        self._announced: set[str] = set()
        #: Overlay endpoints of peers already passed to the core.
        self._overlay_endpoints: set[str] = set()
        self._discovery: DiscoveryDriver | None = None
        self._discovery_config: DiscoveryConfig | None = None
        discovery = self.options.get("discovery", True)
        if isinstance(discovery, dict):
            try:
                self._discovery_config = DiscoveryConfig(**discovery)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"[technology.ip.discovery]: {exc}") from None
        elif discovery is not True and discovery is not False:
            raise UsageError("[technology.ip] discovery must be true, false or a table")
        self._discovery_on = discovery is not False
        self._domain_on = bool(self.options.get("domain", True))
        domain_interval = int(self.options.get("domain_interval", 5))
        if not 1 <= domain_interval <= 3600:
            raise UsageError("[technology.ip] domain_interval must be 1 to 3600 seconds")
        self._domain_ttl = int(self.options.get("domain_ttl", 16))
        if not 1 <= self._domain_ttl <= 255:
            raise UsageError("[technology.ip] domain_ttl must be 1 to 255")
        self.domain_table = DomainTable(self.peers.daemon_id, domain_interval)
        self._domain_links: set[str] = set()
        self._domain_timer: asyncio.TimerHandle | None = None
        self._domain_next = 0.0
        self._domain_last = float("-inf")
        #: The name this daemon knows for each group address (for membership events).
        self._by_address: dict[IpAddress, URI] = {}
        #: Per (interface, group): the link, the destination as Python's socket
        #: address and as a C sockaddr (for sendmmsg); cleared when links change.
        self._send_routes: dict[tuple[str, URI], tuple[_Link, tuple[Any, ...], bytes]] = {}
        self._batchers: dict[int, DatagramBatcher] = {}
        #: (PKTINFO bytes, peer) -> (link, group name, source text); cleared on any change.
        self._arrivals: dict[tuple[bytes, Any, int], tuple[_Link, URI, str] | None] = {}

    # --- lifecycle -----------------------------------------------------------

    async def start(self, upcalls: Any) -> None:
        await super().start(upcalls)
        self._loop = asyncio.get_running_loop()
        self._refresh_links()
        self._schedule_rescan()
        if self._discovery_on:
            self._discovery = DiscoveryDriver(
                self._netif_list(),
                self._on_discovery,
                self._discovery_config,
                families=self._families,
            )
            await self._discovery.start()

    async def stop(self) -> None:
        if self._rescan is not None:
            self._rescan.cancel()
        if self._peer_timer is not None:
            self._peer_timer.cancel()
        if self._domain_timer is not None:
            self._domain_timer.cancel()
        if self._discovery is not None:
            await self._discovery.stop()
            self._discovery = None
        for receiver in list(self._receivers.values()):
            self._close_receiver(receiver)
        for link in self._links.values():
            if link.sender is not None:
                link.sender.close()
        self._links.clear()
        self._by_index.clear()

    def _schedule_rescan(self) -> None:
        assert self._loop is not None
        if self._rescan_interval > 0:
            self._rescan = self._loop.call_later(self._rescan_interval, self._rescan_now)

    def _rescan_now(self) -> None:
        if self._refresh_links():
            if self._discovery is not None:
                self._discovery.set_interfaces(self._netif_list())
            self.upcalls.interfaces_changed(self)
        self._schedule_rescan()

    def _netif_list(self) -> list[tuple[int, str]]:
        return sorted({(link.netif.index, link.netif.name) for link in self._links.values()})

    # --- service discovery --------------------------------------------------------

    def _on_discovery(self, event: DiscoveryEvent) -> None:
        if isinstance(event, VerdictChanged):
            link = self._by_index.get((event.interface, event.family))
            if link is not None:
                logger.info("%s: %s -> %s", link.key, event.old.value, event.new.value)
                self.upcalls.notify(self, link.key, InterfaceChanged(0, event.new.value))
                self.upcalls.conditions_changed(self)
        elif isinstance(event, MemberReported | MemberExpired):
            address = ipaddress.ip_address(event.group)
            link = self._by_index.get((event.interface, address.version))
            if link is not None:
                group = self._by_address.get(address) or URI.for_ip(address, None)
                happened = (
                    MemberJoined(group, 0)
                    if isinstance(event, MemberReported)
                    else MemberLeft(group, 0)
                )
                self.upcalls.notify(self, link.key, happened)

    def _discovered(self, iface: str) -> tuple[Verdict, Any] | None:
        link = self._links.get(iface)
        if link is None or self._discovery is None:
            return None
        try:
            return self._discovery.snapshot(link.netif.index, link.family)
        except UnknownInterfaceError:
            return None  # a link found by the last rescan, not watched yet

    # --- hamcast peers -----------------------------------------------------------

    def _sync_peers(self) -> None:
        """Follow the link set: join the announcement group where new, announce there."""
        if not self._announce:
            return
        self.peers.set_links({key: link.link_address for key, link in self._links.items()})
        for key in self._announced - set(self._links):
            self._announced.discard(key)
        for key, link in self._links.items():
            if key not in self._announced and self._hear(link, _ANNOUNCE_URI, "hamcast peers"):
                self._announced.add(key)
        self._peer_tick()

    def _hear(self, link: _Link, uris: dict[int, URI], what: str) -> bool:
        """Join one of our control groups (by family) on ``link``; False if that failed."""
        receiver = self._receiver(link.family, ANNOUNCE_PORT)
        uri = uris[link.family]
        try:
            sockopts.join(receiver.sock, link.netif.index, self._target(link, uri)[1], None)
        except ResourceError as exc:
            logger.warning("cannot hear %s on %s: %s", what, link.key, exc)
            return False
        receiver.members.add((link.key, uri))
        return True

    def _peer_tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        expired = self.peers.expire(now)
        for peer in expired:
            logger.info("hamcast peer %s (%s) expired", peer.address, peer.announcement.name)
        if expired:
            self.upcalls.conditions_changed(self)
        if now >= self.peers.next_announce():
            self._send_announcements()
            # Jitter keeps daemons that started together from announcing in lockstep.
            self.peers.announced(now, random.uniform(-0.1, 0.1) * self.peers.interval)
        if self._peer_timer is not None:
            self._peer_timer.cancel()
        when = self.peers.next_announce()
        expiry = self.peers.next_expiry()
        if expiry is not None:
            when = min(when, expiry)
        self._peer_timer = self._loop.call_at(when, self._peer_tick)

    def _send_announcements(self) -> None:
        datagram = self.peers.announcement()
        for key in sorted(self._announced):
            link = self._links[key]
            group = ANNOUNCE_GROUP_V4 if link.family == 4 else ANNOUNCE_GROUP_V6
            try:
                self._sendto(link, datagram, group, ANNOUNCE_PORT, ttl=1)
            except ResourceError as exc:
                logger.debug("announcement on %s failed: %s", key, exc)

    def _hear_peer(self, link: _Link, data: bytes, source: IpAddress) -> None:
        assert self._loop is not None
        new = self.peers.receive(link.key, data, source, self._loop.time())
        peer = self.peers.last_heard
        if peer is not None and peer.announcement.overlay:
            endpoint = peer.announcement.overlay
            if endpoint not in self._overlay_endpoints:
                if len(self._overlay_endpoints) >= 1024:
                    self._overlay_endpoints.clear()
                self._overlay_endpoints.add(endpoint)
                self.upcalls.peer_heard(self, "overlay", endpoint)
        if new:
            logger.info("hamcast peer %s heard on %s", source, link.key)
            # Re-plan: the table now wants an early answer and has a new expiry.
            self._peer_tick()
            # Another daemon hears us: multicast works on this link.
            self.upcalls.conditions_changed(self)

    def advertise(self, endpoints: dict[str, str]) -> None:
        """Carry this daemon's overlay endpoint in the link announcements."""
        self.peers.overlay = endpoints.get("overlay", "")
        self.peers.monitor = endpoints.get("monitor", "")
        self.domain_table.gateway = endpoints.get("gateway") == "yes"

    # --- the multicast domain (gateways) -------------------------------------------

    def _sync_domain(self) -> None:
        """Join the domain group on new links; announce there at once."""
        if not self._domain_on:
            return
        self.domain_table.set_links(self._links)
        self._domain_links &= set(self._links)
        for key, link in self._links.items():
            if key not in self._domain_links and self._hear(link, _DOMAIN_URI, "the domain"):
                self._domain_links.add(key)
                self._domain_next = 0.0
        self._domain_tick()

    def _domain_tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if self.domain_table.expire(now):
            self.upcalls.conditions_changed(self)
        if now >= self._domain_next:
            for key in sorted(self._domain_links):
                link = self._links[key]
                listening, sending = self.upcalls.interest(self, key)
                group = DOMAIN_GROUP_V4 if link.family == 4 else DOMAIN_GROUP_V6
                for datagram in self.domain_table.datagrams(listening, sending):
                    try:
                        self._sendto(link, datagram, group, ANNOUNCE_PORT, self._domain_ttl)
                    except ResourceError as exc:
                        logger.debug("domain announcement on %s failed: %s", key, exc)
            self._domain_last = now
            jitter = random.uniform(-0.1, 0.1) * self.domain_table.interval
            self._domain_next = now + self.domain_table.interval + jitter
        if self._domain_timer is not None:
            self._domain_timer.cancel()
        when = self._domain_next
        expiry = self.domain_table.next_expiry()
        if expiry is not None:
            when = min(when, expiry)
        self._domain_timer = self._loop.call_at(when, self._domain_tick)

    def _hear_domain(self, link: _Link, data: bytes) -> None:
        assert self._loop is not None
        if self.domain_table.receive(link.key, data, self._loop.time()):
            self.upcalls.conditions_changed(self)
            self._domain_tick()  # re-plan the expiry

    def interest_changed(self, iface: str) -> None:
        """Announce the new names soon: at once, but at most once a second."""
        if self._loop is None or not self._domain_on or iface not in self._domain_links:
            return
        soon = max(self._loop.time(), self._domain_last + 1.0)
        if soon < self._domain_next:
            self._domain_next = soon
            self._domain_tick()

    def domain(self, iface: str) -> DomainView | None:
        if not self._domain_on or iface not in self._links:
            return None
        listening, sending = self.upcalls.interest(self, iface)
        return self.domain_table.view(iface, listening, sending)

    def _qualifies(self, netif: NetInterface) -> bool:
        if self._wanted is not None:
            return netif.name in self._wanted and netif.up
        return netif.up and netif.multicast and not netif.loopback

    def _refresh_links(self) -> bool:
        """Re-read the interfaces; True if the set of links changed."""
        current: dict[str, _Link] = {}
        for netif in scan():
            if not self._qualifies(netif):
                continue
            for family in self._families:
                addresses = netif.addresses(family)
                if addresses:
                    link = _Link(netif, family, addresses[0])
                    current[link.key] = link
        changed = set(current) != set(self._links) or any(
            current[k].address != self._links[k].address
            or current[k].netif.index != self._links[k].netif.index
            for k in current
            if k in self._links
        )
        for key, old in self._links.items():
            new = current.get(key)
            if new is not None and new.netif.index == old.netif.index:
                new.sender, new.ttl, new.send_drops = old.sender, old.ttl, old.send_drops
            elif old.sender is not None:
                old.sender.close()
        if changed:
            gone = set(self._links) - set(current)
            if gone:
                logger.warning("interfaces gone: %s", ", ".join(sorted(gone)))
                self._forget_memberships(gone)
        self._send_routes.clear()
        self._arrivals.clear()
        self._links = current
        self._by_index = {(link.netif.index, link.family): link for link in current.values()}
        if self._loop is not None:
            self._sync_peers()
            self._sync_domain()
        return changed

    # --- the contract ------------------------------------------------------------

    def interfaces(self) -> list[TechnologyInterface]:
        return [
            TechnologyInterface(link.key, link.netif.name, str(link.address))
            for link in sorted(self._links.values(), key=lambda li: (li.netif.index, li.family))
        ]

    def _link(self, iface: str) -> _Link:
        link = self._links.get(iface)
        if link is None:
            raise ResourceError(f"interface {iface} is gone")
        return link

    def can_serve(self, iface: str, group: URI) -> bool:
        link = self._links.get(iface)
        if link is None:
            return False
        if group.is_ip:
            return map_group(group).family == link.family
        return True

    def assess(self, iface: str, group: URI) -> Assessment:
        """Usable where the link shows multicast: a router, a querier or a hamcast peer.

        A link where nothing was heard (verdict ``none``), or not yet (discovery
        still settling), is not: the group goes to the next technology until
        evidence arrives. Without discovery (turned off, or no raw socket)
        multicast is assumed, as a plain multicast program would.
        """
        link = self._links.get(iface)
        if link is None:
            return Assessment(False, f"{iface} is gone")
        mapping = map_group(group)
        if mapping.source is not None and self._domain_on:
            # Source-specific: native multicast carries only the source's own
            # packets, so it serves us only inside the source's domain.
            own = mapping.source in link.netif.addresses(link.family)
            view = self.domain(iface)
            if not own and view is not None and group.name not in view.sending:
                return Assessment(
                    False, f"SSM source {mapping.source} not heard in this multicast domain"
                )
        found = self._discovered(iface)
        if found is not None:
            verdict, evidence = found
            if verdict is Verdict.ROUTED:
                routers = ", ".join(n.address for n in evidence.neighbours) or "a querier"
                return Assessment(True, f"multicast router {routers} on {link.netif.name}")
            if verdict is Verdict.LINK_LOCAL:
                querier = evidence.querier.address if evidence.querier else "a querier"
                return Assessment(True, f"multicast querier {querier} on {link.netif.name}")
        peers = self.peers.peers(iface)
        if peers:
            return Assessment(True, f"{len(peers)} hamcast peer(s) heard on {link.netif.name}")
        if found is None or (found[0] is Verdict.UNKNOWN and found[1].unavailable):
            return Assessment(True, f"no discovery on {link.netif.name}: multicast assumed")
        if found[0] is Verdict.UNKNOWN:
            return Assessment(False, f"still listening for multicast on {link.netif.name}")
        return Assessment(False, f"no router, querier or hamcast peer on {link.netif.name}")

    def _target(self, link: _Link, group: URI) -> tuple[GroupMapping, IpAddress]:
        mapping = map_group(group)
        if group.is_ip and mapping.family != link.family:
            raise UnsupportedGroupError(f"{group} is not an IPv{link.family} group")
        address: IpAddress = mapping.ipv4 if link.family == 4 else mapping.ipv6
        return mapping, address

    def join(self, iface: str, group: URI) -> None:
        link = self._link(iface)
        mapping, address = self._target(link, group)
        receiver = self._receiver(link.family, mapping.port)
        try:
            sockopts.join(receiver.sock, link.netif.index, address, mapping.source)
        except BaseException:
            if not receiver.members:
                self._close_receiver(receiver)
            raise
        receiver.members.add((iface, group))
        self._names.remember(mapping)
        self._by_address[address] = group
        self._arrivals.clear()

    def leave(self, iface: str, group: URI) -> None:
        link = self._links.get(iface)
        mapping = map_group(group)
        receiver = self._receivers.get((link.family if link else _family_of(iface), mapping.port))
        if receiver is None:
            return
        receiver.members.discard((iface, group))
        self._arrivals.clear()
        if link is not None:
            _, address = self._target(link, group)
            sockopts.leave(receiver.sock, link.netif.index, address, mapping.source)
            if not any(g == group for _, g in receiver.members):
                self._by_address.pop(address, None)
        if not receiver.members:
            self._close_receiver(receiver)

    def src_register(self, iface: str, group: URI) -> None:
        link = self._link(iface)
        mapping, _ = self._target(link, group)
        if mapping.source is not None and mapping.source not in link.netif.addresses(link.family):
            raise UnsupportedGroupError(
                f"{group} is source-specific for {mapping.source}, "
                f"which is not an address of {link.netif.name}"
            )
        self._names.remember(mapping)
        self._by_address[self._target(link, group)[1]] = group
        self._arrivals.clear()

    def send(
        self, iface: str, group: URI, payload: bytes | memoryview, ttl: int, origin: str
    ) -> None:
        route = self._send_routes.get((iface, group))
        if route is None:
            route = self._route(iface, group)
        link, destination, _ = route
        self._send_datagram(link, payload, destination, ttl)

    def _route(self, iface: str, group: URI) -> tuple[_Link, tuple[Any, ...], bytes]:
        link = self._link(iface)
        mapping, address = self._target(link, group)
        if len(self._send_routes) >= 4096:
            self._send_routes.clear()
        route = (
            link,
            _destination(link, address, mapping.port),
            _sockaddr(link, address, mapping.port),
        )
        self._send_routes[(iface, group)] = route
        return route

    def send_many(
        self,
        iface: str,
        group: URI,
        payloads: Sequence[bytes | memoryview],
        ttl: int,
        origin: str,
    ) -> None:
        """Send a run of messages to one group with one ``sendmmsg`` per 64."""
        route = self._send_routes.get((iface, group))
        if route is None:
            route = self._route(iface, group)
        link, _, sockaddr = route
        sender = self._sender(link, ttl)
        batcher = self._batchers.get(sender.fileno())
        if batcher is None:
            batcher = self._batchers[sender.fileno()] = DatagramBatcher(sender.fileno())
        for start in range(0, len(payloads), BATCH):
            chunk = payloads[start : start + BATCH]
            try:
                sent = batcher.send(chunk, sockaddr)
            except OSError as exc:
                raise sockopts.multicast_error("sending", exc, link.netif.name) from None
            # What the kernel had no room for is dropped, as UDP does (send_drops).
            link.send_drops += len(chunk) - sent

    def direct_sender(self, iface: str, ttl: int) -> DirectSender:
        """A send socket of its own for one application socket (the direct data path)."""
        link = self._link(iface)
        sock = sockopts.open_sender(link.family, link.netif.index)
        try:
            sockopts.set_ttl(sock, link.family, ttl)
        except OSError as exc:
            sock.close()
            raise sockopts.multicast_error("setting the TTL", exc, link.netif.name) from None
        return _DirectSender(self, link, sock)

    def direct_receiver(self, iface: str, group: URI) -> DirectReceiver:
        """A socket bound to ``group``'s address and port and joined to it on the link,
        for one application socket (the direct data path)."""
        link = self._link(iface)
        mapping, address = self._target(link, group)
        # Hand what already arrived for the port to the daemon's listeners first: from
        # now on this socket's application is served by its own socket.
        receiver = self._receivers.get((link.family, mapping.port))
        if receiver is not None:
            self._readable(receiver)
        sock = sockopts.open_receiver(link.family, mapping.port, address, link.netif.index)
        membership = (link.netif.index, address, mapping.source)
        try:
            sockopts.join(sock, *membership)
        except BaseException:
            sock.close()
            raise
        return _DirectReceiver(sock, membership)

    def _sender(self, link: _Link, ttl: int) -> socket.socket:
        """The link's send socket (opened on first use), set to ``ttl``."""
        sender = link.sender
        if sender is None:
            sender = link.sender = sockopts.open_sender(link.family, link.netif.index)
        if ttl != link.ttl:
            sockopts.set_ttl(sender, link.family, ttl)
            link.ttl = ttl
        return sender

    def _sendto(
        self, link: _Link, payload: bytes | memoryview, address: IpAddress, port: int, ttl: int
    ) -> None:
        self._send_datagram(link, payload, _destination(link, address, port), ttl)

    def _send_datagram(
        self, link: _Link, payload: bytes | memoryview, destination: tuple[Any, ...], ttl: int
    ) -> None:
        sender = self._sender(link, ttl)
        try:
            sender.sendto(payload, destination)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
                # A momentarily full queue loses the datagram, as UDP does; the
                # application is not interrupted, the count shows in interface_status.
                link.send_drops += 1
                return
            if exc.errno == errno.EMSGSIZE:
                raise UsageError(
                    f"{len(payload)} bytes do not fit a datagram on {link.netif.name}"
                ) from None
            raise sockopts.multicast_error(
                f"sending to {destination[0]}", exc, link.netif.name
            ) from None

    def max_msg_size(self, iface: str) -> int:
        return _MAX_PAYLOAD[_family_of(iface)]

    def interface_status(self, iface: str) -> dict[str, Any]:
        link = self._links.get(iface)
        if link is None:
            return {}
        return {
            "interface": link.netif.name,
            "ifindex": link.netif.index,
            "family": link.family,
            "address": str(link.address),
            "mtu": link.netif.mtu,
            "send_drops": link.send_drops,
            "peers": [
                {
                    "address": str(p.address),
                    "name": p.announcement.name,
                    "monitor": p.announcement.monitor,
                }
                for p in self.peers.peers(iface)
            ],
            "designated": self.peers.designated(iface),
            "discovery": self._discovery_status(iface),
            "domain": self._domain_status(iface),
        }

    def _domain_status(self, iface: str) -> dict[str, Any] | None:
        view = self.domain(iface)
        if view is None:
            return None
        return {
            "daemons": view.daemons,
            "gateway_candidate": self.domain_table.gateway,
            "gateways": [g.hex() for g in view.gateways],
            "me": view.me.hex(),
            "listening": sorted(view.listening),
            "sending": sorted(view.sending),
        }

    def _discovery_status(self, iface: str) -> dict[str, Any]:
        found = self._discovered(iface)
        if found is None:
            return {"verdict": Verdict.UNKNOWN.value, "evidence": None}
        verdict, evidence = found
        return {
            "verdict": verdict.value,
            "evidence": dataclasses.asdict(evidence) if evidence is not None else None,
        }

    def neighbor_set(self, iface: str) -> list[str]:
        """Multicast routers (PIM neighbours, the querier) and hamcast daemons on the link."""
        found: list[str] = []
        discovered = self._discovered(iface)
        if discovered is not None:
            evidence = discovered[1]
            found += [n.address for n in evidence.neighbours]
            if evidence.querier is not None and evidence.querier.address not in found:
                found.append(evidence.querier.address)
        found += [str(p.address) for p in self.peers.peers(iface) if str(p.address) not in found]
        return found

    def group_set(self, iface: str) -> list[GroupSetEntry]:
        """Groups other hosts on the link reported (IGMP/MLD), as listeners."""
        discovered = self._discovered(iface)
        if discovered is None:
            return []
        entries = []
        for info in discovered[1].groups:
            address = ipaddress.ip_address(info.group)
            name = self._by_address.get(address) or URI.for_ip(address, None)
            entries.append(GroupSetEntry(name, GroupRole.LISTENER))
        return entries

    def parent_set(self, iface: str, group: URI) -> list[str]:
        """Upstream of native multicast on this link: its PIM routers."""
        discovered = self._discovered(iface)
        if discovered is None:
            return []
        return [n.address for n in discovered[1].neighbours]

    def children_set(self, iface: str, group: URI) -> list[str]:
        """Other hosts on the link that reported membership of ``group``."""
        link = self._links.get(iface)
        discovered = self._discovered(iface)
        if link is None or discovered is None:
            return []
        _, address = self._target(link, group)
        for info in discovered[1].groups:
            if ipaddress.ip_address(info.group) == address:
                return list(info.reporters)
        return []

    def designated_host(self, iface: str, group: URI) -> bool:
        """The designated gateway of ``group`` in the link's domain, on a gateway candidate;
        else the lowest address among the link's hamcast daemons (peers module)."""
        if iface not in self._links:
            return False
        view = self.domain(iface) if self.domain_table.gateway else None
        if view is not None:
            return view.designated(group.name)
        return self.peers.designated(iface)

    def atomic_msg_size(self, iface: str) -> int:
        link = self._links.get(iface)
        if link is None:
            return 0
        return link.netif.mtu - _HEADERS[link.family]

    # --- receiving -------------------------------------------------------------------

    def _receiver(self, family: int, port: int) -> _Receiver:
        receiver = self._receivers.get((family, port))
        if receiver is None:
            sock = sockopts.open_receiver(family, port)
            receiver = _Receiver(sock, family, port)
            self._receivers[(family, port)] = receiver
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._readable, receiver)
        return receiver

    def _forget_memberships(self, keys: set[str]) -> None:
        """Drop what was joined on vanished links: the kernel dropped it with the interface."""
        for receiver in list(self._receivers.values()):
            receiver.members = {(k, g) for k, g in receiver.members if k not in keys}
            if not receiver.members:
                self._close_receiver(receiver)
        self._announced -= keys

    def _close_receiver(self, receiver: _Receiver) -> None:
        if self._loop is not None:
            self._loop.remove_reader(receiver.sock.fileno())
        receiver.sock.close()
        self._receivers.pop((receiver.family, receiver.port), None)

    def _readable(self, receiver: _Receiver) -> None:
        recvmsg = receiver.sock.recvmsg
        family, port = receiver.family, receiver.port
        cmsg_space = socket.CMSG_SPACE(32)
        arrivals = self._arrivals
        deliver = self.upcalls.deliver
        for _ in range(_READ_BATCH):
            try:
                data, ancdata, _, peer = recvmsg(65536, cmsg_space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("receiving on IPv%d port %d failed: %s", family, port, exc)
                return
            # A stream repeats (destination, interface, sender): decide once per triple.
            key = (ancdata[0][2] if ancdata else b"", peer, port)
            known = arrivals.get(key)
            if known is not None:
                deliver(self, known[0].key, known[1], known[2], data)
                continue
            found = sockopts.destination_from_ancillary(family, ancdata)
            if found is None:
                continue
            destination, ifindex = found
            link = self._by_index.get((ifindex, family))
            if link is None or not destination.is_multicast:
                continue  # unicast to our port, or an interface we do not use
            source = ipaddress.ip_address(peer[0].split("%", 1)[0])
            if port == ANNOUNCE_PORT and destination in _ANNOUNCE_GROUPS:
                self._hear_peer(link, data, source)
                continue
            if port == ANNOUNCE_PORT and destination in _DOMAIN_GROUPS:
                self._hear_domain(link, data)
                continue
            group = self._names.lookup(destination, port, source)
            where = f"{source}:{peer[1]}" if family == 4 else f"[{source}]:{peer[1]}"
            if len(arrivals) >= 1024:
                arrivals.clear()
            arrivals[key] = (link, group, where)
            deliver(self, link.key, group, where, data)


class _DirectSender(DirectSender):
    """A send socket on one link that an application uses itself (docs/performance.md)."""

    def __init__(self, technology: IpTechnology, link: _Link, sock: socket.socket) -> None:
        self._technology = technology
        self._link = link
        self._sock = sock

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def destination(self, group: URI) -> tuple[str, int, int]:
        link = self._link
        mapping, address = self._technology._target(link, group)
        return str(address), mapping.port, link.netif.index if link.family == 6 else 0

    def set_ttl(self, ttl: int) -> None:
        try:
            sockopts.set_ttl(self._sock, self._link.family, ttl)
        except OSError as exc:
            raise sockopts.multicast_error("setting the TTL", exc, self._link.netif.name) from None

    def revoke(self) -> None:
        # On an unconnected UDP socket shutdown() reports ENOTCONN but takes
        # effect: every copy's sends fail with EPIPE from now on.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class _DirectReceiver(DirectReceiver):
    """A group's receive socket that an application reads itself."""

    def __init__(
        self, sock: socket.socket, membership: tuple[int, IpAddress, IpAddress | None]
    ) -> None:
        self._sock = sock
        self._membership = membership

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def revoke(self) -> None:
        # Leave first, so nothing more arrives on any copy; what did arrive stays
        # readable. Shut down both ways: the application's poll() sees POLLHUP.
        with contextlib.suppress(HamcastError):
            sockopts.leave(self._sock, *self._membership)
        with contextlib.suppress(OSError):  # see _DirectSender.revoke
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


_ANNOUNCE_GROUPS = (ANNOUNCE_GROUP_V4, ANNOUNCE_GROUP_V6)
_DOMAIN_GROUPS = (DOMAIN_GROUP_V4, DOMAIN_GROUP_V6)
_DOMAIN_URI = {
    4: URI.for_ip(DOMAIN_GROUP_V4, ANNOUNCE_PORT),
    6: URI.for_ip(DOMAIN_GROUP_V6, ANNOUNCE_PORT),
}
_ANNOUNCE_URI = {
    4: URI.for_ip(ANNOUNCE_GROUP_V4, ANNOUNCE_PORT),
    6: URI.for_ip(ANNOUNCE_GROUP_V6, ANNOUNCE_PORT),
}


def _family_of(iface: str) -> int:
    return int(iface.rsplit("/", 1)[1])


def _destination(link: _Link, address: IpAddress, port: int) -> tuple[Any, ...]:
    """A destination as Python's socket functions take it."""
    if link.family == 4:
        return (str(address), port)
    return (str(address), port, 0, link.netif.index)


def _sockaddr(link: _Link, address: IpAddress, port: int) -> bytes:
    """The C ``sockaddr_in``/``sockaddr_in6`` of a destination."""
    if link.family == 4:
        return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), address.packed)
    return struct.pack(
        "=HHI16sI", socket.AF_INET6, socket.htons(port), 0, address.packed, link.netif.index
    )
