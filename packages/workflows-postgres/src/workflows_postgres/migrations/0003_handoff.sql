-- Idle workers offer themselves: an enqueue that finds an offer for its queue inserts the job
-- already running under that worker and hands it over in the notification, so the worker
-- starts it without a claim round trip (the longest leg of pickup latency when idle).
--
-- An offer is taken by one enqueue (it deletes the row) and lapses at expires_at, which an idle
-- worker pushes forward on every poll: a paused worker stops getting jobs within seconds. The
-- worker's listening session holds the advisory lock lock_key: a worker whose connection or
-- process is gone holds nothing, and an enqueue that can take the lock hands nothing over.
CREATE TABLE {s}.worker_offers (
    worker_id  uuid PRIMARY KEY REFERENCES {s}.worker_heartbeats (worker_id) ON DELETE CASCADE,
    queues     text[] NOT NULL,
    lock_key   bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
