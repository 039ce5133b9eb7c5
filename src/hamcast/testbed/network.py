"""A built test-bed: run programs and code on its nodes, wait for its routers, tear it down.

:meth:`Network.build` turns a :class:`~hamcast.testbed.topology.Topology`
into namespaces, bridges, veth pairs, addresses, routes and router daemons;
:meth:`Network.close` removes all of it. Between the two, tests use the
network through its nodes' names::

    with topo.up() as net:
        net.run("h1", ["ip", "-j", "addr"])            # a program in h1's namespace
        sock = net.socket("h2", socket.AF_INET6)      # a socket living in h2's namespace
        net.wait_ready()                              # pimd can route any-source multicast
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from hamcast.testbed.errors import BuildError, MissingToolError, RouterError, TopologyError
from hamcast.testbed.iproute import Command, build_steps
from hamcast.testbed.netns import (
    NETNS_DIR,
    add_namespace,
    call_in_namespace,
    find_program,
    list_namespaces,
    process_start_time,
    require_root,
    run_command,
    write_sysctl,
)
from hamcast.testbed.plan import NodePlan, Plan
from hamcast.testbed.routers import RouterDaemon, check_kernel, daemons_for
from hamcast.testbed.runs import STATE_DIR, DownReport, ProcessRecord, RunRecord, remove_run

if TYPE_CHECKING:
    from hamcast.testbed.topology import Topology

__all__ = ["Network", "Terminated", "exit_on_termination"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long router daemons may take to start serving (pimd and smcroute take
#: milliseconds; the margin is for a loaded machine).
START_TIMEOUT = 15.0
#: How long a process gets between SIGTERM and SIGKILL at teardown.
STOP_GRACE = 3.0
_LOG_TAIL_LINES = 15


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while a test-bed was up.

    A :class:`KeyboardInterrupt`, so whatever already stops cleanly on Ctrl-C
    (pytest ends the session and runs fixture teardown, ``hamcast testbed
    up`` exits 0) does the same on these.
    """


_handlers_lock = threading.Lock()
_handlers_depth = 0
_saved_handlers: dict[int, Any] = {}


def _terminate(signum: int, frame: FrameType | None) -> None:
    del frame
    raise Terminated(f"received {signal.Signals(signum).name}")


@contextlib.contextmanager
def exit_on_termination() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    Only signals whose handler is the default are taken over (a program's own
    handler is left alone), and only from the main thread (the only one
    Python runs handlers in). Nested and overlapping uses are counted: the
    handlers go back when the last one ends.
    """
    global _handlers_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _handlers_lock:
        if _handlers_depth == 0:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) in (signal.SIG_DFL, None):
                    _saved_handlers[sig] = signal.signal(sig, _terminate)
        _handlers_depth += 1
    try:
        yield
    finally:
        with _handlers_lock:
            _handlers_depth -= 1
            if _handlers_depth == 0:
                for number, previous in _saved_handlers.items():
                    signal.signal(number, previous)
                _saved_handlers.clear()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP while inside, so a second Ctrl-C cannot cut a teardown short.

    The handlers are swapped for one that only notes the signal (masking would
    not do: another thread may take the signal, and Python still runs the
    handler in the main thread); on leaving, the first signal noted is raised
    again for the program's own handler, now that the teardown is complete.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        del frame
        noted.append(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        handler = signal.getsignal(sig)
        if handler is not None and handler != signal.SIG_IGN:
            previous[sig] = signal.signal(sig, note)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if noted:
            signal.raise_signal(noted[0])


# Networks not closed yet: closed at interpreter exit if their owner forgot.
_open_networks: set[Network] = set()


@atexit.register
def _close_forgotten() -> None:
    for net in list(_open_networks):
        net.close()


def _new_run_id(prefix: str) -> str:
    taken = set(list_namespaces())
    while True:
        run_id = secrets.token_hex(3)
        base = f"{prefix}-{run_id}"
        if (
            not any(name.startswith(f"{base}-") for name in taken)
            and not (STATE_DIR / f"{base}.json").exists()
        ):
            return run_id


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class Network:
    """A running test-bed built from a topology; see the module docstring.

    Nodes (hosts and routers) and LANs are named as in the topology. Every
    method that takes a node raises :class:`~hamcast.testbed.errors.TopologyError`
    for a name the topology does not have.
    """

    def __init__(self, plan: Plan, record: RunRecord, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self._record = record
        self._ip = find_program("ip") or "ip"
        self._daemons: list[tuple[RouterDaemon, subprocess.Popen[bytes]]] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        #: Keep the folder of router configurations and logs at :meth:`close`.
        self.keep_workdir = False

    # --- building ------------------------------------------------------------------

    @classmethod
    def build(cls, topology: Topology, *, keep_workdir: bool = False) -> Network:
        """Build ``topology``; on any failure, remove what was built and raise.

        Raises :class:`~hamcast.testbed.errors.NotRootError`,
        :class:`~hamcast.testbed.errors.MissingToolError` or
        :class:`~hamcast.testbed.errors.NoMulticastRoutingError` before creating
        anything, :class:`~hamcast.testbed.errors.BuildError` or
        :class:`~hamcast.testbed.errors.RouterError` if a step fails.
        ``keep_workdir`` keeps the folder of router configurations and logs.
        """
        require_root()
        # Check everything that needs no system change first: a bad topology
        # or a missing program fails before anything exists.
        draft = topology.plan("000000")
        _check_programs(draft)
        check_kernel(draft.nodes.values())
        # The record first, so that from the first namespace on, a crash of
        # this process leaves something `hamcast testbed down --all` can read;
        # claiming it also makes the run id ours alone.
        while True:
            run_id = _new_run_id(topology.prefix)
            record = RunRecord.new(topology.prefix, run_id, Path())
            if record.claim():
                break
        net: Network | None = None
        try:
            plan = topology.plan(run_id)
            record.namespaces = list(plan.namespaces())
            record.save()
            workdir = Path(tempfile.mkdtemp(prefix=f"{plan.base}-"))
            record.workdir = str(workdir)
            record.save()
            net = cls(plan, record, workdir)
            _open_networks.add(net)
            net._create()
        except BaseException:
            with _signals_deferred():
                if net is not None:
                    net.close()
                else:
                    remove_run(record)
            raise
        net.keep_workdir = keep_workdir
        logger.info("test-bed %s is up (%d namespaces)", plan.base, len(record.namespaces))
        return net

    def _create(self) -> None:
        for namespace in self.plan.namespaces():
            add_namespace(namespace)
        for step in build_steps(self.plan):
            if isinstance(step, Command):
                run_command(step.argv)
            else:
                write_sysctl(step.namespace, step.key, step.value)
        for node in self.plan.nodes.values():
            for daemon in daemons_for(node, self.workdir):
                self._start_daemon(node, daemon)
        self._wait_daemons(lambda d, log: d.started(log), START_TIMEOUT, "start")

    def _start_daemon(self, node: NodePlan, daemon: RouterDaemon) -> None:
        daemon.files.config.write_text(daemon.config(), encoding="utf-8")
        for command in daemon.setup_commands():
            run_command(["ip", "-n", node.namespace, *command])
        check = daemon.check_argv()
        if check is not None:
            done = subprocess.run(
                [self._ip, "netns", "exec", node.namespace, *check],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            if done.returncode != 0:
                raise RouterError(
                    f"{daemon.name} on router {node.name} rejects its configuration"
                    f" {daemon.files.config}:\n{(done.stdout + done.stderr).strip()}"
                )
        argv = daemon.argv()
        with open(daemon.files.log, "wb") as log:
            process = subprocess.Popen(
                [self._ip, "netns", "exec", node.namespace, *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # Its own session: a Ctrl-C on the terminal reaches only us,
                # and we stop the routers in order during teardown.
                start_new_session=True,
            )
        self._daemons.append((daemon, process))
        self._remember(process, node.name, daemon.name, argv)

    def _remember(
        self, process: subprocess.Popen[Any], node: str, role: str, argv: Sequence[str]
    ) -> None:
        start = process_start_time(process.pid)
        if start is None:
            return  # already gone; nothing to stop later
        with self._lock:
            self._record.processes.append(
                ProcessRecord(process.pid, start, node, role, [str(a) for a in argv])
            )
            self._record.save()

    def _wait_daemons(
        self, done: Callable[[RouterDaemon, str], bool], timeout: float, what: str
    ) -> float:
        began = time.monotonic()
        deadline = began + timeout
        pending = list(self._daemons)
        while pending:
            waiting = []
            for daemon, process in pending:
                node = daemon.node.name
                log = daemon.files.log.read_text(encoding="utf-8", errors="replace")
                problem = daemon.failure(log)
                if problem is not None:
                    raise RouterError(
                        f"{daemon.name} on router {node} failed: {problem}\n"
                        f"its log ({daemon.files.log}) ends:\n{_tail(daemon.files.log)}"
                    )
                if process.poll() is not None:
                    raise RouterError(
                        f"{daemon.name} on router {node} exited with status"
                        f" {process.returncode}; its log ends:\n{_tail(daemon.files.log)}"
                    )
                if not done(daemon, log):
                    waiting.append((daemon, process))
            pending = waiting
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(f"{d.name} on {d.node.name}" for d, _ in pending)
                daemon = pending[0][0]
                raise RouterError(
                    f"{names} not {'started' if what == 'start' else 'ready'} after"
                    f" {timeout:g} s; {daemon.name}'s log ends:\n{_tail(daemon.files.log)}"
                )
            time.sleep(0.05)
        return time.monotonic() - began

    # --- reading the topology --------------------------------------------------------

    @property
    def base(self) -> str:
        """``PREFIX-RUNID``: the start of every name this run created."""
        return self.plan.base

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts' names."""
        return tuple(n.name for n in self.plan.nodes.values() if n.role == "host")

    @property
    def routers(self) -> tuple[str, ...]:
        """The routers' names."""
        return tuple(n.name for n in self.plan.nodes.values() if n.role == "router")

    @property
    def lans(self) -> tuple[str, ...]:
        """The LANs' names."""
        return tuple(self.plan.lans)

    def namespace(self, name: str) -> str:
        """The network namespace of node or LAN ``name``."""
        if name in self.plan.lans:
            return self.plan.lans[name].namespace
        return self.plan.node(name).namespace

    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of this run."""
        return self.plan.namespaces()

    def interface(self, node: str, lan: str | None = None) -> str:
        """The name of ``node``'s interface on ``lan`` (default: its first, ``eth0``)."""
        return self.plan.node(node).port(lan).ifname

    def address(self, node: str, family: int = 4, lan: str | None = None) -> str:
        """``node``'s IPv4 (``family=4``) or IPv6 (6) address on ``lan`` (default: its first)."""
        if family not in (4, 6):
            raise TopologyError(f"family must be 4 or 6, not {family!r}")
        port = self.plan.node(node).port(lan)
        address = port.address(family)
        if address is None:
            raise TopologyError(f"{node}'s interface on LAN {port.lan} has no IPv{family} address")
        return str(address.ip)

    def ifindex(self, node: str, lan: str | None = None) -> int:
        """The interface index of ``node``'s interface on ``lan`` inside its namespace."""
        return self.call(node, socket.if_nametoindex, self.interface(node, lan))

    # --- running things on nodes -----------------------------------------------------

    def _exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        self._check_open()
        if isinstance(argv, str):
            raise TypeError("argv must be a list of arguments, not a string")
        return [self._ip, "netns", "exec", self.namespace(node), *map(str, argv)]

    def run(
        self,
        node: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        timeout: float | None = 60.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        capture_output: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node``'s namespace to completion (``ip netns exec``).

        Output is captured as text by default; ``check`` raises
        :class:`subprocess.CalledProcessError` on a non-zero exit.
        """
        return subprocess.run(
            self._exec_argv(node, argv),
            check=check,
            timeout=timeout,
            input=input,
            env=env,
            cwd=cwd,
            capture_output=capture_output,
            text=True,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def popen(self, node: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``node``'s namespace; ``kwargs`` go to :class:`subprocess.Popen`.

        The process gets its own session (process group); teardown stops the
        group if it still runs, and closes its pipes.
        """
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs["start_new_session"] = True
        process: subprocess.Popen[Any] = subprocess.Popen(self._exec_argv(node, argv), **kwargs)
        with self._lock:
            self._processes.append(process)
        self._remember(process, node, "process", argv)
        return process

    def call(self, node: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` run inside ``node``'s namespace (on a short-lived thread); its result."""
        self._check_open()
        return call_in_namespace(self.namespace(node), fn, *args)

    def socket(
        self,
        node: str,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_DGRAM,
        proto: int = 0,
    ) -> socket.socket:
        """A new socket that lives in ``node``'s namespace (the caller closes it)."""
        return self.call(node, socket.socket, family, type, proto)

    # --- routers ---------------------------------------------------------------------

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until every router routes all it ever will; the seconds waited.

        pimd loads its rendezvous point ~20 s after it starts, and only then
        routes any-source multicast (SSM and smcroute's static routes work as
        soon as :meth:`~hamcast.testbed.topology.Topology.up` returns). Join
        after this returns: pimd learns of earlier joins only from the next
        membership report (up to its IGMP query interval, 12 s, later).
        Raises :class:`~hamcast.testbed.errors.RouterError` at ``timeout``.
        """
        self._check_open()
        return self._wait_daemons(lambda d, log: d.ready(log), timeout, "ready")

    def router_log(self, router: str) -> str:
        """The logs of ``router``'s daemons so far, each under a ``== name ==`` line."""
        self.plan.node(router)
        parts = []
        for daemon, _ in self._daemons:
            if daemon.node.name == router:
                text = daemon.files.log.read_text(encoding="utf-8", errors="replace")
                parts.append(f"== {daemon.name} ({daemon.files.log}) ==\n{text}")
        return "\n".join(parts)

    def daemon_pids(self) -> dict[str, list[int]]:
        """The pids of the router daemons, by router."""
        found: dict[str, list[int]] = {}
        for daemon, process in self._daemons:
            found.setdefault(daemon.node.name, []).append(process.pid)
        return found

    # --- describing ------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Everything about the run as plain data (``hamcast testbed up --json``)."""
        daemons: dict[str, list[dict[str, Any]]] = {}
        for daemon, process in self._daemons:
            daemons.setdefault(daemon.node.name, []).append(
                {"name": daemon.name, "pid": process.pid, "log": str(daemon.files.log)}
            )
        nodes: dict[str, Any] = {}
        for node in self.plan.nodes.values():
            entry: dict[str, Any] = {
                "role": node.role,
                "namespace": node.namespace,
                "interfaces": [
                    {
                        "name": port.ifname,
                        "lan": port.lan,
                        "mac": port.mac,
                        "v4": str(port.v4) if port.v4 else None,
                        "v6": str(port.v6) if port.v6 else None,
                        "multicast": port.multicast,
                    }
                    for port in node.ports
                ],
            }
            if node.router is not None:
                entry["kind"] = node.router.kind
                entry["rp"] = str(node.router.rp) if node.router.rp else None
                entry["daemons"] = daemons.get(node.name, [])
            nodes[node.name] = entry
        lans = {
            name: {
                "namespace": lan.namespace,
                "v4": str(lan.lan.v4) if lan.lan.v4 else None,
                "v6": str(lan.lan.v6) if lan.lan.v6 else None,
                "multicast": lan.lan.multicast,
                "querier": lan.lan.querier,
            }
            for name, lan in self.plan.lans.items()
        }
        return {
            "run": self.plan.base,
            "prefix": self.plan.prefix,
            "run_id": self.plan.run_id,
            "owner_pid": os.getpid(),
            "workdir": str(self.workdir),
            "lans": lans,
            "nodes": nodes,
        }

    # --- tearing down ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise BuildError(f"test-bed {self.plan.base} is already torn down")

    def close(self, *, keep_workdir: bool | None = None) -> DownReport:
        """Remove everything: processes, router daemons, namespaces (and with them
        every link), the folder of logs (unless ``keep_workdir``), the run record.

        Idempotent; safe from ``finally`` blocks and signal-driven exits (signals
        are held until it is done).
        """
        with self._lock:
            if self._closed:
                return DownReport()
            self._closed = True
        keep = self.keep_workdir if keep_workdir is None else keep_workdir
        with _signals_deferred():
            self._stop_own_processes()
            report = remove_run(self._record, keep_workdir=keep, grace=STOP_GRACE)
            for process in [p for _, p in self._daemons] + self._processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=STOP_GRACE)
                for stream in (process.stdin, process.stdout, process.stderr):
                    if stream is not None:
                        with contextlib.suppress(OSError):
                            stream.close()
            _open_networks.discard(self)
        if keep and self.workdir.is_dir():
            logger.warning("test-bed %s: router logs kept in %s", self.plan.base, self.workdir)
        leftover = [n for n in self.plan.namespaces() if (NETNS_DIR / n).exists()]
        if leftover:
            # Logged, not raised: close() runs in finally blocks, where an
            # exception would hide the one that brought us here.
            logger.error("test-bed %s: could not delete %s", self.plan.base, ", ".join(leftover))
        logger.info("test-bed %s is down", self.plan.base)
        return report

    def _stop_own_processes(self) -> None:
        # Whole process groups: a test's program may have started children.
        running = [p for p in self._processes if p.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "up"
        return f"<Network {self.plan.base} {state}: {', '.join(self.plan.nodes)}>"


def _check_programs(plan: Plan) -> None:
    """Every program the run needs is installed; checked before anything is created."""
    for program in ("ip", "bridge"):
        if find_program(program) is None:
            raise MissingToolError(
                f"{program} is not installed (Debian package iproute2); run"
                " scripts/install-system-packages as root"
            )
    for node in plan.nodes.values():
        for daemon in daemons_for(node, Path(os.devnull)):
            daemon.argv()  # raises MissingToolError naming the missing daemon
