"""A worker process: ``python -m benchmarks.worker SYSTEM DSN CONCURRENCY INDEX OPTIONS_JSON``.

Imports only the module of SYSTEM, so its memory is that system's.
"""

from __future__ import annotations

import importlib
import json
import sys

MODULES = {
    "ours": "benchmarks.ours",
    "procrastinate": "benchmarks.procrastinate_peer",
    "pgqueuer": "benchmarks.pgqueuer_peer",
    "dbos": "benchmarks.dbos_peer",
    "absurd": "benchmarks.absurd_peer",
}


def module_of(system: str) -> str:
    # "dbos-10ms" and the like: one module, options tell the variants apart.
    return MODULES[system.split("-", 1)[0]]


def main() -> None:
    system, dsn, concurrency, index, options = sys.argv[1:6]
    module = importlib.import_module(module_of(system))
    module.run_worker(dsn, int(concurrency), int(index), json.loads(options))


if __name__ == "__main__":
    main()
