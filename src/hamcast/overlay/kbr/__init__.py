"""Pastry-style key-based routing, sans-I/O (DESIGN.md §9, docs/technologies/overlay-kbr.md).

:class:`KbrNode` is the protocol core: it implements
:class:`hamcast.overlay.api.KeyBasedRouting` and is driven with datagrams,
timer expiries and the caller's ``now``. :class:`KbrConfig` configures it;
:mod:`hamcast.overlay.kbr.messages` is the wire format.
"""

from __future__ import annotations

from hamcast.overlay.kbr.config import KbrConfig
from hamcast.overlay.kbr.node import KbrNode, NodeState
from hamcast.overlay.kbr.stats import KbrStats

__all__ = ["KbrConfig", "KbrNode", "KbrStats", "NodeState"]
