-- +goose Up
-- api_tokens.last_used_at is when a dispatcher last looked the token up (at
-- most once a minute; a cached token is looked up again once per auth cache
-- TTL), for `dispatcher token list`. NULL: not used since this column exists.
ALTER TABLE api_tokens ADD COLUMN last_used_at timestamptz;

-- +goose Down
ALTER TABLE api_tokens DROP COLUMN last_used_at;
