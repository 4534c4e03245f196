package store_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/dispatcher/internal/apptest"
	"github.com/kilnbuild/kiln/dispatcher/internal/pgtest"
	"github.com/kilnbuild/kiln/dispatcher/internal/store"
	"github.com/kilnbuild/kiln/schema"
)

// idAt is a UUIDv7 made at t, as a build submitted then has.
func idAt(t time.Time) string {
	u := uuid.Must(uuid.NewV7())
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(t.UnixMilli()))
	copy(u[:6], ms[2:])
	return u.String()
}

// The overview counts the builds submitted in each hour of the window, by
// outcome, and the p50/p95 of started → finished by template, in the
// principal's projects only; builds before the window are left out.
func TestReadOverview(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.New(t)
	p := apptest.Project(t, db.Pool, "web")
	other := apptest.Project(t, db.Pool, "api")
	now := time.Now().UTC()
	add := func(project, template string, created time.Time, status schema.Status, ran time.Duration) {
		t.Helper()
		id := idAt(created)
		_, err := store.InsertBuild(ctx, db.Pool, store.NewBuild{ID: id, ProjectID: project,
			Spec: schema.BuildSpec{Prompt: "p", Template: template}, RequestedBy: "bot"})
		require.NoError(t, err)
		var started, finished *time.Time
		if status != schema.StatusPending {
			s := created.Add(time.Second)
			started = &s
		}
		if status.Terminal() {
			f := started.Add(ran)
			finished = &f
		}
		_, err = db.Pool.Exec(ctx, `UPDATE builds SET status = $2, created_at = $3, started_at = $4, finished_at = $5, reason = $6
			WHERE id = $1`, id, status, created, started, finished, apptest.ReasonFor(status))
		require.NoError(t, err)
	}
	hourAgo := now.Add(-time.Hour)
	for _, s := range []int{10, 20, 30, 40, 100} {
		add(p.ID, "", hourAgo, schema.StatusCompleted, time.Duration(s)*time.Second)
	}
	add(p.ID, "docs", now.Add(-3*time.Hour), schema.StatusFailed, 5*time.Second)
	add(p.ID, "docs", now.Add(-3*time.Hour), schema.StatusCancelled, 7*time.Second)
	add(p.ID, "", now, schema.StatusRunning, 0)
	add(p.ID, "", now.Add(-30*time.Hour), schema.StatusCompleted, 1000*time.Second) // before the window
	add(other.ID, "", hourAgo, schema.StatusCompleted, 500*time.Second)             // another project

	o, err := store.ReadOverview(ctx, db.Pool, []string{p.ID}, now.Add(-23*time.Hour), now)
	require.NoError(t, err)
	require.Len(t, o.Hours, 24, "every hour of the window, empty ones too")
	assert.Equal(t, now.Truncate(time.Hour), o.Hours[23].Hour)
	byHour := map[time.Time]store.HourCount{}
	total := 0
	for _, h := range o.Hours {
		byHour[h.Hour] = h
		total += h.Total
	}
	assert.Equal(t, 8, total, "the builds in the window, of this project")
	assert.Equal(t, store.HourCount{Hour: hourAgo.Truncate(time.Hour), Total: 5, Completed: 5}, byHour[hourAgo.Truncate(time.Hour)])
	h3 := now.Add(-3 * time.Hour).Truncate(time.Hour)
	assert.Equal(t, store.HourCount{Hour: h3, Total: 2, Failed: 1, Cancelled: 1}, byHour[h3])
	assert.Equal(t, 1, o.Hours[23].Total, "the running one")

	require.Len(t, o.ByTemplate, 2)
	assert.Equal(t, store.TemplateDurations{Template: "default", Builds: 5, P50: 30 * time.Second, P95: 88 * time.Second},
		o.ByTemplate[0], "p95 interpolates between 40 s and 100 s")
	assert.Equal(t, store.TemplateDurations{Template: "docs", Builds: 2, P50: 6 * time.Second, P95: 6900 * time.Millisecond},
		o.ByTemplate[1])

	all, err := store.ReadOverview(ctx, db.Pool, nil, now.Add(-23*time.Hour), now)
	require.NoError(t, err)
	assert.Equal(t, 6, all.ByTemplate[0].Builds, "an admin's overview has every project's")
	none, err := store.ReadOverview(ctx, db.Pool, []string{}, now.Add(-23*time.Hour), now)
	require.NoError(t, err)
	assert.Empty(t, none.ByTemplate, "a token of no project sees nothing")

	counts, err := store.CountActive(ctx, db.Pool, []string{p.ID, other.ID})
	require.NoError(t, err)
	assert.Equal(t, map[string]store.ActiveCounts{p.ID: {Running: 1}}, counts)
}
