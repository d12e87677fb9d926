"""Worker processes SIGKILLed at random points while jobs, activities, replays and signal
deliveries are in flight; after every round the invariants of issue 4 are checked.

Each round draws from its own seed (printed; ``CHAOS_SEED`` replays the run): the workload
(job durations, when each execution becomes runnable, which workflows get their signal early)
and the kill schedule (when, and what the victim should be running at that moment). A trial is
one SIGKILL; several trials land in one round while the work is spread over the round, and a
replacement worker starts at once, so recoveries overlap the next kills.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from tests.chaos import chaos_app
from tests.chaos.harness import (
    HEARTBEAT_TIMEOUT,
    RECOVERY_BOUND,
    Db,
    Expected,
    Fleet,
    WorkerProcess,
    check_invariants,
    orphaned,
    summary,
    unfinished,
)
from workflows import send_signal_sync

ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "10"))
KILLS_PER_ROUND = 6
WORKERS = 3
JOBS_PER_ROUND = 36
WORKFLOWS_PER_ROUND = 8
MIN_TRIALS = 50
# What the victim should be running when the signal comes; "any" is a blind kill.
# "signal" twice: an aim at a signal delivery finds one only when a held workflow is waiting
# by then, and kills that land on one are the rarest (jobs are hit by most other aims too).
TARGETS = ("job", "signal", "activity", "activity", "workflow", "workflow", "signal", "any")


# A signal the running activation of workflow `e` is to hand to the code: its wait resolved,
# or a signal stored for a wait that is still open.
_UNDELIVERED_SIGNAL = (
    "EXISTS (SELECT 1 FROM workflows.workflow_steps s WHERE s.workflow_id = e.id "
    "AND s.kind = 'signal' AND s.delivered_in IS NULL AND (s.status = 'completed' "
    "OR EXISTS (SELECT 1 FROM workflows.workflow_signals g WHERE g.workflow_id = e.id "
    "AND g.consumed_seq IS NULL)))"
)


@dataclass
class Trial:
    round_seed: int
    target: str
    victim: str
    hit: list[str]
    killed_at: float
    killed_wall: datetime
    recovery: float | None = None


@dataclass
class Figures:
    trials: list[Trial] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    executions: int = 0
    side_effects: int = 0
    repeated_side_effects: int = 0
    rerun_executions: int = 0
    drains: list[float] = field(default_factory=list)


class Round:
    """One batch of work and the kills that land in it."""

    def __init__(self, seed: int, fleet: Fleet, db: Db, figures: Figures) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.fleet = fleet
        self.db = db
        self.figures = figures
        self.expected = Expected()
        self.early_signals: list[tuple[float, str]] = []
        self.signal_on_wait: set[str] = set()
        # Signalled by a "signal" trial (or once the kills are over), so one can aim at them.
        self.held: set[str] = set()
        self.pending_recovery: dict[str, Trial] = {}

    # ---- the plan --------------------------------------------------------------------------

    def enqueue(self, window: float) -> None:
        rng = self.rng
        for n in range(JOBS_PER_ROUND):
            key = f"s{self.seed}-j{n}"
            seconds = round(rng.uniform(0.02, 0.6), 3)
            delay = round(rng.uniform(0, window), 3)
            job_id = chaos_app.work.options(delay=delay).queue_sync(key, seconds)
            self.expected.jobs[job_id] = key
        for n in range(WORKFLOWS_PER_ROUND):
            key = f"s{self.seed}-w{n}"
            seconds = round(rng.uniform(0.02, 0.3), 3)
            rounds = rng.choice((5_000, 15_000, 30_000))
            nap = rng.choice((0.0, 0.0, 0.2))
            delay = round(rng.uniform(0, window * 0.6), 3)
            wf = chaos_app.pipeline.options(delay=delay).queue_sync(key, 3, seconds, rounds, nap)
            self.expected.workflows[wf] = key
            self.expected.steps[wf] = 3
            draw = rng.random()
            if draw < 0.35:
                # Sent before the workflow waits for it (often before it even started).
                self.early_signals.append((rng.uniform(0, window), wf))
            elif draw < 0.65:
                self.signal_on_wait.add(wf)
            else:
                self.held.add(wf)

    def signal(self, wf: str) -> None:
        payload = {"for": self.expected.workflows[wf], "n": self.rng.randrange(10**6)}
        self.expected.signals[wf] = payload
        send_signal_sync(wf, "go", payload)

    # ---- running it ------------------------------------------------------------------------

    def run(self) -> None:
        rng = self.rng
        times, t = [], 0.0
        for _ in range(KILLS_PER_ROUND):
            t += rng.uniform(0.3, 1.0)
            times.append(t)
        targets = [rng.choice(TARGETS) for _ in times]
        self.enqueue(window=times[-1])
        start = time.monotonic()
        deadline = start + 150
        while True:
            now = time.monotonic() - start
            self.keep_fleet()
            if times and now >= times[0] and len(self.fleet.ready()) >= 2:
                times.pop(0)
                self.trial(targets.pop(0))
            if not times:
                self.signal_on_wait |= self.held
                self.held.clear()
            self.send_due_signals(now)
            self.track_recoveries()
            if not times and self.settled():
                break
            if not self.pending_recovery:
                lost = orphaned(self.db, [w.pid for w in self.fleet.live()])
                assert not lost, f"running with no live worker and no recovery pending: {lost}"
            assert time.monotonic() < deadline, self.stuck()
            time.sleep(0.03)
        self.figures.drains.append(time.monotonic() - start)

    def settled(self) -> bool:
        """Every recovery done, every signal sent and every execution final."""
        if self.pending_recovery or self.signal_on_wait or self.early_signals or self.held:
            return False
        return unfinished(self.db, self.expected.ids()) == 0

    def stuck(self) -> str:
        rows = self.db.rows(
            "SELECT id::text, kind, status, attempts, worker_id::text FROM workflows.executions "
            "WHERE status NOT IN ('completed', 'failed', 'cancelled') LIMIT 10"
        )
        return (
            f"round {self.seed} did not finish: kills left, recoveries "
            f"{list(self.pending_recovery)}, signals {len(self.signal_on_wait)}, unfinished {rows}"
        )

    def keep_fleet(self) -> None:
        while len(self.fleet.live()) < WORKERS:
            number = len(self.fleet.workers)
            # Every other worker keeps no workflow in memory: each activation is a full replay.
            self.fleet.start(WORKFLOWS_WORKER_STICKY_CACHE="0" if number % 2 else "1000")

    def send_due_signals(self, now: float) -> None:
        for due, wf in list(self.early_signals):
            if due <= now:
                self.early_signals.remove((due, wf))
                self.signal(wf)
        if self.signal_on_wait:
            for wf in self.waiting_for_signal(self.signal_on_wait):
                self.signal_on_wait.discard(wf)
                self.signal(wf)

    def waiting_for_signal(self, among: set[str]) -> list[str]:
        rows = self.db.rows(
            "SELECT s.workflow_id::text AS id FROM workflows.workflow_steps s "
            "WHERE s.workflow_id = ANY(%s::uuid[]) AND s.kind = 'signal' "
            "AND s.status = 'scheduled' ORDER BY 1",
            (sorted(among),),
        )
        return [r["id"] for r in rows]

    def trial(self, target: str) -> None:
        ready = self.fleet.ready()
        victim: WorkerProcess | None = None
        if target == "signal":
            waiting = self.waiting_for_signal(self.held)
            if waiting:
                wf = self.rng.choice(waiting)
                self.held.discard(wf)
                self.signal(wf)
                # Its owner while the signal is still to be handed to the code: a workflow's
                # activation takes milliseconds (handed over, resumed in memory), so waiting
                # for any claim of it mostly found the delivery done.
                victim = self.owner_soon(
                    f"e.id = %s::uuid AND {_UNDELIVERED_SIGNAL}",
                    (wf,),
                    ready,
                    timeout=2 * HEARTBEAT_TIMEOUT,
                )
            else:
                target = "workflow"
        if target in ("job", "activity", "workflow"):
            victim = self.owner_soon("e.kind = %s", (target,), ready, timeout=2.0)
        if victim is None:
            target = target if target == "any" else f"{target}, missed"
            victim = self.rng.choice(ready)
        assert victim.worker_id is not None
        hit = self.running_on(victim)
        killed_at = victim.kill()
        trial = Trial(self.seed, target, victim.name, hit, killed_at, datetime.now(UTC))
        self.figures.trials.append(trial)
        self.pending_recovery[victim.worker_id] = trial

    def owner_soon(
        self, where: str, params: tuple[object, ...], ready: list[WorkerProcess], timeout: float
    ) -> WorkerProcess | None:
        """A ready worker running a matching execution, as soon as there is one."""
        by_id = {w.worker_id: w for w in ready}
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rows = self.db.rows(
                "SELECT DISTINCT e.worker_id::text AS worker_id FROM workflows.executions e "
                f"WHERE e.status = 'running' AND e.worker_id = ANY(%s::uuid[]) AND {where} "
                "ORDER BY 1",
                (list(by_id), *params),
            )
            owners = [by_id[r["worker_id"]] for r in rows if by_id[r["worker_id"]].alive()]
            if owners:
                return self.rng.choice(owners)
            time.sleep(0.005)
        return None

    def running_on(self, victim: WorkerProcess) -> list[str]:
        """What the victim is running right now, by kind ("replay": a workflow with history)."""
        rows = self.db.rows(
            "SELECT e.kind, EXISTS (SELECT 1 FROM workflows.workflow_steps s "
            "WHERE s.workflow_id = e.id) AS history, "
            f"{_UNDELIVERED_SIGNAL} AS signalled "
            "FROM workflows.executions e WHERE e.status = 'running' AND e.worker_id = %s::uuid",
            (victim.worker_id,),
        )
        hit = []
        for r in rows:
            if r["kind"] != "workflow":
                hit.append(r["kind"])
            elif r["signalled"]:
                hit.append("signal delivery")
            else:
                hit.append("replay" if r["history"] else "workflow start")
        return sorted(hit) or ["idle"]

    def track_recoveries(self) -> None:
        if not self.pending_recovery:
            return
        ids = list(self.pending_recovery)
        rows = self.db.rows(
            "SELECT worker_id::text AS id FROM workflows.worker_heartbeats "
            "WHERE worker_id = ANY(%s::uuid[]) UNION SELECT worker_id::text FROM "
            "workflows.executions WHERE status = 'running' AND worker_id = ANY(%s::uuid[])",
            (ids, ids),
        )
        still = {r["id"] for r in rows}
        now = time.monotonic()
        for worker_id in ids:
            if worker_id not in still:
                trial = self.pending_recovery.pop(worker_id)
                trial.recovery = now - trial.killed_at


def recovered_once(fleet: Fleet, trials: list[Trial]) -> Counter[str]:
    """How many times each victim was logged as recovered, across every worker's log."""
    victims = {w.name: w.worker_id for w in fleet.workers}
    logged = Counter(re.findall(r"recovered dead worker ([0-9a-f]{8})", fleet.logs()))
    return Counter({t.victim: logged[(victims[t.victim] or "")[:8]] for t in trials})


def unlogged_recoveries(db: Db, fleet: Fleet, trials: list[Trial]) -> list[str]:
    """Victims recovered without a log line whose recoverer was not itself killed at once.

    A recovery commits, then its worker logs it: a kill in between (the dice aim at busy
    workers, and a recoverer just took on the victim's work) is the one excuse.
    """
    once = recovered_once(fleet, trials)
    ids = {w.name: w.worker_id for w in fleet.workers}
    deleted = {
        r["id"]: r["at"]
        for r in db.rows("SELECT worker_id::text AS id, at FROM chaos_heartbeat_deletes")
    }
    unexplained = []
    for trial in trials:
        if once[trial.victim]:
            continue
        at = deleted[ids[trial.victim]]
        if not any(0 <= (t.killed_wall - at).total_seconds() < 1.0 for t in trials):
            unexplained.append(f"{trial.victim} (recovered at {at})")
    return unexplained


@pytest.mark.timeout(600)
def test_random_kills_keep_every_invariant(fleet: Fleet, chaos_db: Db, chaos_seed: int) -> None:
    figures = Figures()
    began = time.monotonic()
    for number in range(ROUNDS):
        seed = chaos_seed + number
        figures.seeds.append(seed)
        one = Round(seed, fleet, chaos_db, figures)
        one.run()
        checked = check_invariants(chaos_db, one.expected)
        figures.executions += checked.executions
        figures.side_effects += checked.side_effects
        figures.repeated_side_effects += checked.repeated_side_effects
        figures.rerun_executions += checked.rerun_executions
        trials = [t for t in figures.trials if t.round_seed == seed]
        print(
            f"round {number + 1}/{ROUNDS} seed {seed}: {len(trials)} kills "
            f"({', '.join('+'.join(t.hit) for t in trials)}); {checked.executions} executions, "
            f"{checked.repeated_side_effects} side effects repeated, "
            f"{checked.rerun_executions} runs repeated; drained in {figures.drains[-1]:.1f} s"
        )

    exits = fleet.stop_all()
    assert set(exits.values()) == {0}, exits
    assert chaos_db.value("SELECT count(*) FROM workflows.worker_heartbeats") == 0, (
        "a worker that stopped, or was recovered, left its heartbeat row behind"
    )
    recoveries = [t.recovery for t in figures.trials if t.recovery is not None]
    once = recovered_once(fleet, figures.trials)
    hits = Counter(kind for t in figures.trials for kind in t.hit)
    targets = Counter(t.target for t in figures.trials)
    print(
        f"chaos: {len(figures.trials)} kill trials over seeds {figures.seeds[0]}.."
        f"{figures.seeds[-1]} in {time.monotonic() - began:.0f} s; aimed at {dict(targets)}; "
        f"victims were running {dict(hits)}; {figures.executions} executions, "
        f"{figures.side_effects} side effects of which {figures.repeated_side_effects} repeated, "
        f"{figures.rerun_executions} jobs/activities ran more than once; "
        f"recovery {summary(recoveries)}; {len(fleet.workers)} worker processes; "
        f"{sum(once.values())} recoveries logged; "
        f"{chaos_db.value('SELECT count(*) FROM chaos_lost_attempts')} attempts lost with "
        "their worker"
    )
    assert len(figures.trials) >= min(MIN_TRIALS, ROUNDS * KILLS_PER_ROUND)
    assert len(recoveries) == len(figures.trials), "a killed worker was never recovered"
    slow = [t for t in figures.trials if t.recovery is not None and t.recovery > RECOVERY_BOUND]
    assert not slow, f"recoveries slower than {RECOVERY_BOUND} s: {slow}"
    # Exactly one recoverer per dead worker: the DELETE of its heartbeat row decides, so no
    # victim is logged twice; the rows of all of them are gone (checked at the end above).
    # A recoverer killed between its commit and its log line is the one way to log fewer.
    # Nothing deleted a killed worker's row but a recovery (they cannot deregister).
    assert max(once.values()) == 1, f"a dead worker recovered twice: {once}"
    unexplained = unlogged_recoveries(chaos_db, fleet, figures.trials)
    assert not unexplained, f"recoveries never logged: {unexplained}"
    victims = {w.worker_id[:8] for w in fleet.workers if w.proc.returncode == -9 and w.worker_id}
    declared = set(re.findall(r"recovered dead worker ([0-9a-f]{8})", fleet.logs()))
    assert declared <= victims, "only killed workers are declared dead"
    assert "declared dead by a peer" not in fleet.logs()
    lost = chaos_db.rows("SELECT id, lease, count(*) AS n FROM chaos_lost_attempts GROUP BY 1, 2")
    assert all(r["n"] == 1 for r in lost), "one lost claim counted as lost twice"
    if len(figures.trials) >= MIN_TRIALS:
        for kind in ("job", "activity", "replay", "signal delivery"):
            assert hits[kind] > 0, f"no kill landed during a {kind}"
    assert "internal error" not in fleet.logs()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("prefetch", ["0", "4"])
def test_poison_job_that_kills_its_worker_fails_after_its_retries(
    fleet: Fleet, chaos_db: Db, prefetch: str
) -> None:
    # With claims made ahead (prefetch "4"), the poison may start from those waiting: each of
    # its attempts still counts once, and what waited on a killed worker still runs.
    ahead = {"WORKFLOWS_WORKER_PREFETCH": prefetch}
    workers = [fleet.start(**ahead), fleet.start(**ahead)]
    fleet.wait_ready(*workers)
    poison = chaos_app.kill_my_worker.queue_sync("poison")
    others = {
        chaos_app.work.queue_sync(f"bystander-{n}", 0.05): f"bystander-{n}" for n in range(20)
    }
    deadline = time.monotonic() + 90
    while unfinished(chaos_db, [poison, *others]):
        # A supervisor restarts what dies, as systemd or Kubernetes would.
        while len(fleet.live()) < 2:
            fleet.start(**ahead)
        assert time.monotonic() < deadline, "the poison job is still looping"
        time.sleep(0.05)
    status = chaos_db.rows(
        "SELECT status, attempts, error FROM workflows.executions WHERE id = %s", (poison,)
    )[0]
    assert status["status"] == "failed"
    assert status["attempts"] == 3, "two retries, then it stays failed"
    assert status["error"] == {"type": "WorkerLost", "message": "worker lost"}
    runs = chaos_db.value("SELECT count(*) FROM chaos_side_effects WHERE key = 'poison'")
    assert runs == 3, "it ran once per attempt and never again"
    lost = chaos_db.value("SELECT count(*) FROM chaos_lost_attempts WHERE id = %s", (poison,))
    assert lost == 3, "each attempt counted as lost with its worker, once"
    checked = check_invariants(chaos_db, Expected(jobs=others))
    killed = sum(1 for w in fleet.workers if w.proc.returncode == -9)
    print(f"poison: {killed} workers killed by it, then failed for good; {checked}")
    assert killed == 3
    assert len(fleet.live()) >= 2
