"""Profile every process of one ``hamcast bench`` trial with py-spy (docs/performance.md).

Runs ``hamcast bench`` for one mode and size, saturating, for long enough to
attach py-spy to the sending and receiving application and to both daemons,
records each for ``--seconds``, and prints for each process the functions
where it spent its samples (self and inclusive). With ``--raw DIR`` it also
keeps each process's folded stacks (input for any flame-graph tool).
Needs py-spy (the ``dev`` extra) and, for two hosts in namespaces, root.

    python bench/profile_datapath.py [--mode hamcast-ip] [--size 1400] [--seconds 5] [--raw DIR]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _processes(mode: str) -> dict[str, int]:
    """The bench's daemons and workers, by role, once they run."""
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if "hamcast.bench.worker" in text and f'"mode": "{mode}"' in text:
            role = "send-app" if '"role": "send"' in text else "recv-app"
            found[role] = int(proc.name)
        elif " daemon --socket " in text and "hcbench-" in text:
            side = "tx" if "-tx.sock" in text else "rx"
            found[f"{side}-daemon"] = int(proc.name)
    return found


def _summary(raw: Path, top: int = 12) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [f.split(" (")[0] for f in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; self:"]
    lines += [f"    {n / total:6.1%} {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {n / total:6.1%} {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="hamcast-ip")
    parser.add_argument("--size", type=int, default=1400)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--raw", type=Path, help="also keep the folded stacks in this folder")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        parser.error("py-spy is not installed (pip install -e '.[dev]')")
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hamcast.cli",
            "bench",
            "--modes",
            args.mode,
            "--sizes",
            str(args.size),
            "--load",
            "saturate",
            "--duration",
            str(args.seconds + 8),
            "--json",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        found: dict[str, int] = {}
        while time.monotonic() < deadline and "send-app" not in found:
            time.sleep(0.2)
            found = _processes(args.mode)
        if "send-app" not in found:
            raise SystemExit("the benchmark's processes did not appear")
        time.sleep(2)  # past the start, into the steady state
        with tempfile.TemporaryDirectory() as tmp:
            recorders = {}
            seconds = str(max(1, round(args.seconds)))  # py-spy takes whole seconds
            for role, pid in found.items():
                out = Path(tmp) / f"{role}.txt"
                recorders[role] = (
                    subprocess.Popen(
                        [
                            *(py_spy, "record", "-p", str(pid), "-d", seconds),
                            *("-r", "200", "-f", "raw", "-o", str(out)),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                    out,
                )
            for role, (recorder, out) in sorted(recorders.items()):
                recorder.wait()
                print(f"== {role} (pid {found[role]})")
                print(_summary(out) if out.exists() else "  (py-spy recorded nothing)")
                if args.raw is not None and out.exists():
                    args.raw.mkdir(parents=True, exist_ok=True)
                    shutil.copy(out, args.raw / f"{role}.txt")
    finally:
        bench.wait(timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
