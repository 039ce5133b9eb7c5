"""The ``hamcast`` command line (``hamcast.cli.main``); docs/cli.md describes it."""
