"""Benchmarks: this project against Procrastinate, PgQueuer and DBOS Transact (`nox -s bench`).

Layout: ``__main__`` starts a PostgreSQL and runs each (scenario, system) pair in a subprocess
(``runner``); ``scenarios`` holds the measurements, written once against the small ``System``
interface in ``common``; ``ours``, ``procrastinate_peer``, ``pgqueuer_peer`` and ``dbos_peer``
implement it (client side, and the worker processes started through ``worker``);
``ceiling`` runs pgbench; ``report`` writes results.md, results.json and results.png.

Modules imported by worker processes (``common`` and the system modules) import only the
standard library and their own system's package at the top, so a worker's memory is its own.
"""
