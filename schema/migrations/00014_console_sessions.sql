-- +goose Up
-- console_sessions: a browser's sign-in to the web console, made from an API
-- token at /ui/login. Only a SHA-256 of the session id (the cookie) is kept;
-- the session acts as its token, ends with it (revoked: refused; deleted:
-- gone with it) and at expires_at. csrf is the token the console's forms carry.
CREATE TABLE console_sessions (
    id_hash    bytea PRIMARY KEY,
    token_id   uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
CREATE INDEX console_sessions_token ON console_sessions (token_id);

-- +goose Down
DROP TABLE console_sessions;
