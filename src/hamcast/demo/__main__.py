"""``python -m hamcast.demo``."""

from __future__ import annotations

import sys

from hamcast.demo import main

sys.exit(main())
