package main

import (
	"testing"
	"time"
)

func TestFIFOViolations(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name    string
		started []time.Time // in id order; zero: never started
		want    int
	}{
		{"in order", []time.Time{at(1), at(2), at(3)}, 0},
		{"same instant", []time.Time{at(1), at(1)}, 0},
		{"one overtakes", []time.Time{at(1), at(3), at(2)}, 1},
		// The youngest started first: both older ones started after it,
		// but each build that started early is counted once.
		{"youngest first", []time.Time{at(2), at(3), at(1)}, 1},
		{"two overtake one", []time.Time{at(5), at(1), at(2)}, 2},
		{"never started takes no part", []time.Time{at(1), {}, at(2)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g []build
			for _, s := range tc.started {
				g = append(g, build{started: s})
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
