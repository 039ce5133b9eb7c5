"""The test-bed's exceptions, under hamcast's one root and split by whose fault it is.

* :class:`TopologyError` — the topology description is wrong (a bad name, an
  unknown LAN, an address outside the allowed ranges, a malformed TOML file).
  It is a :class:`~hamcast.errors.UsageError`: fix the description.
* :class:`NotRootError`, :class:`MissingToolError` — the machine cannot run a
  test-bed as things are (not root, ``pimd`` not installed); the message says
  what to do. :class:`NoMulticastRoutingError` — the kernel cannot route
  multicast at all (built without ``CONFIG_IP_MROUTE``), so no multicast
  router can run on it.
* :class:`BuildError` — a system command failed while building or tearing down,
  with the command and its output; :class:`RouterError` — a router daemon did
  not start or did not become ready in time, with the tail of its log.

None of these ever crosses the IPC socket, so they reuse their family's code.
"""

from __future__ import annotations

from hamcast.errors import HamcastError, ResourceError, UsageError

__all__ = [
    "BuildError",
    "MissingToolError",
    "NoMulticastRoutingError",
    "NotRootError",
    "RouterError",
    "TestbedError",
    "TopologyError",
]


class TestbedError(HamcastError):
    """Root of every error the test-bed raises on purpose."""

    # Not a test class, whatever its name says: keep pytest from collecting it.
    __test__ = False


class TopologyError(TestbedError, UsageError):
    """The topology (Python calls or TOML file) describes something impossible or unsafe."""


class NotRootError(TestbedError, ResourceError):
    """Creating network namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)."""


class MissingToolError(TestbedError, ResourceError):
    """A program the test-bed runs (ip, bridge, pimd, smcrouted) is not installed."""


class NoMulticastRoutingError(TestbedError, ResourceError):
    """The topology has a multicast router, and this kernel has no multicast routing.

    pimd and smcroute both program the kernel's multicast forwarding
    (``MRT_INIT``); a kernel built without ``CONFIG_IP_MROUTE`` /
    ``CONFIG_IPV6_MROUTE`` refuses them. Nothing can be installed to fix it:
    use routers of ``kind="unicast"`` on such a machine.
    """


class BuildError(TestbedError, ResourceError):
    """A command that builds or tears down the test-bed failed."""


class RouterError(BuildError):
    """A router daemon exited, or did not become ready within its deadline."""
