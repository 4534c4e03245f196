// Package lifecycle moves builds between statuses. Every status change goes
// through Transition, so the side effects of a terminal status (the callback
// job, in the same transaction) cannot be forgotten by one caller. It does not
// talk to Kubernetes.
package lifecycle

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
)

// Lifecycle changes build statuses.
type Lifecycle struct {
	River *river.Client[pgx.Tx]
	// OnTransition is told of every status change after its transaction
	// commits (TransitionNow) — metrics, wake-ups; may be nil. Changes made
	// with Transition inside a caller's transaction are reported by the
	// caller through Committed.
	OnTransition func(b *store.Build)
}

// Committed reports a change made with Transition once its transaction committed.
func (l *Lifecycle) Committed(b *store.Build) {
	if l.OnTransition != nil && b != nil {
		l.OnTransition(b)
	}
}

// Transition applies t to build id inside tx. When the build becomes terminal
// and has a callback_url, the callback delivery job is inserted in the same
// transaction (docs/design.md, invariant 6: at least once, with a stable
// delivery id).
func (l *Lifecycle) Transition(ctx context.Context, tx pgx.Tx, id string, t store.Transition) (*store.Build, error) {
	b, err := store.TransitionBuild(ctx, tx, id, t)
	if err != nil {
		return nil, err
	}
	if b.Status.Terminal() && b.Spec.CallbackURL != "" {
		did, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		if _, err := l.River.InsertTx(ctx, tx, queue.CallbackArgs{BuildID: b.ID, DeliveryID: did.String()}, nil); err != nil {
			return nil, fmt.Errorf("enqueueing callback of build %s: %w", b.ID, err)
		}
	}
	return b, nil
}

// TransitionNow is Transition in its own transaction.
func (l *Lifecycle) TransitionNow(ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}, id string, t store.Transition) (*store.Build, error) {
	var b *store.Build
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		b, err = l.Transition(ctx, tx, id, t)
		return err
	})
	if err == nil {
		l.Committed(b)
	}
	return b, err
}
