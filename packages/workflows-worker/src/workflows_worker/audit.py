"""Each worker's audit of itself: what the database says runs here but nothing here runs."""

from __future__ import annotations

from collections.abc import Container

from workflows.store import WorkerStore
from workflows_worker.logs import get_logger

log = get_logger(__name__)


class Audit:
    """Frees executions left running under this worker with nothing here running them.

    A claim or activation committed whose reply never came back (the connection cut just then)
    leaves executions running under this worker, which beats on, so no peer would ever recover
    them. Seen on two audits in a row (a reply in transit is started long before the next),
    each goes back to pending, the attempt not counted. ``running``: the ids running here.
    """

    def __init__(self, store: WorkerStore, worker_id: str, running: Container[str]) -> None:
        self._store = store
        self._worker_id = worker_id
        self._running = running
        self._suspects: set[tuple[str, int]] = set()

    async def run(self) -> list[str]:
        """One audit; the ids released."""
        in_database = await self._store.running_here(self._worker_id)
        orphans = {(i, lease) for i, lease in in_database if i not in self._running}
        stranded, self._suspects = orphans & self._suspects, orphans
        released: list[str] = []
        for execution_id, lease in sorted(stranded):
            if execution_id in self._running:
                continue
            self._suspects.discard((execution_id, lease))
            if await self._store.release_id(execution_id, lease, self._worker_id):
                released.append(execution_id)
                log.warning(
                    "released %s: it was running here with nothing running it (a reply lost)",
                    execution_id,
                )
        return released
