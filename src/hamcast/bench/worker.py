"""The sending and the receiving process of one benchmark trial.

Run as ``python -m hamcast.bench.worker SPEC`` (``SPEC`` a JSON object, see
:class:`~hamcast.bench.runner.Trial`), in the namespace of its host. It talks
to the runner by lines of JSON on standard output and plain lines on
standard input:

* receiver: prints ``{"ready": true}`` once it listens (joined), then
  ``{"warm": true}`` at the first probe, and at the end ``{"result": {...}}``;
* sender: sends probes every 10 ms until it reads ``go`` on standard input,
  then the workload for ``duration`` seconds, a few end markers, and prints
  ``{"result": {...}}``.

Every datagram starts with a 16-byte header ``kind:u8 pad:7 sent_ns:u64``
(little-endian). ``kind`` 0 is data, 1 data carrying its send time
(CLOCK_MONOTONIC, shared by all namespaces of the machine, so the receiver
computes one-way latency), 2 a probe, 3 the end. Saturating senders stamp
one message in 64 so the baseline loops stay tight; constant-rate senders
stamp every message.

CPU is measured by each process for itself (``getrusage``) and, through
``/proc/PID/stat``, for the daemons it names (``watch``), over its own active
interval: the sender's from its first to its last message, the receiver's
from the first message to the last.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

__all__ = ["HEADER", "main", "proc_cpu_seconds"]

HEADER = struct.Struct("<B7xQ")
_DATA, _STAMPED, _PROBE, _END = 0, 1, 2, 3
_IP_MULTICAST_ALL = 49
#: Latency samples kept at most (a receiver's memory stays bounded).
_MAX_SAMPLES = 200_000
_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return 0.0
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


class _Cpu:
    """CPU seconds of this process and of watched ones between :meth:`start` and :meth:`stop`."""

    def __init__(self, watch: dict[str, int]) -> None:
        self.watch = watch
        self._begin: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        sample = {"app": _own_cpu()}
        for name, pid in self.watch.items():
            sample[name] = proc_cpu_seconds(pid)
        return sample

    def start(self) -> None:
        self._begin = self._sample()

    def stop(self) -> None:
        end = self._sample()
        self.used = {name: end[name] - self._begin.get(name, end[name]) for name in end}


def _emit(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


# --- sockets of each mode ---------------------------------------------------------


def _raw_receiver(spec: dict[str, Any]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    if spec["group"]:
        sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
        sock.bind(("", spec["port"]))
        request = socket.inet_aton(spec["group"]) + socket.inet_aton(spec["local"])
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, request)
    else:
        sock.bind((spec["local"], spec["port"]))
    return sock


def _raw_sender(spec: dict[str, Any]) -> tuple[socket.socket, tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    if spec["group"]:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(spec["local"]))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        return sock, (spec["group"], spec["port"])
    return sock, (spec["peer"], spec["port"])


def _hamcast_socket(spec: dict[str, Any]) -> Any:
    import hamcast
    from hamcast.config import DaemonConfig

    if spec["embedded"]:
        # The embedded middleware is made on first use with the default
        # configuration (the local technology only); the bench wants it on the
        # network, so it puts a runtime with its own configuration in place first.
        from hamcast.client import embedded

        config = DaemonConfig(
            technologies=list(spec["embedded"]),
            technology_options=spec.get("technology_options", {}),
        )
        with embedded._runtime_lock:
            if embedded._runtime is None:
                embedded._runtime = embedded.EmbeddedRuntime(config)
        return hamcast.MulticastSocket(embedded=True)
    return hamcast.MulticastSocket(socket_path=spec["socket"], embedded=False)


# --- receiving -------------------------------------------------------------------


class _Tally:
    """What a receiver counted, and what it learns from the datagrams that are not plain data."""

    def __init__(self, cpu: _Cpu) -> None:
        self.cpu = cpu
        self.count = 0
        self.bytes = 0
        self.first = 0.0
        self.last = 0.0
        self.warm = False
        self.ended = False
        self.idle = 0.0
        self.dropped = 0
        self.latencies = array("q")

    def begin(self) -> None:
        self.first = time.perf_counter()
        self.cpu.start()

    def special(self, kind: int, payload: Any) -> None:
        """A datagram whose kind is not plain data."""
        if kind == _STAMPED:
            now = time.monotonic_ns()
            if len(self.latencies) < _MAX_SAMPLES:
                self.latencies.append(now - HEADER.unpack_from(payload)[1])
        elif kind == _PROBE:
            if not self.warm:
                self.warm = True
                _emit({"warm": True})
        elif kind == _END:
            self.ended = True

    def idled(self, idle: float) -> None:
        """The receive timed out after ``idle`` seconds without a message."""
        self.idle = idle

    def finish(self, count: int, total: int) -> None:
        """The last message was taken ``idle`` seconds ago (0 after an end marker)."""
        self.last = time.perf_counter() - self.idle
        self.cpu.stop()
        self.count, self.bytes = count, total


def _receive_raw(spec: dict[str, Any], tally: _Tally) -> None:
    sock = _raw_receiver(spec)
    _emit({"ready": True})
    buf = bytearray(65536)
    recv_into = sock.recv_into
    sock.settimeout(spec["start_timeout"])
    while True:  # probes until the first data message
        size = recv_into(buf)
        kind = buf[0]
        if kind in (_DATA, _STAMPED):
            break
        tally.special(kind, buf)
    tally.begin()
    tally.special(kind, buf)
    count, total = 1, size
    sock.settimeout(spec["idle"])
    special = tally.special
    try:
        while True:
            size = recv_into(buf)
            kind = buf[0]
            if kind:
                special(kind, buf)
                if kind == _END:
                    break
                if kind == _PROBE:
                    continue
            count += 1
            total += size
    except TimeoutError:
        tally.idled(spec["idle"])
    tally.finish(count, total)
    sock.close()


def _receive_batched(spec: dict[str, Any], tally: _Tally) -> None:
    from hamcast.bench.batch import BatchReceiver

    sock = _raw_receiver(spec)
    _emit({"ready": True})
    receiver = BatchReceiver(sock, max(spec["size"], 2048))
    sock.settimeout(None)  # blocking underneath; SO_RCVTIMEO bounds the waits
    _set_rcvtimeo(sock, spec["start_timeout"])
    buf = receiver.buffer
    view = memoryview(buf)
    stride = receiver.size
    length = receiver.length
    started = False
    count = total = 0
    special = tally.special
    while not tally.ended:
        got = receiver.receive()
        if not got:
            if started:
                tally.idled(spec["idle"])
            break
        for index in range(got):
            offset = index * stride
            kind = buf[offset]
            if not started:
                if kind not in (_DATA, _STAMPED):
                    special(kind, view[offset:])
                    continue
                started = True
                tally.begin()
                _set_rcvtimeo(sock, spec["idle"])
            if kind:
                special(kind, view[offset:])
                if kind in (_END, _PROBE):
                    continue
            count += 1
            total += length(index)
    tally.finish(count, total)
    sock.close()


def _set_rcvtimeo(sock: socket.socket, seconds: float) -> None:
    value = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)


def _receive_hamcast(spec: dict[str, Any], tally: _Tally) -> None:
    import hamcast

    with _hamcast_socket(spec) as sock:
        sock.join(spec["uri"])
        _emit({"ready": True})
        receive = sock.receive
        deadline = time.monotonic() + spec["start_timeout"]
        while True:  # probes until the first data message
            payload = receive(timeout=max(deadline - time.monotonic(), 0.001)).payload
            kind = payload[0]
            if kind in (_DATA, _STAMPED):
                break
            tally.special(kind, payload)
        tally.begin()
        tally.special(kind, payload)
        count, total = 1, len(payload)
        idle = spec["idle"]
        special = tally.special
        try:
            while True:
                payload = receive(timeout=idle).payload
                kind = payload[0]
                if kind:
                    special(kind, payload)
                    if kind == _END:
                        break
                    if kind == _PROBE:
                        continue
                count += 1
                total += len(payload)
        except hamcast.ReceiveTimeoutError:
            tally.idled(idle)
        tally.finish(count, total)
        # Messages the middleware dropped for want of room (its bounded queues).
        tally.dropped = sock.stats().dropped


def receiver(spec: dict[str, Any]) -> dict[str, Any]:
    cpu = _Cpu({name: pid for name, pid in spec.get("watch", {}).items() if pid})
    tally = _Tally(cpu)
    kind = spec["kind"]
    if kind == "hamcast":
        _receive_hamcast(spec, tally)
    elif kind == "batched":
        _receive_batched(spec, tally)
    else:
        _receive_raw(spec, tally)
    seconds = max(tally.last - tally.first, 1e-9)
    latencies = sorted(tally.latencies)
    return {
        "received": tally.count,
        "bytes": tally.bytes,
        "seconds": seconds,
        "cpu": {name: used / seconds for name, used in cpu.used.items()},
        "latency_us": _percentiles(latencies),
        "latency_samples": len(latencies),
        "dropped_by_middleware": tally.dropped,
    }


def _percentiles(values: list[int]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    last = len(values) - 1
    return {
        "p50": values[round(0.50 * last)] / 1e3,
        "p99": values[round(0.99 * last)] / 1e3,
    }


# --- sending ---------------------------------------------------------------------


def _go_requested() -> bool:
    ready, _, _ = select.select([sys.stdin], [], [], 0.01)
    if not ready:
        return False
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("the runner went away")
    return line.strip() == "go"


def _probe_until_go(send_one: Callable[[bytes], None], timeout: float) -> None:
    probe = HEADER.pack(_PROBE, 0).ljust(16, b"\0")
    deadline = time.monotonic() + timeout
    while not _go_requested():
        send_one(probe)
        if time.monotonic() > deadline:
            raise SystemExit("no go from the runner")


def _pace(spec: dict[str, Any]) -> float:
    """Seconds between messages at the constant bit rate; 0 when saturating."""
    rate = float(spec["rate_bps"])
    return 0.0 if rate <= 0 else spec["size"] * 8 / rate


def _loop(
    spec: dict[str, Any],
    send_plain: Callable[[], int],
    send_stamped: Callable[[], int],
    batch: int,
) -> tuple[int, float]:
    """Run the workload; returns (messages sent, seconds).

    ``send_stamped`` sends one stamped message (or, batched, one stamped batch).
    Both return the number of messages the kernel took.
    """
    duration = spec["duration"]
    interval = _pace(spec)
    perf = time.perf_counter
    sent = 0
    start = perf()
    stop = start + duration
    if interval == 0.0:
        if batch > 1:
            while perf() < stop:
                sent += send_stamped()
        else:
            while True:
                sent += send_stamped()
                for _ in range(63):
                    send_plain()
                sent += 63
                if perf() >= stop:
                    break
    else:
        # Constant bit rate: catch up with the schedule, sleep when ahead.
        sleep = time.sleep
        due = 0
        while True:
            now = perf()
            if now >= stop:
                break
            due = int((now - start) / interval) + 1
            while sent < due:
                sent += send_stamped()
            ahead = start + due * interval - perf()
            if ahead > 0.0:
                # Sleeping overshoots by ~60 µs; the next pass sends what fell due
                # meanwhile, so short intervals become small bursts, not a spin.
                sleep(ahead)
    return sent, perf() - start


def sender(spec: dict[str, Any]) -> dict[str, Any]:
    cpu = _Cpu({name: pid for name, pid in spec.get("watch", {}).items() if pid})
    size = spec["size"]
    stamped = bytearray(HEADER.pack(_STAMPED, 0).ljust(size, b"x"))
    plain = bytearray(HEADER.pack(_DATA, 0).ljust(size, b"x"))
    end = HEADER.pack(_END, 0).ljust(16, b"\0")
    pack_into = HEADER.pack_into
    clock = time.monotonic_ns
    kind = spec["kind"]
    closer: Callable[[], None]
    cbr = spec["rate_bps"] > 0
    if kind == "hamcast":
        from hamcast.uri import URI

        sock = _hamcast_socket(spec)
        uri = URI.parse(spec["uri"])
        send = sock.send
        plain_view = plain
        batch = 1 if cbr else int(spec.get("batch", 1))

        def send_one(data: bytes) -> None:
            send(uri, data)

        def send_plain() -> int:
            send(uri, plain_view)
            return 1

        if batch > 1:
            send_many = sock.send_many
            run = [stamped, *([plain] * (batch - 1))]

            def send_stamped() -> int:
                pack_into(stamped, 0, _STAMPED, clock())
                return int(send_many(uri, run))

        else:

            def send_stamped() -> int:
                pack_into(stamped, 0, _STAMPED, clock())
                send(uri, stamped)
                return 1

        closer = sock.close
    elif kind == "batched":
        from hamcast.bench.batch import BatchSender

        raw, destination = _raw_sender(spec)
        raw.connect(destination)
        first = stamped
        batcher = BatchSender(raw, first, plain)
        rate_batch = 1 if cbr else 64
        send_raw = raw.send

        def send_one(data: bytes) -> None:
            send_raw(data)

        def send_plain() -> int:
            return batcher.send(rate_batch)

        def send_stamped() -> int:
            pack_into(first, 0, _STAMPED, clock())
            return batcher.send(rate_batch)

        closer = raw.close
        batch = rate_batch
    else:
        raw, destination = _raw_sender(spec)
        sendto = raw.sendto

        def send_one(data: bytes) -> None:
            sendto(data, destination)

        def send_plain() -> int:
            sendto(plain, destination)
            return 1

        def send_stamped() -> int:
            pack_into(stamped, 0, _STAMPED, clock())
            sendto(stamped, destination)
            return 1

        closer = raw.close
        batch = 1
    _emit({"ready": True})
    _probe_until_go(send_one, spec["start_timeout"])
    cpu.start()
    sent, seconds = _loop(spec, send_plain, send_stamped, batch)
    cpu.stop()
    for _ in range(5):
        time.sleep(0.002)
        # The receiver may be gone after the first end marker: a connected UDP
        # socket then reports the ICMP port-unreachable as ECONNREFUSED.
        with contextlib.suppress(OSError):
            send_one(end)
    time.sleep(0.05)
    closer()
    return {
        "sent": sent,
        "bytes": sent * size,
        "seconds": seconds,
        "cpu": {name: used / seconds for name, used in cpu.used.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    result = sender(spec) if spec["role"] == "send" else receiver(spec)
    _emit({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
