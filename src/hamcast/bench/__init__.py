"""``hamcast bench``: the data path measured against raw sockets (docs/performance.md).

One invocation runs the same workload, interleaved, over raw UDP sockets
(unicast, multicast, batched ``sendmmsg``/``recvmmsg``) and over hamcast
(through daemons with the ``ip`` or ``overlay`` technology, embedded, or the
``local`` technology on one host), for several message sizes, saturating and
at a constant bit rate. It reports packet and data rates, loss, one-way
latency and the CPU of every process involved. :func:`run_bench` returns the
JSON document; :func:`~hamcast.bench.plots.write_plots` draws it.
"""

from __future__ import annotations

from hamcast.bench.runner import (
    ALL_MODES,
    LOOPBACK_MODES,
    NETNS_MODES,
    BenchConfig,
    check,
    run_bench,
)

__all__ = ["ALL_MODES", "LOOPBACK_MODES", "NETNS_MODES", "BenchConfig", "check", "run_bench"]
