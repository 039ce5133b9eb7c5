"""Entry points of the ``hamcast`` and ``hamcastd`` commands, and their exit codes.

Exit codes (docs/cli.md): 0 success; 1 failure (a :class:`~hamcast.errors.HamcastError`
outside the usage family: no daemon, a timeout, a lost connection; or an OS
error); 2 usage error (bad options, a bad URI, a message too long: the
:class:`~hamcast.errors.UsageError` family, and argparse's own errors); 130
interrupted by Ctrl-C. Errors are one line on standard error,
``hamcast: error: ...``; a user never sees a traceback for a mistake of theirs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hamcast.cli.daemon import daemon_command
from hamcast.cli.parser import build_parser
from hamcast.cli.render import Output
from hamcast.errors import HamcastError, UsageError

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "daemon_main", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: 128 + SIGINT, what shells report for a command stopped by Ctrl-C.
EXIT_INTERRUPTED = 130


def _error(prog: str, message: object) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stderr.flush()


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or the exit code when argparse is done (--help, or an error)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits for --help/--version (0) and bad usage (2, message
        # already printed); main() returns codes rather than exiting.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    if args.command == "daemon":
        return daemon_command(args)
    out = Output(json_mode=args.json, quiet=args.quiet)
    code: int = args.run(args, out)
    return code


def main(argv: Sequence[str] | None = None, *, prog: str = "hamcast") -> int:
    """Run ``hamcast`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser(prog, daemon_prog=prog if prog == "hamcastd" else None)
    try:
        return _run(parser, argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except UsageError as exc:
        _error(prog, exc)
        return EXIT_USAGE
    except HamcastError as exc:
        _error(prog, str(exc) or type(exc).__name__)
        return EXIT_FAILURE
    except BrokenPipeError:
        # Whoever read our output went away (`hamcast recv ... | head`). Point
        # stdout at /dev/null so the interpreter's final flush cannot fail
        # again and print a traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILURE
    except OSError as exc:
        # The environment failed us (stdin unreadable, disk full, ...): say
        # what, without a traceback; it is not a bug in hamcast.
        reason = exc.strerror or str(exc)
        _error(prog, f"{exc.filename}: {reason}" if exc.filename else reason)
        return EXIT_FAILURE


def daemon_main(argv: Sequence[str] | None = None) -> int:
    """``hamcastd [options]``: the same as ``hamcast daemon [options]``."""
    args = sys.argv[1:] if argv is None else list(argv)
    return main(["daemon", *args], prog="hamcastd")
