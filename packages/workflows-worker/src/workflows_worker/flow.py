"""What this worker knows of the fleet's flow-control settings.

Limits are enforced where executions start (admit() in the database), whatever a worker
knows. But an activity a workflow starts on this worker's own queues may run here ahead of
the write that admits it (eager); one the limits would hold back must not. So a worker runs
ahead only on the queues it last saw unlimited, read every heartbeat interval. A limit set in
between refuses the activity at its write (it then waits, pending) after it began here: that
run is fenced off, and the activity runs again once admitted.
"""

from __future__ import annotations

from workflows.store import WorkerStore


class FlowView:
    def __init__(self, store: WorkerStore, queues: frozenset[str]) -> None:
        self._store = store
        self._queues = queues
        # Nothing runs ahead until the settings have been read once.
        self._eager: frozenset[str] = frozenset()

    def eager_queues(self) -> frozenset[str]:
        """This worker's queues whose activities may run ahead of their admission."""
        return self._eager

    async def refresh(self) -> None:
        rows = await self._store.control("flow_view", ())
        limited = frozenset(rows[0]["limited"]) if rows else frozenset()
        self._eager = self._queues - limited
