"""The system operations under the test-bed: commands, namespaces, processes.

Namespaces are named files in ``/run/netns`` made by ``ip netns add``, so they
outlive a crashed program and ``hamcast testbed down --all`` can find them.
Code runs inside one without a subprocess through :func:`call_in_namespace`,
which switches a fresh thread (never the caller's) into it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hamcast.testbed.errors import BuildError, MissingToolError, NotRootError

__all__ = [
    "NETNS_DIR",
    "add_namespace",
    "call_in_namespace",
    "delete_namespace",
    "find_program",
    "list_namespaces",
    "pids_in_namespaces",
    "process_start_time",
    "require_root",
    "run_command",
    "stop_processes",
    "write_sysctl",
]

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
# Root's PATH has these; a sudo'd or cron'd environment may not.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_COMMAND_TIMEOUT = 30.0


def require_root() -> None:
    """Raise :class:`NotRootError` unless the process runs as root."""
    if os.geteuid() != 0:
        raise NotRootError(
            "the network test-bed needs root (it creates network namespaces); run it as root"
        )


def find_program(name: str, extra_dirs: Sequence[Path] = ()) -> str | None:
    """The path of program ``name`` on PATH, in the sbin folders, or in ``extra_dirs``."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN, *map(str, extra_dirs)])
    return shutil.which(name, path=path)


def run_command(argv: Sequence[str], *, timeout: float = _COMMAND_TIMEOUT) -> str:
    """Run ``argv``; its standard output, or :class:`BuildError` with what it said."""
    program = find_program(argv[0])
    if program is None:
        raise MissingToolError(
            f"{argv[0]} is not installed (Debian package iproute2); run"
            " scripts/install-system-packages as root"
        )
    try:
        done = subprocess.run(
            [program, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise BuildError(f"`{shlex.join(argv)}` failed: {said}")
    return done.stdout


# --- namespaces ----------------------------------------------------------------------


def list_namespaces() -> list[str]:
    """The names of all named network namespaces (everyone's, not only ours)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def add_namespace(name: str) -> None:
    """Create the named network namespace ``name``."""
    run_command(["ip", "netns", "add", name])


def delete_namespace(name: str) -> bool:
    """Delete the named namespace; False if it did not exist."""
    if not (NETNS_DIR / name).exists():
        return False
    try:
        run_command(["ip", "netns", "delete", name])
    except BuildError:
        if (NETNS_DIR / name).exists():
            raise
        return False  # someone else deleted it in between
    return True


_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def call_in_namespace(namespace: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` run inside the named network namespace; its result or exception.

    Runs on a new thread that enters the namespace and ends with the call: a
    namespace switch is per thread, so the caller's thread never changes
    namespace and nothing can leak into the caller's network. Sockets made by
    ``fn`` stay in ``namespace`` for their whole life.
    """
    outcome: list[Any] = []

    def enter_and_call() -> None:
        try:
            fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            outcome.append((True, fn(*args)))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=enter_and_call, name=f"netns:{namespace}", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def write_sysctl(namespace: str, key: str, value: str) -> None:
    """Set ``/proc/sys/<key with / for .>`` inside ``namespace``.

    /proc/sys/net resolves to the namespace of the thread that opens it, so a
    thread inside the namespace writes it: no ``ip netns exec sysctl`` process.
    """
    path = "/proc/sys/" + key.replace(".", "/")

    def write() -> None:
        with open(path, "w", encoding="ascii") as file:
            file.write(value)

    try:
        call_in_namespace(namespace, write)
    except OSError as exc:
        raise BuildError(
            f"cannot set {key}={value} in {namespace}: {exc.strerror or exc}"
        ) from None


# --- processes -----------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold anything;
    # the fields after its closing parenthesis start with field 3 (state).
    return text[text.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it has exited.

    Together with the pid it names one process for good: a pid the kernel
    hands out again belongs to a process with a later start time. Zombies
    count as exited.
    """
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_running(pid: int, start_time: int) -> bool:
    """Whether the process ``pid`` that started at ``start_time`` still runs."""
    return process_start_time(pid) == start_time


def pids_in_namespaces(names: Iterable[str]) -> dict[str, list[int]]:
    """The processes whose network namespace is one of the named ones, by name."""
    wanted: dict[tuple[int, int], str] = {}
    for name in names:
        try:
            info = os.stat(NETNS_DIR / name)
        except OSError:
            continue
        wanted[(info.st_dev, info.st_ino)] = name
    found: dict[str, list[int]] = {name: [] for name in wanted.values()}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            info = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # exited meanwhile, or a kernel thread
        owner = wanted.get((info.st_dev, info.st_ino))
        if owner is not None and process_start_time(int(entry)) is not None:
            found[owner].append(int(entry))
    return found


def stop_processes(processes: Iterable[tuple[int, int]], *, grace: float = 3.0) -> list[int]:
    """Stop each (pid, start time): SIGTERM, up to ``grace`` seconds, then SIGKILL.

    Only a process whose start time still matches is signalled, so a pid
    reused by an unrelated process is never touched. Returns the pids stopped.
    """
    targets = [(pid, start) for pid, start in processes if is_running(pid, start)]
    for pid, _ in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_running(p, s) for p, s in targets):
        time.sleep(0.02)
    stubborn = [(p, s) for p, s in targets if is_running(p, s)]
    for pid, _ in stubborn:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_running(p, s) for p, s in stubborn):
        time.sleep(0.02)
    return [pid for pid, _ in targets]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:  # pragma: no cover - we run as root
        if exc.errno != errno.EPERM:
            raise
