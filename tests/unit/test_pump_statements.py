"""``pump_jobs`` is ``pump`` without the CTEs for workflow steps: the parts they share must not
drift apart (a fix to how pump records an outcome must reach the statement most rounds run)."""

from __future__ import annotations

import re

from workflows_postgres.queries import statements

GUARD = "AND (e.parent_id IS NULL OR v.status = 'pending')"
EXCLUDE = ", p_exclude => ARRAY(SELECT r.workflow_id FROM r)"


def ctes(statement: str) -> dict[str, str]:
    """Each CTE's body by name, comments dropped and whitespace made single spaces."""
    text = " ".join(re.sub(r"--[^\n]*", "", statement).split())
    found: dict[str, str] = {}
    for match in re.finditer(r"(?:WITH|,) (\w+) AS \(", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        found.setdefault(match[1], text[match.end() : end - 1].strip())
    return found


def test_pump_jobs_shares_pumps_ctes_but_the_guard_and_the_steps() -> None:
    pump, jobs = ctes(statements()["pump"]), ctes(statements()["pump_jobs"])
    assert set(jobs) == {"v", "upd", "claimed", "notified", "announced"}
    assert {"steps", "r", "direct", "woken"} <= set(pump)
    assert jobs["v"] == pump["v"]
    assert GUARD in jobs["upd"]
    assert jobs["upd"].replace(GUARD + " ", "") == pump["upd"]
    assert jobs["claimed"] == pump["claimed"].replace(EXCLUDE, "")
    assert jobs["notified"] == pump["notified"]
    # $7 of pump (resume_sticky) is not pump_jobs's: its $8 is $7 there.
    assert jobs["announced"] == pump["announced"].replace("$8::bool", "$7::bool")
