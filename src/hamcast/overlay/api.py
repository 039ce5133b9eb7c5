"""The contract between key-based routing (KBR) and the layer above it (Scribe).

It follows the common KBR API of Dabek et al. ("Towards a Common API for
Structured Peer-to-Peer Overlays", IPTPS 2003): ``route``, ``forward`` and
``deliver``, plus direct sends to known nodes. Being sans-I/O, the upcalls are
events that the upper layer takes from :meth:`KeyBasedRouting.next_event`.

**Intercepted routes.** A message routed with ``intercept=True`` is not
passed on by the KBR layer by itself: at every node on its path — the first
one included — the KBR emits a :class:`RouteStep` and the upper layer decides
whether to pass it on (:meth:`KeyBasedRouting.forward`, possibly with a new
payload) or to consume it. At the root (the live node numerically closest to
the key) ``next_hop`` is ``None``. This is how a Scribe JOIN builds its tree
by reverse path: each hop adds the previous one as a child and forwards only
if it was not on the tree yet. Plain routes (``intercept=False``) surface only
at the root, as :class:`Delivered`.

All times are seconds on the caller's clock (``now``); cores never read a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hamcast.overlay.ids import NodeHandle

__all__ = [
    "Delivered",
    "DirectReceived",
    "Joined",
    "KbrEvent",
    "KeyBasedRouting",
    "NeighborsChanged",
    "NodeFailed",
    "RouteStep",
]


@dataclass(frozen=True, slots=True)
class Delivered:
    """A plain route for ``key`` ended here: this node is the key's root.

    ``origin`` is the node that called ``route``; ``hops`` the overlay hops taken.
    """

    key: int
    payload: bytes
    origin: NodeHandle
    hops: int


@dataclass(frozen=True, slots=True)
class RouteStep:
    """An intercepted route for ``key`` reached this node.

    ``previous`` is the node it came from (``None`` at the origin), ``next_hop``
    where KBR would send it next (``None``: this node is the root). The upper
    layer calls ``forward`` to pass it on, or consumes it.
    """

    key: int
    payload: bytes
    origin: NodeHandle
    previous: NodeHandle | None
    next_hop: NodeHandle | None
    hops: int


@dataclass(frozen=True, slots=True)
class DirectReceived:
    """``sender`` sent ``payload`` straight to this node (``send_direct``)."""

    payload: bytes
    sender: NodeHandle


@dataclass(frozen=True, slots=True)
class Joined:
    """This node finished joining the overlay (or started it, if it was first)."""

    handle: NodeHandle


@dataclass(frozen=True, slots=True)
class NodeFailed:
    """``node`` stopped answering (or left) and was removed from every table."""

    node: NodeHandle


@dataclass(frozen=True, slots=True)
class NeighborsChanged:
    """The leaf set changed: the set of keys this node is root for may have moved."""

    leaf_set: tuple[NodeHandle, ...]


KbrEvent = Delivered | RouteStep | DirectReceived | Joined | NodeFailed | NeighborsChanged


class KeyBasedRouting(Protocol):
    """What the layer above may call on a KBR node."""

    @property
    def handle(self) -> NodeHandle:
        """This node."""

    def route(self, key: int, payload: bytes, now: float, *, intercept: bool = False) -> None:
        """Send ``payload`` towards the root of ``key``."""

    def forward(
        self,
        key: int,
        payload: bytes,
        next_hop: NodeHandle,
        now: float,
        *,
        step: RouteStep | None = None,
    ) -> None:
        """Pass on an intercepted route (from a :class:`RouteStep`) to ``next_hop``.

        Give the ``step`` being passed on so the route keeps its ``origin``
        and hop count (the hop limit applies to the whole path); without it
        the route starts afresh here (origin this node, hop count 0).
        """

    def send_direct(
        self, node: NodeHandle, payload: bytes, now: float, *, compact: bool = False
    ) -> None:
        """Send ``payload`` to a known node in one hop.

        ``compact``: with the least header (data); the receiver may know the
        sender by its id only and take its handle from its own tables or the
        datagram's source address. Control messages leave it ``False``.
        """

    def is_root(self, key: int) -> bool:
        """Whether this node is, by what it knows, the live node closest to ``key``."""

    def leaf_set(self) -> list[NodeHandle]:
        """The leaf set: the nodes with the numerically closest ids on both sides."""

    def routing_table(self) -> list[NodeHandle]:
        """Every node in the routing table."""

    def next_event(self) -> KbrEvent | None:
        """The next upcall, or ``None``."""
