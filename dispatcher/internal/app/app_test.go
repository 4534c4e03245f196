package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/events"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
)

// TestMain checks for leaks as apptest.VerifyNoLeaks does; childproc's
// forking thread (kubebox's, in the shutdown test) lives as long as the
// process by design.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("github.com/kilnbuild/kiln/tests/childproc.Start.func1.1"))
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := app.New(app.Options{})
	require.ErrorContains(t, err, "Pool is required")
	db := pgtest.New(t)
	_, err = app.New(app.Options{Pool: db.Pool, Schema: db.Schema, Workers: -1})
	require.ErrorContains(t, err, "Workers")
}

// Stop is safe without Start and twice; Start twice is refused.
func TestStartStopContract(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	a, err := app.New(app.Options{Pool: db.Pool, Schema: db.Schema, Workers: 1})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, a.Stop(ctx), "Stop before Start")
	require.Error(t, a.Ready(ctx), "not ready before Start")
	require.NoError(t, a.Start(ctx))
	require.NoError(t, a.Ready(ctx))
	require.Error(t, a.Start(ctx), "a second Start")
	require.NoError(t, a.Stop(ctx))
	require.NoError(t, a.Stop(ctx), "a second Stop")
	require.Error(t, a.Ready(ctx), "not ready after Stop")
}

// When a later part cannot start (here the watcher: the cluster refuses
// every list), Start stops what it had started (the events hub) and
// returns the error; nothing keeps running (goleak in TestMain).
func TestStartUndoesWhenAPartFails(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	kc := fake.NewClientset()
	kc.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("the cluster is unreachable")
	})
	a, err := app.New(app.Options{Pool: db.Pool, Schema: db.Schema, Workers: 1,
		Kube: &app.KubeOptions{Client: kc, DispatcherURL: "http://127.0.0.1:1", CacheSyncTimeout: 500 * time.Millisecond}})
	require.NoError(t, err)
	err = a.Start(context.Background())
	require.ErrorContains(t, err, "starting the watcher")
	require.Error(t, a.Ready(context.Background()))
	_, err = a.Events.Subscribe(context.Background(), "01a23287-d1f1-7a95-9bf7-6684c3a562d6")
	assert.ErrorIs(t, err, events.ErrStopped, "the events hub that had started is stopped again")
	require.NoError(t, a.Stop(context.Background()), "Stop after a failed Start")
}
