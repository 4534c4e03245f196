-- +goose Up
-- A project is bring-your-own-pod (managed IS NULL, status 'ready' at once)
-- or managed: Kiln provisions its workspace from `managed` (repository,
-- workspace, add-ons — never a secret: credentials and secret_env values
-- live only in Kubernetes Secrets) step by step (project_steps).
-- 'deleted' rows are retired projects: the API answers 404 for them, their
-- builds' audit rows stay, and their name may be taken again.
ALTER TABLE projects
    ADD COLUMN status text NOT NULL DEFAULT 'ready'
        CHECK (status IN ('provisioning', 'ready', 'failed', 'deleting', 'deleted')),
    ADD COLUMN managed jsonb,
    ADD COLUMN addons jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN failed_step text NOT NULL DEFAULT '',
    ADD COLUMN provision_error text NOT NULL DEFAULT '',
    ADD COLUMN provision_started_at timestamptz,
    ADD COLUMN ready_at timestamptz,
    ADD COLUMN deleted_at timestamptz;

ALTER TABLE projects DROP CONSTRAINT projects_name_key;
CREATE UNIQUE INDEX projects_name_live ON projects (name) WHERE status <> 'deleted';

-- project_steps is a managed project's provisioning, one row a step, in order.
CREATE TABLE project_steps (
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'failed', 'rolling_back', 'rolled_back')),
    error       text NOT NULL DEFAULT '',
    attempts    integer NOT NULL DEFAULT 0,
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (project_id, seq),
    UNIQUE (project_id, name)
);

-- +goose Down
DROP TABLE project_steps;
DROP INDEX projects_name_live;
ALTER TABLE projects ADD CONSTRAINT projects_name_key UNIQUE (name);
ALTER TABLE projects DROP COLUMN status, DROP COLUMN managed, DROP COLUMN addons, DROP COLUMN failed_step,
    DROP COLUMN provision_error, DROP COLUMN provision_started_at, DROP COLUMN ready_at, DROP COLUMN deleted_at;
