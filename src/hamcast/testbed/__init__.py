"""The network test-bed: hosts, LANs and multicast routers in Linux network namespaces.

Declare a :class:`Topology` (in Python or a TOML file), build it with
:meth:`Topology.up`, use it through the :class:`Network` it yields, and
everything is removed when the ``with`` block ends — also on errors, Ctrl-C and
SIGTERM; ``hamcast testbed down --all`` removes what crashed runs left.
docs/testbed.md describes it all; the short version::

    from hamcast.testbed import Topology

    topo = Topology()
    lan1 = topo.lan("lan1", v4="10.1.0.0/24", v6="fd00:1::/64")
    lan2 = topo.lan("lan2", v4="10.2.0.0/24", v6="fd00:2::/64")
    topo.host("h1", lan1)
    topo.host("h2", lan2)
    topo.router("r1", [lan1, lan2], kind="pimd")
    with topo.up() as net:
        print(net.run("h2", ["ip", "-br", "addr"]).stdout)

Needs root, iproute2, and for routers pimd and/or smcroute
(``scripts/install-system-packages``) and a kernel with multicast routing
(:func:`multicast_routing_missing` says what it lacks; ``kind="unicast"``
routers need none). Nothing is created outside the
namespaces it makes, and only the address ranges in :data:`ALLOWED_V4` and
:data:`ALLOWED_V6` may be used.
"""

from __future__ import annotations

from hamcast.testbed.errors import (
    BuildError,
    MissingToolError,
    NoMulticastRoutingError,
    NotRootError,
    RouterError,
    TestbedError,
    TopologyError,
)
from hamcast.testbed.network import Network, Terminated
from hamcast.testbed.routers import multicast_routing_missing
from hamcast.testbed.runs import DownReport, RunStatus, down, down_all, status
from hamcast.testbed.tomlfile import load_topology, topology_from_dict
from hamcast.testbed.topology import (
    ALLOWED_V4,
    ALLOWED_V6,
    DEFAULT_PREFIX,
    Host,
    Lan,
    Router,
    StaticRoute,
    Topology,
    route,
)

__all__ = [
    "ALLOWED_V4",
    "ALLOWED_V6",
    "DEFAULT_PREFIX",
    "BuildError",
    "DownReport",
    "Host",
    "Lan",
    "MissingToolError",
    "Network",
    "NoMulticastRoutingError",
    "NotRootError",
    "Router",
    "RouterError",
    "RunStatus",
    "StaticRoute",
    "Terminated",
    "TestbedError",
    "Topology",
    "TopologyError",
    "down",
    "down_all",
    "load_topology",
    "multicast_routing_missing",
    "route",
    "status",
    "topology_from_dict",
]
