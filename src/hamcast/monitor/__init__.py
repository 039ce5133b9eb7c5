"""Monitoring: the daemon's read-only HTTP endpoint and the ``hamcast monitor`` dashboard.

* :mod:`hamcast.monitor.snapshot` — the snapshot document one daemon serves;
* :mod:`hamcast.monitor.endpoint` — serving it from the daemon (aiohttp);
* :mod:`hamcast.monitor.graph` — merging many daemons' snapshots into one graph per group;
* :mod:`hamcast.monitor.collector` — polling, merging and the web dashboard;
* :mod:`hamcast.monitor.announcements` — finding daemons from link-local announcements.

docs/monitor.md describes all of it. aiohttp is imported by the endpoint and
the collector only, so importing this package costs nothing.
"""
