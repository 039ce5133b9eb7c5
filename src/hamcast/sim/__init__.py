"""A deterministic overlay simulator: the unchanged KBR and Scribe cores on a router topology.

* :mod:`hamcast.sim.topology` — a seeded transit-stub router network with
  link delays and shortest-path delays (the IP baseline);
* :mod:`hamcast.sim.engine` — the discrete-event simulator with a virtual
  clock, crashes included (churn);
* :mod:`hamcast.sim.metrics` — delay penalty against IP multicast (RAD/RMD),
  link and node stress, tree shape, KBR hops, control messages;
* :func:`run` — one seeded run end to end, as a JSON-ready dict
  (:data:`PROFILES` name its timers and pacing).
"""

from __future__ import annotations

from hamcast.sim.engine import Host, Simulator
from hamcast.sim.metrics import (
    GroupDelivery,
    KbrHops,
    NodeStress,
    TreeShape,
    kbr_hops,
    measure_delivery,
    multicast_round,
    node_stress,
    tree_shape,
    tree_shapes,
)
from hamcast.sim.run import PROFILES, Profile, group_sizes, run
from hamcast.sim.topology import Topology, TopologyConfig, transit_stub

__all__ = [
    "PROFILES",
    "GroupDelivery",
    "Host",
    "KbrHops",
    "NodeStress",
    "Profile",
    "Simulator",
    "Topology",
    "TopologyConfig",
    "TreeShape",
    "group_sizes",
    "kbr_hops",
    "measure_delivery",
    "multicast_round",
    "node_stress",
    "run",
    "transit_stub",
    "tree_shape",
    "tree_shapes",
]
