-- +goose Up
CREATE TABLE projects (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    namespace           text NOT NULL,
    pod_name            text NOT NULL DEFAULT '',
    pod_selector        text NOT NULL DEFAULT '',
    container           text NOT NULL DEFAULT '',
    workdir             text NOT NULL,
    git_remote          text NOT NULL,
    git_branch          text NOT NULL,
    commit_author_name  text NOT NULL,
    commit_author_email text NOT NULL,
    max_concurrent      integer NOT NULL DEFAULT 1 CHECK (max_concurrent > 0),
    callback_secret     text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);

-- builds is the build audit trail: one row a build, updated as it moves.
CREATE TABLE builds (
    id                uuid PRIMARY KEY, -- UUIDv7: ordered by creation
    project_id        uuid NOT NULL REFERENCES projects (id),
    spec              jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    result            jsonb,
    error             text NOT NULL DEFAULT '',
    attempt           integer NOT NULL DEFAULT 0,
    job_name          text NOT NULL DEFAULT '',
    river_job_id      bigint,
    requested_by      text NOT NULL,
    runner_token_hash bytea,
    event_seq         bigint NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
CREATE INDEX builds_project_id_id ON builds (project_id, id DESC);
CREATE INDEX builds_project_status_id ON builds (project_id, status, id DESC);
CREATE INDEX builds_active ON builds (status, id) WHERE status IN ('pending', 'running');

CREATE TABLE build_events (
    build_id   uuid NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    type       text NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (build_id, seq)
);

-- api_tokens keeps only a SHA-256 of each token; the token itself is shown once.
CREATE TABLE api_tokens (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    admin      boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE api_token_projects (
    token_id   uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    PRIMARY KEY (token_id, project_id)
);

-- idempotency_keys maps a client's Idempotency-Key (scoped to its token) to the
-- build it created and a hash of the request that created it.
CREATE TABLE idempotency_keys (
    token_id     uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    build_id     uuid NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, key)
);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE api_token_projects;
DROP TABLE api_tokens;
DROP TABLE build_events;
DROP TABLE builds;
DROP TABLE projects;
