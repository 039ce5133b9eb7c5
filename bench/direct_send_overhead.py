"""What the client adds to a send on the direct data path (docs/performance.md).

Times ``MulticastSocket.send`` on a direct route against a plain ``sendto`` of
the same datagram on the same UDP socket, interleaved, in one process. The
datagrams go to the discard port on loopback (127.0.0.1:9): nothing leaves
the host. No daemon is needed: the socket's route is set up by hand, as a
PREPARE_DIRECT answer would.

    python bench/direct_send_overhead.py [--size 1400] [--count 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from collections.abc import Callable

from hamcast.client.demux import SocketQueues
from hamcast.client.direct import DirectRoute
from hamcast.client.sync import MulticastSocket
from hamcast.uri import URI


def per_call(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1400)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    group = URI.parse("ham:ip:239.77.0.1:40000")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    destination = ("127.0.0.1", 9)
    sock = object.__new__(MulticastSocket)  # a socket without a daemon behind it
    sock._queues = SocketQueues(16)
    route = DirectRoute(group, 1, 65507, udp, (*destination, 0))
    route.reported_at = float("inf")  # never due: no report frames to a daemon
    sock._routes = {group: route}
    message = b"x" * args.size
    raw, ours = [], []
    for _ in range(args.rounds):
        raw.append(per_call(lambda: udp.sendto(message, destination), args.count))
        ours.append(per_call(lambda: sock.send(group, message), args.count))
    print(
        f"{args.size} B: sendto {statistics.median(raw):.2f} µs, "
        f"MulticastSocket.send {statistics.median(ours):.2f} µs "
        f"(+{statistics.median(ours) - statistics.median(raw):.2f} µs; medians of {args.rounds})"
    )


if __name__ == "__main__":
    main()
