"""results.md, results.json and results.png from the collected figures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from benchmarks.common import PREFETCH

OURS = "ours"

SCENARIO_TITLES = {
    "enqueue": "Enqueue rate",
    "producers": "50 concurrent producers, one job at a time",
    "drain": "Drain throughput",
    "drain_scale": "Drain throughput by backlog (1 worker process)",
    "pickup": "Pickup latency (idle worker)",
    "workflows": "Workflows",
    "claim": "Claim at scale",
    "memory": "Worker memory",
    "drain_limited": "Flow control: drain under a concurrency limit far above the load",
    "drain_keys": "Flow control: drain over 1,000 concurrency keys",
    "rate": "Flow control: a rate limit held busy",
    "claim_blocked": "Flow control: claim with rows held behind a busy key",
    "waiters": "Enqueue while 1,000 callers wait for results",
    "dashboard": "Dashboard: every page on a table of executions",
    "ceiling": "Server alone (pgbench ceiling, commit floor)",
}

# figure -> (label, unit, better)
FIGURES: dict[str, tuple[str, str, str]] = {
    "enqueue_one_per_s": ("one at a time", "jobs/s", "higher"),
    "enqueue_one_cpu_us": ("one at a time, client CPU per call", "µs", "lower"),
    "enqueue_sync_per_s": ("one at a time, blocking client", "jobs/s", "higher"),
    "enqueue_sync_cpu_us": ("one at a time, blocking client, CPU per call", "µs", "lower"),
    "enqueue_bulk_per_s": ("bulk, one round trip per batch", "jobs/s", "higher"),
    "producers_tasks_per_s": ("asyncio tasks in one process", "jobs/s", "higher"),
    "producers_tasks_p50_ms": ("asyncio tasks in one process, enqueue p50", "ms", "lower"),
    "producers_tasks_p99_ms": ("asyncio tasks in one process, enqueue p99", "ms", "lower"),
    "producers_procs_per_s": ("4 processes", "jobs/s", "higher"),
    "producers_procs_p50_ms": ("4 processes, enqueue p50", "ms", "lower"),
    "producers_procs_p99_ms": ("4 processes, enqueue p99", "ms", "lower"),
    "drain_1proc_per_s": ("1 worker process, concurrency 10", "jobs/s", "higher"),
    "drain_2proc_per_s": ("2 worker processes, concurrency 10 each", "jobs/s", "higher"),
    "pickup_p50_ms": ("p50", "ms", "lower"),
    "pickup_p95_ms": ("p95", "ms", "lower"),
    "pickup_p99_ms": ("p99", "ms", "lower"),
    "wf10_per_s": ("10-step workflows", "workflows/s", "higher"),
    "wf10_steps_per_s": ("10-step workflows, steps", "steps/s", "higher"),
    "wf100_per_s": ("100-step workflows", "workflows/s", "higher"),
    "wf100_steps_per_s": ("100-step workflows, steps", "steps/s", "higher"),
    "per_step_ratio": ("per-step cost, 100-step : 10-step", "x", "lower"),
    "wf_single10_ms": ("one 10-step workflow, enqueue to completion", "ms", "lower"),
    "wf_single10_wait_ms": ("one 10-step workflow, enqueue to a worker's claim", "ms", "lower"),
    "wf_single10_run_ms": ("one 10-step workflow, claim to completion", "ms", "lower"),
    "claim_ratio": ("claim latency, large : small backlog", "x", "lower"),
    "rss_c10_mb": ("peak RSS, concurrency 10", "MB", "lower"),
    "rss_c100_mb": ("peak RSS, concurrency 100", "MB", "lower"),
    "drain_unlimited_per_s": ("no limit, 2 processes", "jobs/s", "higher"),
    "drain_limited_per_s": ("queue concurrency limit far above the load", "jobs/s", "higher"),
    "drain_limited_ratio": ("limited : unlimited", "x", "higher"),
    "drain_nokeys_per_s": ("no key, 2 processes", "jobs/s", "higher"),
    "drain_keys_per_s": ("1,000 keys of limit 1", "jobs/s", "higher"),
    "drain_keys_ratio": ("keys : no keys", "x", "higher"),
    "rate_achieved_per_s": ("starts per second over the hold", "starts/s", "higher"),
    "rate_achieved_ratio": ("achieved : limit", "x", "higher"),
    "rate_max_1s_window": ("most starts in any sliding 1 s window", "starts", "lower"),
    "rate_min_second": ("fewest starts in one second of the hold", "starts", "higher"),
    "claim_unblocked_ms": ("claim latency, no held rows", "ms", "lower"),
    "claim_blocked_ms": ("claim latency, rows held behind a busy key", "ms", "lower"),
    "claim_blocked_ratio": ("claim latency, held : none", "x", "lower"),
    "enqueue_idle_p50_ms": ("enqueue p50, no waiter", "ms", "lower"),
    "enqueue_idle_p99_ms": ("enqueue p99, no waiter", "ms", "lower"),
    "enqueue_waiting_p50_ms": ("enqueue p50, with the waiters", "ms", "lower"),
    "enqueue_waiting_p99_ms": ("enqueue p99, with the waiters", "ms", "lower"),
    "waiters_p50_ratio": ("enqueue p50, waiting : idle", "x", "lower"),
    "waiters_p99_ratio": ("enqueue p99, waiting : idle", "x", "lower"),
    "waiters_results": ("results arrived once workers ran", "results", "higher"),
    "waiters_results_s": ("time until every result arrived", "s", "lower"),
    "ceiling_tps": ("insert + update by key per transaction, 10 clients", "TPS", "higher"),
    "floor10_ms": ("10 sequential autocommit INSERTs, one client, p50", "ms", "lower"),
    "floor10_p99_ms": ("10 sequential autocommit INSERTs, one client, p99", "ms", "lower"),
    "floor_commit_ms": ("one autocommit INSERT, p50", "ms", "lower"),
}


def figure_info(key: str) -> tuple[str, str, str]:
    if key in FIGURES:
        return FIGURES[key]
    match = re.fullmatch(r"claim_(\w+)_ms", key)
    if match:
        return (f"claim latency, {match[1]} pending rows", "ms", "lower")
    match = re.fullmatch(r"drain_(\d+[km])(_prefetch)?_per_s", key)
    if match:
        ahead = f", claiming {PREFETCH} ahead (opt-in)" if match[2] else ""
        return (f"{match[1]} jobs, 1 worker process, concurrency 10{ahead}", "jobs/s", "higher")
    return (key, "", "higher")


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    a = abs(value)
    if a >= 100:
        return f"{value:,.0f}"
    if a >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "n/a"
    return f"{fmt(entry['median'])} [{fmt(entry['min'])}-{fmt(entry['max'])}]"


def ratio(peer: dict[str, Any] | None, ours: dict[str, Any] | None) -> float | None:
    if not peer or not ours or not ours["median"]:
        return None
    return float(peer["median"] / ours["median"])


def _status(result: dict[str, Any] | None) -> str:
    if result is None:
        return "not run"
    if result.get("n/a"):
        return "n/a"
    if "error" in result:
        return "error"
    return "ok"


def figures_of(results: dict[str, Any], scenario: str) -> list[str]:
    keys: list[str] = []
    for result in results["scenarios"].get(scenario, {}).values():
        for key in result.get("figures", {}):
            if key not in keys:
                keys.append(key)
    order = list(FIGURES)

    def position(key: str) -> tuple[float, float]:
        if key in order:
            return (order.index(key), 0)
        match = re.fullmatch(r"claim_(\d+)([km])_ms", key)
        if match:  # the backlogs, smallest first, before their ratio
            size = int(match[1]) * (1000 if match[2] == "k" else 1_000_000)
            return (order.index("claim_ratio") - 0.5, size)
        match = re.fullmatch(r"drain_(\d+)([km])_per_s", key)
        if match:  # the drain backlogs, smallest first
            return (0, int(match[1]) * (1000 if match[2] == "k" else 1_000_000))
        return (len(order), 0)

    return sorted(keys, key=position)


# ---- targets ----------------------------------------------------------------------------


def _median(results: dict[str, Any], scenario: str, system: str, key: str) -> float | None:
    entry = results["scenarios"].get(scenario, {}).get(system, {}).get("figures", {}).get(key)
    return None if entry is None else float(entry["median"])


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, what was measured, verdict) for each target of issue 5."""
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    def m(scenario: str, system: str, key: str) -> float | None:
        return _median(results, scenario, system, key)

    for procs in (1, 2):
        key = f"drain_{procs}proc_per_s"
        ours = m("drain", OURS, key)
        peers = [v for v in (m("drain", "procrastinate", key), m("drain", "pgqueuer", key)) if v]
        if ours and peers:
            r = ours / max(peers)
            rows.append(
                (
                    f"drain ({procs} process{'es' if procs > 1 else ''}) >= 1.5x best of "
                    "Procrastinate/PgQueuer",
                    f"{r:.2f}x",
                    verdict(r >= 1.5),
                )
            )
        else:
            rows.append((f"drain ({procs} proc) >= 1.5x best peer", "missing", verdict(None)))

    p50, p99 = m("pickup", OURS, "pickup_p50_ms"), m("pickup", OURS, "pickup_p99_ms")
    rows.append(
        ("pickup p50 <= 2 ms (idle)", f"{fmt(p50)} ms", verdict(None if p50 is None else p50 <= 2))
    )
    rows.append(
        ("pickup p99 <= 5 ms (idle)", f"{fmt(p99)} ms", verdict(None if p99 is None else p99 <= 5))
    )

    for dbos in ("dbos-10ms", "dbos"):
        for steps in (10, 100):
            key = f"wf{steps}_steps_per_s"
            ours, peer = m("workflows", OURS, key), m("workflows", dbos, key)
            if ours and peer:
                r = ours / peer
                rows.append(
                    (
                        f"workflow steps/s >= 10x {dbos} ({steps}-step workflows)",
                        f"{r:.2f}x",
                        verdict(r >= 10) if dbos == "dbos-10ms" else "info",
                    )
                )
        ours, peer = m("workflows", OURS, "wf_single10_ms"), m("workflows", dbos, "wf_single10_ms")
        if ours and peer:
            rows.append(
                (
                    f"one 10-step workflow <= 1/3 of {dbos}'s time",
                    f"{fmt(ours)} ms vs {fmt(peer)} ms ({ours / peer:.2f})",
                    verdict(ours <= peer / 3) if dbos == "dbos-10ms" else "info",
                )
            )

    r = m("workflows", OURS, "per_step_ratio")
    rows.append(
        (
            "per-step cost 100-step <= 1.5x 10-step",
            f"{fmt(r)}x",
            verdict(None if r is None else r <= 1.5),
        )
    )

    ours, peer = (
        m("enqueue", OURS, "enqueue_bulk_per_s"),
        m("enqueue", "pgqueuer", "enqueue_bulk_per_s"),
    )
    if ours and peer:
        rows.append(
            (
                "bulk enqueue >= PgQueuer's bulk rate",
                f"{fmt(ours)} vs {fmt(peer)} jobs/s ({ours / peer:.2f}x)",
                verdict(ours >= peer),
            )
        )
    else:
        rows.append(("bulk enqueue >= PgQueuer's bulk rate", "missing", verdict(None)))

    sizes = [
        k[len("claim_") : -len("_ms")]
        for k in figures_of(results, "claim")
        if re.fullmatch(r"claim_\d+[km]_ms", k)
    ]
    r = m("claim", OURS, "claim_ratio")
    label = f" (this run: {sizes[-1]} vs {sizes[0]})" if sizes and sizes[-1] != "1m" else ""
    rows.append(
        (
            f"claim latency at 1M pending <= 2x at 1k{label}",
            f"{fmt(r)}x",
            verdict(None if r is None else r <= 2),
        )
    )

    for c, limit in ((10, 60), (100, 150)):
        v = m("memory", OURS, f"rss_c{c}_mb")
        rows.append(
            (
                f"worker peak RSS at concurrency {c} <= {limit} MB",
                f"{fmt(v)} MB",
                verdict(None if v is None else v <= limit),
            )
        )
    return rows + flow_targets(results)


def issue16_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The targets of issue 16, each with the figure this run reached (ratios within the run)."""
    rows: list[tuple[str, str, str]] = []
    ran = results["scenarios"]
    quick = results["meta"].get("mode") == "quick"

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("pass" if ok else "**fail**")

    def m(scenario: str, system: str, key: str) -> float | None:
        return _median(results, scenario, system, key)

    def missing(what: str) -> tuple[str, str, str]:
        return (what, "not measured in this run", "n/a")

    if "enqueue" in ran:
        for key, call, peer_keys in (
            ("enqueue_one_per_s", "`await f.queue()`", ("enqueue_one_per_s",)),
            # Against PgQueuer's blocking client; its async one where it has none.
            ("enqueue_sync_per_s", "`f.queue_sync()`", ("enqueue_sync_per_s", "enqueue_one_per_s")),
        ):
            what = f"single enqueue {call} >= 1.3x PgQueuer's"
            ours = m("enqueue", OURS, key)
            peer = next(
                (v for k in peer_keys if (v := m("enqueue", "pgqueuer", k)) is not None), None
            )
            if ours and peer:
                rows.append(
                    (
                        what,
                        f"{fmt(ours)} vs {fmt(peer)} jobs/s ({ours / peer:.2f}x)",
                        verdict(ours >= 1.3 * peer),
                    )
                )
            else:
                rows.append(missing(what))
        for key, call in (
            ("enqueue_one_cpu_us", "`await f.queue()`"),
            ("enqueue_sync_cpu_us", "`f.queue_sync()`"),
        ):
            v = m("enqueue", OURS, key)
            n = results["meta"]["sizes"]["enqueue_one"]
            what = f"client CPU per {call} <= 70 µs (over {n:,} calls)"
            rows.append(
                (what, f"{fmt(v)} µs", verdict(None if v is None else v <= 70))
                if v is not None
                else missing(what)
            )
    if "producers" in ran:
        n = results["meta"]["sizes"]["producers"]
        for mode, label in (("tasks", "asyncio tasks in one process"), ("procs", "4 processes")):
            ours = m("producers", OURS, f"producers_{mode}_per_s")
            peer = m("producers", "pgqueuer", f"producers_{mode}_per_s")
            p99 = m("producers", OURS, f"producers_{mode}_p99_ms")
            peer99 = m("producers", "pgqueuer", f"producers_{mode}_p99_ms")
            what = f"{n} concurrent producers, {label}: jobs/s and p99 vs PgQueuer (reported)"
            if ours and peer and p99 and peer99:
                rows.append(
                    (
                        what,
                        f"{fmt(ours)} vs {fmt(peer)} jobs/s ({ours / peer:.2f}x); p99 "
                        f"{fmt(p99)} vs {fmt(peer99)} ms",
                        "info",
                    )
                )
            else:
                rows.append(missing(what))
    ceiling = m("ceiling", "postgres", "ceiling_tps")
    if "drain_scale" in ran:
        keys = [k for k in figures_of(results, "drain_scale") if k.startswith("drain_")]
        for key in keys:
            size = key[len("drain_") : -len("_per_s")]
            ours = m("drain_scale", OURS, key)
            how = ""
            if size.endswith("_prefetch"):
                # Claiming ahead is opt-in (its trade-offs: the README's "Claiming ahead").
                size = size[: -len("_prefetch")]
                how = f" claiming ahead (WORKFLOWS_WORKER_PREFETCH={PREFETCH}, opt-in)"
            else:
                peer = m("drain_scale", "pgqueuer", key)
                what = f"drain {size} jobs >= 1.5x PgQueuer"
                rows.append(
                    (
                        what,
                        f"{fmt(ours)} vs {fmt(peer)} jobs/s ({ours / peer:.2f}x)",
                        verdict(ours >= 1.5 * peer),
                    )
                    if ours and peer
                    else missing(what)
                )
            what = f"drain {size} jobs{how} >= the pgbench insert+update ceiling"
            rows.append(
                (
                    what,
                    f"{fmt(ours)} vs {fmt(ceiling)} TPS ({ours / ceiling:.2f}x)",
                    verdict(ours >= ceiling),
                )
                if ours and ceiling
                else missing(what)
            )
        if "drain_50k_per_s" not in keys:
            rows.append(missing("drain 50k jobs (BENCH_DRAIN_SIZES=5000,50000)"))
    if "workflows" in ran:
        ours = m("workflows", OURS, "wf_single10_ms")
        for peer_name in ("absurd-fast", "absurd"):
            peer = m("workflows", peer_name, "wf_single10_ms")
            what = f"one 10-step workflow p50 <= 0.7x {peer_name}'s"
            if ours and peer:
                run = m("workflows", peer_name, "wf_single10_run_ms")
                extra = f"; its claim to completion {fmt(run)} ms" if run is not None else ""
                rows.append(
                    (
                        what,
                        f"{fmt(ours)} vs {fmt(peer)} ms ({ours / peer:.2f}x{extra})",
                        verdict(ours <= 0.7 * peer) if peer_name == "absurd-fast" else "info",
                    )
                )
            else:
                rows.append(missing(what))
        floor = m("ceiling", "postgres", "floor10_ms")
        what = "one 10-step workflow p50 <= 3x 10 sequential autocommit INSERTs"
        rows.append(
            (
                what,
                f"{fmt(ours)} vs {fmt(floor)} ms ({ours / floor:.2f}x)",
                verdict(ours <= 3 * floor),
            )
            if ours and floor
            else missing(what)
        )
        v = m("workflows", OURS, "wf10_steps_per_s")
        count = results["meta"]["sizes"]["wf10"]
        what = "steps/s >= 4,000, 200 workflows of 10 steps" + (
            f" (this run: {count})" if count != 200 else ""
        )
        peer = m("workflows", "absurd", "wf10_steps_per_s")
        vs = f" ({v / peer:.1f}x Absurd's {fmt(peer)})" if v and peer else ""
        rows.append(
            (what, f"{fmt(v)} steps/s{vs}", verdict(v >= 4000)) if v is not None else missing(what)
        )
    if quick and rows:
        rows.append(("(quick run: small sizes; the verdicts are indicative only)", "", ""))
    return rows


def flow_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The targets of issue 12 (flow control), for the scenarios that ran."""
    rows: list[tuple[str, str, str]] = []
    ran = results["scenarios"]

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    def m(scenario: str, key: str) -> float | None:
        return _median(results, scenario, OURS, key)

    def worst(scenario: str, key: str, pick: Any) -> float | None:
        entry = ran.get(scenario, {}).get(OURS, {}).get("figures", {}).get(key)
        return None if entry is None else float(pick(entry["runs"]))

    if "drain_limited" in ran:
        r = m("drain_limited", "drain_limited_ratio")
        rows.append(
            (
                "drain under a concurrency limit far above the load >= 0.9x no limit (issue 12)",
                f"{fmt(r)}x",
                verdict(None if r is None else r >= 0.9),
            )
        )
    if "drain_keys" in ran:
        v, r = m("drain_keys", "drain_keys_per_s"), m("drain_keys", "drain_keys_ratio")
        rows.append(
            (
                "drain over 1,000 concurrency keys of limit 1 (issue 12: measured)",
                f"{fmt(v)} jobs/s ({fmt(r)}x no keys)",
                "info",
            )
        )
    if "rate" in ran:
        limit = results["meta"]["sizes"]["rate_limit"]
        r = m("rate", "rate_achieved_ratio")
        rows.append(
            (
                f"rate {limit}/s held: achieved within 5% of the limit (issue 12)",
                f"{fmt(m('rate', 'rate_achieved_per_s'))}/s ({fmt(r)}x)",
                verdict(None if r is None else r >= 0.95),
            )
        )
        most = worst("rate", "rate_max_1s_window", max)
        rows.append(
            (
                f"rate {limit}/s: never above it in any sliding 1 s window, every run (issue 12)",
                f"at most {fmt(most)}",
                verdict(None if most is None else most <= limit),
            )
        )
    if "claim_blocked" in ran:
        r = m("claim_blocked", "claim_blocked_ratio")
        n = results["meta"]["sizes"]["claim_blocked_rows"]
        rows.append(
            (
                f"claim with {n:,} rows held behind a busy key <= 2x unblocked (issue 12)",
                f"{fmt(r)}x",
                verdict(None if r is None else r <= 2),
            )
        )
    if "waiters" in ran:
        n = results["meta"]["sizes"]["waiters"]
        r = m("waiters", "waiters_p99_ratio")
        got = worst("waiters", "waiters_results", min)
        rows.append(
            (
                f"enqueue p99 with {n:,} waiters ~1x without (issue 13)",
                f"{fmt(r)}x (p50 {fmt(m('waiters', 'waiters_p50_ratio'))}x)",
                verdict(None if r is None else r <= 1.5),
            )
        )
        rows.append(
            (
                f"all {n:,} waiters get their result, every run (issue 13)",
                f"at least {fmt(got)}",
                verdict(None if got is None else got >= n),
            )
        )
    if "dashboard" in ran:
        rows += dashboard_targets(results)
    return rows


DASHBOARD_BUDGET_MS = 300.0


def _dashboard(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The dashboard's figures (medians) and notes, when it ran without error."""
    result = results["scenarios"].get("dashboard", {}).get(OURS, {})
    if "figures" not in result:
        return None
    figures = {k: float(v["median"]) for k, v in result["figures"].items()}
    return figures, result.get("notes") or {}


def dashboard_targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    got = _dashboard(results)
    if got is None:
        return [("every dashboard page under 300 ms at the server (issue 14)", "error", "n/a")]
    figures, notes = got
    pages = list(notes.get("dashboard_pages", {}))
    worst = max(pages, key=lambda p: figures[f"{p}_server_p95_ms"])
    over = [p for p in pages if figures[f"{p}_server_p95_ms"] >= DASHBOARD_BUDGET_MS]
    rows = figures.get("dashboard_executions", 0)
    return [
        (
            f"every dashboard page p95 under 300 ms at the server, {rows:,.0f} executions "
            "(issue 14)",
            f"slowest {worst}: p95 {fmt(figures[f'{worst}_server_p95_ms'])} ms"
            + (f"; over: {', '.join(over)}" if over else ""),
            "met" if not over else "**not met**",
        )
    ]


def dashboard_section(results: dict[str, Any]) -> list[str]:
    lines = [f"## {SCENARIO_TITLES['dashboard']}", "", results["scenario_notes"]["dashboard"], ""]
    result = results["scenarios"]["dashboard"].get(OURS, {})
    got = _dashboard(results)
    if got is None:
        return [*lines, f"error: {str(result.get('error', 'not run')).splitlines()[0][:300]}", ""]
    figures, notes = got
    lines += [
        f"Table: {figures['dashboard_executions']:,.0f} executions "
        f"({figures['dashboard_executions_mb']:,.0f} MiB with its indexes), "
        f"{figures['dashboard_steps']:,.0f} workflow steps, "
        f"{figures['dashboard_signals']:,.0f} signals, created over "
        f"{notes.get('dashboard_days', '?')} days; "
        f"{figures['dashboard_ends_15m']:,.0f} ends in the charts' last 15 minutes; seeded in "
        f"{notes.get('dashboard_seed_s', '?')} s, measured in "
        f"{notes.get('dashboard_measure_s', '?')} s. An id's first 8 hex digits are shared by "
        f"{notes.get('dashboard_ids_per_short_id', '?')} executions on average (ids are "
        "time-ordered: the list shows them whole).",
        "",
        "| page | server p50 (ms) | p95 | max | round trip p50 (ms) | p95 | p95 < 300 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for page, what in notes.get("dashboard_pages", {}).items():
        p95 = figures[f"{page}_server_p95_ms"]
        lines.append(
            f"| {page}: {what} | {fmt(figures[f'{page}_server_p50_ms'])} | {fmt(p95)} | "
            f"{fmt(figures[f'{page}_server_max_ms'])} | "
            f"{fmt(figures[f'{page}_client_p50_ms'])} | {fmt(figures[f'{page}_client_p95_ms'])} "
            f"| {'yes' if p95 < DASHBOARD_BUDGET_MS else '**no**'} |"
        )
    return [*lines, ""]


# ---- writers ------------------------------------------------------------------------------


def write(out: Path, results: dict[str, Any]) -> list[Path]:
    """Write the results; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    _add_ratios(results)
    results["targets_issue16"] = [
        {"target": t, "reached": v, "verdict": ok.strip("*")}
        for t, v, ok in issue16_targets(results)
    ]
    written = [out / "results.json", out / "results.md"]
    written[0].write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    written[1].write_text(markdown(results))
    try:
        chart(results, out / "results.png")
        written.append(out / "results.png")
    except ImportError as exc:
        print(f"no chart: {exc} (pip install matplotlib)")
    return written


def _add_ratios(results: dict[str, Any]) -> None:
    for per_system in results["scenarios"].values():
        ours = per_system.get(OURS, {}).get("figures", {})
        for system, result in per_system.items():
            if system == OURS or "figures" not in result:
                continue
            result["ratio_to_ours"] = {
                key: ratio(entry, ours.get(key)) for key, entry in result["figures"].items()
            }


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    systems = results["systems"]
    lines = [
        "# Benchmarks",
        "",
        f"{meta['mode']} run, {meta['date']}; {meta['machine']}; PostgreSQL {meta['postgres']} "
        f"(durable defaults: fsync on, synchronous_commit on), started by the benchmark on "
        f"127.0.0.1.",
        "",
        f"Code measured: {meta.get('revision', 'unknown')}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Each figure is the median of {meta['runs']} runs, [min-max] after it. For each peer, "
        "the ratio after the figure is **peer / ours** (the arrow says which way is better). "
        "n/a: the system has no such feature or call; error: see results.json.",
        "",
        "Systems: " + "; ".join(f"**{s}**: {results['system_notes'].get(s, '')}" for s in systems),
        "",
    ]
    ceiling = results["scenarios"].get("ceiling", {}).get("postgres")
    if ceiling:
        lines += ["## Ceiling and floor", ""]
        if "figures" in ceiling:
            lines.append(
                f"pgbench on the same server, 10 clients, one `INSERT` + one `UPDATE ... WHERE id "
                f"= :k` per transaction: **{cell(ceiling['figures']['ceiling_tps'])} TPS**. "
                "One job costs at least one such transaction pair (enqueue, then record the "
                "outcome), so this bounds jobs/s on this machine."
            )
            floor = ceiling["figures"].get("floor10_ms")
            if floor:
                commit = ceiling["figures"].get("floor_commit_ms")
                lines += [
                    "",
                    f"Floor: 10 sequential single-row autocommit `INSERT`s from one client "
                    f"(asyncpg, prepared): **{cell(floor)} ms** p50 (one: "
                    f"{cell(commit)} ms). Ten durable steps one after the other cannot take "
                    "less on this server.",
                ]
        else:
            lines.append(f"error: {ceiling.get('error')}")
        lines.append("")

    issue16 = issue16_targets(results)
    if issue16:
        lines += ["## Targets of issue 16", "", "| target | reached | |", "|---|---|---|"]
        lines += [f"| {t} | {v} | {ok} |" for t, v, ok in issue16]
        lines.append("")
    lines += ["## Targets (issues 5, 12, 13 and 14)", "", "| target | measured | |"]
    lines.append("|---|---|---|")
    lines += [f"| {t} | {v} | {ok} |" for t, v, ok in targets(results)]
    lines.append("")

    for scenario, title in SCENARIO_TITLES.items():
        if scenario == "ceiling" or scenario not in results["scenarios"]:
            continue
        if scenario == "dashboard":
            lines += dashboard_section(results)
            continue
        per_system = results["scenarios"][scenario]
        lines += [f"## {title}", "", results["scenario_notes"].get(scenario, ""), ""]
        # Only the systems this scenario ran (some peers take part in a few scenarios only).
        cols = [s for s in systems if s in per_system] or systems
        header = "| figure | | " + " | ".join(cols) + " |"
        lines += [header, "|---|---|" + "---|" * len(cols)]
        ours = per_system.get(OURS, {}).get("figures", {})
        for key in figures_of(results, scenario):
            label, unit, better = figure_info(key)
            row = [f"{label} ({unit})", "↑" if better == "higher" else "↓"]
            for system in cols:
                result = per_system.get(system)
                status = _status(result)
                if status != "ok":
                    row.append(status)
                    continue
                assert result is not None
                entry = result["figures"].get(key)
                text = cell(entry)
                r = ratio(entry, ours.get(key)) if system != OURS else None
                if r is not None:
                    text += f" ({r:.2f}x)"
                row.append(text)
            lines.append("| " + " | ".join(row) + " |")
        extra = []
        for system in systems:
            result = per_system.get(system) or {}
            if _status(result) == "error":
                extra.append(f"- {system}: error: {result['error'].splitlines()[0][:300]}")
            elif _status(result) == "n/a":
                extra.append(f"- {system}: n/a ({result['error']})")
            for note_key, note in (result.get("notes") or {}).items():
                if (
                    isinstance(note, list)
                    and note
                    and isinstance(note[0], str)
                    and any("capped" in n for n in note)
                ):
                    extra.append(
                        f"- {system}: {note_key} {', '.join(note)}: reached the time "
                        "cap; the rate is what it finished in that time."
                    )
                elif isinstance(note, str) and note.startswith("n/a"):
                    extra.append(f"- {system}: {note_key}: {note}")
        if extra:
            lines += ["", *extra]
        lines.append("")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = results["systems"]
    panels: list[tuple[str, str]] = []
    # The dashboard's figures are one table of pages (results.md), not bars.
    for scenario in [s for s in SCENARIO_TITLES if s != "dashboard"]:
        for key in figures_of(results, scenario):
            panels.append((scenario, key))
    if not panels:
        return
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (scenario, key) in zip(axes.flat, panels, strict=False):
        label, unit, better = figure_info(key)
        names, medians, lows, highs, cols_ = [], [], [], [], []
        for i, system in enumerate(["postgres"] if scenario == "ceiling" else systems):
            entry = results["scenarios"][scenario].get(system, {}).get("figures", {}).get(key)
            if entry is None:
                continue
            names.append(system)
            medians.append(entry["median"])
            lows.append(entry["median"] - entry["min"])
            highs.append(entry["max"] - entry["median"])
            cols_.append("gray" if system == "postgres" else colors[i % len(colors)])
        ax.bar(range(len(names)), medians, yerr=[lows, highs], color=cols_, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        arrow = "higher is better" if better == "higher" else "lower is better"
        ax.set_title(f"{SCENARIO_TITLES[scenario]}:\n{label}", fontsize=8)
        ax.set_ylabel(f"{unit} ({arrow})", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        if medians and min(medians) > 0 and max(medians) / min(medians) > 50:
            ax.set_yscale("log")
        for x, v in enumerate(medians):
            ax.annotate(fmt(v), (x, v), ha="center", va="bottom", fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    meta = results["meta"]
    fig.suptitle(
        f"currant benchmarks ({meta['mode']}, median of {meta['runs']} runs, "
        f"bars: min-max; {meta['machine']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
