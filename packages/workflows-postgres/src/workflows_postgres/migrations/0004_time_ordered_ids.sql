-- Execution ids ordered by creation time (UUID version 7: 48 bits of Unix milliseconds, then
-- random bits): a queue's oldest rows, which claims take first, sit together in the primary
-- key instead of on random pages, so a claim on a large backlog touches a few index pages, not
-- one per row.
CREATE FUNCTION {s}.new_id() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(
                        int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                        FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
