"""One scenario of one system, all its runs, in a process of its own.

``python -m benchmarks.runner SYSTEM SCENARIO ADMIN_DSN OUT_JSON RUNS QUICK OPTIONS_JSON``
writes ``{"runs": [...], "notes": {...}}`` or ``{"error": ..., "n/a": bool}`` to OUT_JSON.
A peer that is missing or broken thus costs its own figures, never the whole benchmark.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import Marks, NotSupported
from benchmarks.worker import module_of


async def run(
    system: str, scenario: str, admin_dsn: str, runs: int, quick: bool, options: dict[str, Any]
) -> dict[str, Any]:
    from benchmarks import scenarios

    module = importlib.import_module(module_of(system))
    marks = await Marks().open()
    ctx = scenarios.Context(
        system=system,
        scenario=scenario,
        system_cls=module.SYSTEM,
        options=options,
        admin_dsn=admin_dsn,
        runs=runs,
        sizes=scenarios.QUICK if quick else scenarios.FULL,
        marks=marks,
    )
    try:
        figures = await scenarios.SCENARIOS[scenario](ctx)
    finally:
        marks.close()
        await ctx.close()
    return {"runs": figures, "notes": ctx.notes}


def main() -> None:
    system, scenario, admin_dsn, out, runs, quick, options = sys.argv[1:8]
    try:
        result = asyncio.run(
            run(system, scenario, admin_dsn, int(runs), quick == "1", json.loads(options))
        )
    except NotSupported as exc:
        result = {"error": str(exc), "n/a": True}
    except BaseException as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}".strip()[:4000]}
    Path(out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
