-- +goose Up
-- admitted_seq: when a build was admitted (given a launch slot), and when a
-- project last had a build admitted, as a number from project_admissions
-- (a sequence, so admissions in one round are ordered too: within a project
-- the numbers follow the builds' ids, FIFO). Admission rounds (dispatcher/internal/store/admit.go) serve
-- the least recently admitted project first among those with as few builds
-- in flight: round-robin across projects.
CREATE SEQUENCE project_admissions;
ALTER TABLE projects ADD COLUMN admitted_seq bigint;
ALTER TABLE builds ADD COLUMN admitted_seq bigint;

-- +goose Down
ALTER TABLE builds DROP COLUMN admitted_seq;
ALTER TABLE projects DROP COLUMN admitted_seq;
DROP SEQUENCE project_admissions;
