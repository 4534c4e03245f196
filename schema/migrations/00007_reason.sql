-- +goose Up
-- A failed or cancelled build carries a typed reason (schema.Reason), written
-- by whoever decided the outcome. Rows written before this migration are
-- classified once, here, from the messages the dispatcher wrote then; from now
-- on nothing reads a reason out of error text.
ALTER TABLE builds ADD COLUMN reason text NOT NULL DEFAULT '';

UPDATE builds SET reason = CASE
	WHEN status = 'cancelled' THEN 'cancelled'
	WHEN error LIKE 'job deleted%' THEN 'job_deleted'
	WHEN error LIKE 'timed out after%' THEN 'deadline'
	WHEN error LIKE 'out of memory%' THEN 'oom'
	WHEN error LIKE 'runner exited with code%' THEN 'pod_failed'
	WHEN error LIKE 'runner exited%' THEN 'runner_lost'
	WHEN error LIKE 'image pull failed%' THEN 'image_pull'
	WHEN error LIKE 'unschedulable%' THEN 'unschedulable'
	WHEN error LIKE 'the Job''s pod could not be created%' THEN 'pod_create'
	WHEN error LIKE 'template %' OR error LIKE 'rendering the Job%'
		OR error LIKE 'the Kubernetes API rejected the Job%' THEN 'invalid_job'
	WHEN result IS NOT NULL THEN 'runner_error'
	ELSE 'other' END
WHERE status IN ('failed', 'cancelled');

-- Failed and cancelled builds say why; completed and active ones carry none.
ALTER TABLE builds ADD CONSTRAINT builds_reason_terminal
	CHECK ((status IN ('failed', 'cancelled')) = (reason <> ''));

-- +goose Down
ALTER TABLE builds DROP COLUMN reason;
