package intake

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Group commit: submissions that arrive while a transaction is in flight are
// written together in the next one — their River jobs with InsertManyTx,
// their audit rows with one statement — so a busy dispatcher pays one commit
// and a few round trips for many builds. Every build's row and job still
// share a transaction (docs/design.md, invariant 1). Nothing waits for
// company: a batch is whatever is queued when a committer is free. The
// committers are a fixed pool, running from Start to Stop, so a queued
// submission always has one coming for it. Submissions with an
// Idempotency-Key take part too: the batch claims their keys first, in one
// statement, and writes builds only for the keys it won; the others are
// replays, answered after the commit from the key's record.

type submission struct {
	who       *auth.Principal
	projectID string
	parentID  string // the build a follow-up continues; "" for a build
	spec      schema.BuildSpec
	key       string // Idempotency-Key; "" for none
	hash      []byte // of the request, for a key
	done      chan submitted
}

type submitted struct {
	build *store.Build
	err   error
}

// submitBatched queues one submission for the next group commit.
// It returns errReplay when the submission's Idempotency-Key was already bound.
func (s *Service) submitBatched(ctx context.Context, who *auth.Principal, projectID, parentID string, spec schema.BuildSpec, key string, hash []byte) (*store.Build, error) {
	sub := &submission{who: who, projectID: projectID, parentID: parentID, spec: spec, key: key, hash: hash,
		done: make(chan submitted, 1)}
	if err := s.enqueue(ctx, sub); err != nil {
		return nil, err
	}
	select {
	case r := <-sub.done:
		return r.build, r.err
	case <-ctx.Done():
		// The build may still be written; the client retries with an Idempotency-Key.
		return nil, ctx.Err()
	}
}

// enqueue hands sub to the committers. Once it returns nil, sub is answered:
// Stop lets the committers drain the queue before they return.
func (s *Service) enqueue(ctx context.Context, sub *submission) error {
	s.mu.RLock()
	if !s.started || s.stopped {
		s.mu.RUnlock()
		return ErrNotRunning
	}
	s.senders.Add(1)
	s.mu.RUnlock()
	defer s.senders.Done()
	select {
	case s.queue <- sub:
		return nil
	case <-s.stopping:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitLoop writes queued submissions, as many as are waiting (up to
// maxBatch) in each transaction, until Stop closes the queue and it is empty.
func (s *Service) commitLoop() {
	for first := range s.queue {
		batch := []*submission{first}
	fill:
		for len(batch) < s.maxBatch {
			select {
			case sub, ok := <-s.queue:
				if !ok {
					break fill
				}
				batch = append(batch, sub)
			default:
				break fill
			}
		}
		s.commitBatch(batch)
	}
}

func (s *Service) commitBatch(batch []*submission) {
	ctx, cancel := context.WithTimeout(s.life, commitTimeout)
	defer cancel()
	builds, err := s.insertMany(ctx, batch)
	if err != nil && len(batch) > 1 && !store.IsUnavailable(err) {
		// One bad submission (an unknown project) must not fail the others.
		// (An unreachable database fails them all at once: no point trying
		// each.)
		s.logger.Debug("group commit failed; writing its submissions one by one", "submissions", len(batch), "error", err)
		for _, sub := range batch {
			s.commitBatch([]*submission{sub})
		}
		return
	}
	for i, sub := range batch {
		switch {
		case err != nil:
			sub.done <- submitted{err: err}
		case builds[i] == nil:
			sub.done <- submitted{err: errReplay}
		default:
			sub.done <- submitted{build: builds[i]}
		}
	}
}

// insertMany writes the batch in one transaction and returns each
// submission's build, or nil for one whose Idempotency-Key was already bound.
func (s *Service) insertMany(ctx context.Context, batch []*submission) ([]*store.Build, error) {
	ids := make([]string, len(batch))
	var claims []store.KeyClaim
	var claimed []int // batch index of each claim
	for i, sub := range batch {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		ids[i] = id.String()
		if sub.key != "" {
			claims = append(claims, store.KeyClaim{TokenID: sub.who.TokenID, Key: sub.key, RequestHash: sub.hash, BuildID: ids[i]})
			claimed = append(claimed, i)
		}
	}
	var out []*store.Build
	err := s.Store.InTx(ctx, func(tx pgx.Tx) error {
		replay := make([]bool, len(batch)) // its key was bound already
		if len(claims) > 0 {
			won, err := store.ClaimIdempotencyKeys(ctx, tx, claims)
			if err != nil {
				return fmt.Errorf("claiming %d idempotency keys: %w", len(claims), err)
			}
			for j, w := range won {
				replay[claimed[j]] = !w
			}
		}
		var nbs []store.NewBuild
		var at []int // batch index of each build written
		for i, sub := range batch {
			if replay[i] {
				continue
			}
			nbs = append(nbs, store.NewBuild{ID: ids[i], ProjectID: sub.projectID, Spec: sub.spec, RequestedBy: sub.who.Name,
				ParentID: sub.parentID})
			at = append(at, i)
		}
		out = make([]*store.Build, len(batch))
		if len(nbs) == 0 {
			return nil // replays only
		}
		builds, err := s.Lifecycle.AcceptTx(ctx, tx, nbs, s.testHookAfterJobInsert)
		if err != nil {
			return err
		}
		for k, b := range builds {
			b.ParentID = nbs[k].ParentID
			out[at[k]] = b
		}
		return nil
	})
	if err == nil {
		s.Lifecycle.Committed(out...)
	}
	return out, err
}
