"""A tour of the API in a few seconds: ``python -m hamcast.demo --tour``.

It starts a real daemon process on a socket in a temporary directory, a
receiver process (``hamcast recv``) and a sender process (``hamcast send``),
shows the messages flowing and what the RFC 7046 service calls say while the
receiver is joined, then stops the daemon with SIGTERM and checks it exited
cleanly and removed its socket. Only the ``local`` technology is used, so
nothing leaves this host, and nothing is left behind.

Exit code 0 when every step worked, 1 (with the reason) otherwise.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hamcast.client.sync import MulticastSocket
from hamcast.errors import DaemonUnavailableError, HamcastError, ReceiveTimeoutError
from hamcast.events import Event, InterfaceChanged, MemberJoined, MemberLeft, SourceAppeared
from hamcast.uri import URI

__all__ = ["main"]

GROUP = URI.parse("ham:opaque:hamcast-demo")
#: Messages the sender sends and the receiver waits for.
COUNT = 20
#: Messages per second: paced, the send takes about COUNT / RATE = 0.1 s.
RATE = 200.0
#: Seconds the daemon may take to answer, and a receiver to join.
START_TIMEOUT = 5.0
#: Seconds the sender and the receiver may take to finish.
RUN_TIMEOUT = 8.0
#: How often (seconds) to look whether a child died while waiting for it.
_CHECK_INTERVAL = 0.05


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hamcast.cli", *args]


def _shown(argv: list[str]) -> str:
    """A child's command line as a user would type it."""
    return shlex.join(["hamcast", *argv[3:]])


class _Children:
    """The processes the demo started; any still running at the end is stopped."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, **kwargs)
        self._procs.append(proc)
        return proc

    def __enter__(self) -> _Children:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def _connect(path: str, daemon: subprocess.Popen[bytes], log: Path) -> MulticastSocket:
    """A socket on the daemon as soon as it answers; fails if it dies or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return MulticastSocket(socket_path=path, embedded=False, name="hamcast demo")
        except DaemonUnavailableError:
            pass
        if daemon.poll() is not None:
            raise DemoError(
                f"the daemon exited with code {daemon.returncode}:\n{log.read_text().strip()}"
            )
        if time.monotonic() > deadline:
            raise DemoError(f"the daemon did not answer on {path} within {START_TIMEOUT:g} s")
        # Polling: the daemon has no readiness signal a parent process can
        # wait on; the interval only bounds how late we notice.
        time.sleep(_CHECK_INTERVAL)


def _wait_for_event(
    sock: MulticastSocket,
    wanted: Callable[[Event], bool],
    seen: list[Event],
    child: subprocess.Popen[bytes] | None = None,
) -> None:
    """Collect events into ``seen`` until one is ``wanted``; fail if ``child`` dies first."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DemoError(f"the expected membership event did not come in {START_TIMEOUT:g} s")
        try:
            event = sock.next_event(timeout=min(remaining, _CHECK_INTERVAL))
        except ReceiveTimeoutError:
            if child is not None and child.poll() is not None:
                error = child.stderr.read().decode(errors="replace") if child.stderr else ""
                raise DemoError(
                    f"the receiver exited with code {child.returncode}: {error.strip()}"
                ) from None
            continue
        seen.append(event)
        if wanted(event):
            return


def _show_service_calls(console: Console, sock: MulticastSocket) -> None:
    """The host's view while the receiver is joined: RFC 7046 service calls per interface."""
    groups = Table(title="groups()  the host's group table", title_justify="left")
    for column in ("group", "technology", "interface", "listeners", "senders"):
        groups.add_column(column)
    for info in sock.groups():
        groups.add_row(
            str(info.group),
            info.technology,
            str(info.interface),
            str(info.listeners),
            str(info.senders),
        )
    console.print(groups)

    calls = Table(
        title="service calls (RFC 7046)",
        title_justify="left",
        caption=f"G = {GROUP}",
        caption_justify="left",
    )
    calls.add_column("call")
    calls.add_column("answer")
    for iface in sock.interfaces():
        i = iface.index
        entries = [f"{e.group} ({e.role.name})" for e in sock.group_set(i)]
        rows = [
            (f"group_set({i})", entries),
            (f"neighbor_set({i})", sock.neighbor_set(i)),
            (f"children_set({i}, G)", sock.children_set(i, GROUP)),
            (f"parent_set({i}, G)", sock.parent_set(i, GROUP)),
            (f"designated_host({i}, G)", [str(sock.designated_host(i, GROUP))]),
        ]
        for call, answer in rows:
            calls.add_row(call, Text(", ".join(answer) if answer else "(empty)"))
    console.print(calls)
    console.print(
        "[dim]The local technology has no network, so no neighbours and no tree:"
        " empty sets, and this host is always the designated host.[/]"
    )


def _event_line(event: Event) -> str:
    if isinstance(event, MemberJoined):
        return f"join        {event.group} on interface {event.interface}"
    if isinstance(event, MemberLeft):
        return f"leave       {event.group} on interface {event.interface}"
    if isinstance(event, InterfaceChanged):
        return f"interface   {event.interface} is now {event.status}"
    assert isinstance(event, SourceAppeared)
    return f"new source  {event.group} on interface {event.interface}: {event.source}"


def _show_messages(console: Console, received: list[dict[str, Any]], elapsed: float) -> None:
    table = Table(
        title=f"received {len(received)} messages ({elapsed:.2f} s, recv --json)",
        title_justify="left",
    )
    for column in ("#", "source", "technology", "size", "payload"):
        table.add_column(column)
    # The first few and the last: enough to see the order without a wall of rows.
    first, last = received[:3], received[3:][-1:]
    for number, row in [*enumerate(first, 1), *((len(received), r) for r in last)]:
        if number == len(received) and number > 4:
            table.add_row("...", "", "", "", "")
        table.add_row(
            str(number),
            row["source"],
            str(row["technology"]),
            str(row["size"]),
            Text(row["payload"]),
        )
    console.print(table)


def _run(console: Console, tmp: Path, children: _Children) -> None:
    path = str(tmp / "hamcastd.sock")
    log_path = tmp / "hamcastd.log"

    console.rule("1. start the daemon")
    argv = _cli("daemon", "--socket", path, "--technologies", "local", "--log-level", "info")
    console.print(Text(f"$ {_shown(argv)}"), soft_wrap=True)
    with log_path.open("wb") as log:
        daemon = children.start(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    with _connect(path, daemon, log_path) as sock:
        version, technologies = sock.daemon_info()
        console.print(
            f"daemon {version} answers on {path}; technologies: {', '.join(technologies)}"
        )
        sock.enable_events()

        console.rule("2. a receiver joins")
        recv = f"recv {GROUP} --json --count {COUNT} --timeout {RUN_TIMEOUT:g}"
        argv = _cli("--socket", path, "--daemon-only", *recv.split())
        console.print(Text(f"$ {_shown(argv)}"), soft_wrap=True)
        receiver = children.start(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        events: list[Event] = []
        # The receiver's join is the event that says it is ready: no polling.
        _wait_for_event(
            sock,
            lambda e: isinstance(e, MemberJoined) and e.group == GROUP,
            events,
            receiver,
        )
        _show_service_calls(console, sock)

        console.rule("3. a sender sends")
        send = f"--json send {GROUP} --lines --count {COUNT} --rate {RATE:g}"
        argv = _cli("--socket", path, "--daemon-only", *send.split())
        console.print(Text(f"$ (print {COUNT} lines) | {_shown(argv)}"), soft_wrap=True)
        lines = [f"message {n} of {COUNT}: hello" for n in range(1, COUNT + 1)]
        started = time.monotonic()
        sender = subprocess.run(
            argv,
            input="".join(f"{line}\n" for line in lines).encode(),
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        if sender.returncode != 0:
            raise DemoError(
                f"the sender exited with code {sender.returncode}: {sender.stderr.decode().strip()}"
            )
        summary = json.loads(sender.stdout)
        console.print(
            f"sent {summary['sent']} messages ({summary['bytes']} bytes)"
            f" in {summary['seconds']:.3f} s, paced at {RATE:g} per second"
        )
        try:
            out, err = receiver.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoError(f"the receiver did not finish within {RUN_TIMEOUT:g} s") from None
        elapsed = time.monotonic() - started
        if receiver.returncode != 0:
            raise DemoError(
                f"the receiver exited with code {receiver.returncode}: {err.decode().strip()}"
            )
        received = [json.loads(line) for line in out.decode().splitlines()]
        _show_messages(console, received, elapsed)
        payloads = [row["payload"] for row in received]
        if payloads != lines:
            raise DemoError(f"the receiver got {len(payloads)} messages, not the {COUNT} sent")
        console.print(f"[green]all {COUNT} messages arrived, in order[/]")

        # The receiver left the group when it exited; wait for that event too.
        _wait_for_event(sock, lambda e: isinstance(e, MemberLeft) and e.group == GROUP, events)
        console.rule("4. membership events seen meanwhile (enable_events)")
        for event in events:
            console.print(Text(_event_line(event)))

    console.rule("5. stop the daemon")
    console.print(f"$ kill -TERM {daemon.pid}")
    daemon.send_signal(signal.SIGTERM)
    try:
        code = daemon.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DemoError(f"the daemon did not stop within {START_TIMEOUT:g} s") from None
    log_text = log_path.read_text().strip()
    for line in log_text.splitlines():
        console.print(Text(line, style="dim"), soft_wrap=True)
    if code != 0:
        raise DemoError(f"the daemon exited with code {code}")
    if os.path.exists(path):
        raise DemoError(f"the daemon left its socket {path} behind")
    console.print("[green]daemon exited with code 0 and removed its socket[/]")


def main() -> int:
    """Run the demo; returns the exit code."""
    console = Console(highlight=False)
    console.print(
        "[bold]hamcast demo[/]: RFC 7046 hybrid multicast between processes of this host"
        " (technology [bold]local[/], no network)"
    )
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="hamcast-demo-") as tmp,
            _Children() as children,
        ):
            _run(console, Path(tmp), children)
    except (
        DemoError,
        HamcastError,
        OSError,
        subprocess.SubprocessError,
        json.JSONDecodeError,
    ) as exc:
        console.print(Text(f"demo failed: {exc}", style="bold red"))
        return 1
    except KeyboardInterrupt:
        return 130
    if Path(tmp).exists():
        console.print(Text(f"demo failed: {tmp} was not removed", style="bold red"))
        return 1
    console.rule()
    console.print(
        f"[bold green]demo finished in {time.monotonic() - started:.1f} s[/];"
        " temporary directory removed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
