package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kilnbuild/kiln/schema"
	"github.com/kilnbuild/kiln/tests/kbtest"
)

// waitStep is one waiting_reason info event of a build: the reason it
// changed to and its queue position then.
type waitStep struct {
	Reason   schema.WaitingReason
	Position int
}

func (s waitStep) String() string { return fmt.Sprintf("%s@%d", s.Reason, s.Position) }

// waitSteps are the build's waiting_reason info events, in order.
func (e *env) waitSteps(d *dispatcher, id string) []waitStep {
	e.t.Helper()
	var out []waitStep
	for _, ev := range e.events(d, id) {
		if info, ok := schema.PayloadAs[schema.InfoPayload](ev); ok && info.WaitingReason != "" {
			out = append(out, waitStep{info.WaitingReason, info.QueuePosition})
		}
	}
	return out
}

// reasonsOf is the sequence of reasons of steps, with repeats of one reason
// in a row (a change of position only) folded into one.
func reasonsOf(steps []waitStep) []schema.WaitingReason {
	var out []schema.WaitingReason
	for _, s := range steps {
		if len(out) == 0 || out[len(out)-1] != s.Reason {
			out = append(out, s.Reason)
		}
	}
	return out
}

// waitWaiting waits until GET /builds/{id} shows the build pending with
// reason at position pos.
func (e *env) waitWaiting(d *dispatcher, id string, reason schema.WaitingReason, pos int) schema.Build {
	e.t.Helper()
	var b schema.Build
	kbtest.WaitFor(e.t, 60*time.Second, fmt.Sprintf("build %s to wait (%s, position %d)", id, reason, pos), func(context.Context) (bool, error) {
		b = e.get(d, id)
		if b.Status != schema.StatusPending {
			e.t.Fatalf("build %s is %s, want pending (%s, position %d)", id, b.Status, reason, pos)
		}
		return b.WaitingReason == reason && b.QueuePosition == pos,
			fmt.Errorf("it waits (%q, position %d)", b.WaitingReason, b.QueuePosition)
	})
	return b
}

// cli runs `dispatcher client ARGS` against d as the admin (the token in
// the environment, not argv) and returns its stdout and exit status.
func (e *env) cli(d *dispatcher, args ...string) (string, int) {
	e.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "dispatcher"), append([]string{"client"}, args...)...)
	cmd.Env = append(os.Environ(), "KILN_URL="+d.url, "KILN_TOKEN="+e.admin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		e.t.Fatalf("dispatcher client %v: %v: %s", args, err, stderr.String())
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// pendingIDs is GET /projects/{id}/builds?status=pending, as ids in the
// order the API lists them.
func (e *env) pendingIDs(d *dispatcher, projectID string) []string {
	e.t.Helper()
	list, err := d.api.List(context.Background(), projectID, schema.StatusPending, 0, "")
	require.NoError(e.t, err, "listing the pending builds of %s", projectID)
	var ids []string
	for _, b := range list.Builds {
		assert.Equal(e.t, schema.StatusPending, b.Status)
		ids = append(ids, b.ID)
	}
	return ids
}

// Three builds of one project (max_concurrent 1) while the dispatcher's
// global limit (KILN_MAX_IN_FLIGHT=1) is held by another project's build:
// each pending build shows why it waits and where it is in its project's
// queue, every change of reason is an info event in order, and the pending
// list is in queue order.
//
//	phase 1: q1 runs (global slot). p1 capacity@1, p2 project_busy@2, p3 project_busy@3.
//	phase 2: p1 is cancelled while it waits. p2 is first: capacity@1; p3 project_busy@2.
//	phase 3: q1 is cancelled. p2 runs; p3 project_busy@1 (its project is full).
//	then p2 and p3 complete, in order.
func TestWaitingReasonsInOrder(t *testing.T) {
	e := newEnv(t, "KILN_MAX_IN_FLIGHT=1")
	d := e.start()
	q := e.project(d, "holder", 1)
	p := e.project(d, "queued", 1)

	q1 := e.submit(d, q.ID, schema.BuildSpec{Prompt: "sleep"})
	e.waitStatus(d, q1, 60*time.Second, schema.StatusRunning)
	var ps []string
	for range 3 {
		ps = append(ps, e.submit(d, p.ID, schema.BuildSpec{Prompt: "sleep-2"}))
	}
	p1, p2, p3 := ps[0], ps[1], ps[2]

	// Phase 1.
	e.waitWaiting(d, p1, schema.WaitingCapacity, 1)
	e.waitWaiting(d, p2, schema.WaitingProjectBusy, 2)
	e.waitWaiting(d, p3, schema.WaitingProjectBusy, 3)
	assert.Equal(t, []string{p1, p2, p3}, e.pendingIDs(d, p.ID), "the pending list is in queue order")
	assert.Empty(t, e.get(d, q1).WaitingReason, "a running build has no waiting reason")

	// Phase 2: the first in line leaves the queue.
	e.cancel(d, p1, "not needed")
	e.waitWaiting(d, p2, schema.WaitingCapacity, 1)
	e.waitWaiting(d, p3, schema.WaitingProjectBusy, 2)
	assert.Equal(t, []string{p2, p3}, e.pendingIDs(d, p.ID))

	// Phase 3: the global slot frees; p2 takes it and fills its project.
	e.cancel(d, q1, "make room")
	e.waitStatus(d, p2, 60*time.Second, schema.StatusRunning, schema.StatusCompleted)
	e.waitWaiting(d, p3, schema.WaitingProjectBusy, 1)
	assert.Equal(t, []string{p3}, e.pendingIDs(d, p.ID))

	for _, id := range []string{p2, p3} {
		b := e.waitStatus(d, id, 90*time.Second, schema.StatusCompleted, schema.StatusFailed)
		require.Equal(t, schema.StatusCompleted, b.Status, b.Error)
		assert.Empty(t, b.WaitingReason, "a finished build has no waiting reason")
		assert.Zero(t, b.QueuePosition, "a finished build has no queue position")
	}
	assert.Empty(t, e.pendingIDs(d, p.ID))
	b2, b3 := e.get(d, p2), e.get(d, p3)
	assert.False(t, b3.StartedAt.Before(*b2.FinishedAt), "p3 started before p2 finished")

	// The events: each change of reason, in order, with the position then.
	steps := map[string][]waitStep{p1: e.waitSteps(d, p1), p2: e.waitSteps(d, p2), p3: e.waitSteps(d, p3)}
	t.Logf("waiting steps: p1 %v, p2 %v, p3 %v", steps[p1], steps[p2], steps[p3])
	assert.Equal(t, []schema.WaitingReason{schema.WaitingCapacity}, reasonsOf(steps[p1]), "p1's reasons")
	assert.Equal(t, []schema.WaitingReason{schema.WaitingProjectBusy, schema.WaitingCapacity}, reasonsOf(steps[p2]), "p2's reasons")
	assert.Equal(t, []schema.WaitingReason{schema.WaitingProjectBusy}, reasonsOf(steps[p3]), "p3's reasons")
	first := func(id string) waitStep {
		require.NotEmpty(t, steps[id], "build %s has no waiting_reason event", id)
		return steps[id][0]
	}
	assert.Equal(t, waitStep{schema.WaitingCapacity, 1}, first(p1))
	assert.Equal(t, waitStep{schema.WaitingProjectBusy, 2}, first(p2))
	assert.Equal(t, waitStep{schema.WaitingProjectBusy, 3}, first(p3))
	for _, s := range steps[p2] {
		if s.Reason == schema.WaitingCapacity {
			assert.Equal(t, 1, s.Position, "p2 waits for capacity first in line")
		}
	}
	// dispatcher client watch tells each change of reason, in order.
	out, code := e.cli(d, "watch", p2)
	assert.Equal(t, 0, code, "watch of a completed build: %s", out)
	busy := strings.Index(out, "waiting: project_busy, 2nd in the project's queue")
	capacity := strings.Index(out, "waiting: capacity, 1st in the project's queue")
	assert.True(t, busy >= 0 && capacity > busy, "watch shows p2's waits in order:\n%s", out)
	for id, ss := range steps {
		positions := make([]int, len(ss))
		for i, s := range ss {
			positions[i] = s.Position
			assert.Positive(t, s.Position, "build %s: a waiting event without a position", id)
		}
		assert.True(t, slices.IsSortedFunc(positions, func(a, b int) int { return b - a }),
			"build %s moved back in its queue: %v", id, positions)
	}
}
