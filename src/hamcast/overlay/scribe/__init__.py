"""Scribe: group multicast trees on the key-based routing overlay (DESIGN.md §9).

:class:`ScribeNode` is a sans-I/O core stacked on a
:class:`~hamcast.overlay.api.KeyBasedRouting` node: it consumes the KBR layer's
events and produces its own (:mod:`hamcast.overlay.scribe.events`).
docs/technologies/overlay-scribe.md specifies the protocol and its wire format.
"""

from __future__ import annotations

from hamcast.overlay.scribe.config import ScribeConfig
from hamcast.overlay.scribe.events import (
    BecameRoot,
    ChildAdded,
    ChildRemoved,
    MessageReceived,
    ParentChanged,
    RootLost,
    ScribeEvent,
    SourceSeen,
)
from hamcast.overlay.scribe.names import canonical_group, group_key
from hamcast.overlay.scribe.node import GroupInfo, Role, ScribeNode, ScribeStats, TreeState

__all__ = [
    "BecameRoot",
    "ChildAdded",
    "ChildRemoved",
    "GroupInfo",
    "MessageReceived",
    "ParentChanged",
    "Role",
    "RootLost",
    "ScribeConfig",
    "ScribeEvent",
    "ScribeNode",
    "ScribeStats",
    "SourceSeen",
    "TreeState",
    "canonical_group",
    "group_key",
]
