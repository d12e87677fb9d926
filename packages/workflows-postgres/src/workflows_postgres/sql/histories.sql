-- A workflow's history as `workflows history export` writes it (see workflows/testing/
-- histories.py and docs/history-format.md). Read-only, run through the stores' control().

-- name: history_export
-- One workflow ($1) with its steps and the signals it received, as one row: one statement
-- reads one snapshot, so the steps are exactly those its status was written with (a worker
-- writes an activation's steps and the status it leads to in one transaction). Walks the
-- executions primary key, workflow_steps_pkey and workflow_signals_workflow. Step results stay
-- json, not jsonb, embedded as stored: replay must hand the code the very text it was handed
-- (key order, a float written 1e16). Times are UTC text; replay ignores them.
SELECT e.id::text AS id, e.kind, e.name, e.queue, e.status, e.version, e.attempts,
       e.args::text AS args, e.result::text AS result, e.error::text AS error,
       e.parent_id::text AS parent_id, e.created_at, e.started_at, e.finished_at,
       now() AS exported_at,
       (SELECT json_agg(json_build_object(
                   'seq', st.seq, 'kind', st.kind, 'name', st.name, 'status', st.status,
                   'result', st.result, 'error', st.error, 'delivered_in', st.delivered_in,
                   'execution_id', st.execution_id,
                   'scheduled_at', to_char(st.created_at AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
                   'resolved_at', to_char(st.resolved_at AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
                   ORDER BY st.seq)
        FROM {s}.workflow_steps st
        WHERE st.workflow_id = e.id)::text AS steps,
       (SELECT json_agg(json_build_object(
                   'name', sg.name, 'payload', sg.payload, 'consumed_seq', sg.consumed_seq,
                   'received_at', to_char(sg.created_at AT TIME ZONE 'UTC',
                                          'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))
                   ORDER BY sg.id)
        FROM {s}.workflow_signals sg
        WHERE sg.workflow_id = e.id)::text AS signals
FROM {s}.executions e
WHERE e.id = $1::text::uuid
