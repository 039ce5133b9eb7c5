"""The contract every technology module implements (DESIGN.md §5), and its registry.

A technology module distributes groups over one kind of network (host-local
delivery, native IP multicast, an overlay). The middleware core owns all
per-socket and per-group state and calls a module only for what the network
needs:

* :meth:`Technology.join` / :meth:`Technology.leave` when the first / last
  listener of a group on one of the module's interfaces comes / goes;
* :meth:`Technology.src_register` / :meth:`Technology.src_deregister` likewise
  for senders;
* :meth:`Technology.send` for every message.

Modules report upward only through the :class:`Upcalls` they are started with:
received messages, membership they observe from *other* hosts, and changes of
their interface list. Modules know nothing of each other.

Modules are found by entry point (group ``hamcast.technologies``), so a new
technology needs no change to the core or to applications. Service calls have
harmless defaults: a module overrides those it can answer from real state.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.metadata
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from hamcast.errors import UsageError
from hamcast.events import Event
from hamcast.model import GroupSetEntry
from hamcast.uri import URI

__all__ = [
    "ENTRY_POINT_GROUP",
    "Assessment",
    "DirectReceiver",
    "DirectSender",
    "DomainView",
    "Technology",
    "TechnologyInterface",
    "Upcalls",
    "available_technologies",
    "load_technology",
]

ENTRY_POINT_GROUP = "hamcast.technologies"


@dataclass(frozen=True, slots=True)
class TechnologyInterface:
    """One interface a module offers; ``key`` is unique and stable within the module."""

    key: str
    name: str
    address: str


@dataclass(frozen=True, slots=True)
class Assessment:
    """Whether an interface can carry a group to other hosts now, and why (selection input).

    ``reason`` is one line for people (``hamcast groups``), starting with what
    was observed: ``"PIM router 10.0.1.1 on the link"``, ``"no multicast seen
    on the link"``.
    """

    usable: bool
    reason: str


@dataclass(frozen=True, slots=True)
class DomainView:
    """What a native technology knows of the multicast domain behind one interface.

    The domain is as far as native multicast reaches from the interface's
    link; gateways bridge it to the overlay (docs/hybrid.md). Names are
    canonical ``ham:`` URIs.
    """

    #: This daemon's id (16 bytes).
    me: bytes
    #: Ids of the live gateway candidates heard in the domain, this daemon's
    #: included when it is one; sorted.
    gateways: tuple[bytes, ...]
    #: Groups applications in the domain (this host's included) listen to natively.
    listening: frozenset[str]
    #: Groups applications in the domain (this host's included) send to natively.
    sending: frozenset[str]
    #: Daemons heard in the domain, this one included.
    daemons: int = 1

    def winner(self, name: str) -> bytes | None:
        """The designated gateway of group ``name``: highest random weight, or None."""
        encoded = name.encode()
        best: tuple[bytes, bytes] | None = None
        for candidate in self.gateways:
            weight = hashlib.sha256(candidate + encoded).digest()
            if best is None or weight > best[0]:
                best = weight, candidate
        return None if best is None else best[1]

    def designated(self, name: str) -> bool:
        """Whether this daemon is the designated gateway of group ``name``."""
        return self.winner(name) == self.me


class DirectSender(abc.ABC):
    """A datagram socket an application may send a group's messages on itself.

    The direct data path (docs/performance.md): the daemon configures the
    socket (interface, TTL, loopback), passes the application a duplicate of
    it, and keeps its own copy to change the TTL and to revoke it. What the
    application sends on it is on the wire exactly what the technology sends.
    """

    @property
    @abc.abstractmethod
    def socket(self) -> socket.socket:
        """The daemon's copy of the socket (the application gets a duplicate)."""

    @abc.abstractmethod
    def destination(self, group: URI) -> tuple[str, int, int]:
        """Where ``group``'s datagrams go: (address, port, IPv6 scope or 0)."""

    @abc.abstractmethod
    def set_ttl(self, ttl: int) -> None:
        """Set the TTL / hop limit, for every copy of the socket."""

    @abc.abstractmethod
    def revoke(self) -> None:
        """Shut the socket down for every copy (their sends fail with EPIPE) and close it."""


class DirectReceiver(abc.ABC):
    """A datagram socket that receives one group for one application socket.

    The receiving half of the direct data path: the daemon opens and joins it,
    passes the application a duplicate, and keeps its copy to revoke it. Each
    datagram's payload is a message; its sender's address is the source.
    """

    @property
    @abc.abstractmethod
    def socket(self) -> socket.socket:
        """The daemon's copy of the socket (the application gets a duplicate)."""

    @abc.abstractmethod
    def revoke(self) -> None:
        """Shut the socket down for every copy (reads see end-of-file) and close it."""


class Upcalls(Protocol):
    """What a module may tell the core. Call these from the event-loop thread only."""

    def deliver(
        self,
        technology: Technology,
        iface: str,
        group: URI,
        source: str,
        payload: bytes | memoryview,
    ) -> None:
        """A message for ``group`` arrived on interface ``iface`` from ``source``."""

    def notify(self, technology: Technology, iface: str, event: Event) -> None:
        """The module observed another host's join/leave, or its network changed.

        The event's ``interface`` field is set by the core; pass any value.
        """

    def interfaces_changed(self, technology: Technology) -> None:
        """The module's interface list changed; the core will call interfaces() again."""

    def interest(self, technology: Technology, iface: str) -> tuple[frozenset[str], frozenset[str]]:
        """The groups this host's applications listen to and send to on ``iface`` (names).

        A technology that announces them (``ip``'s domain announcements) asks
        when it announces; gateways' own memberships are not included.
        """
        ...

    def conditions_changed(self, technology: Technology) -> None:
        """What :meth:`Technology.assess` answers may have changed (e.g. a router
        appeared): the core re-runs technology selection for every group."""

    def peer_heard(self, technology: Technology, kind: str, endpoint: str) -> None:
        """Another host's daemon offers ``endpoint`` for technology ``kind``.

        E.g. the ``ip`` module hears a peer on a link announce its overlay
        endpoint; the core passes it to the other modules (``peer_learned``).
        """


class Technology(abc.ABC):
    """One distribution technology. Subclasses set :attr:`name`.

    Methods other than :meth:`start` and :meth:`stop` are synchronous and must
    not block: they run on the daemon's event loop. A method that cannot do
    its job raises a :class:`hamcast.errors.HamcastError` subclass.
    """

    #: The name users select the module by (``--technologies NAME``).
    name: ClassVar[str]

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        """``options`` is the module's table from the daemon's TOML config."""
        self.options = dict(options or {})
        self._upcalls: Upcalls | None = None

    @property
    def upcalls(self) -> Upcalls:
        if self._upcalls is None:
            raise RuntimeError(f"technology {self.name} used before start()")
        return self._upcalls

    async def start(self, upcalls: Upcalls) -> None:
        """Acquire resources (sockets, timers). The default only remembers ``upcalls``."""
        self._upcalls = upcalls

    async def stop(self) -> None:  # noqa: B027 - a harmless default hook
        """Release everything. Groups were already left by the core."""

    # --- what the network needs ---------------------------------------------

    @abc.abstractmethod
    def interfaces(self) -> list[TechnologyInterface]:
        """The interfaces this module offers now."""

    @abc.abstractmethod
    def can_serve(self, iface: str, group: URI) -> bool:
        """Whether ``group`` can be distributed on ``iface`` at all."""

    def assess(self, iface: str, group: URI) -> Assessment:
        """Whether ``iface`` should carry ``group`` now (late binding, DESIGN.md §6).

        Only asked for groups :meth:`can_serve` accepts. The core walks the
        configured technology preference and binds a group to the first
        interface that is usable; a module whose usefulness changes calls
        :meth:`Upcalls.conditions_changed`. The default: always usable.
        """
        return Assessment(True, f"{self.name} is available")

    @abc.abstractmethod
    def join(self, iface: str, group: URI) -> None:
        """Start receiving ``group`` on ``iface``."""

    @abc.abstractmethod
    def leave(self, iface: str, group: URI) -> None:
        """Stop receiving ``group`` on ``iface``."""

    def src_register(self, iface: str, group: URI) -> None:  # noqa: B027
        """Announce this host as a sender of ``group`` (raise if that fails)."""

    def src_deregister(self, iface: str, group: URI) -> None:  # noqa: B027
        """Withdraw the sender announcement."""

    @abc.abstractmethod
    def send(
        self, iface: str, group: URI, payload: bytes | memoryview, ttl: int, origin: str
    ) -> None:
        """Send one message. ``origin`` names the local sending socket (``local:PID/SOCK``)."""

    def send_many(
        self,
        iface: str,
        group: URI,
        payloads: Sequence[bytes | memoryview],
        ttl: int,
        origin: str,
    ) -> None:
        """Send a run of messages to one group, in order; the default calls :meth:`send`.

        A module that can batch system calls overrides it (``ip``: ``sendmmsg``).
        """
        for payload in payloads:
            self.send(iface, group, payload, ttl, origin)

    def direct_sender(self, iface: str, ttl: int) -> DirectSender | None:
        """A socket applications may send on themselves, or None (the default: all
        messages pass through the daemon). Each call opens a new one."""
        return None

    def direct_receiver(self, iface: str, group: URI) -> DirectReceiver | None:
        """A socket joined to ``group`` that an application may receive on itself, or
        None (the default: the daemon delivers every message). Each call opens one."""
        return None

    @abc.abstractmethod
    def max_msg_size(self, iface: str) -> int:
        """The largest message this module carries on ``iface`` (bytes)."""

    def atomic_msg_size(self, iface: str) -> int:
        """The largest message sent without fragmentation; default: the maximum."""
        return self.max_msg_size(iface)

    # --- service calls (RFC 7046 §5.4); defaults answer "nothing known" --------

    def group_set(self, iface: str) -> list[GroupSetEntry]:
        """Groups on ``iface`` the module knows of beyond this host's own."""
        return []

    def neighbor_set(self, iface: str) -> list[str]:
        """Multicast-routing neighbours on ``iface`` (routers, overlay peers)."""
        return []

    def children_set(self, iface: str, group: URI) -> list[str]:
        """Downstream nodes of ``group``'s distribution tree at this host."""
        return []

    def parent_set(self, iface: str, group: URI) -> list[str]:
        """Upstream nodes of ``group``'s distribution tree at this host."""
        return []

    def designated_host(self, iface: str, group: URI) -> bool:
        """Whether this host is the designated forwarder for ``group`` on ``iface``."""
        return True

    def interface_status(self, iface: str) -> dict[str, Any]:
        """Diagnostics of ``iface`` as JSON-ready values (e.g. discovery's verdict)."""
        return {}

    # --- gateways (docs/hybrid.md) ------------------------------------------------

    def domain(self, iface: str) -> DomainView | None:
        """The native multicast domain behind ``iface``; None for a non-native technology."""
        return None

    def interest_changed(self, iface: str) -> None:  # noqa: B027
        """The answer of :meth:`Upcalls.interest` for ``iface`` changed (announce soon)."""

    # --- cooperation through the core (modules know nothing of each other) ----------

    def advertisement(self) -> dict[str, str]:
        """Endpoints this module offers other hosts' daemons, by kind (after start)."""
        return {}

    def advertise(self, endpoints: dict[str, str]) -> None:  # noqa: B027
        """What all modules of this daemon offer; a module that announces passes it on."""

    def peer_learned(self, kind: str, endpoint: str) -> None:  # noqa: B027
        """Another host's daemon offers ``endpoint`` for ``kind`` (see Upcalls.peer_heard)."""


def available_technologies() -> dict[str, importlib.metadata.EntryPoint]:
    """The technology modules installed, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_technology(name: str, options: dict[str, Any] | None = None) -> Technology:
    """Instantiate the module registered as ``name``; unknown names list the known ones."""
    found = available_technologies()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise UsageError(f"unknown technology {name!r}; installed: {known}")
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Technology)):
        raise UsageError(f"entry point {name!r} does not name a Technology subclass")
    return cls(options)
