package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/kilnbuild/kiln/tests/bench/benchproc"
)

// bigProject is the name of the project that gets -big builds first.
const bigProject = "big"

// issueBuilds is the backlog issue 13 asks about; a smaller run prints how
// long that one would take at the rate it measured.
const issueBuilds = 5000

// report prints the figures of a drain and its targets. stopped, when not
// empty, is why the drain was cut short: the figures are then those of the
// builds that got that far.
func report(w io.Writer, c config, bs []build, podsPerSec float64, stopped string) {
	statuses := map[string]int{}
	for _, b := range bs {
		statuses[b.status]++
	}
	if stopped != "" {
		fmt.Fprintf(w, "stopped early: %s\n", stopped)
	}
	if statuses["completed"] != len(bs) {
		var parts []string
		for _, s := range slices.Sorted(maps.Keys(statuses)) {
			parts = append(parts, fmt.Sprintf("%s %d", s, statuses[s]))
		}
		fmt.Fprintf(w, "not every build completed: %s\n", strings.Join(parts, ", "))
	}

	rate, span := drainRate(bs)
	steady := steadyRate(bs)
	ratio := rate / podsPerSec
	fmt.Fprintf(w, "drain: %d completed in %s (first submission → last completion): %.1f builds/s, %.2f of the pod rate; steady (10th–90th percentile completion) %.1f builds/s, %.2f\n",
		statuses["completed"], span.Round(time.Millisecond), rate, ratio, steady, steady/podsPerSec)
	if n := statuses["completed"]; n < issueBuilds && rate > 0 {
		fmt.Fprintf(w, "  extrapolated: %d builds at %.1f builds/s drain in ≈ %s\n", issueBuilds, rate,
			time.Duration(float64(issueBuilds)/rate*float64(time.Second)).Round(time.Second))
	}

	groups := byProject(bs)
	names := slices.Sorted(maps.Keys(groups))
	violations := 0
	var violators []string
	for _, p := range names {
		if v := fifoViolations(groups[p]); v > 0 {
			violations += v
			violators = append(violators, fmt.Sprintf("%s %d", p, v))
		}
	}
	lags := launchLags(bs)
	fmt.Fprintf(w, "admission → running (Job and Secret created, status running): p50 %s, p99 %s over %d builds\n",
		benchproc.Percentile(lags, 50).Round(time.Millisecond), benchproc.Percentile(lags, 99).Round(time.Millisecond), len(lags))
	fmt.Fprintf(w, "fifo: %d builds admitted before an older build of their project", violations)
	if len(violators) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(violators, ", "))
	}
	fmt.Fprintln(w)

	stats := make([]waitStats, 0, len(names))
	for _, p := range names {
		stats = append(stats, projectWaits(p, groups[p]))
	}

	// One admission round: every project has waiting builds while the small
	// projects' first builds wait (they were all just submitted, and the
	// big project's backlog outlasts them), so a round-robin admission gives
	// each of them one slot in (projects) completions.
	var round time.Duration
	if rate > 0 {
		round = time.Duration(float64(len(names)) / rate * float64(time.Second))
	}
	fmt.Fprintf(w, "admission round: %d projects with waiting builds / %.1f builds/s = %s\n", len(names), rate, round.Round(time.Millisecond))

	var firsts []time.Duration
	var worst waitStats
	never := 0
	from, to := time.Time{}, time.Time{}
	for _, s := range stats {
		if s.project == bigProject {
			continue
		}
		g := groups[s.project]
		if from.IsZero() || g[0].created.Before(from) {
			from = g[0].created
		}
		if s.first < 0 {
			never++
			continue
		}
		firsts = append(firsts, s.first)
		if s.first > worst.first {
			worst = s
		}
		if st := g[0].started; st.After(to) {
			to = st
		}
	}
	maxFirst := worst.first
	fmt.Fprintf(w, "small projects' first build waited: p50 %s, p99 %s, max %s (%s)",
		benchproc.Percentile(firsts, 50).Round(time.Millisecond), benchproc.Percentile(firsts, 99).Round(time.Millisecond),
		maxFirst.Round(time.Millisecond), worst.project)
	if never > 0 {
		fmt.Fprintf(w, "; %d never started", never)
	}
	fmt.Fprintln(w)
	// The same waits counted in admissions: how many builds were admitted
	// while each first build waited, against the projects waiting when it
	// arrived (one round-robin round).
	overRound, worstAhead, worstOf := 0, 0, 0
	for _, p := range names {
		if p == bigProject || groups[p][0].admitted == 0 {
			continue
		}
		ahead, projects := roundsWaited(bs, groups[p][0])
		if ahead >= projects {
			overRound++
		}
		if worstOf == 0 || float64(ahead)/float64(projects) > float64(worstAhead)/float64(worstOf) {
			worstAhead, worstOf = ahead, projects
		}
	}
	fmt.Fprintf(w, "  in admissions: at most %d builds admitted ahead of a first build while %d projects waited; %d first builds waited more than one round\n",
		worstAhead, worstOf, overRound)
	if share, starts := startShare(bs, bigProject, from, to); starts > 0 {
		fmt.Fprintf(w, "  while they waited (%s): the big project had %.2f of the %d builds started (round-robin: about 1/%d = %.2f)\n",
			to.Sub(from).Round(time.Millisecond), share, starts, len(names), 1/float64(len(names)))
	}

	slices.SortFunc(stats, func(a, b waitStats) int { return cmp.Compare(a.p50, b.p50) })
	fmt.Fprintf(w, "queue waits by project (created → started), by p50:\n%-10s %6s %10s %10s %10s %10s\n", "project", "builds", "first", "p50", "p99", "max")
	for _, s := range stats {
		first := "never"
		if s.first >= 0 {
			first = s.first.Round(time.Millisecond).String()
		}
		fmt.Fprintf(w, "%-10s %6d %10s %10s %10s %10s\n", s.project, s.n, first,
			s.p50.Round(time.Millisecond), s.p99.Round(time.Millisecond), s.max.Round(time.Millisecond))
	}
	lo, hi := stats[0], stats[len(stats)-1]
	p99s := make([]time.Duration, len(stats))
	for i, s := range stats {
		p99s[i] = s.p99
	}
	fmt.Fprintf(w, "spread across projects: p50 from %s (%s) to %s (%s), ×%.1f; p99 from %s to %s\n",
		lo.p50.Round(time.Millisecond), lo.project, hi.p50.Round(time.Millisecond), hi.project,
		float64(hi.p50)/float64(max(lo.p50, time.Millisecond)),
		slices.Min(p99s).Round(time.Millisecond), slices.Max(p99s).Round(time.Millisecond))

	benchproc.Target(w, fmt.Sprintf("backlog drain vs plain pod rate (%d builds, %d projects, %d in flight)", statuses["completed"], len(names), c.maxInFlight),
		fmt.Sprintf("%.2f", ratio), fmt.Sprintf("≥ %g", drainGoal), stopped == "" && ratio >= drainGoal)
	benchproc.Target(w, "backlog FIFO violations within a project", fmt.Sprint(violations), "0", violations == 0)
	firstFig := fmt.Sprintf("%d of %d over one round (worst: %d admitted ahead, %d projects waiting; %s, a round %s)",
		overRound, len(names)-1, worstAhead, worstOf, maxFirst.Round(time.Millisecond), round.Round(time.Millisecond))
	if never > 0 {
		firstFig = fmt.Sprintf("%d never started", never)
	}
	benchproc.Target(w, fmt.Sprintf("backlog small projects' first builds admitted within one round behind %d builds of one project", c.big),
		firstFig, "all", never == 0 && overRound == 0)
}
