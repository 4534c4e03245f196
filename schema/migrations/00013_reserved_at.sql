-- +goose Up
-- reserved_at: when an admission round gave a pending build its launch slot
-- (cleared when the reservation is given back): with started_at it times
-- admission → Job created, and it orders admissions in time as admitted_seq
-- orders them in sequence.
ALTER TABLE builds ADD COLUMN reserved_at timestamptz;

-- +goose Down
ALTER TABLE builds DROP COLUMN reserved_at;
