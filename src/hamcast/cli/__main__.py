"""``python -m hamcast.cli``: the ``hamcast`` command."""

from __future__ import annotations

import sys

from hamcast.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
