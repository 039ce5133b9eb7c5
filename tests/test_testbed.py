"""Tests of the network test-bed (hamcast.testbed and ``hamcast testbed``).

The first part needs nothing: topology checks, addressing, TOML, generated
router configurations and commands. The rest builds real namespaces as root:
multicast on a LAN, on a no-multicast LAN, routed through pimd (SSM at once,
ASM after its warm-up) and through smcroute (IPv6), and that every way a
test-bed ends — normally, by an exception, a failed build, SIGTERM, a crash
cleaned by ``hamcast testbed down --all`` — leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from hamcast.cli.main import main
from hamcast.testbed import (
    Network,
    NoMulticastRoutingError,
    RouterError,
    Topology,
    TopologyError,
    load_topology,
    multicast_routing_missing,
    route,
    topology_from_dict,
)
from hamcast.testbed import network as network_module
from hamcast.testbed import routers as routers_module
from hamcast.testbed.iproute import Command, Sysctl, build_steps, describe_step
from hamcast.testbed.netns import NETNS_DIR, list_namespaces, process_start_time
from hamcast.testbed.plan import link_local
from hamcast.testbed.routers import SmcRoute, daemons_for
from hamcast.testbed.runs import STATE_DIR, run_base_pattern
from tests.testbed_fixtures import (
    ROUTED,
    multicast_receiver,
    multicast_sender,
    nothing_arrives,
    receive,
    require_multicast_routing,
    require_root,
    send_until_received,
    standard_net,
    standard_topology,
    testbed,
)

__all__ = ["standard_net", "testbed"]  # fixtures: the imports register them with pytest

logger = logging.getLogger(__name__)


# --- topology, plan and configuration: no root needed -------------------------------


def test_standard_plan_numbers_addresses_and_routes() -> None:
    plan = standard_topology(routed=True).plan("abc123")
    assert plan.base == "hct-abc123"
    assert plan.namespaces()[:4] == tuple(
        f"hct-abc123-{lan}" for lan in ("lan1", "lan2", "plain", "dark")
    )
    h2 = plan.node("h2").port()
    assert (str(h2.v4), str(h2.v6), h2.ifname, h2.mac) == (
        "10.1.0.2/24",
        "fd00:1::2/64",
        "eth0",
        "02:48:43:01:00:02",
    )
    r1 = plan.node("r1")
    assert [str(p.v4) for p in r1.ports] == ["10.1.0.254/24", "10.2.0.254/24"]
    assert [str(p.v6) for p in r1.ports] == ["fd00:1::fe/64", "fd00:2::fe/64"]
    assert r1.router is not None and r1.router.rp == IPv4Address("10.1.0.254")
    h3 = plan.node("h3")
    described = {(r.family, str(r.destination), str(r.via), r.device) for r in h3.routes}
    assert described == {
        (4, "None", "10.2.0.254", None),
        (6, "None", "fd00:2::fe", None),
        (4, "224.0.0.0/4", "None", "eth0"),
    }
    # No router on plain: only the multicast route. No multicast on dark: not even that.
    assert [str(r.destination) for r in plan.node("h4").routes] == ["224.0.0.0/4"]
    assert plan.node("d1").routes == ()
    # IPv6 neighbour discovery cannot work without multicast: static entries.
    neighbours = {(n.ifname, str(n.address), n.mac) for n in plan.node("d1").neighbours}
    assert neighbours == {
        ("eth0", "fd00:9::2", "02:48:43:04:00:02"),
        ("eth0", str(link_local("02:48:43:04:00:02")), "02:48:43:04:00:02"),
    }


def test_link_local_is_the_kernels_eui64() -> None:
    assert link_local("02:48:43:01:00:02") == IPv6Address("fe80::48:43ff:fe01:2")


def test_routers_route_unicast_across_several_hops() -> None:
    topo = Topology()
    a = topo.lan("a", v4="10.41.0.0/24", v6="fd00:41::/64")
    b = topo.lan("b", v4="10.42.0.0/24")
    c = topo.lan("c", v4="10.43.0.0/24", v6="fd00:43::/64")
    d = topo.lan("d", v4="10.44.0.0/24")
    topo.router("r1", [a, b])
    topo.router("r2", [b, c])
    topo.router("r3", [c, d], kind="smcroute")
    plan = topo.plan("000001")
    r1 = {(str(r.destination), str(r.via)) for r in plan.node("r1").routes}
    # b has no IPv6, so r1 has no IPv6 path to c.
    assert r1 == {("10.43.0.0/24", "10.42.0.253"), ("10.44.0.0/24", "10.42.0.253")}
    r3 = {(str(r.destination), str(r.via)) for r in plan.node("r3").routes}
    assert r3 == {("10.41.0.0/24", "10.43.0.254"), ("10.42.0.0/24", "10.43.0.254")}
    # Every pimd router agrees on one RP: the first pimd router's first address.
    assert {plan.node(r).router.rp for r in ("r1", "r2")} == {IPv4Address("10.41.0.254")}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda t: t.lan("Lan1", v4="10.1.0.0/24"), "lower-case"),
        (lambda t: t.lan("br0", v4="10.1.0.0/24"), "reserved"),
        (lambda t: t.lan("averyverylongname", v4="10.1.0.0/24"), "1 to 10"),
        (lambda t: t.lan("x", v4="192.168.1.0/24"), "outside the test-bed's address ranges"),
        (lambda t: t.lan("x", v6="2001:db8::/64"), "outside the test-bed's address ranges"),
        (lambda t: t.lan("x", v4="10.1.0.1/24"), "host bits"),
        (lambda t: t.lan("x", v4="10.1.0.0/31"), "too small"),
        (lambda t: t.lan("x"), "needs an IPv4 prefix"),
        (lambda t: t.lan("x", v4="10.0.0.0/16"), "overlaps"),
        (lambda t: t.lan("x", v4="10.5.0.0/24", multicast=False, querier=True), "querier"),
        (lambda t: t.host("h9", "nowhere"), "no LAN named"),
        (lambda t: t.host("lan1", "lan1"), "already taken"),
        (lambda t: t.host("h9", ["lan1", "lan1"]), "same LAN twice"),
        (lambda t: t.router("r9", ["lan1"], kind="mrouted"), "not one of"),
        (lambda t: t.router("r9", ["lan1"], kind="smcroute", rp="10.1.0.9"), "rendezvous"),
        (
            lambda t: t.router("r9", ["lan1"], routes=[route("239.1.1.1", "lan1")]),
            "kind='smcroute'",
        ),
        (lambda t: t.router("r9", ["lan1"], routes=[route("ff0e::1", "lan2")]), "not on"),
        (
            lambda t: t.router("r9", ["lan1"], kind="unicast", routes=[route("ff0e::1", "lan1")]),
            "routes no multicast",
        ),
        (lambda t: route("10.1.1.1", "lan1"), "not a multicast"),
        (lambda t: route("ff0e::1", "lan1", source="10.1.0.1"), "differ in family"),
    ],
)
def test_topology_mistakes_are_reported_where_made(build: Any, message: str) -> None:
    topo = Topology()
    topo.lan("lan1", v4="10.0.1.0/24", v6="fd00:1::/64")
    with pytest.raises(TopologyError, match=message):
        build(topo)


def test_whole_topology_checks_happen_at_plan_time() -> None:
    topo = Topology()
    lan = topo.lan("lan1", v4="10.1.0.0/24")
    topo.router("r1", [lan], rp="10.1.0.1")
    with pytest.raises(TopologyError, match=r"rendezvous point 10\.1\.0\.1 is not an address"):
        topo.plan("000001")
    small = Topology()
    tiny = small.lan("tiny", v4="10.1.0.0/30")
    for name in ("a", "b", "c"):
        small.host(name, tiny)
    with pytest.raises(TopologyError, match="too small for its 3 hosts"):
        small.plan("000001")
    with pytest.raises(TopologyError, match="prefix"):
        Topology(prefix="hct-")


def test_unicast_routers_run_no_daemon_and_need_no_multicast_routing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    topo = Topology()
    a = topo.lan("a", v4="10.31.0.0/24")
    b = topo.lan("b", v4="10.32.0.0/24")
    topo.router("u", [a, b], kind="unicast")
    topo.router("p", [a, b], kind="pimd")
    plan = topo.plan("000002")
    assert daemons_for(plan.node("u"), tmp_path) == []
    assert {(r.family, str(r.destination)) for r in plan.node("u").routes} == set()
    # A kernel without multicast routing, as /proc tells it (no ip_mr_vif).
    absent = tmp_path / "absent"
    monkeypatch.setitem(routers_module._MROUTE_PROC, 4, (absent, "CONFIG_IP_MROUTE"))
    assert multicast_routing_missing((6,)) == routers_module.multicast_routing_missing((6,))
    missing = multicast_routing_missing((4,))
    assert missing is not None and "CONFIG_IP_MROUTE is not set" in missing
    routers_module.check_kernel([plan.node("u")])  # nothing to route: fine
    with pytest.raises(NoMulticastRoutingError, match=r"router p runs pimd.*kind='unicast'"):
        routers_module.check_kernel([plan.node("p")])


def test_toml_file_gives_the_same_plan_as_python(tmp_path: Path) -> None:
    path = tmp_path / "standard.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [lans.lan1]
            v4 = "10.1.0.0/24"
            v6 = "fd00:1::/64"
            [lans.lan2]
            v4 = "10.2.0.0/24"
            v6 = "fd00:2::/64"
            [lans.plain]
            v4 = "10.3.0.0/24"
            v6 = "fd00:3::/64"
            [lans.dark]
            v4 = "10.9.0.0/24"
            v6 = "fd00:9::/64"
            multicast = false
            [hosts.h1]
            lans = "lan1"
            [hosts.h2]
            lans = ["lan1"]
            [hosts.h3]
            lans = ["lan2"]
            [hosts.h4]
            lans = ["plain"]
            [hosts.h5]
            lans = ["plain"]
            [hosts.d1]
            lans = ["dark"]
            [hosts.d2]
            lans = ["dark"]
            [routers.r1]
            kind = "pimd"
            lans = ["lan1", "lan2"]
            [[routers.r1.routes]]
            group = "ff0e::/16"
            from = "lan1"
            to = ["lan2"]
            [[routers.r1.routes]]
            group = "ff0e::/16"
            from = "lan2"
            to = ["lan1"]
            [[routers.r1.routes]]
            group = "ff3e::/16"
            from = "lan1"
            to = ["lan2"]
            [[routers.r1.routes]]
            group = "ff3e::/16"
            from = "lan2"
            to = ["lan1"]
            """
        )
    )
    assert load_topology(path).plan("abcdef") == standard_topology(routed=True).plan("abcdef")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "at least one"),
        ({"lans": {"a": {"v4": "10.1.0.0/24", "speed": 10}}}, "lans.a: unknown key 'speed'"),
        ({"lans": {"a": {"v4": 10}}}, "lans.a.v4 must be a string"),
        ({"lans": {"a": {"v4": "10.1.0.0/24", "multicast": 1}}}, "true or false"),
        ({"lans": {"a": {"v4": "10.1.0.0/24"}}, "hosts": {"h": {}}}, "needs lans"),
        (
            {"lans": {"a": {"v4": "10.1.0.0/24"}}, "hosts": {"h": {"lans": "b"}}},
            "hosts.h: h: no LAN",
        ),
        ({"prefix": "x", "lans": {}}, "prefix"),
        (
            {"lans": {"a": {"v4": "10.1.0.0/24"}}, "routers": {"r": {"lans": "a", "routes": [{}]}}},
            r"routers.r.routes\[0\] needs group",
        ),
    ],
)
def test_toml_mistakes_name_the_file_and_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message) as caught:
        topology_from_dict(data, "net.toml")
    assert str(caught.value).startswith("net.toml: ")


def test_unreadable_toml_is_a_topology_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="no such file"):
        load_topology(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[lans\n")
    with pytest.raises(TopologyError, match="not valid TOML"):
        load_topology(bad)


def test_router_configurations(tmp_path: Path) -> None:
    plan = standard_topology(routed=True).plan("abc123")
    pimd, smcroute = daemons_for(plan.node("r1"), tmp_path)
    assert pimd.config().splitlines()[1:] == [
        "phyint 10.1.0.254 enable",
        "phyint 10.2.0.254 enable",
        "rp-address 10.1.0.254 224.0.0.0/4",
        "spt-threshold infinity",
    ]
    assert smcroute.config().splitlines()[1:] == [
        "phyint eth0 enable",
        "phyint eth1 enable",
        "mroute from eth0 group ff0e::/16 to eth1",
        "mroute from eth1 group ff0e::/16 to eth0",
        "mroute from eth0 group ff3e::/16 to eth1",
        "mroute from eth1 group ff3e::/16 to eth0",
    ]
    assert smcroute.setup_commands() == [["-6", "mrule", "add", "pref", "100", "lookup", "100"]]
    assert "-t" in smcroute.argv()
    # An (S,G) route to every other LAN, on an smcroute-only router.
    topo = Topology()
    a = topo.lan("a", v4="10.1.0.0/24")
    b = topo.lan("b", v4="10.2.0.0/24")
    c = topo.lan("c", v4="10.3.0.0/24")
    topo.router("s", [a, b, c], kind="smcroute", routes=[route("232.1.1.1", a, source="10.1.0.1")])
    (only,) = daemons_for(topo.plan("000001").node("s"), tmp_path)
    assert isinstance(only, SmcRoute)
    assert (
        only.config().splitlines()[-1]
        == "mroute from eth0 source 10.1.0.1 group 232.1.1.1 to eth1 eth2"
    )
    assert only.setup_commands() == [] and "-t" not in only.argv()


def test_every_step_stays_inside_the_runs_namespaces() -> None:
    """The safety rule as code: no command touches the namespace the program runs in."""
    plan = standard_topology(routed=True).plan("abc123")
    ours = set(plan.namespaces())
    steps = build_steps(plan)
    for step in steps:
        if isinstance(step, Sysctl):
            assert step.namespace in ours
        else:
            assert isinstance(step, Command)
            assert step.argv[0] in ("ip", "bridge") and step.argv[1] == "-n", describe_step(step)
            assert step.argv[2] in ours, describe_step(step)
    dark_ports = [s.argv for s in steps if isinstance(s, Command) and "mcast_flood" in s.argv]
    assert len(dark_ports) == 2
    assert any("mcast_igmp_version" in s.argv for s in steps if isinstance(s, Command))


def test_run_names_match_only_our_pattern() -> None:
    pattern = run_base_pattern("hct")
    assert pattern.match("hct-abc123-h1") is not None
    assert pattern.match("hct-abc123") is not None
    for other in (
        "hcd-h",
        "hci-sw",
        "hct-xyz123-h1",
        "hctx-abc123-h1",
        "hct-abc1234-h1",
        "xhct-abc123",
    ):
        assert pattern.match(other) is None, other


def test_down_needs_runs_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testbed", "down"]) == 2
    assert "--all" in capsys.readouterr().err
    assert main(["testbed", "down", "--all", "hct-abc123"]) == 2


# --- a real test-bed: the standard topology (root) ----------------------------------

RECEIVER = """
import socket, struct, sys
group, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in group else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.bind(("", port))
index = socket.if_nametoindex("eth0")
if family == socket.AF_INET:
    mreqn = socket.inet_aton(group) + struct.pack("=4si", bytes(4), index)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
else:
    mreq = socket.inet_pton(family, group) + struct.pack("@I", index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
print("joined", flush=True)
sock.settimeout(20)
data, address = sock.recvfrom(100)
print(data.decode(), address[0], flush=True)
"""


@pytest.mark.parametrize(("family", "group"), [(4, "239.7.7.1"), (6, "ff05::7:1")])
def test_two_hosts_on_a_lan_exchange_multicast(
    standard_net: Network, family: int, group: str
) -> None:
    net = standard_net
    port = 7001 + family
    receiver = net.popen("h2", [sys.executable, "-c", RECEIVER, group, str(port)],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert receiver.stdout is not None
    assert receiver.stdout.readline().strip() == "joined"
    with multicast_sender(net, "h1", family, ttl=1) as sender:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            sender.sendto(b"hello", (group, port))
            if select.select([receiver.stdout], [], [], 0.05)[0]:
                break
    out, _ = receiver.communicate(timeout=5)
    assert out.split() == ["hello", net.address("h1", family)]
    assert receiver.returncode == 0


@pytest.mark.parametrize(("family", "group"), [(4, "239.7.7.2"), (6, "ff05::7:2")])
def test_plain_lan_without_router_delivers_multicast(
    standard_net: Network, family: int, group: str
) -> None:
    with (
        multicast_receiver(standard_net, "h5", group, 7010) as receiver,
        multicast_sender(standard_net, "h4", family, ttl=1) as sender,
    ):
        sender.sendto(b"plain", (group, 7010))
        assert receive(receiver, 2.0) == (b"plain", standard_net.address("h4", family))


@pytest.mark.parametrize(("family", "group"), [(4, "239.7.7.3"), (6, "ff05::7:3")])
def test_no_multicast_lan_carries_unicast_only(
    standard_net: Network, family: int, group: str
) -> None:
    net = standard_net
    kind = socket.AF_INET if family == 4 else socket.AF_INET6
    with net.socket("d2", kind) as unicast_in, net.socket("d1", kind) as unicast_out:
        unicast_in.bind((net.address("d2", family), 7020))
        unicast_out.sendto(b"unicast", (net.address("d2", family), 7020))
        assert receive(unicast_in, 2.0) == (b"unicast", net.address("d1", family))
    with (
        multicast_receiver(net, "d2", group, 7021) as receiver,
        multicast_sender(net, "d1", family, ttl=1) as sender,
    ):
        assert nothing_arrives(sender, receiver, (group, 7021))
    # Half of the recipe (TESTBED-FACTS): the host's interface has multicast off.
    assert "MULTICAST" not in net.run("d1", ["ip", "-o", "link", "show", "eth0"]).stdout


def test_run_executes_in_the_hosts_namespace(standard_net: Network) -> None:
    net = standard_net
    done = net.run("h3", ["ip", "-j", "addr", "show", "eth0"], check=True)
    addresses = {a["local"] for a in json.loads(done.stdout)[0]["addr_info"]}
    assert {net.address("h3", 4), net.address("h3", 6)} <= addresses
    assert net.run("h3", ["sh", "-c", "exit 3"]).returncode == 3
    assert net.interface("r1", "lan2") == "eth1"
    assert net.address("r1", 6, lan="lan2") == "fd00:2::fe"
    with pytest.raises(TopologyError, match="no host or router named 'h9'"):
        net.address("h9")


def test_routed_ssm_crosses_pimd_at_once(standard_net: Network) -> None:
    require_multicast_routing()
    net = standard_net
    source = net.address("h1", 4)
    with (
        multicast_receiver(net, "h3", "232.7.7.4", 7030, source=source) as receiver,
        multicast_sender(net, "h1", 4) as sender,
    ):
        waited = send_until_received(sender, receiver, ("232.7.7.4", 7030), timeout=10.0)
        logger.info("routed SSM through pimd: first datagram after %.2f s", waited)
        sender.sendto(b"routed", ("232.7.7.4", 7030))
        while (got := receive(receiver, 2.0)) is not None and got[0] != b"routed":
            pass
        assert got == (b"routed", source)
    with (
        multicast_receiver(net, "h3", "232.7.7.5", 7031, source=source) as receiver,
        multicast_sender(net, "h1", 4, ttl=1) as sender,
    ):
        # TTL 1 is link-local: the router must not forward it.
        assert nothing_arrives(sender, receiver, ("232.7.7.5", 7031))


@pytest.mark.parametrize(("group", "ssm"), [("ff0e::7:5", False), ("ff3e::7:6", True)])
def test_routed_ipv6_crosses_smcroute(standard_net: Network, group: str, ssm: bool) -> None:
    require_multicast_routing()
    net = standard_net
    source = net.address("h3", 6)
    with (
        multicast_receiver(net, "h1", group, 7040, source=source if ssm else None) as receiver,
        multicast_sender(net, "h3", 6) as sender,
    ):
        send_until_received(sender, receiver, (group, 7040), timeout=5.0)
        sender.sendto(b"routed6", (group, 7040))
        while (got := receive(receiver, 2.0)) is not None and got[0] != b"routed6":
            pass
        assert got == (b"routed6", source)


def test_status_shows_the_live_run(
    standard_net: Network, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["testbed", "status", "--json"]) == 0
    runs = {run["base"]: run for run in json.loads(capsys.readouterr().out)}
    mine = runs[standard_net.base]
    assert mine["live"] is True and mine["owner_pid"] == os.getpid()
    assert set(mine["namespaces"]) == set(standard_net.namespaces())
    assert {p["role"] for p in mine["processes"]} >= ({"pimd", "smcroute"} if ROUTED else set())


def test_a_querier_bridge_sends_igmpv3_and_mldv2_queries(testbed: Any) -> None:
    topo = Topology()
    topo.host("a", topo.lan("q", v4="10.61.0.0/24", v6="fd00:61::/64", querier=True))
    net: Network = testbed(topo)
    bridge = net.plan.lans["q"]
    assert bridge.querier_v4 is not None
    seen: dict[int, tuple[str, int]] = {}
    with (
        net.socket("a", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IGMP) as igmp,
        net.socket("a", socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as icmp6,
    ):
        # The bridge queries as it comes up, then 3 s later, then every 12 s.
        deadline = time.monotonic() + 8.0
        while len(seen) < 2 and time.monotonic() < deadline:
            for sock in select.select([igmp, icmp6], [], [], 0.2)[0]:
                data, address = sock.recvfrom(2048)
                if sock is igmp:
                    body = data[(data[0] & 0x0F) * 4 :]
                    if body[0] == 0x11:  # membership query
                        seen[4] = (address[0], len(body))
                elif data[0] == 130:  # multicast listener query
                    seen[6] = (address[0], len(data))
    # Sizes tell the versions: an IGMPv3 query has 12 bytes or more, MLDv2 28.
    assert seen[4][0] == str(bridge.querier_v4.ip) and seen[4][1] >= 12
    assert seen[6][0] == str(link_local(bridge.bridge_mac)) and seen[6][1] >= 28


# --- every way a test-bed ends leaves nothing behind (root) --------------------------


def _two_routers(prefix: str = "hct") -> Topology:
    """Two routers in a row; with multicast routing, pimd and smcroute (else unicast only)."""
    topo = Topology(prefix=prefix)
    a = topo.lan("a", v4="10.21.0.0/24", v6="fd00:21::/64")
    b = topo.lan("b", v4="10.22.0.0/24", v6="fd00:22::/64", querier=True)
    c = topo.lan("c", v6="fd00:23::/64")
    topo.host("x", a)
    topo.host("y", c)
    if ROUTED:
        topo.router("p", [a, b], kind="pimd")
        topo.router("s", [b, c], kind="smcroute", routes=[route("ff0e::/16", b, [c])])
    else:
        topo.router("p", [a, b], kind="unicast")
        topo.router("s", [b, c], kind="unicast")
    return topo


def _links_here() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (router configs carry the run's name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return [pid for pid in found if process_start_time(pid) is not None]


def _assert_gone(base: str, pids: list[int], starts: list[int | None]) -> None:
    assert [n for n in list_namespaces() if n.startswith(f"{base}-")] == []
    assert _processes_mentioning(f"{base}-") == []
    for pid, start in zip(pids, starts, strict=True):
        assert start is not None and process_start_time(pid) != start, f"pid {pid} still runs"
    assert not (STATE_DIR / f"{base}.json").exists()


@pytest.fixture
def root() -> None:
    require_root()


@pytest.mark.usefixtures("root")
def test_teardown_leaves_no_namespace_link_process_or_file() -> None:
    links_before = _links_here()
    with _two_routers().up() as net:
        sleeper = net.popen("x", ["sleep", "600"])
        pids = [sleeper.pid] + [pid for pids in net.daemon_pids().values() for pid in pids]
        starts = [process_start_time(pid) for pid in pids]
        assert len(pids) == (3 if ROUTED else 1) and None not in starts
        assert all((NETNS_DIR / n).exists() for n in net.namespaces())
        assert (STATE_DIR / f"{net.base}.json").exists() and net.workdir.is_dir()
        # Unicast across both routers (x -> p -> s -> y): the computed routes work.
        with net.socket("y", socket.AF_INET6) as inbox, net.socket("x", socket.AF_INET6) as out:
            inbox.bind((net.address("y", 6), 7060))
            out.sendto(b"two hops", (net.address("y", 6), 7060))
            assert receive(inbox, 2.0) == (b"two hops", net.address("x", 6))
        base, workdir = net.base, net.workdir
    assert net.closed
    _assert_gone(base, pids, starts)
    assert sleeper.returncode is not None
    assert not workdir.exists()
    assert _links_here() == links_before


@pytest.mark.usefixtures("root")
def test_an_exception_tears_down_and_keeps_the_logs() -> None:
    require_multicast_routing()  # the logs kept are the router daemons'
    with pytest.raises(RuntimeError, match="boom"), _two_routers().up() as net:
        pids = [pid for pids in net.daemon_pids().values() for pid in pids]
        starts = [process_start_time(pid) for pid in pids]
        raise RuntimeError("boom")
    try:
        _assert_gone(net.base, pids, starts)
        assert (net.workdir / "p-pimd.log").exists()  # kept for the post-mortem
    finally:
        shutil.rmtree(net.workdir, ignore_errors=True)


@pytest.mark.usefixtures("root")
def test_a_failed_build_removes_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    require_multicast_routing()  # the failure is a router daemon's
    chosen: list[str] = []
    choose = network_module._new_run_id

    def remember(prefix: str) -> str:
        chosen.append(f"{prefix}-{choose(prefix)}")
        return chosen[-1].split("-")[1]

    monkeypatch.setattr(network_module, "_new_run_id", remember)
    monkeypatch.setattr(
        SmcRoute, "check_argv", lambda self: ["sh", "-c", "echo bad route; exit 78"]
    )
    with pytest.raises(RouterError, match="rejects its configuration") as caught:
        _two_routers().start()
    assert "bad route" in str(caught.value)
    (base,) = chosen
    # pimd had started before smcroute failed: it must be gone too.
    _assert_gone(base, [], [])
    assert not any(Path(tempfile.gettempdir()).glob(f"{base}-*"))


def _read_json_document(fd: int, timeout: float) -> dict[str, Any]:
    """The first JSON document a process prints on ``fd``, read as it arrives."""
    text = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk
            try:
                document: dict[str, Any] = json.loads(text)
            except ValueError:
                continue
            return document
    raise AssertionError(f"no JSON document within {timeout} s: {text!r}")


TOPOLOGY_TOML = """\
[lans.a]
v4 = "10.51.0.0/24"
[lans.b]
v4 = "10.52.0.0/24"
v6 = "fd00:52::/64"
[hosts.x]
lans = "a"
[routers.p]
lans = ["a", "b"]
""" + ("" if ROUTED else 'kind = "unicast"\n')


@pytest.fixture
def topology_file(tmp_path: Path) -> Iterator[Path]:
    require_root()
    path = tmp_path / "net.toml"
    path.write_text(TOPOLOGY_TOML)
    yield path


def test_cli_up_prints_the_testbed_and_sigterm_tears_it_down(topology_file: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "hamcast.cli", "testbed", "up", str(topology_file), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    try:
        assert process.stdout is not None
        description = _read_json_document(process.stdout.fileno(), 30.0)
        base = description["run"]
        assert description["nodes"]["x"]["interfaces"][0]["v4"] == "10.51.0.1/24"
        daemons = description["nodes"]["p"]["daemons"]
        assert len(daemons) == (1 if ROUTED else 0)
        starts = [process_start_time(d["pid"]) for d in daemons]
        assert all((NETNS_DIR / f"{base}-{n}").exists() for n in ("a", "b", "x", "p"))
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert b"torn down" in err
    _assert_gone(base, [d["pid"] for d in daemons], starts)


LEAKER = """
import json, os, signal
from hamcast.testbed import load_topology
net = load_topology(os.environ["TOPOLOGY"]).start()
print(json.dumps({"base": net.base, "pids": net.daemon_pids().get("p", [])}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # a crash: no teardown at all
"""


def test_down_all_removes_a_crashed_run_and_spares_live_ones(
    topology_file: Path, standard_net: Network, capsys: pytest.CaptureFixture[str]
) -> None:
    leaker = subprocess.run(
        [sys.executable, "-c", LEAKER],
        env={**os.environ, "TOPOLOGY": str(topology_file)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert leaker.returncode == -signal.SIGKILL, leaker.stderr
    leaked = json.loads(leaker.stdout)
    base, pids = leaked["base"], leaked["pids"]
    starts = [process_start_time(pid) for pid in pids]
    assert None not in starts, "the leaked run's pimd should still run"
    assert any(n.startswith(f"{base}-") for n in list_namespaces())
    # Leftovers without any record (as if /run had been cleaned by hand).
    unrecorded = f"hct-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", f"{unrecorded}-gone"], check=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{unrecorded}-"))

    assert main(["testbed", "down", "--all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert base in report["runs"] and unrecorded in report["runs"]
    assert set(pids) <= set(report["processes"])
    assert f"{unrecorded}-gone" in report["namespaces"] and str(folder) in report["folders"]
    _assert_gone(base, pids, starts)
    assert not (NETNS_DIR / f"{unrecorded}-gone").exists() and not folder.exists()
    # The session's own test-bed is live (its owner is this process): untouched.
    assert any(entry.startswith(standard_net.base) for entry in report["live"])
    assert all((NETNS_DIR / n).exists() for n in standard_net.namespaces())


# --- last, so that the tests above run during pimd's warm-up -------------------------


def test_routed_asm_crosses_pimd_after_warm_up(standard_net: Network) -> None:
    require_multicast_routing()
    net = standard_net
    waited = net.wait_ready(timeout=60.0)
    logger.info("pimd ready for ASM after waiting %.1f s more", waited)
    with (
        multicast_receiver(net, "h3", "239.7.7.7", 7050) as receiver,
        multicast_sender(net, "h1", 4) as sender,
    ):
        first = send_until_received(sender, receiver, ("239.7.7.7", 7050), timeout=15.0)
        logger.info("routed ASM: first datagram %.2f s after joining", first)
    # Both directions: the RP (on lan1) forwards down to lan1 too.
    with (
        multicast_receiver(net, "h2", "239.7.7.8", 7051) as receiver,
        multicast_sender(net, "h3", 4) as sender,
    ):
        send_until_received(sender, receiver, ("239.7.7.8", 7051), timeout=15.0)
