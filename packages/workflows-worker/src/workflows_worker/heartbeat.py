"""The worker's heartbeat, beaten from a thread of its own so a blocked event loop does not get
a live worker declared dead (see watchdog for the trade-off)."""

from __future__ import annotations

import threading
import time

from workflows.store import Heart
from workflows_worker.errors import first_line
from workflows_worker.logs import get_logger
from workflows_worker.watchdog import LoopWatch

log = get_logger(__name__)

STOP_BEATING_AFTER = 10  # heartbeat timeouts


class HeartbeatThread:
    """Beats ``heart`` every ``interval`` from a thread.

    ``steady_since`` is when the beats last became regular (monotonic); a worker judges its
    peers only once its own beats have been on time for a whole timeout (see ``steady``).
    """

    def __init__(
        self,
        heart: Heart,
        *,
        interval: float,
        timeout: float,
        loop_watch: LoopWatch | None = None,
    ) -> None:
        self._heart = heart
        self._interval = interval
        self._timeout = timeout
        self._watch = loop_watch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_beat: float | None = None
        self.steady_since = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="workflows-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def steady(self) -> bool:
        """Whether this worker's own beats have been on time for a whole timeout.

        Until then it judges no peer: after the database was away or this process paused, its
        peers perhaps could not beat either; else a database restart declares every worker
        dead. (A whole timeout is the time a live peer needs to beat again.)
        """
        now = time.monotonic()
        last = self.last_beat
        return (
            last is not None
            and now - last <= self._timeout / 2
            and now - self.steady_since >= self._timeout
        )

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._watch is not None and (
                    self._watch.blocked_for > STOP_BEATING_AFTER * self._timeout
                ):
                    # Blocked for good, it seems: let the peers recover this worker's work.
                    self._stop.wait(self._interval)
                    continue
                try:
                    self.beat()
                except Exception as exc:
                    log.warning("heartbeat failed (%s)", first_line(exc))
                self._stop.wait(self._interval)
        finally:
            self._heart.close()

    def beat(self) -> None:
        # False when a peer had declared this worker dead: the heart registered it again (and
        # logged it), nothing more to do here.
        self._heart.beat()
        now = time.monotonic()
        if self.last_beat is None or now - self.last_beat > self._timeout / 2:
            # Beats were not regular (just started, the database away, the process paused):
            # peers perhaps could not beat either.
            self.steady_since = now
        self.last_beat = now
