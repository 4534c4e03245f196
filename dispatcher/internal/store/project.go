package store

import (
	"context"
	"fmt"

	"github.com/kilnbuild/kiln/schema"
)

const projectColumns = `id, name, namespace, pod_name, pod_selector, container, workdir, git_remote,
	git_branch, commit_author_name, commit_author_email, max_concurrent, created_at`

func scanProject(row interface{ Scan(...any) error }) (*schema.Project, error) {
	var p schema.Project
	err := row.Scan(&p.ID, &p.Name, &p.Namespace, &p.PodName, &p.PodSelector, &p.Container, &p.Workdir,
		&p.GitRemote, &p.GitBranch, &p.AuthorName, &p.AuthorEmail, &p.MaxConcurrent, &p.CreatedAt)
	return &p, err
}

// CreateProject inserts p (ID, CallbackSecret and the target already filled in)
// and sets its CreatedAt. A taken name returns ErrConflict.
func CreateProject(ctx context.Context, db DB, p *schema.Project) error {
	err := db.QueryRow(ctx, `INSERT INTO projects (id, name, namespace, pod_name, pod_selector, container,
		workdir, git_remote, git_branch, commit_author_name, commit_author_email, max_concurrent, callback_secret)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING created_at`,
		p.ID, p.Name, p.Namespace, p.PodName, p.PodSelector, p.Container, p.Workdir, p.GitRemote,
		p.GitBranch, p.AuthorName, p.AuthorEmail, p.MaxConcurrent, p.CallbackSecret).Scan(&p.CreatedAt)
	if isUniqueViolation(err) {
		return fmt.Errorf("project %q: %w", p.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("inserting project %q: %w", p.Name, err)
	}
	return nil
}

// GetProject returns the project with id.
func GetProject(ctx context.Context, db DB, id string) (*schema.Project, error) {
	p, err := scanProject(db.QueryRow(ctx, `SELECT `+projectColumns+` FROM projects WHERE id = $1`, id))
	return p, notFound(err, "project "+id)
}

// GetProjectByName returns the project called name.
func GetProjectByName(ctx context.Context, db DB, name string) (*schema.Project, error) {
	p, err := scanProject(db.QueryRow(ctx, `SELECT `+projectColumns+` FROM projects WHERE name = $1`, name))
	return p, notFound(err, "project "+name)
}

// ProjectCallbackSecret returns the secret a project's callbacks are signed with.
func ProjectCallbackSecret(ctx context.Context, db DB, id string) (string, error) {
	var s string
	err := db.QueryRow(ctx, `SELECT callback_secret FROM projects WHERE id = $1`, id).Scan(&s)
	return s, notFound(err, "project "+id)
}

// ListProjects returns projects ordered by name; only those in ids unless ids is nil.
func ListProjects(ctx context.Context, db DB, ids []string) ([]*schema.Project, error) {
	q := `SELECT ` + projectColumns + ` FROM projects`
	args := []any{}
	if ids != nil {
		q += ` WHERE id = ANY($1::uuid[])`
		args = append(args, ids)
	}
	rows, err := db.Query(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("listing projects: %w", err)
	}
	defer rows.Close()
	out := []*schema.Project{}
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
