"""The record of every test-bed run, and removing what runs left behind.

Each run writes ``/run/hamcast-testbed/PREFIX-RUNID.json`` *before* it creates
anything and updates it as it goes: the namespaces it is about to create, the
processes it started (pid and start time, so a recycled pid is never taken for
ours), its temporary folder, and its owner (the building process, by pid and
start time). /run is a tmpfs, like /run/netns, so records and namespaces
vanish together at reboot.

:func:`remove_run` tears one run down; it is what a run's own teardown calls,
and what :func:`down_all` (``hamcast testbed down --all``) calls for each run
whose owner is gone. ``down_all`` also removes namespaces and folders named
like a run of the given prefixes but without a record (a crash can lose the
record only if /run was cleaned by hand) — never anything else: names must
match ``PREFIX-XXXXXX-NAME`` exactly, with six hex digits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hamcast.testbed.errors import BuildError
from hamcast.testbed.netns import (
    delete_namespace,
    list_namespaces,
    pids_in_namespaces,
    process_start_time,
    run_command,
    stop_processes,
)
from hamcast.testbed.topology import DEFAULT_PREFIX, check_prefix

__all__ = [
    "STATE_DIR",
    "DownReport",
    "ProcessRecord",
    "RunRecord",
    "RunStatus",
    "RUN_NAME",
    "all_records",
    "down",
    "down_all",
    "remove_run",
    "run_base_pattern",
    "status",
]

logger = logging.getLogger(__name__)

STATE_DIR = Path("/run/hamcast-testbed")


def run_base_pattern(prefix: str) -> re.Pattern[str]:
    """Matches a run's base name ``PREFIX-XXXXXX`` (group 1) at the start of a name."""
    return re.compile(rf"({re.escape(check_prefix(prefix))}-[0-9a-f]{{6}})(?:-|$)")


@dataclass
class ProcessRecord:
    """A process a run started: router daemon or a program run with ``Network.popen``."""

    pid: int
    start_time: int
    node: str
    role: str
    argv: list[str]

    def running(self) -> bool:
        """Whether this very process (not a later one with its pid) still runs."""
        return process_start_time(self.pid) == self.start_time


@dataclass
class RunRecord:
    """What one run created; see the module docstring."""

    base: str
    prefix: str
    run_id: str
    owner_pid: int
    owner_start: int
    created: float
    workdir: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)

    @classmethod
    def new(cls, prefix: str, run_id: str, workdir: Path) -> RunRecord:
        """A record of a run owned by this process."""
        pid = os.getpid()
        start = process_start_time(pid)
        assert start is not None
        return cls(
            base=f"{prefix}-{run_id}",
            prefix=prefix,
            run_id=run_id,
            owner_pid=pid,
            owner_start=start,
            created=time.time(),
            workdir=str(workdir),
        )

    @property
    def path(self) -> Path:
        """The record's file."""
        return STATE_DIR / f"{self.base}.json"

    def claim(self) -> bool:
        """Write the record if no run of the same name has one (atomically); else False."""
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        os.close(fd)
        self.save()
        return True

    def save(self) -> None:
        """Write the record (atomically: a crash leaves the old or the new one)."""
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        temporary.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        """The record in ``path``, or None if it is unreadable."""
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            processes = [ProcessRecord(**p) for p in data.pop("processes", [])]
            return cls(**data, processes=processes)
        except (OSError, ValueError, TypeError):
            return None

    def owner_alive(self) -> bool:
        """Whether the process that built the run still runs (then the run is live)."""
        return process_start_time(self.owner_pid) == self.owner_start


def all_records() -> list[RunRecord]:
    """Every readable run record, oldest first."""
    if not STATE_DIR.is_dir():
        return []
    records = [RunRecord.load(path) for path in sorted(STATE_DIR.glob("*.json"))]
    return sorted((r for r in records if r is not None), key=lambda r: r.created)


def _own_namespaces(base: str, names: Iterable[str]) -> list[str]:
    # Defence in depth: whatever a record says, only names of this run's
    # form are ever deleted.
    return [n for n in names if n.startswith(f"{base}-")]


def _remove_namespaces(namespaces: list[str], *, grace: float) -> tuple[list[str], list[int]]:
    """Stop every process inside ``namespaces``, then delete them."""
    inside = pids_in_namespaces(namespaces)
    leftovers: list[tuple[int, int]] = []
    for pids in inside.values():
        for pid in pids:
            start = process_start_time(pid)
            if start is not None:
                leftovers.append((pid, start))
    stopped = stop_processes(leftovers, grace=grace)
    removed = [name for name in namespaces if delete_namespace(name)]
    return removed, stopped


def _remove_folder(path: str, base: str) -> bool:
    folder = Path(path)
    if not folder.name.startswith(f"{base}-") or not folder.is_dir():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


@dataclass
class DownReport:
    """What :func:`remove_run` or :func:`down_all` removed, and which live runs it left."""

    runs: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)

    def merge(self, other: DownReport) -> None:
        """Add ``other``'s findings to this report."""
        for name in ("runs", "live", "namespaces", "processes", "links", "folders"):
            getattr(self, name).extend(getattr(other, name))

    def to_json(self) -> dict[str, list[Any]]:
        """The report as plain data (``hamcast testbed down --json``)."""
        return asdict(self)


def remove_run(record: RunRecord, *, keep_workdir: bool = False, grace: float = 3.0) -> DownReport:
    """Tear down everything ``record`` lists: processes, namespaces, folder, the record.

    Processes get SIGTERM, then SIGKILL after ``grace`` seconds; so do any
    other processes still inside the run's namespaces (started there by
    ``ip netns exec`` from a test, say: the namespace is ours, so are they).
    """
    report = DownReport(runs=[record.base])
    recorded = [(p.pid, p.start_time) for p in record.processes if p.running()]
    report.processes += stop_processes(recorded, grace=grace)
    namespaces = _own_namespaces(record.base, record.namespaces)
    removed, stopped = _remove_namespaces(namespaces, grace=grace)
    report.namespaces += removed
    report.processes += stopped
    if not keep_workdir and _remove_folder(record.workdir, record.base):
        report.folders.append(record.workdir)
    with contextlib.suppress(FileNotFoundError):
        record.path.unlink()
    return report


def _links_with_prefix(pattern: re.Pattern[str]) -> list[str]:
    # The test-bed never creates a link in the namespace it runs in (veth
    # pairs are made straight across namespaces); this is only a check.
    try:
        links = json.loads(run_command(["ip", "-j", "link", "show"]) or "[]")
    except (BuildError, ValueError):
        return []
    return [str(link["ifname"]) for link in links if pattern.match(str(link.get("ifname", "")))]


def down_all(prefixes: Iterable[str] = (DEFAULT_PREFIX,), *, force: bool = False) -> DownReport:
    """Remove every run whose owner is gone, and anything else named like a run.

    Runs whose owner still runs are left alone (listed in ``live``) unless
    ``force``. Runs of any prefix are found through their records; without a
    record, only namespaces, folders and links named ``PREFIX-XXXXXX...`` for
    one of ``prefixes`` are removed.
    """
    # Look at the system first and read the records second: a run saves its
    # record before it creates anything, so every name seen here either has
    # its record among those read below or is truly left over.
    namespaces = list_namespaces()
    folders = list(Path(tempfile.gettempdir()).iterdir())
    report = DownReport()
    recorded: set[str] = set()  # live (left alone) or removed through its record
    for record in all_records():
        recorded.add(record.base)
        if record.owner_alive() and not force:
            report.live.append(f"{record.base} (pid {record.owner_pid})")
            continue
        report.merge(remove_run(record))
    patterns = [run_base_pattern(prefix) for prefix in prefixes]

    def orphan_base(name: str) -> str | None:
        for pattern in patterns:
            match = pattern.match(name)
            if match is not None and match.group(1) not in recorded:
                return match.group(1)
        return None

    orphans: dict[str, list[str]] = {}
    for name in namespaces:
        base = orphan_base(name)
        if base is not None and re.fullmatch(r"[a-z][a-z0-9]{0,9}", name[len(base) + 1 :]):
            orphans.setdefault(base, []).append(name)
    for base, names in orphans.items():
        removed, stopped = _remove_namespaces(names, grace=3.0)
        report.runs.append(base)
        report.namespaces += removed
        report.processes += stopped
    for folder in folders:
        base = orphan_base(folder.name)
        if base is not None and folder.name != base and _remove_folder(str(folder), base):
            report.folders.append(str(folder))
    for pattern in patterns:
        for link in _links_with_prefix(pattern):
            base = orphan_base(link)
            if base is None:
                continue
            with contextlib.suppress(BuildError):
                run_command(["ip", "link", "delete", link])
                report.links.append(link)
    report.runs = list(dict.fromkeys(report.runs))
    return report


#: A run's base name: ``PREFIX-XXXXXX``.
RUN_NAME = re.compile(r"[a-z][a-z0-9]{1,5}-[0-9a-f]{6}")


def down(runs: Iterable[str], *, force: bool = False) -> DownReport:
    """Remove the named runs (``PREFIX-XXXXXX``), recorded or not.

    A run whose owner still runs is left alone (listed in ``live``) unless
    ``force``. Raises :class:`ValueError` for a name that is not a run's.
    """
    bases = list(runs)
    for base in bases:
        if not RUN_NAME.fullmatch(base):
            raise ValueError(f"{base!r} is not a test-bed run name (PREFIX-XXXXXX, see status)")
    namespaces = list_namespaces()
    report = DownReport()
    records = {record.base: record for record in all_records()}
    for base in bases:
        record = records.get(base)
        if record is not None:
            if record.owner_alive() and not force:
                report.live.append(f"{record.base} (pid {record.owner_pid})")
            else:
                report.merge(remove_run(record))
            continue
        names = [n for n in namespaces if n.startswith(f"{base}-")]
        if names:
            removed, stopped = _remove_namespaces(names, grace=3.0)
            report.runs.append(base)
            report.namespaces += removed
            report.processes += stopped
    return report


@dataclass
class RunStatus:
    """One run as ``hamcast testbed status`` shows it."""

    base: str
    owner_pid: int | None
    live: bool
    created: float | None
    namespaces: list[str]
    processes: list[dict[str, Any]]
    workdir: str | None

    def to_json(self) -> dict[str, Any]:
        """The status as plain data."""
        return asdict(self)


def status(prefixes: Iterable[str] = (DEFAULT_PREFIX,)) -> list[RunStatus]:
    """Every recorded run, and every unrecorded group of namespaces named like a run."""
    existing = set(list_namespaces())
    found: list[RunStatus] = []
    known: set[str] = set()
    for record in all_records():
        known.add(record.base)
        found.append(
            RunStatus(
                base=record.base,
                owner_pid=record.owner_pid,
                live=record.owner_alive(),
                created=record.created,
                namespaces=[n for n in record.namespaces if n in existing],
                processes=[
                    {"pid": p.pid, "node": p.node, "role": p.role}
                    for p in record.processes
                    if p.running()
                ],
                workdir=record.workdir,
            )
        )
    patterns = [run_base_pattern(prefix) for prefix in prefixes]
    orphans: dict[str, list[str]] = {}
    for name in sorted(existing):
        for pattern in patterns:
            match = pattern.match(name)
            if match is not None and match.group(1) not in known:
                orphans.setdefault(match.group(1), []).append(name)
    for base, names in orphans.items():
        found.append(RunStatus(base, None, False, None, names, [], None))
    return found
