package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

func runningBuild(t *testing.T, db *pgtest.DB, projectID string, hash []byte) string {
	t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7()).String()
	_, err := store.InsertBuild(ctx, db.Pool, store.NewBuild{ID: id, ProjectID: projectID, Spec: schema.BuildSpec{Prompt: "x"}})
	require.NoError(t, err)
	require.NoError(t, store.SetRunnerTokenHash(ctx, db.Pool, id, hash))
	_, err = store.TransitionBuild(ctx, db.Pool, id, store.Transition{To: schema.StatusRunning, JobName: "j"})
	require.NoError(t, err)
	return id
}

// A batch racing the build's end is stored before the terminal status
// event, or not at all (ErrTerminal): nothing follows the end.
func TestAppendBatchRacesTheEnd(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	p := apptest.Project(t, db.Pool, "race")
	ev, err := schema.NewEventInput(time.Now(), schema.AgentTextPayload{Text: "x"})
	require.NoError(t, err)
	for range 10 {
		id := runningBuild(t, db, p.ID, []byte("h"))
		var wg sync.WaitGroup
		var refused bool
		wg.Go(func() {
			for n := int64(1); ; n++ {
				err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
					_, err := store.AppendBatch(ctx, tx, id, n, []schema.EventInput{ev, ev}, store.EventCaps{})
					return err
				})
				if err != nil {
					var ended *store.EndedError
					refused = errors.As(err, &ended) && errors.Is(err, store.ErrTerminal) && ended.Status == schema.StatusCompleted
					return
				}
			}
		})
		time.Sleep(5 * time.Millisecond)
		_, err := store.TransitionBuild(ctx, db.Pool, id, store.Transition{To: schema.StatusCompleted})
		require.NoError(t, err)
		wg.Wait()
		require.True(t, refused, "the batch after the end is refused as ended")
		evs, err := store.ListEvents(ctx, db.Pool, id, 0, 100000)
		require.NoError(t, err)
		last, ok := schema.PayloadAs[schema.StatusPayload](evs[len(evs)-1])
		require.True(t, ok && last.Status == schema.StatusCompleted, "the terminal status event is the last of %d", len(evs))
	}
}

func TestRunnerTokenOf(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	p := apptest.Project(t, db.Pool, "tok")
	id := runningBuild(t, db, p.ID, []byte("right"))

	rt, err := store.RunnerTokenOf(ctx, db.Pool, id, []byte("right"), time.Minute)
	require.NoError(t, err)
	assert.Equal(t, store.RunnerToken{Match: true, Status: schema.StatusRunning}, rt)
	rt, err = store.RunnerTokenOf(ctx, db.Pool, id, []byte("wrong"), time.Minute)
	require.NoError(t, err)
	assert.False(t, rt.Match)
	rt, err = store.RunnerTokenOf(ctx, db.Pool, uuid.NewString(), []byte("right"), time.Minute)
	require.NoError(t, err)
	assert.Equal(t, store.RunnerToken{}, rt, "an unknown build")

	_, err = store.TransitionBuild(ctx, db.Pool, id, store.Transition{To: schema.StatusFailed, Reason: schema.ReasonRunnerError, Error: "x"})
	require.NoError(t, err)
	rt, err = store.RunnerTokenOf(ctx, db.Pool, id, []byte("right"), time.Minute)
	require.NoError(t, err)
	assert.Equal(t, store.RunnerToken{Match: true, Status: schema.StatusFailed}, rt, "within the grace")
	_, err = db.Pool.Exec(ctx, `UPDATE builds SET finished_at = now() - interval '61 seconds' WHERE id = $1`, id)
	require.NoError(t, err)
	rt, err = store.RunnerTokenOf(ctx, db.Pool, id, []byte("right"), time.Minute)
	require.NoError(t, err)
	assert.Equal(t, store.RunnerToken{Match: true, Status: schema.StatusFailed, EndedBefore: true}, rt)
	rt, err = store.RunnerTokenOf(ctx, db.Pool, id, []byte("right"), 0)
	require.NoError(t, err)
	assert.True(t, rt.Match, "RunnerTokenOf says whose token it is, whatever the status")
}
