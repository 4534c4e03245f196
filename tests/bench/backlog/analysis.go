package main

import (
	"slices"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/tests/bench/benchproc"
)

// build is one build's row as the drain left it.
type build struct {
	id       string // UUIDv7: its order is the order the dispatcher accepted builds in
	project  string // its name
	status   string
	created  time.Time
	started  time.Time // zero: never started
	finished time.Time // zero: not terminal
	admitted int64     // builds.admitted_seq: the order admission gave it a slot; 0: never admitted
	reserved time.Time // builds.reserved_at: when admission gave it the slot; zero: never
}

func (b build) wait() time.Duration { return b.started.Sub(b.created) }

// byProject groups builds by project, each group in id order (submission order).
func byProject(bs []build) map[string][]build {
	out := map[string][]build{}
	for _, b := range bs {
		out[b.project] = append(out[b.project], b)
	}
	for _, g := range out {
		slices.SortFunc(g, func(a, b build) int { return strings.Compare(a.id, b.id) })
	}
	return out
}

// fifoViolations counts the builds of one project (in id order) that were
// admitted before an older build of the same project: with FIFO held, the
// admission numbers (builds.admitted_seq, one sequence for every
// admission) never go back along the id order. Start times are not the
// measure: builds admitted in one round have their Jobs created at once,
// and which pod starts first is the cluster's doing. Builds never admitted
// take no part.
func fifoViolations(g []build) int {
	var latest int64
	n := 0
	for _, b := range g {
		if b.admitted == 0 {
			continue
		}
		if b.admitted < latest {
			n++
			continue
		}
		latest = b.admitted
	}
	return n
}

// waitStats are the queue waits (created → started) of one project.
type waitStats struct {
	project       string
	n             int
	p50, p99, max time.Duration
	first         time.Duration // the wait of its oldest build
}

func projectWaits(project string, g []build) waitStats {
	var ws []time.Duration
	s := waitStats{project: project, first: -1}
	for _, b := range g {
		if b.started.IsZero() {
			continue
		}
		if s.first < 0 {
			s.first = b.wait()
		}
		ws = append(ws, b.wait())
	}
	s.n = len(ws)
	if len(ws) > 0 {
		s.p50, s.p99, s.max = benchproc.Percentile(ws, 50), benchproc.Percentile(ws, 99), slices.Max(ws)
	}
	return s
}

// drainRate is completed builds per second, from the first submission to
// the last completion: the whole drain, its ramp and its tail included.
func drainRate(bs []build) (rate float64, span time.Duration) {
	var first, last time.Time
	n := 0
	for _, b := range bs {
		if first.IsZero() || b.created.Before(first) {
			first = b.created
		}
		if b.status == "completed" {
			n++
			if b.finished.After(last) {
				last = b.finished
			}
		}
	}
	if n == 0 {
		return 0, 0
	}
	span = last.Sub(first)
	return float64(n) / span.Seconds(), span
}

// steadyRate is completions per second between the 10th and the 90th
// percentile completion: the drain without its ramp and its tail.
func steadyRate(bs []build) float64 {
	var done []time.Time
	for _, b := range bs {
		if b.status == "completed" {
			done = append(done, b.finished)
		}
	}
	if len(done) < 10 {
		return 0
	}
	slices.SortFunc(done, time.Time.Compare)
	lo, hi := len(done)/10, len(done)*9/10
	d := done[hi].Sub(done[lo])
	if d <= 0 {
		return 0
	}
	return float64(hi-lo) / d.Seconds()
}

// startShare is the share of the builds started in [from, to] that are
// project's, and how many started then.
func startShare(bs []build, project string, from, to time.Time) (share float64, starts int) {
	mine := 0
	for _, b := range bs {
		if b.started.IsZero() || b.started.Before(from) || b.started.After(to) {
			continue
		}
		starts++
		if b.project == project {
			mine++
		}
	}
	if starts == 0 {
		return 0, 0
	}
	return float64(mine) / float64(starts), starts
}

// roundsWaited measures a build's wait in admissions rather than time:
// ahead is how many builds were admitted while it waited (admitted before
// it, reserved after it was created), projects how many projects had
// builds waiting when it arrived, its own included. A round of round-robin
// admission gives each of those projects at most one slot, so the build
// waited no more than one round when ahead < projects.
func roundsWaited(bs []build, f build) (ahead, projects int) {
	waiting := map[string]bool{}
	for _, b := range bs {
		if b.admitted != 0 && b.admitted < f.admitted && b.reserved.After(f.created) {
			ahead++
		}
		if !b.created.After(f.created) && (b.reserved.IsZero() || b.reserved.After(f.created)) {
			waiting[b.project] = true
		}
	}
	return ahead, len(waiting)
}

// launchLags are the times from admission (reserved) to running (the Job
// created and the build marked running) of the builds that started.
func launchLags(bs []build) []time.Duration {
	var out []time.Duration
	for _, b := range bs {
		if !b.reserved.IsZero() && !b.started.IsZero() {
			out = append(out, b.started.Sub(b.reserved))
		}
	}
	return out
}
