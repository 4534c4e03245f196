package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
)

// TestDatabaseConnectionsCut: every Postgres connection of a dispatcher is
// terminated (as a database failover or restart does) while builds run and
// wait; the dispatcher reconnects by itself, every build still ends
// completed, exactly once, and new submissions are accepted again.
func TestDatabaseConnectionsCut(t *testing.T) {
	appName := "kiln-e2e-cut-" + randHex(4)
	e := newEnv(t, "KILN_MAX_IN_FLIGHT=2", "KILN_DATABASE_URL="+dbURL+"&application_name="+appName)
	d := e.start()
	p := e.project(d, "web", 2)
	running := []string{
		e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep-4"}),
		e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep-4"}),
	}
	for _, id := range running {
		e.waitStatus(d, id, 60*time.Second, schema.StatusRunning)
	}
	pending := e.submit(d, p.ID, schema.BuildSpec{Prompt: "succeed"}) // waits for capacity

	// Cut every connection, and again as the pools reconnect, for 2 s.
	ctx := context.Background()
	cut := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		var n int
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, appName).Scan(&n))
		cut += n
	}
	require.Positive(t, cut, "the dispatcher's connections were found and cut")
	t.Logf("terminated %d connections", cut)

	// A bot retries with its Idempotency-Key until it is accepted: one build.
	var after string
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		acc, err := d.api.SubmitOnce(ctx, p.ID, schema.BuildSpec{Prompt: "succeed"}, "after-the-cut")
		if err == nil {
			after = acc.TaskID
			t.Logf("accepted after %d failed attempts", attempt)
			break
		}
		require.True(t, time.Now().Before(deadline), "no submission accepted within 30 s of the cut")
		time.Sleep(200 * time.Millisecond)
	}

	for _, id := range append(running, pending, after) {
		b := e.waitStatus(d, id, 120*time.Second, schema.StatusCompleted, schema.StatusFailed, schema.StatusCancelled)
		assert.Equal(t, schema.StatusCompleted, b.Status, "%s: %s", id, b.Error)
		assert.Equal(t, 1, b.Attempt, "%s started once", id)
	}
	var builds int
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT count(*) FROM builds`).Scan(&builds))
	assert.Equal(t, 4, builds, "the retried submission made one build")
	assert.NoError(t, d.api.Ready(ctx), "ready again")
}
