-- +goose Up
-- A NOTIFY in a transaction takes a database-wide lock at commit, so every
-- notifying transaction commits one at a time. A build's first event (seq 1,
-- "pending") is written by the intake transaction, when nobody can be
-- following the build yet: it notifies no one, and intake commits stay
-- concurrent.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION kiln_notify_build_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT build_id, max(seq) AS seq FROM new_events GROUP BY build_id HAVING max(seq) > 1 LOOP
        PERFORM pg_notify('kiln_events', TG_TABLE_SCHEMA || ' ' || r.build_id || ' ' || r.seq);
    END LOOP;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION kiln_notify_build_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT build_id, max(seq) AS seq FROM new_events GROUP BY build_id LOOP
        PERFORM pg_notify('kiln_events', TG_TABLE_SCHEMA || ' ' || r.build_id || ' ' || r.seq);
    END LOOP;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
