-- +goose Up
-- What a build's runner has posted, counted in the same UPDATE that numbers
-- its events, so the runner protocol's per-build caps (events, event bytes)
-- cost no extra query; artifacts are counted from build_artifacts. And the
-- SHA-256 of the result that settled the build, so a runner retrying its own
-- accepted result (the answer was lost) is told it was accepted.
ALTER TABLE builds
    ADD COLUMN runner_events      bigint NOT NULL DEFAULT 0,
    ADD COLUMN runner_event_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN result_digest      bytea;

-- +goose Down
ALTER TABLE builds
    DROP COLUMN runner_events,
    DROP COLUMN runner_event_bytes,
    DROP COLUMN result_digest;
