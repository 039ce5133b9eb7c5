"""Runs the benchmark: the hosts, the daemons, and one trial per (round, load, size, mode).

Two hosts, ``tx`` and ``rx``: as root, two network namespaces on one bridged
LAN built with :mod:`hamcast.testbed` (torn down at the end); otherwise both
are this host and traffic goes over loopback, where only the modes that need
no multicast run. Daemons are started once per technology and host and kept
for every trial; each trial starts a fresh receiver and sender process
(:mod:`hamcast.bench.worker`) and uses its own port and group, so nothing of
one trial reaches the next. Trials are interleaved — every mode of one size
and load runs before the next size — so drift of a shared machine hits every
mode alike; ``rounds`` repeats the whole sequence and records keep the median
and the range.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hamcast.errors import ResourceError, UsageError
from hamcast.testbed.daemons import answers

__all__ = [
    "ALL_MODES",
    "LOOPBACK_MODES",
    "NETNS_MODES",
    "BenchConfig",
    "check",
    "raw_group",
    "run_bench",
]

logger = logging.getLogger(__name__)

#: mode -> (worker kind, technology of its daemons or None, multicast?)
_MODES: dict[str, tuple[str, str | None, bool]] = {
    "raw-unicast": ("raw", None, False),
    "raw-multicast": ("raw", None, True),
    "raw-batched": ("batched", None, True),
    "hamcast-ip": ("hamcast", "ip", True),
    "hamcast-ip-batched": ("hamcast", "ip", True),
    "hamcast-ip-relayed": ("hamcast", "ip", True),
    "hamcast-overlay": ("hamcast", "overlay", False),
    "hamcast-embedded": ("hamcast", None, True),
    "hamcast-local": ("hamcast", "local", False),
}
ALL_MODES: tuple[str, ...] = tuple(_MODES)
#: Defaults with two hosts in namespaces (root) and on loopback.
NETNS_MODES = (
    "raw-unicast",
    "raw-multicast",
    "raw-batched",
    "hamcast-ip",
    "hamcast-ip-batched",
    "hamcast-ip-relayed",
    "hamcast-overlay",
    "hamcast-embedded",
)
LOOPBACK_MODES = ("raw-unicast", "raw-batched", "hamcast-local", "hamcast-overlay")
#: Modes that need multicast between the hosts: never on this machine's own network.
_NEEDS_NETNS = {
    "raw-multicast",
    "hamcast-ip",
    "hamcast-ip-batched",
    "hamcast-ip-relayed",
    "hamcast-embedded",
}
#: Modes whose daemons keep every message in their data path (``[core] direct = false``).
_RELAYED = {"hamcast-ip-relayed"}
#: Modes whose sender hands the API 64 messages per call (``send_many``).
_BATCHED_API = {"hamcast-ip-batched"}
#: The reference every ratio is taken against, first one that ran.
_REFERENCES = ("raw-multicast", "raw-unicast")
_BASELINES = ("raw-unicast", "raw-multicast", "raw-batched")

_LAN_V4 = "10.77.0.0/24"
_GROUP_V4 = "239.77.0.1"
_BASE_PORT = 40000
_READY_TIMEOUT = 30.0
_HEADER_BYTES = 16  # the worker's message header


@dataclass(slots=True)
class BenchConfig:
    """What one ``hamcast bench`` invocation measures."""

    #: Modes, in the order they run within each (load, size).
    modes: Sequence[str] = ()
    #: Message sizes (bytes of payload; at least the 16-byte header).
    sizes: Sequence[int] = (64, 512, 1400, 8192)
    #: Seconds each sender sends.
    duration: float = 2.0
    #: Constant bit rate of the ``cbr`` load, bits/s (payload bits).
    rate_bps: float = 100e6
    #: ``saturate`` (as fast as the sender can) and/or ``cbr``.
    loads: Sequence[str] = ("saturate", "cbr")
    #: Repetitions of the whole interleaved sequence.
    rounds: int = 1
    #: ``auto`` (namespaces when root), ``netns`` or ``loopback``.
    net: str = "auto"
    #: A receiver ends after this many seconds without a message.
    idle: float = 0.5
    #: Seconds a trial may take to get its first message through (overlay trees).
    start_timeout: float = 20.0
    #: Where daemon logs go (a temporary folder when None).
    workdir: Path | None = None
    #: Called with a line of progress per trial.
    progress: Callable[[str], None] | None = None
    notes: list[str] = field(default_factory=list)


# --- hosts --------------------------------------------------------------------------


class _Hosts:
    """Where the two sides run: ``popen(side, argv)`` with ``side`` ``tx`` or ``rx``."""

    kind = "loopback"

    def address(self, side: str) -> str:
        return "127.0.0.1"

    def popen(self, side: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs["start_new_session"] = True
        return subprocess.Popen(list(argv), **kwargs)

    def close(self) -> None:
        pass


class _Namespaces(_Hosts):
    """Two hosts on one LAN in network namespaces (:mod:`hamcast.testbed`)."""

    kind = "netns"

    def __init__(self) -> None:
        from hamcast.testbed import Topology

        topo = Topology()
        lan = topo.lan("bench", v4=_LAN_V4)
        topo.host("tx", lan)
        topo.host("rx", lan)
        self.net = topo.start()

    def address(self, side: str) -> str:
        return self.net.address(side, 4)

    def popen(self, side: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return self.net.popen(side, argv, **kwargs)

    def close(self) -> None:
        self.net.close()


@contextlib.contextmanager
def _hosts(kind: str) -> Iterator[_Hosts]:
    hosts = _Namespaces() if kind == "netns" else _Hosts()
    try:
        yield hosts
    finally:
        hosts.close()


# --- daemons ------------------------------------------------------------------------


@dataclass(slots=True)
class _Daemon:
    process: subprocess.Popen[Any]
    socket: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Daemons:
    """The daemons of each technology on each side, started on first use."""

    def __init__(self, hosts: _Hosts, workdir: Path) -> None:
        self.hosts = hosts
        self.workdir = workdir
        self._running: dict[tuple[str, str, bool], _Daemon] = {}
        self._loopback_ports: dict[str, int] = {}

    def get(self, technology: str, side: str, direct: bool = True) -> _Daemon:
        if technology == "local":
            side = "rx"  # one daemon for both applications
        daemon = self._running.get((technology, side, direct))
        if daemon is None:
            if technology == "overlay" and side == "tx":
                self.get("overlay", "rx")  # the node to bootstrap from
            daemon = self._start(technology, side, direct)
            self._running[(technology, side, direct)] = daemon
        return daemon

    def _start(self, technology: str, side: str, direct: bool) -> _Daemon:
        name = f"{technology}-{side}" if direct else f"{technology}-relayed-{side}"
        path = str(self.workdir / f"{name}.sock")
        argv = [
            sys.executable,
            "-m",
            "hamcast.cli",
            "daemon",
            "--socket",
            path,
            "--technologies",
            technology,
            "--log-level",
            "warning",
        ]
        if not direct:
            config = self.workdir / f"{name}.toml"
            config.write_text("[core]\ndirect = false\n")
            argv += ["--config", str(config)]
        if technology == "overlay":
            argv += ["--overlay-listen", self._endpoint(side)]
            if side == "tx":
                argv += ["--overlay-bootstrap", self._endpoint("rx")]
        log = (self.workdir / f"{name}.log").open("wb")
        try:
            process = self.hosts.popen(side, argv, stdout=subprocess.DEVNULL, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + _READY_TIMEOUT
        while not answers(path):
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=30)
                text = (self.workdir / f"{name}.log").read_text(errors="replace")
                raise ResourceError(f"the {technology} daemon on {side} did not start: {text}")
            time.sleep(0.02)
        return _Daemon(process, path)

    def _endpoint(self, side: str) -> str:
        """Where ``side``'s overlay node listens."""
        if self.hosts.kind == "netns":
            return f"{self.hosts.address(side)}:7047"
        if side not in self._loopback_ports:
            self._loopback_ports[side] = _free_port()
        return f"127.0.0.1:{self._loopback_ports[side]}"

    def pids(self) -> list[int]:
        return [d.process.pid for d in self._running.values()]

    def close(self) -> None:
        for daemon in self._running.values():
            if daemon.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    daemon.process.send_signal(signal.SIGTERM)
        for daemon in self._running.values():
            try:
                daemon.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait(timeout=5)
        self._running.clear()


# --- one trial ------------------------------------------------------------------------


class _Worker:
    """A worker process and the JSON lines it prints, read on a thread of their own."""

    def __init__(self, hosts: _Hosts, side: str, spec: dict[str, Any]) -> None:
        self.side = side
        argv = [sys.executable, "-m", "hamcast.bench.worker", json.dumps(spec)]
        self.process = hosts.popen(
            side,
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            if len(self._stderr) < 200:
                self._stderr.append(line)

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """Wait for the line that has ``key``; raise with the worker's stderr otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            line, ended = None, False
            if remaining > 0:
                try:
                    line = self._lines.get(timeout=remaining)
                    ended = line is None  # the end of its output: it exited
                except queue.Empty:
                    pass
            if line is None:
                self.stop()
                reason = "".join(self._stderr[-20:]).strip() or "no output"
                what = "exited" if ended else f"timed out ({timeout:g} s)"
                raise ResourceError(f"{self.side} worker {what} before {key!r}: {reason}")
            if key in line:
                return line

    def tell(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        self.process.wait(timeout=30)
        # The pipes reach end-of-file once the process is gone: let the reader
        # threads see it before the streams are closed under them.
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def raw_group(mode: str, net: str) -> str:
    """The multicast group a raw mode's sockets use; empty for unicast.

    Never a group outside the namespaces: on loopback every raw mode is unicast.
    """
    kind, _, multicast = _MODES[mode]
    return _GROUP_V4 if multicast and kind != "hamcast" and net == "netns" else ""


def _trial(
    config: BenchConfig,
    hosts: _Hosts,
    daemons: _Daemons,
    *,
    mode: str,
    size: int,
    load: str,
    number: int,
) -> dict[str, Any]:
    kind, technology, multicast = _MODES[mode]
    port = _BASE_PORT + number % 20000
    tx_side, rx_side = ("rx", "rx") if technology == "local" else ("tx", "rx")
    common: dict[str, Any] = {
        "mode": mode,
        "kind": kind,
        "size": size,
        "duration": config.duration,
        "rate_bps": config.rate_bps if load == "cbr" else 0.0,
        "idle": config.idle,
        "start_timeout": config.start_timeout,
        "port": port,
        "group": raw_group(mode, hosts.kind),
        "peer": hosts.address(rx_side),
        "embedded": [],
        "batch": 64 if mode in _BATCHED_API else 1,
        "socket": "",
        "uri": "",
    }
    if kind == "hamcast":
        common["uri"] = (
            f"ham:ip:{_GROUP_V4}:{port}" if multicast else f"ham:opaque:hamcast-bench-{number}"
        )
    specs = {
        "tx": {**common, "role": "send", "local": hosts.address(tx_side), "watch": {}},
        "rx": {**common, "role": "recv", "local": hosts.address(rx_side), "watch": {}},
    }
    if mode == "hamcast-embedded":
        for spec in specs.values():
            spec["embedded"] = ["ip"]
    elif technology is not None:
        for side, spec in specs.items():
            daemon = daemons.get(technology, side, direct=mode not in _RELAYED)
            spec["socket"] = daemon.socket
            spec["watch"] = {"daemon": daemon.process.pid}
    receiver = _Worker(hosts, rx_side, specs["rx"])
    sender: _Worker | None = None
    try:
        receiver.expect("ready", _READY_TIMEOUT)
        sender = _Worker(hosts, tx_side, specs["tx"])
        sender.expect("ready", _READY_TIMEOUT)
        receiver.expect("warm", config.start_timeout)
        sender.tell("go")
        wait = config.duration + config.start_timeout + 30
        sent = sender.expect("result", wait)["result"]
        received = receiver.expect("result", wait)["result"]
    finally:
        receiver.stop()
        if sender is not None:
            sender.stop()
    return _sample(mode, size, load, sent, received)


def _sample(
    mode: str, size: int, load: str, sent: dict[str, Any], received: dict[str, Any]
) -> dict[str, Any]:
    send_pps = sent["sent"] / sent["seconds"]
    recv_pps = received["received"] / received["seconds"]
    cpu = {
        "send_app": sent["cpu"].get("app", 0.0),
        "send_daemon": sent["cpu"].get("daemon", 0.0),
        "recv_app": received["cpu"].get("app", 0.0),
        "recv_daemon": received["cpu"].get("daemon", 0.0),
    }
    return {
        "mode": mode,
        "size": size,
        "load": load,
        "sent": sent["sent"],
        "received": received["received"],
        "send_pps": send_pps,
        "recv_pps": recv_pps,
        "send_mbps": send_pps * size * 8 / 1e6,
        "recv_mbps": recv_pps * size * 8 / 1e6,
        "loss": max(0.0, 1 - received["received"] / sent["sent"]) if sent["sent"] else 0.0,
        # Of the loss, the share hamcast's bounded queues dropped (the rest: the network
        # and the socket buffers).
        "loss_middleware": received.get("dropped_by_middleware", 0) / sent["sent"]
        if sent["sent"]
        else 0.0,
        "latency_p50_us": received["latency_us"]["p50"],
        "latency_p99_us": received["latency_us"]["p99"],
        "cpu": cpu,
    }


# --- the whole run -----------------------------------------------------------------------


def _choose_net(config: BenchConfig) -> str:
    if config.net not in ("auto", "netns", "loopback"):
        raise UsageError(f"--net {config.net!r}: choose auto, netns or loopback")
    if config.net != "auto":
        if config.net == "netns" and os.geteuid() != 0:
            raise UsageError("--net netns needs root (network namespaces)")
        return config.net
    return "netns" if os.geteuid() == 0 and shutil.which("ip") else "loopback"


def check(config: BenchConfig) -> str:
    """Validate ``config`` (UsageError on anything wrong); the network kind to use."""
    net = _choose_net(config)
    unknown = [m for m in config.modes if m not in _MODES]
    if unknown:
        raise UsageError(
            f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(ALL_MODES)}"
        )
    if net == "loopback":
        refused = [m for m in config.modes if m in _NEEDS_NETNS]
        if refused:
            raise UsageError(
                f"{', '.join(refused)} need multicast between two hosts: run as root"
                " (network namespaces); on loopback only "
                + ", ".join(m for m in ALL_MODES if m not in _NEEDS_NETNS)
            )
    small = [s for s in config.sizes if s < _HEADER_BYTES or s > 65000]
    if small:
        raise UsageError(f"sizes must be {_HEADER_BYTES} to 65000 bytes, not {small}")
    bad_loads = [load for load in config.loads if load not in ("saturate", "cbr")]
    if bad_loads or not config.loads:
        raise UsageError("--load takes saturate, cbr or both")
    if config.duration <= 0 or config.rounds < 1:
        raise UsageError("--duration must be positive and --rounds at least 1")
    return net


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run every trial; the JSON document of records (see docs/performance.md)."""
    net = check(config)
    modes = list(config.modes) or list(NETNS_MODES if net == "netns" else LOOPBACK_MODES)
    samples: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    failures: list[dict[str, Any]] = []
    started = time.time()
    with contextlib.ExitStack() as stack:
        if config.workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hcbench-")))
        else:
            workdir = config.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        hosts = stack.enter_context(_hosts(net))
        daemons = _Daemons(hosts, workdir)
        stack.callback(daemons.close)
        number = 0
        for round_ in range(config.rounds):
            for load in config.loads:
                for size in config.sizes:
                    for mode in modes:
                        number += 1
                        try:
                            sample = _trial(
                                config,
                                hosts,
                                daemons,
                                mode=mode,
                                size=size,
                                load=load,
                                number=number,
                            )
                        except ResourceError as exc:
                            failures.append(
                                {"mode": mode, "size": size, "load": load, "error": str(exc)}
                            )
                            _say(config, f"{load} {size} B {mode}: FAILED: {exc}")
                            continue
                        sample["round"] = round_
                        samples.setdefault((load, mode, size), []).append(sample)
                        _say(
                            config,
                            f"round {round_ + 1}/{config.rounds} {load} {size} B {mode}:"
                            f" send {sample['send_pps'] / 1e3:.1f}k"
                            f" recv {sample['recv_pps'] / 1e3:.1f}k pkt/s"
                            f" loss {sample['loss']:.1%}",
                        )
    records = _records(samples, modes, config)
    return {
        "tool": "hamcast bench",
        "net": net,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "duration": config.duration,
        "rounds": config.rounds,
        "rate_bps": config.rate_bps,
        "loads": list(config.loads),
        "sizes": list(config.sizes),
        "modes": modes,
        "records": records,
        "failures": failures,
    }


def _say(config: BenchConfig, text: str) -> None:
    if config.progress is not None:
        config.progress(text)


_METRICS = (
    "send_pps",
    "recv_pps",
    "send_mbps",
    "recv_mbps",
    "loss",
    "loss_middleware",
    "latency_p50_us",
    "latency_p99_us",
)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _records(
    samples: dict[tuple[str, str, int], list[dict[str, Any]]],
    modes: list[str],
    config: BenchConfig,
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for load in config.loads:
        for size in config.sizes:
            for mode in modes:
                runs = samples.get((load, mode, size))
                if not runs:
                    continue
                record: dict[str, Any] = {"mode": mode, "size": size, "load": load}
                for key in _METRICS:
                    record[key] = _median([r[key] for r in runs])
                record["cpu"] = {
                    part: _median([r["cpu"][part] for r in runs]) for part in runs[0]["cpu"]
                }
                record["cpu_send"] = record["cpu"]["send_app"] + record["cpu"]["send_daemon"]
                record["cpu_recv"] = record["cpu"]["recv_app"] + record["cpu"]["recv_daemon"]
                # CPU of every process per delivered message: steadier than rates
                # on a shared machine, since it does not depend on what CPU we got.
                record["cpu_us_per_msg"] = (
                    (record["cpu_send"] + record["cpu_recv"]) / record["recv_pps"] * 1e6
                    if record["recv_pps"]
                    else None
                )
                record["samples"] = len(runs)
                record["range"] = {
                    key: [min(r[key] for r in runs), max(r[key] for r in runs)]
                    for key in ("send_pps", "recv_pps")
                }
                records.append(record)
    _add_ratios(records)
    return records


def _add_ratios(records: list[dict[str, Any]]) -> None:
    """Each record's rates over those of the raw modes of the same load and size."""
    by_key = {(r["load"], r["mode"], r["size"]): r for r in records}
    for record in records:
        ratios: dict[str, dict[str, float]] = {}
        for base in _BASELINES:
            other = by_key.get((record["load"], base, record["size"]))
            if other is None or not other["send_pps"] or not other["recv_pps"]:
                continue
            ratios[base] = {
                "send": record["send_pps"] / other["send_pps"],
                "recv": record["recv_pps"] / other["recv_pps"],
            }
        record["ratios"] = ratios
        reference = next((base for base in _REFERENCES if base in ratios), None)
        record["reference"] = reference
        record["send_ratio"] = ratios[reference]["send"] if reference else None
        record["recv_ratio"] = ratios[reference]["recv"] if reference else None
