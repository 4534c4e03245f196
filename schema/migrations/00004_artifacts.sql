-- +goose Up
-- build_artifacts keeps the files a build's runner uploaded (bounded in size
-- by the dispatcher), downloadable with the bot's token.
CREATE TABLE build_artifacts (
    build_id   uuid NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    path       text NOT NULL,
    size       bigint NOT NULL,
    sha256     text NOT NULL,
    content    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (build_id, path)
);

-- +goose Down
DROP TABLE build_artifacts;
