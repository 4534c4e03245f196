-- +goose Up
-- Keyed submissions share group commits with the others: a batch claims its
-- Idempotency-Keys first, and writes builds (and River jobs) only for the
-- keys it won. The key's build row comes later in the same transaction, so
-- the foreign key is checked at commit.
ALTER TABLE idempotency_keys ALTER CONSTRAINT idempotency_keys_build_id_fkey DEFERRABLE INITIALLY DEFERRED;

-- +goose Down
ALTER TABLE idempotency_keys ALTER CONSTRAINT idempotency_keys_build_id_fkey NOT DEFERRABLE;
