"""A deterministic overlay simulator: the unchanged KBR and Scribe cores on a router topology.

* :mod:`hamcast.sim.topology` — a seeded transit-stub router network with
  link delays and shortest-path delays (the IP baseline);
* :mod:`hamcast.sim.engine` — the discrete-event simulator with a virtual clock;
* :mod:`hamcast.sim.metrics` — delay penalty against IP multicast (RAD/RMD),
  tree shape, KBR hops;
* :func:`run` — one seeded run end to end, as a JSON-ready dict.
"""

from __future__ import annotations

from hamcast.sim.engine import Host, Simulator
from hamcast.sim.metrics import (
    GroupDelivery,
    KbrHops,
    TreeShape,
    kbr_hops,
    measure_delivery,
    tree_shape,
)
from hamcast.sim.run import run
from hamcast.sim.topology import Topology, TopologyConfig, transit_stub

__all__ = [
    "GroupDelivery",
    "Host",
    "KbrHops",
    "Simulator",
    "Topology",
    "TopologyConfig",
    "TreeShape",
    "kbr_hops",
    "measure_delivery",
    "run",
    "transit_stub",
    "tree_shape",
]
