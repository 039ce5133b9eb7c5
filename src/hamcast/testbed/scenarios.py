"""Named test-bed scenarios shared by the demo and the tests.

The hybrid scenario (docs/hybrid.md)::

    lan1 10.61.0.0/24: h1, h2                 lan2 10.62.0.0/24: h3
         └──────────── r1 (pimd) ────────────────┘          one multicast domain
    lan3 10.63.0.0/24, a querier but no router: h4, h5       an island of its own
    dark 10.69.0.0/24, no multicast at all: d1, d2
    r2 routes unicast between lan1, lan3 and dark, and no multicast.

On a kernel without multicast routing (``routed=False``) r1 forwards unicast
only and lan1 and lan2 have queriers: three islands, each its own domain
(:data:`HYBRID_DOMAINS_UNROUTED`), all joined through the overlay.

Every host runs a daemon with ``ip`` and ``overlay`` (:data:`HYBRID_CONFIG`),
bootstrapped through h1's overlay node, so every island host is a gateway
candidate; timers are short so that the scenario settles in seconds.
"""

from __future__ import annotations

from hamcast.testbed.routers import multicast_routing_missing
from hamcast.testbed.topology import Topology

__all__ = [
    "HYBRID_CONFIG",
    "HYBRID_DARK",
    "HYBRID_DOMAINS",
    "HYBRID_DOMAINS_UNROUTED",
    "HYBRID_HOSTS",
    "OVERLAY_PORT",
    "hybrid_domains",
    "hybrid_topology",
]

#: The hosts of each native multicast domain, and the hosts without multicast.
HYBRID_DOMAINS: dict[str, tuple[str, ...]] = {
    "lan1+lan2 (PIM router r1)": ("h1", "h2", "h3"),
    "lan3 (querier, no router)": ("h4", "h5"),
}
#: The same without multicast routing: lan1 and lan2 are islands of their own.
HYBRID_DOMAINS_UNROUTED: dict[str, tuple[str, ...]] = {
    "lan1 (querier)": ("h1", "h2"),
    "lan2 (querier)": ("h3",),
    "lan3 (querier, no router)": ("h4", "h5"),
}
HYBRID_DARK = ("d1", "d2")
HYBRID_HOSTS = ("h1", "h2", "h3", "h4", "h5", "d1", "d2")
OVERLAY_PORT = 7047

HYBRID_CONFIG = """
technologies = ["ip", "overlay"]

[technology.ip]
announce_interval = 1
domain_interval = 1

[technology.ip.discovery]
settle_time = 2.0

[technology.overlay.kbr]
keepalive_interval = 1.0
probe_timeout = 0.5
probe_count = 2

[technology.overlay.scribe]
heartbeat_interval = 0.5
parent_timeout = 1.6
child_timeout = 1.6
"""


def hybrid_domains(routed: bool) -> dict[str, tuple[str, ...]]:
    """The multicast domains of the scenario, with or without multicast routing."""
    return HYBRID_DOMAINS if routed else HYBRID_DOMAINS_UNROUTED


def hybrid_topology(prefix: str = "hcd", *, routed: bool | None = None) -> Topology:
    """The hybrid scenario drawn in the module docstring.

    ``routed`` (default: whether this kernel routes multicast) puts pimd on r1.
    """
    if routed is None:
        routed = multicast_routing_missing((4,)) is None
    topo = Topology(prefix=prefix)
    lan1 = topo.lan("lan1", v4="10.61.0.0/24", querier=not routed)
    lan2 = topo.lan("lan2", v4="10.62.0.0/24", querier=not routed)
    lan3 = topo.lan("lan3", v4="10.63.0.0/24", querier=True)
    dark = topo.lan("dark", v4="10.69.0.0/24", multicast=False)
    for host, lan in (("h1", lan1), ("h2", lan1), ("h3", lan2), ("h4", lan3), ("h5", lan3)):
        topo.host(host, lan)
    topo.host("d1", dark)
    topo.host("d2", dark)
    topo.router("r1", [lan1, lan2], kind="pimd" if routed else "unicast")
    topo.router("r2", [lan1, lan3, dark], kind="unicast")
    return topo
