"""The collector's merge on recorded answers (tests/test_monitor_netns.py's hybrid net).

``RECORDED`` is what five real daemons' monitoring endpoints answered, trimmed
to the fields the merge reads: h1-h3 on the multicast "island" 10.71.0.0/24
with a PIM router (10.71.0.254), d1 and d2 on the "dark" LAN, reachable by
the overlay only; h3 is the overlay root of both groups, h2 and h3 have the
groups on ``ip`` and ``overlay`` at once (they bridge).
"""

from __future__ import annotations

import copy
from typing import Any

from hamcast.monitor.graph import Source, daemon_summaries, group_names, merge

NATIVE = "ham:ip:239.71.0.1:5000"
HYBRID = "ham:opaque:monitor-hybrid"

RECORDED: dict[str, dict[str, Any]] = {
    "h1": {
        "schema": "hamcast.monitor.snapshot/1",
        "time": 1795575017.256857,
        "host": {
            "instance": "1c9217594bda5f7e",
            "name": "h1",
            "technologies": ["ip", "overlay", "local"],
        },
        "interfaces": [
            {
                "index": 1,
                "name": "eth0",
                "address": "10.71.0.1",
                "technology": "ip",
                "status": {
                    "address": "10.71.0.1",
                    "family": 4,
                    "peers": [
                        {"address": "10.71.0.2", "name": "vm"},
                        {"address": "10.71.0.3", "name": "vm"},
                    ],
                    "designated": True,
                    "discovery": {
                        "verdict": "routed",
                        "evidence": {
                            "querier": {"address": "10.71.0.254"},
                            "neighbours": [{"address": "10.71.0.254"}],
                        },
                    },
                },
                "neighbors": ["10.71.0.254", "10.71.0.2", "10.71.0.3"],
                "group_set": [
                    {"group": "ham:ip:239.255.70.46", "role": "listener"},
                    {"group": "ham:ip:239.71.0.1:5000", "role": "listener"},
                    {"group": "ham:opaque:monitor-hybrid", "role": "listener"},
                ],
            },
            {
                "index": 2,
                "name": "eth0",
                "address": "fe80::48:43ff:fe01:1",
                "technology": "ip",
                "status": {
                    "address": "fe80::48:43ff:fe01:1",
                    "family": 6,
                    "peers": [
                        {"address": "fe80::48:43ff:fe01:2", "name": "vm"},
                        {"address": "fe80::48:43ff:fe01:3", "name": "vm"},
                    ],
                    "designated": True,
                    "discovery": {
                        "verdict": "none",
                        "evidence": {"querier": None, "neighbours": []},
                    },
                },
                "neighbors": ["fe80::48:43ff:fe01:2", "fe80::48:43ff:fe01:3"],
                "group_set": [
                    {"group": "ham:ip:[ff05::114]", "role": "listener"},
                    {"group": "ham:ip:[ff05::2]", "role": "listener"},
                ],
            },
            {
                "index": 3,
                "name": "overlay",
                "address": "72f5950a@10.71.0.1:7047",
                "technology": "overlay",
                "status": {
                    "running": True,
                    "node": "72f5950a@10.71.0.1:7047",
                    "state": "joined",
                    "leaf_set": [
                        "92be31d3@10.71.0.2:7047",
                        "c7b219cf@10.72.0.2:7047",
                        "d06c1f83@10.72.0.1:7047",
                        "0358ac23@10.71.0.3:7047",
                    ],
                    "groups": {},
                },
                "neighbors": [
                    "92be31d3@10.71.0.2:7047",
                    "0358ac23@10.71.0.3:7047",
                    "d06c1f83@10.72.0.1:7047",
                    "c7b219cf@10.72.0.2:7047",
                ],
                "group_set": [],
            },
            {
                "index": 4,
                "name": "local",
                "address": "localhost",
                "technology": "local",
                "status": {},
                "neighbors": [],
                "group_set": [],
            },
        ],
        "groups": [
            {
                "group": "ham:ip:239.71.0.1:5000",
                "interface": 1,
                "technology": "ip",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["10.71.0.254"],
                "children": ["10.71.0.2", "10.71.0.3"],
                "designated": False,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
            {
                "group": "ham:opaque:monitor-hybrid",
                "interface": 1,
                "technology": "ip",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["10.71.0.254"],
                "children": ["10.71.0.2", "10.71.0.3"],
                "designated": False,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
        ],
        "counters": {
            "sockets": 2,
            "messages_in": 0,
            "messages_out": 0,
            "drops": 0,
            "send_failures": 0,
            "bytes_in": None,
            "bytes_out": None,
        },
        "missing": ["groups.counters", "groups.gateway", "counters.bytes"],
    },
    "h2": {
        "schema": "hamcast.monitor.snapshot/1",
        "time": 1795575017.2602232,
        "host": {
            "instance": "1b217bd2fa84ceb1",
            "name": "h2",
            "technologies": ["ip", "overlay", "local"],
        },
        "interfaces": [
            {
                "index": 1,
                "name": "eth0",
                "address": "10.71.0.2",
                "technology": "ip",
                "status": {
                    "address": "10.71.0.2",
                    "family": 4,
                    "peers": [
                        {"address": "10.71.0.1", "name": "vm"},
                        {"address": "10.71.0.3", "name": "vm"},
                    ],
                    "designated": False,
                    "discovery": {
                        "verdict": "routed",
                        "evidence": {
                            "querier": {"address": "10.71.0.254"},
                            "neighbours": [{"address": "10.71.0.254"}],
                        },
                    },
                },
                "neighbors": ["10.71.0.254", "10.71.0.1", "10.71.0.3"],
                "group_set": [
                    {"group": "ham:ip:239.255.70.46", "role": "listener"},
                    {"group": "ham:ip:239.71.0.1:5000", "role": "listener"},
                    {"group": "ham:opaque:monitor-hybrid", "role": "listener"},
                ],
            },
            {
                "index": 2,
                "name": "eth0",
                "address": "fe80::48:43ff:fe01:2",
                "technology": "ip",
                "status": {
                    "address": "fe80::48:43ff:fe01:2",
                    "family": 6,
                    "peers": [
                        {"address": "fe80::48:43ff:fe01:1", "name": "vm"},
                        {"address": "fe80::48:43ff:fe01:3", "name": "vm"},
                    ],
                    "designated": False,
                    "discovery": {
                        "verdict": "none",
                        "evidence": {"querier": None, "neighbours": []},
                    },
                },
                "neighbors": ["fe80::48:43ff:fe01:1", "fe80::48:43ff:fe01:3"],
                "group_set": [{"group": "ham:ip:[ff05::114]", "role": "listener"}],
            },
            {
                "index": 3,
                "name": "overlay",
                "address": "92be31d3@10.71.0.2:7047",
                "technology": "overlay",
                "status": {
                    "running": True,
                    "node": "92be31d3@10.71.0.2:7047",
                    "state": "joined",
                    "leaf_set": [
                        "c7b219cf@10.72.0.2:7047",
                        "d06c1f83@10.72.0.1:7047",
                        "0358ac23@10.71.0.3:7047",
                        "72f5950a@10.71.0.1:7047",
                    ],
                    "groups": {
                        "ham:ip:239.71.0.1:5000": {
                            "member": True,
                            "root": False,
                            "parent": "0358ac23@10.71.0.3:7047",
                            "children": [],
                        },
                        "ham:opaque:monitor-hybrid": {
                            "member": True,
                            "root": False,
                            "parent": "0358ac23@10.71.0.3:7047",
                            "children": [],
                        },
                    },
                },
                "neighbors": [
                    "72f5950a@10.71.0.1:7047",
                    "0358ac23@10.71.0.3:7047",
                    "d06c1f83@10.72.0.1:7047",
                    "c7b219cf@10.72.0.2:7047",
                ],
                "group_set": [
                    {"group": "ham:ip:239.71.0.1:5000", "role": "listener"},
                    {"group": "ham:opaque:monitor-hybrid", "role": "listener"},
                ],
            },
            {
                "index": 4,
                "name": "local",
                "address": "localhost",
                "technology": "local",
                "status": {},
                "neighbors": [],
                "group_set": [],
            },
        ],
        "groups": [
            {
                "group": "ham:ip:239.71.0.1:5000",
                "interface": 1,
                "technology": "ip",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["10.71.0.254"],
                "children": ["10.71.0.1", "10.71.0.3"],
                "designated": True,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
            {
                "group": "ham:ip:239.71.0.1:5000",
                "interface": 3,
                "technology": "overlay",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["0358ac23@10.71.0.3:7047"],
                "children": [],
                "designated": False,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
            {
                "group": "ham:opaque:monitor-hybrid",
                "interface": 1,
                "technology": "ip",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["10.71.0.254"],
                "children": ["10.71.0.1", "10.71.0.3"],
                "designated": True,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
            {
                "group": "ham:opaque:monitor-hybrid",
                "interface": 3,
                "technology": "overlay",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["0358ac23@10.71.0.3:7047"],
                "children": [],
                "designated": False,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
        ],
        "counters": {
            "sockets": 4,
            "messages_in": 0,
            "messages_out": 0,
            "drops": 0,
            "send_failures": 0,
            "bytes_in": None,
            "bytes_out": None,
        },
        "missing": ["groups.counters", "groups.gateway", "counters.bytes"],
    },
    "h3": {
        "schema": "hamcast.monitor.snapshot/1",
        "time": 1795575017.2646644,
        "host": {
            "instance": "94a55f2eae05844b",
            "name": "h3",
            "technologies": ["ip", "overlay", "local"],
        },
        "interfaces": [
            {
                "index": 1,
                "name": "eth0",
                "address": "10.71.0.3",
                "technology": "ip",
                "status": {
                    "address": "10.71.0.3",
                    "family": 4,
                    "peers": [
                        {"address": "10.71.0.1", "name": "vm"},
                        {"address": "10.71.0.2", "name": "vm"},
                    ],
                    "designated": False,
                    "discovery": {
                        "verdict": "routed",
                        "evidence": {
                            "querier": {"address": "10.71.0.254"},
                            "neighbours": [{"address": "10.71.0.254"}],
                        },
                    },
                },
                "neighbors": ["10.71.0.254", "10.71.0.1", "10.71.0.2"],
                "group_set": [
                    {"group": "ham:ip:239.255.70.46", "role": "listener"},
                    {"group": "ham:ip:239.71.0.1:5000", "role": "listener"},
                    {"group": "ham:opaque:monitor-hybrid", "role": "listener"},
                ],
            },
            {
                "index": 2,
                "name": "eth0",
                "address": "fe80::48:43ff:fe01:3",
                "technology": "ip",
                "status": {
                    "address": "fe80::48:43ff:fe01:3",
                    "family": 6,
                    "peers": [
                        {"address": "fe80::48:43ff:fe01:1", "name": "vm"},
                        {"address": "fe80::48:43ff:fe01:2", "name": "vm"},
                    ],
                    "designated": False,
                    "discovery": {
                        "verdict": "none",
                        "evidence": {"querier": None, "neighbours": []},
                    },
                },
                "neighbors": ["fe80::48:43ff:fe01:1", "fe80::48:43ff:fe01:2"],
                "group_set": [],
            },
            {
                "index": 3,
                "name": "overlay",
                "address": "0358ac23@10.71.0.3:7047",
                "technology": "overlay",
                "status": {
                    "running": True,
                    "node": "0358ac23@10.71.0.3:7047",
                    "state": "joined",
                    "leaf_set": [
                        "72f5950a@10.71.0.1:7047",
                        "92be31d3@10.71.0.2:7047",
                        "c7b219cf@10.72.0.2:7047",
                        "d06c1f83@10.72.0.1:7047",
                    ],
                    "groups": {
                        "ham:ip:239.71.0.1:5000": {
                            "member": False,
                            "root": True,
                            "parent": None,
                            "children": ["92be31d3@10.71.0.2:7047"],
                        },
                        "ham:opaque:monitor-hybrid": {
                            "member": False,
                            "root": True,
                            "parent": None,
                            "children": [
                                "d06c1f83@10.72.0.1:7047",
                                "c7b219cf@10.72.0.2:7047",
                                "92be31d3@10.71.0.2:7047",
                            ],
                        },
                    },
                },
                "neighbors": [
                    "72f5950a@10.71.0.1:7047",
                    "92be31d3@10.71.0.2:7047",
                    "d06c1f83@10.72.0.1:7047",
                    "c7b219cf@10.72.0.2:7047",
                ],
                "group_set": [
                    {"group": "ham:ip:239.71.0.1:5000", "role": "listener"},
                    {"group": "ham:opaque:monitor-hybrid", "role": "listener"},
                ],
            },
            {
                "index": 4,
                "name": "local",
                "address": "localhost",
                "technology": "local",
                "status": {},
                "neighbors": [],
                "group_set": [],
            },
        ],
        "groups": [
            {
                "group": "ham:ip:239.71.0.1:5000",
                "interface": 1,
                "technology": "ip",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["10.71.0.254"],
                "children": ["10.71.0.1", "10.71.0.2"],
                "designated": False,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
            {
                "group": "ham:ip:239.71.0.1:5000",
                "interface": 3,
                "technology": "overlay",
                "listeners": 0,
                "senders": 0,
                "role": "forwarder",
                "selected": False,
                "parents": [],
                "children": ["92be31d3@10.71.0.2:7047"],
                "designated": True,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
            {
                "group": "ham:opaque:monitor-hybrid",
                "interface": 1,
                "technology": "ip",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["10.71.0.254"],
                "children": ["10.71.0.1", "10.71.0.2"],
                "designated": False,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
            {
                "group": "ham:opaque:monitor-hybrid",
                "interface": 3,
                "technology": "overlay",
                "listeners": 0,
                "senders": 0,
                "role": "forwarder",
                "selected": False,
                "parents": [],
                "children": [
                    "d06c1f83@10.72.0.1:7047",
                    "c7b219cf@10.72.0.2:7047",
                    "92be31d3@10.71.0.2:7047",
                ],
                "designated": True,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            },
        ],
        "counters": {
            "sockets": 2,
            "messages_in": 0,
            "messages_out": 0,
            "drops": 0,
            "send_failures": 0,
            "bytes_in": None,
            "bytes_out": None,
        },
        "missing": ["groups.counters", "groups.gateway", "counters.bytes"],
    },
    "d1": {
        "schema": "hamcast.monitor.snapshot/1",
        "time": 1795575017.2690084,
        "host": {
            "instance": "330324953ea716da",
            "name": "d1",
            "technologies": ["overlay", "local"],
        },
        "interfaces": [
            {
                "index": 1,
                "name": "overlay",
                "address": "d06c1f83@10.72.0.1:7047",
                "technology": "overlay",
                "status": {
                    "running": True,
                    "node": "d06c1f83@10.72.0.1:7047",
                    "state": "joined",
                    "leaf_set": [
                        "0358ac23@10.71.0.3:7047",
                        "72f5950a@10.71.0.1:7047",
                        "92be31d3@10.71.0.2:7047",
                        "c7b219cf@10.72.0.2:7047",
                    ],
                    "groups": {
                        "ham:opaque:monitor-hybrid": {
                            "member": True,
                            "root": False,
                            "parent": "0358ac23@10.71.0.3:7047",
                            "children": [],
                        }
                    },
                },
                "neighbors": [
                    "72f5950a@10.71.0.1:7047",
                    "0358ac23@10.71.0.3:7047",
                    "92be31d3@10.71.0.2:7047",
                    "c7b219cf@10.72.0.2:7047",
                ],
                "group_set": [{"group": "ham:opaque:monitor-hybrid", "role": "listener"}],
            },
            {
                "index": 2,
                "name": "local",
                "address": "localhost",
                "technology": "local",
                "status": {},
                "neighbors": [],
                "group_set": [],
            },
        ],
        "groups": [
            {
                "group": "ham:opaque:monitor-hybrid",
                "interface": 1,
                "technology": "overlay",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["0358ac23@10.71.0.3:7047"],
                "children": [],
                "designated": False,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            }
        ],
        "counters": {
            "sockets": 1,
            "messages_in": 0,
            "messages_out": 0,
            "drops": 0,
            "send_failures": 0,
            "bytes_in": None,
            "bytes_out": None,
        },
        "missing": ["groups.counters", "groups.gateway", "counters.bytes"],
    },
    "d2": {
        "schema": "hamcast.monitor.snapshot/1",
        "time": 1795575017.270998,
        "host": {
            "instance": "94040cf8878a3845",
            "name": "d2",
            "technologies": ["overlay", "local"],
        },
        "interfaces": [
            {
                "index": 1,
                "name": "overlay",
                "address": "c7b219cf@10.72.0.2:7047",
                "technology": "overlay",
                "status": {
                    "running": True,
                    "node": "c7b219cf@10.72.0.2:7047",
                    "state": "joined",
                    "leaf_set": [
                        "d06c1f83@10.72.0.1:7047",
                        "0358ac23@10.71.0.3:7047",
                        "72f5950a@10.71.0.1:7047",
                        "92be31d3@10.71.0.2:7047",
                    ],
                    "groups": {
                        "ham:opaque:monitor-hybrid": {
                            "member": True,
                            "root": False,
                            "parent": "0358ac23@10.71.0.3:7047",
                            "children": [],
                        }
                    },
                },
                "neighbors": [
                    "72f5950a@10.71.0.1:7047",
                    "d06c1f83@10.72.0.1:7047",
                    "0358ac23@10.71.0.3:7047",
                    "92be31d3@10.71.0.2:7047",
                ],
                "group_set": [{"group": "ham:opaque:monitor-hybrid", "role": "listener"}],
            },
            {
                "index": 2,
                "name": "local",
                "address": "localhost",
                "technology": "local",
                "status": {},
                "neighbors": [],
                "group_set": [],
            },
        ],
        "groups": [
            {
                "group": "ham:opaque:monitor-hybrid",
                "interface": 1,
                "technology": "overlay",
                "listeners": 1,
                "senders": 0,
                "role": "listener",
                "selected": True,
                "parents": ["0358ac23@10.71.0.3:7047"],
                "children": [],
                "designated": False,
                "gateway": None,
                "counters": {
                    "messages_in": None,
                    "messages_out": None,
                    "bytes_in": None,
                    "bytes_out": None,
                    "drops": None,
                },
            }
        ],
        "counters": {
            "sockets": 1,
            "messages_in": 0,
            "messages_out": 0,
            "drops": 0,
            "send_failures": 0,
            "bytes_in": None,
            "bytes_out": None,
        },
        "missing": ["groups.counters", "groups.gateway", "counters.bytes"],
    },
}


def sources(*names: str, recorded: dict[str, dict[str, Any]] | None = None) -> list[Source]:
    answers = recorded or RECORDED
    return [
        Source(f"http://{name}:7048", copy.deepcopy(answers[name]), None, True)
        for name in names or answers
    ]


def by_label(graph: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str, str]]]:
    nodes = {n["data"]["id"]: n["data"] for n in graph["nodes"]}
    edges = {
        (
            nodes[e["data"]["source"]]["label"],
            nodes[e["data"]["target"]]["label"],
            e["data"]["kind"],
        )
        for e in graph["edges"]
    }
    return {d["label"]: d for d in nodes.values()}, edges


LINK = "link 10.71.0.1"
ROUTER = "router 10.71.0.254"


def test_every_group_any_daemon_reports_gets_a_graph() -> None:
    graphs = merge(sources())
    assert sorted(graphs) == [NATIVE, HYBRID] == group_names(sources())


def test_the_hybrid_group_joins_the_island_link_and_the_overlay_tree() -> None:
    nodes, edges = by_label(merge(sources())[HYBRID])
    hosts = {label for label, d in nodes.items() if d["kind"] == "host"}
    assert hosts == {"h1", "h2", "h3", "d1", "d2"}
    assert edges == {
        # The overlay tree, rooted at h3, as the daemons' parent/children sets say.
        ("h3", "d1", "overlay"),
        ("h3", "d2", "overlay"),
        ("h3", "h2", "overlay"),
        # The island's link: h1 listens natively; h2 and h3 also bridge to the overlay.
        (LINK, "h1", "native"),
        (LINK, "h2", "gateway"),
        (LINK, "h3", "gateway"),
        (ROUTER, LINK, "native"),
    }
    assert nodes["h3"]["root"] and not nodes["h2"]["root"]
    assert nodes["h2"]["gateway"] and nodes["h3"]["gateway"] and not nodes["h1"]["gateway"]
    assert nodes["h2"]["gateway_inferred"]  # the core does not report the role yet
    assert nodes["h2"]["designated"]  # the designated host on the island for this group
    assert nodes["d1"]["technologies"] == ["overlay"]
    assert nodes["h3"]["technologies"] == ["ip", "overlay"]
    assert nodes["h3"]["role"] == "listener"  # listener on ip, forwarder in the tree
    assert nodes[LINK]["verdict"] == "routed"
    assert nodes[LINK]["addresses"] == ["10.71.0.1", "10.71.0.2", "10.71.0.3"]


def test_every_edge_and_node_is_ready_for_cytoscape() -> None:
    graph = merge(sources())[NATIVE]
    ids = {n["data"]["id"] for n in graph["nodes"]}
    for edge in graph["edges"]:
        assert edge["data"]["source"] in ids and edge["data"]["target"] in ids
        assert edge["data"]["technology"] in {"ip", "overlay"}
    assert len({e["data"]["id"] for e in graph["edges"]}) == len(graph["edges"])


def test_members_nobody_monitors_show_as_peers() -> None:
    # Without h2's answer, h2 is still in h3's children and in the IGMP reports on the link.
    nodes, edges = by_label(merge(sources("h1", "h3", "d1", "d2"))[HYBRID])
    assert nodes["92be31d3@10.71.0.2:7047"]["kind"] == "peer"
    assert ("h3", "92be31d3@10.71.0.2:7047", "overlay") in edges
    assert nodes["10.71.0.2"]["kind"] == "peer"
    assert (LINK, "10.71.0.2", "native") in edges


def test_a_daemon_found_under_two_urls_is_one_node() -> None:
    twice = [*sources(), Source("http://127.0.0.1:7048", copy.deepcopy(RECORDED["d1"]), None, True)]
    graph = merge(twice)[HYBRID]
    assert [n["data"]["label"] for n in graph["nodes"]].count("d1") == 1


def test_a_daemon_that_stopped_answering_stays_but_stale() -> None:
    answers = sources()
    d2 = next(s for s in answers if s.url == "http://d2:7048")
    d2.reachable, d2.error = False, "Connection refused"
    nodes, _ = by_label(merge(answers)[HYBRID])
    assert nodes["d2"]["stale"] and not nodes["d2"]["reachable"]
    assert not nodes["d1"]["stale"]


def test_the_cores_gateway_role_wins_over_the_guess() -> None:
    recorded = copy.deepcopy(RECORDED)
    for entry in recorded["h1"]["groups"]:
        if entry["group"] == HYBRID:
            entry["gateway"] = {"role": "designated", "peer_interfaces": [3]}
    nodes, edges = by_label(merge(sources(recorded=recorded))[HYBRID])
    assert nodes["h1"]["gateway"] and not nodes["h1"]["gateway_inferred"]
    assert (LINK, "h1", "gateway") in edges


def test_the_cores_word_that_a_host_is_no_gateway_wins_too() -> None:
    recorded = copy.deepcopy(RECORDED)
    for entry in recorded["h2"]["groups"]:
        entry["gateway"] = False
    nodes, edges = by_label(merge(sources(recorded=recorded))[HYBRID])
    assert not nodes["h2"]["gateway"]
    assert (LINK, "h2", "native") in edges


def test_senders_point_at_the_link_and_listeners_away_from_it() -> None:
    recorded = copy.deepcopy(RECORDED)
    for entry in recorded["h1"]["groups"]:
        entry["role"] = "sender"
    _, edges = by_label(merge(sources(recorded=recorded))[NATIVE])
    assert ("h1", LINK, "native") in edges
    assert (LINK, "h1", "native") not in edges


def test_unreachable_endpoints_without_an_answer_draw_nothing() -> None:
    answers = [*sources("d1"), Source("http://10.9.9.9:7048", None, "timed out", False)]
    graph = merge(answers)[HYBRID]
    assert [n["data"]["label"] for n in graph["nodes"]] == ["d1", "0358ac23@10.71.0.3:7047"]
    rows = {row["url"]: row for row in daemon_summaries(answers)}
    assert rows["http://10.9.9.9:7048"] == {
        "url": "http://10.9.9.9:7048",
        "reachable": False,
        "error": "timed out",
        "id": None,
    }
    d1 = rows["http://d1:7048"]
    assert d1["name"] == "d1" and d1["reachable"]
    assert d1["interfaces"][0]["technology"] == "overlay"


def test_no_answers_no_graphs() -> None:
    assert merge([]) == {}
    assert merge([Source("http://x:1", None, "refused", False)]) == {}
