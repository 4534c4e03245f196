package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/queue"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// launches records the builds handed to it and answers with err.
type launches struct {
	got []string
	err error
}

func (l *launches) Launch(_ context.Context, b *store.Build) error {
	l.got = append(l.got, b.ID)
	return l.err
}

func job(id string) *river.Job[queue.DispatchArgs] {
	return &river.Job[queue.DispatchArgs]{JobRow: &rivertype.JobRow{}, Args: queue.DispatchArgs{BuildID: id}}
}

// The dispatch worker's decisions: a build without an audit row is
// cancelled (it cannot be launched), one no longer pending is done, a
// pending one goes to the launcher, whose answer (a snooze, an error) is
// River's; without a launcher the job waits.
func TestDispatchWorker(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	p := apptest.Project(t, db.Pool, "web")
	newBuild := func() string {
		id := uuid.Must(uuid.NewV7()).String()
		_, err := store.InsertBuild(ctx, db.Pool, store.NewBuild{ID: id, ProjectID: p.ID,
			Spec: schema.BuildSpec{Prompt: "p"}, RequestedBy: "test"})
		require.NoError(t, err)
		return id
	}
	pending := newBuild()
	cancelled := newBuild()
	_, err := store.TransitionBuild(ctx, db.Pool, cancelled, store.Transition{To: schema.StatusCancelled, Reason: schema.ReasonCancelled})
	require.NoError(t, err)

	l := &launches{}
	w := queue.NewDispatchWorker(db.Pool, l)
	var cancel *river.JobCancelError
	require.ErrorAs(t, w.Work(ctx, job(uuid.Must(uuid.NewV7()).String())), &cancel, "no audit row")
	require.NoError(t, w.Work(ctx, job(cancelled)), "not pending: nothing to do")
	require.NoError(t, w.Work(ctx, job(pending)))
	assert.Equal(t, []string{pending}, l.got, "only the pending build is launched")

	l.err = river.JobSnooze(2 * time.Second)
	var snooze *river.JobSnoozeError
	require.ErrorAs(t, w.Work(ctx, job(pending)), &snooze, "the launcher's snooze is River's")
	l.err = errors.New("apiserver down")
	require.ErrorContains(t, w.Work(ctx, job(pending)), "apiserver down", "an error is retried by River")

	require.ErrorAs(t, queue.NewDispatchWorker(db.Pool, nil).Work(ctx, job(pending)), &snooze, "no cluster: the job waits")
}

// Without workers a client only inserts: it cannot be started, and its
// inserts land in River's table for a working client to run.
func TestInsertOnlyClient(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	ctx := context.Background()
	c, err := queue.NewClient(db.Pool, queue.Options{Schema: db.Schema})
	require.NoError(t, err)
	require.Error(t, c.Start(ctx), "an insert-only client runs nothing")
	res, err := c.Insert(ctx, queue.DispatchArgs{BuildID: "b"}, nil)
	require.NoError(t, err)
	assert.Equal(t, queue.QueueDispatch, res.Job.Queue)
	assert.Equal(t, 25, res.Job.MaxAttempts)
	res, err = c.Insert(ctx, queue.CallbackArgs{BuildID: "b", DeliveryID: "d"}, nil)
	require.NoError(t, err)
	assert.Equal(t, queue.QueueCallbacks, res.Job.Queue)
}
