"""Events of the Scribe layer: small frozen records of past facts (STYLE.md 4).

A :class:`~hamcast.overlay.scribe.ScribeNode` queues them; the driver takes them
with :meth:`~hamcast.overlay.scribe.ScribeNode.next_event`. ``group`` is always
the canonical ``ham:`` name (:attr:`hamcast.uri.URI.name`) as it travelled in
the message or was given to ``join``; nodes are :class:`NodeHandle` s.
"""

from __future__ import annotations

from dataclasses import dataclass

from hamcast.overlay.ids import NodeHandle

__all__ = [
    "BecameRoot",
    "ChildAdded",
    "ChildRemoved",
    "MessageReceived",
    "ParentChanged",
    "RootLost",
    "ScribeEvent",
    "SourceSeen",
]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A multicast for a group this node is a member of arrived (once per message).

    Attributes:
        group: The group name the sender used.
        payload: The application's bytes, unchanged.
        source: The node that called ``multicast``.
        sequence: The source's sequence number for this group (with ``source``
            and ``group`` it names the message; the first is 1).
        hops: Overlay hops the message took: KBR hops to the root (if it was
            routed there) plus tree edges; 0 for a member's own message.
    """

    group: str
    payload: bytes
    source: NodeHandle
    sequence: int
    hops: int


@dataclass(frozen=True, slots=True)
class SourceSeen:
    """The first message from ``source`` for member group ``group`` arrived.

    Comes right before that message's :class:`MessageReceived`. A node
    remembers a bounded number of sources per group
    (:attr:`~hamcast.overlay.scribe.ScribeConfig.max_sources`), so a source
    forgotten since may be reported again.
    """

    group: str
    source: NodeHandle


@dataclass(frozen=True, slots=True)
class ChildAdded:
    """``child`` joined this node's part of ``group``'s tree (data now goes to it)."""

    group: str
    child: NodeHandle


@dataclass(frozen=True, slots=True)
class ChildRemoved:
    """``child`` left ``group``'s tree below this node: it left, failed or timed out."""

    group: str
    child: NodeHandle


@dataclass(frozen=True, slots=True)
class ParentChanged:
    """This node's parent in ``group``'s tree is now ``parent``.

    ``None`` means it has none: the parent failed, dropped it or was left, or
    this node became the root or left the tree. A non-root node with tree
    state and no parent is joining again.
    """

    group: str
    parent: NodeHandle | None


@dataclass(frozen=True, slots=True)
class BecameRoot:
    """This node became the root (rendezvous point) of ``group``'s tree.

    It is, by what KBR knows, the live node closest to the group's key.
    """

    group: str


@dataclass(frozen=True, slots=True)
class RootLost:
    """This node stopped being the root of ``group``'s tree.

    Another node is closer to the key now (this node joins it, keeping its
    children) or nobody is left in the tree here.
    """

    group: str


ScribeEvent = (
    MessageReceived | SourceSeen | ChildAdded | ChildRemoved | ParentChanged | BecameRoot | RootLost
)
