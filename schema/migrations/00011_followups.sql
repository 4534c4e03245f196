-- +goose Up
-- parent_id: the build a follow-up continues (POST /builds/{id}/followups).
-- cost_usd: what the agent reported spending (result.usage.cost_usd), kept
-- in a column so a project's month spend is one indexed sum.
-- waiting_reason now holds a schema.WaitingReason code (capacity,
-- project_busy, quota, project_provisioning); the prose is in the events.
ALTER TABLE builds
    ADD COLUMN parent_id uuid REFERENCES builds (id),
    ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0 CHECK (cost_usd >= 0);
CREATE INDEX builds_parent ON builds (parent_id, id) WHERE parent_id IS NOT NULL;
CREATE INDEX builds_project_spend ON builds (project_id, finished_at) WHERE cost_usd > 0;
UPDATE builds SET cost_usd = GREATEST((result -> 'usage' ->> 'cost_usd')::double precision, 0)
    WHERE jsonb_typeof(result -> 'usage' -> 'cost_usd') = 'number';
UPDATE builds SET waiting_reason = CASE
        WHEN waiting_reason LIKE 'waiting for capacity: the dispatcher%' THEN 'capacity'
        WHEN waiting_reason LIKE 'waiting for capacity: the project%' OR waiting_reason LIKE 'waiting for capacity: an older%' THEN 'project_busy'
        WHEN waiting_reason LIKE 'waiting for capacity: the namespace%' THEN 'quota'
        WHEN waiting_reason LIKE 'waiting for the project%' THEN 'project_provisioning'
        ELSE '' END
    WHERE waiting_reason <> '';

-- +goose Down
DROP INDEX builds_project_spend;
DROP INDEX builds_parent;
ALTER TABLE builds DROP COLUMN cost_usd, DROP COLUMN parent_id;
