package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnbuild/kiln/schema"
)

// ActiveCounts is how many of a project's builds are running and pending.
type ActiveCounts struct {
	Running, Pending int
}

// CountActive returns the running and pending counts of the projects in
// ids (every project when ids is nil) that have any, by project id: one
// read of the builds_active index.
func CountActive(ctx context.Context, db DB, ids []string) (map[string]ActiveCounts, error) {
	rows, err := db.Query(ctx, `SELECT project_id::text,
			count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending')
		FROM builds WHERE status IN ('pending', 'running') AND ($1::uuid[] IS NULL OR project_id = ANY($1::uuid[]))
		GROUP BY project_id`, ids)
	if err != nil {
		return nil, fmt.Errorf("counting active builds: %w", err)
	}
	defer rows.Close()
	out := map[string]ActiveCounts{}
	for rows.Next() {
		var id string
		var c ActiveCounts
		if err := rows.Scan(&id, &c.Running, &c.Pending); err != nil {
			return nil, fmt.Errorf("counting active builds: %w", err)
		}
		out[id] = c
	}
	return out, rows.Err()
}

// HourCount is the builds submitted in one hour, by how they stand.
type HourCount struct {
	Hour                                time.Time // the hour's start, UTC
	Total, Completed, Failed, Cancelled int
}

// TemplateDurations is how long a template's builds ran (started → finished).
type TemplateDurations struct {
	Template string
	Builds   int
	P50, P95 time.Duration
}

// Overview is the builds of a window of time, as the console's overview
// charts them.
type Overview struct {
	Since      time.Time
	Hours      []HourCount         // every hour of the window, oldest first, empty ones too
	ByTemplate []TemplateDurations // templates with a finished build in the window, by name
}

// ReadOverview returns the overview of the builds submitted since since
// (on the hour) in the projects in ids (every project when ids is nil).
// Build ids are UUIDv7s, so the window is a range of the primary key.
func ReadOverview(ctx context.Context, db DB, ids []string, since, now time.Time) (*Overview, error) {
	since = since.UTC().Truncate(time.Hour)
	o := &Overview{Since: since}
	floor := uuidV7Floor(since).String()
	rows, err := db.Query(ctx, `SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC'), count(*),
			count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
			count(*) FILTER (WHERE status = 'cancelled')
		FROM builds
		WHERE id >= $1 AND created_at >= $2 AND ($3::uuid[] IS NULL OR project_id = ANY($3::uuid[]))
		GROUP BY 1`, floor, since, ids)
	if err != nil {
		return nil, fmt.Errorf("reading builds per hour: %w", err)
	}
	byHour := map[time.Time]HourCount{}
	for rows.Next() {
		var h HourCount
		if err := rows.Scan(&h.Hour, &h.Total, &h.Completed, &h.Failed, &h.Cancelled); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading builds per hour: %w", err)
		}
		h.Hour = time.Date(h.Hour.Year(), h.Hour.Month(), h.Hour.Day(), h.Hour.Hour(), 0, 0, 0, time.UTC)
		byHour[h.Hour] = h
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading builds per hour: %w", err)
	}
	for h := since; !h.After(now); h = h.Add(time.Hour) {
		c := byHour[h]
		c.Hour = h
		o.Hours = append(o.Hours, c)
	}
	rows, err = db.Query(ctx, `SELECT COALESCE(NULLIF(spec->>'template', ''), $4), count(*),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)),
			percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at))
		FROM builds
		WHERE id >= $1 AND created_at >= $2 AND ($3::uuid[] IS NULL OR project_id = ANY($3::uuid[]))
		  AND started_at IS NOT NULL AND finished_at IS NOT NULL
		GROUP BY 1 ORDER BY 1`, floor, since, ids, schema.DefaultTemplate)
	if err != nil {
		return nil, fmt.Errorf("reading build durations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var t TemplateDurations
		var p50, p95 float64
		if err := rows.Scan(&t.Template, &t.Builds, &p50, &p95); err != nil {
			return nil, fmt.Errorf("reading build durations: %w", err)
		}
		t.P50, t.P95 = seconds(p50), seconds(p95)
		o.ByTemplate = append(o.ByTemplate, t)
	}
	return o, rows.Err()
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

// uuidV7Floor is the least UUIDv7 of a build made at t: its millisecond
// timestamp and zeros.
func uuidV7Floor(t time.Time) uuid.UUID {
	var u uuid.UUID
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(t.UnixMilli()))
	copy(u[:6], ms[2:])
	return u
}
