package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kilnbuild/kiln/dispatcher/client"
	"github.com/kilnbuild/kiln/dispatcher/internal/app"
	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/auth"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/jobtemplates"
	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

// shutdownBuilds is how many builds are running when the dispatcher stops,
// the global maximum in flight; shutdownBacklog more wait for capacity, their
// dispatch jobs retried every RetryAfter, so some are being worked at Stop.
const (
	shutdownBuilds  = 200
	shutdownBacklog = 40
)

// maxShutdownLines bounds what stopping may log: a line or two per
// component, never one per build.
const maxShutdownLines = 20

// lines is a slog destination that keeps every JSON line written to it.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// since returns the lines written after the first n bytes, and the length now.
func (l *lines) since(n int) ([]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(string(l.buf.Bytes()[n:]))
	if s == "" {
		return nil, l.buf.Len()
	}
	return strings.Split(s, "\n"), l.buf.Len()
}

func (l *lines) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

// Stopping a dispatcher with 200 builds running (submitted through the API,
// launched as Jobs on kubebox by the real launcher, watched by the real
// watcher), 40 more waiting for capacity and every build just queued for a
// watcher sync, logs a few lines in all and at most two per component, not
// one per build, and leaves every build as the next replica needs it:
// running or pending in Postgres, its Job in the cluster, no River job lost.
// It stops as `dispatcher serve` does on SIGTERM: Start's context is
// cancelled, then Stop runs under a fresh one.
//
// The runner image is a shell script that sleeps, so the machine holds the
// pods; kubebox's one node runs 110 pods, so the rest stay Pending
// (unschedulable, well within the watcher's timeout): the watcher knows all
// 200 either way.
func TestStopWith200RunningBuildsIsQuiet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kubebox and 200 build Jobs")
	}
	t.Parallel()
	// Pods mount an emptyDir over /tmp: the program lives outside it.
	dir, err := os.MkdirTemp(kbtest.HostTempDir(), "kiln-shutdown-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	runner := filepath.Join(dir, "sleeper")
	require.NoError(t, os.WriteFile(runner, []byte("#!/bin/sh\nexec sleep 3600\n"), 0o755))
	const image = "kiln-test/sleeper:1"
	cluster := kbtest.Start(t, map[string]string{image: runner})
	ctx := context.Background()
	ns := "kiln-shutdown"
	_, err = cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cluster.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kiln-runner"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	// The default template with a CPU request the node's two cores hold 200 times.
	y, err := os.ReadFile("../../../jobtemplates/templates/default.yaml")
	require.NoError(t, err)
	templates, err := jobtemplates.Load(fstest.MapFS{"default.yaml": {Data: bytes.Replace(y, []byte("cpu: 50m"), []byte("cpu: 1m"), 1)}})
	require.NoError(t, err)

	db := pgtest.New(t)
	logs := &lines{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a, err := app.New(app.Options{Pool: db.Pool, Schema: db.Schema, Workers: 8, Logger: logger, Templates: templates,
		Kube: &app.KubeOptions{Client: cluster.Client, Namespace: ns, DispatcherURL: "http://127.0.0.1:1", Image: image,
			MaxInFlight: shutdownBuilds, RetryAfter: 200 * time.Millisecond, UnschedulableTimeout: time.Hour, ImagePullTimeout: time.Hour}})
	require.NoError(t, err)
	// As `dispatcher serve` does: Start under the signal's context, Stop
	// under a fresh one with the shutdown timeout once the signal came.
	runCtx, signal := context.WithCancel(ctx)
	defer signal()
	require.NoError(t, a.Start(runCtx))
	srv := httptest.NewServer(a.Handler)
	stopped := false
	t.Cleanup(func() {
		srv.Close()
		if !stopped {
			_ = a.Stop(context.Background())
		}
	})

	admin, err := auth.Issue(ctx, db.Pool, "shutdown-admin", true, nil)
	require.NoError(t, err)
	api := &client.Client{BaseURL: srv.URL, Token: admin, HTTP: srv.Client()}
	// Many projects, as at scale; builds of one project launch in order.
	var projects []string
	for i := range 20 {
		projects = append(projects, apptest.Project(t, db.Pool, fmt.Sprintf("p%d", i), func(p *schema.Project) { p.MaxConcurrent = shutdownBuilds }).ID)
	}
	begin := time.Now()
	ids := make([]string, shutdownBuilds+shutdownBacklog)
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(ids); i += 8 {
				acc, err := api.Submit(ctx, projects[i%len(projects)], schema.BuildSpec{Prompt: fmt.Sprintf("build %d", i)}, "")
				if err != nil {
					errs <- fmt.Errorf("submitting build %d: %w", i, err)
					return
				}
				ids[i] = acc.TaskID
			}
		})
	}
	wg.Wait()
	t.Logf("%d builds submitted in %s", len(ids), time.Since(begin).Round(time.Millisecond))
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	kbtest.WaitFor(t, 5*time.Minute, fmt.Sprintf("%d builds running", shutdownBuilds), func(ctx context.Context) (bool, error) {
		n, err := countStatus(ctx, db, ids, schema.StatusRunning)
		return n == shutdownBuilds, err
	})
	t.Logf("%d builds running after %s", shutdownBuilds, time.Since(begin).Round(time.Millisecond))
	// Let the watcher see the pods come up (and the rest stay Pending), as
	// it would in a dispatcher that has been running a while.
	kbtest.WaitFor(t, 5*time.Minute, "the node's pods running", func(ctx context.Context) (bool, error) {
		pods, err := cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "status.phase=Running"})
		if err != nil {
			return false, err
		}
		return len(pods.Items) >= 50, nil
	})

	t.Logf("pods running after %s", time.Since(begin).Round(time.Millisecond))
	// The shutdown comes while the watcher is busy: a reconcile (the
	// periodic one, say) has just queued every build for a sync.
	require.NoError(t, a.Watcher.Reconcile(ctx))
	mark := logs.len()
	stopping := time.Now()
	signal()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, a.Stop(sctx), "Stop")
	stopped = true
	got, _ := logs.since(mark)
	t.Logf("Stop took %s and logged %d lines:\n%s", time.Since(stopping).Round(time.Millisecond), len(got), strings.Join(got, "\n"))
	require.Less(t, len(got), maxShutdownLines, "stopping with %d builds running logged %d lines (want fewer than %d, one or two per component):\n%s",
		shutdownBuilds, len(got), maxShutdownLines, strings.Join(got, "\n"))

	perComponent := map[string]int{}
	for _, l := range got {
		var rec struct {
			Component string `json:"component"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &rec), "a log line that is not JSON: %s", l)
		perComponent[rec.Component]++
	}
	for c, k := range perComponent {
		require.LessOrEqual(t, k, 2, "component %q logged %d lines while stopping (want a line or two, not one per build):\n%s",
			c, k, strings.Join(got, "\n"))
	}

	// What the next replica needs is all there.
	n, err := countStatus(ctx, db, ids, schema.StatusRunning)
	require.NoError(t, err)
	require.Equal(t, shutdownBuilds, n, "builds still running in Postgres after Stop")
	n, err = countStatus(ctx, db, ids, schema.StatusPending)
	require.NoError(t, err)
	require.Equal(t, shutdownBacklog, n, "builds still pending in Postgres after Stop")
	jobs, err := cluster.Client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: jobtemplates.Selector().String()})
	require.NoError(t, err)
	live := 0
	for _, j := range jobs.Items {
		if j.DeletionTimestamp == nil {
			live++
		}
	}
	require.Equal(t, shutdownBuilds, live, "build Jobs still in the cluster after Stop")
	rows, err := db.Pool.Query(ctx, "SELECT kind, state::text, count(*) FROM river_job GROUP BY 1, 2 ORDER BY 1, 2")
	require.NoError(t, err)
	defer rows.Close()
	var dispatched, waiting int
	for rows.Next() {
		var kind, state string
		var c int
		require.NoError(t, rows.Scan(&kind, &state, &c))
		require.NotContains(t, []string{"discarded", "cancelled", "running"}, state,
			"%d River %s jobs left %s by Stop: the next replica would not work them", c, kind, state)
		switch {
		case kind == "kiln_dispatch" && state == "completed":
			dispatched += c
		case kind == "kiln_dispatch":
			waiting += c // available, scheduled or retryable: the next replica works them
		}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, shutdownBuilds, dispatched, "completed dispatch jobs, one per running build")
	require.Equal(t, shutdownBacklog, waiting, "dispatch jobs still to be worked, one per pending build")
}

func countStatus(ctx context.Context, db *pgtest.DB, ids []string, status schema.Status) (int, error) {
	var n int
	err := db.Pool.QueryRow(ctx, "SELECT count(*) FROM builds WHERE id = ANY($1::uuid[]) AND status = $2",
		ids, string(status)).Scan(&n)
	return n, err
}
