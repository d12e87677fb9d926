"""One admission point: no SQL of the store makes an execution `running` except ``{s}.admit``.

The scanner is tests/admission_scan.py; the functions of a migrated database are scanned in
tests/integration/test_admission_db.py. Here: the scanner finds what it must and nothing else,
and the store's SQL files and Python strings (and schema.sql's function bodies) pass it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.admission_scan import (
    ADMISSION_POINTS,
    Finding,
    describe,
    running_transitions,
    scan_source_tree,
    unexpected,
)

ROOT = Path(__file__).resolve().parents[2]


def test_an_update_that_sets_running_is_found() -> None:
    (finding,) = running_transitions("UPDATE {s}.executions SET status = 'running' WHERE id = $1")
    assert (finding.kind, finding.line, finding.excerpt) == ("update", 1, "status = 'running'")


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO {s}.executions (id, status) VALUES ($1, 'running')",
        "INSERT INTO {s}.executions (id, status) VALUES ($1, 'pending'), ($2, 'running')",
        "INSERT INTO {s}.executions AS e (id, kind, status)\n"
        "SELECT $1, 'job', CASE WHEN h.worker_id IS NULL THEN 'pending' ELSE 'running' END\n"
        "FROM (SELECT 1) one LEFT JOIN offer h ON true",
        # No column list, or a shape not read column by column: any value counts.
        "INSERT INTO {s}.executions SELECT * FROM (VALUES ($1::uuid, 'running')) v",
        "INSERT INTO {s}.executions (id, status) SELECT id, 'pending' FROM a\n"
        "UNION ALL SELECT id, 'running' FROM b",
    ],
)
def test_an_insert_of_running_is_found(sql: str) -> None:
    assert [f.kind for f in running_transitions(sql)] == ["insert"]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE {s}.executions e SET lease = e.lease + 1, status = 'RUNNING' WHERE e.id = $1",
        "update {s}.executions set status = 'running'",
        'UPDATE "workflows".executions SET "status" = \'running\'',
        "UPDATE {s}.executions SET /* why */ status -- now\n = 'running' WHERE id = $1",
        # PUMP's sticky re-claim: the branch is taken for a waiting row.
        "UPDATE {s}.executions w\n"
        "SET status = CASE WHEN o.status <> 'waiting' THEN o.status\n"
        "                  WHEN r.direct THEN 'running' ELSE 'pending' END\n"
        "FROM r WHERE w.id = r.id",
        "UPDATE {s}.executions e SET status = CASE WHEN e.status = 'waiting' THEN 'pending'"
        " ELSE 'running' END",
        "UPDATE {s}.executions e SET status = COALESCE($2, 'running')",
        "UPDATE {s}.executions e SET status = (SELECT 'running')",
        "UPDATE {s}.executions SET (status, worker_id) = ('running', $2) WHERE id = $1",
        "UPDATE {s}.executions e SET status = v.s FROM (VALUES ('running')) v(s) WHERE e.id = $1",
        # Not a keep-running branch: an OR, or another row's status.
        "UPDATE {s}.executions e SET status = CASE WHEN e.status = 'running' OR e.kind = 'job'"
        " THEN 'running' END",
        "UPDATE {s}.executions e SET status = CASE WHEN p.status = 'running' THEN 'running' END\n"
        "FROM {s}.executions p WHERE p.id = e.parent_id",
        "INSERT INTO {s}.executions (id, status) VALUES ($1, 'pending')\n"
        "ON CONFLICT (id) DO UPDATE SET status = 'running'",
        "MERGE INTO {s}.executions e USING s ON s.id = e.id\n"
        "WHEN MATCHED THEN UPDATE SET status = 'running'",
        # PL/pgSQL: into the column of a record, or into a variable on its way to one.
        "BEGIN\n    new.status := 'running';\n    RETURN new;\nEND;",
        "DECLARE\n    next_status text := 'running';\nBEGIN\nEND;",
        "BEGIN\n    next_status := CASE WHEN eager THEN 'running' ELSE 'pending' END;\nEND;",
        "BEGIN\n    new.status = 'running';\nEND;",
        # The body of a function defined in a string is code, not a literal.
        "CREATE FUNCTION {s}.f() RETURNS void LANGUAGE sql AS $$\n"
        "    UPDATE {s}.executions SET status = 'running'\n$$;",
    ],
)
def test_a_write_of_running_is_found(sql: str) -> None:
    assert running_transitions(sql), "missed"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM {s}.executions WHERE status = 'running'",
        "UPDATE {s}.executions e SET worker_id = NULL WHERE e.status = 'running' AND e.lease = $2",
        "UPDATE {s}.executions SET status = 'pending' WHERE status = 'running'",
        "SELECT 1 FROM {s}.executions WHERE status IN ('pending', 'running')",
        "SELECT 1 FROM {s}.executions WHERE status <> 'running'",
        "SELECT 1 FROM {s}.executions WHERE 'running' = status",
        "UPDATE {s}.executions SET status = 'failed' WHERE status = ANY (ARRAY['pending', 'running'])",
        "UPDATE {s}.executions SET status = 'failed' WHERE status IS DISTINCT FROM 'running'",
        "UPDATE {s}.executions SET cancel_requested = true\n"
        "WHERE EXISTS (SELECT 1 FROM {s}.executions c WHERE c.status = 'running')",
        "UPDATE {s}.executions e SET finished_at = CASE WHEN e.status = 'running'"
        " AND e.kind <> 'workflow' THEN NULL ELSE now() END",
        "UPDATE {s}.executions SET status = CASE WHEN status = 'running' THEN 'pending'"
        " ELSE status END",
        "UPDATE {s}.executions SET status = CASE WHEN kind IN ('running') THEN 'failed' END",
        "SELECT CASE WHEN e.status = 'running' THEN 'busy' END FROM {s}.executions e",
        "SELECT count(*) FROM upd WHERE upd.status <> 'running'",
        "SELECT id FROM {s}.executions WHERE status = 'running' FOR UPDATE SKIP LOCKED",
        "SELECT id FROM {s}.executions e WHERE e.status = 'running' FOR UPDATE OF e",
        "INSERT INTO {s}.executions (id, status) SELECT id, 'pending' FROM x\n"
        "WHERE x.status = 'running'",
        # 'running' in a column that is not status.
        "INSERT INTO {s}.workflow_steps (workflow_id, seq, name) VALUES ($1, 1, 'running')",
        "UPDATE {s}.executions SET name = 'running'",
        # Comments and string literals are not SQL.
        "-- UPDATE {s}.executions SET status = 'running'\nSELECT 1",
        "/* UPDATE {s}.executions SET status = 'running' /* nested */ */ SELECT 1",
        "SELECT 'UPDATE {s}.executions SET status = ''running'''",
        # PL/pgSQL: a test, not an assignment.
        "BEGIN\n    IF wf.status = 'running' THEN\n        RETURN 1;\n    END IF;\nEND;",
        "BEGIN\n    busy := e.status = 'running';\nEND;",
        "BEGIN\n    x := CASE WHEN y THEN e.status = 'running' ELSE false END;\nEND;",
        "SELECT make_interval(secs := 1), f(p_status := 'running')",
    ],
)
def test_a_comparison_with_running_is_not_a_write(sql: str) -> None:
    assert running_transitions(sql) == []


@pytest.mark.parametrize(
    "sql",
    [
        # CANCEL_TREE: a running activity stays running until its worker stops it.
        "UPDATE {s}.executions e\n"
        "SET status = CASE WHEN e.status = 'running' AND e.kind <> 'workflow' THEN 'running'\n"
        "                  WHEN e.id = $1::uuid THEN $2\n"
        "                  ELSE 'cancelled' END\n"
        "FROM tree WHERE e.id = tree.id",
        "UPDATE {s}.executions SET status = CASE WHEN kind = 'job' AND status = 'running'"
        " THEN 'running' ELSE 'cancelled' END",
        "UPDATE {s}.executions e SET status = CASE e.status WHEN 'running' THEN 'running'"
        " ELSE 'cancelled' END",
        # As PostgreSQL prints it back.
        "UPDATE {s}.executions e SET status = CASE WHEN ((e.status = 'running'::text)"
        " AND (e.kind <> 'workflow'::text)) THEN 'running'::text ELSE 'cancelled'::text END",
    ],
)
def test_a_branch_that_keeps_a_running_row_running_is_not_a_transition(sql: str) -> None:
    assert running_transitions(sql) == []


def test_findings_name_their_source_statement_and_line(tmp_path: Path) -> None:
    package = tmp_path / "packages" / "store" / "src" / "store"
    (package / "sql").mkdir(parents=True)
    (package / "migrations").mkdir()
    (package / "queries.py").write_text(
        '"""Docstrings say UPDATE t SET status = \'running\' and run nothing."""\n'
        "\n"
        'CLAIM = """\n'
        "UPDATE {s}.executions\n"
        "SET status = 'running'\n"
        '"""\n'
        "\n"
        "def pump() -> str:\n"
        "    return \"INSERT INTO {s}.executions (status) VALUES ('running')\"\n",
        encoding="utf-8",
    )
    (package / "sql" / "worker.sql").write_text(
        "-- The worker's statements.\n"
        "\n"
        "-- name: release\n"
        "UPDATE {s}.executions SET status = 'pending' WHERE status = 'running'\n"
        "\n"
        "-- name: sticky\n"
        "-- Why it is so.\n"
        "UPDATE {s}.executions\n"
        "SET status = 'running'\n",
        encoding="utf-8",
    )
    (package / "schema.sql").write_text(
        "CREATE FUNCTION {s}.admit(p uuid) RETURNS void\n"
        "    LANGUAGE sql\n"
        "    AS $$\n"
        "    UPDATE {s}.executions SET status = 'running' WHERE id = p\n"
        "$$;\n"
        "CREATE FUNCTION {s}.eager() RETURNS void\n"
        "    LANGUAGE plpgsql\n"
        "    AS $$\n"
        "BEGIN\n"
        "    INSERT INTO {s}.executions (status) VALUES ('running');\n"
        "END;\n"
        "$$;\n",
        encoding="utf-8",
    )
    # History: what the migrations' functions are now is read from schema.sql or the database.
    (package / "migrations" / "0001_initial.sql").write_text(
        "UPDATE {s}.executions SET status = 'running';\n", encoding="utf-8"
    )
    found = [(f.source, f.name, f.line) for f in scan_source_tree(tmp_path)]
    prefix = "packages/store/src/store/"
    assert found == [
        (prefix + "queries.py", "CLAIM", 5),
        (prefix + "queries.py", "pump", 9),
        (prefix + "schema.sql", "function admit", 4),
        (prefix + "schema.sql", "function eager", 10),
        (prefix + "sql/worker.sql", "sticky", 9),
    ]
    assert [(f.source, f.name) for f in unexpected(scan_source_tree(tmp_path))] == [
        (prefix + "queries.py", "CLAIM"),
        (prefix + "queries.py", "pump"),
        (prefix + "schema.sql", "function eager"),
        (prefix + "sql/worker.sql", "sticky"),
    ]


def test_only_admit_writes_running_in_the_store_sql_and_python_strings() -> None:
    outside = unexpected(scan_source_tree(ROOT))
    if outside:
        pytest.fail(_explain(outside), pytrace=False)


def _explain(findings: list[Finding]) -> str:
    return (
        f"{len(findings)} write(s) of 'running' outside the admission point "
        f"({', '.join(sorted(ADMISSION_POINTS))}): make the execution running through "
        "{s}.admit instead (or, for a new admission point, see ADMISSION_POINTS in "
        "tests/admission_scan.py):\n" + describe(findings)
    )
