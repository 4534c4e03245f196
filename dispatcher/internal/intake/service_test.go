package intake

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// Every committer a test started is stopped and waited for by Stop.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewFillsDefaultsAndValidates(t *testing.T) {
	started, _, _ := setup(t)
	ok := Options{Store: started.Store, Lifecycle: started.Lifecycle}
	s, err := New(ok)
	require.NoError(t, err)
	assert.Equal(t, 4, s.committers)
	assert.Equal(t, 64, s.maxBatch)
	assert.NotNil(t, s.Templates, "the embedded catalog")
	assert.NotNil(t, s.logger)

	for name, edit := range map[string]func(*Options){
		"no Store":            func(o *Options) { o.Store = nil },
		"no Lifecycle":        func(o *Options) { o.Lifecycle = nil },
		"negative Committers": func(o *Options) { o.Committers = -1 },
		"negative MaxBatch":   func(o *Options) { o.MaxBatch = -1 },
	} {
		o := ok
		edit(&o)
		_, err := New(o)
		assert.Error(t, err, name)
	}
}

// Stop is safe without Start and twice; a stopped Service neither starts
// again nor accepts a build, and says so at once.
func TestStopWithoutStartAndTwice(t *testing.T) {
	s, _, admin := setup(t)
	ctx := context.Background()
	p, err := s.CreateProject(ctx, admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)
	s.Stop()
	s.Stop()
	_, err = s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
	require.ErrorIs(t, err, ErrNotRunning)
	require.ErrorIs(t, s.Start(ctx), ErrNotRunning)

	fresh, err := New(Options{Store: s.Store, Lifecycle: s.Lifecycle})
	require.NoError(t, err)
	_, err = fresh.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
	require.ErrorIs(t, err, ErrNotRunning, "before Start nobody would write it")
	fresh.Stop()
	fresh.Stop()
}

// Submissions queued when Stop is called are committed before Stop returns;
// one that cannot be queued any more, and any after, get ErrNotRunning.
// Nobody is left waiting.
func TestStopCommitsWhatIsQueued(t *testing.T) {
	s, db, admin := setup(t)
	ctx := context.Background()
	p, err := s.CreateProject(ctx, admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)
	s.Stop() // setup's Service; this test wants one committer and a short queue
	s, err = New(Options{Store: s.Store, Lifecycle: s.Lifecycle, Committers: 1, MaxBatch: 1})
	require.NoError(t, err)
	entered, release := make(chan struct{}), make(chan struct{})
	var first sync.Once
	s.testHookAfterJobInsert = func(context.Context) error {
		first.Do(func() { close(entered); <-release })
		return nil
	}
	require.NoError(t, s.Start(ctx))
	t.Cleanup(s.Stop)

	type answer struct {
		acc *Accepted
		err error
	}
	answers := make(chan answer, 10)
	submit := func() {
		acc, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
		answers <- answer{acc, err}
	}
	go submit()
	<-entered // the only committer holds the first build
	queued := cap(s.queue)
	for range queued {
		go submit()
	}
	require.Eventually(t, func() bool { return len(s.queue) == queued }, 10*time.Second, time.Millisecond)
	go submit() // finds the queue full (or, later, the Service stopping)

	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	require.Eventually(t, func() bool {
		_, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
		return assert.ObjectsAreEqual(ErrNotRunning, err)
	}, 10*time.Second, time.Millisecond, "once Stop began, a submission is refused at once")
	a := <-answers
	require.ErrorIs(t, a.err, ErrNotRunning, "the submission that could not be queued")
	select {
	case <-stopped:
		t.Fatal("Stop returned while a commit was in flight")
	default:
	}

	close(release)
	<-stopped
	for range 1 + queued {
		a := <-answers
		require.NoError(t, a.err)
		assert.Equal(t, schema.StatusPending, a.acc.Build.Status)
	}
	b, j, _ := counts(t, db)
	assert.Equal(t, [2]int{1 + queued, 1 + queued}, [2]int{b, j}, "each committed one with its River job")
}

// The committers are a fixed pool of Committers: no more commits run at once.
func TestCommittersAreAFixedPool(t *testing.T) {
	s, db, admin := setup(t)
	ctx := context.Background()
	p, err := s.CreateProject(ctx, admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)
	s.Stop()
	s, err = New(Options{Store: s.Store, Lifecycle: s.Lifecycle, Committers: 2, MaxBatch: 1})
	require.NoError(t, err)
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	s.testHookAfterJobInsert = func(context.Context) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return nil
	}
	require.NoError(t, s.Start(ctx))
	t.Cleanup(s.Stop)

	const n = 6
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
			assert.NoError(t, err)
		})
	}
	require.Eventually(t, func() bool { return inFlight.Load() == 2 && len(s.queue) == n-2 }, 10*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	assert.Equal(t, int32(2), most.Load())
	b, j, _ := counts(t, db)
	assert.Equal(t, [2]int{n, n}, [2]int{b, j})
}

type ctxKey struct{}

// Commits run under Start's context without its cancellation: ending the
// context Start was given does not fail the builds being written.
func TestCommitsOutliveStartContext(t *testing.T) {
	s, db, admin := setup(t)
	ctx := context.Background()
	p, err := s.CreateProject(ctx, admin, schema.ProjectInput{Name: "web"})
	require.NoError(t, err)
	s.Stop()
	s, err = New(Options{Store: s.Store, Lifecycle: s.Lifecycle})
	require.NoError(t, err)
	var seen atomic.Value
	s.testHookAfterJobInsert = func(ctx context.Context) error {
		seen.Store(ctx.Value(ctxKey{}))
		_, hasDeadline := ctx.Deadline()
		assert.True(t, hasDeadline, "each batch has its timeout")
		return nil
	}
	startCtx, cancel := context.WithCancel(context.WithValue(ctx, ctxKey{}, "from Start"))
	require.NoError(t, s.Start(startCtx))
	t.Cleanup(s.Stop)
	cancel()

	acc, err := s.SubmitBuild(ctx, admin, p, schema.BuildSpec{Prompt: "x"}, "")
	require.NoError(t, err)
	assert.Equal(t, "from Start", seen.Load())
	got, err := store.GetBuild(ctx, db.Pool, acc.Build.ID)
	require.NoError(t, err)
	assert.Equal(t, schema.StatusPending, got.Status)
}
