-- +goose Up
-- Every insert into build_events wakes the dispatchers that follow the build:
-- one NOTIFY per build and statement on channel kiln_events, with payload
-- "<schema> <build id> <highest seq>". Notifications are only a wake-up;
-- listeners read the events themselves from build_events.
-- +goose StatementBegin
CREATE FUNCTION kiln_notify_build_events() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER build_events_notify AFTER INSERT ON build_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_notify_build_events();

-- callback_attempts records every attempt at delivering a build's callback.
-- A delivery (one terminal status) keeps its id across retries.
CREATE TABLE callback_attempts (
    delivery_id uuid NOT NULL,
    build_id    uuid NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    attempt     integer NOT NULL CHECK (attempt > 0),
    status_code integer NOT NULL DEFAULT 0, -- 0: no HTTP answer
    outcome     text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    error       text NOT NULL DEFAULT '',
    duration_ms integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_id, attempt)
);
CREATE INDEX callback_attempts_build ON callback_attempts (build_id, created_at);

-- +goose Down
DROP TABLE callback_attempts;
DROP TRIGGER build_events_notify ON build_events;
DROP FUNCTION kiln_notify_build_events();
