package store

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/schema"
)

// The per-build caps of what a runner may post, named in CapError.
const (
	CapEvents        = "events"         // events a runner posted
	CapEventBytes    = "event_bytes"    // bytes of their stored payloads
	CapArtifacts     = "artifacts"      // artifacts uploaded (distinct paths)
	CapArtifactBytes = "artifact_bytes" // bytes of their contents
)

// CapError is returned when a runner's post would take its build past one
// of its caps; nothing of the post was stored.
type CapError struct {
	Cap   string // CapEvents, CapEventBytes, CapArtifacts or CapArtifactBytes
	Limit int64  // the cap
	Have  int64  // what the build holds already
	Add   int64  // what the post would add
}

func (e *CapError) Error() string {
	return fmt.Sprintf("%s: the build holds %d of at most %d; this post adds %d", e.Cap, e.Have, e.Limit, e.Add)
}

// EventCaps bound what AppendBatch stores for one build; zero fields are no cap.
type EventCaps struct {
	MaxEvents int64 // runner events per build
	MaxBytes  int64 // bytes of their payloads per build
}

// ArtifactCaps bound what PutArtifact stores for one build; zero fields are no cap.
type ArtifactCaps struct {
	MaxArtifacts int64 // distinct paths per build
	MaxBytes     int64 // bytes of all contents per build
}

// RunnerToken is what the dispatcher knows about a presented runner token.
type RunnerToken struct {
	// Match: the token is build id's runner token.
	Match bool
	// Status is the build's status (empty when it does not exist).
	Status schema.Status
	// EndedBefore: the build ended (is terminal) more than the grace
	// RunnerTokenOf was given ago; its token no longer works.
	EndedBefore bool
}

// RunnerTokenOf checks hash against build id's runner token hash and
// reports whether the build ended more than grace ago. An unknown build is
// a RunnerToken without Match.
func RunnerTokenOf(ctx context.Context, db DB, id string, hash []byte, grace time.Duration) (RunnerToken, error) {
	var stored []byte
	var rt RunnerToken
	err := db.QueryRow(ctx, `SELECT runner_token_hash, status,
			status IN ('completed', 'failed', 'cancelled') AND finished_at IS NOT NULL
				AND finished_at < now() - $2 * interval '1 microsecond'
		FROM builds WHERE id = $1`, id, grace.Microseconds()).Scan(&stored, &rt.Status, &rt.EndedBefore)
	if errors.Is(err, pgx.ErrNoRows) {
		return RunnerToken{}, nil
	}
	if err != nil {
		return RunnerToken{}, err
	}
	rt.Match = len(stored) > 0 && subtle.ConstantTimeCompare(stored, hash) == 1
	return rt, nil
}

// EndedError is the ErrTerminal of a runner's post to a terminal build; it
// says the build's status.
type EndedError struct {
	BuildID string
	Status  schema.Status
}

func (e *EndedError) Error() string {
	return fmt.Sprintf("build %s is %s: %v", e.BuildID, e.Status, ErrTerminal)
}

// Is makes errors.Is(err, ErrTerminal) true.
func (e *EndedError) Is(target error) bool { return target == ErrTerminal }

// runnerCounts is a build's status and what its runner has posted.
type runnerCounts struct {
	status     schema.Status
	events     int64
	eventBytes int64
}

// lockActiveBuild locks build id's row for the rest of tx (a status change
// waits for it, so nothing is stored after the build's terminal status
// event) and returns its counters; a terminal build is an *EndedError.
func lockActiveBuild(ctx context.Context, db DB, id string) (runnerCounts, error) {
	var c runnerCounts
	err := db.QueryRow(ctx, `SELECT status, runner_events, runner_event_bytes FROM builds WHERE id = $1 FOR UPDATE`, id).
		Scan(&c.status, &c.events, &c.eventBytes)
	if err != nil {
		return c, notFound(err, "build "+id)
	}
	if c.status.Terminal() {
		return c, &EndedError{BuildID: id, Status: c.status}
	}
	return c, nil
}

// ResultDigest returns the digest SetResultDigest stored for build id (nil
// when none), with the build's status.
func ResultDigest(ctx context.Context, db DB, id string) ([]byte, schema.Status, error) {
	var digest []byte
	var st schema.Status
	err := db.QueryRow(ctx, `SELECT result_digest, status FROM builds WHERE id = $1`, id).Scan(&digest, &st)
	return digest, st, notFound(err, "build "+id)
}

// SetResultDigest records the digest of the runner result that settled build id.
func SetResultDigest(ctx context.Context, db DB, id string, digest []byte) error {
	_, err := db.Exec(ctx, `UPDATE builds SET result_digest = $2 WHERE id = $1`, id, digest)
	return err
}

// SetStoppedResult stores res as the result of build id if it has none,
// changing nothing else but the build's cost (lifecycle.KeepStoppedResult).
// It returns the build when the result was stored, nil when the build had
// one already.
func SetStoppedResult(ctx context.Context, db DB, id string, res schema.BuildResult) (*Build, error) {
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	b, err := scanBuild(db.QueryRow(ctx, `UPDATE builds SET result = $2, cost_usd = `+costOf("$2")+`
		WHERE id = $1 AND result IS NULL RETURNING `+buildColumns, id, raw))
	if errors.Is(err, pgx.ErrNoRows) {
		if _, gerr := GetBuild(ctx, db, id); gerr != nil {
			return nil, gerr
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keeping the stopped runner's result of build %s: %w", id, err)
	}
	return b, nil
}
