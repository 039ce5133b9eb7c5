"""Messages per second through hamcastd on one host, against a raw socket, side by side.

Each round runs, for every message size, the same saturating workload twice:

* ``raw``: a sender process doing ``sendto`` on a UDP socket to a receiver
  process on loopback (the floor every hamcast path is compared with);
* ``daemon``: a sender process and a receiver process, both
  ``hamcast.MulticastSocket`` clients of one ``hamcast daemon`` process with the
  ``local`` technology (app -> daemon -> app: two IPC hops).

Send rate is messages handed to the socket per second of the sender's loop;
receive rate is messages that arrived per second between the first and last
arrival. Rounds alternate the modes so drift on the machine hits both alike;
the median of the rounds is reported with the ratio daemon/raw.

    python bench/daemon_throughput.py [--duration 2] [--rounds 3] [--sizes 64,1400,8192] [--json]

Loopback only: nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROUP = "ham:opaque:bench"
IDLE_END = 0.5  # a receiver stops after this long without a message


def _raw_receiver(port_file: str) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(rx.getsockname()[1]))
    buf = bytearray(65536)
    rx.settimeout(30)
    count = 0
    rx.recv_into(buf)
    first = last = time.perf_counter()
    count = 1
    rx.settimeout(IDLE_END)
    while True:
        try:
            rx.recv_into(buf)
        except TimeoutError:
            break
        count += 1
        last = time.perf_counter()
    print(json.dumps({"received": count, "seconds": last - first}))


def _raw_sender(port: int, size: int, duration: float) -> None:
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * size
    addr = ("127.0.0.1", port)
    sent = 0
    start = time.perf_counter()
    stop = start + duration
    sendto = tx.sendto
    while True:
        for _ in range(256):
            sendto(payload, addr)
        sent += 256
        if time.perf_counter() >= stop:
            break
    print(json.dumps({"sent": sent, "seconds": time.perf_counter() - start}))


def _hamcast_receiver(ready_file: str) -> None:
    import hamcast

    with hamcast.MulticastSocket(embedded=False) as s:
        s.join(GROUP)
        Path(ready_file).write_text("ready")
        receive = s.receive
        receive(timeout=30)
        first = last = time.perf_counter()
        count = 1
        while True:
            try:
                receive(timeout=IDLE_END)
            except hamcast.ReceiveTimeoutError:
                break
            count += 1
            last = time.perf_counter()
        dropped = s.stats().dropped
    print(json.dumps({"received": count, "seconds": last - first, "dropped": dropped}))


def _hamcast_sender(size: int, duration: float) -> None:
    import hamcast

    with hamcast.MulticastSocket(embedded=False) as s:
        payload = b"x" * size
        send = s.send
        send(GROUP, payload)
        sent = 1
        start = time.perf_counter()
        stop = start + duration
        while True:
            for _ in range(256):
                send(GROUP, payload)
            sent += 256
            if time.perf_counter() >= stop:
                break
        seconds = time.perf_counter() - start
    print(json.dumps({"sent": sent, "seconds": seconds}))


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_file(path: Path, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker did not get ready ({path})")
        time.sleep(0.01)
    return path.read_text()


def _result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed with {proc.returncode}")
    data: dict[str, float] = json.loads(out)
    return data


def run_raw(size: int, duration: float, tmp: Path) -> dict[str, float]:
    port_file = tmp / f"port-{time.monotonic_ns()}"
    rx = _spawn("raw-rx", str(port_file))
    port = int(_wait_file(port_file))
    tx = _spawn("raw-tx", str(port), str(size), str(duration))
    sent, received = _result(tx), _result(rx)
    return _rates(sent, received)


def run_daemon(size: int, duration: float, tmp: Path, env: dict[str, str]) -> dict[str, float]:
    ready = tmp / f"ready-{time.monotonic_ns()}"
    rx = _spawn("hc-rx", str(ready), env=env)
    _wait_file(ready)
    tx = _spawn("hc-tx", str(size), str(duration), env=env)
    sent, received = _result(tx), _result(rx)
    return _rates(sent, received)


def _rates(sent: dict[str, float], received: dict[str, float]) -> dict[str, float]:
    return {
        "send_pps": sent["sent"] / sent["seconds"],
        "recv_pps": received["received"] / max(received["seconds"], 1e-9),
        "loss": 1 - received["received"] / sent["sent"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="64,1400,8192")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="hamcast-bench-") as tmpdir:
        tmp = Path(tmpdir)
        sock = str(tmp / "hamcastd.sock")
        env = {**os.environ, "HAMCAST_SOCKET": sock}
        daemon = subprocess.Popen(
            [sys.executable, "-m", "hamcast.cli", "daemon", "--socket", sock],
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while not os.path.exists(sock):
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise RuntimeError("daemon did not start")
                time.sleep(0.02)
            samples: dict[tuple[str, int], list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                for size in sizes:
                    samples.setdefault(("raw", size), []).append(run_raw(size, args.duration, tmp))
                    samples.setdefault(("daemon", size), []).append(
                        run_daemon(size, args.duration, tmp, env)
                    )
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)

    records = []
    for (mode, size), runs in samples.items():
        record = {"mode": mode, "size": size}
        for key in ("send_pps", "recv_pps", "loss"):
            record[key] = statistics.median(r[key] for r in runs)
        records.append(record)
    by = {(r["mode"], r["size"]): r for r in records}
    for r in records:
        raw = by[("raw", r["size"])]
        r["send_ratio"] = r["send_pps"] / raw["send_pps"]
        r["recv_ratio"] = r["recv_pps"] / raw["recv_pps"]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(
        f"{'mode':8} {'size':>6} {'send kpps':>10} {'recv kpps':>10} {'loss':>6} "
        f"{'send/raw':>9} {'recv/raw':>9}"
    )
    for r in sorted(records, key=lambda r: (r["size"], r["mode"] != "raw")):
        print(
            f"{r['mode']:8} {r['size']:>6} {r['send_pps'] / 1e3:>10.1f} "
            f"{r['recv_pps'] / 1e3:>10.1f} {r['loss']:>6.1%} "
            f"{r['send_ratio']:>9.2f} {r['recv_ratio']:>9.2f}"
        )
    return 0


def worker(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "raw-rx":
        _raw_receiver(rest[0])
    elif kind == "raw-tx":
        _raw_sender(int(rest[0]), int(rest[1]), float(rest[2]))
    elif kind == "hc-rx":
        _hamcast_receiver(rest[0])
    elif kind == "hc-tx":
        _hamcast_sender(int(rest[0]), float(rest[1]))
    else:
        raise SystemExit(f"unknown worker {kind}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        sys.exit(main())
