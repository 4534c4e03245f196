-- +goose Up
-- runner_batches records which event batches a build's runner has posted, so
-- a retried batch is stored once.
CREATE TABLE runner_batches (
    build_id   uuid NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    batch      bigint NOT NULL,
    events     integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (build_id, batch)
);

-- waiting_reason is why a pending build has not launched yet (capacity,
-- quota); the launcher writes an event only when it changes.
ALTER TABLE builds ADD COLUMN waiting_reason text NOT NULL DEFAULT '';

CREATE INDEX builds_reserved ON builds (project_id) WHERE status = 'pending' AND job_name <> '';

-- +goose Down
DROP INDEX builds_reserved;
ALTER TABLE builds DROP COLUMN waiting_reason;
DROP TABLE runner_batches;
