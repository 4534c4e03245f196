package main

import (
	"testing"
	"time"
)

func TestFIFOViolations(t *testing.T) {
	for _, tc := range []struct {
		name     string
		admitted []int64 // in id order; 0: never admitted
		want     int
	}{
		{"in order", []int64{1, 2, 3}, 0},
		{"gaps are other projects' admissions", []int64{1, 7, 40}, 0},
		{"one overtakes", []int64{1, 3, 2}, 1},
		// The youngest went first: both older ones came after it, but each
		// build admitted early is counted once.
		{"youngest first", []int64{2, 3, 1}, 1},
		{"two overtake one", []int64{5, 1, 2}, 2},
		{"never admitted takes no part", []int64{1, 0, 2}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g []build
			for _, a := range tc.admitted {
				g = append(g, build{admitted: a})
			}
			if got := fifoViolations(g); got != tc.want {
				t.Errorf("fifoViolations = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestRatesAndShare(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var bs []build
	// 20 builds submitted at t0, started 1 s apart, each finished 1 s after
	// starting; every 4th is the big project's.
	for i := range 20 {
		p := "small"
		if i%4 == 0 {
			p = bigProject
		}
		st := t0.Add(time.Duration(i) * time.Second)
		bs = append(bs, build{project: p, status: "completed", created: t0, started: st, finished: st.Add(time.Second)})
	}
	rate, span := drainRate(bs)
	if span != 20*time.Second || rate != 1 {
		t.Errorf("drainRate = %v over %s, want 1 over 20s", rate, span)
	}
	if got := steadyRate(bs); got != 1 {
		t.Errorf("steadyRate = %v, want 1", got)
	}
	share, starts := startShare(bs, bigProject, t0, t0.Add(7*time.Second))
	if starts != 8 || share != 0.25 {
		t.Errorf("startShare = %v of %d, want 0.25 of 8", share, starts)
	}
	s := projectWaits("small", byProject(bs)["small"])
	if s.n != 15 || s.first != time.Second || s.max != 19*time.Second {
		t.Errorf("projectWaits = %+v, want 15 builds, first 1s, max 19s", s)
	}
}

func TestRoundsWaited(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	// The big project's builds wait from t0 and another project's from 1 s;
	// a small project's first build arrives at 2 s, when big's first was
	// admitted: big, other and small wait then, a round of three. (started
	// lags reserved: what counts is the admission.)
	bs := []build{
		{project: "big", created: at(0), reserved: at(1), started: at(3), admitted: 1},
		{project: "big", created: at(0), reserved: at(3), admitted: 2},
		{project: "other", created: at(1), reserved: at(4), admitted: 3},
	}
	fair := build{project: "small", created: at(2), reserved: at(5), admitted: 4}
	if ahead, projects := roundsWaited(append(bs, fair), fair); ahead != 2 || projects != 3 {
		t.Errorf("roundsWaited = %d ahead of %d projects, want 2 of 3 (big's second, other's)", ahead, projects)
	}
	// Admitted after big's third and fourth too: four admissions ahead of
	// it with three projects waiting, more than one round.
	bs = append(bs, build{project: "big", created: at(0), reserved: at(5), admitted: 4},
		build{project: "big", created: at(0), reserved: at(6), admitted: 5})
	late := build{project: "small", created: at(2), reserved: at(7), admitted: 6}
	if ahead, projects := roundsWaited(append(bs, late), late); ahead != 4 || projects != 3 {
		t.Errorf("roundsWaited = %d ahead of %d projects, want 4 of 3", ahead, projects)
	}
	if lags := launchLags(bs); len(lags) != 1 || lags[0] != 2*time.Second {
		t.Errorf("launchLags = %v, want [2s] (only big's first started)", lags)
	}
}
