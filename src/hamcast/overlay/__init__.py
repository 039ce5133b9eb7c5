"""Overlay multicast: Scribe trees on a Pastry-style key-based routing overlay (DESIGN.md §9).

Layers, each a sans-I/O core that stacks event on event (STYLE.md 1-2):

* :mod:`hamcast.overlay.ids` — 128-bit identifiers and node handles;
* :mod:`hamcast.overlay.api` — the contract between key-based routing and the
  layer above it (the methods Scribe calls, the events it consumes);
* :mod:`hamcast.overlay.kbr` — the Pastry-style routing core;
* :mod:`hamcast.overlay.scribe` — multicast trees on top of it;
* :mod:`hamcast.overlay.fragments` and :mod:`hamcast.overlay.driver` — cutting
  datagrams to the path MTU and the asyncio UDP driver.
"""
